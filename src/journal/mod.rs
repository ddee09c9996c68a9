//! The durable, hash-chained journal of tenant phase transitions.
//!
//! Every transition is appended here (and flushed) before it is mirrored to Kubernetes.
//! Each Tenant uid has its own chain of [`Record`]s: `seq` runs gapless from 1, and each
//! record's `prevHash` is the previous record's `hash`, so [`Journal::verify`] detects any
//! changed, missing, reordered or truncated record. Nothing is ever deleted: a Tenant
//! re-created under the same name has a new uid and starts a new chain.
//!
//! Storage is a sled database whose schema is owned and migrated by
//! [`neurallog_migrations`]; the record encoding is in [`codec`]. The API is synchronous
//! (async callers use `spawn_blocking`) and `Journal` is `Send + Sync`: share it in an
//! `Arc`.

pub mod api;
mod append;
mod apply;
mod checkpoint;
pub mod client;
pub mod codec;
mod digest;
mod durable;
mod error;
pub mod follow;
mod import;
mod read;
mod read_only;
mod record;
pub mod recovery;
pub mod replay;
mod retention;
pub mod slot;
mod tails;
pub mod upkeep;
mod verify;
pub mod view;
mod wal;
mod writer;

#[cfg(test)]
mod schema_v1_fixture;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use digest::{Digest, spec_digest};
pub use error::JournalError;
pub use import::Imported;
pub use read::RecordIter;
pub use read_only::{JournalCopy, ReadOnlyError};
pub use record::{NewRecord, Record, TenantSummary, record_time};
pub use recovery::mark::RecoveryMark;
pub use retention::{Checkpoint, Compaction, Retention};
pub use tails::Acknowledged;
pub use verify::{Problem, ProblemKind, VerifyProgress, VerifyReport, VerifyScope};

use neurallog_migrations::layout::{RECORDS_TREE, TENANTS_TREE};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The journal's schema version (see [`neurallog_migrations`]).
pub const SCHEMA_VERSION: u32 = neurallog_migrations::CURRENT_VERSION;

/// How long an open waits for a file lock that is being released.
pub(crate) const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// An open journal. Only one process may hold it open at a time.
pub struct Journal {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    tenants: sled::Tree,
    /// `None` for a private read-only copy, which nothing needs to survive.
    disk: Option<Arc<durable::DiskSync>>,
    tails: Arc<tails::Tails>,
    options: Options,
    writer: writer::Writer,
}

/// How to open a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// sled's page cache, in bytes (sled's own default is 1 GiB).
    pub cache_bytes: u64,
    /// The write-ahead log's size, in bytes, in two halves: a checkpoint starts each time
    /// appends fill a half (each batch takes at least a 4 KiB page).
    pub log_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 64 << 20,
            log_bytes: 1 << 20,
        }
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and migrates it to
    /// [`SCHEMA_VERSION`]. Refuses a journal written by a newer operator, and one another
    /// process holds open ([`JournalError::Locked`]).
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Self::open_with(path, Options::default())
    }

    /// [`Journal::open`] with `options`.
    pub fn open_with(path: &Path, options: Options) -> Result<Journal, JournalError> {
        // sled lets go of its file lock when the last background thread of a dropped
        // handle does, a moment after the drop: a reopen in the same process (after a
        // storage failure, say) waits for that instead of failing.
        let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
        loop {
            match Self::open_once(path, options) {
                Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(LOCK_RETRY);
                }
                result => return result,
            }
        }
    }

    fn open_once(path: &Path, options: Options) -> Result<Journal, JournalError> {
        // Durability comes from the write-ahead log; sled's own timed flush would only
        // compete with the log's syncs for the device. sled is flushed at checkpoints.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| JournalError::opening(path, e))?;
        neurallog_migrations::migrate(&db).map_err(|e| JournalError::migrating(path, e))?;
        db.flush()?;
        let disk = durable::DiskSync::open(path).map_err(storage)?;
        Self::with_parts(path, db, Some(Arc::new(disk)), options)
    }

    /// How this journal was opened (to open it again the same way).
    pub fn options(&self) -> Options {
        self.options
    }

    /// The journal on `db`, whose schema is current, with its writer thread: what its
    /// write-ahead log holds is replayed first and, for a journal that must survive a
    /// power cut (`disk`), made durable in sled before the log is emptied for new appends.
    fn with_parts(
        path: &Path,
        db: sled::Db,
        disk: Option<Arc<durable::DiskSync>>,
        options: Options,
    ) -> Result<Journal, JournalError> {
        let store = writer::Store {
            records: db.open_tree(RECORDS_TREE)?,
            tenants: db.open_tree(TENANTS_TREE)?,
            db,
            disk,
        };
        let logged =
            wal::read(path).map_err(|e| JournalError::opening(path, sled::Error::Io(e)))?;
        let replayed = wal::replay(&store, &logged.frames)?;
        if replayed > 0 {
            tracing::info!(path = %path.display(), records = replayed, "replayed acknowledged journal records from the write-ahead log");
        }
        let wal = match &store.disk {
            Some(_) => {
                // What was replayed must be durable in sled before the log may change.
                store.flush()?;
                let mut log =
                    wal::Wal::open(path, logged.generation, options.log_bytes).map_err(storage)?;
                log.clear().map_err(storage)?;
                Some(log)
            }
            None => None,
        };
        let tails = Arc::new(tails::Tails::default());
        let writer = writer::Writer::start(store.clone(), wal, tails.clone()).map_err(storage)?;
        Ok(Journal {
            path: path.to_owned(),
            db: store.db,
            records: store.records,
            tenants: store.tenants,
            disk: store.disk,
            tails,
            options,
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record of each chain this handle appended or read.
    pub fn acknowledged(&self) -> Vec<Acknowledged> {
        self.tails.seen()
    }

    /// The last record of chain `uid` if this handle knows it without reading the disk
    /// (`Some(None)`: the chain has no record).
    pub fn cached_last(&self, uid: &str) -> Option<Option<Record>> {
        self.tails.get(uid)
    }

    /// The first of `acknowledged` (seen by an earlier handle on this journal) that this
    /// journal no longer holds as it was, described; `None` if it holds them all.
    pub fn lost_acknowledged(
        &self,
        acknowledged: &[Acknowledged],
    ) -> Result<Option<String>, JournalError> {
        for (uid, seq, hash) in acknowledged {
            match self.record(uid, *seq)? {
                Some(record) if record.hash == *hash => {}
                Some(record) => {
                    return Ok(Some(format!(
                        "record {seq} of chain {uid} was acknowledged with hash {} but reads back as {}",
                        hash.to_hex(),
                        record.hash.to_hex()
                    )));
                }
                None => {
                    return Ok(Some(format!(
                        "record {seq} of chain {uid} was acknowledged but is gone"
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Makes everything written so far durable in sled, against a power cut too (see
    /// [`durable`]). [`Journal::append`] needs no flush: its record is durable in the
    /// write-ahead log when it returns.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.settled()?;
        Ok(durable::flush_durably(&self.db, self.disk.as_deref())?)
    }

    /// Waits until sled holds every acknowledged append: every read starts here, so a read
    /// sees what was acknowledged before it.
    fn settled(&self) -> Result<(), JournalError> {
        self.writer.settle()
    }
}

fn storage(error: std::io::Error) -> JournalError {
    JournalError::Storage(sled::Error::Io(error))
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Appends are flushed already; this covers bulk appends whose caller forgot.
        if let Err(error) = self.flush() {
            tracing::error!(path = %self.path.display(), %error, "flushing the journal on close failed");
        }
    }
}

/// Waits for one of the journal's threads to exit (its queue was closed first, so it
/// finishes what was handed to it); a panic there is logged as `panicked`.
fn join_thread(thread: Option<std::thread::JoinHandle<()>>, panicked: &str) {
    if let Some(thread) = thread
        && thread.join().is_err()
    {
        tracing::error!("{panicked}");
    }
}
