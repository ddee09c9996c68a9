//! The operator's handle on its journal, which survives a full or failing disk.
//!
//! Once sled hits an I/O error it refuses every later write, and its cache may still hold
//! a record that never reached the disk. So after a storage failure the slot drops the
//! journal at once (nothing half-written is read back and mirrored to Kubernetes) and
//! reopens it from disk on a later use, at most once per [`REOPEN_INTERVAL`]: the operator
//! resumes by itself when the disk has space again. A reopened journal must still hold
//! every record the closed one acknowledged; one that lost any stays closed, and the
//! start-up check of the next operator start moves it aside (`super::recovery`).

use crate::journal::{Acknowledged, Journal, JournalError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

pub struct JournalSlot {
    path: PathBuf,
    options: crate::journal::Options,
    state: Mutex<State>,
}

enum State {
    Open(Arc<Journal>),
    Broken {
        error: String,
        next_try: Instant,
        /// What the closed journal had acknowledged.
        acknowledged: Vec<Acknowledged>,
    },
}

impl JournalSlot {
    pub fn new(journal: Journal) -> Self {
        JournalSlot {
            path: journal.path().to_owned(),
            options: journal.options(),
            state: Mutex::new(State::Open(Arc::new(journal))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open journal, reopening it if a failure closed it and the retry interval has
    /// passed. Blocks on disk I/O: call from a blocking context.
    pub fn get(&self) -> Result<Arc<Journal>, JournalError> {
        let mut state = self.lock();
        match &mut *state {
            State::Open(journal) => Ok(journal.clone()),
            State::Broken {
                error, next_try, ..
            } if Instant::now() < *next_try => Err(JournalError::Unavailable {
                reason: error.clone(),
            }),
            State::Broken { acknowledged, .. } => {
                let acknowledged = std::mem::take(acknowledged);
                match self.reopen(&acknowledged) {
                    Ok(journal) => {
                        tracing::info!(path = %self.path.display(), "journal reopened; resuming");
                        let journal = Arc::new(journal);
                        *state = State::Open(journal.clone());
                        Ok(journal)
                    }
                    Err(error) => {
                        let reason = error.to_string();
                        *state = State::Broken {
                            error: reason.clone(),
                            next_try: Instant::now() + REOPEN_INTERVAL,
                            acknowledged,
                        };
                        Err(JournalError::Unavailable { reason })
                    }
                }
            }
        }
    }

    /// Opens the journal again, if it still holds what was acknowledged.
    fn reopen(&self, acknowledged: &[Acknowledged]) -> Result<Journal, JournalError> {
        let journal = Journal::open_with(&self.path, self.options)?;
        match journal.lost_acknowledged(acknowledged)? {
            None => Ok(journal),
            Some(lost) => Err(JournalError::Unavailable {
                reason: format!(
                    "the reopened journal is damaged ({lost}); restart the operator: its start-up check moves the journal aside and starts a new one"
                ),
            }),
        }
    }

    /// Runs `f` on the journal; a storage failure closes the journal until it reopens.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let journal = self.get()?;
        let result = f(&journal);
        if let Err(error) = &result
            && error.is_storage_failure()
        {
            self.close_after(error);
        }
        result
    }

    /// Appends `entry` without holding a thread while it waits for its sync, when the
    /// journal is open; gives `entry` back when it is closed (reopening it blocks: append
    /// through [`JournalSlot::with`] then). A storage failure closes the journal as there.
    pub async fn append_if_open(
        &self,
        entry: crate::journal::NewRecord,
    ) -> Result<Result<crate::journal::Record, JournalError>, crate::journal::NewRecord> {
        let journal = match &*self.lock() {
            State::Open(journal) => journal.clone(),
            State::Broken { .. } => return Err(entry),
        };
        let result = journal.append_async(entry).await;
        if let Err(error) = &result
            && error.is_storage_failure()
        {
            self.close_after(error);
        }
        Ok(result)
    }

    /// The last record of chain `uid` if the open journal has it in memory: no disk read,
    /// so no blocking thread needed. `None`: read it with [`JournalSlot::with`].
    pub fn cached_last(&self, uid: &str) -> Option<Option<crate::journal::Record>> {
        match &*self.lock() {
            State::Open(journal) => journal.cached_last(uid),
            State::Broken { .. } => None,
        }
    }

    /// Why the journal cannot be written now, if it cannot.
    pub fn unwritable(&self) -> Option<String> {
        match &*self.lock() {
            State::Open(_) => None,
            State::Broken { error, .. } => Some(error.clone()),
        }
    }

    /// Flushes the journal if it is open (at shutdown).
    pub fn flush(&self) -> Result<(), JournalError> {
        match &*self.lock() {
            State::Open(journal) => journal.flush(),
            State::Broken { .. } => Ok(()),
        }
    }

    fn close_after(&self, error: &JournalError) {
        tracing::error!(path = %self.path.display(), %error, "journal write failed: holding every phase change until it can be written");
        let mut state = self.lock();
        let acknowledged = match &mut *state {
            State::Open(journal) => journal.acknowledged(),
            State::Broken { acknowledged, .. } => std::mem::take(acknowledged),
        };
        *state = State::Broken {
            error: error.to_string(),
            next_try: Instant::now() + REOPEN_INTERVAL,
            acknowledged,
        };
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave `State` half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage_error() -> JournalError {
        JournalError::Storage(sled::Error::Io(std::io::Error::from_raw_os_error(28)))
    }

    #[test]
    fn a_storage_failure_closes_the_journal_until_it_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = JournalSlot::new(Journal::open(dir.path()).expect("open"));
        let failed: Result<(), _> = slot.with(|_| Err(storage_error()));
        assert!(failed.is_err());
        let why = slot
            .unwritable()
            .expect("unwritable after a storage failure");
        assert!(why.contains("No space left on device"), "{why}");
        assert!(matches!(slot.get(), Err(JournalError::Unavailable { .. })));
        // Nothing else holds the journal, so it reopens once the interval has passed.
        std::thread::sleep(REOPEN_INTERVAL);
        slot.get().expect("reopened");
        assert_eq!(slot.unwritable(), None);
    }

    #[test]
    fn a_reopened_journal_that_lost_an_acknowledged_record_stays_closed() {
        use crate::journal::testing::sample_entry;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal");
        let slot = JournalSlot::new(Journal::open(&path).expect("open"));
        slot.with(|j| j.append(sample_entry("acme", "uid-1", 1)))
            .expect("append");
        let failed: Result<(), _> = slot.with(|_| Err(storage_error()));
        assert!(failed.is_err());
        // While it was closed the journal lost its record: here, the whole directory.
        std::fs::remove_dir_all(&path).expect("remove");
        std::thread::sleep(REOPEN_INTERVAL);
        let Err(JournalError::Unavailable { reason }) = slot.get() else {
            panic!("a journal that lost an acknowledged record was reopened");
        };
        assert!(
            reason.contains("record 1 of chain uid-1 was acknowledged but is gone"),
            "{reason}"
        );
        assert!(slot.unwritable().is_some());
        // It is checked again on the next try, not forgotten.
        std::thread::sleep(REOPEN_INTERVAL);
        assert!(slot.get().is_err());
    }

    #[test]
    fn other_errors_leave_the_journal_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = JournalSlot::new(Journal::open(dir.path()).expect("open"));
        let conflict: Result<(), _> = slot.with(|_| {
            Err(JournalError::Conflict {
                tenant: "t".into(),
                uid: "u".into(),
                seq: 2,
                reason: "skips ahead".into(),
            })
        });
        assert!(conflict.is_err());
        assert_eq!(slot.unwritable(), None);
    }
}
