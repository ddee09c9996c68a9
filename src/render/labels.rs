//! The labels other NeuralLog tooling selects on; keep them as the original operator had them.

use std::collections::BTreeMap;

pub const TENANT_LABEL: &str = "neurallog.io/tenant";
pub const TENANT_UID_LABEL: &str = "neurallog.io/tenant-uid";
pub const MANAGED_BY_LABEL: &str = "neurallog.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "tenant-operator";
pub const COMPONENT_LABEL: &str = "neurallog.io/component";

/// Labels every object of a tenant carries.
pub fn tenant_labels(tenant: &str) -> BTreeMap<String, String> {
    super::string_map([(TENANT_LABEL, tenant), (MANAGED_BY_LABEL, MANAGED_BY_VALUE)])
}

/// Labels of a component's objects and pods: `redis` or `server`.
pub fn component_labels(tenant: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = tenant_labels(tenant);
    labels.insert(COMPONENT_LABEL.into(), component.into());
    labels.insert("app".into(), app_label(component).into());
    labels
}

/// The pod selector of a component: stable for the life of the workload.
pub fn selector_labels(tenant: &str, component: &str) -> BTreeMap<String, String> {
    super::string_map([
        (TENANT_LABEL, tenant),
        (COMPONENT_LABEL, component),
        ("app", app_label(component)),
    ])
}

fn app_label(component: &str) -> &'static str {
    match component {
        "redis" => "redis",
        "redis-backup" => "redis-backup",
        _ => "neurallog-server",
    }
}
