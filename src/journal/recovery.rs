//! The mark a journal carries when it was started to replace a damaged one.

use super::{Journal, JournalError, Record};
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
}

impl RecoveryMark {
    /// Names this chain apart from the one it replaced (the same tenant's seq 1 exists in
    /// both), for example in Event names.
    pub fn chain_label(&self) -> String {
        format!("r{}", self.at.format("%Y%m%d%H%M%S"))
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
        let Some(value) = self.records.get(record_key(uid, seq))? else {
            return Ok(None);
        };
        super::read::decode_record(&record_key(uid, seq), &value).map(Some)
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
        };
        journal.mark_recovery(&mark).unwrap();
        drop(journal);
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        assert_eq!(journal.recovery().unwrap(), Some(mark));
        assert!(
            journal.verify().unwrap().is_ok(),
            "the mark is not a stray key"
        );
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
