//! Pausing a tenant: the user's annotation that stops every write to the tenant's objects
//! and to Auth until it is removed. The machine records the pause and the resume (see
//! `Phase::Paused`); this module only reads the annotation and says how to resume.

use crate::crd::Tenant;
use kube::ResourceExt;

/// The annotation that pauses a Tenant. Only the exact value `"true"` pauses; any other
/// value (or none) does not.
pub const PAUSED_ANNOTATION: &str = "neurallog.io/paused";

/// Whether the user asked the operator to leave `tenant` alone.
pub fn is_paused(tenant: &Tenant) -> bool {
    tenant
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|value| value == "true")
}

/// The command that resumes the Tenant `name`, journaled with the pause so that its
/// Event and status tell the user how to undo it.
pub fn resume_command(name: &str) -> String {
    format!("kubectl annotate tenant {name} {PAUSED_ANNOTATION}-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TenantSpec;

    fn tenant_annotated(value: Option<&str>) -> Tenant {
        let mut tenant = Tenant::new("acme", TenantSpec::default());
        if let Some(value) = value {
            tenant
                .annotations_mut()
                .insert(PAUSED_ANNOTATION.into(), value.into());
        }
        tenant
    }

    #[test]
    fn only_the_value_true_pauses() {
        assert!(is_paused(&tenant_annotated(Some("true"))));
        for value in [None, Some("false"), Some("True"), Some("yes"), Some("")] {
            assert!(!is_paused(&tenant_annotated(value)), "{value:?}");
        }
    }

    #[test]
    fn the_resume_command_removes_the_annotation() {
        assert_eq!(
            resume_command("acme"),
            "kubectl annotate tenant acme neurallog.io/paused-"
        );
    }
}
