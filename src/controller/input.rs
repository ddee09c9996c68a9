//! From an observation to the machine's input: the one place that decides which fact
//! matters now. Pure, so that it can be tested on every phase.

use super::observation::{AuthState, NamespaceState, Observation};
use super::registration::{NameCheck, Ownership, exists_message};
use chrono::{DateTime, Utc};
use neurallog_machines::{Input, Phase, Readiness, Trigger, accepts};
use std::time::Duration;

/// What the reconciler knows besides the observation.
#[derive(Clone, Copy, Debug)]
pub struct TenantFacts {
    pub generation: i64,
    pub deleting: bool,
    /// The Tenant carries `neurallog.io/paused: "true"` (see `pause`).
    pub paused: bool,
    /// The generation recorded by the last journaled transition.
    pub journaled_generation: Option<i64>,
    /// When the last journaled transition happened: the progress deadline runs from it.
    pub phase_since: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// How long a phase that waits for the cluster may go without progress.
    pub progress_deadline: Duration,
    /// Redis and server readiness when the tenant stalled (in `Stalled`).
    pub stalled_with: Option<(Readiness, Readiness)>,
}

impl TenantFacts {
    /// When the progress deadline of the current phase passes, if it has one.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        let deadline = chrono::Duration::from_std(self.progress_deadline).ok()?;
        self.phase_since.map(|since| since + deadline)
    }
}

/// The input to feed the machine in `phase`, or `None` when nothing calls for a transition.
pub fn derive_input(phase: Phase, facts: TenantFacts, obs: &Observation) -> Option<Input> {
    let input = |trigger| {
        Input::new(trigger, facts.generation)
            .with_readiness(obs.redis.readiness(), obs.server.readiness())
    };
    if facts.deleting {
        return match phase {
            Phase::Deleting if cleanup_done(obs) => Some(input(Trigger::CleanupDone)),
            Phase::Deleting | Phase::Deleted => None,
            // Deletion overrides a pause: the user's later, explicit intent (see README).
            _ => Some(input(Trigger::DeletionRequested)),
        };
    }
    // Before anything else the spec or the cluster could say: a paused tenant records
    // nothing but its resume, and a problem never keeps it from resuming.
    if facts.paused {
        return accepts(phase, Trigger::PauseRequested).then(|| input(Trigger::PauseRequested));
    }
    if phase == Phase::Paused {
        return Some(input(Trigger::ResumeRequested));
    }
    if let Some(problem) = blocking_problem(obs) {
        return accepts(phase, Trigger::SpecInvalid)
            .then(|| input(Trigger::SpecInvalid).with_reason(problem));
    }
    let spec_changed = facts
        .journaled_generation
        .is_some_and(|g| facts.generation > g);
    // A growing Redis volume is not done until its claims report the new capacity.
    let all_ready = obs.redis.is_ready()
        && obs.storage.is_settled()
        && obs.server.is_ready()
        && obs.auth == AuthState::Registered;
    let trigger: Option<Trigger> = match phase {
        Phase::New => Some(Trigger::Observed),
        // Failed because Auth knew the name first: resolved once the name is free.
        Phase::Failed
            if obs.registration == Ownership::Foreign && obs.name_check != NameCheck::Free =>
        {
            None
        }
        Phase::Failed => Some(Trigger::ProblemResolved),
        Phase::Pending => matches!(obs.namespace, NamespaceState::Ours { active: true })
            .then_some(Trigger::NamespaceReady),
        // Entering ProvisioningServer journals the intent to register the name (see
        // `registration`): only once Auth said the name is free, or it is already ours.
        Phase::ProvisioningRedis if obs.redis.is_ready() => {
            match (obs.registration, obs.name_check) {
                (Ownership::Ours, _) | (_, NameCheck::Free) => Some(Trigger::RedisReady),
                (_, NameCheck::Taken) => {
                    return Some(input(Trigger::RegistrationExists).with_reason(exists_message()));
                }
                (_, NameCheck::NotChecked) => None,
            }
        }
        Phase::ProvisioningRedis => None,
        Phase::ProvisioningServer => all_ready.then_some(Trigger::AllReady),
        Phase::Running if spec_changed => Some(Trigger::SpecChanged),
        Phase::Running => {
            (obs.redis.is_lost() || obs.server.is_lost()).then_some(Trigger::ComponentLost)
        }
        Phase::Updating | Phase::Degraded | Phase::Stalled if spec_changed => {
            Some(Trigger::SpecChanged)
        }
        Phase::Updating | Phase::Degraded => all_ready.then_some(Trigger::AllReady),
        Phase::Stalled if all_ready => Some(Trigger::AllReady),
        Phase::Stalled => resumed(facts, obs).then_some(Trigger::ProgressResumed),
        Phase::Deleting | Phase::Deleted | Phase::Paused => None,
    };
    let Some(trigger) = trigger else {
        return stall_reason(phase, facts, obs)
            .map(|reason| input(Trigger::ProgressStalled).with_reason(reason));
    };
    let mut derived = input(trigger);
    if trigger == Trigger::ComponentLost {
        let reason = match obs.blocker() {
            Some(blocker) => blocker.message,
            None => lost_components(obs),
        };
        derived = derived.with_reason(reason);
    }
    Some(derived)
}

/// Why a phase that waits for the cluster stalls now: a refused write at once, anything
/// else once the progress deadline has passed.
fn stall_reason(phase: Phase, facts: TenantFacts, obs: &Observation) -> Option<String> {
    if !phase.awaits_progress() {
        return None;
    }
    let blocker = obs.blocker();
    if let Some(blocker) = blocker.as_ref().filter(|b| b.refused) {
        return Some(blocker.message.clone());
    }
    if facts.deadline().is_none_or(|deadline| facts.now < deadline) {
        return None;
    }
    let waited = minutes_or_seconds(facts.progress_deadline);
    let why = match blocker {
        Some(blocker) => blocker.message,
        None => waiting_for(phase, obs),
    };
    Some(format!("no progress for {waited}: {why}"))
}

/// A stalled tenant resumes when more replicas are ready than when it stalled.
fn resumed(facts: TenantFacts, obs: &Observation) -> bool {
    facts.stalled_with.is_some_and(|(redis, server)| {
        obs.redis.ready > redis.ready || obs.server.ready > server.ready
    })
}

fn waiting_for(phase: Phase, obs: &Observation) -> String {
    if phase == Phase::Pending {
        return "the namespace is not active yet".into();
    }
    if phase == Phase::ProvisioningRedis && obs.redis.is_ready() {
        return match &obs.auth {
            AuthState::Failed { message, .. } => {
                format!(
                    "asking the Auth service whether the tenant's name is free fails: {message}"
                )
            }
            _ => "waiting for the Auth service to say whether the tenant's name is free".into(),
        };
    }
    let lost = lost_components(obs);
    if !lost.is_empty() {
        return lost;
    }
    match &obs.auth {
        AuthState::Failed { message, .. } => {
            format!("the Auth service registration fails: {message}")
        }
        _ => "waiting for the Auth service registration".into(),
    }
}

/// `10m`, `90s`: how a deadline reads in a message.
pub fn minutes_or_seconds(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(60) && secs > 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The first reason the tenant cannot be provisioned at all.
fn blocking_problem(obs: &Observation) -> Option<String> {
    if !obs.problems.is_empty() {
        return Some(obs.problems.join("; ").chars().take(1024).collect());
    }
    match obs.namespace {
        NamespaceState::Foreign { terminating: true } => Some(
            "the namespace of a previous tenant with this name is still terminating".into(),
        ),
        NamespaceState::Foreign { terminating: false } => Some(
            "the namespace already exists and is not managed by this tenant; the operator will not adopt or delete it".into(),
        ),
        _ => None,
    }
}

fn cleanup_done(obs: &Observation) -> bool {
    !matches!(obs.namespace, NamespaceState::Ours { .. }) && obs.auth == AuthState::Deregistered
}

fn lost_components(obs: &Observation) -> String {
    let mut lost = Vec::new();
    for (name, state) in [("redis", obs.redis), ("server", obs.server)] {
        if !state.is_ready() {
            lost.push(format!(
                "{name} has {}/{} replicas ready",
                state.ready, state.desired
            ));
        }
    }
    lost.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::observation::WorkloadState;

    fn obs() -> Observation {
        Observation {
            namespace: NamespaceState::Ours { active: true },
            redis: WorkloadState::all_ready(1),
            server: WorkloadState::all_ready(2),
            auth: AuthState::Registered,
            problems: Vec::new(),
            ..Observation::default()
        }
    }

    fn facts() -> TenantFacts {
        TenantFacts {
            generation: 1,
            deleting: false,
            paused: false,
            journaled_generation: Some(1),
            phase_since: Some(start()),
            now: start() + chrono::Duration::seconds(1),
            progress_deadline: Duration::from_secs(600),
            stalled_with: None,
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
    }

    fn at(secs: i64) -> TenantFacts {
        TenantFacts {
            now: start() + chrono::Duration::seconds(secs),
            ..facts()
        }
    }

    fn not_ready_obs() -> Observation {
        Observation {
            redis: WorkloadState {
                exists: true,
                ready: 0,
                desired: 1,
                current: true,
                ..WorkloadState::default()
            },
            ..obs()
        }
    }

    #[test]
    fn a_phase_without_progress_stalls_at_its_deadline_and_says_why() {
        let o = not_ready_obs();
        assert_eq!(derive_input(Phase::ProvisioningRedis, at(599), &o), None);
        let input = derive_input(Phase::ProvisioningRedis, at(600), &o).expect("a stall");
        assert_eq!(input.trigger, Trigger::ProgressStalled);
        assert_eq!(
            input.reason.as_deref(),
            Some("no progress for 10m: redis has 0/1 replicas ready")
        );
        let mut with_pod = o.clone();
        with_pod.redis_problem = Some(crate::controller::failures::PodProblem {
            reason: "Unschedulable".into(),
            message: "t-redis-0: Unschedulable: 0/3 nodes are available".into(),
        });
        assert_eq!(
            derive_input(Phase::ProvisioningRedis, at(700), &with_pod).and_then(|i| i.reason),
            Some("no progress for 10m: Redis is not ready: t-redis-0: Unschedulable: 0/3 nodes are available".into())
        );
        assert_eq!(
            derive_input(Phase::Running, at(7000), &obs()),
            None,
            "a running tenant has no deadline"
        );
    }

    #[test]
    fn a_refused_write_stalls_at_once() {
        let mut o = not_ready_obs();
        o.write_failure = Some(crate::controller::failures::WriteFailure {
            object: "Service t-server".into(),
            reason: "Invalid".into(),
            message: "bad".into(),
            refused: true,
        });
        let input = derive_input(Phase::ProvisioningServer, at(1), &o).expect("a stall");
        assert_eq!(input.trigger, Trigger::ProgressStalled);
        assert_eq!(
            input.reason.as_deref(),
            Some("the API server refused Service t-server: Invalid: bad")
        );
    }

    #[test]
    fn a_stalled_tenant_resumes_on_progress_only() {
        let stalled = TenantFacts {
            stalled_with: Some((Readiness::new(0, 1), Readiness::new(2, 2))),
            ..at(5000)
        };
        let o = not_ready_obs();
        assert_eq!(
            derive_input(Phase::Stalled, stalled, &o),
            None,
            "no progress, no stall loop"
        );
        let mut better = o.clone();
        better.redis.ready = 1;
        better.server.desired = 3;
        assert_eq!(
            trigger(Phase::Stalled, stalled, &better),
            Some(Trigger::ProgressResumed)
        );
        assert_eq!(
            trigger(Phase::Stalled, stalled, &obs()),
            Some(Trigger::AllReady)
        );
        let changed = TenantFacts {
            generation: 2,
            ..stalled
        };
        assert_eq!(
            trigger(Phase::Stalled, changed, &o),
            Some(Trigger::SpecChanged)
        );
    }

    fn trigger(phase: Phase, facts: TenantFacts, obs: &Observation) -> Option<Trigger> {
        derive_input(phase, facts, obs).map(|i| i.trigger)
    }

    #[test]
    fn the_happy_path_advances_one_phase_per_fact() {
        let mut o = obs();
        o.redis = WorkloadState::default();
        o.server = WorkloadState::default();
        o.auth = AuthState::Unknown;
        assert_eq!(trigger(Phase::New, facts(), &o), Some(Trigger::Observed));
        assert_eq!(
            trigger(Phase::Pending, facts(), &o),
            Some(Trigger::NamespaceReady)
        );
        assert_eq!(trigger(Phase::ProvisioningRedis, facts(), &o), None);
        o.redis = WorkloadState::all_ready(1);
        assert_eq!(
            trigger(Phase::ProvisioningRedis, facts(), &o),
            None,
            "Auth not yet asked whether the name is free"
        );
        o.name_check = NameCheck::Free;
        assert_eq!(
            trigger(Phase::ProvisioningRedis, facts(), &o),
            Some(Trigger::RedisReady)
        );
        o.registration = Ownership::Ours;
        o.name_check = NameCheck::NotChecked;
        o.server = WorkloadState::all_ready(2);
        assert_eq!(
            trigger(Phase::ProvisioningServer, facts(), &o),
            None,
            "not registered with Auth yet"
        );
        o.auth = AuthState::Registered;
        assert_eq!(
            trigger(Phase::ProvisioningServer, facts(), &o),
            Some(Trigger::AllReady)
        );
        assert_eq!(
            trigger(Phase::Running, facts(), &o),
            None,
            "steady state: no transition"
        );
    }

    #[test]
    fn a_running_tenant_notices_lost_readiness_and_spec_changes() {
        let mut o = obs();
        o.server.ready = 1;
        let input = derive_input(Phase::Running, facts(), &o).expect("input");
        assert_eq!(input.trigger, Trigger::ComponentLost);
        assert_eq!(
            input.reason.as_deref(),
            Some("server has 1/2 replicas ready")
        );
        let newer = TenantFacts {
            generation: 2,
            ..facts()
        };
        assert_eq!(
            trigger(Phase::Running, newer, &obs()),
            Some(Trigger::SpecChanged)
        );
        assert_eq!(
            trigger(Phase::Updating, facts(), &obs()),
            Some(Trigger::AllReady)
        );
        assert_eq!(
            trigger(Phase::Degraded, facts(), &obs()),
            Some(Trigger::AllReady)
        );
    }

    #[test]
    fn problems_fail_the_tenant_until_they_are_gone() {
        let mut o = obs();
        o.problems = vec!["spec.redis.config.maxmemory: use 256mb".into()];
        let input = derive_input(Phase::Running, facts(), &o).expect("input");
        assert_eq!(input.trigger, Trigger::SpecInvalid);
        assert!(
            input
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("maxmemory"))
        );
        assert_eq!(
            trigger(Phase::Failed, facts(), &o),
            None,
            "already failed: no new record"
        );
        assert_eq!(
            trigger(Phase::Failed, facts(), &obs()),
            Some(Trigger::ProblemResolved)
        );
    }

    #[test]
    fn a_name_auth_already_knows_fails_the_tenant_until_it_is_free() {
        let mut o = obs();
        o.server = WorkloadState::default();
        o.auth = AuthState::Unknown;
        o.name_check = NameCheck::Taken;
        let input = derive_input(Phase::ProvisioningRedis, facts(), &o).expect("input");
        assert_eq!(input.trigger, Trigger::RegistrationExists);
        assert!(
            input
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("did not register") && r.contains("another name")),
            "{input:?}"
        );
        // The tenant's own registration (its intent journaled) is never reported.
        o.registration = Ownership::Ours;
        assert_eq!(
            trigger(Phase::ProvisioningRedis, facts(), &o),
            Some(Trigger::RedisReady)
        );

        o.registration = Ownership::Foreign;
        assert_eq!(trigger(Phase::Failed, facts(), &o), None, "still taken");
        o.name_check = NameCheck::NotChecked;
        assert_eq!(
            trigger(Phase::Failed, facts(), &o),
            None,
            "not known to be free"
        );
        o.name_check = NameCheck::Free;
        assert_eq!(
            trigger(Phase::Failed, facts(), &o),
            Some(Trigger::ProblemResolved)
        );
    }

    #[test]
    fn a_foreign_namespace_is_a_problem() {
        let mut o = obs();
        o.namespace = NamespaceState::Foreign { terminating: false };
        let input = derive_input(Phase::Pending, facts(), &o).expect("input");
        assert_eq!(input.trigger, Trigger::SpecInvalid);
        assert!(
            input
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("not managed by this tenant"))
        );
    }

    #[test]
    fn deletion_waits_for_the_namespace_and_auth() {
        let deleting = TenantFacts {
            deleting: true,
            ..facts()
        };
        assert_eq!(
            trigger(Phase::Running, deleting, &obs()),
            Some(Trigger::DeletionRequested)
        );
        assert_eq!(trigger(Phase::Deleting, deleting, &obs()), None);
        let mut o = obs();
        o.namespace = NamespaceState::Missing;
        assert_eq!(
            trigger(Phase::Deleting, deleting, &o),
            None,
            "Auth not yet told"
        );
        o.auth = AuthState::Deregistered;
        assert_eq!(
            trigger(Phase::Deleting, deleting, &o),
            Some(Trigger::CleanupDone)
        );
        assert_eq!(trigger(Phase::Deleted, deleting, &o), None);
    }

    #[test]
    fn a_paused_tenant_records_the_pause_once_and_resumes_when_unannotated() {
        let paused = TenantFacts {
            paused: true,
            ..facts()
        };
        let mut lost = obs();
        lost.server.ready = 0;
        for phase in [Phase::New, Phase::Running, Phase::Stalled, Phase::Failed] {
            assert_eq!(
                trigger(phase, paused, &lost),
                Some(Trigger::PauseRequested),
                "{phase}"
            );
        }
        let changed_meanwhile = TenantFacts {
            generation: 2,
            ..paused
        };
        assert_eq!(
            derive_input(Phase::Paused, changed_meanwhile, &lost),
            None,
            "neither drift nor a spec change moves a paused tenant"
        );
        let mut invalid = obs();
        invalid.problems = vec!["spec.redis.config.maxmemory: use 256mb".into()];
        assert_eq!(
            trigger(Phase::Paused, facts(), &invalid),
            Some(Trigger::ResumeRequested),
            "a problem does not keep a tenant paused"
        );
        assert_eq!(
            trigger(Phase::Paused, at(7000), &lost),
            Some(Trigger::ResumeRequested)
        );
        let deleting = TenantFacts {
            deleting: true,
            ..paused
        };
        assert_eq!(
            trigger(Phase::Paused, deleting, &obs()),
            Some(Trigger::DeletionRequested),
            "deletion overrides a pause"
        );
        assert_eq!(trigger(Phase::Deleting, paused, &obs()), None);
    }

    #[test]
    fn every_derived_input_is_accepted_by_the_machine() {
        let observations = [
            obs(),
            Observation {
                namespace: NamespaceState::Missing,
                ..obs()
            },
            Observation {
                name_check: NameCheck::Taken,
                ..obs()
            },
            Observation {
                registration: Ownership::Foreign,
                name_check: NameCheck::Free,
                ..obs()
            },
        ];
        for phase in Phase::ALL {
            for (deleting, paused) in [(false, false), (true, false), (false, true), (true, true)] {
                for o in &observations {
                    let f = TenantFacts {
                        deleting,
                        paused,
                        ..facts()
                    };
                    if let Some(input) = derive_input(phase, f, o) {
                        assert!(
                            accepts(phase, input.trigger),
                            "{phase} would ignore {:?}",
                            input.trigger
                        );
                    }
                }
            }
        }
    }
}
