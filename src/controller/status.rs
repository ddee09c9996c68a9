//! The Tenant's status, recomputed from the journal tail and the observation on every
//! reconcile and patched only when it differs (the mirror compares, never assumes).

use super::failures::PodProblem;
use super::observation::{AuthState, NamespaceState, Observation, WorkloadState};
use super::registration::{CONDITION, Ownership, REGISTRATION_EXISTS, exists_message};
use crate::crd::{ComponentStatus, JournalPosition, TenantStatus};
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use neurallog_machines::Phase;

/// The last journaled transition, as far as status is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalTail {
    pub phase: Phase,
    pub sequence: u64,
    pub hash: String,
    pub message: String,
    pub chain: Option<String>,
}

/// The status the Tenant should have. `previous` lends its condition timestamps where a
/// condition did not change, so an unchanged tenant computes an identical status.
pub fn desired_status(
    tail: Option<&JournalTail>,
    namespace: &str,
    generation: i64,
    obs: &Observation,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) -> TenantStatus {
    let phase = tail.map_or(Phase::Pending, |t| match t.phase {
        Phase::New => Phase::Pending,
        p => p,
    });
    let conditions = conditions(phase, tail, obs, generation)
        .into_iter()
        .map(|c| keep_transition_time(c, previous, now))
        .collect();
    TenantStatus {
        phase: Some(phase.as_str().to_string()),
        namespace: Some(namespace.to_string()),
        redis_status: Some(component_status(
            "Redis",
            &obs.redis,
            phase,
            obs.redis_problem.as_ref(),
        )),
        server_status: Some(component_status(
            "Server",
            &obs.server,
            phase,
            obs.server_problem.as_ref(),
        )),
        observed_generation: Some(generation),
        conditions,
        journal: tail.map(|t| JournalPosition {
            sequence: t.sequence,
            hash: t.hash.clone(),
            chain: t.chain.clone(),
        }),
        backup: obs.backup.clone(),
    }
}

fn component_status(
    name: &str,
    state: &WorkloadState,
    phase: Phase,
    problem: Option<&PodProblem>,
) -> ComponentStatus {
    let (component_phase, message) = if let Some(problem) = problem.filter(|_| !state.is_ready()) {
        (
            "NotReady",
            format!(
                "{name} has {}/{} replicas ready: {}",
                state.ready, state.desired, problem.message
            ),
        )
    } else if !state.exists {
        match phase {
            Phase::Deleting | Phase::Deleted => ("Deleted", format!("{name} is deleted")),
            Phase::Failed => ("NotCreated", format!("{name} is not created")),
            _ => ("Pending", format!("{name} is not created yet")),
        }
    } else if state.is_ready() {
        ("Running", format!("{name} is running"))
    } else if state.current || is_first_rollout(phase) {
        // A workload being created passes through "rolling out" for a moment; showing
        // that step would cost every new tenant two more status writes and tell nothing.
        (
            "NotReady",
            format!(
                "{name} has {}/{} replicas ready",
                state.ready, state.desired
            ),
        )
    } else {
        (
            "Updating",
            format!(
                "{name} is rolling out ({}/{} replicas ready)",
                state.ready, state.desired
            ),
        )
    };
    ComponentStatus {
        phase: component_phase.into(),
        message,
        ready_replicas: state.ready,
        total_replicas: state.desired,
    }
}

pub(super) fn is_first_rollout(phase: Phase) -> bool {
    matches!(phase, Phase::ProvisioningRedis | Phase::ProvisioningServer)
}

/// kstatus conventions: Ready (normal-true), Reconciling and Stalled (abnormal-true).
fn conditions(
    phase: Phase,
    tail: Option<&JournalTail>,
    obs: &Observation,
    generation: i64,
) -> Vec<Condition> {
    let message = tail
        .map(|t| t.message.clone())
        .unwrap_or_else(|| "Tenant accepted".into());
    let auth_failure = match &obs.auth {
        AuthState::Failed { reason, message } => Some((reason.clone(), message.clone())),
        _ => None,
    };
    let blocker = obs.blocker();
    let ready = if phase == Phase::Running {
        condition("Ready", true, "Running", "Tenant is running", generation)
    } else {
        let why = blocker
            .as_ref()
            .filter(|_| phase != Phase::Paused)
            .map_or(message.as_str(), |b| b.message.as_str());
        condition("Ready", false, phase.as_str(), why, generation)
    };
    let reconciling = match (&auth_failure, &blocker, phase) {
        (_, _, Phase::Failed | Phase::Deleted | Phase::Stalled | Phase::Paused) => {
            condition("Reconciling", false, phase.as_str(), &message, generation)
        }
        (_, Some(blocker), _) => condition(
            "Reconciling",
            true,
            &blocker.reason,
            &blocker.message,
            generation,
        ),
        (Some((reason, auth_message)), None, _) => {
            condition("Reconciling", true, reason, auth_message, generation)
        }
        (None, None, Phase::Running) => condition(
            "Reconciling",
            false,
            "Running",
            "Tenant is running",
            generation,
        ),
        (None, None, _) => condition(
            "Reconciling",
            true,
            phase.as_str(),
            &reconciling_message(phase, obs, &message),
            generation,
        ),
    };
    let stalled = if phase == Phase::Failed {
        let reason = if !obs.problems.is_empty() {
            "InvalidSpec"
        } else if matches!(obs.namespace, NamespaceState::Foreign { .. }) {
            "NamespaceConflict"
        } else if obs.registration == Ownership::Foreign {
            REGISTRATION_EXISTS
        } else {
            "InvalidSpec"
        };
        condition("Stalled", true, reason, &message, generation)
    } else if phase == Phase::Stalled {
        let reason = match &blocker {
            Some(b) if b.refused => b.reason.as_str(),
            _ => "ProgressDeadlineExceeded",
        };
        condition("Stalled", true, reason, &message, generation)
    } else if let Some(refused) = blocker.as_ref().filter(|b| b.refused) {
        condition(
            "Stalled",
            true,
            &refused.reason,
            &refused.message,
            generation,
        )
    } else {
        condition(
            "Stalled",
            false,
            "Progressing",
            "Tenant is not stalled",
            generation,
        )
    };
    let mut conditions = vec![
        ready,
        reconciling,
        stalled,
        registration_condition(phase, obs, generation),
    ];
    // Only while paused: every other tenant's status stays as it was.
    if phase == Phase::Paused {
        conditions.push(condition("Paused", true, "Paused", &message, generation));
    }
    conditions
}

/// `AuthRegistered`: whether Auth knows the tenant's name by this tenant's own
/// registration, the one deleting the Tenant removes (see `registration`).
fn registration_condition(phase: Phase, obs: &Observation, generation: i64) -> Condition {
    let (status, reason, message) = match obs.registration {
        Ownership::Foreign => (false, REGISTRATION_EXISTS, exists_message()),
        Ownership::None if matches!(phase, Phase::Deleting | Phase::Deleted) => (
            false,
            "NotRegistered",
            "This Tenant never registered its name with the Auth service: deleting it deregisters nothing".into(),
        ),
        Ownership::None => (
            false,
            "NotRegistered",
            "Not registered with the Auth service yet: the name is checked and registered once Redis is ready".into(),
        ),
        Ownership::Ours if obs.auth == AuthState::Deregistered => (
            false,
            "Deregistered",
            "This Tenant's registration was removed from the Auth service".into(),
        ),
        Ownership::Ours
            if obs.auth == AuthState::Registered
                || matches!(phase, Phase::Running | Phase::Updating | Phase::Degraded) =>
        {
            (
                true,
                "Registered",
                "Registered with the Auth service by this Tenant; deleting the Tenant deregisters it".into(),
            )
        }
        Ownership::Ours => (
            false,
            "Registering",
            "The name was free and this Tenant's registration is journaled; waiting for the Auth service to confirm it".into(),
        ),
    };
    condition(CONDITION, status, reason, &message, generation)
}

fn reconciling_message(phase: Phase, obs: &Observation, journal_message: &str) -> String {
    match phase {
        Phase::ProvisioningServer if obs.auth != AuthState::Registered && obs.server.is_ready() => {
            "Waiting for the Auth service registration".into()
        }
        _ => journal_message.to_string(),
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, generation: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: Some(generation),
        last_transition_time: Time(Default::default()),
    }
}

fn keep_transition_time(
    mut c: Condition,
    previous: Option<&TenantStatus>,
    now: DateTime<Utc>,
) -> Condition {
    let before = previous.and_then(|p| p.conditions.iter().find(|old| old.type_ == c.type_));
    c.last_transition_time = match before {
        Some(old) if old.status == c.status => old.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default()),
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running_obs() -> Observation {
        Observation {
            namespace: NamespaceState::Ours { active: true },
            redis: WorkloadState::all_ready(1),
            server: WorkloadState::all_ready(1),
            auth: AuthState::Registered,
            problems: vec![],
            ..Observation::default()
        }
    }

    fn tail(phase: Phase) -> JournalTail {
        JournalTail {
            phase,
            sequence: 4,
            hash: "abc".into(),
            chain: None,
            message: neurallog_machines::message(
                phase,
                &neurallog_machines::Input::new(neurallog_machines::Trigger::AllReady, 1),
            ),
        }
    }

    fn cond<'a>(s: &'a TenantStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn a_running_tenant_looks_like_the_guide() {
        let s = desired_status(
            Some(&tail(Phase::Running)),
            "tenant-my-tenant",
            1,
            &running_obs(),
            None,
            Utc::now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.namespace.as_deref(), Some("tenant-my-tenant"));
        let redis = s.redis_status.clone().expect("redis");
        assert_eq!(
            (
                redis.phase.as_str(),
                redis.message.as_str(),
                redis.ready_replicas,
                redis.total_replicas
            ),
            ("Running", "Redis is running", 1, 1)
        );
        assert_eq!(
            s.server_status.clone().expect("server").message,
            "Server is running"
        );
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Reconciling").status, "False");
        assert_eq!(cond(&s, "Stalled").status, "False");
        assert_eq!(
            s.journal,
            Some(JournalPosition {
                sequence: 4,
                hash: "abc".into(),
                chain: None,
            })
        );
    }

    #[test]
    fn recomputing_an_unchanged_status_gives_the_same_value() {
        let first = desired_status(
            Some(&tail(Phase::Running)),
            "ns",
            1,
            &running_obs(),
            None,
            Utc::now(),
        );
        let later = Utc::now() + chrono::Duration::seconds(60);
        let second = desired_status(
            Some(&tail(Phase::Running)),
            "ns",
            1,
            &running_obs(),
            Some(&first),
            later,
        );
        assert_eq!(first, second);
    }

    #[test]
    fn auth_outages_show_as_reconciling_with_the_reason() {
        let mut obs = running_obs();
        obs.auth = AuthState::Failed {
            reason: "AuthUnavailable".into(),
            message: "connection refused".into(),
        };
        let s = desired_status(
            Some(&tail(Phase::ProvisioningServer)),
            "ns",
            1,
            &obs,
            None,
            Utc::now(),
        );
        let c = cond(&s, "Reconciling");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "AuthUnavailable")
        );
    }

    #[test]
    fn a_failed_tenant_is_stalled() {
        let mut obs = running_obs();
        obs.problems = vec!["spec.x: bad".into()];
        let s = desired_status(Some(&tail(Phase::Failed)), "ns", 2, &obs, None, Utc::now());
        assert_eq!(cond(&s, "Stalled").status, "True");
        assert_eq!(cond(&s, "Stalled").reason, "InvalidSpec");
        assert_eq!(cond(&s, "Ready").status, "False");
    }

    #[test]
    fn a_paused_tenant_says_so_and_how_to_resume() {
        let message = neurallog_machines::message(
            Phase::Paused,
            &neurallog_machines::Input::new(neurallog_machines::Trigger::PauseRequested, 1)
                .with_reason("kubectl annotate tenant acme neurallog.io/paused-"),
        );
        let paused = JournalTail {
            message,
            ..tail(Phase::Paused)
        };
        let s = desired_status(Some(&paused), "ns", 1, &running_obs(), None, Utc::now());
        assert_eq!(s.phase.as_deref(), Some("Paused"));
        let c = cond(&s, "Paused");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Paused"));
        assert!(
            c.message
                .contains("kubectl annotate tenant acme neurallog.io/paused-"),
            "{}",
            c.message
        );
        assert_eq!(cond(&s, "Reconciling").status, "False");
        assert_eq!(cond(&s, "Ready").reason, "Paused");
        let running = desired_status(
            Some(&tail(Phase::Running)),
            "ns",
            1,
            &running_obs(),
            None,
            Utc::now(),
        );
        assert!(
            running.conditions.iter().all(|c| c.type_ != "Paused"),
            "the condition shows only while paused"
        );
    }
}
