//! The reconciler. Each pass, in this order (see the design notes):
//! observe -> derive the machine input -> transition -> journal (durable) -> apply what the
//! phase needs -> mirror to Events and status. A crash between any two steps converges on
//! the next pass: the journal is the truth for phase, the cluster for objects.

pub mod apply;
pub mod compare;
pub mod events;
pub mod failures;
pub mod input;
pub mod observation;
pub mod status;

use crate::auth::{AuthClient, AuthError};
use crate::crd::{Tenant, TenantStatus, namespace_for};
use crate::journal::{
    Journal, JournalError, NewRecord, Record, RecoveryMark, record_time, spec_digest,
};
use crate::journal_slot::JournalSlot;
use crate::metrics::{Metrics, ResultLabel};
use crate::render::{self, RenderError, RenderSettings};
use apply::{Applier, create_event};
use chrono::Utc;
use events::EventType;
use futures::{Stream, StreamExt};
use input::{TenantFacts, derive_input};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use neurallog_machines::{Phase, step};
use observation::{AuthState, Observation, deployment_state, namespace_state, statefulset_state};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, info, info_span, warn};

pub const FINALIZER: &str = "neurallog.io/finalizer";

/// Reason of the Warning Event (and error metric) while the journal cannot be written.
pub const JOURNAL_UNWRITABLE: &str = "JournalUnwritable";

/// Reason of the Warning Event telling a tenant that a damaged journal was replaced.
pub const JOURNAL_RECOVERED: &str = "JournalRecovered";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("writing {object}: {source}")]
    Write {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("journal: {0}")]
    Journal(#[source] JournalError),
    #[error("Auth service: {0}")]
    Auth(#[source] AuthError),
    #[error("cannot render: {0}")]
    Render(#[source] RenderError),
    #[error("cannot serialize: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("the journal task failed: {0}")]
    Join(String),
    #[error("the Tenant has no uid")]
    MissingUid,
}

impl Error {
    /// A write the API server refused for what it holds (it would refuse it again).
    pub fn is_refused_write(&self) -> bool {
        self.reason() == "WriteRefused"
    }

    /// A stable reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Error::Kube(_) => "KubernetesApi",
            Error::Write { source, .. } => match source {
                kube::Error::Api(e) if e.code == 409 => "Conflict",
                kube::Error::Api(e) if (400..500).contains(&e.code) && e.code != 429 => {
                    "WriteRefused"
                }
                _ => "WriteFailed",
            },
            Error::Journal(e) if e.is_storage_failure() => JOURNAL_UNWRITABLE,
            Error::Journal(JournalError::Unavailable { .. }) => JOURNAL_UNWRITABLE,
            Error::Journal(_) | Error::Join(_) => "JournalUnavailable",
            Error::Auth(e) => e.reason(),
            Error::Render(_) => "RenderFailed",
            Error::Serialize(_) => "Serialize",
            Error::MissingUid => "MissingUid",
        }
    }
}

/// Watch caches of everything the operator owns, label-selected and without managed fields.
#[derive(Clone)]
pub struct Stores {
    pub namespaces: Store<Namespace>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
    pub statefulsets: Store<StatefulSet>,
    pub deployments: Store<Deployment>,
    pub network_policies: Store<NetworkPolicy>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    /// The tenants' pods, status only: why a component is not ready.
    pub pods: Store<Pod>,
}

/// What the operator remembers about a tenant between passes. Losing it (a restart) costs
/// at most one Auth call and one Event create per tenant, both idempotent.
#[derive(Clone, Debug, Default)]
struct TenantMemo {
    auth: AuthState,
    /// Journal records up to this sequence have their Event.
    mirrored: u64,
    failures: u32,
    /// The JournalRecovered Warning Event exists.
    told_of_recovery: bool,
    /// The Tenant's resourceVersion this pass's status patch was made from, and the status
    /// it wrote. A pass that still sees that version (the watch has not caught up with the
    /// patch) needs no second patch: the patch's own watch event will bring a new pass.
    status_patched_from: Option<(String, TenantStatus)>,
    /// The write that failed in the last pass, until a pass writes everything it needs.
    write_failure: Option<failures::WriteFailure>,
    /// Warning Events already sent (by name): a repeated cause costs no second create.
    warnings_sent: std::collections::BTreeSet<String>,
    /// A transition's Event could not be written: the next pass comes soon to mirror it.
    transitions_behind: bool,
    /// Other Events that could not be written, retried by the next passes.
    pending_events: Vec<k8s_openapi::api::core::v1::Event>,
}

pub struct Context {
    pub client: Client,
    pub journal: Arc<JournalSlot>,
    pub auth: AuthClient,
    pub settings: RenderSettings,
    pub metrics: Arc<Metrics>,
    pub stores: Stores,
    /// Who writes the Events (pod name, or host).
    pub instance: String,
    /// Set when the journal replaced a damaged one at start-up.
    pub recovery: Option<RecoveryMark>,
    chain: Option<String>,
    /// Every owned-object cache holds its initial list. Before that a missing object may
    /// only be not-yet-listed: observing it would apply it again, or journal a spurious
    /// Degraded.
    caches_synced: Arc<std::sync::atomic::AtomicBool>,
    memo: Mutex<HashMap<String, TenantMemo>>,
    /// How long a phase that waits for the cluster may go without progress.
    progress_deadline: Duration,
    /// A failed Event write is logged at warning level once; later ones at debug.
    event_failure_logged: std::sync::atomic::AtomicBool,
}

impl Context {
    pub fn new(
        client: Client,
        journal: Arc<JournalSlot>,
        auth: AuthClient,
        settings: RenderSettings,
        metrics: Arc<Metrics>,
        stores: Stores,
        instance: String,
    ) -> Self {
        Self {
            client,
            journal,
            auth,
            settings,
            metrics,
            stores,
            instance,
            chain: None,
            recovery: None,
            caches_synced: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            memo: Mutex::default(),
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            event_failure_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn with_progress_deadline(mut self, deadline: Duration) -> Self {
        self.progress_deadline = deadline;
        self
    }

    /// Reconciles wait until `synced` is set (by the readiness task).
    pub fn with_caches_synced(mut self, synced: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.caches_synced = synced;
        self
    }

    /// For a journal that replaced a damaged one at start-up.
    pub fn with_recovery(mut self, recovery: Option<RecoveryMark>) -> Self {
        self.chain = recovery.as_ref().map(RecoveryMark::chain_label);
        self.recovery = recovery;
        self
    }

    /// The label of the journal's chain when it replaced a damaged journal.
    pub fn chain(&self) -> Option<&str> {
        self.chain.as_deref()
    }

    fn memo<T>(&self, tenant: &Tenant, f: impl FnOnce(&mut TenantMemo) -> T) -> T {
        let uid = tenant.uid().unwrap_or_default();
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(memo.entry(uid).or_default())
    }

    fn forget(&self, tenant: &Tenant) {
        let uid = tenant.uid().unwrap_or_default();
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
    }

    pub fn auth_state(&self, tenant: &Tenant) -> AuthState {
        self.memo(tenant, |m| m.auth.clone())
    }

    pub fn set_auth_state(&self, tenant: &Tenant, state: AuthState) {
        self.memo(tenant, |m| m.auth = state);
    }

    /// Creates an Event; whether it exists now. Never an error: Events are a mirror, and
    /// a failed write must hold neither status nor provisioning. A failed one is kept and
    /// retried by the next passes (see `retry_events`).
    pub async fn emit_event(
        &self,
        tenant: &Tenant,
        name: String,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> bool {
        let event = self.event_at(tenant, name, type_, reason, message, Utc::now());
        let sent = self.send_event(&event).await;
        if !sent {
            self.memo(tenant, |m| {
                let queued = m
                    .pending_events
                    .iter()
                    .any(|e| e.metadata.name == event.metadata.name);
                if !queued && m.pending_events.len() < MAX_PENDING_EVENTS {
                    m.pending_events.push(event);
                }
            });
        }
        sent
    }

    fn event_at(
        &self,
        tenant: &Tenant,
        name: String,
        type_: EventType,
        reason: &str,
        message: &str,
        at: chrono::DateTime<Utc>,
    ) -> k8s_openapi::api::core::v1::Event {
        events::event(tenant, name, type_, reason, message, at, &self.instance)
    }

    /// Creates `event`; a failure is counted and logged once (later ones at debug level).
    async fn send_event(&self, event: &k8s_openapi::api::core::v1::Event) -> bool {
        self.metrics.count_write("create", "events");
        match create_event(&self.client, event).await {
            Ok(_) => true,
            Err(error) => {
                self.metrics.count_error(EVENT_WRITE_FAILED);
                let first = !self
                    .event_failure_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed);
                let reason = event.reason.as_deref().unwrap_or_default();
                if first {
                    warn!(%error, reason, "cannot write an Event; it is retried later (further failures are logged at debug level)");
                } else {
                    tracing::debug!(%error, reason, "cannot write an Event");
                }
                false
            }
        }
    }

    /// Sends the Events earlier passes could not write, oldest first.
    async fn retry_events(&self, tenant: &Tenant) {
        let pending = self.memo(tenant, |m| std::mem::take(&mut m.pending_events));
        let mut still = Vec::new();
        for event in pending {
            if !still.is_empty() || !self.send_event(&event).await {
                still.push(event);
            }
        }
        self.memo(tenant, |m| {
            m.pending_events.splice(0..0, still).for_each(drop)
        });
    }

    fn events_behind(&self, tenant: &Tenant) -> bool {
        self.memo(tenant, |m| {
            m.transitions_behind || !m.pending_events.is_empty()
        })
    }

    /// A Warning Event for one distinct cause (`reason` and `key`), sent once per process
    /// (a failed send is retried with the other pending Events).
    pub async fn warn_once(
        &self,
        tenant: &Tenant,
        seq: u64,
        reason: &str,
        key: &str,
        message: &str,
    ) {
        let cause = format!("{reason}/{key}");
        if !self.memo(tenant, |m| m.warnings_sent.insert(cause.clone())) {
            return;
        }
        let name = events::phase_event_name(tenant, self.chain(), seq, Utc::now(), &cause);
        self.emit_event(tenant, name, EventType::Warning, reason, message)
            .await;
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, Error> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.with(f))
            .await
            .map_err(|e| Error::Join(e.to_string()))?
            .map_err(Error::Journal)
    }

    /// Reads the tenant's objects from the caches. The namespace is also read from the API
    /// server when the (label-selected) cache lacks it: a foreign namespace of the same
    /// name carries none of our labels.
    async fn observe(&self, tenant: &Tenant) -> Result<Observation, Error> {
        let name = tenant.name_any();
        let ns_name = namespace_for(&name);
        let cached = self.stores.namespaces.get(&ObjectRef::new(&ns_name));
        let namespace = match cached {
            Some(ns) => Some(ns.as_ref().clone()),
            None => Api::<Namespace>::all(self.client.clone())
                .get_opt(&ns_name)
                .await
                .map_err(Error::Kube)?,
        };
        let owned = namespace
            .as_ref()
            .is_some_and(|ns| render::is_owned_by(ns, tenant));
        let mut problems: Vec<String> = crate::validation::validate(&name, &tenant.spec)
            .iter()
            .map(|p| p.to_string())
            .collect();
        let sts = self
            .stores
            .statefulsets
            .get(&ObjectRef::new(&render::redis_name(&name)).within(&ns_name));
        let deployment = self
            .stores
            .deployments
            .get(&ObjectRef::new(&render::server_name(&name)).within(&ns_name));
        let (redis_matches, server_matches) = if problems.is_empty() {
            match (
                render::redis_statefulset(tenant),
                render::server_deployment(tenant, &self.settings),
            ) {
                (Ok(s), Ok(d)) => (
                    apply::matches_desired(&s, sts.as_deref()),
                    apply::matches_desired(&d, deployment.as_deref()),
                ),
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(e.to_string());
                    (false, false)
                }
            }
        } else {
            (false, false)
        };
        let redis = statefulset_state(sts.as_deref(), tenant.spec.redis.replicas, redis_matches);
        let server = deployment_state(
            deployment.as_deref(),
            tenant.spec.server.replicas,
            server_matches,
        );
        let now = Utc::now();
        let (redis_problem, redis_due) = if redis.is_ready() {
            (None, None)
        } else {
            self.pod_problem(&ns_name, "redis", now)
        };
        let (server_problem, server_due) = if server.is_ready() {
            (None, None)
        } else {
            let (problem, due) = self.pod_problem(&ns_name, "server", now);
            let problem =
                problem.or_else(|| deployment.as_deref().and_then(failures::deployment_problem));
            (problem, due)
        };
        Ok(Observation {
            namespace: namespace_state(namespace.as_ref(), owned),
            redis,
            server,
            auth: self.auth_state(tenant),
            problems,
            redis_problem,
            server_problem,
            write_failure: self.memo(tenant, |m| m.write_failure.clone()),
            problem_due: redis_due.into_iter().chain(server_due).min(),
        })
    }

    /// Why a pod of `component` in `namespace` does not run, from the pod cache.
    fn pod_problem(
        &self,
        namespace: &str,
        component: &str,
        now: chrono::DateTime<Utc>,
    ) -> (Option<failures::PodProblem>, Option<chrono::DateTime<Utc>>) {
        let pods: Vec<Arc<Pod>> = self
            .stores
            .pods
            .state()
            .into_iter()
            .filter(|pod| {
                pod.metadata.namespace.as_deref() == Some(namespace)
                    && pod
                        .labels()
                        .get(render::COMPONENT_LABEL)
                        .map(String::as_str)
                        == Some(component)
            })
            .collect();
        failures::pod_problem(pods.iter().map(|p| p.as_ref()), now)
    }

    async fn append(
        &self,
        tenant: &Tenant,
        last: Option<&Record>,
        input: neurallog_machines::Input,
    ) -> Result<Option<Record>, Error> {
        let phase = last.map_or(Phase::New, |r| r.to);
        let Some(transition) = step(phase, &input) else {
            return Ok(None);
        };
        let spec = serde_json::to_value(&tenant.spec).map_err(Error::Serialize)?;
        let clock = Utc::now();
        let time = record_time(clock, last);
        if time > clock {
            warn!(
                behind_ms = (time - clock).num_milliseconds(),
                "the clock is behind this tenant's last journal record (stepped back?): recording that record's time again"
            );
        }
        let entry = NewRecord::from_transition(
            tenant.name_any(),
            tenant.uid().ok_or(Error::MissingUid)?,
            last.map_or(1, |r| r.seq + 1),
            time,
            tenant.metadata.generation.unwrap_or(0),
            input,
            transition,
            spec_digest(&spec),
        );
        let started = Instant::now();
        let (record, in_storage) = self
            .blocking(move |j| {
                let started = Instant::now();
                j.append(entry).map(|record| (record, started.elapsed()))
            })
            .await?;
        self.metrics
            .journal_append
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .journal_storage
            .observe(in_storage.as_secs_f64());
        info!(seq = record.seq, from = %record.from, to = %record.to, "journaled transition");
        Ok(Some(record))
    }

    /// Creates the Event of every journal record not yet mirrored (normally just the last;
    /// more after a failed mirror). Deterministic names make this idempotent. Only a
    /// journal read can fail it; a failed Event write is left for a later pass.
    async fn mirror_events(&self, tenant: &Tenant, tail: Option<&Record>) -> Result<(), Error> {
        let Some(tail) = tail else { return Ok(()) };
        let mirrored = self.memo(tenant, |m| m.mirrored);
        if mirrored >= tail.seq {
            return Ok(());
        }
        // Status is patched after the Events were sent, so a status at sequence N means
        // Events up to N exist, unless this process saw an Event write fail: after a
        // restart this saves one create (and its write) per tenant. (An Event that failed
        // just before a restart is not written again.)
        let behind = self.memo(tenant, |m| m.transitions_behind);
        let from_status = tenant
            .status
            .as_ref()
            .and_then(|s| s.journal.as_ref())
            .filter(|j| !behind && j.chain.as_deref() == self.chain())
            .map_or(0, |j| j.sequence);
        if from_status >= tail.seq {
            self.memo(tenant, |m| m.mirrored = tail.seq);
            return Ok(());
        }
        let first = mirrored.max(from_status).saturating_add(1);
        let uid = tail.uid.clone();
        let records: Vec<Record> = self
            .blocking(move |j| {
                j.history(&uid)
                    .filter(|r| r.as_ref().map_or(true, |r| r.seq >= first))
                    .collect()
            })
            .await?;
        for record in records {
            let type_ = if record.to.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let name = events::transition_event_name(tenant, record.seq, self.chain());
            // At the time of the transition, also when mirrored late: the Events then sort
            // by time as they do by name.
            let event = self.event_at(
                tenant,
                name,
                type_,
                record.to.as_str(),
                &record.message,
                record.time,
            );
            if !self.send_event(&event).await {
                self.memo(tenant, |m| m.transitions_behind = true);
                return Ok(());
            }
            self.memo(tenant, |m| m.mirrored = record.seq);
        }
        self.memo(tenant, |m| m.transitions_behind = false);
        Ok(())
    }

    async fn mirror_status(
        &self,
        tenant: &Tenant,
        tail: Option<&Record>,
        obs: &Observation,
    ) -> Result<(), Error> {
        let tail = tail.map(|r| status::JournalTail {
            phase: r.to,
            sequence: r.seq,
            hash: r.hash.to_hex(),
            message: r.message.clone(),
            chain: self.chain().map(str::to_string),
        });
        let desired = status::desired_status(
            tail.as_ref(),
            &namespace_for(&tenant.name_any()),
            tenant.metadata.generation.unwrap_or(0),
            obs,
            tenant.status.as_ref(),
            Utc::now(),
        );
        if tenant.status.as_ref() == Some(&desired) {
            return Ok(());
        }
        let version = tenant.resource_version();
        let already_patched = self.memo(tenant, |m| {
            m.status_patched_from
                .as_ref()
                .is_some_and(|(from, status)| Some(from) == version.as_ref() && *status == desired)
        });
        if already_patched {
            return Ok(());
        }
        let api: Api<Tenant> = Api::all(self.client.clone());
        let body = serde_json::json!({ "status": desired });
        let patch = Patch::Merge(&body);
        let params = PatchParams::default();
        let name = tenant.name_any();
        self.metrics.count_write("patch", "tenants/status");
        apply::retry(|| api.patch_status(&name, &params, &patch))
            .await
            .map_err(Error::Kube)?;
        self.memo(tenant, |m| {
            m.status_patched_from = version.map(|from| (from, desired));
        });
        Ok(())
    }

    /// After the journal was replaced, tells each tenant's owner once, on the Tenant, where
    /// the history before the replacement is kept.
    async fn tell_of_recovery(&self, tenant: &Tenant) -> Result<(), Error> {
        let Some(mark) = &self.recovery else {
            return Ok(());
        };
        if self.memo(tenant, |m| m.told_of_recovery) {
            return Ok(());
        }
        let message = format!(
            "The operator's journal was damaged ({}); it was moved to {} and kept, and a new \
             journal was started at {}. This tenant's earlier history is in the moved journal.",
            mark.reason,
            mark.moved_to,
            mark.at.to_rfc3339()
        );
        let name = events::phase_event_name(
            tenant,
            self.chain(),
            0,
            mark.at,
            &format!("{JOURNAL_RECOVERED}/{}", mark.moved_to),
        );
        // Sent or queued for a retry: either way, told.
        self.emit_event(
            tenant,
            name,
            EventType::Warning,
            JOURNAL_RECOVERED,
            &message,
        )
        .await;
        self.memo(tenant, |m| m.told_of_recovery = true);
        Ok(())
    }

    fn facts(&self, tenant: &Tenant, tail: Option<&Record>) -> TenantFacts {
        TenantFacts {
            generation: tenant.metadata.generation.unwrap_or(0),
            deleting: tenant.metadata.deletion_timestamp.is_some(),
            journaled_generation: tail.map(|r| r.generation),
            phase_since: tail.map(|r| r.time),
            now: Utc::now(),
            progress_deadline: self.progress_deadline,
            stalled_with: tail.filter(|r| r.to == Phase::Stalled).map(|r| {
                (
                    r.input.redis.unwrap_or_default(),
                    r.input.server.unwrap_or_default(),
                )
            }),
        }
    }

    /// Remembers the write this pass could not make (for status and the machine) or that
    /// every write went through, and tells the tenant's owner once per distinct cause.
    async fn record_write_outcome(&self, tenant: &Tenant, seq: u64, applied: &Result<(), Error>) {
        let failure = match applied {
            // A conflict is someone else's write meanwhile: the retry settles it.
            Err(Error::Write { source, .. }) if source_code(source) == Some(409) => return,
            Err(Error::Write { object, source }) => {
                Some(failures::WriteFailure::new(object.clone(), source))
            }
            Err(_) => return,
            Ok(()) => None,
        };
        self.memo(tenant, |m| m.write_failure = failure.clone());
        if let Some(failure) = failure {
            let reason = failure.condition_reason();
            let key = format!("{}/{}", failure.object, failure.message);
            self.warn_once(tenant, seq, reason, &key, &failure.describe())
                .await;
        }
    }

    fn count_outcome(&self, record: &Record) {
        match record.to {
            Phase::Running if record.from == Phase::ProvisioningServer => {
                self.metrics
                    .tenant_creation
                    .get_or_create(&ResultLabel {
                        result: "success".into(),
                    })
                    .inc();
            }
            Phase::Failed => {
                self.metrics
                    .tenant_creation
                    .get_or_create(&ResultLabel {
                        result: "failure".into(),
                    })
                    .inc();
            }
            Phase::Deleted => {
                self.metrics.tenant_deletion.inc();
            }
            _ => {}
        }
    }
}

/// One reconcile pass for one Tenant.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.caches_synced.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let span = info_span!(
        "reconcile",
        tenant = %tenant.name_any(),
        uid = %tenant.uid().unwrap_or_default(),
        generation = tenant.metadata.generation.unwrap_or(0),
    );
    let result = reconcile_tenant(tenant.clone(), ctx.clone())
        .instrument(span)
        .await;
    if let Err(error) = &result
        && error.reason() == JOURNAL_UNWRITABLE
    {
        report_unwritable_journal(&tenant, &ctx, error).await;
    }
    result
}

fn source_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Tells the tenant's owner, on the Tenant itself, that its phase changes are held: the
/// journal (the truth for phases) cannot be written. One Event per distinct error.
async fn report_unwritable_journal(tenant: &Tenant, ctx: &Context, error: &Error) {
    let message = format!(
        "Phase changes are held until the operator's journal can be written again: {error}"
    );
    let seq = ctx.memo(tenant, |m| m.mirrored);
    ctx.warn_once(tenant, seq, JOURNAL_UNWRITABLE, &message, &message)
        .await;
}

async fn reconcile_tenant(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let uid = tenant.uid().ok_or(Error::MissingUid)?;
    let mut tail = match ctx.journal.cached_last(&uid) {
        Some(tail) => tail,
        None => {
            let journal_uid = uid.clone();
            ctx.blocking(move |j| j.last(&journal_uid)).await?
        }
    };
    ctx.tell_of_recovery(&tenant).await?;
    ctx.retry_events(&tenant).await;

    let obs = ctx.observe(&tenant).await?;
    let facts = ctx.facts(&tenant, tail.as_ref());
    let input = derive_input(tail.as_ref().map_or(Phase::New, |r| r.to), facts, &obs);
    if let Some(input) = input
        && let Some(record) = ctx.append(&tenant, tail.as_ref(), input).await?
    {
        ctx.count_outcome(&record);
        tail = Some(record);
    }
    let phase = tail.as_ref().map_or(Phase::New, |r| r.to);
    // The transition's Event before the objects its phase creates: `kubectl describe`
    // then tells the story in causal order. Before the finalizer goes too: once the Tenant
    // is gone nothing reconciles it again.
    ctx.mirror_events(&tenant, tail.as_ref()).await?;

    let seq = tail.as_ref().map_or(0, |r| r.seq);
    let applied = Applier::new(&ctx, &tenant, &obs, seq).ensure(phase).await;
    ctx.record_write_outcome(&tenant, seq, &applied).await;
    if phase == Phase::Deleted {
        applied?;
        ctx.forget(&tenant);
        ctx.metrics.set_phase(&uid, None);
        return Ok(Action::await_change());
    }
    // Observed again: the caches now show what this pass created, so the status says
    // "0/1 replicas ready" at once instead of "not created yet" and a second patch later.
    let obs = ctx.observe(&tenant).await?;
    ctx.mirror_status(&tenant, tail.as_ref(), &obs).await?;
    ctx.metrics.set_phase(&uid, Some(phase.as_str()));
    ctx.metrics
        .observe_reconcile(phase.as_str(), started.elapsed());
    if phase == Phase::Stalled
        && let Err(error) = &applied
        && error.is_refused_write()
    {
        tracing::debug!(%error, "still refused; retrying on the next change or recheck");
        // Refused for what it holds: retrying on a backoff would only repeat the refusal.
        // A change of the Tenant or its objects brings a pass; so does the slow recheck.
        return Ok(Action::requeue(STALLED_RECHECK));
    }
    applied?;
    ctx.memo(&tenant, |m| m.failures = 0);
    // What this pass did (an Auth registration, objects that became ready meanwhile) may
    // already allow the next transition, and with an unchanged status nothing else would
    // start the pass that takes it.
    let facts = ctx.facts(&tenant, tail.as_ref());
    if derive_input(phase, facts, &obs).is_some_and(|input| step(phase, &input).is_some()) {
        return Ok(Action::requeue(NEXT_TRANSITION_DELAY));
    }
    let mut next = match phase {
        // The namespace controller can take a while; its deletion also triggers a pass.
        Phase::Deleting => Duration::from_secs(5),
        // The conflicting namespace may go away, and it carries none of our labels: no
        // watch event would tell.
        Phase::Failed => FAILED_RECHECK,
        Phase::Stalled => STALLED_RECHECK,
        _ => Duration::from_secs(600),
    };
    if phase.awaits_progress()
        && let Some(deadline) = facts.deadline()
    {
        let left = (deadline - facts.now).to_std().unwrap_or_default();
        next = next.min(left + Duration::from_secs(1));
    }
    if let Some(due) = obs.problem_due {
        let left = (due - Utc::now()).to_std().unwrap_or_default();
        next = next.min(left + Duration::from_millis(100));
    }
    if ctx.events_behind(&tenant) {
        next = next.min(EVENT_RETRY);
    }
    tracing::debug!(?next, %phase, "next pass");
    Ok(Action::requeue(next))
}

/// Failed passes retry with per-tenant exponential backoff and jitter; one stuck tenant
/// never delays another.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_error(error.reason());
    let failures = ctx.memo(&tenant, |m| {
        m.failures = m.failures.saturating_add(1);
        m.failures
    });
    let base = match error {
        Error::Auth(e) => e.retry_after().unwrap_or(Duration::from_secs(2)),
        _ => Duration::from_millis(500),
    };
    let backoff = base
        .saturating_mul(1u32 << failures.min(6))
        .min(Duration::from_secs(120));
    let jitter = Duration::from_millis(rand::random::<u64>() % 500);
    warn!(tenant = %tenant.name_any(), reason = error.reason(), %error, retry_in = ?backoff, "reconcile failed");
    Action::requeue(backoff + jitter)
}

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
            Box::pin(async move { tenants.wait_until_ready().await }),
        ),
        ("namespaces", wait_ready(stores.namespaces)),
        ("configmaps", wait_ready(stores.config_maps)),
        ("services", wait_ready(stores.services)),
        ("statefulsets", wait_ready(stores.statefulsets)),
        ("deployments", wait_ready(stores.deployments)),
        ("networkpolicies", wait_ready(stores.network_policies)),
        ("resourcequotas", wait_ready(stores.quotas)),
        ("limitranges", wait_ready(stores.limit_ranges)),
        ("pods", wait_ready(stores.pods)),
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

fn wait_ready<K>(
    store: Store<K>,
) -> futures::future::BoxFuture<'static, Result<(), reflector::store::WriterDropped>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    Box::pin(async move { store.wait_until_ready().await })
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

/// How soon a pass that made the next transition possible is followed by the one taking it.
const NEXT_TRANSITION_DELAY: Duration = Duration::from_millis(100);

/// The progress deadline unless the operator is told otherwise.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// How often a Failed tenant is looked at again (its conflicting namespace may be gone).
const FAILED_RECHECK: Duration = Duration::from_secs(60);

/// How often a Stalled tenant tries again without being asked (a change of the Tenant or
/// of its objects and pods brings a pass at once).
const STALLED_RECHECK: Duration = Duration::from_secs(300);

/// How soon an Event that could not be written is tried again.
const EVENT_RETRY: Duration = Duration::from_secs(5);

/// Failed Events kept per tenant for a retry; more are dropped (and counted as failed).
const MAX_PENDING_EVENTS: usize = 32;

/// Reason of the error metric counting Event writes that failed.
pub const EVENT_WRITE_FAILED: &str = "EventWriteFailed";

/// Objects per page of a cache's initial list. Eight caches list at once at start-up, and
/// each page is held whole while it is decoded: kube's default of 500 made those pages the
/// operator's peak memory at 1,000 tenants.
const LIST_PAGE_SIZE: u32 = 50;

fn cache<K>(client: &Client) -> (Store<K>, Watch<K>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    cache_stripping(client, |o: &mut K| o.meta_mut().managed_fields = None)
}

/// The tenants' pods with only what says why one does not run: their specs (the bulk of
/// a pod) are dropped before they enter the cache.
fn pod_cache(client: &Client) -> (Store<Pod>, Watch<Pod>) {
    cache_stripping(client, |pod: &mut Pod| {
        pod.metadata.managed_fields = None;
        pod.metadata.annotations = None;
        pod.spec = None;
    })
}

/// A label-selected cache of `K` whose objects lose what `strip` removes on the way in.
fn cache_stripping<K>(
    client: &Client,
    strip: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, Watch<K>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(&managed_selector())
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .touched_objects();
    (reader, Box::pin(stream))
}

/// The Tenant a pod belongs to, by its tenant label (pods are owned by ReplicaSets and
/// StatefulSets, not by the Tenant).
fn pod_tenant(pod: Pod) -> Option<ObjectRef<Tenant>> {
    pod.labels()
        .get(render::TENANT_LABEL)
        .map(|name| ObjectRef::new(name))
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
    let (namespaces, ns_watch) = cache::<Namespace>(&client);
    let (config_maps, cm_watch) = cache::<ConfigMap>(&client);
    let (services, svc_watch) = cache::<Service>(&client);
    let (statefulsets, sts_watch) = cache::<StatefulSet>(&client);
    let (deployments, deploy_watch) = cache::<Deployment>(&client);
    let (network_policies, np_watch) = cache::<NetworkPolicy>(&client);
    let (quotas, quota_watch) = cache::<ResourceQuota>(&client);
    let (limit_ranges, lr_watch) = cache::<LimitRange>(&client);
    let (pods, pod_watch) = pod_cache(&client);
    let stores = Stores {
        namespaces,
        config_maps,
        services,
        statefulsets,
        deployments,
        network_policies,
        quotas,
        limit_ranges,
        pods,
    };
    let ctx = Arc::new(make_context(stores.clone()).with_caches_synced(ready.clone()));
    let tenants: Api<Tenant> = Api::all(client.clone());
    let mut tenant_watch = watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    if let Some(selector) = tenant_selector {
        tenant_watch = tenant_watch.labels(selector);
    }
    let (tenant_store, tenant_writer) = reflector::store();
    // Managed fields are dropped here too: a Tenant's status entry alone decodes into a
    // tree of maps many times the size of the status it describes.
    let tenant_stream = watcher(tenants, tenant_watch)
        .modify(|t| t.meta_mut().managed_fields = None)
        .reflect(tenant_writer)
        .applied_objects();
    let controller = Controller::for_stream(tenant_stream, tenant_store)
        .watches_stream(ns_watch, owning_tenants)
        .watches_stream(cm_watch, owning_tenants)
        .watches_stream(svc_watch, owning_tenants)
        .watches_stream(sts_watch, owning_tenants)
        .watches_stream(deploy_watch, owning_tenants)
        .watches_stream(np_watch, owning_tenants)
        .watches_stream(quota_watch, owning_tenants)
        .watches_stream(lr_watch, owning_tenants)
        .watches_stream(pod_watch, pod_tenant)
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

#[doc(hidden)]
pub fn status_of(tenant: &Tenant) -> Option<&TenantStatus> {
    tenant.status.as_ref()
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
