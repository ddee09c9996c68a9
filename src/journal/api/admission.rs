//! Admission and threads for journal API requests.
//!
//! The reconciler's journal calls run on tokio's blocking pool. A journal API request must
//! never take a thread there: a client that stops reading would hold it, and enough of
//! them would stop every reconcile. So a request is admitted only while fewer than the
//! limit are being served (else it is refused at once, never queued), and its reads run
//! on a thread of its own that holds the admission until it ends. At most `limit` such
//! threads run.

use super::ApiError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

#[derive(Clone)]
pub(super) struct Admission {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// One admitted request; the slot is free again when this is dropped.
pub(super) struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    /// Admits at most `limit` requests at once (at least 1).
    pub(super) fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// A permit, or `None` when `limit` requests are being served.
    pub(super) fn try_admit(&self) -> Option<Permit> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|slot| Permit { _slot: slot })
    }
}

/// Runs `work` on a new thread that holds `permit` until `work` returns.
pub(super) fn spawn_reader(
    permit: Permit,
    work: impl FnOnce() + Send + 'static,
) -> Result<(), ApiError> {
    std::thread::Builder::new()
        .name("journal-api".into())
        .spawn(move || {
            let _admitted = permit;
            work();
        })
        .map(drop)
        .map_err(|e| ApiError::Journal(format!("cannot start a thread to read the journal: {e}")))
}

/// Runs `f` on a thread of its own (see [`spawn_reader`]) and waits for its result.
pub(super) async fn on_own_thread<T: Send + 'static>(
    permit: Permit,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    spawn_reader(permit, move || {
        // Nobody waits any more if the client went away.
        let _ = tx.send(f());
    })?;
    rx.await
        .map_err(|_| ApiError::Journal("the journal read failed: its thread panicked".into()))?
}
