//! Where things live in the journal's sled database.
//!
//! - `meta`: `schema_version` -> `u32` big endian.
//! - `records` (schema 1+): `uid` + `0x00` + `seq` (`u64` big endian) -> one encoded record,
//!   so a prefix scan over `uid` + `0x00` yields a tenant's records in `seq` order.
//! - `tenants` (schema 2+): `uid` -> [`crate::summary::TenantSummaryRow`].
//! - `checkpoints` (schema 3+): `uid` -> the checkpoint retention left of the chain's
//!   compacted records (encoded by the operator).

/// The tree holding `schema_version`.
pub const META_TREE: &str = "meta";
/// The key of the schema version in [`META_TREE`].
pub const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";
/// The tree of journal records.
pub const RECORDS_TREE: &str = "records";
/// The tree of per-tenant summaries (schema 2+).
pub const TENANTS_TREE: &str = "tenants";

/// The tree of per-chain checkpoints (schema 3+).
pub const CHECKPOINTS_TREE: &str = "checkpoints";

/// Separates the uid from the sequence number in a record key. A uid never contains it.
pub const KEY_SEPARATOR: u8 = 0x00;

/// The key of record `seq` of the chain `uid`.
pub fn record_key(uid: &str, seq: u64) -> Vec<u8> {
    let mut key = chain_prefix(uid);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix shared by every record key of the chain `uid`.
pub fn chain_prefix(uid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(uid.len() + 9);
    key.extend_from_slice(uid.as_bytes());
    key.push(KEY_SEPARATOR);
    key
}

/// Splits a record key into `(uid, seq)`, or `None` if it is not one.
pub fn split_record_key(key: &[u8]) -> Option<(&str, u64)> {
    let split = key.len().checked_sub(9)?;
    let (uid, rest) = key.split_at(split);
    let (separator, seq) = rest.split_first()?;
    if *separator != KEY_SEPARATOR || uid.contains(&KEY_SEPARATOR) {
        return None;
    }
    let seq = u64::from_be_bytes(seq.try_into().ok()?);
    Some((std::str::from_utf8(uid).ok()?, seq))
}

/// A record key as a human reads it: `uid/seq`, or hex when it is not a record key.
pub fn display_record_key(key: &[u8]) -> String {
    match split_record_key(key) {
        Some((uid, seq)) => format!("{uid}/{seq}"),
        None => format!("0x{}", to_hex(key)),
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_round_trip_and_sort_by_seq() {
        let key = record_key("7f3e-uid", 258);
        assert_eq!(split_record_key(&key), Some(("7f3e-uid", 258)));
        assert!(record_key("u", 2) < record_key("u", 256));
        assert!(key.starts_with(&chain_prefix("7f3e-uid")));
        assert_eq!(display_record_key(&key), "7f3e-uid/258");
    }

    #[test]
    fn malformed_keys_are_not_record_keys() {
        assert_eq!(split_record_key(b"short"), None);
        assert_eq!(split_record_key(b"uid-without-separator"), None);
        assert_eq!(display_record_key(&[1, 2]), "0x0102");
    }
}
