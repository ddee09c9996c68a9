//! Helpers shared by the journal's tests.

use super::{Journal, NewRecord, spec_digest};
use chrono::{DateTime, Duration, Utc};
use neurallog_machines::{Input, Phase, Trigger, step};

/// The time of every helper chain's first record.
pub(crate) fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_735_787_045, 6).unwrap_or_default()
}

pub(crate) fn open_temp() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal")).unwrap();
    (dir, journal)
}

/// A plausible record at `seq`, one second after the previous one.
pub(crate) fn sample_entry(tenant: &str, uid: &str, seq: u64) -> NewRecord {
    let input = Input::new(Trigger::Observed, 1);
    let transition = step(Phase::New, &input).unwrap();
    NewRecord::from_transition(
        tenant,
        uid,
        seq,
        t0() + Duration::seconds(seq as i64 - 1),
        1,
        input,
        transition,
        spec_digest(&serde_json::json!({"redis": {"replicas": 1}})),
    )
}

/// The records of feeding `triggers` through the machine from `New`, skipping triggers
/// that cause no transition; `start` is the time of the first.
pub(crate) fn lifecycle(
    tenant: &str,
    uid: &str,
    start: DateTime<Utc>,
    triggers: &[Trigger],
) -> Vec<NewRecord> {
    let mut phase = Phase::New;
    let mut records = Vec::new();
    for (i, trigger) in triggers.iter().enumerate() {
        let generation = 1 + i as i64 / 4;
        let input = Input::new(*trigger, generation);
        let Some(transition) = step(phase, &input) else {
            continue;
        };
        phase = transition.to;
        let seq = records.len() as u64 + 1;
        records.push(NewRecord::from_transition(
            tenant,
            uid,
            seq,
            start + Duration::seconds(seq as i64 - 1),
            generation,
            input,
            transition,
            spec_digest(&serde_json::json!({"tenant": tenant, "generation": generation})),
        ));
    }
    records
}

/// The record after `record` in its chain, one second later (the journal checks the
/// chain, not the machine).
pub(crate) fn next_after(record: &super::Record) -> NewRecord {
    let mut entry = record.to_new();
    entry.seq += 1;
    entry.time += Duration::seconds(1);
    entry.from = record.to;
    entry
}

/// Provisioning to `Running`.
pub(crate) const TO_RUNNING: [Trigger; 4] = [
    Trigger::Observed,
    Trigger::NamespaceReady,
    Trigger::RedisReady,
    Trigger::AllReady,
];

impl Journal {
    /// Flips one byte in the middle of record `seq` of chain `uid`, as disk damage would.
    pub(crate) fn corrupt_for_test(&self, uid: &str, seq: u64) {
        self.settled().unwrap();
        let key = neurallog_migrations::layout::record_key(uid, seq);
        let mut value = self.records.get(&key).unwrap().unwrap().to_vec();
        let middle = value.len() / 2;
        value[middle] ^= 0x01;
        self.records.insert(key, value).unwrap();
    }
}

/// Ways to damage one stored record, as a copied or half-written journal may be damaged.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Damage {
    FlipByte,
    Truncate,
    Remove,
    /// Swaps the record with the next one of its chain.
    SwapWithNext,
}

impl Journal {
    pub(crate) fn damage_for_test(&self, uid: &str, seq: u64, damage: Damage) {
        use neurallog_migrations::layout::record_key;
        self.settled().unwrap();
        let key = record_key(uid, seq);
        let value = self.records.get(&key).unwrap().unwrap();
        match damage {
            Damage::FlipByte => self.corrupt_for_test(uid, seq),
            Damage::Truncate => {
                self.records
                    .insert(&key, &value[..value.len() / 2])
                    .unwrap();
            }
            Damage::Remove => {
                self.records.remove(&key).unwrap();
            }
            Damage::SwapWithNext => {
                let next_key = record_key(uid, seq + 1);
                let next = self.records.get(&next_key).unwrap().unwrap();
                self.records.insert(&key, next).unwrap();
                self.records.insert(next_key, value).unwrap();
            }
        }
        self.flush().unwrap();
    }
}
