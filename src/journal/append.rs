//! Appending records: the only way anything is written.

use super::codec::{self, Fields};
use super::digest::Digest;
use super::read::decode_summary;
use super::record::{NewRecord, Record, TenantSummary};
use super::{Journal, JournalError};
use neurallog_migrations::layout::{KEY_SEPARATOR, record_key};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::HashMap;

/// How many records a bulk append writes per sled batch.
const BULK_BATCH: usize = 8192;

/// Where `entry` falls relative to the chain's head.
pub(super) enum Placement {
    /// The next record of the chain.
    Next { prev_hash: Digest },
    /// A seq already stored: a retry if the stored record is the same.
    Stored,
}

impl Journal {
    /// Appends `entry` to its chain, durably: the record is on stable storage (in the
    /// journal's write-ahead log, fdatasynced) when this returns, and survives a crash or a
    /// power cut.
    ///
    /// `entry.seq` must be the chain's last seq + 1. Retrying an append whose record is
    /// already stored returns the stored record; a different record at a stored seq, or a
    /// seq past the next one, is a [`JournalError::Conflict`]. Appends from any number of
    /// threads are written by one writer thread, many to one sync of the write-ahead log
    /// ([`super::writer`]), so they cannot create a gap or a duplicate.
    pub fn append(&self, entry: NewRecord) -> Result<Record, JournalError> {
        validate(&entry)?;
        self.writer.append(entry)
    }

    /// [`Journal::append`] for an async caller: the same append, awaited without holding
    /// a thread while it waits for its sync (a reconcile need not borrow a blocking-pool
    /// thread for it). Dropping the future does not undo the append.
    pub async fn append_async(&self, entry: NewRecord) -> Result<Record, JournalError> {
        validate(&entry)?;
        self.writer.append_async(entry).await
    }

    /// Appends many records with the checks of [`Journal::append`] but without its
    /// transaction or per-record flush, for building large journals in benchmarks and
    /// tests. Not for the controller: it is not atomic, must not run concurrently with
    /// other appends to the same chains, and is durable only after [`Journal::flush`].
    /// Returns how many records were written.
    pub fn bulk_append_unflushed(
        &self,
        entries: impl IntoIterator<Item = NewRecord>,
    ) -> Result<u64, JournalError> {
        self.settled()?;
        let mut heads: HashMap<String, TenantSummary> = HashMap::new();
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        let mut written = 0u64;
        for entry in entries {
            validate(&entry)?;
            let head = match heads.get(&entry.uid) {
                Some(head) => Some(head.clone()),
                None => self.tenant(&entry.uid)?,
            };
            let Placement::Next { prev_hash } = place(&entry, head.as_ref())? else {
                return Err(conflict(&entry, "bulk append does not accept stored seqs"));
            };
            let (value, record) = codec::encode_new(&entry, prev_hash);
            batch.insert(record_key(&entry.uid, entry.seq), value);
            heads.insert(entry.uid, summary_after(head.as_ref(), &record));
            pending += 1;
            written += 1;
            if pending == BULK_BATCH {
                self.write_bulk(std::mem::take(&mut batch), &mut heads)?;
                pending = 0;
            }
        }
        self.write_bulk(batch, &mut heads)?;
        Ok(written)
    }

    /// Writes a batch of records, then the summaries of their chains.
    fn write_bulk(
        &self,
        records: sled::Batch,
        heads: &mut HashMap<String, TenantSummary>,
    ) -> Result<(), JournalError> {
        self.records.apply_batch(records)?;
        let mut summaries = sled::Batch::default();
        for (uid, head) in heads.drain() {
            summaries.insert(uid.as_bytes(), codec::row_from_summary(&head).encode());
        }
        self.tenants.apply_batch(summaries)?;
        Ok(())
    }
}

/// Checks what can be checked without the chain.
pub(super) fn validate(entry: &NewRecord) -> Result<(), JournalError> {
    if entry.uid.is_empty() || entry.uid.as_bytes().contains(&KEY_SEPARATOR) {
        return Err(invalid(
            entry,
            "uid must be non-empty and contain no NUL byte",
        ));
    }
    if entry.seq == 0 {
        return Err(invalid(entry, "seq starts at 1"));
    }
    if let Some(field) = Fields::of_new(entry).oversized_field() {
        return Err(invalid(entry, format!("{field} is longer than 4 GiB")));
    }
    Ok(())
}

/// Decides where `entry` goes in the chain whose head is `head`.
pub(super) fn place(
    entry: &NewRecord,
    head: Option<&TenantSummary>,
) -> Result<Placement, JournalError> {
    let next = head.map_or(1, |h| h.last_seq.saturating_add(1));
    if entry.seq < next {
        return Ok(Placement::Stored);
    }
    if entry.seq > next {
        return Err(conflict(
            entry,
            format!("seq skips ahead; the chain's next seq is {next}"),
        ));
    }
    let Some(head) = head else {
        return Ok(Placement::Next {
            prev_hash: Digest::ZERO,
        });
    };
    if head.tenant != entry.tenant {
        return Err(invalid(
            entry,
            format!("uid belongs to tenant {}", head.tenant),
        ));
    }
    if entry.time < head.last_time {
        return Err(invalid(
            entry,
            format!(
                "time {} is before the previous record's time {}",
                entry.time.to_rfc3339(),
                head.last_time.to_rfc3339()
            ),
        ));
    }
    Ok(Placement::Next {
        prev_hash: head.last_hash,
    })
}

/// The chain's summary once `record` is its last record.
pub(super) fn summary_after(head: Option<&TenantSummary>, record: &Record) -> TenantSummary {
    TenantSummary {
        tenant: record.tenant.clone(),
        uid: record.uid.clone(),
        first_time: head.map_or(record.time, |h| h.first_time),
        last_phase: record.to,
        last_seq: record.seq,
        last_hash: record.hash,
        last_time: record.time,
        deleted: record.to == neurallog_machines::Phase::Deleted,
    }
}

/// A transaction's own result: only storage errors abort it (see [`append_in`]).
pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<std::convert::Infallible>>;

pub(super) fn read_head(
    tenants: &TransactionalTree,
    uid: &str,
) -> TxResult<Result<Option<TenantSummary>, JournalError>> {
    let Some(bytes) = tenants.get(uid.as_bytes())? else {
        return Ok(Ok(None));
    };
    Ok(decode_summary(uid.as_bytes(), &bytes).map(Some))
}

pub(super) fn conflict(entry: &NewRecord, reason: impl Into<String>) -> JournalError {
    JournalError::Conflict {
        tenant: entry.tenant.clone(),
        uid: entry.uid.clone(),
        seq: entry.seq,
        reason: reason.into(),
    }
}

fn invalid(entry: &NewRecord, reason: impl Into<String>) -> JournalError {
    JournalError::Invalid {
        tenant: entry.tenant.clone(),
        uid: entry.uid.clone(),
        seq: entry.seq,
        reason: reason.into(),
    }
}
