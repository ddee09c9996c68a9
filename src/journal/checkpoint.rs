//! Checkpoints off the append path.
//!
//! A checkpoint makes sled durable (a flush and the syncs after it, several device round
//! trips and as much data as the log held) so that a half of the write-ahead log can be
//! erased and written again. On the writer's thread every append queued meanwhile waited
//! for it, which made the slowest one in a hundred appends several times slower than the
//! rest. So the writer retires a full half to this thread and goes on in the other one;
//! it waits here only when it needs the retired half back before it is erased, and before
//! work that needs the whole log checkpointed ([`Checkpointer::wait_idle`]).

use super::apply::Progress;
use super::wal::Eraser;
use super::writer::Store;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// A half of the log the writer no longer writes.
pub(super) struct Retired {
    pub half: usize,
    /// How many batches the writer had handed to the applier when it retired the half:
    /// sled holds the half's records once that many are applied.
    pub through: u64,
}

pub(super) struct Checkpointer {
    retired: Option<mpsc::Sender<Retired>>,
    thread: Option<JoinHandle<()>>,
    halves: Arc<Halves>,
}

/// Which halves wait for their checkpoint, shared with the thread.
#[derive(Default)]
struct Halves {
    state: Mutex<HalfState>,
    changed: Condvar,
}

#[derive(Default)]
struct HalfState {
    pending: [bool; 2],
    /// Why a checkpoint failed: the log may hold records sled lost, so nothing more is
    /// written until the journal is reopened (which replays the log).
    failure: Option<sled::Error>,
    /// Tests stall checkpoints with it.
    #[cfg(test)]
    held: bool,
}

impl Checkpointer {
    pub(super) fn start(
        store: Store,
        progress: Arc<Progress>,
        eraser: Eraser,
    ) -> std::io::Result<Checkpointer> {
        let (retired, queue) = mpsc::channel();
        let halves = Arc::new(Halves::default());
        let thread = {
            let halves = halves.clone();
            std::thread::Builder::new()
                .name("journal-checkpoint".into())
                .spawn(move || {
                    for half in queue {
                        #[cfg(test)]
                        halves.wait_while_held();
                        // After a failure the log is all that holds some records: it
                        // stays as it is for the reopen to replay.
                        let outcome = match halves.failure() {
                            Some(failure) => Err(failure),
                            None => checkpoint(&store, &progress, &eraser, &half),
                        };
                        halves.done(half.half, outcome);
                    }
                })?
        };
        Ok(Checkpointer {
            retired: Some(retired),
            thread: Some(thread),
            halves,
        })
    }

    /// Hands over a half the writer no longer writes.
    pub(super) fn retire(&self, half: Retired) -> Result<(), sled::Error> {
        self.halves.lock().pending[half.half] = true;
        let sent = self.retired.as_ref().map(|retired| retired.send(half));
        if !matches!(sent, Some(Ok(()))) {
            let error =
                sled::Error::ReportableBug("the journal's checkpoint thread stopped".into());
            self.halves.lock().failure.get_or_insert(error.clone());
            return Err(error);
        }
        Ok(())
    }

    /// Waits until `half` is checkpointed and erased.
    pub(super) fn wait_free(&self, half: usize) -> Result<(), sled::Error> {
        self.halves.wait_until(|state| !state.pending[half])
    }

    /// Waits until every retired half is checkpointed and erased.
    pub(super) fn wait_idle(&self) -> Result<(), sled::Error> {
        self.halves
            .wait_until(|state| state.pending == [false, false])
    }

    /// The error that stopped checkpoints, if one did.
    pub(super) fn failure(&self) -> Option<sled::Error> {
        self.halves.failure()
    }

    #[cfg(test)]
    pub(super) fn hold(&self) -> Hold {
        Hold(self.halves.clone())
    }
}

/// Stalls checkpoints (before they start) while set.
#[cfg(test)]
#[derive(Clone)]
pub(super) struct Hold(Arc<Halves>);

#[cfg(test)]
impl Hold {
    pub(super) fn set(&self, held: bool) {
        self.0.lock().held = held;
        self.0.changed.notify_all();
    }
}

impl Drop for Checkpointer {
    /// Finishes the checkpoints handed over, then waits for the thread.
    fn drop(&mut self) {
        self.retired.take();
        super::join_thread(
            self.thread.take(),
            "the journal's checkpoint thread panicked",
        );
    }
}

impl Halves {
    fn failure(&self) -> Option<sled::Error> {
        self.lock().failure.clone()
    }

    #[cfg(test)]
    fn wait_while_held(&self) {
        let mut state = self.lock();
        while state.held {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn done(&self, half: usize, outcome: Result<(), sled::Error>) {
        let mut state = self.lock();
        match outcome {
            Ok(()) => state.pending[half] = false,
            Err(error) => {
                state.failure.get_or_insert(error);
            }
        }
        self.changed.notify_all();
    }

    fn wait_until(&self, ready: impl Fn(&HalfState) -> bool) -> Result<(), sled::Error> {
        let mut state = self.lock();
        loop {
            if let Some(error) = &state.failure {
                return Err(error.clone());
            }
            if ready(&state) {
                return Ok(());
            }
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, HalfState> {
        // Each update is one assignment: a panic cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits until sled holds the half's records, makes sled durable, then erases the half.
fn checkpoint(
    store: &Store,
    progress: &Progress,
    eraser: &Eraser,
    half: &Retired,
) -> Result<(), sled::Error> {
    progress
        .settle_through(half.through)
        .map_err(super::writer::storage_error)?;
    store.flush()?;
    eraser.erase(half.half).map_err(sled::Error::Io)
}
