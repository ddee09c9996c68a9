//! Forward-only migrations of the NeuralLog operator journal's on-disk schema.
//!
//! The journal is a sled database; its schema version is a `u32` big endian under
//! `schema_version` in the `meta` tree (see [`layout`]).
//!
//! | version | adds |
//! |---------|------|
//! | 1 | `records`: one encoded record per transition, keyed `uid 0x00 seq` |
//! | 2 | `tenants`: one summary per chain, keyed `uid` ([`summary`]) |
//! | 3 | `checkpoints`: what retention compacted of a chain, keyed `uid` |
//!
//! [`migrate`] stamps a fresh database with [`CURRENT_VERSION`], runs every step above the
//! stored version in order, and refuses a database newer than this crate. Each step lives in
//! its own module, is idempotent, and the version is bumped only once the step's data is
//! flushed, so an interrupted migration is repeated from the interrupted step.
//!
//! This crate knows nothing of the operator's types: steps read records through their own
//! minimal decoders, frozen at the format they migrate from.

pub mod encoding;
pub mod layout;
pub mod summary;
mod v0002_tenant_summaries;
mod v0003_checkpoints;

use layout::{META_TREE, RECORDS_TREE, SCHEMA_VERSION_KEY};

/// The schema version this crate writes and the newest it accepts.
pub const CURRENT_VERSION: u32 = 3;

/// One forward step: brings a database at `version - 1` to `version`.
struct Step {
    version: u32,
    name: &'static str,
    apply: fn(&sled::Db) -> Result<(), MigrationError>,
}

const STEPS: &[Step] = &[
    Step {
        version: v0002_tenant_summaries::VERSION,
        name: "tenant summaries",
        apply: v0002_tenant_summaries::apply,
    },
    Step {
        version: v0003_checkpoints::VERSION,
        name: "checkpoints",
        apply: v0003_checkpoints::apply,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "journal schema version {found} is newer than this operator supports ({supported}); upgrade the operator"
    )]
    NewerThanSupported { found: u32, supported: u32 },
    #[error("journal holds records but no schema version; it was not written by this operator")]
    Unversioned,
    #[error("journal schema version is corrupt: {detail}")]
    CorruptVersion { detail: String },
    #[error("migration to schema {version} cannot read record {key}: {detail}")]
    CorruptRecord {
        version: u32,
        key: String,
        detail: String,
    },
    #[error("migration to schema {version} ({name}) failed: {source}")]
    Step {
        version: u32,
        name: &'static str,
        #[source]
        source: Box<MigrationError>,
    },
    #[error("journal storage error: {0}")]
    Storage(#[from] sled::Error),
}

/// Brings `db` to [`CURRENT_VERSION`] and returns it.
pub fn migrate(db: &sled::Db) -> Result<u32, MigrationError> {
    let Some(version) = schema_version(db)? else {
        return stamp_fresh(db);
    };
    if version > CURRENT_VERSION {
        return Err(MigrationError::NewerThanSupported {
            found: version,
            supported: CURRENT_VERSION,
        });
    }
    for step in STEPS.iter().filter(|step| step.version > version) {
        run_step(db, step)?;
    }
    Ok(CURRENT_VERSION)
}

/// The stored schema version, `None` for a database that has never been stamped.
pub fn schema_version(db: &sled::Db) -> Result<Option<u32>, MigrationError> {
    let meta = db.open_tree(META_TREE)?;
    let Some(bytes) = meta.get(SCHEMA_VERSION_KEY)? else {
        return Ok(None);
    };
    let bytes: [u8; 4] = bytes
        .as_ref()
        .try_into()
        .map_err(|_| MigrationError::CorruptVersion {
            detail: format!("expected 4 bytes, found {}", bytes.len()),
        })?;
    match u32::from_be_bytes(bytes) {
        0 => Err(MigrationError::CorruptVersion {
            detail: "version 0 does not exist".into(),
        }),
        version => Ok(Some(version)),
    }
}

/// Writes `version` as the schema version and flushes, without migrating anything.
/// For [`migrate`] itself and for tools and tests that build a journal of a given version.
pub fn stamp_version(db: &sled::Db, version: u32) -> Result<(), MigrationError> {
    db.open_tree(META_TREE)?
        .insert(SCHEMA_VERSION_KEY, &version.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

fn stamp_fresh(db: &sled::Db) -> Result<u32, MigrationError> {
    if !db.open_tree(RECORDS_TREE)?.is_empty() {
        return Err(MigrationError::Unversioned);
    }
    stamp_version(db, CURRENT_VERSION)?;
    Ok(CURRENT_VERSION)
}

fn run_step(db: &sled::Db, step: &Step) -> Result<(), MigrationError> {
    let wrap = |source: MigrationError| MigrationError::Step {
        version: step.version,
        name: step.name,
        source: Box::new(source),
    };
    (step.apply)(db).map_err(wrap)?;
    db.flush().map_err(|e| wrap(e.into()))?;
    stamp_version(db, step.version).map_err(wrap)
}

#[cfg(test)]
mod tests;
