//! Mirroring to Kubernetes: an Event per journaled transition (and the Warning Events),
//! then the Tenant's status. Events are best effort; the journal is the truth.

use super::apply::{self, create_event};
use super::error::source_code;
use super::events::{self, EventType};
use super::failures;
use super::lean::Lean;
use super::observation::Observation;
use super::status;
use super::{Context, Error};
use super::{EVENT_WRITE_FAILED, JOURNAL_RECOVERED, MAX_PENDING_EVENTS};
use crate::crd::{Tenant, namespace_for};
use crate::journal::Record;
use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::warn;

impl Context {
    /// Creates an Event; whether it exists now. Never an error: Events are a mirror, and
    /// a failed write must hold neither status nor provisioning. A failed one is kept and
    /// retried by the next passes (see `retry_events`).
    pub async fn emit_event(
        &self,
        tenant: &Tenant,
        name: String,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> bool {
        let event = self.event_at(tenant, name, type_, reason, message, Utc::now());
        let sent = self.send_event(&event).await;
        if !sent {
            self.memo(tenant, |m| {
                let queued = m
                    .pending_events
                    .iter()
                    .any(|e| e.metadata.name == event.metadata.name);
                if !queued && m.pending_events.len() < MAX_PENDING_EVENTS {
                    m.pending_events.push(event);
                }
            });
        }
        sent
    }

    pub(super) fn event_at(
        &self,
        tenant: &Tenant,
        name: String,
        type_: EventType,
        reason: &str,
        message: &str,
        at: chrono::DateTime<Utc>,
    ) -> k8s_openapi::api::core::v1::Event {
        events::event(tenant, name, type_, reason, message, at, &self.instance)
    }

    /// Creates `event`; a failure is counted and logged once (later ones at debug level).
    pub(super) async fn send_event(&self, event: &k8s_openapi::api::core::v1::Event) -> bool {
        self.metrics.count_write("create", "events");
        match create_event(&self.client, event).await {
            Ok(_) => true,
            Err(error) => {
                self.metrics.count_error(EVENT_WRITE_FAILED);
                let first = !self
                    .event_failure_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed);
                let reason = event.reason.as_deref().unwrap_or_default();
                if first {
                    warn!(%error, reason, "cannot write an Event; it is retried later (further failures are logged at debug level)");
                } else {
                    tracing::debug!(%error, reason, "cannot write an Event");
                }
                false
            }
        }
    }

    /// Sends the Events earlier passes could not write, oldest first.
    pub(super) async fn retry_events(&self, tenant: &Tenant) {
        let pending = self.memo(tenant, |m| std::mem::take(&mut m.pending_events));
        let mut still = Vec::new();
        for event in pending {
            if !still.is_empty() || !self.send_event(&event).await {
                still.push(event);
            }
        }
        self.memo(tenant, |m| {
            m.pending_events.splice(0..0, still).for_each(drop)
        });
    }

    pub(super) fn events_behind(&self, tenant: &Tenant) -> bool {
        self.memo(tenant, |m| {
            m.transitions_behind || !m.pending_events.is_empty()
        })
    }

    /// A Warning Event for one distinct cause (`reason` and `key`), sent once per process
    /// (a failed send is retried with the other pending Events).
    pub async fn warn_once(
        &self,
        tenant: &Tenant,
        seq: u64,
        reason: &str,
        key: &str,
        message: &str,
    ) {
        let cause = format!("{reason}/{key}");
        if !self.memo(tenant, |m| m.warnings_sent.insert(cause.clone())) {
            return;
        }
        let name = events::phase_event_name(tenant, self.chain(), seq, Utc::now(), &cause);
        self.emit_event(tenant, name, EventType::Warning, reason, message)
            .await;
    }

    /// Creates the Event of every journal record not yet mirrored (normally just the last;
    /// more after a failed mirror). Deterministic names make this idempotent. Only a
    /// journal read can fail it; a failed Event write is left for a later pass.
    pub(super) async fn mirror_events(
        &self,
        tenant: &Tenant,
        tail: Option<&Record>,
    ) -> Result<(), Error> {
        let Some(tail) = tail else { return Ok(()) };
        let mirrored = self.memo(tenant, |m| m.mirrored);
        if mirrored >= tail.seq {
            return Ok(());
        }
        // Status is patched after the Events were sent, so a status at sequence N means
        // Events up to N exist, unless this process saw an Event write fail: after a
        // restart this saves one create (and its write) per tenant. (An Event that failed
        // just before a restart is not written again.)
        let behind = self.memo(tenant, |m| m.transitions_behind);
        let from_status = tenant
            .status
            .as_ref()
            .and_then(|s| s.journal.as_ref())
            .filter(|j| !behind && j.chain.as_deref() == self.chain())
            .map_or(0, |j| j.sequence);
        if from_status >= tail.seq {
            self.memo(tenant, |m| m.mirrored = tail.seq);
            return Ok(());
        }
        let first = mirrored.max(from_status).saturating_add(1);
        // Normally only the transition just journaled is new, and the pass holds it.
        let records: Vec<Record> = if first == tail.seq {
            vec![tail.clone()]
        } else {
            let uid = tail.uid.clone();
            self.blocking(move |j| {
                j.history(&uid)
                    .filter(|r| r.as_ref().map_or(true, |r| r.seq >= first))
                    .collect()
            })
            .await?
        };
        for record in records {
            let type_ = if record.to.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let name = events::transition_event_name(tenant, record.seq, self.chain());
            // At the time of the transition, also when mirrored late: the Events then sort
            // by time as they do by name.
            let event = self.event_at(
                tenant,
                name,
                type_,
                transition_reason(&record),
                &record.message,
                record.time,
            );
            if !self.send_event(&event).await {
                self.memo(tenant, |m| m.transitions_behind = true);
                return Ok(());
            }
            self.memo(tenant, |m| m.mirrored = record.seq);
        }
        self.memo(tenant, |m| m.transitions_behind = false);
        Ok(())
    }

    pub(super) async fn mirror_status(
        &self,
        tenant: &Tenant,
        tail: Option<&Record>,
        obs: &Observation,
    ) -> Result<(), Error> {
        let tail = tail.map(|r| status::JournalTail {
            phase: r.to,
            sequence: r.seq,
            hash: r.hash.to_hex(),
            message: r.message.clone(),
            chain: self.chain().map(str::to_string),
        });
        let desired = status::desired_status(
            tail.as_ref(),
            &namespace_for(&tenant.name_any()),
            tenant.metadata.generation.unwrap_or(0),
            obs,
            tenant.status.as_ref(),
            Utc::now(),
        );
        if tenant.status.as_ref() == Some(&desired) {
            return Ok(());
        }
        let version = tenant.resource_version();
        let already_patched = self.memo(tenant, |m| {
            m.status_patched_from
                .as_ref()
                .is_some_and(|patched| Some(&patched.0) == version.as_ref() && patched.1 == desired)
        });
        if already_patched {
            return Ok(());
        }
        let api: Api<Lean<Tenant>> = Api::all(self.client.clone());
        let mut status = serde_json::to_value(&desired).map_err(Error::Serialize)?;
        let current = serde_json::to_value(&tenant.status).map_err(Error::Serialize)?;
        null_what_is_gone(&mut status, &current);
        let body = serde_json::json!({ "status": status });
        let patch = Patch::Merge(&body);
        let params = PatchParams::default();
        let name = tenant.name_any();
        self.metrics.count_write("patch", "tenants/status");
        let flight = self.own_writes.writing::<Tenant>(None, &name);
        let written = apply::retry(|| api.patch_status(&name, &params, &patch))
            .await
            .map(Lean::into_inner);
        self.note_tenant_write(tenant, flight, written.as_ref().ok());
        written.map_err(Error::Kube)?;
        self.memo(tenant, |m| {
            m.status_patched_from = version.map(|from| Box::new((from, desired)));
        });
        Ok(())
    }

    /// After the journal was replaced, tells each tenant's owner once, on the Tenant, where
    /// the history before the replacement is kept.
    pub(super) async fn tell_of_recovery(&self, tenant: &Tenant) -> Result<(), Error> {
        let Some(mark) = &self.recovery else {
            return Ok(());
        };
        if self.memo(tenant, |m| m.told_of_recovery) {
            return Ok(());
        }
        let message = format!(
            "The operator's journal was damaged ({}); it was moved to {} and kept, and a new \
             journal was started at {}. This tenant's earlier history is in the moved journal.",
            mark.reason,
            mark.moved_to,
            mark.at.to_rfc3339()
        );
        let name = events::phase_event_name(
            tenant,
            self.chain(),
            0,
            mark.at,
            &format!("{JOURNAL_RECOVERED}/{}", mark.moved_to),
        );
        // Sent or queued for a retry: either way, told.
        self.emit_event(
            tenant,
            name,
            EventType::Warning,
            JOURNAL_RECOVERED,
            &message,
        )
        .await;
        self.memo(tenant, |m| m.told_of_recovery = true);
        Ok(())
    }

    /// Remembers the write this pass could not make (for status and the machine) or that
    /// every write went through, and tells the tenant's owner once per distinct cause.
    pub(super) async fn record_write_outcome(
        &self,
        tenant: &Tenant,
        seq: u64,
        applied: &Result<(), Error>,
    ) {
        let failure = match applied {
            // A conflict is someone else's write meanwhile: the retry settles it.
            Err(Error::Write { source, .. }) if source_code(source) == Some(409) => return,
            Err(Error::Write { object, source }) => {
                Some(failures::WriteFailure::new(object.clone(), source))
            }
            Err(_) => return,
            Ok(()) => None,
        };
        self.memo(tenant, |m| m.write_failure = failure.clone());
        if let Some(failure) = failure {
            let reason = failure.condition_reason();
            let key = format!("{}/{}", failure.object, failure.message);
            self.warn_once(tenant, seq, reason, &key, &failure.describe())
                .await;
        }
    }
}

/// The reason of a transition's Event: its new phase, or what caused it where the phase
/// alone would not tell (a name Auth already knew fails the tenant).
fn transition_reason(record: &Record) -> &'static str {
    match record.input.trigger {
        neurallog_machines::Trigger::RegistrationExists => super::registration::REGISTRATION_EXISTS,
        neurallog_machines::Trigger::ResumeRequested => "Resumed",
        _ => record.to.as_str(),
    }
}

/// Sets to null, in the merge patch `desired`, every field `current` has and `desired`
/// leaves out (`status.backup` once backups are turned off): a merge patch keeps what it
/// does not mention, and a status that never loses the field would differ from the desired
/// one on every pass, and be patched on every pass.
fn null_what_is_gone(desired: &mut serde_json::Value, current: &serde_json::Value) {
    let (Some(desired), Some(current)) = (desired.as_object_mut(), current.as_object()) else {
        return;
    };
    for (key, was) in current {
        match desired.get_mut(key) {
            Some(now) => null_what_is_gone(now, was),
            None => {
                desired.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::null_what_is_gone;
    use serde_json::json;

    #[test]
    fn a_field_the_status_loses_is_nulled_in_the_patch_and_nothing_else() {
        let current = json!({
            "phase": "Running",
            "backup": {"lastSuccessfulTime": "2026-11-30T03:00:07Z"},
            "conditions": [{"type": "Ready"}],
        });
        let mut gone = json!({"phase": "Running", "conditions": []});
        null_what_is_gone(&mut gone, &current);
        assert_eq!(
            gone,
            json!({"phase": "Running", "backup": null, "conditions": []})
        );
        // A new CronJob without a success yet: the time goes, the object stays.
        let mut emptied = json!({"phase": "Running", "backup": {}, "conditions": []});
        null_what_is_gone(&mut emptied, &current);
        assert_eq!(emptied["backup"], json!({"lastSuccessfulTime": null}));
        let mut same = current.clone();
        null_what_is_gone(&mut same, &current);
        assert_eq!(same, current);
    }
}
