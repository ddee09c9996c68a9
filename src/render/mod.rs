//! Desired objects for a tenant, rendered from its spec by pure functions.
//!
//! Nothing here talks to the cluster: the same Tenant and settings always give the same
//! objects, which is what makes "no change means no write" checkable.

mod backup;
mod desired;
mod labels;
mod names;
mod namespace;
mod network;
mod placement;
mod quota;
mod redis;
mod resources;
mod security;
mod server;

pub use backup::{
    BACKUP_CLAIM, BACKUP_COMPONENT, BACKUP_CRONJOB, BACKUP_DIR, BACKUP_SCRIPT, RESTORE_SCRIPT,
    backup_claim, backup_cronjob, backup_storage,
};
pub use desired::Desired;
pub use labels::{
    COMPONENT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TENANT_LABEL, TENANT_UID_LABEL,
    component_labels, tenant_labels,
};
pub use names::{DerivedName, NameRule, derived_names, invalid_derived_names};
pub use namespace::{is_owned_by, namespace};
pub use network::network_policies;
pub use quota::{counting_kept_claim, limit_range, resource_quota};
pub use redis::{
    DATA_VOLUME, REDIS_PORT, redis_conf, redis_config_map, redis_config_map_name, redis_host,
    redis_name, redis_service, redis_statefulset,
};
pub use resources::{ContainerResources, effective_resources};
pub use server::{
    SERVER_PORT, server_autoscaler, server_deployment, server_disruption_budget, server_name,
    server_service,
};

use crate::crd::Tenant;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use std::collections::BTreeMap;

/// Settings the renderers need beyond the Tenant itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderSettings {
    /// The Auth URL as tenant pods reach it (cluster DNS), passed as `AUTH_URL`.
    pub tenant_auth_url: String,
    /// Namespace of the Auth service, opened for egress by the network policies.
    pub auth_namespace: String,
    /// Port of the Auth service, opened for egress by the network policies.
    pub auth_port: i32,
    /// Labels of the Auth pods in `auth_namespace` that servers may reach (empty: all).
    pub auth_pod_labels: BTreeMap<String, String>,
    /// Labels of the cluster DNS pods in kube-system that tenant pods may ask (empty: all
    /// pods of kube-system).
    pub dns_pod_labels: BTreeMap<String, String>,
    /// Cluster DNS domain, for `REDIS_HOST`.
    pub cluster_domain: String,
    /// Namespaces of ingress controllers, admitted to the server port of every tenant
    /// whose network policies are on (policy `allow-ingress-controller`); empty: none.
    pub ingress_controller_namespaces: Vec<String>,
}

/// Where the common ingress controllers install themselves by default: ingress-nginx,
/// NGINX Inc.'s controller, Traefik, HAProxy, Kong, Contour, Istio's ingress gateway.
pub const DEFAULT_INGRESS_CONTROLLER_NAMESPACES: [&str; 7] = [
    "ingress-nginx",
    "nginx-ingress",
    "traefik",
    "haproxy-controller",
    "kong",
    "projectcontour",
    "istio-ingress",
];

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            tenant_auth_url: "http://auth.neurallog.svc.cluster.local:3040".into(),
            auth_namespace: "neurallog".into(),
            auth_port: 3040,
            auth_pod_labels: BTreeMap::new(),
            dns_pod_labels: string_map([("k8s-app", "kube-dns")]),
            cluster_domain: "cluster.local".into(),
            ingress_controller_namespaces: DEFAULT_INGRESS_CONTROLLER_NAMESPACES
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Why a Tenant cannot be rendered. Validation reports these before rendering; they are
/// errors here rather than panics so that a Tenant that slipped past validation is
/// reported, not fatal.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("the Tenant has no uid yet (it was not read from the API server)")]
    MissingUid,
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
}

/// Metadata of a namespaced child of `tenant`: name, namespace, labels, owner reference.
pub(crate) fn child_meta(
    tenant: &Tenant,
    name: String,
    component: Option<&str>,
) -> Result<ObjectMeta, RenderError> {
    let tenant_name = tenant.name_unchecked_or_empty();
    let labels = match component {
        Some(component) => component_labels(&tenant_name, component),
        None => tenant_labels(&tenant_name),
    };
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(crate::crd::namespace_for(&tenant_name)),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(tenant)?]),
        ..ObjectMeta::default()
    })
}

/// A controller owner reference to the Tenant, so garbage collection follows it.
pub fn owner_reference(tenant: &Tenant) -> Result<OwnerReference, RenderError> {
    tenant
        .controller_owner_ref(&())
        .ok_or(RenderError::MissingUid)
}

pub(crate) fn string_map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

trait NameOrEmpty {
    fn name_unchecked_or_empty(&self) -> String;
}

impl NameOrEmpty for Tenant {
    fn name_unchecked_or_empty(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::crd::Tenant;

    pub fn tenant(yaml: &str) -> Tenant {
        let mut tenant: Tenant = serde_yaml::from_str(yaml).expect("valid Tenant YAML");
        tenant.metadata.uid = Some("0b6f3f0e-1111-2222-3333-444455556666".into());
        tenant.metadata.generation = Some(1);
        tenant
    }

    pub fn basic() -> Tenant {
        tenant(include_str!("../../examples/basic-tenant.yaml"))
    }

    pub fn customized() -> Tenant {
        tenant(include_str!("../../examples/customized-tenant.yaml"))
    }
}
