//! "Nothing to change" must mean "no write": decides whether an observed object already
//! is what the operator would apply.
//!
//! Two checks, both needed. The desired-state hash annotation catches spec changes,
//! including removals that a subset check cannot see. The subset check catches drift:
//! someone scaled, edited or stripped a field the operator sets.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const DESIRED_HASH_ANNOTATION: &str = "neurallog.io/desired-hash";

/// A stable digest of an object as rendered (before the annotation is added).
pub fn desired_hash<T: Serialize>(desired: &T) -> String {
    let json = serde_json::to_vec(desired).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..16])
}

/// Whether `observed` carries `hash` and still holds every field of `desired`.
pub fn is_up_to_date(desired: &Value, observed: &Value, hash: &str) -> bool {
    let recorded = observed
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DESIRED_HASH_ANNOTATION))
        .and_then(Value::as_str);
    recorded == Some(hash) && is_subset(desired, observed)
}

/// Every field set in `desired` has the same value in `observed`. Extra fields (server
/// defaults, other managers' fields) are fine; quantities compare by value, since the API
/// server rewrites `0.5` as `500m`.
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d
            .iter()
            .all(|(k, dv)| o.get(k).is_some_and(|ov| is_subset(dv, ov))),
        (Value::Array(d), Value::Array(o)) => {
            d.len() == o.len() && d.iter().zip(o).all(|(dv, ov)| is_subset(dv, ov))
        }
        (Value::String(d), Value::String(o)) => d == o || same_quantity(d, o),
        (d, o) => d == o,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    use crate::quantity::Quantity;
    match (Quantity::parse(a), Quantity::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_foreign_fields_are_ignored() {
        let desired = json!({"spec": {"replicas": 2, "template": {"containers": [{"name": "a"}]}}});
        let observed = json!({"spec": {"replicas": 2, "progressDeadlineSeconds": 600,
            "template": {"containers": [{"name": "a", "terminationMessagePath": "/dev/x"}]}}});
        assert!(is_subset(&desired, &observed));
    }

    #[test]
    fn drift_is_detected() {
        let desired = json!({"spec": {"replicas": 2}});
        assert!(!is_subset(&desired, &json!({"spec": {"replicas": 5}})));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
        let env = json!({"env": [{"name": "A"}, {"name": "B"}]});
        assert!(!is_subset(&env, &json!({"env": [{"name": "A"}]})));
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(is_subset(
            &json!({"memory": "1024Mi"}),
            &json!({"memory": "1Gi"})
        ));
        assert!(!is_subset(&json!({"cpu": "1"}), &json!({"cpu": "500m"})));
        assert!(!is_subset(
            &json!({"image": "redis:7"}),
            &json!({"image": "redis:6"})
        ));
    }

    #[test]
    fn a_changed_spec_changes_the_hash() {
        let desired = json!({"spec": {"replicas": 2}});
        let hash = desired_hash(&desired);
        let observed = json!({"metadata": {"annotations": {DESIRED_HASH_ANNOTATION: hash}}, "spec": {"replicas": 2}});
        assert!(is_up_to_date(&desired, &observed, &hash));
        let changed = json!({"spec": {"replicas": 3}});
        assert!(!is_up_to_date(&changed, &observed, &desired_hash(&changed)));
    }
}
