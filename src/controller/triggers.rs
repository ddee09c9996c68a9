//! Which pod events start a pass. Pods are watched only to tell why a component is not
//! ready (`failures::pod_problem`); every other change of a pod (created, scheduled,
//! started, ready, its IP) shows in its StatefulSet's or Deployment's status, whose own
//! events start the pass that sees it. A pod event starts a pass only when what
//! `pod_problem` would read from that pod changed.

use super::failures::{PodSignal, pod_signal};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher;
use std::collections::HashMap;

/// The last signal of each pod that had one (a pod without is not kept).
#[derive(Default)]
pub(super) struct PodTriggers {
    signals: HashMap<(String, String), PodSignal>,
}

impl PodTriggers {
    /// The pod whose event this is when it must start a pass.
    pub(super) fn on_event(&mut self, event: watcher::Event<Pod>) -> Option<Pod> {
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let key = key(&pod);
                let signal = pod_signal(&pod);
                let changed = self.signals.get(&key) != signal.as_ref();
                match signal {
                    Some(signal) => self.signals.insert(key, signal),
                    None => self.signals.remove(&key),
                };
                changed.then_some(pod)
            }
            // A pod that had a problem takes it away with it.
            watcher::Event::Delete(pod) => self.signals.remove(&key(&pod)).map(|_| pod),
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

fn key(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_default(), pod.name_any())
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

    /// Whether `event` starts a pass.
    fn starts(triggers: &mut PodTriggers, event: watcher::Event<Pod>) -> bool {
        triggers.on_event(event).is_some()
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
}
