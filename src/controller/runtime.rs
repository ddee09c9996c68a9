//! Running the controller: the watch caches and what triggers a pass, readiness, and the
//! per-tenant backoff.

use super::cache::{self, Cache, CacheWriter, NeverSynced};
use super::lean::{self, Lean, ManagedFields, Omitted};
use super::own_writes::OwnWrites;
use super::pass::{error_policy, reconcile};
use super::triggers::{
    ChangeTriggers, Phases, WantedSizes, cron_job_read, deployment_read, pod_triggers,
    redis_claim_triggers, statefulset_read,
};
use super::{Context, Stores};
use crate::crd::Tenant;
use crate::render;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Label selector of everything the operator creates.
pub fn managed_selector() -> String {
    format!("{}={}", render::MANAGED_BY_LABEL, render::MANAGED_BY_VALUE)
}

/// Marks the operator ready once every cache holds its initial list, and says which
/// caches it still waits for while it waits (an operator that never gets ready tells why).
async fn report_readiness(
    stores: Stores,
    tenants: Store<Tenant>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    use futures::future::BoxFuture;
    let mut pending: Vec<(&'static str, BoxFuture<'static, _>)> = vec![
        (
            "tenants",
            Box::pin(async move { tenants.wait_until_ready().await.map_err(|_| NeverSynced) }),
        ),
        ("namespaces", wait_ready(stores.namespaces)),
        ("configmaps", wait_ready(stores.config_maps)),
        ("services", wait_ready(stores.services)),
        ("statefulsets", wait_ready(stores.statefulsets)),
        ("deployments", wait_ready(stores.deployments)),
        ("networkpolicies", wait_ready(stores.network_policies)),
        ("resourcequotas", wait_ready(stores.quotas)),
        ("limitranges", wait_ready(stores.limit_ranges)),
        (
            "poddisruptionbudgets",
            wait_ready(stores.disruption_budgets),
        ),
        ("horizontalpodautoscalers", wait_ready(stores.autoscalers)),
        ("cronjobs", wait_ready(stores.cron_jobs)),
        ("persistentvolumeclaims", wait_ready(stores.claims)),
        ("pods", wait_ready(stores.pods)),
        ("persistentvolumeclaims", wait_ready(stores.redis_claims)),
    ];
    let mut next_report = std::time::Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (name, mut fut) in pending {
            match futures::poll!(fut.as_mut()) {
                std::task::Poll::Ready(Ok(())) => tracing::debug!(cache = name, "cache synced"),
                std::task::Poll::Ready(Err(e)) => {
                    tracing::error!(cache = name, error = %e, "cache can never sync");
                    return;
                }
                std::task::Poll::Pending => still.push((name, fut)),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if std::time::Instant::now() >= next_report {
            let names: Vec<_> = pending.iter().map(|(n, _)| *n).collect();
            tracing::warn!(waiting_for = ?names, "caches not synced yet");
            next_report += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    info!("caches synced");
}

fn wait_ready<K>(cache: Cache<K>) -> futures::future::BoxFuture<'static, Result<(), NeverSynced>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + 'static,
{
    Box::pin(async move { cache.wait_until_ready().await })
}

/// Backoff of the controller's merged trigger stream. One backoff pauses every watch at
/// once, and kube's default grows to 30 s and resets only after 120 s without an error: after
/// an API server restart each watch fails once in turn, and the pauses added up to minutes
/// without any Tenant event. The owned caches back off on their own; this stays short.
#[derive(Debug, Clone)]
struct TriggerBackoff {
    next: Duration,
}

impl TriggerBackoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(3);
}

impl Default for TriggerBackoff {
    fn default() -> Self {
        TriggerBackoff { next: Self::FIRST }
    }
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(Self::MAX);
        Some(current)
    }
}

impl Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

type Watch<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

/// Objects per page of a cache's initial list. Eight caches list at once at start-up, and
/// each page is held whole while it is decoded: kube's default of 500 made those pages the
/// operator's peak memory at 1,000 tenants.
const LIST_PAGE_SIZE: u32 = 50;

/// What a watch cache can hold: a Kubernetes object that is decoded from a watch and
/// serialised to tell which of its events start a pass.
trait Cached:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
}

impl<K> Cached for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static
{
}

/// A cache of our objects of kind `K`; an event starts a pass when it changes what
/// `read` keeps of the object (see [`ChangeTriggers`]) and is not the echo of one of
/// `own` writes.
fn owned_cache<K>(
    client: &Client,
    own: &OwnWrites,
    read: impl Fn(&mut K) + Send + Sync + 'static,
) -> (Cache<K>, Watch<K>)
where
    K: Cached,
{
    let (reader, writer) = cache::cache();
    (reader, managed_cache(client, own, writer, read))
}

/// Our objects of kind `K` without their managed fields, kept by `writer`.
fn managed_cache<K>(
    client: &Client,
    own: &OwnWrites,
    writer: CacheWriter<K>,
    read: impl Fn(&mut K) + Send + Sync + 'static,
) -> Watch<K>
where
    K: Cached,
{
    let triggers = ChangeTriggers::new(read).recognising(own.clone());
    cache_selected::<K, ManagedFields>(client, &managed_selector(), writer, triggers)
}

/// Passes each watch event on after `writer` kept it (what kube's `reflect` does).
fn keeping_in<K: Cached>(
    mut writer: CacheWriter<K>,
) -> impl FnMut(watcher::Result<watcher::Event<K>>) -> watcher::Result<watcher::Event<K>> {
    move |event| {
        if let Ok(event) = &event {
            writer.apply_watcher_event(event);
        }
        event
    }
}

/// What the pod cache keeps of a pod: what says why it does not run. Its spec (the bulk of
/// a pod) and annotations are not even decoded.
struct PodStatus;

impl Omitted for PodStatus {
    const FIELDS: &'static [&'static str] = &["spec"];
    const METADATA: &'static [&'static str] = &["managedFields", "annotations"];
}

/// What the Redis claim cache keeps of a claim: no annotations (the volume binding's).
struct WithoutAnnotations;

impl Omitted for WithoutAnnotations {
    const FIELDS: &'static [&'static str] = &[];
    const METADATA: &'static [&'static str] = &["managedFields", "annotations"];
}

/// The tenants' pods with only what says why one does not run (see [`PodStatus`]). Only
/// the events that change what a pass reads from a pod start one (see `triggers`).
fn pod_cache(client: &Client) -> (Cache<Pod>, Watch<Pod>) {
    let (reader, writer) = cache::cache();
    let events = watcher(
        Api::<Lean<Pod, PodStatus>>::all(client.clone()),
        cache_config(&managed_selector()),
    )
    .default_backoff()
    .map_ok(lean::into_inner_event)
    .map(keeping_in(writer));
    let stream = pod_triggers(Box::pin(events)).map_ok(starts_pass);
    (reader, Box::pin(stream))
}

/// Logs (at debug level) that the watch event of `object` starts a pass: which kinds'
/// events start how many passes, with
/// `RUST_LOG=info,kube=warn,neurallog_operator::controller::runtime=debug`.
fn starts_pass<K: Resource<DynamicType = ()>>(object: K) -> K {
    tracing::debug!(
        kind = %K::kind(&()),
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
        "event starts a pass"
    );
    object
}

/// Every owned-object cache: our label, from the watch cache, in small pages.
fn cache_config(selector: &str) -> watcher::Config {
    watcher::Config::default()
        .labels(selector)
        .any_semantic()
        .page_size(LIST_PAGE_SIZE)
}

/// The tenants' Redis data claims. The StatefulSet controller labels them with the
/// StatefulSet's pod selector, which has no managed-by label: they are selected by the
/// tenant and component labels instead.
fn redis_claim_cache(
    client: &Client,
    wanted: &WantedSizes,
) -> (Cache<PersistentVolumeClaim>, Watch<PersistentVolumeClaim>) {
    let selector = format!("{},{}=redis", render::TENANT_LABEL, render::COMPONENT_LABEL);
    let (reader, writer) = cache::cache();
    let triggers = redis_claim_triggers(wanted.clone());
    let watch = cache_selected::<_, WithoutAnnotations>(client, &selector, writer, triggers);
    (reader, watch)
}

/// The tenant a claim or pod belongs to, by its tenant label (pods are owned by ReplicaSets
/// and StatefulSets, claims by no one, not by the Tenant).
fn labelled_tenant<K: Resource>(object: K) -> Option<ObjectRef<Tenant>> {
    object
        .meta()
        .labels
        .as_ref()?
        .get(render::TENANT_LABEL)
        .map(|name| ObjectRef::new(name))
}

/// The watch of the `K` that `selector` selects, decoded without what `O` omits and kept
/// by `writer`; `triggers` tells which of its events start a pass.
fn cache_selected<K, O>(
    client: &Client,
    selector: &str,
    writer: CacheWriter<K>,
    mut triggers: ChangeTriggers<K>,
) -> Watch<K>
where
    K: Cached,
    O: Omitted + 'static,
{
    let api = Api::<Lean<K, O>>::all(client.clone());
    let stream = watcher(api, cache_config(selector))
        .default_backoff()
        .map_ok(lean::into_inner_event)
        .map(keeping_in(writer))
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(event) => triggers.on_event(event).map(starts_pass).map(Ok),
                Err(error) => Some(Err(error)),
            })
        });
    Box::pin(stream)
}

/// The Tenants owning `child`, as references without a namespace. kube's `owns_stream`
/// gives a cluster-scoped owner of a namespaced child the child's namespace; the runner
/// then takes that reference for another object than the Tenant's own and runs two passes
/// of one Tenant at once (two appends at the same journal sequence, twice the applies).
fn owning_tenants<K: Resource>(child: K) -> Vec<ObjectRef<Tenant>> {
    let api_version = Tenant::api_version(&());
    let kind = Tenant::kind(&());
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| owner.api_version == api_version && owner.kind == kind)
        .map(|owner| ObjectRef::new(&owner.name))
        .collect()
}

/// Builds the caches and the controller and runs until `shutdown` resolves; in-flight
/// reconciles finish first.
pub async fn run(
    client: Client,
    make_context: impl FnOnce(Stores) -> Context,
    concurrency: u16,
    tenant_selector: Option<&str>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // What a pass reads of each kind, besides metadata and spec: the namespace's phase,
    // the workloads' readiness, the backup times; no other status.
    let own = OwnWrites::default();
    let (namespaces, ns_watch) = owned_cache::<Namespace>(&client, &own, |ns| {
        if let Some(status) = &mut ns.status {
            status.conditions = None;
        }
    });
    let (config_maps, cm_watch) = owned_cache::<ConfigMap>(&client, &own, |_| {});
    let (services, svc_watch) = owned_cache::<Service>(&client, &own, |s| s.status = None);
    let phases = Phases::default();
    let (statefulsets, sts_watch) =
        owned_cache::<StatefulSet>(&client, &own, statefulset_read(phases.clone()));
    let (deployments, deploy_watch) =
        owned_cache::<Deployment>(&client, &own, deployment_read(phases.clone()));
    let (network_policies, np_watch) = owned_cache::<NetworkPolicy>(&client, &own, |_| {});
    let (quotas, quota_watch) = owned_cache::<ResourceQuota>(&client, &own, |q| q.status = None);
    let (limit_ranges, lr_watch) = owned_cache::<LimitRange>(&client, &own, |_| {});
    let (disruption_budgets, pdb_watch) =
        owned_cache::<PodDisruptionBudget>(&client, &own, |b| b.status = None);
    let (autoscalers, hpa_watch) =
        owned_cache::<HorizontalPodAutoscaler>(&client, &own, |a| a.status = None);
    let (cron_jobs, cron_job_watch) = owned_cache::<CronJob>(&client, &own, cron_job_read);
    // The backup claim: read for its requested size only.
    let (claims, claim_watch) =
        owned_cache::<PersistentVolumeClaim>(&client, &own, |c| c.status = None);
    let (pods, pod_watch) = pod_cache(&client);
    let wanted_sizes = WantedSizes::default();
    let (redis_claims, redis_claim_watch) = redis_claim_cache(&client, &wanted_sizes);
    let stores = Stores {
        namespaces,
        config_maps,
        services,
        statefulsets,
        deployments,
        network_policies,
        quotas,
        limit_ranges,
        disruption_budgets,
        autoscalers,
        cron_jobs,
        claims,
        pods,
        redis_claims,
    };
    let ctx = Arc::new(
        make_context(stores.clone())
            .with_caches_synced(ready.clone())
            .with_own_writes(own)
            .with_wanted_sizes(wanted_sizes)
            .with_phases(phases),
    );
    let tenants: Api<Lean<Tenant>> = Api::all(client.clone());
    let mut tenant_watch = watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    if let Some(selector) = tenant_selector {
        tenant_watch = tenant_watch.labels(selector);
    }
    let (tenant_store, tenant_writer) = reflector::store();
    // Managed fields are not decoded here either: a Tenant's status entry alone would
    // decode into a tree of maps many times the size of the status it describes.
    let echoes = ctx.clone();
    let tenant_stream = watcher(tenants, tenant_watch)
        .map_ok(lean::into_inner_event)
        .reflect(tenant_writer)
        .applied_objects()
        .filter(move |tenant| {
            let own = matches!(tenant, Ok(t) if echoes.own_writes.is_echo(t) || echoes.is_own_write_echo(t));
            futures::future::ready(!own)
        })
        .map_ok(starts_pass);
    let controller = Controller::for_stream(tenant_stream, tenant_store)
        .watches_stream(ns_watch, owning_tenants)
        .watches_stream(cm_watch, owning_tenants)
        .watches_stream(svc_watch, owning_tenants)
        .watches_stream(sts_watch, owning_tenants)
        .watches_stream(deploy_watch, owning_tenants)
        .watches_stream(np_watch, owning_tenants)
        .watches_stream(quota_watch, owning_tenants)
        .watches_stream(lr_watch, owning_tenants)
        .watches_stream(pdb_watch, owning_tenants)
        .watches_stream(hpa_watch, owning_tenants)
        .watches_stream(pod_watch, labelled_tenant)
        .watches_stream(redis_claim_watch, labelled_tenant)
        .watches_stream(cron_job_watch, owning_tenants)
        .watches_stream(claim_watch, owning_tenants)
        .with_config(
            controller::Config::default()
                .concurrency(concurrency)
                .debounce(Duration::from_millis(100)),
        )
        .trigger_backoff(ResetTimerBackoff::new(
            TriggerBackoff::default(),
            Duration::from_secs(30),
        ))
        .graceful_shutdown_on(shutdown);
    let tenant_store = controller.store();
    let readiness = tokio::spawn(report_readiness(stores, tenant_store, ready));
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    readiness.abort();
}

#[cfg(test)]
mod trigger_backoff_tests {
    use super::*;

    #[test]
    fn trigger_backoff_doubles_to_its_cap_and_resets() {
        let mut b = TriggerBackoff::default();
        let first: Vec<u64> = b.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, vec![200, 400, 800, 1600, 3000, 3000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(200)));
    }
}

#[cfg(test)]
mod owner_trigger_tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn owned_by(api_version: &str, kind: &str, name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("t-redis-config".into()),
                namespace: Some("tenant-t".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: "uid-1".into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn a_namespaced_child_triggers_the_same_reference_as_the_tenant_itself() {
        let triggered = owning_tenants(owned_by("neurallog.io/v1", "Tenant", "t"));
        assert_eq!(triggered, vec![ObjectRef::<Tenant>::new("t")]);
        assert_eq!(triggered[0].namespace, None);
    }

    #[test]
    fn other_owners_trigger_nothing() {
        assert!(owning_tenants(owned_by("apps/v1", "Deployment", "t")).is_empty());
        assert!(owning_tenants(owned_by("neurallog.io/v2", "Tenant", "t")).is_empty());
        assert!(owning_tenants(ConfigMap::default()).is_empty());
    }
}
