//! Group commit: one thread writes every append, through the journal's write-ahead log.
//!
//! A durable append costs a device round trip, and concurrent reconciles append at once.
//! So appends are queued to one writer thread, which takes everything queued, checks each
//! entry against its chain's head (kept in memory), puts the new records in the
//! write-ahead log with one `pwrite` and one `fdatasync` ([`super::wal`]), and answers each
//! caller. Nothing else is on that path: the records go into sled on another thread
//! ([`super::apply`]) while this one syncs the next batch, and reads first wait until sled
//! holds every acknowledged record ([`Writer::settle`]). Under load a batch grows to what
//! arrived during the previous sync, so an append waits for at most the sync in flight and
//! its own.
//!
//! When a half of the log is full, or appends pause, the writer moves to the other half
//! and leaves the full one to the checkpoint thread ([`super::checkpoint`]); before
//! exclusive work (retention, imports) and on close it waits until sled is durable and
//! the log empty. After a storage failure it refuses every append until the journal is
//! reopened (which replays the log).

use super::JournalError;
use super::append::{Placement, conflict, place, summary_after};
use super::apply::{Applier, Progress, Written};
use super::checkpoint::{Checkpointer, Retired};
use super::codec;
use super::durable::DiskSync;
use super::read::{decode_record, decode_summary};
use super::record::{NewRecord, Record, TenantSummary};
use super::tails::Tails;
use super::wal::Wal;
use neurallog_migrations::layout::{RECORDS_TREE, display_record_key, record_key};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// How long appends may sit in the log before a pause in appends checkpoints them: sled's
/// files stay at most about this far behind, and a full disk shows within it. Under
/// steady load the log checkpoints when a half is full instead.
const IDLE_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(1);

/// The most appends one batch takes.
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
        reply: Reply,
    },
    /// Work that must not interleave with appends, run between batches on a checkpointed
    /// journal, or told why the journal cannot run it.
    Exclusive(Job),
}

type Job = Box<dyn FnOnce(Result<&Store, JournalError>) + Send>;

/// Where an append's outcome goes: a thread blocked on it, or a task awaiting it (no
/// thread is held while the append waits for its sync).
enum Reply {
    Blocked(mpsc::SyncSender<Result<Record, JournalError>>),
    Awaited(tokio::sync::oneshot::Sender<Result<Record, JournalError>>),
}

impl Reply {
    fn send(self, outcome: Result<Record, JournalError>) {
        // A caller that gave up waiting needs no answer.
        let _ = match self {
            Reply::Blocked(reply) => reply.send(outcome).ok(),
            Reply::Awaited(reply) => reply.send(outcome).ok(),
        };
    }
}

pub(super) struct Writer {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
    #[cfg(test)]
    checkpoints: Option<super::checkpoint::Hold>,
}

impl Writer {
    /// Starts the writer on `store`; `wal` is the emptied write-ahead log (`None` for a
    /// private read-only copy, whose writes need not survive anything).
    pub(super) fn start(
        store: Store,
        wal: Option<Wal>,
        tails: Arc<Tails>,
    ) -> std::io::Result<Writer> {
        let progress = Arc::new(Progress::default());
        let applier = Applier::start(store.clone(), progress.clone())?;
        let log = match wal {
            Some(wal) => Some(Log {
                checkpointer: Checkpointer::start(store.clone(), progress.clone(), wal.eraser())?,
                wal,
            }),
            None => None,
        };
        #[cfg(test)]
        let checkpoints = log.as_ref().map(|log| log.checkpointer.hold());
        let (requests, queue) = mpsc::channel();
        let mut thread_state = WriterThread {
            store,
            log,
            heads: HashMap::new(),
            tails,
            applier,
            progress: progress.clone(),
            failure: None,
            logged_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || thread_state.write_until_closed(&queue))?;
        Ok(Writer {
            requests: Some(requests),
            thread: Some(thread),
            progress,
            #[cfg(test)]
            checkpoints,
        })
    }

    /// Queues `entry` and waits until it is durable (or refused).
    pub(super) fn append(&self, entry: NewRecord) -> Result<Record, JournalError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Append {
            entry,
            reply: Reply::Blocked(reply),
        })?;
        answer.recv().map_err(|_| stopped())?
    }

    /// [`Writer::append`] for a task: waits without holding a thread. The append happens
    /// (and its tail is noted) even if the caller stops waiting.
    pub(super) async fn append_async(&self, entry: NewRecord) -> Result<Record, JournalError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Request::Append {
            entry,
            reply: Reply::Awaited(reply),
        })?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `job` on the writer thread between two batches, once sled holds every
    /// acknowledged record durably and the log is empty, and returns what it returns.
    pub(super) fn exclusive<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Store) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Request::Exclusive(Box::new(move |store| {
            // The caller may have stopped waiting.
            let _ = reply.send(store.and_then(job));
        })))?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Waits until sled holds every acknowledged record: reads call this first.
    pub(super) fn settle(&self) -> Result<(), JournalError> {
        self.progress.settle()
    }

    fn send(&self, request: Request) -> Result<(), JournalError> {
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(request)
            .map_err(|_| stopped())
    }
}

#[cfg(test)]
impl Writer {
    /// Stalls the checkpoints of retired halves of the log while `held`.
    pub(super) fn hold_checkpoints(&self, held: bool) {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.set(held);
        }
    }

    /// Queues `entries` in order without waiting; each answer arrives on its receiver.
    pub(super) fn queue_appends(
        &self,
        entries: Vec<NewRecord>,
    ) -> Result<Vec<mpsc::Receiver<Result<Record, JournalError>>>, JournalError> {
        entries
            .into_iter()
            .map(|entry| {
                let (reply, answer) = mpsc::sync_channel(1);
                let reply = Reply::Blocked(reply);
                self.send(Request::Append { entry, reply }).map(|()| answer)
            })
            .collect()
    }
}

impl Drop for Writer {
    /// Lets the thread answer what is queued and checkpoint, then waits for it: the
    /// database it holds is closed (and its file lock released) only when it has exited.
    fn drop(&mut self) {
        self.requests.take();
        super::join_thread(self.thread.take(), "the journal writer thread panicked");
    }
}

/// The write-ahead log and the thread that checkpoints its retired halves.
struct Log {
    wal: Wal,
    checkpointer: Checkpointer,
}

/// What the writer thread owns.
struct WriterThread {
    store: Store,
    /// `None` for a private copy, whose writes need not survive anything.
    log: Option<Log>,
    /// Each chain's summary as of the last batch, for the chains written since the last
    /// exclusive job; sled holds the others' current summaries.
    heads: HashMap<String, TenantSummary>,
    /// The journal's in-memory chain tails, moved on before each caller is answered.
    tails: Arc<Tails>,
    applier: Applier,
    progress: Arc<Progress>,
    /// The storage failure after which nothing is written.
    failure: Option<sled::Error>,
    /// When the log's active half got its first frame.
    logged_since: Option<std::time::Instant>,
}

impl WriterThread {
    fn write_until_closed(&mut self, queue: &mpsc::Receiver<Request>) {
        while let Some(first) = self.next_request(queue) {
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
                        self.commit(&mut entries, &mut replies);
                        self.run_exclusive(job);
                    }
                }
                if entries.len() < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            self.commit(&mut entries, &mut replies);
        }
        // Closing: sled durable and the log empty, so the next open replays nothing.
        if self.failure.is_none()
            && let Err(error) = self.checkpoint()
        {
            tracing::error!(%error, "the journal's checkpoint on close failed; the next open replays its write-ahead log");
        }
    }

    /// Waits for the next request; `None` once the journal is closed. A log that has held
    /// frames for [`IDLE_CHECKPOINT`] without a pause checkpoints when appends pause.
    fn next_request(&mut self, queue: &mpsc::Receiver<Request>) -> Option<Request> {
        loop {
            // After a failure nothing is checkpointed: the reopen replays the log.
            let Some(since) = self.logged_since.filter(|_| self.failure.is_none()) else {
                return queue.recv().ok();
            };
            let wait = IDLE_CHECKPOINT.saturating_sub(since.elapsed());
            match queue.recv_timeout(wait) {
                Ok(request) => return Some(request),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.rotate() {
                        self.fail(error);
                    }
                }
            }
        }
    }

    fn run_exclusive(&mut self, job: Job) {
        if let Err(error) = self.healthy().and_then(|()| self.checkpoint()) {
            self.fail(error.clone());
            job(Err(JournalError::Storage(error)));
            return;
        }
        job(Ok(&self.store));
        // The job may have moved chain heads (an import).
        self.heads.clear();
    }

    /// Writes the batch collected so far (if any) and answers each caller.
    fn commit(&mut self, entries: &mut Vec<NewRecord>, replies: &mut Vec<Reply>) {
        if entries.is_empty() {
            return;
        }
        let outcomes = self.write(entries);
        self.tails
            .offer_all(outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()));
        for (reply, outcome) in replies.drain(..).zip(outcomes) {
            reply.send(outcome);
        }
        entries.clear();
    }

    /// Places each entry on its chain (an entry sees the chains as the entries before it
    /// left them), makes the new records durable once and hands them to the applier.
    /// A refused entry fails alone; a storage failure fails them all.
    fn write(&mut self, entries: &[NewRecord]) -> Vec<Result<Record, JournalError>> {
        if let Err(error) = self.healthy() {
            return failed_all(entries, &error);
        }
        let mut batch = Vec::new();
        let outcomes: Vec<_> = entries
            .iter()
            .map(|entry| self.place(entry, &mut batch))
            .collect();
        match self.make_durable(batch) {
            Ok(()) => outcomes,
            Err(error) => {
                self.fail(error.clone());
                failed_all(entries, &error)
            }
        }
    }

    fn place(
        &mut self,
        entry: &NewRecord,
        batch: &mut Vec<Written>,
    ) -> Result<Record, JournalError> {
        let head = self.head(&entry.uid)?;
        match place(entry, head.as_ref())? {
            Placement::Next { prev_hash } => {
                let (value, record) = codec::encode_new(entry, prev_hash);
                let summary = summary_after(head.as_ref(), &record);
                self.heads.insert(entry.uid.clone(), summary.clone());
                batch.push(Written {
                    key: record_key(&entry.uid, entry.seq),
                    value,
                    uid: entry.uid.clone(),
                    summary,
                });
                Ok(record)
            }
            Placement::Stored => self.stored(entry, batch),
        }
    }

    /// The chain's summary: from memory, or from sled for a chain not written since the
    /// last exclusive job (sled holds its current summary then).
    fn head(&mut self, uid: &str) -> Result<Option<TenantSummary>, JournalError> {
        if let Some(head) = self.heads.get(uid) {
            return Ok(Some(head.clone()));
        }
        let Some(bytes) = self.store.tenants.get(uid.as_bytes())? else {
            return Ok(None);
        };
        let head = decode_summary(uid.as_bytes(), &bytes)?;
        self.heads.insert(uid.to_owned(), head.clone());
        Ok(Some(head))
    }

    /// A retry of a stored seq: the stored record if it is what `entry` would have
    /// stored, else a conflict. Every stored record is durable: it was acknowledged, or
    /// is in this batch, which is acknowledged only once durable.
    fn stored(&self, entry: &NewRecord, batch: &[Written]) -> Result<Record, JournalError> {
        let key = record_key(&entry.uid, entry.seq);
        let stored = match batch.iter().find(|w| w.key == key) {
            Some(written) => decode_record(&key, &written.value)?,
            None => {
                self.progress.settle()?;
                let Some(value) = self.store.records.get(&key)? else {
                    return Err(JournalError::Corrupt {
                        tree: RECORDS_TREE,
                        key: display_record_key(&key),
                        detail: "the chain's summary counts this record but it is missing".into(),
                    });
                };
                decode_record(&key, &value)?
            }
        };
        if stored.matches(entry) {
            Ok(stored)
        } else {
            Err(conflict(
                entry,
                "a different record is already stored at this seq",
            ))
        }
    }

    /// Makes the batch's new records durable: one frame in the log, in the other half when
    /// the active one is full. A batch too large for a half goes into sled at once and is
    /// made durable there.
    fn make_durable(&mut self, batch: Vec<Written>) -> Result<(), sled::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(log) = self.log.as_ref() else {
            return self.apply(batch);
        };
        if !log.wal.fits(&batch) && log.wal.fits_after_rotating(&batch) {
            self.rotate()?;
        }
        match self.log.as_mut() {
            Some(log) if log.wal.fits(&batch) => {
                log.wal.append(&batch).map_err(sled::Error::Io)?;
                self.logged_since
                    .get_or_insert_with(std::time::Instant::now);
                self.apply(batch)
            }
            _ => {
                self.apply(batch)?;
                self.progress.settle().map_err(storage_error)?;
                self.store.flush()
            }
        }
    }

    fn apply(&self, written: Vec<Written>) -> Result<(), sled::Error> {
        self.applier.send(written).map_err(storage_error)
    }

    /// Moves appends to the other half of the log (once its own checkpoint is done) and
    /// hands the active half, if it holds frames, to the checkpoint thread.
    fn rotate(&mut self) -> Result<(), sled::Error> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        if log.wal.is_empty() {
            return Ok(());
        }
        log.checkpointer.wait_free(log.wal.other_half())?;
        let half = log.wal.rotate();
        self.logged_since = None;
        log.checkpointer.retire(Retired {
            half,
            through: self.progress.sent_count(),
        })
    }

    /// Makes sled hold everything the log holds, durably, and empties the log.
    fn checkpoint(&mut self) -> Result<(), sled::Error> {
        self.rotate()?;
        if let Some(log) = &self.log {
            log.checkpointer.wait_idle()?;
        }
        self.progress.settle().map_err(storage_error)
    }

    fn healthy(&self) -> Result<(), sled::Error> {
        let checkpoint_failure = || self.log.as_ref()?.checkpointer.failure();
        match self
            .failure
            .clone()
            .or_else(|| self.progress.failure())
            .or_else(checkpoint_failure)
        {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: sled::Error) {
        tracing::error!(%error, "the journal failed to write; it refuses appends until reopened");
        self.failure.get_or_insert(error);
    }
}

fn failed_all(entries: &[NewRecord], error: &sled::Error) -> Vec<Result<Record, JournalError>> {
    entries
        .iter()
        .map(|_| Err(JournalError::Storage(error.clone())))
        .collect()
}

pub(super) fn storage_error(error: JournalError) -> sled::Error {
    match error {
        JournalError::Storage(error) => error,
        other => sled::Error::ReportableBug(other.to_string()),
    }
}

fn stopped() -> JournalError {
    JournalError::Unavailable {
        reason: "the journal's writer thread has stopped".into(),
    }
}
