//! Checking the journal's integrity: every hash recomputes, every `prevHash` links to the
//! previous record, seqs run gapless from 1, times never go backwards, and each chain's
//! summary matches the chain's last record.
//!
//! Records are streamed in key order; a chain is checked up to its first problem and the
//! rest of it is counted but skipped, so one damaged record is reported once, not once per
//! record after it.

use super::codec::{self, RecordView};
use super::digest::Digest;
use super::read::decode_summary;
use super::record::TenantSummary;
use super::retention::{Checkpoint, decode_checkpoint};
use super::{Journal, JournalError};
use chrono::{DateTime, Utc};
use neurallog_machines::Phase;
use neurallog_migrations::layout::{CHECKPOINTS_TREE, display_record_key, split_record_key};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// How often (in records) progress is reported.
const PROGRESS_EVERY: u64 = 1 << 16;

/// Which chains to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyScope {
    All,
    Uids(Vec<String>),
}

/// How far a verification has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyProgress {
    pub records: u64,
    pub chains: u64,
    /// What the summaries say there is to check, for a progress bar.
    pub expected_records: u64,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub chains: u64,
    pub records: u64,
    /// Damaged chains, stray keys and summaries without a chain; at most one per chain.
    pub problems: u64,
    /// The first problem found. Records are checked in key order (uid, then seq); summaries
    /// without records are reported after them.
    pub first_problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems == 0
    }
}

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The chain's uid (for a malformed key: the key in hex).
    pub uid: String,
    /// The record's seq; `None` for problems of a whole chain or of a key.
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "uid {} seq {seq}: {}", self.uid, self.kind),
            None => write!(f, "uid {}: {}", self.uid, self.kind),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ProblemKind {
    #[error("key {key} is not a record key")]
    MalformedKey { key: String },
    #[error("record is truncated: {detail}")]
    Truncated { detail: String },
    #[error("stored hash {stored} does not match the recomputed {computed}")]
    HashMismatch { stored: Digest, computed: Digest },
    #[error("record does not decode: {detail}")]
    Undecodable { detail: String },
    #[error("record stored under this key is uid {value_uid} seq {value_seq}")]
    KeyMismatch { value_uid: String, value_seq: u64 },
    #[error("seq gap: expected seq {expected}")]
    SeqGap { expected: u64 },
    #[error("prevHash {found} does not link to the previous record's hash {expected}")]
    BrokenLink { expected: Digest, found: Digest },
    #[error("time {found} is before the previous record's time {previous}")]
    TimeWentBackwards {
        previous: DateTime<Utc>,
        found: DateTime<Utc>,
    },
    #[error("tenant name changed from {expected} to {found} within the chain")]
    TenantChanged { expected: String, found: String },
    #[error("chain has no summary")]
    SummaryMissing,
    #[error("summary does not match the chain: {detail}")]
    SummaryMismatch { detail: String },
    #[error("summary does not decode: {detail}")]
    SummaryUndecodable { detail: String },
    #[error("checkpoint does not decode: {detail}")]
    CheckpointUndecodable { detail: String },
    #[error("summary exists but the chain has no records")]
    ChainMissing,
    #[error("no chain and no summary has this uid")]
    UnknownChain,
}

impl Journal {
    /// Verifies every chain.
    pub fn verify(&self) -> Result<VerifyReport, JournalError> {
        self.verify_with(&VerifyScope::All, |_| {})
    }

    /// Verifies the chains in `scope`, calling `on_progress` every few thousand records and
    /// once at the end. Damage is reported in the result; `Err` means the journal could not
    /// be read at all.
    pub fn verify_with(
        &self,
        scope: &VerifyScope,
        mut on_progress: impl FnMut(&VerifyProgress),
    ) -> Result<VerifyReport, JournalError> {
        self.settled()?;
        let mut verifier = Verifier::new(&mut on_progress);
        match scope {
            VerifyScope::All => self.verify_all(&mut verifier)?,
            VerifyScope::Uids(uids) => self.verify_uids(&mut verifier, uids)?,
        }
        Ok(verifier.finish())
    }

    fn verify_all(&self, verifier: &mut Verifier<'_>) -> Result<(), JournalError> {
        self.expect_checkpoints(verifier, None)?;
        for item in self.tenants.iter() {
            let (key, value) = item?;
            verifier.expect_summary(&key, decode_summary(&key, &value));
        }
        for item in self.records.iter() {
            let (key, value) = item?;
            verifier.record(&key, &value);
        }
        Ok(())
    }

    fn verify_uids(
        &self,
        verifier: &mut Verifier<'_>,
        uids: &[String],
    ) -> Result<(), JournalError> {
        let mut uids = uids.to_vec();
        uids.sort();
        uids.dedup();
        self.expect_checkpoints(verifier, Some(&uids))?;
        for uid in &uids {
            if let Some(bytes) = self.tenants.get(uid.as_bytes())? {
                verifier.expect_summary(uid.as_bytes(), decode_summary(uid.as_bytes(), &bytes));
            }
        }
        for uid in &uids {
            let mut empty = true;
            for item in self.chain_entries(uid).into_iter().flatten() {
                let (key, value) = item?;
                verifier.record(&key, &value);
                empty = false;
            }
            if empty {
                verifier.no_records(uid);
            }
        }
        Ok(())
    }
}

impl Journal {
    /// Hands the verifier the checkpoints of the chains it checks (all without `uids`).
    fn expect_checkpoints(
        &self,
        verifier: &mut Verifier<'_>,
        uids: Option<&[String]>,
    ) -> Result<(), JournalError> {
        let tree = self.db.open_tree(CHECKPOINTS_TREE)?;
        for item in tree.iter() {
            let (key, value) = item?;
            let uid = String::from_utf8_lossy(&key).into_owned();
            if uids.is_some_and(|uids| !uids.contains(&uid)) {
                continue;
            }
            match decode_checkpoint(&key, &value) {
                Ok(checkpoint) => {
                    verifier.checkpoints.insert(uid, checkpoint);
                }
                Err(error) => verifier.problem(
                    uid,
                    None,
                    ProblemKind::CheckpointUndecodable {
                        detail: error.to_string(),
                    },
                ),
            }
        }
        Ok(())
    }
}

/// What a chain looks like after the records checked so far.
struct Chain {
    uid: String,
    tenant: Option<String>,
    first_time: Option<DateTime<Utc>>,
    last_seq: u64,
    last_hash: Digest,
    last_time: Option<DateTime<Utc>>,
    last_phase: Phase,
    broken: bool,
}

impl Chain {
    fn new(uid: &str) -> Self {
        Chain {
            uid: uid.to_owned(),
            tenant: None,
            first_time: None,
            last_seq: 0,
            last_hash: Digest::ZERO,
            last_time: None,
            last_phase: Phase::New,
            broken: false,
        }
    }

    /// A chain retention compacted up to `checkpoint`: it continues from there.
    fn after(checkpoint: &Checkpoint) -> Self {
        Chain {
            uid: checkpoint.uid.clone(),
            tenant: Some(checkpoint.tenant.clone()),
            first_time: Some(checkpoint.first_time),
            last_seq: checkpoint.through,
            last_hash: checkpoint.hash,
            last_time: Some(checkpoint.time),
            last_phase: checkpoint.phase,
            broken: false,
        }
    }

    /// Checks the record stored under `(uid, seq)` and, if sound, makes it the chain's last;
    /// if not, marks the chain broken.
    fn accept(&mut self, uid: &str, seq: u64, value: &[u8]) -> Result<(), ProblemKind> {
        let outcome = self.extend(uid, seq, value);
        self.broken = outcome.is_err();
        outcome
    }

    fn extend(&mut self, uid: &str, seq: u64, value: &[u8]) -> Result<(), ProblemKind> {
        let record = checked_record(value)?;
        self.check_link(uid, seq, &record)?;
        if self.tenant.is_none() {
            self.tenant = Some(record.tenant.to_owned());
            self.first_time = Some(record.time);
        }
        self.last_seq = record.seq;
        self.last_hash = record.hash;
        self.last_time = Some(record.time);
        self.last_phase = record.to;
        Ok(())
    }

    fn check_link(&self, uid: &str, seq: u64, record: &RecordView<'_>) -> Result<(), ProblemKind> {
        if record.uid != uid || record.seq != seq {
            return Err(ProblemKind::KeyMismatch {
                value_uid: record.uid.to_owned(),
                value_seq: record.seq,
            });
        }
        if record.seq != self.last_seq + 1 {
            return Err(ProblemKind::SeqGap {
                expected: self.last_seq + 1,
            });
        }
        if record.prev_hash != self.last_hash {
            return Err(ProblemKind::BrokenLink {
                expected: self.last_hash,
                found: record.prev_hash,
            });
        }
        if let Some(previous) = self.last_time
            && record.time < previous
        {
            return Err(ProblemKind::TimeWentBackwards {
                previous,
                found: record.time,
            });
        }
        match &self.tenant {
            Some(expected) if expected != record.tenant => Err(ProblemKind::TenantChanged {
                expected: expected.clone(),
                found: record.tenant.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// How the chain's summary differs from the chain, if it does.
    fn summary_difference(&self, summary: &TenantSummary) -> Option<String> {
        let chain = (
            self.tenant.as_deref(),
            self.first_time,
            self.last_seq,
            self.last_hash,
            self.last_time,
            self.last_phase,
        );
        let summary_view = (
            Some(summary.tenant.as_str()),
            Some(summary.first_time),
            summary.last_seq,
            summary.last_hash,
            Some(summary.last_time),
            summary.last_phase,
        );
        (chain != summary_view).then(|| {
            format!(
                "summary says tenant {} ends at seq {} ({}, hash {}); the chain ends at seq {} ({}, hash {})",
                summary.tenant,
                summary.last_seq,
                summary.last_phase,
                summary.last_hash,
                self.last_seq,
                self.last_phase,
                self.last_hash,
            )
        })
    }
}

/// Decodes a stored value whose hash recomputes.
fn checked_record(value: &[u8]) -> Result<RecordView<'_>, ProblemKind> {
    let (body, stored) = codec::split_value(value).map_err(|e| ProblemKind::Truncated {
        detail: e.to_string(),
    })?;
    let computed = Digest::of(body);
    let decoded = codec::decode_body(body, stored);
    if computed != stored {
        return Err(match decoded {
            Err(e) if e.is_truncation() => ProblemKind::Truncated {
                detail: e.to_string(),
            },
            _ => ProblemKind::HashMismatch { stored, computed },
        });
    }
    decoded.map_err(|e| ProblemKind::Undecodable {
        detail: e.to_string(),
    })
}

struct Verifier<'p> {
    report: VerifyReport,
    /// Summaries not yet matched with their chain, by uid.
    summaries: BTreeMap<String, TenantSummary>,
    /// Where compacted chains start, by uid.
    checkpoints: BTreeMap<String, Checkpoint>,
    chain: Option<Chain>,
    expected_records: u64,
    on_progress: &'p mut dyn FnMut(&VerifyProgress),
}

impl<'p> Verifier<'p> {
    fn new(on_progress: &'p mut dyn FnMut(&VerifyProgress)) -> Self {
        Verifier {
            report: VerifyReport::default(),
            summaries: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            chain: None,
            expected_records: 0,
            on_progress,
        }
    }

    fn expect_summary(&mut self, key: &[u8], summary: Result<TenantSummary, JournalError>) {
        match summary {
            Ok(summary) => {
                let compacted = self.checkpoints.get(&summary.uid).map_or(0, |c| c.through);
                let kept = summary.last_seq.saturating_sub(compacted);
                self.expected_records = self.expected_records.saturating_add(kept);
                self.summaries.insert(summary.uid.clone(), summary);
            }
            Err(error) => self.problem(
                String::from_utf8_lossy(key).into_owned(),
                None,
                ProblemKind::SummaryUndecodable {
                    detail: error.to_string(),
                },
            ),
        }
    }

    fn record(&mut self, key: &[u8], value: &[u8]) {
        self.report.records += 1;
        if self.report.records.is_multiple_of(PROGRESS_EVERY) {
            self.progress();
        }
        let Some((uid, seq)) = split_record_key(key) else {
            let key = display_record_key(key);
            return self.problem(key.clone(), None, ProblemKind::MalformedKey { key });
        };
        let same_chain = self.chain.as_ref().is_some_and(|chain| chain.uid == uid);
        if !same_chain {
            self.finish_chain();
            self.report.chains += 1;
        }
        let checkpoint = self.checkpoints.get(uid);
        let chain = self
            .chain
            .get_or_insert_with(|| checkpoint.map_or_else(|| Chain::new(uid), Chain::after));
        if chain.broken {
            return;
        }
        if let Err(kind) = chain.accept(uid, seq, value) {
            self.problem(uid.to_owned(), Some(seq), kind);
        }
    }

    /// Called when a requested uid has no records.
    fn no_records(&mut self, uid: &str) {
        self.finish_chain();
        if self.summaries.remove(uid).is_some() {
            self.problem(uid.to_owned(), None, ProblemKind::ChainMissing);
        } else {
            self.problem(uid.to_owned(), None, ProblemKind::UnknownChain);
        }
    }

    fn finish_chain(&mut self) {
        let Some(chain) = self.chain.take() else {
            return;
        };
        let summary = self.summaries.remove(&chain.uid);
        if chain.broken {
            return;
        }
        let kind = match summary {
            None => ProblemKind::SummaryMissing,
            Some(summary) => match chain.summary_difference(&summary) {
                Some(detail) => ProblemKind::SummaryMismatch { detail },
                None => return,
            },
        };
        self.problem(chain.uid, Some(chain.last_seq), kind);
    }

    fn finish(mut self) -> VerifyReport {
        self.finish_chain();
        for uid in std::mem::take(&mut self.summaries).into_keys() {
            self.problem(uid, None, ProblemKind::ChainMissing);
        }
        self.progress();
        self.report
    }

    fn problem(&mut self, uid: String, seq: Option<u64>, kind: ProblemKind) {
        self.report.problems += 1;
        self.report
            .first_problem
            .get_or_insert(Problem { uid, seq, kind });
    }

    fn progress(&mut self) {
        (self.on_progress)(&VerifyProgress {
            records: self.report.records,
            chains: self.report.chains,
            expected_records: self.expected_records,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::codec::{Fields, encode_body};
    use crate::journal::record::Record;
    use crate::journal::testing::{TO_RUNNING, lifecycle, open_temp, t0};
    use neurallog_migrations::layout::record_key;

    const UID_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
    const UID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

    /// `acme` (4 records) and `beta` (3 records).
    fn two_chains() -> (tempfile::TempDir, Journal) {
        let (dir, journal) = open_temp();
        let mut entries = lifecycle("acme", UID_A, t0(), &TO_RUNNING);
        entries.extend(lifecycle("beta", UID_B, t0(), &TO_RUNNING[..3]));
        for entry in entries {
            journal.append(entry).unwrap();
        }
        // The tests change what sled stores: only once the appends are in it.
        journal.settled().unwrap();
        (dir, journal)
    }

    fn stored(journal: &Journal, uid: &str, seq: u64) -> Vec<u8> {
        journal
            .records
            .get(record_key(uid, seq))
            .unwrap()
            .unwrap()
            .to_vec()
    }

    fn store(journal: &Journal, uid: &str, seq: u64, value: Vec<u8>) {
        journal.records.insert(record_key(uid, seq), value).unwrap();
    }

    /// Changes a record and stores it with a hash that matches the change, as a careful
    /// forger would.
    fn rewrite(journal: &Journal, uid: &str, seq: u64, change: impl FnOnce(&mut Record)) {
        let mut record = codec::decode_record(&stored(journal, uid, seq)).unwrap();
        change(&mut record);
        let mut value = encode_body(&Fields::of_record(&record), &record.prev_hash);
        let hash = Digest::of(&value);
        value.extend_from_slice(&hash.0);
        store(journal, uid, seq, value);
    }

    fn first_problem(journal: &Journal) -> (String, Option<u64>, ProblemKind) {
        let report = journal.verify().unwrap();
        assert!(!report.is_ok());
        let problem = report.first_problem.unwrap();
        (problem.uid, problem.seq, problem.kind)
    }

    #[test]
    fn intact_journal_verifies() {
        let (_dir, journal) = two_chains();
        let report = journal.verify().unwrap();
        assert_eq!(
            report,
            VerifyReport {
                chains: 2,
                records: 7,
                problems: 0,
                first_problem: None
            }
        );
    }

    #[test]
    fn detects_a_flipped_byte() {
        let (_dir, journal) = two_chains();
        let mut value = stored(&journal, UID_A, 2);
        let middle = value.len() / 2;
        value[middle] ^= 0x01;
        store(&journal, UID_A, 2, value);
        let (uid, seq, kind) = first_problem(&journal);
        assert_eq!((uid.as_str(), seq), (UID_A, Some(2)));
        assert!(matches!(kind, ProblemKind::HashMismatch { .. }), "{kind}");
    }

    #[test]
    fn detects_a_flipped_byte_in_the_stored_hash() {
        let (_dir, journal) = two_chains();
        let mut value = stored(&journal, UID_B, 3);
        let last = value.len() - 1;
        value[last] ^= 0x80;
        store(&journal, UID_B, 3, value);
        let (uid, seq, kind) = first_problem(&journal);
        assert_eq!((uid.as_str(), seq), (UID_B, Some(3)));
        assert!(matches!(kind, ProblemKind::HashMismatch { .. }), "{kind}");
    }

    #[test]
    fn detects_a_truncated_record() {
        let (_dir, journal) = two_chains();
        for keep in [40, 10] {
            let mut value = stored(&journal, UID_A, 2);
            value.truncate(keep);
            store(&journal, UID_A, 2, value);
            let (_, seq, kind) = first_problem(&journal);
            assert_eq!(seq, Some(2));
            assert!(matches!(kind, ProblemKind::Truncated { .. }), "{kind}");
        }
    }

    #[test]
    fn detects_a_removed_record() {
        let (_dir, journal) = two_chains();
        journal.records.remove(record_key(UID_A, 2)).unwrap();
        let (uid, seq, kind) = first_problem(&journal);
        assert_eq!((uid.as_str(), seq), (UID_A, Some(3)));
        assert_eq!(kind, ProblemKind::SeqGap { expected: 2 });
    }

    #[test]
    fn detects_a_removed_first_or_last_record() {
        let (_dir, journal) = two_chains();
        journal.records.remove(record_key(UID_A, 1)).unwrap();
        assert_eq!(
            first_problem(&journal).2,
            ProblemKind::SeqGap { expected: 1 }
        );

        let (_dir, journal) = two_chains();
        journal.records.remove(record_key(UID_B, 3)).unwrap();
        let (uid, seq, kind) = first_problem(&journal);
        assert_eq!((uid.as_str(), seq), (UID_B, Some(2)));
        assert!(
            matches!(kind, ProblemKind::SummaryMismatch { .. }),
            "{kind}"
        );
    }

    #[test]
    fn detects_swapped_records() {
        let (_dir, journal) = two_chains();
        let second = stored(&journal, UID_A, 2);
        let third = stored(&journal, UID_A, 3);
        store(&journal, UID_A, 2, third);
        store(&journal, UID_A, 3, second);
        let (_, seq, kind) = first_problem(&journal);
        assert_eq!(seq, Some(2));
        assert_eq!(
            kind,
            ProblemKind::KeyMismatch {
                value_uid: UID_A.into(),
                value_seq: 3
            }
        );
    }

    #[test]
    fn detects_a_bad_prev_hash_even_with_a_matching_hash() {
        let (_dir, journal) = two_chains();
        rewrite(&journal, UID_A, 3, |r| r.prev_hash = Digest::of(b"forged"));
        let (_, seq, kind) = first_problem(&journal);
        assert_eq!(seq, Some(3));
        assert!(matches!(kind, ProblemKind::BrokenLink { .. }), "{kind}");
    }

    #[test]
    fn detects_time_going_backwards() {
        let (_dir, journal) = two_chains();
        rewrite(&journal, UID_A, 4, |r| {
            r.time = t0() - chrono::Duration::days(1)
        });
        let (_, seq, kind) = first_problem(&journal);
        assert_eq!(seq, Some(4));
        assert!(
            matches!(kind, ProblemKind::TimeWentBackwards { .. }),
            "{kind}"
        );
    }

    #[test]
    fn detects_stray_keys_and_summaries_without_records() {
        let (_dir, journal) = two_chains();
        journal.records.insert(&b"stray"[..], &b"x"[..]).unwrap();
        let summary = journal.tenant(UID_B).unwrap().unwrap();
        let orphan = TenantSummary {
            uid: "cccccccc".into(),
            ..summary
        };
        journal
            .tenants
            .insert("cccccccc", codec::row_from_summary(&orphan).encode())
            .unwrap();
        let report = journal.verify().unwrap();
        assert_eq!(report.problems, 2);
        assert!(matches!(
            report.first_problem.unwrap().kind,
            ProblemKind::MalformedKey { .. }
        ));
    }

    #[test]
    fn counts_one_problem_per_chain_and_reports_the_first_in_key_order() {
        let (_dir, journal) = two_chains();
        journal.records.remove(record_key(UID_B, 2)).unwrap();
        rewrite(&journal, UID_A, 2, |r| r.message = "edited".into());
        rewrite(&journal, UID_A, 3, |r| r.message = "edited".into());
        let report = journal.verify().unwrap();
        assert_eq!((report.chains, report.records, report.problems), (2, 6, 2));
        let first = report.first_problem.unwrap();
        assert_eq!((first.uid.as_str(), first.seq), (UID_A, Some(3)));
        assert!(
            first
                .to_string()
                .starts_with(&format!("uid {UID_A} seq 3: prevHash"))
        );
    }

    #[test]
    fn problems_serialize_flat_in_camel_case() {
        let problem = Problem {
            uid: UID_A.into(),
            seq: Some(3),
            kind: ProblemKind::KeyMismatch {
                value_uid: UID_B.into(),
                value_seq: 2,
            },
        };
        assert_eq!(
            serde_json::to_value(&problem).unwrap(),
            serde_json::json!({
                "uid": UID_A, "seq": 3, "kind": "keyMismatch", "valueUid": UID_B, "valueSeq": 2
            })
        );
    }

    #[test]
    fn verifies_a_subset_and_reports_progress() {
        let (_dir, journal) = two_chains();
        journal.records.remove(record_key(UID_A, 2)).unwrap();
        let mut seen = Vec::new();
        let scope = VerifyScope::Uids(vec![UID_B.into(), UID_B.into()]);
        let report = journal.verify_with(&scope, |p| seen.push(*p)).unwrap();
        assert!(report.is_ok());
        assert_eq!((report.chains, report.records), (1, 3));
        assert_eq!(
            seen.last(),
            Some(&VerifyProgress {
                records: 3,
                chains: 1,
                expected_records: 3
            })
        );

        let scope = VerifyScope::Uids(vec!["nope".into()]);
        let report = journal.verify_with(&scope, |_| {}).unwrap();
        assert_eq!(
            report.first_problem.unwrap().kind,
            ProblemKind::UnknownChain
        );
    }
}
