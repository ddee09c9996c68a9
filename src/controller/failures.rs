//! Why a tenant does not progress, in words a user can act on: a write the API server
//! refused, a pod that cannot be scheduled, pulled, configured or kept running. Pure
//! functions of what the API server returned or the caches hold.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// A write the API server refused or could not carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    /// `Service my-tenant-server`.
    pub object: String,
    /// The API server's reason (`Invalid`, `Forbidden`, `InternalError`), or `Unreachable`.
    pub reason: String,
    pub message: String,
    /// Refused for what the request holds (4xx other than conflicts and throttling): it
    /// fails the same way until the spec or the cluster's policy changes.
    pub refused: bool,
}

impl WriteFailure {
    pub fn new(object: String, error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let refused =
                    (400..500).contains(&status.code) && status.code != 409 && status.code != 429;
                let reason = if status.reason.is_empty() {
                    format!("HTTP{}", status.code)
                } else {
                    status.reason.clone()
                };
                WriteFailure {
                    object,
                    reason,
                    message: status.message.clone(),
                    refused,
                }
            }
            other => WriteFailure {
                object,
                reason: "Unreachable".into(),
                message: other.to_string(),
                refused: false,
            },
        }
    }

    /// The condition and Event reason: `WriteRefused` or `WriteFailed`.
    pub fn condition_reason(&self) -> &'static str {
        if self.refused {
            "WriteRefused"
        } else {
            "WriteFailed"
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "the API server {} {}: {}: {}",
            if self.refused {
                "refused"
            } else {
                "failed to write"
            },
            self.object,
            self.reason,
            self.message
        )
    }
}

/// Why one pod of a component is not running, named after the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    /// Kubernetes' own reason: `ImagePullBackOff`, `CrashLoopBackOff`, `Unschedulable`...
    pub reason: String,
    /// `<pod>: <reason>: <message>`.
    pub message: String,
}

/// Waiting reasons that mean a container will not start without a change.
const STUCK_WAITING: [&str; 9] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreCreateHookError",
];

/// How long a pod may be unschedulable before it counts as a problem: a scheduler's
/// verdict can change within seconds (a node coming up, a pod going away), and saying so
/// would be noise (and a status write).
pub const UNSCHEDULABLE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// How long a pod may wait for its claim to be bound before that counts as a problem.
/// Provisioning a volume is a step like creating the pod, and it is slow on some storage
/// and on a busy cluster (the controller manager's volume binder fell up to two minutes
/// behind at 1,000 new tenants): showing each such wait, and then its end, would cost
/// two status writes per tenant for nothing to do. A claim that does not bind within it
/// is reported like any unschedulable pod.
pub const VOLUME_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(120);

/// What the scheduler says of a pod whose claim is not bound yet (its volume binding
/// plugin's words; read verbatim from kube-scheduler 1.35 by the e2e test
/// `a_claim_that_never_binds_is_reported_after_the_volume_grace`).
const WAITING_FOR_CLAIM: &str = "unbound immediate PersistentVolumeClaims";

/// The first reason among `pods` (of one component) that a pod is not running, if any, as
/// of `now`; and when a pod that is unschedulable but within its grace would count.
pub fn pod_problem<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    now: DateTime<Utc>,
) -> (Option<PodProblem>, Option<DateTime<Utc>>) {
    let mut pods: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut due = None;
    for pod in pods {
        if let Some(until) = waiting_for_node_until(pod)
            && now < until
        {
            due = Some(until);
            continue;
        }
        if let Some(problem) = problem_of(pod) {
            return (Some(problem), None);
        }
    }
    (None, due)
}

/// What [`pod_problem`] reads from one pod: its problem, or since when it has waited for a
/// node. `None` for a pod it passes over (running fine, or being deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSignal {
    problem: Option<PodProblem>,
    waiting_for_node_until: Option<DateTime<Utc>>,
}

impl PodSignal {
    /// Until when the pod may wait for a node before [`pod_problem`] counts it.
    pub fn waiting_for_node_until(&self) -> Option<DateTime<Utc>> {
        self.waiting_for_node_until
    }
}

pub fn pod_signal(pod: &Pod) -> Option<PodSignal> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let signal = PodSignal {
        problem: problem_of(pod),
        waiting_for_node_until: waiting_for_node_until(pod),
    };
    (signal.problem.is_some() || signal.waiting_for_node_until.is_some()).then_some(signal)
}

/// The end of the grace of a pod that waits for a node: [`VOLUME_GRACE`] after it began
/// when it waits for its claim, [`UNSCHEDULABLE_GRACE`] otherwise.
fn waiting_for_node_until(pod: &Pod) -> Option<DateTime<Utc>> {
    let condition = pod.status.as_ref()?.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    let at = condition.last_transition_time.as_ref()?.0;
    let since = DateTime::from_timestamp(at.as_second(), 0)?;
    let waits_for_claim = condition
        .message
        .as_deref()
        .is_some_and(|m| m.contains(WAITING_FOR_CLAIM));
    Some(
        since
            + if waits_for_claim {
                VOLUME_GRACE
            } else {
                UNSCHEDULABLE_GRACE
            },
    )
}

fn problem_of(pod: &Pod) -> Option<PodProblem> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let problem = |reason: &str, message: &str| {
        let message = if message.is_empty() {
            format!("{name}: {reason}")
        } else {
            format!("{name}: {reason}: {}", message.trim())
        };
        Some(PodProblem {
            reason: reason.to_string(),
            message: message.chars().take(1024).collect(),
        })
    };
    if let Some(unschedulable) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return problem(
            "Unschedulable",
            unschedulable.message.as_deref().unwrap_or(""),
        );
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in containers {
        if let Some((reason, message)) = container_problem(container) {
            return problem(&reason, &message);
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        return problem(
            status.reason.as_deref().unwrap_or("Failed"),
            status.message.as_deref().unwrap_or(""),
        );
    }
    None
}

fn container_problem(container: &ContainerStatus) -> Option<(String, String)> {
    let state = container.state.as_ref()?;
    if let Some(waiting) = &state.waiting {
        let reason = waiting.reason.as_deref().unwrap_or("");
        if STUCK_WAITING.contains(&reason) {
            let mut message = waiting.message.clone().unwrap_or_default();
            if let Some(last) = container
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
            {
                message = format!(
                    "container {} exited with code {} ({}), restarted {} times{}{}",
                    container.name,
                    last.exit_code,
                    last.reason.as_deref().unwrap_or("Error"),
                    container.restart_count,
                    if message.is_empty() { "" } else { "; " },
                    message
                );
            }
            return Some((reason.to_string(), message));
        }
    }
    if let Some(terminated) = &state.terminated
        && terminated.exit_code != 0
        && !container.ready
    {
        return Some((
            terminated.reason.clone().unwrap_or_else(|| "Error".into()),
            format!(
                "container {} exited with code {}{}",
                container.name,
                terminated.exit_code,
                terminated
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ));
    }
    None
}

/// The Deployment controller's own verdict: pods it could not create (`ReplicaFailure`,
/// a quota exceeded, say) or `Progressing=False` with `ProgressDeadlineExceeded`.
pub fn deployment_problem(deployment: &Deployment) -> Option<PodProblem> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    let condition = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c.type_ == "Progressing" && c.status == "False")
        })?;
    let reason = condition
        .reason
        .clone()
        .unwrap_or_else(|| "NotProgressing".into());
    Some(PodProblem {
        message: format!(
            "Deployment {}: {reason}: {}",
            deployment.metadata.name.as_deref().unwrap_or(""),
            condition.message.as_deref().unwrap_or("")
        ),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "t-server-7d9c-abcde"},
            "status": status,
        }))
        .expect("a pod")
    }

    #[test]
    fn image_pull_failures_name_the_pod_and_the_kubelet_message() {
        let p = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}
        }]}));
        assert_eq!(
            pod_problem([&p], now()).0,
            Some(PodProblem {
                reason: "ImagePullBackOff".into(),
                message: "t-server-7d9c-abcde: ImagePullBackOff: Back-off pulling image \"x\""
                    .into(),
            })
        );
    }

    #[test]
    fn a_crash_loop_says_how_the_container_exited() {
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}
        }]}));
        let problem = pod_problem([&p], now()).0.expect("a problem");
        assert_eq!(problem.reason, "CrashLoopBackOff");
        assert!(
            problem.message.contains(
                "container server exited with code 3 (Error), restarted 4 times; back-off 40s"
            ),
            "{}",
            problem.message
        );
    }

    #[test]
    fn unschedulable_pods_carry_the_scheduler_message() {
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
            "lastTransitionTime": "2027-01-15T08:00:00Z"
        }]}));
        let since = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        let (none, due) = pod_problem([&p], since + chrono::Duration::seconds(3));
        assert_eq!(none, None, "within the grace a node may come");
        assert_eq!(due, Some(since + UNSCHEDULABLE_GRACE));
        assert_eq!(
            pod_problem([&p], since + UNSCHEDULABLE_GRACE)
                .0
                .map(|p| p.message),
            Some(
                "t-server-7d9c-abcde: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
                    .into()
            )
        );
    }

    #[test]
    fn a_pod_waiting_for_its_claim_counts_only_after_the_volume_grace() {
        let message = "0/3 nodes are available: pod has unbound immediate \
                       PersistentVolumeClaims. not found";
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": "2027-01-15T08:00:00Z"
        }]}));
        let since = DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        let (none, due) = pod_problem([&p], since + UNSCHEDULABLE_GRACE);
        assert_eq!(
            none, None,
            "a volume being provisioned is not a problem yet"
        );
        assert_eq!(due, Some(since + VOLUME_GRACE));
        assert!(VOLUME_GRACE > UNSCHEDULABLE_GRACE);
        assert_eq!(
            pod_problem([&p], since + VOLUME_GRACE).0,
            Some(PodProblem {
                reason: "Unschedulable".into(),
                message: format!("t-server-7d9c-abcde: Unschedulable: {message}"),
            })
        );
        let signal = pod_signal(&p).expect("a signal");
        assert_eq!(signal.waiting_for_node_until(), Some(since + VOLUME_GRACE));
    }

    #[test]
    fn starting_and_running_pods_are_no_problem() {
        let creating = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        let running = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "server", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}
        }]}));
        assert_eq!(pod_problem([&creating, &running], now()).0, None);
    }

    #[test]
    fn the_deployment_controller_says_when_it_cannot_create_pods() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "t-server"},
            "status": {"conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "pods \"t-server-1\" is forbidden: exceeded quota: tenant-quota"}
            ]}
        }))
        .expect("a deployment");
        let problem = deployment_problem(&deployment).expect("a problem");
        assert_eq!(problem.reason, "FailedCreate");
        assert!(
            problem.message.contains("exceeded quota"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn refused_writes_are_told_apart_from_failed_ones() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(
                kube::core::Status::failure("range is full", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        let refused = WriteFailure::new("Service s".into(), &api(422, "Invalid"));
        assert!(refused.refused);
        assert_eq!(refused.condition_reason(), "WriteRefused");
        let failed = WriteFailure::new("Service s".into(), &api(500, "InternalError"));
        assert!(!failed.refused);
        assert_eq!(
            failed.describe(),
            "the API server failed to write Service s: InternalError: range is full"
        );
        assert!(!WriteFailure::new("x".into(), &api(409, "Conflict")).refused);
    }
}
