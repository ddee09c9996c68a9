//! Observing a tenant from the watch caches (and Auth): what exists, what is ready, and
//! why not.

use super::failures;
use super::observation::{Observation, deployment_state, namespace_state, statefulset_state};
use super::storage::{self, ClaimSize, Expansion, StorageState};
use super::{Context, Error};
use crate::crd::{BackupStatus, Tenant, namespace_for};
use crate::quantity::Quantity;
use crate::render::{self, RenderError, RenderSettings};
use chrono::Utc;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the spec asks for, worked out once per pass: its problems (validation, then
/// rendering), and the rendered objects when there are none.
pub struct Wanted {
    pub problems: Vec<String>,
    pub objects: Result<render::Desired, RenderError>,
    /// What the objects were rendered from (see `verdicts`).
    pub inputs: String,
}

impl Wanted {
    pub fn of(tenant: &Tenant, settings: &RenderSettings) -> Wanted {
        let mut problems: Vec<String> =
            crate::validation::validate(&tenant.name_any(), &tenant.spec)
                .iter()
                .map(|p| p.to_string())
                .collect();
        let objects = if problems.is_empty() {
            let rendered = render::Desired::render(tenant, settings);
            if let Err(error) = &rendered {
                problems.push(error.to_string());
            }
            rendered
        } else {
            Err(RenderError::InvalidField {
                field: "spec".into(),
                message: problems.join("; "),
            })
        };
        Wanted {
            problems,
            objects,
            inputs: super::verdicts::render_inputs(tenant),
        }
    }
}

impl Context {
    /// Reads the tenant's objects from the caches. The namespace is also read from the API
    /// server when the (label-selected) cache lacks it: a foreign namespace of the same
    /// name carries none of our labels.
    pub(super) async fn observe(
        &self,
        tenant: &Tenant,
        wanted: &Wanted,
    ) -> Result<Observation, Error> {
        let name = tenant.name_any();
        self.wanted_sizes
            .note(&name, Quantity::parse(&tenant.spec.redis.storage).ok());
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
        let sts = self
            .stores
            .statefulsets
            .get(&ObjectRef::new(&render::redis_name(&name)).within(&ns_name));
        let deployment = self
            .stores
            .deployments
            .get(&ObjectRef::new(&render::server_name(&name)).within(&ns_name));
        let (redis_matches, server_matches) = match &wanted.objects {
            Ok(desired) => (
                sts.as_deref().is_some_and(|sts| {
                    self.is_current_object(tenant, &wanted.inputs, &desired.redis_statefulset, sts)
                        .unwrap_or(false)
                }),
                deployment.as_deref().is_some_and(|deployment| {
                    self.is_current_object(
                        tenant,
                        &wanted.inputs,
                        &desired.server_deployment,
                        deployment,
                    )
                    .unwrap_or(false)
                }),
            ),
            Err(_) => (false, false),
        };
        let redis = statefulset_state(sts.as_deref(), tenant.spec.redis.replicas, redis_matches);
        let server = deployment_state(
            deployment.as_deref(),
            tenant.spec.server.scale(),
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
            registration: self.known_ownership(tenant),
            name_check: Default::default(),
            problems: wanted.problems.clone(),
            redis_problem,
            server_problem,
            write_failure: self.memo(tenant, |m| m.write_failure.clone()),
            problem_due: redis_due.into_iter().chain(server_due).min(),
            storage: if owned {
                self.redis_storage(tenant, &ns_name).await?
            } else {
                StorageState::Settled
            },
            backup: self.backup_status(tenant, &ns_name),
        })
    }

    /// The backup times the CronJob reports: empty until it exists, none without backups.
    fn backup_status(&self, tenant: &Tenant, namespace: &str) -> Option<BackupStatus> {
        tenant.spec.redis.backup.as_ref()?;
        let key = ObjectRef::new(render::BACKUP_CRONJOB).within(namespace);
        let status = self
            .stores
            .cron_jobs
            .get(&key)
            .and_then(|c| c.status.clone());
        Some(BackupStatus {
            last_successful_time: status.as_ref().and_then(|s| s.last_successful_time.clone()),
            last_schedule_time: status.and_then(|s| s.last_schedule_time),
        })
    }

    /// Where the tenant's Redis claims stand against `spec.redis.storage`. A StorageClass
    /// is read from the API server, and only while a claim still asks for less than the
    /// spec: classes are few, rarely read, and not worth a cache.
    async fn redis_storage(&self, tenant: &Tenant, namespace: &str) -> Result<StorageState, Error> {
        let Ok(wanted) = Quantity::parse(&tenant.spec.redis.storage) else {
            // Reported as a spec problem; nothing to grow to.
            return Ok(StorageState::Settled);
        };
        let name = tenant.name_any();
        let mut claims: Vec<ClaimSize> = self
            .stores
            .redis_claims
            .in_namespace(namespace)
            .iter()
            .filter(|c| c.labels().get(render::TENANT_LABEL) == Some(&name))
            .map(|c| ClaimSize::of(c))
            .collect();
        claims.sort_by(|a, b| a.name.cmp(&b.name));
        let api: Api<StorageClass> = Api::all(self.client.clone());
        let mut classes = BTreeMap::new();
        for class in storage::classes_to_read(&wanted, &claims) {
            let expansion = match api.get_opt(&class).await.map_err(Error::Kube)? {
                None => Expansion::NoSuchClass,
                Some(c) if c.allow_volume_expansion == Some(true) => Expansion::Allowed,
                Some(_) => Expansion::NotAllowed,
            };
            classes.insert(class, expansion);
        }
        Ok(storage::storage_state(&wanted, &claims, |class| {
            classes
                .get(class)
                .cloned()
                .unwrap_or(Expansion::NoSuchClass)
        }))
    }

    /// Why a pod of `component` in `namespace` does not run, from the pod cache.
    pub(super) fn pod_problem(
        &self,
        namespace: &str,
        component: &str,
        now: chrono::DateTime<Utc>,
    ) -> (Option<failures::PodProblem>, Option<chrono::DateTime<Utc>>) {
        let pods: Vec<Arc<Pod>> = self
            .stores
            .pods
            .in_namespace(namespace)
            .into_iter()
            .filter(|pod| {
                pod.labels()
                    .get(render::COMPONENT_LABEL)
                    .map(String::as_str)
                    == Some(component)
            })
            .collect();
        failures::pod_problem(pods.iter().map(|p| p.as_ref()), now)
    }
}
