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
        self.db.flush()?;
        if let Some(disk) = &self.disk {
            disk.sync().map_err(sled::Error::Io)?;
        }
        Ok(())
    }
}

struct Request {
    entry: NewRecord,
    reply: mpsc::SyncSender<Result<Record, JournalError>>,
}

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
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { entry, reply })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
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
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.entry, r.reply)).unzip();
        let outcomes = commit_batch(store, &entries);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up waiting needs no answer.
            let _ = reply.send(outcome);
        }
    }
}

fn stopped() -> JournalError {
    JournalError::Unavailable {
        reason: "the journal's writer thread has stopped".into(),
    }
}
