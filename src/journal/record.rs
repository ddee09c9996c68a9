//! What the journal stores: one [`Record`] per transition, and one [`TenantSummary`] per
//! chain.

use super::codec;
use super::digest::Digest;
use chrono::{DateTime, Utc};
use neurallog_machines::{Action, Input, Phase, Transition};
use serde::{Deserialize, Serialize};

/// A transition the caller wants journaled. The journal adds the hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The Tenant's name.
    pub tenant: String,
    /// The Tenant's `metadata.uid`: one chain per uid.
    pub uid: String,
    /// The chain's last seq + 1 (1 for a new chain).
    pub seq: u64,
    pub time: DateTime<Utc>,
    /// The Tenant's `metadata.generation`.
    pub generation: i64,
    pub from: Phase,
    pub input: Input,
    pub to: Phase,
    pub outputs: Vec<Action>,
    pub message: String,
    /// Hex SHA-256 of the spec (see [`super::spec_digest`]); never the spec itself.
    pub spec_digest: String,
}

impl NewRecord {
    /// The record of `transition`, caused by `input`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_transition(
        tenant: impl Into<String>,
        uid: impl Into<String>,
        seq: u64,
        time: DateTime<Utc>,
        generation: i64,
        input: Input,
        transition: Transition,
        spec_digest: impl Into<String>,
    ) -> Self {
        Self {
            tenant: tenant.into(),
            uid: uid.into(),
            seq,
            time,
            generation,
            from: transition.from,
            input,
            to: transition.to,
            outputs: transition.outputs,
            message: transition.message,
            spec_digest: spec_digest.into(),
        }
    }
}

/// The time to record for a transition taken at `clock` after `previous`: the clock, but
/// never earlier than the previous record's time. A chain's times never go backwards (the
/// journal refuses that, and `verify` checks it), so a clock stepped back would otherwise
/// stop every transition; instead the chain repeats its last time until the clock catches
/// up. Order is by seq either way.
pub fn record_time(clock: DateTime<Utc>, previous: Option<&Record>) -> DateTime<Utc> {
    previous.map_or(clock, |previous| clock.max(previous.time))
}

/// One journaled transition, as stored. Serializes to camelCase JSON for export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub tenant: String,
    pub uid: String,
    pub seq: u64,
    /// RFC 3339 in JSON.
    pub time: DateTime<Utc>,
    pub generation: i64,
    pub from: Phase,
    pub input: Input,
    pub to: Phase,
    pub outputs: Vec<Action>,
    pub message: String,
    pub spec_digest: String,
    /// The previous record's `hash`; all zeros for seq 1.
    pub prev_hash: Digest,
    /// SHA-256 of the canonical encoding of every other field (see [`codec`]).
    pub hash: Digest,
}

impl Record {
    /// Whether this record is what `entry` would have stored.
    pub fn matches(&self, entry: &NewRecord) -> bool {
        self.tenant == entry.tenant
            && self.uid == entry.uid
            && self.seq == entry.seq
            && self.time == entry.time
            && self.generation == entry.generation
            && self.from == entry.from
            && self.input == entry.input
            && self.to == entry.to
            && self.outputs == entry.outputs
            && self.message == entry.message
            && self.spec_digest == entry.spec_digest
    }

    /// The entry that, appended after `prev_hash`, stores this record again.
    pub fn to_new(&self) -> NewRecord {
        NewRecord {
            tenant: self.tenant.clone(),
            uid: self.uid.clone(),
            seq: self.seq,
            time: self.time,
            generation: self.generation,
            from: self.from,
            input: self.input.clone(),
            to: self.to,
            outputs: self.outputs.clone(),
            message: self.message.clone(),
            spec_digest: self.spec_digest.clone(),
        }
    }

    /// The hash this record's fields give, for checking an exported record against its
    /// `hash` without the journal.
    pub fn recompute_hash(&self) -> Digest {
        let fields = codec::Fields::of_record(self);
        Digest::of(&codec::encode_body(&fields, &self.prev_hash))
    }
}

/// The head of one chain: what `list` shows without reading records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub tenant: String,
    pub uid: String,
    /// The time of the chain's first record.
    pub first_time: DateTime<Utc>,
    pub last_phase: Phase,
    pub last_seq: u64,
    pub last_hash: Digest,
    pub last_time: DateTime<Utc>,
    /// The last phase is `Deleted`: the Tenant is gone; its chain stays.
    pub deleted: bool,
}
