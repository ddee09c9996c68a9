//! The watch caches of the objects the operator owns and reads: each object kept as the
//! JSON the watch delivered (after the cache stripped what no pass reads), compressed, and
//! decoded when a pass reads it.
//!
//! kube's `Store` keeps one typed k8s-openapi value per object. Those values are several
//! times the size of their JSON (every absent field of a pod template still takes its
//! place, every one-label map a B-tree node), and at 1,000 tenants the caches held 88 MB
//! of the operator's heap. A pass reads a few dozen objects of its own tenant, so decoding
//! them on each read costs little next to what keeping every tenant's objects typed did.
//!
//! The objects of one kind differ between tenants mostly in names, uids and versions, so
//! each is compressed (LZ4) against the first object the cache received, its prototype:
//! what the two share costs a few bytes. That keeps about a fifth of the JSON (22 KB per
//! tenant as JSON, measured on a converged cluster).
//!
//! Objects are ordered by (namespace, name): a pass reads "every object in this namespace"
//! without walking the other tenants' objects. A relist's objects replace the old ones only
//! when the list is complete, as in kube's `Store`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock, RwLock};
use tokio::sync::watch;

/// (namespace, name); the namespace is empty for a cluster-scoped object.
type Key = (String, String);

/// Objects as compressed JSON, by key.
type Objects = BTreeMap<Key, Entry>;

/// One object: its JSON compressed, and its resourceVersion as is (a pass that has judged
/// this version already needs nothing else of it).
struct Entry {
    version: Option<Box<str>>,
    json: Arc<[u8]>,
}

/// The JSON every object of a cache is compressed against: the first one it received.
type Prototype = Arc<OnceLock<Box<[u8]>>>;

/// The cache's watch ended before the cache held its first complete list.
#[derive(Debug, thiserror::Error)]
#[error("the cache's watch ended before its first list was complete")]
pub struct NeverSynced;

/// The reading side of a cache of `K`.
pub struct Cache<K> {
    objects: Arc<RwLock<Objects>>,
    prototype: Prototype,
    synced: watch::Receiver<bool>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            objects: self.objects.clone(),
            prototype: self.prototype.clone(),
            synced: self.synced.clone(),
            kind: PhantomData,
        }
    }
}

/// Only the metadata of a cached object, decoded without building the rest.
#[derive(Deserialize)]
struct MetadataOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    /// The cached object `key`, decoded.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        let json = self.json(key)?;
        self.decode(&json).map(Arc::new)
    }

    /// The cached objects in `namespace`, ordered by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.json_in_namespace(namespace)
            .iter()
            .filter_map(|json| self.decode(json))
            .map(Arc::new)
            .collect()
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()>,
{
    /// The cached object `key` as JSON, without building the typed object.
    pub fn json_value(&self, key: &ObjectRef<K>) -> Option<serde_json::Value> {
        let json = self.json(key)?;
        self.decode(&json)
    }

    /// The resourceVersion of the cached object `key`, read without decoding anything: the
    /// outer `None` when the cache does not hold `key`.
    pub fn version(&self, key: &ObjectRef<K>) -> Option<Option<String>> {
        self.read()
            .get(&Self::key(key))
            .map(|entry| entry.version.as_deref().map(str::to_owned))
    }

    /// The names of the cached objects in `namespace`, ordered, without decoding any.
    pub fn names_in_namespace(&self, namespace: &str) -> Vec<String> {
        self.each_in_namespace(namespace, |name, _| name.to_owned())
    }

    /// The metadata of the cached object `key`, without decoding the rest of it.
    pub fn metadata(&self, key: &ObjectRef<K>) -> Option<ObjectMeta> {
        let json = self.json(key)?;
        self.decode::<MetadataOnly>(&json).map(|only| only.metadata)
    }

    /// Whether the cache holds `key`.
    pub fn contains(&self, key: &ObjectRef<K>) -> bool {
        self.read().contains_key(&Self::key(key))
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Resolves once the cache holds its first complete list.
    pub async fn wait_until_ready(&self) -> Result<(), NeverSynced> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|synced| *synced)
            .await
            .map(|_| ())
            .map_err(|_| NeverSynced)
    }

    fn key(key: &ObjectRef<K>) -> Key {
        (key.namespace.clone().unwrap_or_default(), key.name.clone())
    }

    fn json(&self, key: &ObjectRef<K>) -> Option<Arc<[u8]>> {
        self.read()
            .get(&Self::key(key))
            .map(|entry| entry.json.clone())
    }

    fn json_in_namespace(&self, namespace: &str) -> Vec<Arc<[u8]>> {
        self.each_in_namespace(namespace, |_, entry| entry.json.clone())
    }

    /// `pick` of (name, entry) of each object in `namespace`, ordered by name.
    fn each_in_namespace<T>(&self, namespace: &str, pick: impl Fn(&str, &Entry) -> T) -> Vec<T> {
        self.read()
            .range((namespace.to_owned(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|((_, name), entry)| pick(name, entry))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.objects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decodes a cached object; the cache wrote it from a value of the same type, so a
    /// failure is a bug, logged and read as "not cached" rather than stopping the pass.
    /// Decoded from text, as kube decodes what the API server sends: one instance of each
    /// type's decoder in the binary, not two.
    fn decode<T: DeserializeOwned>(&self, compressed: &[u8]) -> Option<T> {
        let prototype = self.prototype.get().map_or(&[][..], |p| &p[..]);
        let decoded = lz4_flex::block::decompress_size_prepended_with_dict(compressed, prototype)
            .map_err(|e| e.to_string())
            .and_then(|json| String::from_utf8(json).map_err(|e| e.to_string()))
            .and_then(|json| serde_json::from_str(&json).map_err(|e| e.to_string()));
        match decoded {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::error!(%error, kind = %K::kind(&()), "a cached object does not decode");
                None
            }
        }
    }
}

/// The writing side of a cache of `K`, fed every watch event (in place of kube's
/// `reflect`).
pub struct CacheWriter<K> {
    objects: Arc<RwLock<Objects>>,
    prototype: Prototype,
    synced: watch::Sender<bool>,
    /// The objects of a relist in progress.
    relisting: Objects,
    kind: PhantomData<fn(K)>,
}

impl<K> Default for CacheWriter<K> {
    fn default() -> Self {
        CacheWriter {
            objects: Arc::default(),
            prototype: Prototype::default(),
            synced: watch::Sender::new(false),
            relisting: Objects::new(),
            kind: PhantomData,
        }
    }
}

impl<K> CacheWriter<K>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    pub fn as_reader(&self) -> Cache<K> {
        Cache {
            objects: self.objects.clone(),
            prototype: self.prototype.clone(),
            synced: self.synced.subscribe(),
            kind: PhantomData,
        }
    }

    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(object) => {
                if let Some((key, json)) = self.entry(object) {
                    self.live().insert(key, json);
                }
            }
            watcher::Event::Delete(object) => {
                self.live().remove(&key(object));
            }
            watcher::Event::Init => self.relisting = Objects::new(),
            watcher::Event::InitApply(object) => {
                if let Some((key, json)) = self.entry(object) {
                    self.relisting.insert(key, json);
                }
            }
            watcher::Event::InitDone => {
                *self.live() = std::mem::take(&mut self.relisting);
                self.synced.send_replace(true);
            }
        }
    }

    fn live(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.objects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `object`'s key, and its JSON compressed against the prototype (`object` becomes the
    /// prototype when the cache has none yet).
    fn entry(&self, object: &K) -> Option<(Key, Entry)> {
        let json = match serde_json::to_vec(object) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(%error, kind = %K::kind(&()), "a watched object does not encode; not cached");
                return None;
            }
        };
        let prototype = self
            .prototype
            .get_or_init(|| json.clone().into_boxed_slice());
        let compressed = lz4_flex::block::compress_prepend_size_with_dict(&json, prototype);
        let entry = Entry {
            version: object.meta().resource_version.as_deref().map(Box::from),
            json: compressed.into(),
        };
        Some((key(object), entry))
    }
}

fn key<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A cache: its reader and its writer.
pub fn cache<K>() -> (Cache<K>, CacheWriter<K>)
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let writer = CacheWriter::default();
    (writer.as_reader(), writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
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
    fn seen(cache: &Cache<Pod>, namespace: &str) -> Vec<(String, String)> {
        cache
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
    fn versions_names_and_json_are_read_without_the_typed_object() {
        let (cache, mut writer) = cache::<Pod>();
        let mut first = pod("tenant-a", "redis-0", "Running");
        first.metadata.resource_version = Some("41".into());
        writer.apply_watcher_event(&Event::Apply(first));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "server", "Pending")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-ab", "other", "Running")));
        let key = ObjectRef::new("redis-0").within("tenant-a");
        assert_eq!(cache.version(&key), Some(Some("41".into())));
        assert_eq!(
            cache.version(&ObjectRef::new("server").within("tenant-a")),
            Some(None),
            "cached, without a version"
        );
        assert_eq!(cache.version(&ObjectRef::new("x").within("tenant-a")), None);
        assert_eq!(cache.names_in_namespace("tenant-a"), ["redis-0", "server"]);
        let json = cache.json_value(&key).expect("cached");
        assert_eq!(json["status"]["phase"], "Running");
        assert_eq!(json["metadata"]["resourceVersion"], "41");
    }

    #[test]
    fn an_object_reads_back_as_it_was_delivered() {
        let (cache, mut writer) = cache::<StatefulSet>();
        let sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r", "namespace": "tenant-a", "resourceVersion": "7",
                "labels": {"app": "redis"}, "annotations": {"x": "y"}},
            "spec": {"replicas": 3, "serviceName": "r", "selector": {"matchLabels": {"app": "redis"}},
                "template": {"metadata": {"labels": {"app": "redis"}},
                    "spec": {"containers": [{"name": "redis", "image": "redis:7",
                        "resources": {"limits": {"cpu": "500m"}}}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}
        }))
        .expect("a StatefulSet");
        writer.apply_watcher_event(&Event::Apply(sts.clone()));
        let key = ObjectRef::new("r").within("tenant-a");
        assert_eq!(cache.get(&key).as_deref(), Some(&sts));
        assert_eq!(cache.metadata(&key), Some(sts.metadata.clone()));
        assert!(cache.contains(&key));
        assert_eq!(cache.names_in_namespace("tenant-a"), ["r"]);
        assert_eq!(cache.get(&ObjectRef::new("r").within("tenant-b")), None);
        assert_eq!(cache.get(&ObjectRef::new("r")), None, "not cluster-scoped");
    }

    fn redis_statefulset(tenant: &str) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{tenant}-redis"), "namespace": format!("tenant-{tenant}"),
                "uid": format!("uid-{tenant}"), "resourceVersion": "7",
                "labels": {"app.kubernetes.io/name": "redis", "neurallog.io/tenant": tenant}},
            "spec": {"replicas": 1, "serviceName": format!("{tenant}-redis"),
                "selector": {"matchLabels": {"app.kubernetes.io/name": "redis", "neurallog.io/tenant": tenant}},
                "template": {"metadata": {"labels": {"app.kubernetes.io/name": "redis", "neurallog.io/tenant": tenant}},
                    "spec": {"containers": [{"name": "redis", "image": "redis:7.2-alpine",
                        "args": ["/etc/redis/redis.conf"], "ports": [{"containerPort": 6379, "name": "redis"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"},
                            "requests": {"cpu": "100m", "memory": "128Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                            {"name": "config", "mountPath": "/etc/redis"}]}],
                        "volumes": [{"name": "config", "configMap": {"name": format!("{tenant}-redis-config")}}]}}},
            "status": {"replicas": 1, "readyReplicas": 1}
        }))
        .expect("a StatefulSet")
    }

    #[test]
    fn objects_like_the_first_take_a_fraction_of_their_json() {
        let (cache, mut writer) = cache::<StatefulSet>();
        let first = redis_statefulset("alpha");
        let second = redis_statefulset("bravo-team");
        writer.apply_watcher_event(&Event::Apply(first.clone()));
        writer.apply_watcher_event(&Event::Apply(second.clone()));
        let json = serde_json::to_vec(&second).expect("encodes").len();
        let kept = cache
            .json(&ObjectRef::new("bravo-team-redis").within("tenant-bravo-team"))
            .expect("cached")
            .len();
        assert!(kept * 4 < json, "{kept} bytes kept of {json} bytes of JSON");
        let key = ObjectRef::new("bravo-team-redis").within("tenant-bravo-team");
        assert_eq!(cache.get(&key).as_deref(), Some(&second));
        let key = ObjectRef::new("alpha-redis").within("tenant-alpha");
        assert_eq!(cache.get(&key).as_deref(), Some(&first));
    }

    #[test]
    fn an_object_unlike_the_first_reads_back_whole() {
        let (cache, mut writer) = cache::<StatefulSet>();
        let small = StatefulSet {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("tenant-s".into()),
                ..ObjectMeta::default()
            },
            ..StatefulSet::default()
        };
        let large = redis_statefulset("a-much-longer-tenant-name-than-the-prototype-had");
        writer.apply_watcher_event(&Event::Apply(small.clone()));
        writer.apply_watcher_event(&Event::Apply(large.clone()));
        let key = ObjectRef::new("a-much-longer-tenant-name-than-the-prototype-had-redis")
            .within("tenant-a-much-longer-tenant-name-than-the-prototype-had");
        assert_eq!(cache.get(&key).as_deref(), Some(&large));
        // The prototype stays when it is deleted: later objects still decode.
        writer.apply_watcher_event(&Event::Delete(small));
        assert_eq!(cache.get(&key).as_deref(), Some(&large));
    }

    #[test]
    fn a_cluster_scoped_object_is_read_without_a_namespace() {
        let (cache, mut writer) = cache::<Namespace>();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("tenant-a".into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        writer.apply_watcher_event(&Event::Apply(ns.clone()));
        assert_eq!(cache.get(&ObjectRef::new("tenant-a")).as_deref(), Some(&ns));
        writer.apply_watcher_event(&Event::Delete(ns));
        assert_eq!(cache.get(&ObjectRef::new("tenant-a")), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn only_the_namespace_asked_for_is_returned() {
        let (cache, mut writer) = cache::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-b", "b-redis-0", "Pending")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-server-x", "Pending")));
        // A namespace whose name extends another's is another namespace.
        writer.apply_watcher_event(&Event::Apply(pod("tenant-ab", "ab-redis-0", "Running")));
        assert_eq!(
            seen(&cache, "tenant-a"),
            pairs(&[("a-redis-0", "Running"), ("a-server-x", "Pending")])
        );
        assert_eq!(seen(&cache, "tenant-b"), pairs(&[("b-redis-0", "Pending")]));
        assert!(seen(&cache, "tenant-c").is_empty());
    }

    #[test]
    fn a_modified_object_is_returned_as_it_is_now_and_once() {
        let (cache, mut writer) = cache::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Pending")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        assert_eq!(seen(&cache, "tenant-a"), pairs(&[("a-redis-0", "Running")]));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_deleted_object_is_gone_and_its_neighbours_stay() {
        let (cache, mut writer) = cache::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-1", "Running")));
        writer.apply_watcher_event(&Event::Delete(pod("tenant-a", "a-redis-0", "Running")));
        assert_eq!(seen(&cache, "tenant-a"), pairs(&[("a-redis-1", "Running")]));
        writer.apply_watcher_event(&Event::Delete(pod("tenant-a", "a-redis-1", "Running")));
        assert!(seen(&cache, "tenant-a").is_empty());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_old_objects_only_once_complete() {
        let (cache, mut writer) = cache::<Pod>();
        writer.apply_watcher_event(&Event::Apply(pod("tenant-a", "a-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Apply(pod("tenant-b", "b-redis-0", "Running")));
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(pod("tenant-a", "a-redis-1", "Pending")));
        // Until the list is complete, the cache shows what it held before.
        assert_eq!(seen(&cache, "tenant-a"), pairs(&[("a-redis-0", "Running")]));
        writer.apply_watcher_event(&Event::InitDone);
        // Deleted while the watch was down: gone with the relist.
        assert!(seen(&cache, "tenant-b").is_empty());
        assert_eq!(seen(&cache, "tenant-a"), pairs(&[("a-redis-1", "Pending")]));
    }

    #[tokio::test]
    async fn ready_once_the_first_list_is_complete() {
        let (cache, mut writer) = cache::<Pod>();
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.wait_until_ready().await }
        });
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(pod("tenant-a", "a-redis-0", "Running")));
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            cache.wait_until_ready(),
        );
        assert!(early.await.is_err(), "ready before the list is complete");
        writer.apply_watcher_event(&Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("ready in time")
            .expect("the waiter runs")
            .expect("synced");
    }

    #[tokio::test]
    async fn a_watch_that_ends_unsynced_is_reported() {
        let (cache, writer) = cache::<Pod>();
        drop(writer);
        assert!(cache.wait_until_ready().await.is_err());
    }
}
