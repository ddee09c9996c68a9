//! Bounded growth: retention compacts a chain's oldest records into its checkpoint.
//!
//! A record is kept while it is among the newest [`Retention::keep_records`] of its chain
//! and younger than [`Retention::keep_for`]; the chain's last record is always kept, so
//! appends continue the chain. Compacting deletes a prefix of the chain and stores (in the
//! same transaction) a [`Checkpoint`] with the last deleted record's seq, hash, phase and
//! time. The chain then starts after the checkpoint: `verify` checks the first kept record
//! links to the checkpoint's hash and everything after it as before, and replay starts
//! from the checkpoint's phase. What was compacted is gone from the journal: archive it
//! first with `journal export` if it must be kept.

use super::codec;
use super::digest::Digest;
use super::read::decode_summary;
use super::writer::Store;
use super::{Journal, JournalError};
use chrono::{DateTime, Utc};
use neurallog_machines::Phase;
use neurallog_migrations::layout::{CHECKPOINTS_TREE, chain_prefix, record_key};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

/// How many records one compaction transaction deletes: a first compaction of a long chain
/// is many small transactions, each leaving a valid checkpoint.
const COMPACT_CHUNK: u64 = 4096;

/// What the journal keeps of each chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Records kept per chain (the newest); at least 1.
    pub keep_records: u64,
    /// Records younger than this are kept.
    pub keep_for: chrono::Duration,
    /// Where compacted records are archived first, as export lines (one
    /// `<tenant>_<uid>.jsonl` per chain, appended and fsynced before the records are
    /// deleted). `None`: they are only deleted.
    pub archive: Option<std::path::PathBuf>,
}

/// Where a compacted chain now starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub tenant: String,
    pub uid: String,
    /// The last compacted record: the chain continues at `through + 1`.
    pub through: u64,
    /// That record's hash: the next record's `prevHash`.
    pub hash: Digest,
    /// That record's `to` phase, where replay starts.
    pub phase: Phase,
    /// That record's time.
    pub time: DateTime<Utc>,
    /// The time of the chain's first record (compacted or not).
    pub first_time: DateTime<Utc>,
    /// When the last compaction ran.
    pub compacted_at: DateTime<Utc>,
}

/// What one compaction run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    pub chains: u64,
    pub records: u64,
}

impl Journal {
    /// The checkpoint of chain `uid`, if retention compacted it.
    pub fn checkpoint(&self, uid: &str) -> Result<Option<Checkpoint>, JournalError> {
        read_checkpoint(&self.db.open_tree(CHECKPOINTS_TREE)?, uid)
    }

    /// Every checkpoint, by uid.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, JournalError> {
        let tree = self.db.open_tree(CHECKPOINTS_TREE)?;
        tree.iter()
            .map(|item| {
                let (key, value) = item?;
                decode_checkpoint(&key, &value)
            })
            .collect()
    }

    /// Compacts every chain to `retention` as of `now`, durably, between appends (on the
    /// writer thread, so no append interleaves with a chain being compacted).
    pub fn compact(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> Result<Compaction, JournalError> {
        self.writer
            .exclusive(move |store| compact_all(store, &retention, now))
    }

    /// Bytes the journal's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        Ok(self.db.size_on_disk()?)
    }
}

fn compact_all(
    store: &Store,
    retention: &Retention,
    now: DateTime<Utc>,
) -> Result<Compaction, JournalError> {
    let checkpoints = store.db.open_tree(CHECKPOINTS_TREE)?;
    let mut done = Compaction::default();
    for item in store.tenants.iter() {
        let (key, value) = item?;
        let summary = decode_summary(&key, &value)?;
        let previous = read_checkpoint(&checkpoints, &summary.uid)?;
        let start = previous.as_ref().map_or(1, |c| c.through + 1);
        let through =
            compactable_through(store, &summary.uid, start, summary.last_seq, retention, now)?;
        if through < start {
            continue;
        }
        let mut checkpoint = previous;
        let mut from = start;
        while from <= through {
            let to = through.min(from + COMPACT_CHUNK - 1);
            if let Some(archive) = &retention.archive {
                archive_range(store, archive, &summary.tenant, &summary.uid, from, to)?;
            }
            checkpoint = Some(compact_range(
                store,
                &checkpoints,
                checkpoint,
                &summary.uid,
                from,
                to,
                now,
            )?);
            from = to + 1;
        }
        store.flush()?;
        done.chains += 1;
        done.records += through + 1 - start;
    }
    Ok(done)
}

/// The last seq of `uid` that retention lets go (below `start` if none): beyond the newest
/// `keep_records`, or older than `keep_for`; never the chain's last record.
fn compactable_through(
    store: &Store,
    uid: &str,
    start: u64,
    last: u64,
    retention: &Retention,
    now: DateTime<Utc>,
) -> Result<u64, JournalError> {
    let by_count = last.saturating_sub(retention.keep_records.max(1));
    let cutoff = now - retention.keep_for;
    let mut by_age = 0;
    for item in store.records.scan_prefix(chain_prefix(uid)) {
        let (key, value) = item?;
        let record = super::read::decode_record(&key, &value)?;
        if record.time >= cutoff {
            break;
        }
        by_age = record.seq;
    }
    Ok(by_count
        .max(by_age)
        .min(last.saturating_sub(1))
        .max(start.saturating_sub(1)))
}

/// Appends records `from..=to` of `uid` to the chain's archive file and syncs it (and the
/// directory, when the file is new). After a crash between this and the deletion the next
/// run archives them again: a record may appear twice in an archive (same seq and hash).
fn archive_range(
    store: &Store,
    archive: &std::path::Path,
    tenant: &str,
    uid: &str,
    from: u64,
    to: u64,
) -> Result<(), JournalError> {
    use std::io::Write;
    let io = |e: std::io::Error| JournalError::Storage(sled::Error::Io(e));
    std::fs::create_dir_all(archive).map_err(io)?;
    let path = archive.join(format!("{tenant}_{uid}.jsonl"));
    let created = !path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    let mut out = std::io::BufWriter::new(&file);
    for item in store
        .records
        .range(record_key(uid, from)..=record_key(uid, to))
    {
        let (key, value) = item?;
        let record = super::read::decode_record(&key, &value)?;
        let line = serde_json::to_string(&record).map_err(|e| io(e.into()))?;
        writeln!(out, "{line}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    drop(out);
    file.sync_data().map_err(io)?;
    if created {
        std::fs::File::open(archive)
            .and_then(|dir| dir.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// Deletes records `from..=to` of `uid` and moves its checkpoint to `to`, atomically.
fn compact_range(
    store: &Store,
    checkpoints: &sled::Tree,
    previous: Option<Checkpoint>,
    uid: &str,
    from: u64,
    to: u64,
    now: DateTime<Utc>,
) -> Result<Checkpoint, JournalError> {
    let last_key = record_key(uid, to);
    let last = match store.records.get(&last_key)? {
        Some(value) => super::read::decode_record(&last_key, &value)?,
        None => {
            return Err(JournalError::Corrupt {
                tree: neurallog_migrations::layout::RECORDS_TREE,
                key: format!("{uid}/{to}"),
                detail: "retention found the chain's summary counting a missing record".into(),
            });
        }
    };
    let first_time = match &previous {
        Some(previous) => previous.first_time,
        None => {
            let first_key = record_key(uid, from);
            match store.records.get(&first_key)? {
                Some(value) => super::read::decode_record(&first_key, &value)?.time,
                None => last.time,
            }
        }
    };
    let checkpoint = Checkpoint {
        tenant: last.tenant.clone(),
        uid: uid.to_owned(),
        through: to,
        hash: last.hash,
        phase: last.to,
        time: last.time,
        first_time,
        compacted_at: now,
    };
    let encoded = encode_checkpoint(&checkpoint);
    (&store.records, checkpoints)
        .transaction(|(records, checkpoints)| {
            for seq in from..=to {
                records.remove(record_key(uid, seq))?;
            }
            checkpoints.insert(uid.as_bytes(), encoded.as_slice())?;
            Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => JournalError::Storage(e),
            sled::transaction::TransactionError::Abort(never) => match never {},
        })?;
    Ok(checkpoint)
}

/// JSON, then the SHA-256 of that JSON: a flipped byte is found, not read as another
/// checkpoint.
pub(super) fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(checkpoint).unwrap_or_default();
    let digest = Digest::of(&bytes);
    bytes.extend_from_slice(&digest.0);
    bytes
}

pub(super) fn decode_checkpoint(key: &[u8], value: &[u8]) -> Result<Checkpoint, JournalError> {
    let corrupt = |detail: String| JournalError::Corrupt {
        tree: CHECKPOINTS_TREE,
        key: String::from_utf8_lossy(key).into_owned(),
        detail,
    };
    let split = value
        .len()
        .checked_sub(codec::HASH_LEN)
        .ok_or_else(|| corrupt("shorter than its hash".into()))?;
    let (json, stored) = value.split_at(split);
    if Digest::of(json).0.as_slice() != stored {
        return Err(corrupt("its hash does not match its bytes".into()));
    }
    let checkpoint: Checkpoint =
        serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
    if checkpoint.uid.as_bytes() != key {
        return Err(corrupt(format!("it names chain {}", checkpoint.uid)));
    }
    Ok(checkpoint)
}

pub(super) fn read_checkpoint(
    tree: &sled::Tree,
    uid: &str,
) -> Result<Option<Checkpoint>, JournalError> {
    tree.get(uid.as_bytes())?
        .map(|value| decode_checkpoint(uid.as_bytes(), &value))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{open_temp, t0};
    use crate::journal::{NewRecord, Record};
    use chrono::Duration;
    use neurallog_machines::{Input, Trigger, step};

    const UID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

    /// A record of a flapping tenant that is in `phase`: it leaves Running when a
    /// component is lost and comes back when all are ready; one record a minute.
    fn flap(uid: &str, seq: u64, phase: Phase) -> NewRecord {
        let trigger = if phase == Phase::Running {
            Trigger::ComponentLost
        } else {
            Trigger::AllReady
        };
        let input = Input::new(trigger, 1);
        let transition = step(phase, &input).unwrap_or_else(|| panic!("{phase} {trigger:?}"));
        NewRecord::from_transition(
            "acme",
            uid,
            seq,
            t0() + Duration::minutes(seq as i64),
            1,
            input,
            transition,
            "digest",
        )
    }

    /// A flapping tenant's first `records` records, written in one batch.
    fn flapping(journal: &Journal, uid: &str, records: u64) {
        let mut phase = Phase::Running;
        let mut entries = Vec::new();
        for seq in 1..=records {
            let entry = flap(uid, seq, phase);
            phase = entry.to;
            entries.push(entry);
        }
        journal.bulk_append_unflushed(entries).unwrap();
        journal.flush().unwrap();
    }

    fn seqs(journal: &Journal, uid: &str) -> Vec<u64> {
        journal.history(uid).map(|r| r.unwrap().seq).collect()
    }

    fn keep(records: u64, days: i64) -> Retention {
        Retention {
            keep_records: records,
            keep_for: Duration::days(days),
            archive: None,
        }
    }

    #[test]
    fn keeps_the_newest_records_and_a_checkpoint_that_verify_and_appends_continue_from() {
        let (_dir, journal) = open_temp();
        flapping(&journal, UID, 50);
        let done = journal.compact(keep(10, 3650), t0()).unwrap();
        assert_eq!(
            done,
            Compaction {
                chains: 1,
                records: 40
            }
        );
        assert_eq!(seqs(&journal, UID), (41..=50).collect::<Vec<_>>());
        let checkpoint = journal.checkpoint(UID).unwrap().expect("checkpoint");
        assert_eq!(checkpoint.through, 40);
        assert_eq!(checkpoint.first_time, t0() + Duration::minutes(1));
        let first_kept = journal.history(UID).next().unwrap().unwrap();
        assert_eq!(first_kept.prev_hash, checkpoint.hash);
        assert!(journal.verify().unwrap().is_ok(), "{:?}", journal.verify());
        let report = journal.verify().unwrap();
        assert_eq!(report.records, 10);

        flapping_more(&journal, 51..=55);
        assert!(journal.verify().unwrap().is_ok());
        assert_eq!(journal.tenant(UID).unwrap().unwrap().last_seq, 55);

        // Nothing more to do: idempotent.
        let again = journal.compact(keep(10, 3650), t0()).unwrap();
        assert_eq!(
            again,
            Compaction {
                chains: 1,
                records: 5
            }
        );
        assert_eq!(
            journal.compact(keep(10, 3650), t0()).unwrap(),
            Compaction::default()
        );
    }

    fn flapping_more(journal: &Journal, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let last = journal.last(UID).unwrap().unwrap();
            journal.append(flap(UID, seq, last.to)).unwrap();
        }
    }

    #[test]
    fn old_records_go_by_age_but_the_last_record_always_stays() {
        let (_dir, journal) = open_temp();
        flapping(&journal, UID, 20);
        // Everything is older than a day, a year later: all but the last go.
        let done = journal
            .compact(keep(1000, 1), t0() + Duration::days(365))
            .unwrap();
        assert_eq!(done.records, 19);
        assert_eq!(seqs(&journal, UID), [20]);
        assert!(journal.verify().unwrap().is_ok());
        // By age within the chain: records older than 10 minutes before minute 20 go.
        let (_dir, journal) = open_temp();
        flapping(&journal, UID, 20);
        journal
            .compact(
                Retention {
                    keep_for: Duration::minutes(10),
                    ..keep(1000, 0)
                },
                t0() + Duration::minutes(20),
            )
            .unwrap();
        assert_eq!(seqs(&journal, UID), (10..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_long_chain_compacts_in_chunks_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::open(&path).unwrap();
        flapping(&journal, UID, COMPACT_CHUNK * 2 + 10);
        let done = journal.compact(keep(5, 3650), t0()).unwrap();
        assert_eq!(done.records, COMPACT_CHUNK * 2 + 5);
        drop(journal);
        let journal = Journal::open(&path).unwrap();
        assert_eq!(seqs(&journal, UID).len(), 5);
        assert_eq!(journal.checkpoints().unwrap().len(), 1);
        assert!(journal.verify().unwrap().is_ok());
    }

    #[test]
    fn compacted_records_are_archived_first_as_export_lines() {
        let (dir, journal) = open_temp();
        flapping(&journal, UID, 12);
        let before: Vec<Record> = journal.history(UID).map(|r| r.unwrap()).collect();
        let archive = dir.path().join("archive");
        let retention = Retention {
            archive: Some(archive.clone()),
            ..keep(5, 3650)
        };
        journal.compact(retention.clone(), t0()).unwrap();
        flapping_more(&journal, 13..=14);
        journal.compact(retention, t0()).unwrap();
        let text = std::fs::read_to_string(archive.join(format!("acme_{UID}.jsonl"))).unwrap();
        let archived: Vec<Record> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(
            archived[..7],
            before[..7],
            "the first run's seven, as they were"
        );
        assert_eq!(
            archived.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
        assert!(archived.iter().all(|r| r.recompute_hash() == r.hash));
        assert_eq!(seqs(&journal, UID), (10..=14).collect::<Vec<_>>());
    }

    #[test]
    fn verify_finds_a_kept_record_that_no_longer_links_to_the_checkpoint() {
        let (_dir, journal) = open_temp();
        flapping(&journal, UID, 12);
        journal.compact(keep(4, 3650), t0()).unwrap();
        let tree = journal.db.open_tree(CHECKPOINTS_TREE).unwrap();
        let mut checkpoint = journal.checkpoint(UID).unwrap().unwrap();
        checkpoint.hash = Digest::ZERO;
        tree.insert(UID.as_bytes(), encode_checkpoint(&checkpoint))
            .unwrap();
        let problem = journal.verify().unwrap().first_problem.expect("a problem");
        assert_eq!(problem.seq, Some(9));
        assert!(matches!(
            problem.kind,
            crate::journal::ProblemKind::BrokenLink { .. }
        ));
        // A flipped byte in the checkpoint itself is found too.
        let mut bytes = tree.get(UID.as_bytes()).unwrap().unwrap().to_vec();
        bytes[5] ^= 1;
        tree.insert(UID.as_bytes(), bytes).unwrap();
        let problem = journal.verify().unwrap().first_problem.expect("a problem");
        assert!(
            matches!(
                problem.kind,
                crate::journal::ProblemKind::CheckpointUndecodable { .. }
            ),
            "{problem}"
        );
    }
}
