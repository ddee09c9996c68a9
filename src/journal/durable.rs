//! Making what sled wrote survive a power cut, not only a process crash.
//!
//! sled 0.34's `flush()` writes its log with `pwrite` and then calls `sync_file_range`
//! on Linux, which starts and waits for the writeback of those pages but flushes neither
//! the drive's write cache nor the file's metadata (its size), and sled never syncs the
//! directories whose entries it creates (the blob files of large values, snapshots). After
//! a power cut such a write can be gone although the append returned. So every flush is
//! followed by [`DiskSync::sync`]: `fdatasync` of the log file, `fsync` of any blob file
//! created since the last sync, and `fsync` of each directory whose entries changed.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled's log file and the directories whose entries it creates, under a journal's root.
const LOG_FILE: &str = "db";
const BLOB_DIR: &str = "blobs";

pub(super) struct DiskSync {
    root: PathBuf,
    log: File,
    /// The entries of the root and blob directories as of their last fsync.
    synced: Mutex<Entries>,
}

#[derive(Default, PartialEq, Eq)]
struct Entries {
    root: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl DiskSync {
    /// Syncs everything sled has created under `root` (a database it just opened), and
    /// `root`'s own entry in its parent.
    pub(super) fn open(root: &Path) -> io::Result<DiskSync> {
        let log = File::open(root.join(LOG_FILE))?;
        let entries = Entries::read(root)?;
        for name in &entries.root {
            sync_file(&root.join(name))?;
        }
        for name in &entries.blobs {
            sync_file(&root.join(BLOB_DIR).join(name))?;
        }
        sync_dir(&root.join(BLOB_DIR))?;
        sync_dir(root)?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(DiskSync {
            root: root.to_owned(),
            log,
            synced: Mutex::new(entries),
        })
    }

    /// Makes everything sled has flushed durable: call after `sled::Db::flush`.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.log.sync_data()?;
        // A panic while holding this lock cannot leave the sets half-updated: they are
        // replaced whole.
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let now = Entries::read(&self.root)?;
        if now == *synced {
            return Ok(());
        }
        let blob_dir = self.root.join(BLOB_DIR);
        for created in now.blobs.difference(&synced.blobs) {
            sync_file(&blob_dir.join(created))?;
        }
        if now.blobs != synced.blobs {
            sync_dir(&blob_dir)?;
        }
        if now.root != synced.root {
            sync_dir(&self.root)?;
        }
        *synced = now;
        Ok(())
    }
}

/// sled's flush, then the syncs that make it survive a power cut (`disk` is `None` for a
/// private read-only copy). The one way the journal makes writes durable.
pub(super) fn flush_durably(db: &sled::Db, disk: Option<&DiskSync>) -> Result<(), sled::Error> {
    db.flush()?;
    if let Some(disk) = disk {
        disk.sync().map_err(sled::Error::Io)?;
    }
    Ok(())
}

impl Entries {
    fn read(root: &Path) -> io::Result<Entries> {
        Ok(Entries {
            root: names(root)?,
            blobs: names(&root.join(BLOB_DIR))?,
        })
    }
}

fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// `fsync` of a file or, for a directory, of its entries. A file that sled removed since
/// it was listed needs no sync.
fn sync_file(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(file) => file.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    sync_file(path)
}
