//! The operator's own writes of owned objects whose watch events are still to come.
//!
//! A pass that applies or creates an object waits until the watch cache shows it, then
//! observes again and asks for the pass that takes the next transition itself (see
//! `Applier::ensure` and the end of `pass`). The watch event that brought the object into
//! the cache, the echo of the write, holds nothing that pass did not see; yet it arrives
//! while the pass runs, and kube's controller then runs the Tenant once more when the pass
//! ends. About one pass in two was such a pass.
//!
//! A write is expected from the moment the API server answers it (its resourceVersion)
//! until its pass stops waiting for the caches: an event of that object at exactly that
//! version arriving in between starts no pass. Whatever else changes the object later
//! (another controller's status update, someone's edit, its deletion) has another version
//! and starts one as before. An echo that comes after the pass stopped waiting (the cache
//! lagged past the deadline) starts a pass, as before: the pass did not see it.
//!
//! Under load the echo often overtakes the answer: the watch delivers the object before
//! the writing pass has decoded the response that names its version. So from the moment a
//! write is sent ([`OwnWrites::writing`]) until it is answered, that object's events start
//! no pass but are parked with the write; the answer then tells them apart
//! ([`InFlight::answered`]): the echo is dropped, and any other version means something
//! else changed the object meanwhile, which the writing pass reports so that it runs
//! again (the pass is running, so kube would only have run it again after it anyway).

use kube::Resource;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The writes expected to echo, shared by the passes (which add and withdraw them) and
/// the watches of the owned objects (which recognise their echoes).
#[derive(Clone, Default)]
pub struct OwnWrites {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// The version each expected write returned, by a digest of its kind, namespace and
    /// name. Holds only the writes of passes waiting for their caches.
    expected: HashMap<u64, String>,
    /// The objects with a write sent and not answered yet, and the versions their events
    /// brought meanwhile.
    in_flight: HashMap<u64, Vec<String>>,
}

/// One write whose echo is expected, until it is withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExpectedEcho {
    object: u64,
    version: String,
}

/// A write sent and not answered yet: its object's events are parked with it. Dropped
/// unanswered (the pass was cancelled), it parks nothing more.
pub(super) struct InFlight {
    object: u64,
    own: OwnWrites,
}

/// What the events parked while a write was in flight turned out to be.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Answered {
    /// The write's own echo came while it was in flight (nothing more to expect).
    pub echo_came: bool,
    /// Another version came: something else changed the object meanwhile.
    pub other_change: bool,
}

impl OwnWrites {
    /// Parks the events of object `name` of kind `K` (in `namespace`) until the write about
    /// to be sent is answered.
    pub(super) fn writing<K: Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> InFlight {
        let object = digest_of::<K>(namespace, name);
        self.lock().in_flight.entry(object).or_default();
        InFlight {
            object,
            own: self.clone(),
        }
    }

    /// Expects the echo of `written`, the object as the API server returned it after the
    /// write. Nothing is expected of an object without a name or version.
    #[cfg(test)]
    pub(super) fn expect<K: Resource<DynamicType = ()>>(
        &self,
        written: &K,
    ) -> Option<ExpectedEcho> {
        let echo = echo_of(written)?;
        self.lock()
            .expected
            .insert(echo.object, echo.version.clone());
        Some(echo)
    }

    /// Stops expecting `echo`: from now on its event starts a pass like any other. A later
    /// write of the same object, expected meanwhile, stays expected.
    pub(super) fn withdraw(&self, echo: &ExpectedEcho) {
        let mut shared = self.lock();
        if shared.expected.get(&echo.object) == Some(&echo.version) {
            shared.expected.remove(&echo.object);
        }
    }

    /// Whether `object`, as a watch event brings it, starts no pass: it is the echo of an
    /// expected write (then no longer expected: a second event at that version is not an
    /// echo), or a write of it is in flight (the event is parked with that write).
    pub(super) fn is_echo<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        let Some(version) = object.meta().resource_version.as_ref() else {
            return false;
        };
        let mut shared = self.lock();
        if shared.expected.is_empty() && shared.in_flight.is_empty() {
            return false;
        }
        let key = object_digest(object);
        if let Some(parked) = shared.in_flight.get_mut(&key) {
            parked.push(version.clone());
            return true;
        }
        if shared.expected.get(&key) == Some(version) {
            shared.expected.remove(&key);
            return true;
        }
        false
    }

    /// How many writes are expected or in flight now.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        let shared = self.lock();
        shared.expected.len() + shared.in_flight.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InFlight {
    /// The write was answered with `written`: its echo is expected unless it already
    /// came; what else came meanwhile is told. One lock, so that no event falls between
    /// parking and expecting.
    pub(super) fn answered<K: Resource<DynamicType = ()>>(
        self,
        written: &K,
    ) -> (Answered, Option<ExpectedEcho>) {
        let echo = echo_of(written);
        let version = echo.as_ref().map(|e| e.version.as_str());
        let mut shared = self.own.lock();
        let answered = told(shared.in_flight.remove(&self.object), version);
        let echo = echo.filter(|_| !answered.echo_came);
        if let Some(echo) = &echo {
            shared.expected.insert(echo.object, echo.version.clone());
        }
        (answered, echo)
    }

    /// The write was answered with `version` (`None`: it failed), and nothing is to be
    /// expected of it here (the Tenant's own writes are remembered per tenant instead).
    pub(super) fn settled(self, version: Option<&str>) -> Answered {
        told(self.own.lock().in_flight.remove(&self.object), version)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Answered writes were removed already; removing again is harmless.
        self.own.lock().in_flight.remove(&self.object);
    }
}

fn told(parked: Option<Vec<String>>, version: Option<&str>) -> Answered {
    let parked = parked.unwrap_or_default();
    Answered {
        echo_came: version.is_some_and(|v| parked.iter().any(|p| p == v)),
        other_change: parked.iter().any(|p| Some(p.as_str()) != version),
    }
}

fn echo_of<K: Resource<DynamicType = ()>>(written: &K) -> Option<ExpectedEcho> {
    let version = written.meta().resource_version.clone()?;
    written.meta().name.as_ref()?;
    Some(ExpectedEcho {
        object: object_digest(written),
        version,
    })
}

/// A digest of which object `object` is: its kind, namespace and name (the version must
/// match too for an event to count as an echo, so a collision costs nothing).
fn object_digest<K: Resource<DynamicType = ()>>(object: &K) -> u64 {
    let meta = object.meta();
    digest_of::<K>(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn digest_of<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    K::kind(&()).hash(&mut hasher);
    namespace.hash(&mut hasher);
    name.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str, version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("tenant-acme".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
    }

    fn config_map(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: meta(name, version),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn the_echo_of_an_expected_write_is_recognised_once() {
        let own = OwnWrites::default();
        assert!(own.expect(&config_map("acme-redis", "7")).is_some());
        assert!(
            !own.is_echo(&config_map("acme-redis", "6")),
            "an older event"
        );
        assert!(own.is_echo(&config_map("acme-redis", "7")));
        assert!(
            !own.is_echo(&config_map("acme-redis", "7")),
            "a second time"
        );
        assert_eq!(own.pending(), 0);
    }

    #[test]
    fn only_that_object_at_that_version_is_an_echo() {
        let own = OwnWrites::default();
        own.expect(&config_map("acme-redis", "7"));
        assert!(
            !own.is_echo(&config_map("acme-redis", "8")),
            "a later change"
        );
        assert!(!own.is_echo(&config_map("acme-other", "7")), "another name");
        let mut elsewhere = config_map("acme-redis", "7");
        elsewhere.metadata.namespace = Some("tenant-other".into());
        assert!(!own.is_echo(&elsewhere), "another namespace");
        let deployment = Deployment {
            metadata: meta("acme-redis", "7"),
            ..Deployment::default()
        };
        assert!(!own.is_echo(&deployment), "another kind");
        assert!(own.is_echo(&config_map("acme-redis", "7")));
    }

    #[test]
    fn a_withdrawn_write_is_no_longer_an_echo() {
        let own = OwnWrites::default();
        let echo = own
            .expect(&config_map("acme-redis", "7"))
            .expect("expected");
        own.withdraw(&echo);
        assert!(!own.is_echo(&config_map("acme-redis", "7")));
        assert_eq!(own.pending(), 0);
    }

    #[test]
    fn withdrawing_a_write_keeps_a_later_write_of_the_same_object() {
        let own = OwnWrites::default();
        let first = own
            .expect(&config_map("acme-redis", "7"))
            .expect("expected");
        own.expect(&config_map("acme-redis", "9"));
        own.withdraw(&first);
        assert!(own.is_echo(&config_map("acme-redis", "9")));
    }

    fn writing(own: &OwnWrites, name: &str) -> InFlight {
        own.writing::<ConfigMap>(Some("tenant-acme"), name)
    }

    #[test]
    fn an_echo_that_overtakes_the_answer_is_parked_and_then_dropped() {
        let own = OwnWrites::default();
        let flight = writing(&own, "acme-redis");
        assert!(own.is_echo(&config_map("acme-redis", "7")), "parked");
        let (answered, echo) = flight.answered(&config_map("acme-redis", "7"));
        assert_eq!(
            answered,
            Answered {
                echo_came: true,
                other_change: false
            }
        );
        assert!(echo.is_none(), "the echo came: nothing left to expect");
        assert_eq!(own.pending(), 0);
        assert!(
            !own.is_echo(&config_map("acme-redis", "8")),
            "a later change starts a pass"
        );
    }

    #[test]
    fn another_version_parked_during_a_write_is_told_to_the_writer() {
        let own = OwnWrites::default();
        let flight = writing(&own, "acme-redis");
        // Someone else's change, seen before this write's answer.
        assert!(own.is_echo(&config_map("acme-redis", "6")));
        assert!(
            !own.is_echo(&config_map("acme-other", "6")),
            "another object is not parked"
        );
        let (answered, echo) = flight.answered(&config_map("acme-redis", "7"));
        assert_eq!(
            answered,
            Answered {
                echo_came: false,
                other_change: true
            }
        );
        assert!(echo.is_some(), "its own echo is still to come");
        assert!(own.is_echo(&config_map("acme-redis", "7")));
        assert_eq!(own.pending(), 0);
    }

    #[test]
    fn the_writer_is_told_of_events_parked_during_a_write_that_failed() {
        let own = OwnWrites::default();
        let quiet = writing(&own, "acme-quiet");
        assert_eq!(quiet.settled(None), Answered::default());
        let flight = writing(&own, "acme-redis");
        assert!(own.is_echo(&config_map("acme-redis", "6")));
        assert!(flight.settled(None).other_change);
        assert_eq!(own.pending(), 0);
        assert!(
            !own.is_echo(&config_map("acme-redis", "8")),
            "nothing is parked once answered"
        );
    }

    #[test]
    fn a_write_dropped_unanswered_parks_nothing_more() {
        let own = OwnWrites::default();
        drop(writing(&own, "acme-redis"));
        assert_eq!(own.pending(), 0);
        assert!(!own.is_echo(&config_map("acme-redis", "7")));
    }

    #[test]
    fn an_object_without_a_version_is_never_expected_nor_an_echo() {
        let own = OwnWrites::default();
        let mut unversioned = config_map("acme-redis", "7");
        unversioned.metadata.resource_version = None;
        assert!(own.expect(&unversioned).is_none());
        own.expect(&config_map("acme-redis", "7"));
        assert!(!own.is_echo(&unversioned));
    }
}
