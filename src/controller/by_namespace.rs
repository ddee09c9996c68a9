//! Watch caches that a pass reads by namespace (a tenant's pods, its NetworkPolicies, its
//! Redis claims). kube's `Store` answers by name; finding "every object in this namespace"
//! there means walking the whole cache, once per pass, so a pass cost grew with the number
//! of tenants. Here the names are also kept per namespace, from the same watch events and in
//! the same way as the store keeps its objects (a relist's objects replace the old ones only
//! when the list is complete), and a pass touches only its own tenant's objects.

use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// Object names by namespace.
type Names = HashMap<String, BTreeSet<String>>;

/// The reading side: the cache, and which names each namespace holds.
pub struct NamespacedStore<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    names: Arc<RwLock<Names>>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for NamespacedStore<K> {
    fn clone(&self) -> Self {
        NamespacedStore {
            store: self.store.clone(),
            names: self.names.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> NamespacedStore<K> {
    /// The cache itself, to read one object by name.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// The cached objects in `namespace`, ordered by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let names: Vec<String> = self
            .names
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(namespace)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|name| self.store.get(&ObjectRef::new(name).within(namespace)))
            .collect()
    }
}

/// The writing side, fed every watch event of the cache (in place of `reflect`).
pub struct NamespacedWriter<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    names: Arc<RwLock<Names>>,
    /// The names of a relist in progress, as kube's writer buffers its objects.
    relisting: Names,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for NamespacedWriter<K> {
    fn default() -> Self {
        NamespacedWriter {
            writer: Writer::default(),
            names: Arc::default(),
            relisting: Names::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> NamespacedWriter<K> {
    pub fn as_reader(&self) -> NamespacedStore<K> {
        NamespacedStore {
            store: self.writer.as_reader(),
            names: self.names.clone(),
        }
    }

    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) {
        self.writer.apply_watcher_event(event);
        match event {
            watcher::Event::Apply(object) => {
                insert(&mut self.live(), object);
            }
            watcher::Event::Delete(object) => {
                let (namespace, name) = key(object);
                let mut live = self.live();
                if let Some(names) = live.get_mut(&namespace) {
                    names.remove(&name);
                    if names.is_empty() {
                        live.remove(&namespace);
                    }
                }
            }
            watcher::Event::Init => self.relisting = Names::new(),
            watcher::Event::InitApply(object) => insert(&mut self.relisting, object),
            watcher::Event::InitDone => *self.live() = std::mem::take(&mut self.relisting),
        }
    }

    fn live(&self) -> std::sync::RwLockWriteGuard<'_, Names> {
        self.names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn insert<K: Resource>(names: &mut Names, object: &K) {
    let (namespace, name) = key(object);
    names.entry(namespace).or_default().insert(name);
}

/// What keeps a cache from its watch events: kube's writer, or the namespace-indexed one.
pub trait CacheWriter<K>: Send + 'static {
    fn apply_watcher_event(&mut self, event: &watcher::Event<K>);
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> CacheWriter<K> for Writer<K> {
    fn apply_watcher_event(&mut self, event: &watcher::Event<K>) {
        Writer::apply_watcher_event(self, event);
    }
}

impl<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> CacheWriter<K>
    for NamespacedWriter<K>
{
    fn apply_watcher_event(&mut self, event: &watcher::Event<K>) {
        NamespacedWriter::apply_watcher_event(self, event);
    }
}

/// A namespace-indexed cache: its reader and its writer.
pub fn namespaced_store<K: Resource<DynamicType = ()> + Clone + 'static>()
-> (NamespacedStore<K>, NamespacedWriter<K>) {
    let writer = NamespacedWriter::default();
    (writer.as_reader(), writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use watcher::Event;

    fn pod(namespace: &str, name: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    /// `(name, phase)` of the cached pods in `namespace`.
    fn seen(store: &NamespacedStore<Pod>, namespace: &str) -> Vec<(String, String)> {
        store
            .in_namespace(namespace)
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect()
    }

    #[test]
    fn only_the_namespace_asked_for_is_returned() {
        let (store, mut writer) = namespaced_store::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-b", "b-redis-0", "Pending")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-server-x", "Pending")));
        assert_eq!(
            seen(&store, "tenant-a"),
            pairs(&[("a-redis-0", "Running"), ("a-server-x", "Pending")])
        );
        assert_eq!(seen(&store, "tenant-b"), pairs(&[("b-redis-0", "Pending")]));
        assert!(seen(&store, "tenant-c").is_empty());
    }

    #[test]
    fn a_modified_object_is_returned_as_it_is_now_and_once() {
        let (store, mut writer) = namespaced_store::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Pending")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        assert_eq!(seen(&store, "tenant-a"), pairs(&[("a-redis-0", "Running")]));
    }

    #[test]
    fn a_deleted_object_is_gone_and_its_neighbours_stay() {
        let (store, mut writer) = namespaced_store::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-1", "Running")));
        writer.apply_watcher_event(&Event::Delete(pod("tenant-a", "a-redis-0", "Running")));
        assert_eq!(seen(&store, "tenant-a"), pairs(&[("a-redis-1", "Running")]));
        writer.apply_watcher_event(&Event::Delete(pod("tenant-a", "a-redis-1", "Running")));
        assert!(seen(&store, "tenant-a").is_empty());
        assert!(
            writer.names.read().unwrap().is_empty(),
            "no empty namespace kept"
        );
    }

    #[test]
    fn a_relist_replaces_the_old_objects_only_once_complete() {
        let (store, mut writer) = namespaced_store::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-b", "b-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(pod("tenant-a", "a-redis-1", "Pending")));
        // Until the list is complete, the cache shows what it held before.
        assert_eq!(seen(&store, "tenant-a"), pairs(&[("a-redis-0", "Running")]));
        writer.apply_watcher_event(&Event::InitDone);
        // Deleted while the watch was down: gone with the relist.
        assert!(seen(&store, "tenant-b").is_empty());
        assert_eq!(seen(&store, "tenant-a"), pairs(&[("a-redis-1", "Pending")]));
    }
}
