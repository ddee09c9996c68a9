//! Schema 2 -> 3: add the `checkpoints` tree. Retention compacts a chain's oldest records
//! into one checkpoint per chain (keyed `uid`); a chain then starts after its checkpoint.
//!
//! Nothing is converted: a schema 2 journal has never compacted, so the tree starts empty.
//! The version bump is what matters: an operator that knows only schema 2 would read a
//! compacted chain as one missing its first records, so it must refuse this journal.

use crate::MigrationError;
use crate::layout::CHECKPOINTS_TREE;

pub(crate) const VERSION: u32 = 3;

pub(crate) fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    db.open_tree(CHECKPOINTS_TREE)?;
    Ok(())
}
