//! Which watch events start a pass: those that change what a pass reads.
//!
//! Pods are watched only to tell why a component is not ready (`failures::pod_problem`);
//! every other change of a pod (created, scheduled, started, ready, its IP) shows in its
//! StatefulSet's or Deployment's status, whose own events start the pass that sees it. A
//! pod event starts a pass only when what `pod_problem` would read from that pod changed;
//! a pod waiting for a node, which `pod_problem` passes over for a grace, starts it when
//! the grace ends (and none if it was scheduled by then).
//! The other owned objects start a pass when their metadata, spec or the status fields a
//! pass reads changed ([`ChangeTriggers`]), unless the event is the echo of the operator's
//! own write that the writing pass already saw ([`OwnWrites`]).

use super::failures::{PodSignal, pod_signal};
use super::own_writes::OwnWrites;
use super::storage::ClaimSize;
use crate::quantity::Quantity;
use crate::render;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, StatefulSet, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, Pod,
    VolumeResourceRequirements,
};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use neurallog_machines::Phase;
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::time::DelayQueue;

/// The last signal of each pod that had one (a pod without is not kept).
#[derive(Default)]
pub(super) struct PodTriggers {
    signals: HashMap<(String, String), Kept>,
}

struct Kept {
    signal: PodSignal,
    /// A pass has been started for this signal (or one before it), so a pass may show it.
    told: bool,
    /// The pod, while its signal waits for its grace to end before it starts a pass.
    waiting: Option<Pod>,
}

/// What a pod's event asks of its tenant.
#[derive(Debug)]
pub(super) enum PodVerdict {
    Start(Box<Pod>),
    /// Start a pass at this time, if the pod still waits for a node as it does now.
    StartAt(PodDue),
    Nothing,
}

/// A pod that waits for a node within its grace (see `failures::UNSCHEDULABLE_GRACE` and
/// `failures::VOLUME_GRACE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PodDue {
    key: (String, String),
    /// The end of its grace.
    at: DateTime<Utc>,
}

impl PodTriggers {
    /// What the pod's event asks, as of `now`. A pod that waits for a node within its
    /// grace is passed over by a pass (`failures::pod_problem`), so its signal starts a
    /// pass only once the grace is over: a Redis pod waiting a few seconds for its claim
    /// to be bound then starts no pass, nor does its being scheduled after.
    pub(super) fn on_event(
        &mut self,
        event: watcher::Event<Pod>,
        now: DateTime<Utc>,
    ) -> PodVerdict {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let key = key(&pod);
                let Some(signal) = pod_signal(&pod) else {
                    return match self.signals.remove(&key) {
                        Some(kept) if kept.told => PodVerdict::Start(Box::new(pod)),
                        _ => PodVerdict::Nothing,
                    };
                };
                let kept = self.signals.get(&key);
                if kept.is_some_and(|k| k.signal == signal) {
                    return PodVerdict::Nothing;
                }
                let told = kept.is_some_and(|k| k.told);
                let waiting = signal
                    .waiting_for_node_until()
                    .filter(|&until| now < until && !told);
                match waiting {
                    Some(until) => {
                        let due = PodDue {
                            key: key.clone(),
                            at: until,
                        };
                        let kept = Kept {
                            signal,
                            told: false,
                            waiting: Some(identity_of(pod)),
                        };
                        self.signals.insert(key, kept);
                        PodVerdict::StartAt(due)
                    }
                    None => {
                        let kept = Kept {
                            signal,
                            told: true,
                            waiting: None,
                        };
                        self.signals.insert(key, kept);
                        PodVerdict::Start(Box::new(pod))
                    }
                }
            }
            // A pod that had a problem a pass may show takes it away with it.
            watcher::Event::Delete(pod) => match self.signals.remove(&key(&pod)) {
                Some(kept) if kept.told => PodVerdict::Start(Box::new(pod)),
                _ => PodVerdict::Nothing,
            },
            watcher::Event::Init | watcher::Event::InitDone => PodVerdict::Nothing,
        }
    }

    /// The pod whose grace `due` ended, when it still waits for a node since the same time
    /// and no pass was started for it meanwhile.
    pub(super) fn on_due(&mut self, due: &PodDue) -> Option<Pod> {
        let kept = self.signals.get_mut(&due.key)?;
        if kept.told || kept.signal.waiting_for_node_until() != Some(due.at) {
            return None;
        }
        kept.told = true;
        kept.waiting.take()
    }
}

/// What the pass a waiting pod starts needs of it: its name and its tenant's label. A pod
/// waits up to `failures::VOLUME_GRACE`, so many may wait at once on a busy cluster.
fn identity_of(pod: Pod) -> Pod {
    Pod {
        metadata: kube::api::ObjectMeta {
            name: pod.metadata.name,
            namespace: pod.metadata.namespace,
            labels: pod.metadata.labels,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The pods' watch events that start a pass ([`PodTriggers`]), and the pods whose grace
/// ended, when it ends.
pub(super) fn pod_triggers<S>(events: S) -> impl Stream<Item = watcher::Result<Pod>> + Send
where
    S: Stream<Item = watcher::Result<watcher::Event<Pod>>> + Send + Unpin,
{
    PodTriggerStream {
        events,
        triggers: PodTriggers::default(),
        timers: DelayQueue::new(),
    }
}

struct PodTriggerStream<S> {
    events: S,
    triggers: PodTriggers,
    timers: DelayQueue<PodDue>,
}

impl<S> Stream for PodTriggerStream<S>
where
    S: Stream<Item = watcher::Result<watcher::Event<Pod>>> + Unpin,
{
    type Item = watcher::Result<Pod>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.events.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => match this.triggers.on_event(event, Utc::now()) {
                    PodVerdict::Start(pod) => return Poll::Ready(Some(Ok(*pod))),
                    PodVerdict::StartAt(due) => {
                        // A moment after: the pass compares the API server's time (in
                        // whole seconds) with its own clock.
                        let wait = (due.at - Utc::now()).to_std().unwrap_or_default()
                            + Duration::from_millis(100);
                        this.timers.insert(due, wait);
                    }
                    PodVerdict::Nothing => {}
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(expired)) = this.timers.poll_expired(cx) {
            if let Some(pod) = this.triggers.on_due(expired.get_ref()) {
                return Poll::Ready(Some(Ok(pod)));
            }
        }
        Poll::Pending
    }
}

fn key(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Which events of one kind of owned object start a pass: those that change what a pass
/// reads from the object. The status that the other controllers keep writing (a quota's
/// usage, a budget's healthy pods, an autoscaler's metrics, every step of a rollout) is
/// mostly read by no pass; a pass reads an object's metadata and spec (is it what the
/// operator would apply?) and, for the workloads, the few status fields that say whether
/// they are ready. `read` keeps of an object what a pass reads: the event starts a pass
/// when that part differs from the one its last event had.
pub(super) struct ChangeTriggers<K> {
    /// The digest of what a pass reads, by a digest of the object's namespace and name
    /// (two 64-bit digests instead of two strings per object: the map holds every owned
    /// object of every tenant).
    digests: HashMap<u64, u64>,
    read: Box<dyn Fn(&mut K) + Send + Sync>,
    /// Objects of which a pass has nothing to say (see [`ChangeTriggers::quiet_when`]).
    quiet: Option<Quiet<K>>,
    own_writes: OwnWrites,
}

type Quiet<K> = Box<dyn Fn(&K) -> bool + Send + Sync>;

/// The digest of a quiet object, and of one not seen yet.
const QUIET: u64 = 0;

impl<K: Resource<DynamicType = ()> + Clone + Serialize> ChangeTriggers<K> {
    pub(super) fn new(read: impl Fn(&mut K) + Send + Sync + 'static) -> Self {
        ChangeTriggers {
            digests: HashMap::new(),
            read: Box::new(read),
            quiet: None,
            own_writes: OwnWrites::default(),
        }
    }

    /// Objects for which `quiet` holds are nothing a pass would say anything of, whatever
    /// else they hold: one that comes quiet, or stays quiet, starts no pass; one that
    /// becomes quiet, or stops being quiet, does.
    pub(super) fn quiet_when(mut self, quiet: impl Fn(&K) -> bool + Send + Sync + 'static) -> Self {
        self.quiet = Some(Box::new(quiet));
        self
    }

    /// Events that echo one of `own_writes` start no pass.
    pub(super) fn recognising(mut self, own_writes: OwnWrites) -> Self {
        self.own_writes = own_writes;
        self
    }

    /// The object whose event this is when it must start a pass.
    pub(super) fn on_event(&mut self, event: watcher::Event<K>) -> Option<K> {
        match event {
            watcher::Event::Apply(object) => {
                let changed = self.note(&object);
                let echo = self.own_writes.is_echo(&object);
                (changed && !echo).then_some(object)
            }
            // A relist (after a watch restart) is never taken for an echo: at worst one
            // pass more.
            watcher::Event::InitApply(object) => self.note(&object).then_some(object),
            watcher::Event::Delete(object) => {
                self.digests.remove(&key_digest(&object));
                Some(object)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }

    /// Keeps the digest of what a pass reads of `object`; whether it changed.
    fn note(&mut self, object: &K) -> bool {
        let key = key_digest(object);
        // A quiet object is kept as one not seen (nothing a pass reads), so its coming
        // starts no pass. A real digest is never the quiet one's, so no change hides.
        let previous = if self.quiet.as_ref().is_some_and(|quiet| quiet(object)) {
            self.digests.remove(&key).map(|previous| (previous, QUIET))
        } else {
            let digest = self.read_digest(object).max(QUIET + 1);
            Some((self.digests.insert(key, digest).unwrap_or(QUIET), digest))
        };
        previous.is_some_and(|(previous, digest)| previous != digest)
    }

    /// A digest of what a pass reads of `object`: without its resourceVersion (which
    /// every write changes) and other controllers' annotations, and with what `read`
    /// keeps of the rest.
    fn read_digest(&self, object: &K) -> u64 {
        let mut read = object.clone();
        let meta = read.meta_mut();
        meta.resource_version = None;
        // Other controllers annotate our objects (a Deployment's revision, when its
        // controller first writes its status); a pass reads only the operator's own.
        if let Some(annotations) = &mut meta.annotations {
            annotations.retain(|key, _| key.starts_with(OWN_ANNOTATION_PREFIX));
        }
        meta.annotations = meta.annotations.take().filter(|a| !a.is_empty());
        (self.read)(&mut read);
        let mut hasher = HashWriter(DefaultHasher::new());
        // Serialising to a hasher cannot fail for these types; a failure hashes what was
        // written so far, at worst one pass more or less for this object.
        let _ = serde_json::to_writer(&mut hasher, &read);
        hasher.0.finish()
    }
}

/// The prefix of the annotations the operator writes on its objects (the desired-state
/// hash of `compare`).
const OWN_ANNOTATION_PREFIX: &str = "neurallog.io/";

fn key_digest<K: Resource>(object: &K) -> u64 {
    let mut hasher = DefaultHasher::new();
    object.meta().namespace.hash(&mut hasher);
    object.meta().name.hash(&mut hasher);
    hasher.finish()
}

struct HashWriter(DefaultHasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a pass can conclude from a StatefulSet's status (`observation::statefulset_state`):
/// its ready count, and whether it is current by itself (the controller saw its
/// generation, its pods run the update revision, and there are as many updated replicas
/// as its spec asks and no more replicas). The operator's desired count is the spec's
/// whenever the StatefulSet is what the operator would apply, and when it is not, the
/// spec itself differs, which starts a pass anyway. So the status's intermediate steps
/// (the generation seen, then the replicas counted, then ready) start one pass, not three.
/// While its tenant provisions (`phases`), a StatefulSet short of ready replicas reads
/// the same current or not: a pass concludes nothing from it then (see [`first_rollout`]),
/// so a new StatefulSet's "current, none ready yet" step starts no pass of its own.
/// Written back as a status with just two fields set: `ready_replicas` (none for 0), and
/// `replicas` 1 when current by itself, else 0; no status when both say nothing.
pub(super) fn statefulset_read(
    phases: Phases,
) -> impl Fn(&mut StatefulSet) + Send + Sync + 'static {
    move |sts| {
        let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let generation = sts.metadata.generation;
        let provisioning = first_rollout(&phases, sts);
        sts.status = sts.status.take().and_then(|s| {
            let ready = s.ready_replicas.unwrap_or(0);
            let current = s.observed_generation >= generation
                && (s.update_revision.is_none() || s.update_revision == s.current_revision)
                && s.updated_replicas.unwrap_or(0) >= desired
                && s.replicas <= desired
                && (ready >= desired || !provisioning);
            let read = StatefulSetStatus {
                ready_replicas: Some(ready).filter(|&r| r != 0),
                replicas: i32::from(current),
                ..StatefulSetStatus::default()
            };
            (read != StatefulSetStatus::default()).then_some(read)
        });
    }
}

/// What a pass can conclude from a Deployment's status (`observation::deployment_state`
/// and `failures::deployment_problem`): its ready count, whether the controller saw its
/// generation (an autoscaled one is "settling" until then), the conditions that tell a
/// failure (without their times), and how many replicas count towards it being current.
/// It is current when its generation was seen, it has no more replicas than its spec asks,
/// and at least the required count are both updated and available; the required count is
/// the spec's (or an autoscaler's minimum: at least 1 when the spec asks for any) and is
/// not known here, so what is kept is the count that the required one is compared with:
/// the lesser of updated and available, or -1 when those other two conditions fail. When
/// the spec asks for replicas, -1 and 0 both fall short of any required count and are kept
/// as 0. A new Deployment's "replicas counted, none available yet" step then starts no
/// pass of its own. While its tenant provisions (`phases`), a Deployment that asks for
/// replicas and has none ready reads as its failure conditions alone (see
/// [`first_rollout`]): the controller's first status write is no news then. Written back as
/// a status with `ready_replicas` (none for 0), `observed_generation` (1 when seen, else
/// 0), `available_replicas` (that count) and the failure conditions set.
pub(super) fn deployment_read(phases: Phases) -> impl Fn(&mut Deployment) + Send + Sync + 'static {
    move |deployment| {
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let generation = deployment.metadata.generation;
        let provisioning = first_rollout(&phases, deployment);
        deployment.status = deployment.status.take().and_then(|s| {
            let ready = s.ready_replicas.unwrap_or(0);
            let failures = failure_conditions(s.conditions);
            if provisioning && desired >= 1 && ready == 0 {
                return failures.map(|conditions| DeploymentStatus {
                    conditions: Some(conditions),
                    ..DeploymentStatus::default()
                });
            }
            let seen = s.observed_generation >= generation;
            let counted = if seen && s.replicas.unwrap_or(0) <= desired {
                s.updated_replicas
                    .unwrap_or(0)
                    .min(s.available_replicas.unwrap_or(0))
            } else {
                -1
            };
            let counted = if desired >= 1 {
                counted.max(0)
            } else {
                counted
            };
            Some(DeploymentStatus {
                observed_generation: Some(i64::from(seen)),
                ready_replicas: Some(ready).filter(|&r| r != 0),
                available_replicas: Some(counted),
                conditions: failures,
                ..DeploymentStatus::default()
            })
        });
    }
}

/// A Deployment's conditions that tell a failure, without their times; none when there is
/// none (no conditions and healthy ones read the same: the controller's first status
/// write, which adds healthy conditions, is no news).
fn failure_conditions(
    conditions: Option<Vec<DeploymentCondition>>,
) -> Option<Vec<DeploymentCondition>> {
    let failures: Vec<_> = conditions?
        .into_iter()
        .filter(|c| {
            (c.type_ == "ReplicaFailure" && c.status == "True")
                || (c.type_ == "Progressing" && c.status == "False")
        })
        .map(|c| DeploymentCondition {
            last_transition_time: None,
            last_update_time: None,
            ..c
        })
        .collect();
    (!failures.is_empty()).then_some(failures)
}

/// Whether `object`'s tenant was in its first rollout (ProvisioningRedis or
/// ProvisioningServer) when its last pass step ended. A pass then concludes nothing from
/// a workload with fewer ready replicas than it needs beyond that count: it is not ready
/// whether or not it is current, and its status reads "n/m replicas ready" either way
/// (`status::component_status`); only later phases tell a rollout in progress. A tenant
/// no pass has seen yet is not (its objects are read whole).
fn first_rollout<K: Resource>(phases: &Phases, object: &K) -> bool {
    object
        .labels()
        .get(render::TENANT_LABEL)
        .and_then(|tenant| phases.get(tenant))
        .is_some_and(super::status::is_first_rollout)
}

/// What each tenant's last pass step noted of it, for reading the events of its objects:
/// one fact per tenant, by tenant name.
pub struct TenantNotes<T>(Arc<Mutex<HashMap<String, T>>>);

impl<T> Clone for TenantNotes<T> {
    fn clone(&self) -> Self {
        TenantNotes(self.0.clone())
    }
}

impl<T> Default for TenantNotes<T> {
    fn default() -> Self {
        TenantNotes(Arc::default())
    }
}

impl<T: Clone + PartialEq> TenantNotes<T> {
    /// What holds for `tenant` now (`None`: nothing known, or the tenant is gone).
    pub(super) fn note(&self, tenant: &str, fact: Option<T>) {
        let mut notes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match fact {
            Some(fact) if notes.get(tenant) != Some(&fact) => {
                notes.insert(tenant.to_string(), fact);
            }
            Some(_) => {}
            None => {
                notes.remove(tenant);
            }
        }
    }

    fn get(&self, tenant: &str) -> Option<T> {
        let notes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        notes.get(tenant).cloned()
    }
}

/// Each tenant's phase as its last pass step left it.
pub type Phases = TenantNotes<Phase>;

/// What each tenant's spec asks of its Redis volumes (`spec.redis.storage`), as its last
/// pass read it: a claim event is compared with it.
pub type WantedSizes = TenantNotes<Quantity>;

/// Which events of the Redis data claims start a pass. A pass reads a claim's class, the
/// size it asks for, and the size it holds once bound (`storage::ClaimSize`): binding it to
/// a volume is not news. Nor is anything of a claim that neither asks nor holds less than
/// its tenant's spec asks (`wanted`): the pass's storage state has nothing to say of it, so
/// a new claim created and bound at the size the spec asks starts no pass. A claim of a
/// tenant whose spec no pass has read yet is read whole.
pub(super) fn redis_claim_triggers(wanted: WantedSizes) -> ChangeTriggers<PersistentVolumeClaim> {
    ChangeTriggers::new(claim_size_read).quiet_when(move |claim| {
        claim
            .labels()
            .get(render::TENANT_LABEL)
            .and_then(|tenant| wanted.get(tenant))
            .is_some_and(|wanted| ClaimSize::of(claim).is_settled_at(&wanted))
    })
}

fn claim_size_read(claim: &mut PersistentVolumeClaim) {
    claim.spec = claim.spec.take().map(|s| PersistentVolumeClaimSpec {
        storage_class_name: s.storage_class_name,
        resources: s.resources.map(|r| VolumeResourceRequirements {
            requests: r.requests,
            limits: None,
        }),
        ..PersistentVolumeClaimSpec::default()
    });
    let bound = claim
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Bound"));
    claim.status = claim
        .status
        .take()
        .filter(|_| bound)
        .map(|s| PersistentVolumeClaimStatus {
            capacity: s.capacity,
            ..PersistentVolumeClaimStatus::default()
        });
}

/// What a pass reads of a backup CronJob's status: its last schedule and last success.
pub(super) fn cron_job_read(cron_job: &mut CronJob) {
    cron_job.status = cron_job.status.take().map(|s| CronJobStatus {
        last_schedule_time: s.last_schedule_time,
        last_successful_time: s.last_successful_time,
        ..CronJobStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("acme-redis-0".into()),
                namespace: Some("tenant-acme".into()),
                labels: Some([(render::TENANT_LABEL.to_string(), "acme".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        }
    }

    fn running(ready: bool) -> Pod {
        pod(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".into(),
                ready,
                state: Some(ContainerState {
                    running: Some(Default::default()),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        })
    }

    fn pulling_failed() -> Pod {
        pod(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        message: Some("back-off pulling image".into()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        })
    }

    fn unschedulable() -> Pod {
        pod(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available".into()),
                last_transition_time: Some(Time(Default::default())),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        })
    }

    /// A pod the scheduler could not place, since `since`.
    fn waiting_since(since: DateTime<Utc>) -> Pod {
        let mut pod = unschedulable();
        let conditions = pod.status.as_mut().and_then(|s| s.conditions.as_mut());
        conditions.expect("a condition")[0].last_transition_time = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(since.timestamp()).expect("a time"),
        ));
        pod
    }

    /// Triggers that were just told of a pod waiting for a node, as of the time it began.
    fn waiting_within_its_grace() -> (PodTriggers, DateTime<Utc>, PodDue) {
        let since = DateTime::from_timestamp(1_000_000, 0).expect("a time");
        let mut t = PodTriggers::default();
        let verdict = t.on_event(watcher::Event::Apply(waiting_since(since)), since);
        let PodVerdict::StartAt(due) = verdict else {
            panic!("{verdict:?}")
        };
        (t, since, due)
    }

    #[test]
    fn a_pod_waiting_for_a_node_within_its_grace_starts_a_pass_only_when_it_ends() {
        let (mut t, since, due) = waiting_within_its_grace();
        assert_eq!(
            due.at,
            since + crate::controller::failures::UNSCHEDULABLE_GRACE
        );
        // Still waiting when its grace ends: the pass that shows it starts then, once,
        // for the pod's tenant.
        let pod = t.on_due(&due).expect("the waiting pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("acme-redis-0"));
        assert_eq!(
            pod.labels().get(render::TENANT_LABEL).map(String::as_str),
            Some("acme")
        );
        assert!(t.on_due(&due).is_none());
        // It was told, so its being scheduled starts a pass that takes the problem away.
        assert!(starts(&mut t, watcher::Event::Apply(running(true))));
    }

    #[test]
    fn a_pod_scheduled_within_its_grace_starts_no_pass() {
        let (mut t, since, due) = waiting_within_its_grace();
        assert!(!starts(&mut t, watcher::Event::Apply(running(false))));
        assert!(
            t.on_due(&due).is_none(),
            "its grace ended after it was scheduled"
        );
        // Waiting again later, since another time: a new grace, and its own due.
        let later = since + chrono::TimeDelta::seconds(60);
        let verdict = t.on_event(watcher::Event::Apply(waiting_since(later)), later);
        assert!(
            matches!(verdict, PodVerdict::StartAt(ref d) if d.at > due.at),
            "{verdict:?}"
        );
        assert!(matches!(
            t.on_event(watcher::Event::Delete(waiting_since(later)), later),
            PodVerdict::Nothing
        ));
    }

    #[test]
    fn a_pod_that_showed_a_problem_and_then_waits_starts_a_pass_at_once() {
        let since = DateTime::from_timestamp(1_000_000, 0).expect("a time");
        let mut t = PodTriggers::default();
        assert!(starts(&mut t, watcher::Event::Apply(pulling_failed())));
        // The pass must take the problem it shows away, although it passes over the pod.
        let verdict = t.on_event(watcher::Event::Apply(waiting_since(since)), since);
        assert!(matches!(verdict, PodVerdict::Start(_)), "{verdict:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pod_trigger_stream_starts_the_pass_when_the_grace_ends() {
        let (sender, events) = futures::channel::mpsc::unbounded();
        let mut triggers = Box::pin(pod_triggers(events));
        let started = tokio::time::Instant::now();
        sender
            .unbounded_send(Ok(watcher::Event::Apply(waiting_since(Utc::now()))))
            .expect("sent");
        let pod = triggers.next().await.expect("a pod").expect("no error");
        assert_eq!(pod.metadata.name.as_deref(), Some("acme-redis-0"));
        assert!(
            started.elapsed() >= Duration::from_secs(9),
            "{:?}",
            started.elapsed()
        );
        drop(sender);
        assert!(triggers.next().await.is_none());
    }

    /// Whether `event` starts a pass at once.
    fn starts(triggers: &mut PodTriggers, event: watcher::Event<Pod>) -> bool {
        matches!(triggers.on_event(event, Utc::now()), PodVerdict::Start(_))
    }

    #[test]
    fn a_pod_that_starts_without_a_problem_starts_no_pass() {
        let mut triggers = PodTriggers::default();
        for event in [
            watcher::Event::Apply(pod(PodStatus::default())),
            watcher::Event::Apply(running(false)),
            watcher::Event::Apply(running(true)),
            watcher::Event::Delete(running(true)),
        ] {
            assert!(!starts(&mut triggers, event));
        }
    }

    #[test]
    fn a_problem_starts_a_pass_when_it_comes_changes_and_goes() {
        let mut t = PodTriggers::default();
        assert!(!starts(&mut t, watcher::Event::Apply(running(false))));
        assert!(starts(&mut t, watcher::Event::Apply(pulling_failed())));
        // The same problem again: nothing new to tell.
        assert!(!starts(&mut t, watcher::Event::Apply(pulling_failed())));
        assert!(starts(&mut t, watcher::Event::Apply(unschedulable())));
        assert!(starts(&mut t, watcher::Event::Apply(running(true))));
        assert!(!starts(&mut t, watcher::Event::Apply(running(true))));
    }

    #[test]
    fn deleting_a_pod_with_a_problem_starts_a_pass() {
        let mut t = PodTriggers::default();
        assert!(starts(&mut t, watcher::Event::InitApply(pulling_failed())));
        assert!(!starts(&mut t, watcher::Event::InitDone));
        assert!(starts(&mut t, watcher::Event::Delete(pulling_failed())));
        // Once gone, its signal is forgotten.
        assert!(!starts(&mut t, watcher::Event::Delete(pulling_failed())));
    }

    mod change_triggers {
        use super::super::*;
        use crate::controller::failures::deployment_problem;
        use crate::controller::observation::{WorkloadState, deployment_state, statefulset_state};
        use crate::controller::own_writes::OwnWrites;
        use crate::crd::ServerScale;
        use k8s_openapi::api::apps::v1::DeploymentCondition;
        use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        fn meta(version: &str) -> ObjectMeta {
            ObjectMeta {
                name: Some("acme-redis".into()),
                namespace: Some("tenant-acme".into()),
                resource_version: Some(version.into()),
                generation: Some(1),
                ..ObjectMeta::default()
            }
        }

        fn quota(version: &str, pods: &str, used: &str) -> ResourceQuota {
            let one = |v: &str| BTreeMap::from([("pods".to_string(), Quantity(v.into()))]);
            ResourceQuota {
                metadata: meta(version),
                spec: Some(ResourceQuotaSpec {
                    hard: Some(one(pods)),
                    ..ResourceQuotaSpec::default()
                }),
                status: Some(ResourceQuotaStatus {
                    hard: Some(one(pods)),
                    used: Some(one(used)),
                }),
            }
        }

        fn starts<K: Resource<DynamicType = ()> + Clone + Serialize>(
            t: &mut ChangeTriggers<K>,
            event: watcher::Event<K>,
        ) -> bool {
            t.on_event(event).is_some()
        }

        #[test]
        fn a_status_no_pass_reads_starts_no_pass() {
            let mut t = ChangeTriggers::new(|q: &mut ResourceQuota| q.status = None);
            assert!(starts(&mut t, watcher::Event::Apply(quota("1", "10", "0"))));
            // The quota controller counting pods: only status and version change.
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(quota("2", "10", "1"))
            ));
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(quota("3", "10", "2"))
            ));
            // Someone edits the spec: the pass must see the drift.
            assert!(starts(&mut t, watcher::Event::Apply(quota("4", "20", "2"))));
            // Another controller's annotation is not read by a pass; the operator's is.
            let annotated = |version: &str, annotations: &[(&str, &str)]| {
                let mut quota = quota(version, "20", "2");
                let annotations = annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()));
                quota.metadata.annotations = Some(annotations.collect());
                quota
            };
            let revision = ("deployment.kubernetes.io/revision", "1");
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(annotated("5", &[revision]))
            ));
            let hash = (crate::controller::compare::DESIRED_HASH_ANNOTATION, "abc");
            assert!(starts(
                &mut t,
                watcher::Event::Apply(annotated("6", &[revision, hash]))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::Apply(annotated("7", &[revision]))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::Delete(quota("8", "20", "2"))
            ));
        }

        #[test]
        fn a_relist_starts_passes_only_for_what_changed_meanwhile() {
            let mut t = ChangeTriggers::new(|q: &mut ResourceQuota| q.status = None);
            assert!(starts(
                &mut t,
                watcher::Event::InitApply(quota("1", "10", "0"))
            ));
            assert!(!starts(&mut t, watcher::Event::InitDone));
            assert!(!starts(&mut t, watcher::Event::Init));
            assert!(!starts(
                &mut t,
                watcher::Event::InitApply(quota("7", "10", "3"))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::InitApply(quota("8", "30", "3"))
            ));
        }

        #[test]
        fn the_echo_of_an_own_write_starts_no_pass_a_later_change_does() {
            let own = OwnWrites::default();
            let mut t = ChangeTriggers::new(|q: &mut ResourceQuota| q.status = None)
                .recognising(own.clone());
            own.expect(&quota("1", "10", "0"));
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(quota("1", "10", "0"))
            ));
            // The quota controller counting pods: no pass, as for anyone's object.
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(quota("2", "10", "1"))
            ));
            // Someone else edits the spec: a new version, a pass.
            assert!(starts(&mut t, watcher::Event::Apply(quota("3", "20", "1"))));
            // The operator writes it back; the echo is compared with that edit, and only
            // recognised as the operator's own.
            own.expect(&quota("4", "10", "1"));
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(quota("4", "10", "1"))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::Delete(quota("5", "10", "1"))
            ));
        }

        #[test]
        fn an_echo_no_longer_expected_or_brought_by_a_relist_starts_a_pass() {
            let own = OwnWrites::default();
            let mut t = ChangeTriggers::new(|q: &mut ResourceQuota| q.status = None)
                .recognising(own.clone());
            // The writing pass stopped waiting before the event came.
            let echo = own.expect(&quota("1", "10", "0")).expect("a version");
            own.withdraw(&echo);
            assert!(starts(&mut t, watcher::Event::Apply(quota("1", "10", "0"))));
            // A watch restarted: the relist brings the written version.
            own.expect(&quota("2", "20", "0"));
            assert!(starts(
                &mut t,
                watcher::Event::InitApply(quota("2", "20", "0"))
            ));
            // Without the expectation an own write's event starts a pass (the negative
            // control of the test above).
            let mut plain = ChangeTriggers::new(|q: &mut ResourceQuota| q.status = None);
            assert!(starts(
                &mut plain,
                watcher::Event::Apply(quota("1", "10", "0"))
            ));
        }

        fn claim(
            volume: Option<&str>,
            phase: &str,
            requested: &str,
            capacity: &str,
        ) -> PersistentVolumeClaim {
            let storage = |v: &str| BTreeMap::from([("storage".to_string(), Quantity(v.into()))]);
            PersistentVolumeClaim {
                metadata: meta("1"),
                spec: Some(PersistentVolumeClaimSpec {
                    volume_name: volume.map(String::from),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(storage(requested)),
                        limits: None,
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: Some(PersistentVolumeClaimStatus {
                    phase: Some(phase.into()),
                    capacity: Some(storage(capacity)),
                    ..PersistentVolumeClaimStatus::default()
                }),
            }
        }

        #[test]
        fn a_claim_starts_a_pass_when_its_size_changes_not_when_it_is_bound() {
            let mut t = redis_claim_triggers(WantedSizes::default());
            assert!(starts(
                &mut t,
                watcher::Event::Apply(claim(None, "Pending", "1Gi", "0"))
            ));
            // The volume controller picks a volume: nothing ClaimSize reads.
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(claim(Some("pv-1"), "Pending", "1Gi", "0"))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::Apply(claim(Some("pv-1"), "Bound", "1Gi", "1Gi"))
            ));
            // Grown: asked for, then held.
            assert!(starts(
                &mut t,
                watcher::Event::Apply(claim(Some("pv-1"), "Bound", "2Gi", "1Gi"))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::Apply(claim(Some("pv-1"), "Bound", "2Gi", "2Gi"))
            ));
            // Whatever changes, a different ClaimSize starts a pass.
            let sizes = [
                claim(None, "Pending", "1Gi", "0"),
                claim(Some("pv-1"), "Bound", "1Gi", "1Gi"),
                claim(Some("pv-1"), "Lost", "1Gi", "1Gi"),
                claim(Some("pv-1"), "Bound", "2Gi", "1Gi"),
            ];
            for a in &sizes {
                for b in &sizes {
                    let mut t = redis_claim_triggers(WantedSizes::default());
                    t.on_event(watcher::Event::Apply(a.clone()));
                    let changed = crate::controller::storage::ClaimSize::of(a)
                        != crate::controller::storage::ClaimSize::of(b);
                    assert_eq!(
                        t.on_event(watcher::Event::Apply(b.clone())).is_some(),
                        changed
                    );
                }
            }
        }

        #[test]
        fn a_claim_at_the_size_its_tenant_asks_starts_no_pass_until_it_differs() {
            let wanted = WantedSizes::default();
            let mut t = redis_claim_triggers(wanted.clone());
            let labelled = of_acme::<PersistentVolumeClaim>;
            let size = |q: &str| crate::quantity::Quantity::parse(q).expect("a quantity");
            // No pass read the tenant's spec yet: the claim is read whole.
            assert!(starts(
                &mut t,
                watcher::Event::Apply(labelled(claim(None, "Pending", "1Gi", "0")))
            ));
            wanted.note("acme", Some(size("1Gi")));
            // Once the size is known the claim reads as settled (a change, once); bound
            // at the size the spec asks, it is nothing a pass would say.
            assert!(starts(
                &mut t,
                watcher::Event::Apply(labelled(claim(None, "Pending", "1Gi", "0")))
            ));
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(labelled(claim(Some("pv-1"), "Bound", "1Gi", "1Gi")))
            ));
            // The spec asks for more: the claim asks for it, then its volume holds it.
            wanted.note("acme", Some(size("2Gi")));
            assert!(starts(
                &mut t,
                watcher::Event::Apply(labelled(claim(Some("pv-1"), "Bound", "2Gi", "1Gi")))
            ));
            assert!(starts(
                &mut t,
                watcher::Event::Apply(labelled(claim(Some("pv-1"), "Bound", "2Gi", "2Gi")))
            ));
            // A new claim at the size the spec asks: not news, created or bound.
            let second = |volume, phase, capacity| {
                let mut claim = labelled(claim(volume, phase, "2Gi", capacity));
                claim.metadata.name = Some("redis-data-acme-redis-1".into());
                claim
            };
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(second(None, "Pending", "0"))
            ));
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(second(Some("pv-2"), "Bound", "2Gi"))
            ));
            // A tenant gone: its claims are read whole again.
            wanted.note("acme", None);
            assert!(starts(
                &mut t,
                watcher::Event::Apply(labelled(claim(Some("pv-1"), "Bound", "2Gi", "2Gi")))
            ));
        }

        fn statefulset(status: StatefulSetStatus, replicas: i32) -> StatefulSet {
            StatefulSet {
                metadata: meta("1"),
                spec: Some(k8s_openapi::api::apps::v1::StatefulSetSpec {
                    replicas: Some(replicas),
                    ..Default::default()
                }),
                status: Some(status),
            }
        }

        fn deployment(status: DeploymentStatus, replicas: i32) -> Deployment {
            Deployment {
                metadata: meta("1"),
                spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                    replicas: Some(replicas),
                    ..Default::default()
                }),
                status: Some(status),
            }
        }

        fn condition(type_: &str, status: &str, reason: &str, at: i64) -> DeploymentCondition {
            let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(at).expect("a time"),
            );
            DeploymentCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(format!("{reason} message")),
                last_transition_time: Some(time.clone()),
                last_update_time: Some(time),
            }
        }

        #[test]
        fn a_rollouts_times_and_counts_no_pass_reads_start_no_pass() {
            let mut t = ChangeTriggers::new(deployment_read(Phases::default()));
            let progressing = |at| DeploymentStatus {
                replicas: Some(1),
                unavailable_replicas: Some(at as i32),
                conditions: Some(vec![condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    at,
                )]),
                ..DeploymentStatus::default()
            };
            assert!(starts(
                &mut t,
                watcher::Event::Apply(deployment(progressing(1), 1))
            ));
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(deployment(progressing(2), 1))
            ));
            let stuck = DeploymentStatus {
                conditions: Some(vec![condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    3,
                )]),
                ..progressing(2)
            };
            assert!(starts(&mut t, watcher::Event::Apply(deployment(stuck, 1))));
        }

        #[test]
        fn healthy_conditions_read_as_no_conditions() {
            let mut t = ChangeTriggers::new(deployment_read(Phases::default()));
            let created = DeploymentStatus::default();
            assert!(starts(
                &mut t,
                watcher::Event::Apply(deployment(created, 1))
            ));
            let first_write = DeploymentStatus {
                conditions: Some(vec![condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    1,
                )]),
                ..DeploymentStatus::default()
            };
            assert!(!starts(
                &mut t,
                watcher::Event::Apply(deployment(first_write, 1))
            ));
        }

        /// `object` labelled as tenant acme's, and phases that say acme is in `phase`.
        fn of_tenant_in<K: Resource>(object: K, phase: Phase) -> (K, Phases) {
            let phases = Phases::default();
            phases.note("acme", Some(phase));
            (of_acme(object), phases)
        }

        /// `object` labelled as tenant acme's.
        fn of_acme<K: Resource>(mut object: K) -> K {
            object
                .meta_mut()
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(render::TENANT_LABEL.to_string(), "acme".into());
            object
        }

        #[test]
        fn a_provisioning_tenants_statefulset_starts_a_pass_when_ready_not_when_current() {
            let current_none_ready = StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                updated_replicas: Some(1),
                current_replicas: Some(1),
                ready_replicas: Some(0),
                ..StatefulSetStatus::default()
            };
            let ready = StatefulSetStatus {
                ready_replicas: Some(1),
                available_replicas: Some(1),
                ..current_none_ready.clone()
            };
            for (phase, current_starts) in [
                (Phase::ProvisioningRedis, false),
                (Phase::ProvisioningServer, false),
                // Later a StatefulSet that became current shows: "rolling out" ends.
                (Phase::Running, true),
                (Phase::Updating, true),
            ] {
                let (created, phases) =
                    of_tenant_in(statefulset(StatefulSetStatus::default(), 1), phase);
                let with = |status: &StatefulSetStatus| StatefulSet {
                    status: Some(status.clone()),
                    ..created.clone()
                };
                let steps = [with(&current_none_ready), with(&ready)];
                assert_eq!(
                    starts_each(statefulset_read(phases), &created, steps),
                    [true, current_starts, true],
                    "{phase:?}"
                );
            }
        }

        /// Whether the events of `created` and then of each of `steps` start a pass.
        fn starts_each<K: Resource<DynamicType = ()> + Clone + Serialize, const N: usize>(
            read: impl Fn(&mut K) + Send + Sync + 'static,
            created: &K,
            steps: [K; N],
        ) -> Vec<bool> {
            let mut t = ChangeTriggers::new(read);
            std::iter::once(created.clone())
                .chain(steps)
                .map(|object| starts(&mut t, watcher::Event::Apply(object)))
                .collect()
        }

        #[test]
        fn a_provisioning_tenants_deployment_starts_a_pass_when_ready_or_failing() {
            let first_write = DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(1),
                updated_replicas: Some(1),
                unavailable_replicas: Some(1),
                conditions: Some(vec![condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    1,
                )]),
                ..DeploymentStatus::default()
            };
            let failing = DeploymentStatus {
                conditions: Some(vec![condition("ReplicaFailure", "True", "FailedCreate", 2)]),
                ..first_write.clone()
            };
            let ready = DeploymentStatus {
                ready_replicas: Some(1),
                available_replicas: Some(1),
                ..first_write.clone()
            };
            for (phase, first_write_starts) in
                [(Phase::ProvisioningServer, false), (Phase::Running, true)]
            {
                let (created, phases) =
                    of_tenant_in(deployment(DeploymentStatus::default(), 1), phase);
                let with = |status: &DeploymentStatus| Deployment {
                    status: Some(status.clone()),
                    ..created.clone()
                };
                let steps = [with(&first_write), with(&failing), with(&ready)];
                assert_eq!(
                    starts_each(deployment_read(phases), &created, steps),
                    [true, first_write_starts, true, true],
                    "{phase:?}"
                );
            }
        }

        fn status_strategy() -> impl Strategy<Value = (StatefulSetStatus, DeploymentStatus)> {
            let count = || proptest::option::of(0..3i32);
            let revision =
                || proptest::option::of(prop_oneof![Just("a".to_string()), Just("b".to_string())]);
            (
                (count(), revision(), revision(), count(), count(), 0..3i32),
                (count(), count(), count(), count(), count(), count()),
                proptest::option::of(prop_oneof![
                    Just(("ReplicaFailure", "True")),
                    Just(("ReplicaFailure", "False")),
                    Just(("Progressing", "False")),
                    Just(("Progressing", "True")),
                    Just(("Available", "False")),
                ]),
                0..3i64,
            )
                .prop_map(
                    |(
                        (generation, cur, upd, ready, updated, replicas),
                        (dgen, dready, dupd, drep, davail, noise),
                        cond,
                        at,
                    )| {
                        let sts = StatefulSetStatus {
                            observed_generation: generation.map(i64::from),
                            current_revision: cur,
                            update_revision: upd,
                            ready_replicas: ready,
                            updated_replicas: updated,
                            replicas,
                            available_replicas: noise,
                            current_replicas: noise,
                            ..StatefulSetStatus::default()
                        };
                        let deploy = DeploymentStatus {
                            observed_generation: dgen.map(i64::from),
                            ready_replicas: dready,
                            updated_replicas: dupd,
                            replicas: drep,
                            available_replicas: davail,
                            unavailable_replicas: noise,
                            conditions: cond.map(|(t, s)| vec![condition(t, s, "Why", at)]),
                            ..DeploymentStatus::default()
                        };
                        (sts, deploy)
                    },
                )
        }

        proptest! {
            /// A status change that changes what the pass concludes always starts a pass.
            #[test]
            fn every_change_a_pass_would_see_starts_one(
                (sts_a, deploy_a) in status_strategy(),
                (sts_b, deploy_b) in status_strategy(),
                desired in 0..3i32,
            ) {
                let mut t = ChangeTriggers::new(statefulset_read(Phases::default()));
                let (a, b) = (statefulset(sts_a, desired), statefulset(sts_b, desired));
                t.on_event(watcher::Event::Apply(a.clone()));
                if statefulset_state(Some(&a), desired, true) != statefulset_state(Some(&b), desired, true) {
                    prop_assert!(t.on_event(watcher::Event::Apply(b)).is_some());
                }
                // A fixed count, or an autoscaler's minimum (1 to the count it set, which
                // the Deployment's spec holds).
                let scales = std::iter::once(ServerScale::Fixed(desired)).chain(
                    (1..=desired).map(|min| ServerScale::Autoscaled { min, max: 3 }),
                );
                for scale in scales {
                    let mut t = ChangeTriggers::new(deployment_read(Phases::default()));
                    let (a, b) = (deployment(deploy_a.clone(), desired), deployment(deploy_b.clone(), desired));
                    t.on_event(watcher::Event::Apply(a.clone()));
                    if deployment_state(Some(&a), scale, true) != deployment_state(Some(&b), scale, true)
                        || deployment_problem(&a) != deployment_problem(&b)
                    {
                        prop_assert!(t.on_event(watcher::Event::Apply(b)).is_some(), "{scale:?}");
                    }
                }
            }

            /// While a tenant provisions, a status change that changes what a pass of that
            /// phase concludes (ready or not, the ready count in its status, a failure)
            /// always starts a pass.
            #[test]
            fn every_change_a_provisioning_pass_would_see_starts_one(
                (sts_a, deploy_a) in status_strategy(),
                (sts_b, deploy_b) in status_strategy(),
                desired in 0..3i32,
                phase in prop_oneof![Just(Phase::ProvisioningRedis), Just(Phase::ProvisioningServer)],
            ) {
                let seen = |state: WorkloadState| (state.exists, state.ready, state.is_ready());
                let (a, phases) = of_tenant_in(statefulset(sts_a, desired), phase);
                let (b, _) = of_tenant_in(statefulset(sts_b, desired), phase);
                let mut t = ChangeTriggers::new(statefulset_read(phases));
                t.on_event(watcher::Event::Apply(a.clone()));
                if seen(statefulset_state(Some(&a), desired, true)) != seen(statefulset_state(Some(&b), desired, true)) {
                    prop_assert!(t.on_event(watcher::Event::Apply(b)).is_some());
                }
                let scales = std::iter::once(ServerScale::Fixed(desired)).chain(
                    (1..=desired).map(|min| ServerScale::Autoscaled { min, max: 3 }),
                );
                for scale in scales {
                    let (a, phases) = of_tenant_in(deployment(deploy_a.clone(), desired), phase);
                    let (b, _) = of_tenant_in(deployment(deploy_b.clone(), desired), phase);
                    let mut t = ChangeTriggers::new(deployment_read(phases));
                    t.on_event(watcher::Event::Apply(a.clone()));
                    if seen(deployment_state(Some(&a), scale, true)) != seen(deployment_state(Some(&b), scale, true))
                        || deployment_problem(&a) != deployment_problem(&b)
                    {
                        prop_assert!(t.on_event(watcher::Event::Apply(b)).is_some(), "{scale:?}");
                    }
                }
            }
        }
    }
}
