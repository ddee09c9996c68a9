//! Writing acknowledged records into sled, off the append path.
//!
//! A batch is acknowledged once it is in the write-ahead log ([`super::wal`]); putting its
//! records into sled's trees costs about as much CPU as the log's sync costs waiting, so
//! this thread does it while the writer syncs the next batch. Reads must still see every
//! acknowledged record: they first wait until this thread has applied every batch sent to
//! it ([`Progress::settle`]).

use super::JournalError;
use super::codec;
use super::record::TenantSummary;
use super::writer::Store;
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// How many batches may wait for this thread before the writer waits for it.
const QUEUED_BATCHES: usize = 256;

/// One record of an acknowledged batch, as it goes into sled.
pub(super) struct Written {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub uid: String,
    /// The chain's summary once this record is its last.
    pub summary: TenantSummary,
}

/// How far the applier is behind the writer.
#[derive(Default)]
pub(super) struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    sent: u64,
    applied: u64,
    /// Why applying stopped: sled refused a write, so it may lack acknowledged records.
    failure: Option<sled::Error>,
}

impl Progress {
    /// Waits until sled holds every batch sent so far.
    pub(super) fn settle(&self) -> Result<(), JournalError> {
        self.settle_through(self.sent_count())
    }

    /// How many batches were sent so far.
    pub(super) fn sent_count(&self) -> u64 {
        self.lock().sent
    }

    /// Waits until sled holds the first `target` batches sent.
    pub(super) fn settle_through(&self, target: u64) -> Result<(), JournalError> {
        let mut state = self.lock();
        while state.applied < target && state.failure.is_none() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match &state.failure {
            Some(error) => Err(JournalError::Storage(error.clone())),
            None => Ok(()),
        }
    }

    /// The error that stopped the applier, if one did.
    pub(super) fn failure(&self) -> Option<sled::Error> {
        self.lock().failure.clone()
    }

    fn sent(&self) {
        self.lock().sent += 1;
    }

    fn applied(&self, batches: u64, outcome: Result<(), sled::Error>) {
        let mut state = self.lock();
        match outcome {
            Ok(()) => state.applied += batches,
            Err(error) => {
                state.failure.get_or_insert(error);
            }
        }
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Each update is one assignment: a panic cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The thread that applies batches, in the order they were sent.
pub(super) struct Applier {
    batches: Option<mpsc::SyncSender<Vec<Written>>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

impl Applier {
    pub(super) fn start(store: Store, progress: Arc<Progress>) -> std::io::Result<Applier> {
        let (batches, queue) = mpsc::sync_channel(QUEUED_BATCHES);
        let thread = {
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("journal-apply".into())
                .spawn(move || apply_until_closed(&store, &queue, &progress))?
        };
        Ok(Applier {
            batches: Some(batches),
            thread: Some(thread),
            progress,
        })
    }

    /// Hands an acknowledged batch to the thread; reads wait for it from now on.
    pub(super) fn send(&self, batch: Vec<Written>) -> Result<(), JournalError> {
        let stopped = || JournalError::Unavailable {
            reason: "the journal's apply thread has stopped".into(),
        };
        let batches = self.batches.as_ref().ok_or_else(stopped)?;
        self.progress.sent();
        batches.send(batch).map_err(|_| {
            // Counted but never applied: reads must not wait for it forever.
            self.progress.applied(
                0,
                Err(sled::Error::ReportableBug(
                    "the journal's apply thread stopped before applying a batch".into(),
                )),
            );
            stopped()
        })
    }
}

impl Drop for Applier {
    /// Applies what is queued, then waits for the thread.
    fn drop(&mut self) {
        self.batches.take();
        super::join_thread(self.thread.take(), "the journal's apply thread panicked");
    }
}

fn apply_until_closed(store: &Store, queue: &mpsc::Receiver<Vec<Written>>, progress: &Progress) {
    while let Ok(first) = queue.recv() {
        // Batches that queued up while the last ones were applied go in together: one
        // write per tree, and one summary per chain however many of its records they hold.
        let mut batches = vec![first];
        batches.extend(queue.try_iter().take(QUEUED_BATCHES));
        // After a failure sled may lack a batch, so later ones must not follow it in.
        let outcome = match progress.failure() {
            Some(failure) => Err(failure),
            None => apply(store, batches.iter().flatten()),
        };
        progress.applied(batches.len() as u64, outcome);
    }
}

/// Writes a batch's records, then its chains' summaries, one key at a time. Not as sled
/// batches: sled writes out its log buffer before and after every batch and waits for the
/// device (`sync_file_range`), so each applied batch put device writes beside the log's
/// own syncs (1,479 of them for 8,000 appends from 4 writers). Nothing needs the batch
/// atomic in sled: the write-ahead log holds every record applied since the last
/// checkpoint and its replay on open completes what a crash cut short, and a record whose
/// chain does not count it yet was never acknowledged (the next append of that seq
/// replaces it).
fn apply<'a>(store: &Store, batch: impl Iterator<Item = &'a Written>) -> Result<(), sled::Error> {
    let mut summaries: HashMap<&str, &TenantSummary> = HashMap::new();
    for written in batch {
        store
            .records
            .insert(written.key.as_slice(), written.value.as_slice())?;
        // A later record of the same chain in the batch replaces this summary.
        summaries.insert(&written.uid, &written.summary);
    }
    for (uid, summary) in summaries {
        store
            .tenants
            .insert(uid.as_bytes(), codec::row_from_summary(summary).encode())?;
    }
    Ok(())
}
