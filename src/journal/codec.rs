//! The canonical binary encoding of a record: what is stored and what is hashed.
//!
//! A stored value is `body ++ hash`, where `hash = SHA-256(body)` and `body` is, in order
//! (primitives as in [`neurallog_migrations::encoding`]: big-endian fixed-width integers,
//! `u32`-length-prefixed UTF-8 strings):
//!
//! | field | encoding |
//! |-------|----------|
//! | format | `u8` = 1 |
//! | uid | string |
//! | seq | `u64` |
//! | tenant | string |
//! | time | `i64` seconds + `u32` nanoseconds since the Unix epoch |
//! | generation | `i64` |
//! | from, to | `u8` phase code each |
//! | input.trigger | `u8` trigger code |
//! | input.generation | `i64` |
//! | input.redis, input.server | `u8` 0 = absent, or 1 + `i32` ready + `i32` desired |
//! | input.reason | `u8` 0 = absent, or 1 + string |
//! | outputs | `u32` count + one `u8` action code each |
//! | message, specDigest | string each |
//! | prevHash | 32 bytes |
//!
//! Codes are assigned explicitly below and never reused, so reordering the machine's enums
//! cannot change old records. The decoder is strict (every byte consumed, every tag and code
//! valid, no varints), so a value has exactly one encoding: hashing the stored body is the
//! same as hashing a re-encoding of the decoded record.
//!
//! The migrations crate reads the header (format through `to`) and the trailing hash
//! without these types; changing that header means a new record format and a migration.

use super::digest::Digest;
use super::record::{NewRecord, Record, TenantSummary};
use chrono::{DateTime, Utc};
use neurallog_machines::{Action, Input, Phase, Readiness, Trigger};
use neurallog_migrations::encoding::{DecodeError, Reader, Writer};
use neurallog_migrations::summary::{TenantSummaryRow, Timestamp};

const RECORD_FORMAT: u8 = 1;
pub(crate) const HASH_LEN: usize = 32;

/// The hashed fields of a record, borrowed from a [`NewRecord`] or a [`Record`].
pub(crate) struct Fields<'a> {
    pub tenant: &'a str,
    pub uid: &'a str,
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub generation: i64,
    pub from: Phase,
    pub input: &'a Input,
    pub to: Phase,
    pub outputs: &'a [Action],
    pub message: &'a str,
    pub spec_digest: &'a str,
}

impl<'a> Fields<'a> {
    pub fn of_new(entry: &'a NewRecord) -> Self {
        Self {
            tenant: &entry.tenant,
            uid: &entry.uid,
            seq: entry.seq,
            time: entry.time,
            generation: entry.generation,
            from: entry.from,
            input: &entry.input,
            to: entry.to,
            outputs: &entry.outputs,
            message: &entry.message,
            spec_digest: &entry.spec_digest,
        }
    }

    pub fn of_record(record: &'a Record) -> Self {
        Self {
            tenant: &record.tenant,
            uid: &record.uid,
            seq: record.seq,
            time: record.time,
            generation: record.generation,
            from: record.from,
            input: &record.input,
            to: record.to,
            outputs: &record.outputs,
            message: &record.message,
            spec_digest: &record.spec_digest,
        }
    }

    /// The strings [`encode_body`] cannot store whole.
    pub fn oversized_field(&self) -> Option<&'static str> {
        let reason = self.input.reason.as_deref().unwrap_or("");
        [
            ("uid", self.uid),
            ("tenant", self.tenant),
            ("input.reason", reason),
            ("message", self.message),
            ("specDigest", self.spec_digest),
        ]
        .into_iter()
        .find(|(_, value)| !Writer::fits(value))
        .map(|(name, _)| name)
    }
}

pub(crate) fn encode_body(fields: &Fields<'_>, prev_hash: &Digest) -> Vec<u8> {
    let mut w = Writer::with_capacity(
        128 + fields.uid.len()
            + fields.tenant.len()
            + fields.message.len()
            + fields.spec_digest.len(),
    );
    w.u8(RECORD_FORMAT)
        .str(fields.uid)
        .u64(fields.seq)
        .str(fields.tenant);
    write_time(&mut w, fields.time);
    w.i64(fields.generation)
        .u8(phase_code(fields.from))
        .u8(phase_code(fields.to));
    write_input(&mut w, fields.input);
    w.u32(u32::try_from(fields.outputs.len()).unwrap_or(u32::MAX));
    for action in fields.outputs {
        w.u8(action_code(*action));
    }
    w.str(fields.message)
        .str(fields.spec_digest)
        .digest(&prev_hash.0);
    w.into_bytes()
}

/// The stored value of `entry` chained after `prev_hash`, and the record it decodes to.
pub(crate) fn encode_new(entry: &NewRecord, prev_hash: Digest) -> (Vec<u8>, Record) {
    let mut value = encode_body(&Fields::of_new(entry), &prev_hash);
    let hash = Digest::of(&value);
    value.extend_from_slice(&hash.0);
    let record = Record {
        tenant: entry.tenant.clone(),
        uid: entry.uid.clone(),
        seq: entry.seq,
        time: entry.time,
        generation: entry.generation,
        from: entry.from,
        input: entry.input.clone(),
        to: entry.to,
        outputs: entry.outputs.clone(),
        message: entry.message.clone(),
        spec_digest: entry.spec_digest.clone(),
        prev_hash,
        hash,
    };
    (value, record)
}

fn write_time(w: &mut Writer, time: DateTime<Utc>) {
    let stamp = timestamp(time);
    w.i64(stamp.secs).u32(stamp.nanos);
}

fn write_input(w: &mut Writer, input: &Input) {
    w.u8(trigger_code(input.trigger)).i64(input.generation);
    for readiness in [input.redis, input.server] {
        match readiness {
            None => w.u8(0),
            Some(r) => w.u8(1).i32(r.ready).i32(r.desired),
        };
    }
    match &input.reason {
        None => w.u8(0),
        Some(reason) => w.u8(1).str(reason),
    };
}

/// A stored record decoded without copying its strings.
pub(crate) struct RecordView<'a> {
    pub tenant: &'a str,
    pub uid: &'a str,
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub generation: i64,
    pub from: Phase,
    pub to: Phase,
    pub trigger: Trigger,
    pub input_generation: i64,
    pub redis: Option<Readiness>,
    pub server: Option<Readiness>,
    pub reason: Option<&'a str>,
    /// Validated action codes.
    outputs: &'a [u8],
    pub message: &'a str,
    pub spec_digest: &'a str,
    pub prev_hash: Digest,
    pub hash: Digest,
}

impl RecordView<'_> {
    pub fn to_record(&self) -> Record {
        Record {
            tenant: self.tenant.to_owned(),
            uid: self.uid.to_owned(),
            seq: self.seq,
            time: self.time,
            generation: self.generation,
            from: self.from,
            input: Input {
                trigger: self.trigger,
                generation: self.input_generation,
                redis: self.redis,
                server: self.server,
                reason: self.reason.map(str::to_owned),
            },
            to: self.to,
            // Codes were validated while decoding.
            outputs: self.outputs.iter().filter_map(|c| action(*c)).collect(),
            message: self.message.to_owned(),
            spec_digest: self.spec_digest.to_owned(),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// Splits a stored value into its body and the hash stored after it.
pub(crate) fn split_value(value: &[u8]) -> Result<(&[u8], Digest), DecodeError> {
    let body_len = value.len().checked_sub(HASH_LEN).ok_or_else(|| {
        DecodeError::new(
            "hash",
            neurallog_migrations::encoding::DecodeProblem::Truncated {
                needed: HASH_LEN,
                available: value.len(),
            },
        )
    })?;
    let (body, hash) = value.split_at(body_len);
    let mut stored = [0u8; HASH_LEN];
    stored.copy_from_slice(hash);
    Ok((body, Digest(stored)))
}

/// Decodes a body; `hash` is taken as given (checking it is [`super::verify`]'s job).
pub(crate) fn decode_body(body: &[u8], hash: Digest) -> Result<RecordView<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let format = r.u8("format")?;
    if format != RECORD_FORMAT {
        return Err(DecodeError::invalid(
            "format",
            format!("unknown record format {format}"),
        ));
    }
    let view = RecordView {
        uid: r.str("uid")?,
        seq: r.u64("seq")?,
        tenant: r.str("tenant")?,
        time: read_time(&mut r, "time")?,
        generation: r.i64("generation")?,
        from: read_phase(&mut r, "from")?,
        to: read_phase(&mut r, "to")?,
        trigger: read_trigger(&mut r)?,
        input_generation: r.i64("input.generation")?,
        redis: read_readiness(&mut r, "input.redis")?,
        server: read_readiness(&mut r, "input.server")?,
        reason: read_reason(&mut r)?,
        outputs: read_outputs(&mut r)?,
        message: r.str("message")?,
        spec_digest: r.str("specDigest")?,
        prev_hash: Digest(r.digest("prevHash")?),
        hash,
    };
    r.finish()?;
    Ok(view)
}

/// Decodes a whole stored value.
pub(crate) fn decode_record(value: &[u8]) -> Result<Record, DecodeError> {
    let (body, hash) = split_value(value)?;
    Ok(decode_body(body, hash)?.to_record())
}

fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<DateTime<Utc>, DecodeError> {
    let stamp = Timestamp {
        secs: r.i64(field)?,
        nanos: r.u32(field)?,
    };
    datetime(stamp, field)
}

fn read_phase(r: &mut Reader<'_>, field: &'static str) -> Result<Phase, DecodeError> {
    let code = r.u8(field)?;
    phase(code).ok_or_else(|| DecodeError::invalid(field, format!("unknown phase code {code}")))
}

fn read_trigger(r: &mut Reader<'_>) -> Result<Trigger, DecodeError> {
    let code = r.u8("input.trigger")?;
    trigger(code).ok_or_else(|| {
        DecodeError::invalid("input.trigger", format!("unknown trigger code {code}"))
    })
}

fn read_readiness(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Option<Readiness>, DecodeError> {
    if !r.present(field)? {
        return Ok(None);
    }
    Ok(Some(Readiness::new(r.i32(field)?, r.i32(field)?)))
}

fn read_reason<'a>(r: &mut Reader<'a>) -> Result<Option<&'a str>, DecodeError> {
    if !r.present("input.reason")? {
        return Ok(None);
    }
    Ok(Some(r.str("input.reason")?))
}

fn read_outputs<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let count = r.u32("outputs")? as usize;
    let codes = r.take(count, "outputs")?;
    match codes.iter().find(|code| action(**code).is_none()) {
        Some(bad) => Err(DecodeError::invalid(
            "outputs",
            format!("unknown action code {bad}"),
        )),
        None => Ok(codes),
    }
}

pub(crate) fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        secs: time.timestamp(),
        nanos: time.timestamp_subsec_nanos(),
    }
}

pub(crate) fn datetime(
    stamp: Timestamp,
    field: &'static str,
) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::from_timestamp(stamp.secs, stamp.nanos).ok_or_else(|| {
        DecodeError::invalid(
            field,
            format!("{}s {}ns is not a valid time", stamp.secs, stamp.nanos),
        )
    })
}

pub(crate) fn summary_from_row(row: TenantSummaryRow) -> Result<TenantSummary, DecodeError> {
    let last_phase = phase(row.last_phase).ok_or_else(|| {
        DecodeError::invalid(
            "last_phase",
            format!("unknown phase code {}", row.last_phase),
        )
    })?;
    Ok(TenantSummary {
        first_time: datetime(row.first_time, "first_time")?,
        last_time: datetime(row.last_time, "last_time")?,
        tenant: row.tenant,
        uid: row.uid,
        last_phase,
        last_seq: row.last_seq,
        last_hash: Digest(row.last_hash),
        deleted: last_phase == Phase::Deleted,
    })
}

pub(crate) fn row_from_summary(summary: &TenantSummary) -> TenantSummaryRow {
    TenantSummaryRow {
        uid: summary.uid.clone(),
        tenant: summary.tenant.clone(),
        first_time: timestamp(summary.first_time),
        last_seq: summary.last_seq,
        last_phase: phase_code(summary.last_phase),
        last_hash: summary.last_hash.0,
        last_time: timestamp(summary.last_time),
    }
}

pub(crate) fn phase_code(phase: Phase) -> u8 {
    match phase {
        Phase::New => 0,
        Phase::Pending => 1,
        Phase::ProvisioningRedis => 2,
        Phase::ProvisioningServer => 3,
        Phase::Running => 4,
        Phase::Updating => 5,
        Phase::Degraded => 6,
        Phase::Failed => 7,
        Phase::Deleting => 8,
        Phase::Deleted => 9,
        Phase::Stalled => 10,
        Phase::Paused => 11,
    }
}

fn phase(code: u8) -> Option<Phase> {
    Some(match code {
        0 => Phase::New,
        1 => Phase::Pending,
        2 => Phase::ProvisioningRedis,
        3 => Phase::ProvisioningServer,
        4 => Phase::Running,
        5 => Phase::Updating,
        6 => Phase::Degraded,
        7 => Phase::Failed,
        8 => Phase::Deleting,
        9 => Phase::Deleted,
        10 => Phase::Stalled,
        11 => Phase::Paused,
        _ => return None,
    })
}

fn trigger_code(trigger: Trigger) -> u8 {
    match trigger {
        Trigger::Observed => 0,
        Trigger::NamespaceReady => 1,
        Trigger::RedisReady => 2,
        Trigger::AllReady => 3,
        Trigger::SpecChanged => 4,
        Trigger::ComponentLost => 5,
        Trigger::SpecInvalid => 6,
        Trigger::ProblemResolved => 7,
        Trigger::DeletionRequested => 8,
        Trigger::CleanupDone => 9,
        Trigger::ProgressStalled => 10,
        Trigger::ProgressResumed => 11,
        Trigger::RegistrationExists => 12,
        Trigger::PauseRequested => 13,
        Trigger::ResumeRequested => 14,
    }
}

fn trigger(code: u8) -> Option<Trigger> {
    Some(match code {
        0 => Trigger::Observed,
        1 => Trigger::NamespaceReady,
        2 => Trigger::RedisReady,
        3 => Trigger::AllReady,
        4 => Trigger::SpecChanged,
        5 => Trigger::ComponentLost,
        6 => Trigger::SpecInvalid,
        7 => Trigger::ProblemResolved,
        8 => Trigger::DeletionRequested,
        9 => Trigger::CleanupDone,
        10 => Trigger::ProgressStalled,
        11 => Trigger::ProgressResumed,
        12 => Trigger::RegistrationExists,
        13 => Trigger::PauseRequested,
        14 => Trigger::ResumeRequested,
        _ => return None,
    })
}

fn action_code(action: Action) -> u8 {
    match action {
        Action::CreateNamespace => 0,
        Action::ProvisionRedis => 1,
        Action::ProvisionServer => 2,
        Action::MarkRunning => 3,
        Action::RollOutUpdate => 4,
        Action::MarkDegraded => 5,
        Action::ReportFailure => 6,
        Action::Teardown => 7,
        Action::ReleaseFinalizer => 8,
        Action::ReportStall => 9,
        Action::ReportRegistrationExists => 10,
        Action::ReportPaused => 11,
    }
}

fn action(code: u8) -> Option<Action> {
    Some(match code {
        0 => Action::CreateNamespace,
        1 => Action::ProvisionRedis,
        2 => Action::ProvisionServer,
        3 => Action::MarkRunning,
        4 => Action::RollOutUpdate,
        5 => Action::MarkDegraded,
        6 => Action::ReportFailure,
        7 => Action::Teardown,
        8 => Action::ReleaseFinalizer,
        9 => Action::ReportStall,
        10 => Action::ReportRegistrationExists,
        11 => Action::ReportPaused,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::sample_entry;

    #[test]
    fn codes_round_trip() {
        for p in Phase::ALL {
            assert_eq!(phase(phase_code(p)), Some(p));
        }
        for t in Trigger::ALL {
            assert_eq!(trigger(trigger_code(t)), Some(t));
        }
        for code in 0..=u8::MAX {
            if let Some(a) = action(code) {
                assert_eq!(action_code(a), code);
            }
        }
        assert_eq!(phase(12), None);
        // Added after journals existed: new codes only, so old journals replay.
        assert_eq!(
            (
                phase_code(Phase::Paused),
                trigger_code(Trigger::PauseRequested),
                trigger_code(Trigger::ResumeRequested),
                action_code(Action::ReportPaused)
            ),
            (11, 13, 14, 11)
        );
    }

    #[test]
    fn value_decodes_to_the_encoded_record_and_reencodes_identically() {
        let mut entry = sample_entry("acme", "uid-1", 3);
        entry.input = entry
            .input
            .with_readiness(Readiness::new(1, 3), Readiness::new(0, 2))
            .with_reason("redis lost a replica");
        let (value, record) = encode_new(&entry, Digest::of(b"prev"));
        assert_eq!(decode_record(&value).unwrap(), record);
        assert!(record.matches(&entry));
        assert_eq!(record.recompute_hash(), record.hash);
        let (body, _) = split_value(&value).unwrap();
        assert_eq!(
            encode_body(&Fields::of_record(&record), &record.prev_hash),
            body
        );
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let (value, _) = encode_new(&sample_entry("acme", "uid-1", 1), Digest::ZERO);
        let (body, hash) = split_value(&value).unwrap();
        for len in 0..body.len() {
            assert!(decode_body(&body[..len], hash).is_err(), "len {len}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode_body(&longer, hash).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_decode_to_an_error_or_a_record_never_a_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
            flip in 0usize..400,
        ) {
            let _ = decode_record(&bytes);
            let (mut value, record) = encode_new(&sample_entry("acme", "uid-1", 1), Digest::ZERO);
            let at = flip % value.len();
            value[at] ^= 0xff;
            if let Ok(decoded) = decode_record(&value) {
                proptest::prop_assert_ne!(decoded, record);
            }
        }
    }

    #[test]
    fn bad_codes_are_errors_naming_the_field() {
        let (value, _) = encode_new(&sample_entry("acme", "uid-1", 1), Digest::ZERO);
        let (body, hash) = split_value(&value).unwrap();
        let mut bad = body.to_vec();
        bad[0] = 7;
        assert_eq!(decode_body(&bad, hash).err().unwrap().field, "format");
    }

    #[test]
    fn json_export_is_camel_case_with_rfc3339_time_and_hex_hashes() {
        let (_, record) = encode_new(&sample_entry("acme", "uid-1", 1), Digest::ZERO);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["specDigest"], record.spec_digest.as_str());
        assert_eq!(json["prevHash"], "0".repeat(64));
        assert_eq!(json["hash"], record.hash.to_hex());
        assert_eq!(json["time"], "2025-01-02T03:04:05.000000006Z");
        assert_eq!(json["input"]["trigger"], "Observed");
        let back: Record = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}
