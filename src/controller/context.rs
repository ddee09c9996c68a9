//! What every pass shares: the clients, caches, journal and metrics, and what the operator
//! remembers about each tenant between passes.

use super::Error;
use super::cache::Cache;
use super::failures;
use super::observation::AuthState;
use super::own_writes::{InFlight, OwnWrites};
use super::triggers::{Phases, WantedSizes};
use super::{DEFAULT_PROGRESS_DEADLINE, DEFAULT_TRANSITIONS_PER_PASS};
use crate::auth::AuthClient;
use crate::crd::{Tenant, TenantStatus};
use crate::journal::slot::JournalSlot;
use crate::journal::{Journal, JournalError, RecoveryMark};
use crate::metrics::Metrics;
use crate::render::RenderSettings;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Watch caches of everything the operator owns, label-selected and without managed fields.
#[derive(Clone)]
pub struct Stores {
    pub namespaces: Cache<Namespace>,
    pub config_maps: Cache<ConfigMap>,
    pub services: Cache<Service>,
    pub statefulsets: Cache<StatefulSet>,
    pub deployments: Cache<Deployment>,
    pub network_policies: Cache<NetworkPolicy>,
    pub quotas: Cache<ResourceQuota>,
    pub limit_ranges: Cache<LimitRange>,
    pub disruption_budgets: Cache<PodDisruptionBudget>,
    pub autoscalers: Cache<HorizontalPodAutoscaler>,
    /// The Redis backup CronJobs: applied, and read for the last successful backup.
    pub cron_jobs: Cache<CronJob>,
    /// Claims the operator creates itself (the backup claim; Redis's own come from its
    /// StatefulSet).
    pub claims: Cache<PersistentVolumeClaim>,
    /// The tenants' pods, status only: why a component is not ready.
    pub pods: Cache<Pod>,
    /// The Redis data claims (created by the StatefulSet controller, selected by the
    /// StatefulSet's pod labels): what size they ask for and hold.
    pub redis_claims: Cache<PersistentVolumeClaim>,
}

/// What the operator remembers about a tenant between passes. Losing it (a restart) costs
/// at most one Auth call and one Event create per tenant, both idempotent.
#[derive(Clone, Debug, Default)]
pub(super) struct TenantMemo {
    pub(super) auth: AuthState,
    /// Whose the Auth registration is, once read from the journal (see `registration`).
    pub(super) ownership: Option<super::registration::Ownership>,
    /// Journal records up to this sequence have their Event.
    pub(super) mirrored: u64,
    pub(super) failures: u32,
    /// The JournalRecovered Warning Event exists.
    pub(super) told_of_recovery: bool,
    /// The Tenant's resourceVersion this pass's status patch was made from, and the status
    /// it wrote. A pass that still sees that version (the watch has not caught up with the
    /// patch) needs no second patch: the patch's own watch event will bring a new pass.
    /// Boxed: the memo of every tenant has room for it, few hold one.
    pub(super) status_patched_from: Option<Box<(String, TenantStatus)>>,
    /// The resourceVersions the API server gave this operator's own writes of the Tenant
    /// (status, finalizer) whose watch events have not arrived yet (see
    /// [`Context::is_own_write_echo`]); the newest few.
    pub(super) own_versions: Vec<String>,
    /// The write that failed in the last pass, until a pass writes everything it needs.
    pub(super) write_failure: Option<failures::WriteFailure>,
    /// Warning Events already sent (by name): a repeated cause costs no second create.
    pub(super) warnings_sent: std::collections::BTreeSet<String>,
    /// A transition's Event could not be written: the next pass comes soon to mirror it.
    pub(super) transitions_behind: bool,
    /// Other Events that could not be written, retried by the next passes.
    pub(super) pending_events: Vec<k8s_openapi::api::core::v1::Event>,
    /// Desired hashes and comparison verdicts of the tenant's objects.
    pub(super) verdicts: super::verdicts::Verdicts,
    /// An event parked while this pass wrote an object was not the write's own (see
    /// `own_writes`): the pass runs again.
    pub(super) changed_while_writing: bool,
}

/// Own Tenant writes remembered per tenant until their watch events arrive (a pass makes
/// at most two: the finalizer and the status).
const MAX_OWN_VERSIONS: usize = 4;

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
    pub(super) chain: Option<String>,
    /// Every owned-object cache holds its initial list. Before that a missing object may
    /// only be not-yet-listed: observing it would apply it again, or journal a spurious
    /// Degraded.
    pub(super) caches_synced: Arc<std::sync::atomic::AtomicBool>,
    pub(super) memo: Mutex<HashMap<String, TenantMemo>>,
    /// The applies and creates of owned objects whose watch events the writing pass
    /// awaits: those events start no pass of their own.
    pub(super) own_writes: OwnWrites,
    /// How long a phase that waits for the cluster may go without progress.
    pub(super) progress_deadline: Duration,
    /// A failed Event write is logged at warning level once; later ones at debug.
    pub(super) event_failure_logged: std::sync::atomic::AtomicBool,
    /// Transitions one pass takes at most (see `pass`).
    pub(super) transitions_per_pass: u32,
    /// What each tenant's spec asks of its Redis volumes, for the claim triggers.
    pub(super) wanted_sizes: WantedSizes,
    /// Each tenant's phase as its last pass step left it, for the workload triggers.
    pub(super) phases: Phases,
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
            own_writes: OwnWrites::default(),
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
            event_failure_logged: std::sync::atomic::AtomicBool::new(false),
            transitions_per_pass: DEFAULT_TRANSITIONS_PER_PASS,
            wanted_sizes: WantedSizes::default(),
            phases: Phases::default(),
        }
    }

    /// At most `transitions` per pass (at least one).
    pub fn with_transitions_per_pass(mut self, transitions: u32) -> Self {
        self.transitions_per_pass = transitions.max(1);
        self
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

    /// Where the passes leave the Redis volume sizes the claim triggers compare with.
    pub(super) fn with_wanted_sizes(mut self, sizes: WantedSizes) -> Self {
        self.wanted_sizes = sizes;
        self
    }

    /// Where the passes leave the tenants' phases the workload triggers read events with.
    pub(super) fn with_phases(mut self, phases: Phases) -> Self {
        self.phases = phases;
        self
    }

    /// The passes' own writes, as the owned-object watches recognise their echoes.
    pub(super) fn with_own_writes(mut self, own_writes: OwnWrites) -> Self {
        self.own_writes = own_writes;
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

    /// This operator's own write `flight` of the Tenant was answered with `written`
    /// (`None`: it failed). Its version is remembered unless its watch event came already;
    /// any other event meanwhile means the pass must run again.
    pub(super) fn note_tenant_write(
        &self,
        tenant: &Tenant,
        flight: InFlight,
        written: Option<&Tenant>,
    ) {
        let version = written.and_then(|w| w.resource_version());
        let answered = flight.settled(version.as_deref());
        if answered.other_change {
            self.note_change_while_writing(tenant);
        }
        if let Some(version) = version.filter(|_| !answered.echo_came) {
            self.note_own_version(tenant, version);
        }
    }

    /// Something other than this pass changed one of the tenant's objects (or the Tenant)
    /// while the pass wrote it: the pass runs again when it ends.
    pub(super) fn note_change_while_writing(&self, tenant: &Tenant) {
        self.memo(tenant, |m| m.changed_while_writing = true);
    }

    /// Remembers the resourceVersion of this operator's own write of the Tenant, as the API
    /// server returned it.
    fn note_own_version(&self, tenant: &Tenant, version: String) {
        self.memo(tenant, |m| {
            if m.own_versions.len() >= MAX_OWN_VERSIONS {
                m.own_versions.remove(0);
            }
            m.own_versions.push(version);
        });
    }

    /// Whether this watch event of a Tenant is the echo of a write this operator made itself
    /// (its status or finalizer patch): the Tenant at exactly the version that write
    /// returned. The pass that wrote it already acted on everything that version holds and
    /// asked for its own follow-up, so the echo needs no pass of its own. Any other change
    /// (spec, labels, annotations, someone else's status edit) has another version. Each
    /// version is recognised once: a relist that brings it again starts a pass. Every event
    /// also drops the status kept from a patch made from an older version.
    pub(super) fn is_own_write_echo(&self, tenant: &Tenant) -> bool {
        let (Some(uid), Some(version)) = (tenant.uid(), tenant.resource_version()) else {
            return false;
        };
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(memo) = memo.get_mut(&uid) else {
            return false;
        };
        // The watch has moved past the version the last status patch was made from: what
        // was kept to avoid patching twice from it (a status per tenant) is no longer needed.
        if memo
            .status_patched_from
            .as_ref()
            .is_some_and(|patched| patched.0 != version)
        {
            memo.status_patched_from = None;
        }
        let own = &mut memo.own_versions;
        match own.iter().position(|v| *v == version) {
            Some(at) => {
                // Older versions of ours were overtaken: their events will not come.
                own.drain(..=at);
                true
            }
            None => false,
        }
    }

    pub(super) fn memo<T>(&self, tenant: &Tenant, f: impl FnOnce(&mut TenantMemo) -> T) -> T {
        let uid = tenant.uid().unwrap_or_default();
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(memo.entry(uid).or_default())
    }

    pub(super) fn forget(&self, tenant: &Tenant) {
        self.wanted_sizes.note(&tenant.name_any(), None);
        self.phases.note(&tenant.name_any(), None);
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

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, Error> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || journal.with(f))
            .await
            .map_err(|e| Error::Join(e.to_string()))?
            .map_err(Error::Journal)
    }
}
