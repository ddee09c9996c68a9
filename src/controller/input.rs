//! From an observation to the machine's input: the one place that decides which fact
//! matters now. Pure, so that it can be tested on every phase.

use super::observation::{AuthState, NamespaceState, Observation};
use neurallog_machines::{Input, Phase, Trigger, accepts};

/// What the reconciler knows besides the observation.
#[derive(Clone, Copy, Debug)]
pub struct TenantFacts {
    pub generation: i64,
    pub deleting: bool,
    /// The generation recorded by the last journaled transition.
    pub journaled_generation: Option<i64>,
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
            _ => Some(input(Trigger::DeletionRequested)),
        };
    }
    if let Some(problem) = blocking_problem(obs) {
        return accepts(phase, Trigger::SpecInvalid)
            .then(|| input(Trigger::SpecInvalid).with_reason(problem));
    }
    let spec_changed = facts
        .journaled_generation
        .is_some_and(|g| facts.generation > g);
    let all_ready =
        obs.redis.is_ready() && obs.server.is_ready() && obs.auth == AuthState::Registered;
    let trigger = match phase {
        Phase::New => Some(Trigger::Observed),
        Phase::Failed => Some(Trigger::ProblemResolved),
        Phase::Pending => matches!(obs.namespace, NamespaceState::Ours { active: true })
            .then_some(Trigger::NamespaceReady),
        Phase::ProvisioningRedis => obs.redis.is_ready().then_some(Trigger::RedisReady),
        Phase::ProvisioningServer => all_ready.then_some(Trigger::AllReady),
        Phase::Running if spec_changed => Some(Trigger::SpecChanged),
        Phase::Running => {
            (!(obs.redis.is_ready() && obs.server.is_ready())).then_some(Trigger::ComponentLost)
        }
        Phase::Updating | Phase::Degraded if spec_changed => Some(Trigger::SpecChanged),
        Phase::Updating | Phase::Degraded => all_ready.then_some(Trigger::AllReady),
        Phase::Deleting | Phase::Deleted => None,
    }?;
    let mut derived = input(trigger);
    if trigger == Trigger::ComponentLost {
        derived = derived.with_reason(lost_components(obs));
    }
    Some(derived)
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
        }
    }

    fn facts() -> TenantFacts {
        TenantFacts {
            generation: 1,
            deleting: false,
            journaled_generation: Some(1),
        }
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
            Some(Trigger::RedisReady)
        );
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
    fn every_derived_input_is_accepted_by_the_machine() {
        let observations = [
            obs(),
            Observation {
                namespace: NamespaceState::Missing,
                ..obs()
            },
        ];
        for phase in Phase::ALL {
            for deleting in [false, true] {
                for o in &observations {
                    let f = TenantFacts {
                        deleting,
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
