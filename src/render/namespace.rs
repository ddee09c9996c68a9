//! The tenant namespace, and how to tell ours from someone else's.

use super::{RenderError, TENANT_UID_LABEL, owner_reference, tenant_labels};
use crate::crd::{Tenant, namespace_for};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `tenant-<name>`, labelled with the tenant's name and uid and owned by the Tenant.
pub fn namespace(tenant: &Tenant) -> Result<Namespace, RenderError> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let uid = tenant.metadata.uid.clone().ok_or(RenderError::MissingUid)?;
    let mut labels = tenant_labels(&name);
    labels.insert(TENANT_UID_LABEL.into(), uid);
    // Pod Security Admission enforces what the operator renders anyway.
    for mode in ["enforce", "warn", "audit"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
    }
    Ok(Namespace {
        metadata: ObjectMeta {
            name: Some(namespace_for(&name)),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(tenant)?]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    })
}

/// Whether `ns` was created by the operator for this very Tenant (same uid). A namespace
/// of the same name that someone else made is never adopted, changed or deleted.
pub fn is_owned_by(ns: &Namespace, tenant: &Tenant) -> bool {
    let Some(uid) = tenant.metadata.uid.as_deref() else {
        return false;
    };
    ns.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TENANT_UID_LABEL))
        .is_some_and(|v| v == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::basic;

    #[test]
    fn the_namespace_is_labelled_with_name_uid_and_restricted_pod_security() {
        let tenant = basic();
        let ns = namespace(&tenant).expect("renders");
        assert_eq!(ns.metadata.name.as_deref(), Some("tenant-my-tenant"));
        let labels = ns.metadata.labels.clone().expect("labels");
        assert_eq!(labels["neurallog.io/tenant"], "my-tenant");
        assert_eq!(labels["neurallog.io/managed-by"], "tenant-operator");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert!(is_owned_by(&ns, &tenant));
    }

    #[test]
    fn a_namespace_without_our_uid_is_foreign() {
        let tenant = basic();
        let mut ns = namespace(&tenant).expect("renders");
        assert!(is_owned_by(&ns, &tenant));
        ns.metadata.labels = None;
        assert!(!is_owned_by(&ns, &tenant));
        let mut other = basic();
        other.metadata.uid = Some("another-uid".into());
        let theirs = namespace(&other).expect("renders");
        assert!(!is_owned_by(&theirs, &tenant));
    }
}
