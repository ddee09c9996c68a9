//! The applier: carries out the duties the machine plans for a pass (the transition's
//! outputs and what the phase keeps; see `machines/README.md`). Level-triggered: every
//! pass in phase P carries out what P keeps, so a crash between journaling and applying
//! is repaired by the next pass.

use super::cache::Cache;
use super::compare::DESIRED_HASH_ANNOTATION;
use super::events::{self, EventType};
use super::lean::Lean;
use super::observation::{AuthState, NamespaceState, Observation};
use super::observe::Wanted;
use super::own_writes::{ExpectedEcho, InFlight};
use super::registration::Ownership;
use super::verdicts::Rendered;
use super::{Context, Error, FINALIZER};
use crate::crd::{Tenant, namespace_for};
use crate::render::{self, Desired, RenderError};
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use neurallog_machines::Duty;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

mod resize;

/// The one field manager for everything the operator applies.
pub const FIELD_MANAGER: &str = "neurallog-operator";
/// Holds the server's replica count while it passes to the autoscaler.
const REPLICAS_HANDOVER_MANAGER: &str = "neurallog-operator-replicas-handover";

/// How long a pass waits for the watch caches to show its own writes.
const OWN_WRITES_DEADLINE: Duration = Duration::from_secs(2);
const OWN_WRITES_POLL: Duration = Duration::from_millis(10);

/// Whether a watch cache shows one write of this pass.
type CacheCheck = Box<dyn Fn() -> bool + Send + Sync>;

/// One write of this pass: how to tell that the cache shows it, and its echo, which starts
/// no pass while this pass waits for the caches.
struct OwnWrite {
    cached: CacheCheck,
    echo: Option<ExpectedEcho>,
}

pub struct Applier<'a> {
    ctx: &'a Context,
    tenant: &'a Tenant,
    obs: &'a Observation,
    /// The objects the spec asks for, rendered once for the pass.
    desired: &'a Result<Desired, RenderError>,
    /// What they were rendered from (see `verdicts::render_inputs`).
    inputs: &'a str,
    /// The journal sequence of the current phase: "Created" Events are named after it.
    seq: u64,
    written: Mutex<Vec<OwnWrite>>,
    /// The Tenant as the API server returned it after this applier's finalizer patch.
    tenant_written: Mutex<Option<Tenant>>,
}

/// An object that announces its creation with an Event ("Created Redis Service").
#[derive(Clone, Copy)]
struct Announced {
    label: &'static str,
}

const REDIS_CONFIG_MAP: Announced = Announced {
    label: "Redis ConfigMap",
};
const REDIS_SERVICE: Announced = Announced {
    label: "Redis Service",
};
const REDIS_STATEFULSET: Announced = Announced {
    label: "Redis StatefulSet",
};
const SERVER_SERVICE: Announced = Announced {
    label: "Server Service",
};
const SERVER_DEPLOYMENT: Announced = Announced {
    label: "Server Deployment",
};

/// A failed write, named after the object it was for.
fn write_error(kind: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let object = format!("{kind} {name}");
    move |source| Error::Write { object, source }
}

impl<'a> Applier<'a> {
    pub fn new(
        ctx: &'a Context,
        tenant: &'a Tenant,
        obs: &'a Observation,
        wanted: &'a Wanted,
        seq: u64,
    ) -> Self {
        Self {
            ctx,
            tenant,
            obs,
            desired: &wanted.objects,
            inputs: &wanted.inputs,
            seq,
            written: Mutex::new(Vec::new()),
            tenant_written: Mutex::new(None),
        }
    }

    /// Carries out `plan` (see [`neurallog_machines::plan`]: the duties of the transition
    /// this pass took and those its phase keeps), then waits until the caches show what
    /// this pass wrote. The next pass would otherwise find a cache without the new objects
    /// and apply them (and post their Created Events) a second time; and the pass observes
    /// again after this, so the watch events of these writes that come meanwhile need no
    /// pass of their own (see `own_writes`).
    pub async fn ensure(&self, plan: &[Duty]) -> Result<(), Error> {
        let result = self.carry_out_all(plan).await;
        self.await_own_writes().await;
        result
    }

    async fn carry_out_all(&self, plan: &[Duty]) -> Result<(), Error> {
        for duty in plan {
            self.carry_out(*duty).await?;
        }
        Ok(())
    }

    /// One method per duty; machines/README.md lists them.
    async fn carry_out(&self, duty: Duty) -> Result<(), Error> {
        match duty {
            Duty::HoldFinalizer => self.hold_finalizer().await,
            Duty::Namespace => self.ensure_namespace().await,
            // Never into a namespace that is someone else's or going away.
            Duty::NamespaceGuards | Duty::Redis | Duty::Server if !self.namespace_usable() => {
                Ok(())
            }
            Duty::NamespaceGuards => self.ensure_namespace_guards().await,
            Duty::Redis => self.ensure_redis().await,
            Duty::Server => self.ensure_server().await,
            Duty::Registration => self.ensure_registered().await,
            Duty::Teardown => self.tear_down().await,
            Duty::ReleaseFinalizer => self.release_finalizer().await,
        }
    }

    /// The rendered objects; a spec that could not be rendered fails only the duties that
    /// need them (teardown and the finalizer never do).
    fn desired(&self) -> Result<&'a Desired, Error> {
        self.desired.as_ref().map_err(|e| Error::Render(e.clone()))
    }

    fn name(&self) -> String {
        self.tenant.name_any()
    }

    /// Remembers that `store` should come to hold object `key` with desired hash `hash`,
    /// as the API server returned it in `written` to the write `flight`.
    fn expect_cached<K>(
        &self,
        store: &Cache<K>,
        key: ObjectRef<K>,
        hash: String,
        flight: InFlight,
        written: &K,
    ) where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let (answered, echo) = flight.answered(written);
        if answered.other_change {
            self.ctx.note_change_while_writing(self.tenant);
        }
        let store = store.clone();
        let check = move || {
            store.metadata(&key).is_some_and(|cached| {
                cached
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DESIRED_HASH_ANNOTATION))
                    == Some(&hash)
            })
        };
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(OwnWrite {
                cached: Box::new(check),
                echo,
            });
    }

    /// A write that got no answer (it failed): whatever its object's events brought
    /// meanwhile, this pass did not see.
    fn note_unanswered(&self, flight: InFlight) {
        if flight.settled(None).other_change {
            self.ctx.note_change_while_writing(self.tenant);
        }
    }

    /// Bounded: a cache that never shows a write (the object was changed or deleted at
    /// once by someone else) only costs this pass the deadline, never correctness. The
    /// echoes that have not come by then are no longer expected: they start a pass, since
    /// the observation that follows does not hold them.
    async fn await_own_writes(&self) {
        let writes = std::mem::take(
            &mut *self
                .written
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if writes.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + OWN_WRITES_DEADLINE;
        while !writes.iter().all(|write| (write.cached)()) {
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!("the caches do not show this pass's writes yet; moving on");
                break;
            }
            tokio::time::sleep(OWN_WRITES_POLL).await;
        }
        for echo in writes.iter().filter_map(|write| write.echo.as_ref()) {
            self.ctx.own_writes.withdraw(echo);
        }
    }

    fn namespace(&self) -> String {
        namespace_for(&self.name())
    }

    fn namespace_usable(&self) -> bool {
        // Right after creating it the cache may not show it yet; applying into it is fine.
        matches!(
            self.obs.namespace,
            NamespaceState::Ours { active: true } | NamespaceState::Missing
        )
    }

    async fn hold_finalizer(&self) -> Result<(), Error> {
        if self.tenant.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let mut finalizers = self.tenant.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        self.patch_finalizers(finalizers).await
    }

    async fn release_finalizer(&self) -> Result<(), Error> {
        if !self.tenant.finalizers().iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let finalizers = self
            .tenant
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        self.patch_finalizers(finalizers).await
    }

    /// A JSON patch guarded by the resourceVersion, so another controller's finalizer added
    /// meanwhile is never lost (the conflict is retried from a fresh read).
    async fn patch_finalizers(&self, finalizers: Vec<String>) -> Result<(), Error> {
        let api: Api<Lean<Tenant>> = Api::all(self.ctx.client.clone());
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": self.tenant.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]))
        .map_err(Error::Serialize)?;
        self.ctx.metrics.count_write("patch", "tenants");
        let flight = self.ctx.own_writes.writing::<Tenant>(None, &self.name());
        let written = api
            .patch(
                &self.name(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
            .map(Lean::into_inner);
        self.ctx
            .note_tenant_write(self.tenant, flight, written.as_ref().ok());
        let written = written.map_err(Error::Kube)?;
        *self
            .tenant_written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(written);
        Ok(())
    }

    /// The Tenant as this applier last wrote it, if it wrote it: its resourceVersion is
    /// what the next write of the same pass must be guarded by.
    pub fn written_tenant(&self) -> Option<Tenant> {
        self.tenant_written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    async fn ensure_namespace(&self) -> Result<(), Error> {
        let desired = self.desired()?.namespace.clone();
        let api: Api<Lean<Namespace>> = Api::all(self.ctx.client.clone());
        match &self.obs.namespace {
            NamespaceState::Foreign { .. } | NamespaceState::Ours { active: false } => Ok(()),
            // Create, never apply: if a namespace of that name appeared meanwhile, this
            // fails with AlreadyExists instead of adopting it. Created with its desired
            // hash, so the next pass finds it up to date instead of applying it again.
            NamespaceState::Missing => {
                let rendered = Rendered::of(&desired)?;
                let hash = rendered.hash.clone();
                let desired: Namespace =
                    serde_json::from_value(rendered.annotated()).map_err(Error::Serialize)?;
                self.ctx.metrics.count_write("create", "namespaces");
                let flight = self
                    .ctx
                    .own_writes
                    .writing::<Namespace>(None, &self.namespace());
                match api
                    .create(&PostParams::default(), &Lean::new(desired))
                    .await
                {
                    Ok(created) => {
                        let created = created.into_inner();
                        let key = ObjectRef::new(&self.namespace());
                        self.expect_cached(
                            &self.ctx.stores.namespaces,
                            key,
                            hash,
                            flight,
                            &created,
                        );
                        let message = format!("Created namespace {}", self.namespace());
                        self.created_event("Namespace", &created, &message).await;
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        self.note_unanswered(flight);
                        Ok(())
                    }
                    Err(e) => {
                        self.note_unanswered(flight);
                        Err(write_error("Namespace", &self.namespace())(e))
                    }
                }
            }
            NamespaceState::Ours { active: true } => {
                let key = ObjectRef::new(&self.namespace());
                self.apply_unless_current(&api, key, &desired, &self.ctx.stores.namespaces)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// The storage of the backup claim left behind when backups were turned off.
    fn kept_backup_claim_storage(&self) -> Option<crate::quantity::Quantity> {
        if self.tenant.spec.redis.backup.is_some() {
            return None;
        }
        let key = ObjectRef::new(render::BACKUP_CLAIM).within(&self.namespace());
        let claim = self.ctx.stores.claims.get(&key)?;
        let requested = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
        crate::quantity::Quantity::parse(&requested.get("storage")?.0).ok()
    }

    /// Quota, limit range and network policies: in place before any pod is created.
    async fn ensure_namespace_guards(&self) -> Result<(), Error> {
        let stores = &self.ctx.stores;
        let desired = self.desired()?;
        self.apply(&desired.limit_range, &stores.limit_ranges, None)
            .await?;
        let quota = match self.kept_backup_claim_storage() {
            Some(kept) => render::counting_kept_claim(&desired.resource_quota, &kept)
                .map_err(Error::Render)?,
            None => desired.resource_quota.clone(),
        };
        self.apply(&quota, &stores.quotas, None).await?;
        let wanted: Vec<String> = desired
            .network_policies
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        for policy in &desired.network_policies {
            self.apply(policy, &stores.network_policies, None).await?;
        }
        self.prune_network_policies(&wanted).await
    }

    /// Deletes our policies the spec no longer asks for (a removed rule, policies disabled).
    async fn prune_network_policies(&self, wanted: &[String]) -> Result<(), Error> {
        let ns = self.namespace();
        let tenant = self.name();
        let policies = &self.ctx.stores.network_policies;
        // Names first: only a policy not wanted is decoded (to see that it is this tenant's).
        let stale: Vec<String> = policies
            .names_in_namespace(&ns)
            .into_iter()
            .filter(|name| !wanted.contains(name))
            .filter(|name| {
                policies
                    .metadata(&ObjectRef::new(name).within(&ns))
                    .and_then(|p| p.labels)
                    .is_some_and(|l| l.get(render::TENANT_LABEL) == Some(&tenant))
            })
            .collect();
        let api: Api<NetworkPolicy> = Api::namespaced(self.ctx.client.clone(), &ns);
        let params = DeleteParams::default();
        for name in stale {
            self.ctx.metrics.count_write("delete", "networkpolicies");
            match retry(|| api.delete(&name, &params)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(write_error("NetworkPolicy", &name)(e)),
            }
        }
        Ok(())
    }

    async fn ensure_redis(&self) -> Result<(), Error> {
        let stores = &self.ctx.stores;
        let desired = self.desired()?;
        self.apply(
            &desired.redis_config_map,
            &stores.config_maps,
            Some(REDIS_CONFIG_MAP),
        )
        .await?;
        self.apply(
            &desired.redis_service,
            &stores.services,
            Some(REDIS_SERVICE),
        )
        .await?;
        if !self.grow_redis_storage(&desired.redis_statefulset).await? {
            // Its claims cannot grow, or the StatefulSet is being replaced: a pass after
            // its deletion creates it again.
            return Ok(());
        }
        self.apply(
            &desired.redis_statefulset,
            &stores.statefulsets,
            Some(REDIS_STATEFULSET),
        )
        .await?;
        self.ensure_backups(desired).await
    }

    /// The backup claim first (the Job's pod mounts it), then the CronJob. The claim is
    /// created once and then left alone: its size is fixed at creation (a claim cannot
    /// shrink), and removing `spec.redis.backup` keeps it and the snapshots in it. The
    /// CronJob goes with its Jobs and their pods.
    async fn ensure_backups(&self, desired: &Desired) -> Result<(), Error> {
        let stores = &self.ctx.stores;
        if let Some(claim) = &desired.backup_claim {
            let key = ObjectRef::new(render::BACKUP_CLAIM).within(&self.namespace());
            if !stores.claims.contains(&key) {
                self.apply(claim, &stores.claims, None).await?;
            }
        }
        match &desired.backup_cronjob {
            Some(cronjob) => self.apply(cronjob, &stores.cron_jobs, None).await,
            None => self.remove_backup_cronjob().await,
        }
    }

    async fn remove_backup_cronjob(&self) -> Result<(), Error> {
        let ns = self.namespace();
        let name = render::BACKUP_CRONJOB;
        let key = ObjectRef::new(name).within(&ns);
        if !self.ctx.stores.cron_jobs.contains(&key) {
            return Ok(());
        }
        let api: Api<CronJob> = Api::namespaced(self.ctx.client.clone(), &ns);
        self.ctx.metrics.count_write("delete", "cronjobs");
        // The API's default for CronJobs orphans their Jobs; these go with it.
        let params = DeleteParams::background();
        match retry(|| api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(write_error("CronJob", name)(e)),
        }
    }

    async fn ensure_server(&self) -> Result<(), Error> {
        let stores = &self.ctx.stores;
        let desired = self.desired()?;
        self.apply(
            &desired.server_service,
            &stores.services,
            Some(SERVER_SERVICE),
        )
        .await?;
        if desired.server_autoscaler.is_some() {
            self.hand_replicas_to_autoscaler(&desired.server_deployment)
                .await?;
        }
        self.apply(
            &desired.server_deployment,
            &stores.deployments,
            Some(SERVER_DEPLOYMENT),
        )
        .await?;
        let server = render::server_name(&self.name());
        match &desired.server_autoscaler {
            Some(autoscaler) => self.apply(autoscaler, &stores.autoscalers, None).await?,
            // Autoscaling turned off: the Deployment's apply above set the count again.
            None => self.remove_cached(&stores.autoscalers, &server).await?,
        }
        match &desired.server_disruption_budget {
            Some(budget) => self.apply(budget, &stores.disruption_budgets, None).await,
            // Back to one replica: the budget would only block node drains.
            None => {
                self.remove_cached(&stores.disruption_budgets, &server)
                    .await
            }
        }
    }

    /// Before the first apply of a Deployment without `replicas` (autoscaling turned on),
    /// another field manager takes over the count the operator set. An apply that drops a
    /// field its manager alone owned resets it to the default, one pod, until the
    /// autoscaler scales up again; shared, the field keeps its value and the autoscaler
    /// owns it from then on.
    async fn hand_replicas_to_autoscaler(&self, desired: &Deployment) -> Result<(), Error> {
        let ns = self.namespace();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let key = ObjectRef::new(&name).within(&ns);
        let deployments = &self.ctx.stores.deployments;
        // As in `apply_unless_current`: the version first, the object only without a verdict.
        let Some(version) = deployments.version(&key) else {
            return Ok(());
        };
        if self.ctx.is_current(
            self.tenant,
            self.inputs,
            desired,
            version.as_deref(),
            || deployments.json_value(&key),
        )? {
            return Ok(());
        }
        let Some(live) = deployments.get(&key) else {
            return Ok(());
        };
        let Some(replicas) = live.spec.as_ref().and_then(|s| s.replicas) else {
            return Ok(());
        };
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &ns);
        let handover = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas},
        });
        let params = PatchParams::apply(REPLICAS_HANDOVER_MANAGER).force();
        self.ctx.metrics.count_write("patch", "deployments");
        let patch = Patch::Apply(&handover);
        retry(|| api.patch(&name, &params, &patch))
            .await
            .map_err(write_error("Deployment", &name))?;
        Ok(())
    }

    /// Deletes `name` in the tenant namespace if `store` shows it: an object the spec no
    /// longer asks for.
    async fn remove_cached<K>(&self, store: &Cache<K>, name: &str) -> Result<(), Error>
    where
        K: k8s_openapi::Resource
            + Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let ns = self.namespace();
        if !store.contains(&ObjectRef::new(name).within(&ns)) {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.ctx.client.clone(), &ns);
        self.ctx.metrics.count_write("delete", &K::plural(&()));
        let params = DeleteParams::default();
        match retry(|| api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(write_error(&K::kind(&()), name)(e)),
        }
    }

    /// Registers the name once the intent is journaled, never before (see `registration`):
    /// then a 409 answers an earlier `POST` of this tenant, and counts as registered.
    async fn ensure_registered(&self) -> Result<(), Error> {
        if self.ctx.known_ownership(self.tenant) != Ownership::Ours
            || self.ctx.auth_state(self.tenant) == AuthState::Registered
        {
            return Ok(());
        }
        let admin = self
            .tenant
            .spec
            .auth
            .as_ref()
            .and_then(|a| a.admin_user_id.clone())
            .unwrap_or_else(|| self.ctx.auth.default_admin_user_id().to_string());
        let result = self.ctx.auth.register(&self.name(), &admin).await;
        self.record_auth(result.map(|_| AuthState::Registered))
            .await
    }

    async fn tear_down(&self) -> Result<(), Error> {
        // Also while the namespace is already terminating (deleted by someone else): its
        // claims may not be gone yet, and a retained volume outlives them.
        if self.tenant.spec.redis.retain_storage
            && let NamespaceState::Ours { .. } = self.obs.namespace
        {
            self.ctx
                .retain_redis_volumes(self.tenant, &self.namespace(), self.seq)
                .await?;
        }
        if let NamespaceState::Ours { active: true } = self.obs.namespace {
            let api: Api<Namespace> = Api::all(self.ctx.client.clone());
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: self
                        .ctx
                        .stores
                        .namespaces
                        .metadata(&ObjectRef::new(&self.namespace()))
                        .and_then(|n| n.uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            self.ctx.metrics.count_write("delete", "namespaces");
            let ns = self.namespace();
            match retry(|| api.delete(&ns, &params)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(write_error("Namespace", &ns)(e)),
            }
        }
        if self.ctx.auth_state(self.tenant) == AuthState::Deregistered {
            return Ok(());
        }
        // Only what this tenant registered: another party's registration of the same name
        // (or none at all, for a tenant that failed before registering) is left alone.
        if self.ctx.known_ownership(self.tenant) != Ownership::Ours {
            tracing::info!(
                ownership = ?self.ctx.known_ownership(self.tenant),
                "not deregistering from Auth: this Tenant did not register its name"
            );
            self.ctx
                .set_auth_state(self.tenant, AuthState::Deregistered);
        } else {
            let result = self.ctx.auth.deregister(&self.name()).await;
            self.record_auth(result.map(|_| AuthState::Deregistered))
                .await?;
        }
        Ok(())
    }

    /// Remembers the Auth outcome; a failure becomes a Warning Event (once per distinct
    /// message) and a requeue, never a transition.
    async fn record_auth(
        &self,
        result: Result<AuthState, crate::auth::AuthError>,
    ) -> Result<(), Error> {
        match result {
            Ok(state) => {
                self.ctx.set_auth_state(self.tenant, state);
                Ok(())
            }
            Err(e) => {
                let state = AuthState::Failed {
                    reason: e.reason().to_string(),
                    message: e.to_string(),
                };
                self.ctx.set_auth_state(self.tenant, state);
                let message = e.to_string();
                self.ctx
                    .warn_once(self.tenant, self.seq, e.reason(), &message, &message)
                    .await;
                Err(Error::Auth(e))
            }
        }
    }

    /// Server-side applies `desired` unless the cached object already is what it would
    /// become. `announced` objects get a "Created ..." Event when they are new.
    async fn apply<K>(
        &self,
        desired: &K,
        store: &Cache<K>,
        announced: Option<Announced>,
    ) -> Result<(), Error>
    where
        K: k8s_openapi::Resource
            + Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let name = desired.meta().name.clone().unwrap_or_default();
        let ns = self.namespace();
        let api: Api<Lean<K>> = Api::namespaced(self.ctx.client.clone(), &ns);
        let key = ObjectRef::new(&name).within(&ns);
        let new_object = self.apply_unless_current(&api, key, desired, store).await?;
        if let (Some(applied), Some(announced)) = (new_object, announced) {
            let message = format!("Created {}", announced.label);
            self.created_event(&K::kind(&()), &applied, &message).await;
        }
        Ok(())
    }

    /// Applies `desired` as `key` through `api` unless the cache shows it current, and
    /// returns the applied object when the cache had none (a new object).
    async fn apply_unless_current<K>(
        &self,
        api: &Api<Lean<K>>,
        key: ObjectRef<K>,
        desired: &K,
        store: &Cache<K>,
    ) -> Result<Option<K>, Error>
    where
        K: k8s_openapi::Resource
            + Resource<DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        // The version first: a verdict on it spares decoding the object.
        let cached = store.version(&key);
        if let Some(version) = &cached
            && self.ctx.is_current(
                self.tenant,
                self.inputs,
                desired,
                version.as_deref(),
                || store.json_value(&key),
            )?
        {
            return Ok(None);
        }
        let rendered = Rendered::of(desired)?;
        let hash = rendered.hash.clone();
        let body = rendered.annotated();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.ctx.metrics.count_write("patch", &K::plural(&()));
        let patch = Patch::Apply(&body);
        let flight = self
            .ctx
            .own_writes
            .writing::<K>(key.namespace.as_deref(), &key.name);
        let applied = match retry(|| api.patch(&key.name, &params, &patch)).await {
            Ok(applied) => applied.into_inner(),
            Err(error) => {
                self.note_unanswered(flight);
                return Err(write_error(&K::kind(&()), &key.name)(error));
            }
        };
        self.expect_cached(store, key, hash, flight, &applied);
        Ok(cached.is_none().then_some(applied))
    }

    /// "Created X" once per object lifetime (only a pass that created the object sends it),
    /// named after the phase that created it.
    async fn created_event<K: Resource>(&self, kind: &str, object: &K, message: &str) {
        let object_name = object.meta().name.clone().unwrap_or_default();
        let object_uid = object.meta().uid.clone().unwrap_or_default();
        let name = events::phase_event_name(
            self.tenant,
            self.ctx.chain(),
            self.seq,
            chrono::Utc::now(),
            &format!("{kind}/{object_name}/{object_uid}"),
        );
        self.ctx
            .emit_event(self.tenant, name, EventType::Normal, "Created", message)
            .await;
    }
}

/// Retries conflicts, throttling and server errors with exponential backoff and jitter.
pub async fn retry<T, F, Fut>(call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(4)
            .with_jitter(),
    )
    .when(is_transient)
    .await
}

pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(e) => e.code == 409 || e.code == 429 || e.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Creates an Event; `AlreadyExists` means it was mirrored before.
pub async fn create_event(client: &kube::Client, event: &Event) -> Result<bool, kube::Error> {
    // Decoded lean: the answer is only looked at for success.
    let api: Api<Lean<Event>> = Api::namespaced(client.clone(), events::EVENT_NAMESPACE);
    match api
        .create(&PostParams::default(), &Lean::new(event.clone()))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use neurallog_machines::Duty;

    /// machines/README.md says which method carries out each duty; every duty is there.
    #[test]
    fn the_machine_readme_names_the_method_of_every_duty() {
        let readme = include_str!("../../machines/README.md");
        for duty in Duty::ALL {
            let row = format!("| {duty} | `Applier::");
            assert!(
                readme.contains(&row),
                "machines/README.md lacks a row {row}"
            );
        }
    }
}
