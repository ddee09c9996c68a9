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
//! lagged past the deadline, or the event overtook the answer) starts a pass, as before:
//! the pass did not see it.

use kube::Resource;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

/// The writes expected to echo, shared by the passes (which add and withdraw them) and
/// the watches of the owned objects (which recognise their echoes).
#[derive(Clone, Default)]
pub struct OwnWrites {
    /// The version each expected write returned, by a digest of its kind, namespace and
    /// name. Holds only the writes of passes waiting for their caches.
    expected: Arc<Mutex<HashMap<u64, String>>>,
}

/// One write whose echo is expected, until it is withdrawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExpectedEcho {
    object: u64,
    version: String,
}

impl OwnWrites {
    /// Expects the echo of `written`, the object as the API server returned it after the
    /// write. Nothing is expected of an object without a name or version.
    pub(super) fn expect<K: Resource<DynamicType = ()>>(
        &self,
        written: &K,
    ) -> Option<ExpectedEcho> {
        let version = written.meta().resource_version.clone()?;
        written.meta().name.as_ref()?;
        let echo = ExpectedEcho {
            object: object_digest(written),
            version,
        };
        self.lock().insert(echo.object, echo.version.clone());
        Some(echo)
    }

    /// Stops expecting `echo`: from now on its event starts a pass like any other. A later
    /// write of the same object, expected meanwhile, stays expected.
    pub(super) fn withdraw(&self, echo: &ExpectedEcho) {
        let mut expected = self.lock();
        if expected.get(&echo.object) == Some(&echo.version) {
            expected.remove(&echo.object);
        }
    }

    /// Whether `object`, as a watch event brings it, is the echo of an expected write; it
    /// is then no longer expected (a second event at that version is not an echo).
    pub(super) fn is_echo<K: Resource<DynamicType = ()>>(&self, object: &K) -> bool {
        let Some(version) = object.meta().resource_version.as_ref() else {
            return false;
        };
        let mut expected = self.lock();
        if expected.is_empty() {
            return false;
        }
        let key = object_digest(object);
        if expected.get(&key) == Some(version) {
            expected.remove(&key);
            return true;
        }
        false
    }

    /// How many writes are expected now.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.expected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A digest of which object `object` is: its kind, namespace and name (the version must
/// match too for an event to count as an echo, so a collision costs nothing).
fn object_digest<K: Resource<DynamicType = ()>>(object: &K) -> u64 {
    let mut hasher = DefaultHasher::new();
    K::kind(&()).hash(&mut hasher);
    object.meta().namespace.hash(&mut hasher);
    object.meta().name.hash(&mut hasher);
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
