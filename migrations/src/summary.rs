//! The schema-2 per-tenant summary, one value per chain in the `tenants` tree.
//!
//! Layout (see [`crate::encoding`]): `u8` format (1), `uid`, `tenant`, first record time
//! (`i64` seconds, `u32` nanoseconds), `last_seq` (`u64`), `last_phase` (`u8` phase code,
//! the same code the record stores), `last_hash` (32 bytes), last record time.

use crate::encoding::{DecodeError, Reader, Writer};

const FORMAT: u8 = 1;

/// A point in time as the journal stores it: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// The head of one tenant chain: enough to append the next record and to list tenants
/// without reading their records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSummaryRow {
    pub uid: String,
    pub tenant: String,
    pub first_time: Timestamp,
    pub last_seq: u64,
    pub last_phase: u8,
    pub last_hash: [u8; 32],
    pub last_time: Timestamp,
}

impl TenantSummaryRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.uid.len() + self.tenant.len() + 80);
        w.u8(FORMAT).str(&self.uid).str(&self.tenant);
        write_time(&mut w, self.first_time);
        w.u64(self.last_seq)
            .u8(self.last_phase)
            .digest(&self.last_hash);
        write_time(&mut w, self.last_time);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let format = r.u8("format")?;
        if format != FORMAT {
            return Err(DecodeError::invalid(
                "format",
                format!("unknown summary format {format}"),
            ));
        }
        let row = Self {
            uid: r.str("uid")?.to_owned(),
            tenant: r.str("tenant")?.to_owned(),
            first_time: read_time(&mut r, "first_time")?,
            last_seq: r.u64("last_seq")?,
            last_phase: r.u8("last_phase")?,
            last_hash: r.digest("last_hash")?,
            last_time: read_time(&mut r, "last_time")?,
        };
        r.finish()?;
        Ok(row)
    }
}

fn write_time(w: &mut Writer, time: Timestamp) {
    w.i64(time.secs).u32(time.nanos);
}

fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<Timestamp, DecodeError> {
    Ok(Timestamp {
        secs: r.i64(field)?,
        nanos: r.u32(field)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> TenantSummaryRow {
        TenantSummaryRow {
            uid: "uid-1".into(),
            tenant: "acme".into(),
            first_time: Timestamp { secs: 10, nanos: 5 },
            last_seq: 4,
            last_phase: 4,
            last_hash: [9; 32],
            last_time: Timestamp { secs: 20, nanos: 0 },
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(TenantSummaryRow::decode(&row().encode()), Ok(row()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = row().encode();
        for len in 0..bytes.len() {
            assert!(
                TenantSummaryRow::decode(&bytes[..len]).is_err(),
                "len {len}"
            );
        }
    }
}
