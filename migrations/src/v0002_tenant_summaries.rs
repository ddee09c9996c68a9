//! Schema 1 -> 2: add the `tenants` tree, one summary per chain, built from the records.
//!
//! Idempotent: the tree is cleared and rebuilt from scratch, so a run interrupted before
//! the version bump is simply repeated.
//!
//! Reads records through a minimal decoder frozen at record format 1, independent of the
//! operator's types: it needs only the header fields and the trailing hash.

use crate::MigrationError;
use crate::encoding::{DecodeError, Reader};
use crate::layout::{RECORDS_TREE, TENANTS_TREE, display_record_key, split_record_key};
use crate::summary::{TenantSummaryRow, Timestamp};

pub(crate) const VERSION: u32 = 2;

/// Record format 1 starts with: `u8` format, `uid`, `u64` seq, `tenant`, time (`i64`
/// seconds, `u32` nanoseconds), `i64` generation, `u8` from, `u8` to; it ends with the
/// 32-byte hash.
const RECORD_FORMAT_1: u8 = 1;
const HASH_LEN: usize = 32;

/// What a summary needs from one record.
struct RecordHead {
    tenant: String,
    time: Timestamp,
    to: u8,
    hash: [u8; 32],
}

pub(crate) fn apply(db: &sled::Db) -> Result<(), MigrationError> {
    let records = db.open_tree(RECORDS_TREE)?;
    let tenants = db.open_tree(TENANTS_TREE)?;
    tenants.clear()?;

    let mut chain: Option<TenantSummaryRow> = None;
    for item in records.iter() {
        let (key, value) = item?;
        let (uid, seq, head) = read_record(&key, &value)?;
        match chain.as_mut() {
            Some(row) if row.uid == uid => extend(row, seq, head),
            _ => {
                if let Some(done) = chain.take() {
                    tenants.insert(done.uid.as_bytes(), done.encode())?;
                }
                chain = Some(start(uid, seq, head));
            }
        }
    }
    if let Some(done) = chain {
        tenants.insert(done.uid.as_bytes(), done.encode())?;
    }
    Ok(())
}

fn start(uid: &str, seq: u64, head: RecordHead) -> TenantSummaryRow {
    TenantSummaryRow {
        uid: uid.to_owned(),
        tenant: head.tenant,
        first_time: head.time,
        last_seq: seq,
        last_phase: head.to,
        last_hash: head.hash,
        last_time: head.time,
    }
}

fn extend(row: &mut TenantSummaryRow, seq: u64, head: RecordHead) {
    row.last_seq = seq;
    row.last_phase = head.to;
    row.last_hash = head.hash;
    row.last_time = head.time;
}

fn read_record<'k>(
    key: &'k [u8],
    value: &[u8],
) -> Result<(&'k str, u64, RecordHead), MigrationError> {
    let corrupt = |detail: String| MigrationError::CorruptRecord {
        version: VERSION,
        key: display_record_key(key),
        detail,
    };
    let (uid, seq) = split_record_key(key).ok_or_else(|| corrupt("not a record key".into()))?;
    let head = read_head(value).map_err(|e| corrupt(e.to_string()))?;
    Ok((uid, seq, head))
}

fn read_head(value: &[u8]) -> Result<RecordHead, DecodeError> {
    let body_len = value.len().checked_sub(HASH_LEN).ok_or_else(|| {
        DecodeError::invalid(
            "hash",
            format!("value of {} bytes has no hash", value.len()),
        )
    })?;
    let mut r = Reader::new(&value[..body_len]);
    let format = r.u8("format")?;
    if format != RECORD_FORMAT_1 {
        return Err(DecodeError::invalid(
            "format",
            format!("unknown record format {format}"),
        ));
    }
    let _uid = r.str("uid")?;
    let _seq = r.u64("seq")?;
    let tenant = r.str("tenant")?.to_owned();
    let time = Timestamp {
        secs: r.i64("time")?,
        nanos: r.u32("time")?,
    };
    let _generation = r.i64("generation")?;
    let _from = r.u8("from")?;
    let to = r.u8("to")?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&value[body_len..]);
    Ok(RecordHead {
        tenant,
        time,
        to,
        hash,
    })
}
