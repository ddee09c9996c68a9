//! Appending records: the only way anything is written.

use super::codec::{self, Fields};
use super::digest::Digest;
use super::read::{decode_record, decode_summary};
use super::record::{NewRecord, Record, TenantSummary};
use super::writer::Store;
use super::{Journal, JournalError};
use neurallog_migrations::layout::{KEY_SEPARATOR, RECORDS_TREE, display_record_key, record_key};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
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
    /// Appends `entry` to its chain, durably: the record is on disk (fdatasynced) when this
    /// returns.
    ///
    /// `entry.seq` must be the chain's last seq + 1. Retrying an append whose record is
    /// already stored returns the stored record; a different record at a stored seq, or a
    /// seq past the next one, is a [`JournalError::Conflict`]. Appends from any number of
    /// threads are written by one writer thread, many to a transaction and one sync
    /// ([`super::writer`]), so they cannot create a gap or a duplicate.
    pub fn append(&self, entry: NewRecord) -> Result<Record, JournalError> {
        validate(&entry)?;
        let record = self.writer.append(entry)?;
        self.tails.offer(&record.uid, Some(&record));
        Ok(record)
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

/// Writes a batch of validated entries in one transaction, in order (an entry sees the
/// chains as the entries before it left them), then flushes and syncs once. Each entry
/// gets its own outcome; a storage failure fails them all.
pub(super) fn commit_batch(
    store: &Store,
    entries: &[NewRecord],
) -> Vec<Result<Record, JournalError>> {
    let written = (&store.records, &store.tenants).transaction(|(records, tenants)| {
        entries
            .iter()
            .map(|entry| append_in(records, tenants, entry))
            .collect::<TxResult<Vec<_>>>()
    });
    let storage_failure = match written {
        Ok(outcomes) => match store.flush() {
            Ok(()) => return outcomes,
            Err(error) => error,
        },
        Err(TransactionError::Storage(error)) => error,
        Err(TransactionError::Abort(never)) => match never {},
    };
    entries
        .iter()
        .map(|_| Err(JournalError::Storage(storage_failure.clone())))
        .collect()
}

/// Appends `entry` inside a transaction: the outer error aborts the transaction (storage),
/// the inner one is this entry's refusal, which writes nothing.
fn append_in(
    records: &TransactionalTree,
    tenants: &TransactionalTree,
    entry: &NewRecord,
) -> TxResult<Result<Record, JournalError>> {
    let key = record_key(&entry.uid, entry.seq);
    let head = match read_head(tenants, &entry.uid)? {
        Ok(head) => head,
        Err(refused) => return Ok(Err(refused)),
    };
    match place(entry, head.as_ref()) {
        Ok(Placement::Next { prev_hash }) => {
            let (value, record) = codec::encode_new(entry, prev_hash);
            records.insert(key.as_slice(), value)?;
            let summary = summary_after(head.as_ref(), &record);
            tenants.insert(
                entry.uid.as_bytes(),
                codec::row_from_summary(&summary).encode(),
            )?;
            Ok(Ok(record))
        }
        Ok(Placement::Stored) => stored_retry(records, &key, entry),
        Err(refused) => Ok(Err(refused)),
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

/// The stored record at `key` if it is what `entry` would have stored, else a conflict.
fn stored_retry(
    records: &TransactionalTree,
    key: &[u8],
    entry: &NewRecord,
) -> TxResult<Result<Record, JournalError>> {
    let Some(value) = records.get(key)? else {
        return Ok(Err(JournalError::Corrupt {
            tree: RECORDS_TREE,
            key: display_record_key(key),
            detail: "the chain's summary counts this record but it is missing".into(),
        }));
    };
    Ok(decode_record(key, &value).and_then(|stored| {
        if stored.matches(entry) {
            Ok(stored)
        } else {
            Err(conflict(
                entry,
                "a different record is already stored at this seq",
            ))
        }
    }))
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
