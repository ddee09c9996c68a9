//! Everything that can go wrong with the journal.

use neurallog_migrations::MigrationError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "journal at {} is in use by another process (sled allows one process at a time); stop it or read through the operator's --server API",
        path.display()
    )]
    Locked { path: PathBuf },

    #[error(
        "journal schema version {found} is newer than this operator supports ({supported}); upgrade the operator"
    )]
    SchemaTooNew { found: u32, supported: u32 },

    #[error("cannot open journal at {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },

    #[error("cannot migrate journal at {}: {source}", path.display())]
    Migration {
        path: PathBuf,
        #[source]
        source: MigrationError,
    },

    /// The record collides with the chain: a different record is stored at its seq, or its
    /// seq skips ahead of the chain.
    #[error("journal conflict for tenant {tenant} (uid {uid}) at seq {seq}: {reason}")]
    Conflict {
        tenant: String,
        uid: String,
        seq: u64,
        reason: String,
    },

    /// The record can never be appended as it is.
    #[error("invalid journal record for tenant {tenant} (uid {uid}) at seq {seq}: {reason}")]
    Invalid {
        tenant: String,
        uid: String,
        seq: u64,
        reason: String,
    },

    /// Bytes on disk that do not decode.
    #[error("corrupt journal value in tree {tree} at key {key}: {detail}")]
    Corrupt {
        tree: &'static str,
        key: String,
        detail: String,
    },

    #[error("journal storage error: {0}")]
    Storage(#[from] sled::Error),

    /// An earlier storage failure closed the journal and it could not be reopened yet.
    #[error("the journal is unavailable: {reason}")]
    Unavailable { reason: String },
}

impl JournalError {
    /// The disk or the storage engine failed (full, unwritable, I/O error): the journal
    /// must be reopened before it is trusted again.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, JournalError::Storage(_))
    }

    pub(crate) fn opening(path: &Path, source: sled::Error) -> Self {
        if is_lock_held(&source) {
            JournalError::Locked {
                path: path.to_owned(),
            }
        } else {
            JournalError::Open {
                path: path.to_owned(),
                source,
            }
        }
    }

    pub(crate) fn migrating(path: &Path, source: MigrationError) -> Self {
        match source {
            MigrationError::NewerThanSupported { found, supported } => {
                JournalError::SchemaTooNew { found, supported }
            }
            source => JournalError::Migration {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// sled reports a held file lock only as an `Other` I/O error with this message.
fn is_lock_held(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::Other
                && io.to_string().starts_with("could not acquire lock")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_lock_failure_maps_to_one_clear_line() {
        let sled_error = sled::Error::Io(std::io::Error::other(
            "could not acquire lock on \"/j/db\": Os { code: 11, kind: WouldBlock }",
        ));
        let err = JournalError::opening(Path::new("/j"), sled_error);
        assert!(matches!(err, JournalError::Locked { .. }));
        let line = err.to_string();
        assert_eq!(
            line,
            "journal at /j is in use by another process (sled allows one process at a time); \
             stop it or read through the operator's --server API"
        );
    }

    #[test]
    fn other_open_failures_keep_their_cause() {
        let sled_error =
            sled::Error::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        let err = JournalError::opening(Path::new("/j"), sled_error);
        assert!(matches!(err, JournalError::Open { .. }));
    }

    #[test]
    fn newer_schema_maps_to_the_upgrade_message() {
        let err = JournalError::migrating(
            Path::new("/j"),
            MigrationError::NewerThanSupported {
                found: 99,
                supported: 2,
            },
        );
        assert_eq!(
            err.to_string(),
            "journal schema version 99 is newer than this operator supports (2); upgrade the operator"
        );
    }
}
