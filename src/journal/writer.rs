//! Group commit: one thread writes every append.
//!
//! A durable append costs a device round trip (sled's write, then `fdatasync`), and
//! concurrent reconciles append at once. So appends are queued to one writer thread, which
//! takes everything queued, writes it in one sled transaction, flushes and syncs once, and
//! then answers each caller. Under load a batch grows to what arrived during the previous
//! sync, so throughput follows the disk's sync rate times the batch size, and an append
//! waits for at most the batch in flight and its own.

use super::JournalError;
use super::append::commit_batch;
use super::durable::DiskSync;
use super::record::{NewRecord, Record};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The most appends one transaction takes.
const MAX_BATCH: usize = 1024;

/// What the writer thread writes to: handles on the same sled database as the journal's.
#[derive(Clone)]
pub(super) struct Store {
    pub db: sled::Db,
    pub records: sled::Tree,
    pub tenants: sled::Tree,
    pub disk: Option<Arc<DiskSync>>,
}

impl Store {
    /// sled's flush, then the syncs that make it survive a power cut.
    pub(super) fn flush(&self) -> Result<(), sled::Error> {
        super::durable::flush_durably(&self.db, self.disk.as_deref())
    }
}

// Appends are the common request; boxing them would allocate per append to save bytes
// in a queue that holds a batch at most.
#[allow(clippy::large_enum_variant)]
enum Request {
    Append {
        entry: NewRecord,
        reply: mpsc::SyncSender<Result<Record, JournalError>>,
    },
    /// Work that must not interleave with appends (retention), run between batches.
    Exclusive(Box<dyn FnOnce(&Store) + Send>),
}

type Reply = mpsc::SyncSender<Result<Record, JournalError>>;

pub(super) struct Writer {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(store: Store) -> std::io::Result<Writer> {
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_until_closed(&store, &queue))?;
        Ok(Writer {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Queues `entry` and waits until it is durable (or refused).
    pub(super) fn append(&self, entry: NewRecord) -> Result<Record, JournalError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Append { entry, reply })?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Runs `job` on the writer thread between two batches and returns what it returns.
    pub(super) fn exclusive<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, JournalError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Exclusive(Box::new(move |store| {
            // The caller may have stopped waiting.
            let _ = reply.send(job(store));
        })))?;
        answer.recv().map_err(|_| stopped())
    }

    fn send(&self, request: Request) -> Result<(), JournalError> {
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(request)
            .map_err(|_| stopped())
    }
}

impl Drop for Writer {
    /// Lets the thread answer what is queued, then waits for it: the database it holds
    /// is closed (and its file lock released) only when it has exited.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the journal writer thread panicked");
        }
    }
}

fn write_until_closed(store: &Store, queue: &mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut entries = Vec::new();
        let mut replies: Vec<Reply> = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append { entry, reply } => {
                    entries.push(entry);
                    replies.push(reply);
                }
                Request::Exclusive(job) => {
                    commit(store, &mut entries, &mut replies);
                    job(store);
                }
            }
            if entries.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        commit(store, &mut entries, &mut replies);
    }
}

/// Commits the batch collected so far (if any) and answers each caller.
fn commit(store: &Store, entries: &mut Vec<NewRecord>, replies: &mut Vec<Reply>) {
    if entries.is_empty() {
        return;
    }
    let outcomes = commit_batch(store, entries);
    for (reply, outcome) in replies.drain(..).zip(outcomes) {
        // A caller that gave up waiting needs no answer.
        let _ = reply.send(outcome);
    }
    entries.clear();
}

fn stopped() -> JournalError {
    JournalError::Unavailable {
        reason: "the journal's writer thread has stopped".into(),
    }
}
