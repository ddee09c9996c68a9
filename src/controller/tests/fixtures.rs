//! A pass without a cluster: a scripted API server on a `tower-test` mock service, watch
//! caches that the tests (and the API server's answers) fill as the watches would, a
//! journal in a temporary directory, and the Auth stub.
//!
//! Every scenario hands a pass the script of the requests it must make, in order: each
//! request must be the next one of the script (method, path, patch type, key body
//! fields), the pass must make them all, and a request beyond the script fails the test.

use crate::auth::{AuthClient, AuthConfig, RetryPolicy};
use crate::controller::cache::CacheWriter;
use crate::controller::compare::{DESIRED_HASH_ANNOTATION, desired_hash};
use crate::controller::events::transition_event_name;
use crate::controller::observation::{AuthState, NamespaceState, Observation, WorkloadState};
use crate::controller::registration::Ownership;
use crate::controller::status::{JournalTail, desired_status};
use crate::controller::triggers::ChangeTriggers;
use crate::controller::{Context, Error, FINALIZER, Stores, reconcile};
use crate::crd::{Tenant, TenantStatus, namespace_for};
use crate::journal::slot::JournalSlot;
use crate::journal::{Journal, JournalError, Record};
use crate::metrics::Metrics;
use crate::render::test_support::basic;
use crate::render::{self, RenderError, RenderSettings};
use futures::FutureExt;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use neurallog_auth_stub::{AuthStub, AuthStubHandle};
use neurallog_machines::{Input, Phase, Trigger};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The admin user the operator registers tenants with when they name none.
pub(super) const ADMIN: &str = "admin-1";

const TENANT_PATH: &str = "/apis/neurallog.io/v1/tenants/my-tenant";
const NAMESPACE: &str = "tenant-my-tenant";
const EVENTS_PATH: &str = "/api/v1/namespaces/default/events";
const JSON_PATCH: &str = "application/json-patch+json";
pub(super) const MERGE_PATCH: &str = "application/merge-patch+json";
pub(super) const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// Longest a pass may take here. The slowest wait a pass has is the own-writes wait of
/// the applier (2 s), which the answers below make unnecessary: they fill the caches.
const PASS_DEADLINE: Duration = Duration::from_secs(10);

/// The Tenant of `examples/basic-tenant.yaml` as the API server holds it.
pub(super) fn tenant() -> Tenant {
    let mut tenant = basic();
    tenant.metadata.resource_version = Some("1".into());
    tenant
}

/// How the scripted API server answers a request.
pub(super) enum Reply {
    /// 201 with the object sent, now stored (with a uid and a resourceVersion) and
    /// delivered to the watch cache of its kind, if the operator watches it.
    Created,
    /// As `Created`, but the watch delivers the namespace only after the pass read the
    /// answer (when its next request comes), through the operator's trigger filter (see
    /// [`ApiServer::namespace_passes`]): as a real watch usually does.
    CreatedNamespaceEchoedLater,
    /// As `Created`, but the watch delivers the namespace through the operator's trigger
    /// filter before the answer is sent: the echo overtakes the answer, as under load.
    CreatedNamespaceEchoedFirst,
    /// The stored Tenant after the request's JSON patch or merge patch.
    PatchedTenant,
    /// The tenant namespace as cached, now terminating, and delivered so to the cache:
    /// the namespace controller has not removed it yet.
    Terminating,
    /// A `Status` error with this code and reason.
    Failure(u16, &'static str),
    /// 200 with this object, now stored and delivered to the watch cache of its kind, if
    /// the operator watches it.
    Stored(Value),
}

/// One request a pass must make, and the API server's answer.
pub(super) struct Exchange {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    /// JSON pointer into the request body, and the value it must hold there.
    fields: Vec<(String, Value)>,
    reply: Reply,
}

impl Exchange {
    pub(super) fn new(method: Method, path: &str, reply: Reply) -> Self {
        Exchange {
            method,
            path: path.into(),
            content_type: None,
            fields: Vec::new(),
            reply,
        }
    }

    pub(super) fn patch(path: &str, content_type: &'static str) -> Self {
        Exchange {
            content_type: Some(content_type),
            ..Self::new(Method::PATCH, path, Reply::PatchedTenant)
        }
    }

    /// The request body must hold `value` at JSON pointer `pointer`.
    pub(super) fn with(mut self, pointer: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.push((pointer.into(), value.into()));
        self
    }

    pub(super) fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The namespace read from the API server, which does not have it.
pub(super) fn get_namespace() -> Exchange {
    let path = format!("/api/v1/namespaces/{NAMESPACE}");
    Exchange::new(Method::GET, &path, Reply::Failure(404, "NotFound"))
}

/// The namespace created with the hash of what was rendered: the next pass finds it current.
pub(super) fn create_namespace() -> Exchange {
    let hash = format!(
        "/metadata/annotations/{}",
        DESIRED_HASH_ANNOTATION.replace('/', "~1")
    );
    let rendered = applied(render::namespace(&tenant()));
    let rendered_hash = rendered.pointer(&hash).cloned().expect("a hash");
    Exchange::new(Method::POST, "/api/v1/namespaces", Reply::Created)
        .with("/metadata/name", NAMESPACE)
        .with(hash, rendered_hash)
}

/// The namespace deleted only if it still is the one of uid `uid`.
pub(super) fn delete_namespace(uid: &str) -> Exchange {
    let path = format!("/api/v1/namespaces/{NAMESPACE}");
    Exchange::new(Method::DELETE, &path, Reply::Terminating).with("/preconditions/uid", uid)
}

/// An Event on the Tenant.
pub(super) fn event(type_: &str, reason: &str) -> Exchange {
    Exchange::new(Method::POST, EVENTS_PATH, Reply::Created)
        .with("/type", type_)
        .with("/reason", reason)
        .with("/involvedObject/kind", "Tenant")
        .with("/involvedObject/name", "my-tenant")
}

/// The Event of journal record `seq`, a transition into `phase`.
pub(super) fn transition_event(seq: u64, phase: Phase) -> Exchange {
    let type_ = if phase.is_warning() {
        "Warning"
    } else {
        "Normal"
    };
    event(type_, phase.as_str()).with(
        "/metadata/name",
        transition_event_name(&tenant(), seq, None),
    )
}

/// The Event of journal record `seq`: a paused tenant resumed (into `Pending`).
pub(super) fn resumed_event(seq: u64) -> Exchange {
    event("Normal", "Resumed").with(
        "/metadata/name",
        transition_event_name(&tenant(), seq, None),
    )
}

/// The Event of journal record `seq`: Failed, because Auth already knew the name.
pub(super) fn registration_exists_event(seq: u64) -> Exchange {
    event("Warning", "RegistrationExists").with(
        "/metadata/name",
        transition_event_name(&tenant(), seq, None),
    )
}

/// The finalizers set to `finalizers`, guarded by the Tenant's `resource_version`.
pub(super) fn patch_finalizers(resource_version: &str, finalizers: &[&str]) -> Exchange {
    Exchange::patch(TENANT_PATH, JSON_PATCH)
        .with("/0/op", "test")
        .with("/0/path", "/metadata/resourceVersion")
        .with("/0/value", resource_version)
        .with("/1/op", "add")
        .with("/1/path", "/metadata/finalizers")
        .with("/1/value", json!(finalizers))
}

/// The status patched to show `phase`.
pub(super) fn patch_status(phase: &str) -> Exchange {
    Exchange::patch(&format!("{TENANT_PATH}/status"), MERGE_PATCH).with("/status/phase", phase)
}

/// An API server that answers a pass's requests from a script (see the module comment).
pub(super) struct ApiServer {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    watches: Watches,
    /// The Tenant as stored; tenant patches apply to it.
    tenant: Value,
    /// The stored Tenant's resourceVersion, bumped by each patch.
    version: u64,
    /// What the operator's namespace watch makes of the events delivered through it.
    namespace_triggers: ChangeTriggers<Namespace>,
    /// Whether each namespace event delivered through the trigger filter started a pass.
    pub(super) namespace_passes: Vec<bool>,
    /// A created namespace the watch has not delivered yet.
    late_namespace: Option<Value>,
}

impl ApiServer {
    /// The Tenant as stored.
    pub(super) fn tenant(&self) -> Tenant {
        serde_json::from_value(self.tenant.clone()).expect("the stored Tenant")
    }

    pub(super) fn store_tenant(&mut self, tenant: &Tenant) {
        self.tenant = serde_json::to_value(tenant).expect("a Tenant serializes");
    }

    /// The watch delivers `object` to the cache of its kind.
    pub(super) fn deliver(&mut self, object: &Value) {
        self.watches.deliver(object, false);
    }

    /// The watch delivers the namespace `object` to its cache through the operator's
    /// trigger filter, recording in [`Self::namespace_passes`] whether it starts a pass.
    pub(super) fn deliver_namespace(&mut self, object: &Value) {
        self.watches.deliver(object, false);
        let namespace: Namespace = serde_json::from_value(object.clone()).expect("a namespace");
        let starts = self
            .namespace_triggers
            .on_event(watcher::Event::Apply(namespace))
            .is_some();
        self.namespace_passes.push(starts);
    }

    /// The watch delivers the deletion of `object`.
    pub(super) fn remove(&mut self, object: &Value) {
        self.watches.deliver(object, true);
    }

    /// The StatefulSet `name` of the tenant namespace as cached.
    pub(super) fn cached_statefulset(&self, name: &str) -> Value {
        let cached = self
            .watches
            .statefulsets
            .as_reader()
            .get(&ObjectRef::new(name).within(NAMESPACE));
        serde_json::to_value(cached.expect("the StatefulSet is cached").as_ref())
            .expect("a StatefulSet serializes")
    }

    /// The namespace controller is done: the tenant namespace is gone, and its watch says so.
    pub(super) fn namespace_gone(&mut self) {
        let namespace = self.cached_namespace();
        self.watches.deliver(&namespace, true);
    }

    /// The tenant namespace as cached.
    pub(super) fn cached_namespace(&self) -> Value {
        let cached = self
            .watches
            .namespaces
            .as_reader()
            .get(&ObjectRef::new(NAMESPACE));
        serde_json::to_value(cached.expect("the namespace is cached").as_ref())
            .expect("a namespace serializes")
    }

    /// Runs `pass` while answering `script`; the pass must make exactly those requests.
    async fn during<T>(&mut self, script: Vec<Exchange>, pass: impl Future<Output = T>) -> T {
        let expected: Vec<String> = script.iter().map(Exchange::describe).collect();
        let answered = Cell::new(0);
        let server = async {
            for (n, exchange) in script.into_iter().enumerate() {
                let Some((request, respond)) = self.handle.next_request().await else {
                    break;
                };
                if let Some(namespace) = self.late_namespace.take() {
                    self.deliver_namespace(&namespace);
                }
                respond.send_response(self.answer(n, exchange, request).await);
                answered.set(n + 1);
            }
            if let Some((request, _)) = self.handle.next_request().await {
                panic!(
                    "a request beyond the script {expected:?}: {} {}",
                    request.method(),
                    request.uri()
                );
            }
        };
        let outcome = tokio::time::timeout(PASS_DEADLINE, async {
            tokio::select! {
                outcome = pass => outcome,
                () = server => unreachable!("the client lives as long as the context"),
            }
        })
        .await
        .expect("the pass finishes in time");
        let made = answered.get();
        assert_eq!(
            made,
            expected.len(),
            "the pass made {made} of the scripted requests; missing: {:?}",
            &expected[made..]
        );
        assert!(
            self.handle.next_request().now_or_never().is_none(),
            "a request came after the pass"
        );
        outcome
    }

    async fn answer(
        &mut self,
        n: usize,
        exchange: Exchange,
        request: Request<Body>,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let what = format!("request {} of the pass ({})", n + 1, exchange.describe());
        assert_eq!(
            format!("{} {}", parts.method, parts.uri.path()),
            exchange.describe(),
            "request {} of the pass",
            n + 1
        );
        if let Some(content_type) = exchange.content_type {
            let sent = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            assert_eq!(sent, Some(content_type), "{what}: content type");
        }
        let bytes = body.collect_bytes().await.expect("a request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        for (pointer, value) in &exchange.fields {
            assert_eq!(
                body.pointer(pointer),
                Some(value),
                "{what}: {pointer} in {body:#}"
            );
        }
        let (code, reply) = match exchange.reply {
            Reply::Created => {
                let object = stored(body);
                self.watches.deliver(&object, false);
                (201, object)
            }
            Reply::CreatedNamespaceEchoedLater => {
                let object = stored(body);
                self.late_namespace = Some(object.clone());
                (201, object)
            }
            Reply::CreatedNamespaceEchoedFirst => {
                let object = stored(body);
                self.deliver_namespace(&object);
                (201, object)
            }
            Reply::PatchedTenant => (200, self.patch_tenant(exchange.content_type, body)),
            Reply::Terminating => {
                let mut namespace = self.cached_namespace();
                namespace["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
                namespace["status"] = json!({"phase": "Terminating"});
                self.watches.deliver(&namespace, false);
                (200, namespace)
            }
            Reply::Stored(object) => {
                let object = stored(object);
                self.watches.deliver(&object, false);
                (200, object)
            }
            Reply::Failure(code, reason) => (
                code,
                json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                       "message": format!("scripted {reason}"), "reason": reason, "code": code}),
            ),
        };
        let body = serde_json::to_vec(&reply).expect("a JSON reply");
        Response::builder()
            .status(code)
            .body(Body::from(body))
            .expect("a response")
    }

    fn patch_tenant(&mut self, content_type: Option<&str>, patch: Value) -> Value {
        if content_type == Some(JSON_PATCH) {
            let patch: json_patch::Patch = serde_json::from_value(patch).expect("a JSON patch");
            json_patch::patch(&mut self.tenant, &patch.0).expect(
                "the JSON patch (its resourceVersion test too) applies to the stored Tenant",
            );
        } else {
            json_patch::merge(&mut self.tenant, &patch);
        }
        self.version += 1;
        self.tenant["metadata"]["resourceVersion"] = self.version.to_string().into();
        self.tenant.clone()
    }
}

/// `object` as the API server stores it: with a uid and a resourceVersion of its own (as
/// etcd's revision, every write gets a new one).
fn stored(mut object: Value) -> Value {
    static REVISION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let revision = REVISION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    object["metadata"]["uid"] = format!("uid-{name}").into();
    object["metadata"]["resourceVersion"] = revision.to_string().into();
    object
}

/// The uid the API server gives the tenant namespace.
pub(super) fn namespace_uid() -> String {
    format!("uid-{NAMESPACE}")
}

fn deliver<K>(writer: &mut CacheWriter<K>, object: &Value, deleted: bool)
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    let object: K = serde_json::from_value(object.clone()).expect("an object of its kind");
    let event = if deleted {
        watcher::Event::Delete(object)
    } else {
        watcher::Event::Apply(object)
    };
    writer.apply_watcher_event(&event);
}

/// The writing side of the operator's watch caches, one field per cache of [`Stores`].
macro_rules! watches {
    ($($cache:ident: $writer:ident<$kind:ty>),* $(,)?) => {
        struct Watches {
            $($cache: $writer<$kind>,)*
        }

        impl Watches {
            fn new() -> Self {
                Watches { $($cache: $writer::default(),)* }
            }

            fn stores(&self) -> Stores {
                Stores { $($cache: self.$cache.as_reader(),)* }
            }

            /// Delivers `object` (its deletion if `deleted`) to the cache of its kind; the
            /// operator watches no other kinds.
            fn deliver(&mut self, object: &Value, deleted: bool) {
                let kind = object["kind"].as_str().unwrap_or_default();
                $(if kind == <$kind as Resource>::kind(&()) {
                    deliver(&mut self.$cache, object, deleted);
                })*
            }
        }
    };
}

watches!(
    namespaces: CacheWriter<Namespace>,
    config_maps: CacheWriter<ConfigMap>,
    services: CacheWriter<Service>,
    statefulsets: CacheWriter<StatefulSet>,
    deployments: CacheWriter<Deployment>,
    network_policies: CacheWriter<NetworkPolicy>,
    quotas: CacheWriter<ResourceQuota>,
    limit_ranges: CacheWriter<LimitRange>,
    disruption_budgets: CacheWriter<PodDisruptionBudget>,
    autoscalers: CacheWriter<HorizontalPodAutoscaler>,
    cron_jobs: CacheWriter<CronJob>,
    claims: CacheWriter<PersistentVolumeClaim>,
    pods: CacheWriter<Pod>,
    redis_claims: CacheWriter<PersistentVolumeClaim>,
);

/// One operator's pass machinery around one Tenant, with no cluster.
pub(super) struct Fixture {
    pub(super) ctx: Arc<Context>,
    pub(super) api: ApiServer,
    pub(super) auth: AuthStubHandle,
    _journal_dir: tempfile::TempDir,
}

impl Fixture {
    /// A new operator (empty caches, empty journal, nothing remembered) and the API server
    /// holding `tenant`.
    /// Each pass takes one transition, so a test scripts one step at a time.
    pub(super) async fn new(tenant: Tenant) -> Self {
        Self::taking(tenant, 1).await
    }

    pub(super) async fn taking(tenant: Tenant, transitions_per_pass: u32) -> Self {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let watches = Watches::new();
        let stores = watches.stores();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let journal = Journal::open(&dir.path().join("journal")).expect("a journal");
        let auth = AuthStub::start("127.0.0.1:0".parse().expect("an address"), None)
            .await
            .expect("the Auth stub starts");
        let config = AuthConfig::new(&auth.url(), ADMIN)
            .expect("an Auth configuration")
            .with_retry(RetryPolicy::no_retries());
        let ctx = Context::new(
            Client::new(service, "default"),
            Arc::new(JournalSlot::new(journal)),
            AuthClient::new(config).expect("an Auth client"),
            RenderSettings::default(),
            Arc::new(Metrics::default()),
            stores,
            "test-operator".into(),
        )
        .with_transitions_per_pass(transitions_per_pass);
        let version = tenant
            .resource_version()
            .map_or(0, |v| v.parse().unwrap_or(0));
        let api = ApiServer {
            handle,
            watches,
            tenant: serde_json::to_value(&tenant).expect("a Tenant serializes"),
            version,
            namespace_triggers: ChangeTriggers::new(|_| {}).recognising(ctx.own_writes.clone()),
            namespace_passes: Vec::new(),
            late_namespace: None,
        };
        Fixture {
            ctx: Arc::new(ctx),
            api,
            auth,
            _journal_dir: dir,
        }
    }

    /// One pass over the Tenant as stored, which must make exactly the requests of `script`.
    pub(super) async fn pass(&mut self, script: Vec<Exchange>) -> Result<Action, Error> {
        let tenant = Arc::new(self.api.tenant());
        self.api
            .during(script, reconcile(tenant, self.ctx.clone()))
            .await
    }

    /// Journals the transition `trigger` causes from the tail, as a pass does.
    pub(super) async fn journal(&self, trigger: Trigger) -> Record {
        let tenant = self.api.tenant();
        let tail = self.last();
        let input = Input::new(trigger, tenant.metadata.generation.unwrap_or(0));
        self.ctx
            .append(&tenant, tail.as_ref(), input)
            .await
            .expect("the journal appends")
            .expect("the trigger causes a transition")
    }

    /// The last journal record of the Tenant.
    pub(super) fn tail(&self) -> Record {
        self.last().expect("a journaled tenant")
    }

    fn last(&self) -> Option<Record> {
        let uid = self.api.tenant().uid().expect("a uid");
        self.ctx
            .journal
            .with(|j| j.last(&uid))
            .expect("the journal reads")
    }

    /// The disk fails under the journal: the slot closes it, and it cannot reopen it, since
    /// the records it acknowledged are gone with its directory.
    pub(super) fn break_journal(&self) {
        let eio = || JournalError::Storage(sled::Error::Io(std::io::Error::from_raw_os_error(5)));
        let failed: Result<(), _> = self.ctx.journal.with(|_| Err(eio()));
        assert!(failed.is_err());
        std::fs::remove_dir_all(self.ctx.journal.path()).expect("the journal directory goes");
        assert!(self.ctx.journal.unwritable().is_some());
    }
}

/// A Tenant that earlier passes took through `triggers`: journaled, its finalizer on,
/// everything its phase needs applied and ready in the caches, its status mirrored, and
/// Auth as `auth` in the operator's memory.
pub(super) async fn settled(triggers: &[Trigger], auth: AuthState) -> Fixture {
    settled_taking(triggers, auth, 1).await
}

/// [`settled`], its passes taking up to `transitions_per_pass` transitions.
pub(super) async fn settled_taking(
    triggers: &[Trigger],
    auth: AuthState,
    transitions_per_pass: u32,
) -> Fixture {
    let mut tenant = tenant();
    tenant.finalizers_mut().push(FINALIZER.into());
    let mut fx = Fixture::taking(tenant.clone(), transitions_per_pass).await;
    let mut tail = None;
    for trigger in triggers {
        tail = Some(fx.journal(*trigger).await);
    }
    let tail = tail.expect("at least one transition");
    for object in provisioned(&tenant, &fx.ctx.settings) {
        fx.api.deliver(&object);
    }
    fx.ctx.set_auth_state(&tenant, auth.clone());
    let observed = Observation {
        namespace: NamespaceState::Ours { active: true },
        redis: WorkloadState::all_ready(tenant.spec.redis.replicas),
        server: WorkloadState::all_ready(tenant.spec.server.replicas),
        auth,
        registration: if triggers.contains(&Trigger::RedisReady) {
            Ownership::Ours
        } else {
            Ownership::None
        },
        ..Observation::default()
    };
    tenant.status = Some(mirrored_status(&tail, &observed));
    fx.api.store_tenant(&tenant);
    fx
}

/// The status a pass mirrors for journal record `tail` and observation `observed`.
fn mirrored_status(tail: &Record, observed: &Observation) -> TenantStatus {
    let journaled = JournalTail {
        phase: tail.to,
        sequence: tail.seq,
        hash: tail.hash.to_hex(),
        message: tail.message.clone(),
        chain: None,
    };
    let namespace = namespace_for(&tail.tenant);
    desired_status(
        Some(&journaled),
        &namespace,
        1,
        observed,
        None,
        chrono::Utc::now(),
    )
}

/// Everything a pass in a provisioned phase applies, as the applier left it: rendered,
/// with its desired-state hash, stored, and the workloads rolled out and ready.
fn provisioned(tenant: &Tenant, settings: &RenderSettings) -> Vec<Value> {
    let ready = |mut workload: Value, replicas: i32| {
        workload["status"] = json!({"observedGeneration": 1, "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas});
        workload
    };
    let mut objects = vec![
        applied(render::namespace(tenant)),
        applied(render::limit_range(tenant)),
        applied(render::resource_quota(tenant)),
        applied(render::redis_config_map(tenant)),
        applied(render::redis_service(tenant)),
        ready(
            applied(render::redis_statefulset(tenant)),
            tenant.spec.redis.replicas,
        ),
        applied(render::server_service(tenant)),
        ready(
            applied(render::server_deployment(tenant, settings)),
            tenant.spec.server.replicas,
        ),
    ];
    let policies = render::network_policies(tenant, settings);
    objects.extend(policies.expect("renders").into_iter().map(Ok).map(applied));
    objects
}

/// `desired` as the applier writes it (with the hash of what was rendered, as
/// `verdicts::Rendered::annotated` adds it) and the API server stores it, at generation 1.
fn applied<K: Serialize>(desired: Result<K, RenderError>) -> Value {
    let mut object = serde_json::to_value(desired.expect("renders")).expect("serializes");
    let hash = desired_hash(&object);
    object["metadata"]["annotations"][DESIRED_HASH_ANNOTATION] = hash.into();
    object["metadata"]["generation"] = 1.into();
    stored(object)
}
