//! Opening a journal for inspection without changing it.
//!
//! sled has no read-only mode: opening a database writes to it (it extends `db` and writes
//! a snapshot), and opening a missing one creates it. So the tools never open the journal
//! itself: they take a shared lock on it (which fails while an operator holds it), copy
//! the directory to a private scratch directory, release the lock, and open the copy. The
//! copy is refused unless it is a journal at the current schema (opening would otherwise
//! migrate it) and is deleted when the [`JournalCopy`] is dropped.

use super::{Journal, JournalError, SCHEMA_VERSION};
use neurallog_migrations::layout::{META_TREE, RECORDS_TREE, SCHEMA_VERSION_KEY, TENANTS_TREE};
use std::fs::{File, TryLockError};
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// Why a journal could not be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyError {
    #[error("no journal at {}: the directory does not exist or holds no sled database", path.display())]
    Missing { path: PathBuf },
    #[error("{}: the operator holds this journal; use --server URL (or --kube-service NAMESPACE/NAME) to read it through the operator", path.display())]
    Locked { path: PathBuf },
    #[error("cannot copy the journal at {} for reading: {source}", path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not an operator journal: {detail}", path.display())]
    NotAJournal { path: PathBuf, detail: String },
    #[error(
        "journal at {} is schema version {found}; this build reads version {supported} and will not migrate it when opened for reading (upgrade the tool, or let the operator migrate it first)",
        path.display()
    )]
    WrongSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A private copy of a journal, open; the copy is deleted on drop.
pub struct JournalCopy {
    /// Declared before `_scratch`: fields drop in order, so the database is closed before
    /// its files are deleted.
    journal: Journal,
    original: PathBuf,
    _scratch: Scratch,
}

impl JournalCopy {
    /// The journal this is a copy of.
    pub fn original(&self) -> &Path {
        &self.original
    }
}

impl Deref for JournalCopy {
    type Target = Journal;

    fn deref(&self) -> &Journal {
        &self.journal
    }
}

/// A scratch directory, deleted on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Scratch(
            std::env::temp_dir().join(format!("neurallog-journal-{}-{nanos}", std::process::id())),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Journal {
    /// Opens a private copy of the journal at `path` (at the current schema version),
    /// leaving `path` untouched.
    pub fn open_read_only(path: &Path) -> Result<JournalCopy, ReadOnlyError> {
        let scratch = Scratch::new();
        copy_unlocked(path, &scratch.0)?;
        let db = sled::Config::new()
            .path(&scratch.0)
            .open()
            .map_err(|e| JournalError::opening(path, e))?;
        check_schema(path, &db)?;
        Ok(JournalCopy {
            journal: Journal::with_parts(&scratch.0, db, None, super::Options::default())?,
            original: path.to_owned(),
            _scratch: scratch,
        })
    }
}

/// Copies the journal directory while holding a shared lock on its database file, which
/// sled locks exclusively while open: a running operator makes this fail, and an operator
/// starting meanwhile waits for nothing but fails to open until the copy is done.
fn copy_unlocked(path: &Path, to: &Path) -> Result<(), ReadOnlyError> {
    let copy_error = |source| ReadOnlyError::Copy {
        path: path.to_owned(),
        source,
    };
    let db_file = path.join("db");
    if !db_file.is_file() {
        return Err(ReadOnlyError::Missing {
            path: path.to_owned(),
        });
    }
    let lock = File::open(&db_file).map_err(copy_error)?;
    // A lock being released (a handle of this process just dropped) is waited for.
    let deadline = std::time::Instant::now() + super::LOCK_RELEASE_WAIT;
    loop {
        match lock.try_lock_shared() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(ReadOnlyError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(copy_error(source)),
        }
    }
    copy_dir(path, to).map_err(copy_error)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Refuses anything but a journal at [`SCHEMA_VERSION`] with every tree present, opening
/// only trees that exist (opening a missing tree creates it). `path` names the original.
fn check_schema(path: &Path, db: &sled::Db) -> Result<(), ReadOnlyError> {
    let not_a_journal = |detail: &str| ReadOnlyError::NotAJournal {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let names = db.tree_names();
    let has = |tree: &str| names.iter().any(|name| name.as_ref() == tree.as_bytes());
    if !has(META_TREE) {
        return Err(not_a_journal("it has no schema version"));
    }
    let meta = db.open_tree(META_TREE).map_err(JournalError::from)?;
    let version = meta
        .get(SCHEMA_VERSION_KEY)
        .map_err(JournalError::from)?
        .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_ref()).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| not_a_journal("its schema version is missing or corrupt"))?;
    if version != SCHEMA_VERSION {
        return Err(ReadOnlyError::WrongSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if !has(RECORDS_TREE) || !has(TENANTS_TREE) {
        return Err(not_a_journal("its records or tenants tree is missing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{open_temp, sample_entry};

    fn open_error(path: &Path) -> ReadOnlyError {
        match Journal::open_read_only(path) {
            Ok(_) => panic!("{} opened", path.display()),
            Err(error) => error,
        }
    }

    #[test]
    fn opens_a_closed_journal_and_reads_it() {
        let (dir, journal) = open_temp();
        journal.append(sample_entry("acme", "uid-1", 1)).unwrap();
        drop(journal);
        let journal = Journal::open_read_only(&dir.path().join("journal")).unwrap();
        assert_eq!(journal.tenants().unwrap().len(), 1);
    }

    /// Every file under `dir` with its bytes, sorted by path.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(snapshot(&path));
            } else {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        files.sort();
        files
    }

    #[test]
    fn reading_leaves_every_file_as_it_was() {
        let (dir, journal) = open_temp();
        for seq in 1..=3 {
            journal.append(sample_entry("acme", "uid-1", seq)).unwrap();
        }
        drop(journal);
        let path = dir.path().join("journal");
        let before = snapshot(&path);
        let journal = Journal::open_read_only(&path).unwrap();
        assert_eq!(journal.history("uid-1").count(), 3);
        assert!(journal.verify().unwrap().is_ok());
        let copy = journal.path().to_owned();
        assert!(copy.exists());
        drop(journal);
        assert!(snapshot(&path) == before, "the journal's files changed");
        assert!(!copy.exists(), "the copy is deleted");
    }

    #[test]
    fn refuses_a_missing_journal_without_creating_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing");
        let error = open_error(&path);
        assert!(matches!(error, ReadOnlyError::Missing { .. }), "{error}");
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_journal_the_operator_holds() {
        let (dir, _held) = open_temp();
        let error = open_error(&dir.path().join("journal"));
        assert!(matches!(error, ReadOnlyError::Locked { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("the operator holds this journal; use --server URL")
        );
    }

    #[test]
    fn refuses_an_old_schema_instead_of_migrating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        {
            let db = sled::open(&path).unwrap();
            neurallog_migrations::stamp_version(&db, 1).unwrap();
            db.open_tree(RECORDS_TREE).unwrap();
            db.flush().unwrap();
        }
        let error = open_error(&path);
        assert!(
            matches!(error, ReadOnlyError::WrongSchema { found: 1, .. }),
            "{error}"
        );
        let db = sled::open(&path).unwrap();
        assert_eq!(neurallog_migrations::schema_version(&db).unwrap(), Some(1));
    }
}
