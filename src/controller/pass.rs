//! One reconcile pass: observe -> derive the input -> transition -> journal -> apply ->
//! mirror, and what the pass asks of the controller next (requeue, backoff).

use super::apply::Applier;
use super::input::{TenantFacts, derive_input};
use super::observe::Wanted;
use super::pause;
use super::registration;
use super::{Context, Error};
use super::{
    EVENT_RETRY, FAILED_RECHECK, JOURNAL_UNWRITABLE, NEXT_TRANSITION_DELAY, STALLED_RECHECK,
};
use crate::crd::Tenant;
use crate::journal::{NewRecord, Record, record_time, spec_digest};
use crate::metrics::ResultLabel;
use chrono::Utc;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use neurallog_machines::{Phase, Trigger, step};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, info, info_span, warn};

impl Context {
    pub(super) async fn append(
        &self,
        tenant: &Tenant,
        last: Option<&Record>,
        input: neurallog_machines::Input,
    ) -> Result<Option<Record>, Error> {
        let phase = last.map_or(Phase::New, |r| r.to);
        let Some(transition) = step(phase, &input) else {
            return Ok(None);
        };
        let spec = serde_json::to_value(&tenant.spec).map_err(Error::Serialize)?;
        let clock = Utc::now();
        let time = record_time(clock, last);
        if time > clock {
            warn!(
                behind_ms = (time - clock).num_milliseconds(),
                "the clock is behind this tenant's last journal record (stepped back?): recording that record's time again"
            );
        }
        let entry = NewRecord::from_transition(
            tenant.name_any(),
            tenant.uid().ok_or(Error::MissingUid)?,
            last.map_or(1, |r| r.seq + 1),
            time,
            tenant.metadata.generation.unwrap_or(0),
            input,
            transition,
            spec_digest(&spec),
        );
        let started = Instant::now();
        let (record, in_storage) = match self.journal.append_if_open(entry).await {
            Ok(appended) => (appended.map_err(Error::Journal)?, started.elapsed()),
            Err(entry) => {
                self.blocking(move |j| {
                    let started = Instant::now();
                    j.append(entry).map(|record| (record, started.elapsed()))
                })
                .await?
            }
        };
        self.metrics
            .journal_append
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .journal_storage
            .observe(in_storage.as_secs_f64());
        info!(seq = record.seq, from = %record.from, to = %record.to, "journaled transition");
        Ok(Some(record))
    }

    pub(super) fn facts(&self, tenant: &Tenant, tail: Option<&Record>) -> TenantFacts {
        TenantFacts {
            generation: tenant.metadata.generation.unwrap_or(0),
            deleting: tenant.metadata.deletion_timestamp.is_some(),
            paused: pause::is_paused(tenant),
            journaled_generation: tail.map(|r| r.generation),
            phase_since: tail.map(|r| r.time),
            now: Utc::now(),
            progress_deadline: self.progress_deadline,
            stalled_with: tail.filter(|r| r.to == Phase::Stalled).map(|r| {
                (
                    r.input.redis.unwrap_or_default(),
                    r.input.server.unwrap_or_default(),
                )
            }),
        }
    }

    pub(super) fn count_outcome(&self, record: &Record) {
        match record.to {
            Phase::Running if record.from == Phase::ProvisioningServer => {
                self.metrics
                    .tenant_creation
                    .get_or_create(&ResultLabel {
                        result: "success".into(),
                    })
                    .inc();
            }
            Phase::Failed => {
                self.metrics
                    .tenant_creation
                    .get_or_create(&ResultLabel {
                        result: "failure".into(),
                    })
                    .inc();
            }
            Phase::Deleted => {
                self.metrics.tenant_deletion.inc();
            }
            _ => {}
        }
    }
}

/// One reconcile pass for one Tenant.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.caches_synced.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let span = info_span!(
        "reconcile",
        tenant = %tenant.name_any(),
        uid = %tenant.uid().unwrap_or_default(),
        generation = tenant.metadata.generation.unwrap_or(0),
    );
    let result = reconcile_tenant(tenant.clone(), ctx.clone())
        .instrument(span)
        .await;
    if let Err(error) = &result
        && error.reason() == JOURNAL_UNWRITABLE
    {
        report_unwritable_journal(&tenant, &ctx, error).await;
    }
    result
}

/// Tells the tenant's owner, on the Tenant itself, that its phase changes are held: the
/// journal (the truth for phases) cannot be written. One Event per distinct error.
async fn report_unwritable_journal(tenant: &Tenant, ctx: &Context, error: &Error) {
    let message = format!(
        "Phase changes are held until the operator's journal can be written again: {error}"
    );
    let seq = ctx.memo(tenant, |m| m.mirrored);
    ctx.warn_once(tenant, seq, JOURNAL_UNWRITABLE, &message, &message)
        .await;
}

async fn reconcile_tenant(mut tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let uid = tenant.uid().ok_or(Error::MissingUid)?;
    let mut tail = match ctx.journal.cached_last(&uid) {
        Some(tail) => tail,
        None => {
            let journal_uid = uid.clone();
            ctx.blocking(move |j| j.last(&journal_uid)).await?
        }
    };
    ctx.memo(&tenant, |m| m.changed_while_writing = false);
    ctx.tell_of_recovery(&tenant).await?;
    ctx.retry_events(&tenant).await;

    ctx.ownership(&tenant, &uid, tail.as_ref()).await?;

    let wanted = Wanted::of(&tenant, &ctx.settings);
    let mut obs = ctx.observe(&tenant, &wanted).await?;
    let mut transitions = 0;
    // Each step journals a transition (when one is due), mirrors its Events and applies
    // its phase's objects. When what it applied already allows the next transition (a new
    // tenant's namespace is Active, so Pending may provision Redis), the same pass takes
    // it: a pass more per step would cost a status write and a round through the queue.
    let (phase, applied, name_check_failed, obs) = loop {
        let facts = ctx.facts(&tenant, tail.as_ref());
        let journaled = tail.as_ref().map_or(Phase::New, |r| r.to);
        tracing::debug!(phase = %journaled, redis = ?obs.redis, server = ?obs.server, "pass");
        // Asked before the intent to register is journaled (see `registration`); a failure
        // holds the transition and fails the pass once status tells why.
        let mut name_check_failed = None;
        if !facts.deleting
            && registration::needs_name_check(journaled, obs.registration, obs.redis.is_ready())
        {
            let seq = tail.as_ref().map_or(0, |r| r.seq);
            match ctx.check_name(&tenant, seq).await {
                Ok(check) => obs.name_check = check,
                Err(error) => name_check_failed = Some(error),
            }
        }
        let input = derive_input(journaled, facts, &obs).map(|input| {
            if input.trigger == Trigger::PauseRequested {
                input.with_reason(pause::resume_command(&tenant.name_any()))
            } else {
                input
            }
        });
        let mut outputs = Vec::new();
        let mut transitioned = false;
        if let Some(input) = input
            && let Some(record) = ctx.append(&tenant, tail.as_ref(), input).await?
        {
            ctx.note_registration(&tenant, &record);
            ctx.count_outcome(&record);
            outputs.clone_from(&record.outputs);
            tail = Some(record);
            transitioned = true;
        }
        let phase = tail.as_ref().map_or(Phase::New, |r| r.to);
        // Before the step applies its phase's objects: their first events are read as
        // that phase's (see `triggers::first_rollout`).
        ctx.phases.note(&tenant.name_any(), Some(phase));
        // The transition's Event before the objects its phase creates: `kubectl describe`
        // then tells the story in causal order. Before the finalizer goes too: once the
        // Tenant is gone nothing reconciles it again.
        ctx.mirror_events(&tenant, tail.as_ref()).await?;

        let seq = tail.as_ref().map_or(0, |r| r.seq);
        let plan = neurallog_machines::plan(&outputs, phase);
        let applier = Applier::new(&ctx, &tenant, &obs, &wanted, seq);
        // Boxed: the applier's future is large, and held across the loop.
        let applied = Box::pin(applier.ensure(&plan)).await;
        let written = applier.written_tenant();
        ctx.record_write_outcome(&tenant, seq, &applied).await;
        if phase == Phase::Deleted {
            applied?;
            ctx.forget(&tenant);
            ctx.metrics.set_phase(&uid, None);
            return Ok(Action::await_change());
        }
        // Observed again: the caches now show what this step created, so the status says
        // "0/1 replicas ready" at once instead of "not created yet" and a second patch later.
        obs = ctx.observe(&tenant, &wanted).await?;
        transitions += 1;
        let next_is_due = || next_transition_is_due(phase, ctx.facts(&tenant, tail.as_ref()), &obs);
        // The next step's writes of the Tenant are guarded by the version this one's
        // returned; a spec changed meanwhile is another pass's, with its own rendering.
        let same_spec = written
            .as_ref()
            .is_none_or(|w| w.metadata.generation == tenant.metadata.generation);
        if transitioned
            && applied.is_ok()
            && name_check_failed.is_none()
            && same_spec
            && transitions < ctx.transitions_per_pass
            && next_is_due()
        {
            if let Some(written) = written {
                tenant = Arc::new(written);
            }
            continue;
        }
        break (phase, applied, name_check_failed, obs);
    };
    ctx.mirror_status(&tenant, tail.as_ref(), &obs).await?;
    ctx.metrics.set_phase(&uid, Some(phase.as_str()));
    ctx.metrics
        .observe_reconcile(phase.as_str(), started.elapsed());
    // Events parked while this pass wrote, that were not its own writes' (see `own_writes`).
    let changed_meanwhile = ctx.memo(&tenant, |m| std::mem::take(&mut m.changed_while_writing));
    if phase == Phase::Stalled
        && let Err(error) = &applied
        && error.is_refused_write()
    {
        tracing::debug!(%error, "still refused; retrying on the next change or recheck");
        // Refused for what it holds: retrying on a backoff would only repeat the refusal.
        // A change of the Tenant or its objects brings a pass; so does the slow recheck.
        return Ok(Action::requeue(if changed_meanwhile {
            NEXT_TRANSITION_DELAY
        } else {
            STALLED_RECHECK
        }));
    }
    applied?;
    if let Some(error) = name_check_failed {
        return Err(Error::Auth(error));
    }
    ctx.memo(&tenant, |m| m.failures = 0);
    // What this pass did (an Auth registration, objects that became ready meanwhile) may
    // already allow the next transition, and with an unchanged status nothing else would
    // start the pass that takes it.
    let facts = ctx.facts(&tenant, tail.as_ref());
    if changed_meanwhile || next_transition_is_due(phase, facts, &obs) {
        return Ok(Action::requeue(NEXT_TRANSITION_DELAY));
    }
    let mut next = match phase {
        // The namespace controller can take a while; its deletion also triggers a pass.
        Phase::Deleting => Duration::from_secs(5),
        // The conflicting namespace may go away, and it carries none of our labels: no
        // watch event would tell.
        Phase::Failed => FAILED_RECHECK,
        Phase::Stalled => STALLED_RECHECK,
        _ => Duration::from_secs(600),
    };
    if phase.awaits_progress()
        && let Some(deadline) = facts.deadline()
    {
        let left = (deadline - facts.now).to_std().unwrap_or_default();
        next = next.min(left + Duration::from_secs(1));
    }
    if let Some(due) = obs.problem_due {
        let left = (due - Utc::now()).to_std().unwrap_or_default();
        next = next.min(left + Duration::from_millis(100));
    }
    if ctx.events_behind(&tenant) {
        next = next.min(EVENT_RETRY);
    }
    tracing::debug!(?next, %phase, "next pass");
    Ok(Action::requeue(next))
}

/// Whether what a pass saw already allows the next transition: the machine takes one, or
/// Redis is ready and only the Auth name check, which a step asks before it derives its
/// input, stands before the intent to register (nothing else would start that pass when
/// Redis was ready before the phase began, as after a takeover).
fn next_transition_is_due(
    phase: Phase,
    facts: TenantFacts,
    obs: &super::observation::Observation,
) -> bool {
    let awaits_name_check = phase == Phase::ProvisioningRedis
        && !facts.deleting
        && !facts.paused
        && registration::needs_name_check(phase, obs.registration, obs.redis.is_ready());
    awaits_name_check
        || derive_input(phase, facts, obs).is_some_and(|input| step(phase, &input).is_some())
}

/// Failed passes retry with per-tenant exponential backoff and jitter; one stuck tenant
/// never delays another.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_error(error.reason());
    let failures = ctx.memo(&tenant, |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    let base = match error {
        Error::Auth(e) => e.retry_after().unwrap_or(Duration::from_secs(2)),
        _ => Duration::from_millis(500),
    };
    let backoff = base
        .saturating_mul(1u32 << failures.min(6))
        .min(Duration::from_secs(120));
    let jitter = Duration::from_millis(rand::random::<u64>() % 500);
    warn!(tenant = %tenant.name_any(), reason = error.reason(), %error, retry_in = ?backoff, "reconcile failed");
    Action::requeue(backoff + jitter)
}
