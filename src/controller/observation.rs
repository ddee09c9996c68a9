//! What the operator saw of one tenant, reduced to the facts the machine and the status
//! need. Built from the watch caches by `Observer`; everything here is pure.

use super::failures::{PodProblem, WriteFailure};
use super::registration::{NameCheck, Ownership};
use super::storage::StorageState;
use crate::crd::ServerScale;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;

/// The tenant namespace as observed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum NamespaceState {
    #[default]
    Missing,
    /// Ours (labelled with this Tenant's uid).
    Ours { active: bool },
    /// Someone else's, or a previous tenant's of the same name that is still terminating.
    Foreign { terminating: bool },
}

/// A workload (Redis StatefulSet or server Deployment) as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WorkloadState {
    pub exists: bool,
    pub ready: i32,
    pub desired: i32,
    /// The controller has seen the current object generation, the object is what the
    /// operator renders now, and every replica runs the current template and is ready.
    pub current: bool,
    /// Autoscaled: the fewest ready replicas that count as ready (`desired` is then the
    /// autoscaler's current count, which it may raise at any time).
    pub autoscaled_min: Option<i32>,
    /// Autoscaled and the controller has not yet seen the object's generation: the
    /// autoscaler (or the operator) just changed it, and the status is from before. Not
    /// ready yet, and not lost either.
    pub settling: bool,
}

impl WorkloadState {
    pub fn is_ready(&self) -> bool {
        self.exists && self.current && self.ready >= self.required()
    }

    /// Whether a pass should treat the workload as lost: not ready, and not merely between
    /// an autoscaler's change and the controller's answer to it.
    pub fn is_lost(&self) -> bool {
        !self.is_ready() && !self.settling
    }

    /// Ready replicas needed: every one, or an autoscaled workload's minimum.
    pub fn required(&self) -> i32 {
        self.autoscaled_min.unwrap_or(self.desired)
    }

    pub fn readiness(&self) -> neurallog_machines::Readiness {
        neurallog_machines::Readiness::new(self.ready, self.desired)
    }
}

#[cfg(test)]
impl WorkloadState {
    /// `n` replicas, all ready and current: a test fixture.
    pub fn all_ready(n: i32) -> Self {
        WorkloadState {
            exists: true,
            ready: n,
            desired: n,
            current: true,
            ..WorkloadState::default()
        }
    }
}

/// Auth registration as the operator last learned it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AuthState {
    #[default]
    Unknown,
    Registered,
    Deregistered,
    /// The last call failed: (stable reason, message).
    Failed {
        reason: String,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observation {
    pub namespace: NamespaceState,
    pub redis: WorkloadState,
    pub server: WorkloadState,
    pub auth: AuthState,
    /// Whose the Auth registration of the tenant's name is, as the journal tells.
    pub registration: Ownership,
    /// What Auth said of the name this pass, when the pass had to ask.
    pub name_check: NameCheck,
    /// Why the spec cannot be realised, if it cannot (one line each).
    pub problems: Vec<String>,
    /// Why a Redis pod does not run, while Redis is not ready.
    pub redis_problem: Option<PodProblem>,
    /// Why a server pod does not run, while the server is not ready.
    pub server_problem: Option<PodProblem>,
    /// The write of the operator's last pass that failed, until a pass writes all it needs.
    pub write_failure: Option<WriteFailure>,
    /// When a pod that is unschedulable, but only for a moment yet, would count as a problem.
    pub problem_due: Option<chrono::DateTime<chrono::Utc>>,
    /// Where the Redis volumes stand against `spec.redis.storage` (see `storage`).
    pub storage: StorageState,
    /// The Redis backups as their CronJob reports them, while the spec asks for backups.
    pub backup: Option<crate::crd::BackupStatus>,
}

/// What keeps the tenant from progressing, as the status and the machine see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub reason: String,
    pub message: String,
    /// It will not pass without a change (of the spec, or of the cluster's policy).
    pub refused: bool,
}

impl Observation {
    /// The first thing that keeps the tenant from progressing: a failed write, then the
    /// Redis volume growing (or unable to), then a Redis pod, then a server pod.
    pub fn blocker(&self) -> Option<Blocker> {
        if let Some(failure) = &self.write_failure {
            return Some(Blocker {
                reason: failure.condition_reason().into(),
                message: failure.describe(),
                refused: failure.refused,
            });
        }
        if let Some((reason, message, refused)) = self.storage.blocker() {
            return Some(Blocker {
                reason: reason.into(),
                message,
                refused,
            });
        }
        let pod = |component: &str, problem: &PodProblem| Blocker {
            reason: problem.reason.clone(),
            message: format!("{component} is not ready: {}", problem.message),
            refused: false,
        };
        match (&self.redis_problem, &self.server_problem) {
            (Some(p), _) if !self.redis.is_ready() => Some(pod("Redis", p)),
            (_, Some(p)) if !self.server.is_ready() => Some(pod("Server", p)),
            _ => None,
        }
    }
}

pub fn namespace_state(ns: Option<&Namespace>, owned: bool) -> NamespaceState {
    let Some(ns) = ns else {
        return NamespaceState::Missing;
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating");
    if owned {
        NamespaceState::Ours {
            active: !terminating,
        }
    } else {
        NamespaceState::Foreign { terminating }
    }
}

/// `matches_desired`: the observed object holds what the operator would apply now.
pub fn statefulset_state(
    sts: Option<&StatefulSet>,
    desired: i32,
    matches_desired: bool,
) -> WorkloadState {
    let Some(sts) = sts else {
        return WorkloadState {
            desired,
            ..WorkloadState::default()
        };
    };
    let status = sts.status.clone().unwrap_or_default();
    let generation_seen = status.observed_generation >= sts.metadata.generation;
    let revision_rolled =
        status.update_revision.is_none() || status.update_revision == status.current_revision;
    let ready = status.ready_replicas.unwrap_or(0);
    WorkloadState {
        exists: true,
        ready,
        desired,
        current: matches_desired
            && generation_seen
            && revision_rolled
            && status.updated_replicas.unwrap_or(0) >= desired
            && status.replicas <= desired,
        ..WorkloadState::default()
    }
}

pub fn deployment_state(
    deployment: Option<&Deployment>,
    scale: ServerScale,
    matches_desired: bool,
) -> WorkloadState {
    let (desired, autoscaled_min) = match scale {
        ServerScale::Fixed(n) => (n, None),
        // The autoscaler's current count, which the Deployment holds.
        ServerScale::Autoscaled { min, .. } => (
            deployment
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.replicas)
                .unwrap_or(min),
            Some(min),
        ),
    };
    let Some(deployment) = deployment else {
        return WorkloadState {
            desired,
            autoscaled_min,
            ..WorkloadState::default()
        };
    };
    let status = deployment.status.clone().unwrap_or_default();
    let generation_seen = status.observed_generation >= deployment.metadata.generation;
    let ready = status.ready_replicas.unwrap_or(0);
    let required = autoscaled_min.unwrap_or(desired);
    WorkloadState {
        exists: true,
        ready,
        desired,
        // Old pods still terminating count in `replicas`: the rollout is done when only
        // updated ones remain (an autoscaled one needs its minimum of them).
        current: matches_desired
            && generation_seen
            && status.updated_replicas.unwrap_or(0) >= required
            && status.replicas.unwrap_or(0) <= desired
            && status.available_replicas.unwrap_or(0) >= required,
        autoscaled_min,
        settling: autoscaled_min.is_some() && !generation_seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServerScale;
    use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i32,
        updated: i32,
        ready: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn a_deployment_is_ready_only_when_rolled_out_at_the_current_generation() {
        assert!(
            deployment_state(
                Some(&deployment(2, 2, 2, 2, 2)),
                ServerScale::Fixed(2),
                true
            )
            .is_ready()
        );
        assert!(
            !deployment_state(
                Some(&deployment(3, 2, 2, 2, 2)),
                ServerScale::Fixed(2),
                true
            )
            .is_ready(),
            "generation not observed"
        );
        assert!(
            !deployment_state(
                Some(&deployment(2, 2, 3, 1, 2)),
                ServerScale::Fixed(2),
                true
            )
            .is_ready(),
            "rollout in progress"
        );
        assert!(
            !deployment_state(
                Some(&deployment(2, 2, 2, 2, 1)),
                ServerScale::Fixed(2),
                true
            )
            .is_ready(),
            "a pod not ready"
        );
        assert!(
            !deployment_state(
                Some(&deployment(2, 2, 2, 2, 2)),
                ServerScale::Fixed(2),
                false
            )
            .is_ready(),
            "drifted from desired"
        );
        assert!(!deployment_state(None, ServerScale::Fixed(2), true).is_ready());
    }

    fn autoscaled(deployment: Deployment, spec_replicas: i32) -> WorkloadState {
        let mut deployment = deployment;
        deployment.spec = Some(k8s_openapi::api::apps::v1::DeploymentSpec {
            replicas: Some(spec_replicas),
            ..Default::default()
        });
        deployment_state(
            Some(&deployment),
            ServerScale::Autoscaled { min: 2, max: 5 },
            true,
        )
    }

    #[test]
    fn an_autoscaled_deployment_is_ready_with_its_minimum_and_settles_after_a_scale() {
        // The autoscaler raised the count to 4; 2 of them are ready: the minimum.
        let scaling_up = autoscaled(deployment(5, 5, 4, 4, 2), 4);
        assert!(scaling_up.is_ready());
        assert_eq!((scaling_up.ready, scaling_up.desired), (2, 4));
        // Just scaled, the controller has not answered yet: not ready, not lost.
        let just_scaled = autoscaled(deployment(6, 5, 4, 4, 4), 5);
        assert!(!just_scaled.is_ready());
        assert!(just_scaled.settling && !just_scaled.is_lost());
        // Below the minimum, with the generation seen: lost.
        let below_minimum = autoscaled(deployment(6, 6, 3, 3, 1), 3);
        assert!(below_minimum.is_lost());
        // A rollout (old pods beyond the count) is not done.
        assert!(!autoscaled(deployment(6, 6, 5, 3, 3), 3).is_ready());
    }

    #[test]
    fn a_statefulset_is_ready_when_its_update_revision_is_current() {
        let sts = |current: &str, update: &str, ready: i32| StatefulSet {
            metadata: ObjectMeta {
                generation: Some(1),
                ..ObjectMeta::default()
            },
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                updated_replicas: Some(1),
                ready_replicas: Some(ready),
                current_revision: Some(current.into()),
                update_revision: Some(update.into()),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        assert!(statefulset_state(Some(&sts("a", "a", 1)), 1, true).is_ready());
        assert!(!statefulset_state(Some(&sts("a", "b", 1)), 1, true).is_ready());
        assert!(!statefulset_state(Some(&sts("a", "a", 0)), 1, true).is_ready());
    }
}
