//! The mark a journal carries when it was started to replace a damaged one.

use crate::journal::{Journal, JournalError, Record};
use chrono::{DateTime, Utc};
use neurallog_migrations::layout::{META_TREE, record_key};
use serde::{Deserialize, Serialize};

const RECOVERY_KEY: &[u8] = b"recovered_from";

/// Where the damaged journal was moved, why, and when this journal replaced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryMark {
    pub moved_to: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    /// This journal's chain label, chosen apart from every earlier one. Marks written
    /// before it was stored derive it from `at` (see [`RecoveryMark::chain_label`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The chains this journal's history replaced (`None`: the original journal), and
    /// those the Tenants' statuses named when it started: a status naming one of them is
    /// from before the recovery, not a sign of damage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_chains: Vec<Option<String>>,
}

impl RecoveryMark {
    /// Names this chain apart from the ones it replaced (the same tenant's seq 1 exists in
    /// each), for example in Event names.
    pub fn chain_label(&self) -> String {
        self.chain
            .clone()
            .unwrap_or_else(|| Self::label_at(self.at, 1))
    }

    /// `r<UTC time to the second>`, and `-<n>` from the second label of the same second.
    pub fn label_at(at: DateTime<Utc>, n: u32) -> String {
        let base = format!("r{}", at.format("%Y%m%d%H%M%S"));
        if n <= 1 { base } else { format!("{base}-{n}") }
    }

    /// Whether a status naming `chain` belongs to this journal's history.
    pub fn knows(&self, chain: Option<&str>) -> bool {
        chain == Some(self.chain_label().as_str())
            || self.earlier_chains.iter().any(|c| c.as_deref() == chain)
    }
}

impl Journal {
    /// Records that this journal replaces a damaged one; flushed before it returns.
    pub fn mark_recovery(&self, mark: &RecoveryMark) -> Result<(), JournalError> {
        let value = serde_json::to_vec(mark).map_err(|e| JournalError::Corrupt {
            tree: META_TREE,
            key: String::from_utf8_lossy(RECOVERY_KEY).into_owned(),
            detail: e.to_string(),
        })?;
        self.db.open_tree(META_TREE)?.insert(RECOVERY_KEY, value)?;
        self.flush()
    }

    /// The recovery this journal started with, if it did.
    pub fn recovery(&self) -> Result<Option<RecoveryMark>, JournalError> {
        let Some(value) = self.db.open_tree(META_TREE)?.get(RECOVERY_KEY)? else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| JournalError::Corrupt {
                tree: META_TREE,
                key: String::from_utf8_lossy(RECOVERY_KEY).into_owned(),
                detail: e.to_string(),
            })
    }

    /// The record `seq` of chain `uid`.
    pub fn record(&self, uid: &str, seq: u64) -> Result<Option<Record>, JournalError> {
        self.settled()?;
        let Some(value) = self.records.get(record_key(uid, seq))? else {
            return Ok(None);
        };
        crate::journal::read::decode_record(&record_key(uid, seq), &value).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{TO_RUNNING, lifecycle, open_temp, t0};

    #[test]
    fn a_recovery_mark_survives_reopening() {
        let (dir, journal) = open_temp();
        assert_eq!(journal.recovery().unwrap(), None);
        let mark = RecoveryMark {
            moved_to: "/j.damaged".into(),
            reason: "flipped byte".into(),
            at: t0(),
            chain: Some("r20250102030405-2".into()),
            earlier_chains: vec![None, Some("r20250102030405".into())],
        };
        journal.mark_recovery(&mark).unwrap();
        drop(journal);
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        assert_eq!(journal.recovery().unwrap(), Some(mark.clone()));
        assert_eq!(mark.chain_label(), "r20250102030405-2");
        assert!(mark.knows(None) && mark.knows(Some("r20250102030405")));
        assert!(mark.knows(Some("r20250102030405-2")) && !mark.knows(Some("r1")));
        assert!(
            journal.verify().unwrap().is_ok(),
            "the mark is not a stray key"
        );
    }

    #[test]
    fn a_mark_written_before_labels_were_stored_keeps_its_label() {
        let old = r#"{"movedTo":"/j.damaged","reason":"x","at":"2025-01-02T03:04:05Z"}"#;
        let mark: RecoveryMark = serde_json::from_str(old).unwrap();
        assert_eq!(mark.chain_label(), "r20250102030405");
        assert!(mark.earlier_chains.is_empty());
    }

    #[test]
    fn reads_one_record_by_uid_and_seq() {
        let (_dir, journal) = open_temp();
        for entry in lifecycle("acme", "uid-1", t0(), &TO_RUNNING) {
            journal.append(entry).unwrap();
        }
        assert_eq!(journal.record("uid-1", 2).unwrap().unwrap().seq, 2);
        assert_eq!(journal.record("uid-1", 99).unwrap(), None);
        assert_eq!(journal.record("uid-2", 1).unwrap(), None);
    }
}
