//! Opening a journal for inspection without changing it.
//!
//! sled has no read-only mode, so "read-only" means: never open a directory that is not
//! already a journal (sled would create one), and never migrate (that writes). A journal at
//! another schema version is refused with a message saying what to do instead.

use super::{Journal, JournalError, SCHEMA_VERSION};
use neurallog_migrations::layout::{META_TREE, RECORDS_TREE, SCHEMA_VERSION_KEY, TENANTS_TREE};
use std::path::{Path, PathBuf};

/// Why a journal could not be opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnlyError {
    #[error("no journal at {}: the directory does not exist or holds no sled database", path.display())]
    Missing { path: PathBuf },
    #[error("{}: the operator holds this journal; use --server URL (or --kube-service NAMESPACE/NAME) to read it through the operator", path.display())]
    Locked { path: PathBuf },
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

impl Journal {
    /// Opens an existing journal at the current schema version without writing to it.
    pub fn open_read_only(path: &Path) -> Result<Journal, ReadOnlyError> {
        // sled keeps its data in `db`; without it, opening would create a new database.
        if !path.join("db").is_file() {
            return Err(ReadOnlyError::Missing {
                path: path.to_owned(),
            });
        }
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| match JournalError::opening(path, e) {
                JournalError::Locked { path } => ReadOnlyError::Locked { path },
                other => ReadOnlyError::Journal(other),
            })?;
        check_schema(path, &db)?;
        let records = db.open_tree(RECORDS_TREE).map_err(JournalError::from)?;
        let tenants = db.open_tree(TENANTS_TREE).map_err(JournalError::from)?;
        Ok(Journal {
            path: path.to_owned(),
            db,
            records,
            tenants,
        })
    }
}

/// Refuses anything but a journal at [`SCHEMA_VERSION`] with every tree present, opening
/// only trees that exist (opening a missing tree creates it).
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
