//! Where pods run: `nodeSelector`, `tolerations` and `topologySpread` of both components,
//! and `spec.imagePullSecrets`. Checked like the API server checks a Pod, so a spec that
//! passes here never makes the workload's apply fail.

use super::{Problems, quoted, syntax};
use crate::crd::{Placement, TaintEffect, TolerationOperator, limits};

pub(super) fn check(field: &str, placement: Placement<'_>, problems: &mut Problems) {
    check_node_selector(&format!("{field}.nodeSelector"), placement, problems);
    check_tolerations(&format!("{field}.tolerations"), placement, problems);
    check_topology_spread(&format!("{field}.topologySpread"), placement, problems);
}

fn check_node_selector(field: &str, placement: Placement<'_>, problems: &mut Problems) {
    let selector = placement.node_selector;
    problems.check_count(field, selector.len(), limits::MAX_NODE_SELECTOR, "labels");
    for (key, value) in selector {
        if let Err(why) = syntax::check_label_key(key) {
            problems.add(
                field,
                format!("label key {} is not valid: {why}", quoted(key)),
            );
        }
        if let Err(why) = syntax::check_label_value(value) {
            problems.add(
                field,
                format!(
                    "the value {} of label {} is not valid: {why}",
                    quoted(value),
                    quoted(key)
                ),
            );
        }
    }
}

fn check_tolerations(field: &str, placement: Placement<'_>, problems: &mut Problems) {
    let tolerations = placement.tolerations;
    problems.check_count(
        field,
        tolerations.len(),
        limits::MAX_TOLERATIONS,
        "tolerations",
    );
    for (i, toleration) in tolerations.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let key = toleration.key.as_deref().unwrap_or_default();
        let value = toleration.value.as_deref().unwrap_or_default();
        if !key.is_empty()
            && let Err(why) = syntax::check_label_key(key)
        {
            problems.add(
                format!("{field}.key"),
                format!("{} is not a valid taint key: {why}", quoted(key)),
            );
        }
        match toleration.operator {
            TolerationOperator::Exists if !value.is_empty() => problems.add(
                format!("{field}.value"),
                "operator Exists takes no value (it matches any value)",
            ),
            TolerationOperator::Equal if key.is_empty() => problems.add(
                format!("{field}.key"),
                "a toleration without a key must use operator Exists (it then tolerates every taint)",
            ),
            TolerationOperator::Equal => {
                if let Err(why) = syntax::check_label_value(value) {
                    problems.add(
                        format!("{field}.value"),
                        format!("{} is not a valid taint value: {why}", quoted(value)),
                    );
                }
            }
            TolerationOperator::Exists => {}
        }
        if let Some(seconds) = toleration.toleration_seconds {
            if toleration.effect != Some(TaintEffect::NoExecute) {
                problems.add(
                    format!("{field}.tolerationSeconds"),
                    "applies only to effect NoExecute",
                );
            }
            if !(0..=limits::MAX_TOLERATION_SECONDS).contains(&seconds) {
                problems.add(
                    format!("{field}.tolerationSeconds"),
                    format!(
                        "must be from 0 to {}, found {seconds}",
                        limits::MAX_TOLERATION_SECONDS
                    ),
                );
            }
        }
    }
}

fn check_topology_spread(field: &str, placement: Placement<'_>, problems: &mut Problems) {
    let spread = placement.topology_spread;
    problems.check_count(
        field,
        spread.len(),
        limits::MAX_TOPOLOGY_SPREAD,
        "constraints",
    );
    for (i, constraint) in spread.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let key = &constraint.topology_key;
        if let Err(why) = syntax::check_label_key(key) {
            problems.add(
                format!("{field}.topologyKey"),
                format!("{} is not a node label key: {why}", quoted(key)),
            );
        }
        let earlier = spread[..i].iter().any(|c| &c.topology_key == key);
        if earlier {
            problems.add(
                format!("{field}.topologyKey"),
                format!(
                    "{} is spread over twice; keep one entry per key",
                    quoted(key)
                ),
            );
        }
        if !(1..=limits::MAX_SKEW).contains(&constraint.max_skew) {
            problems.add(
                format!("{field}.maxSkew"),
                format!(
                    "must be from 1 to {}, found {}",
                    limits::MAX_SKEW,
                    constraint.max_skew
                ),
            );
        }
    }
}

pub(super) fn check_image_pull_secrets(secrets: &[String], problems: &mut Problems) {
    const FIELD: &str = "spec.imagePullSecrets";
    problems.check_count(
        FIELD,
        secrets.len(),
        limits::MAX_IMAGE_PULL_SECRETS,
        "secrets",
    );
    for (i, name) in secrets.iter().enumerate() {
        if !syntax::is_dns_subdomain(name) {
            problems.add(
                format!("{FIELD}[{i}]"),
                format!(
                    "{} is not a Secret name: lower-case letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit",
                    quoted(name)
                ),
            );
        }
        if secrets[..i].contains(name) {
            problems.add(
                format!("{FIELD}[{i}]"),
                format!("{} is listed twice", quoted(name)),
            );
        }
    }
}

pub(super) fn check_storage_class(class: Option<&str>, problems: &mut Problems) {
    if let Some(class) = class
        && !syntax::is_dns_subdomain(class)
    {
        problems.add(
            "spec.redis.storageClassName",
            format!(
                "{} is not a StorageClass name: lower-case letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit",
                quoted(class)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::crd::{
        TaintEffect, TenantSpec, Toleration, TolerationOperator, TopologySpread, WhenUnsatisfiable,
    };
    use crate::validation::validate;

    fn problems(spec: &TenantSpec) -> Vec<String> {
        validate("acme", spec)
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn with_toleration(toleration: Toleration) -> TenantSpec {
        let mut spec = TenantSpec::default();
        spec.server.tolerations = vec![toleration];
        spec
    }

    fn toleration(key: &str, operator: TolerationOperator, value: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator,
            value: Some(value.into()),
            effect: None,
            toleration_seconds: None,
        }
    }

    #[test]
    fn tolerations_follow_the_pod_rules() {
        let exists_with_value = toleration("gpu", TolerationOperator::Exists, "yes");
        assert_eq!(
            problems(&with_toleration(exists_with_value)),
            [
                "spec.server.tolerations[0].value: operator Exists takes no value (it matches any value)"
            ]
        );
        let equal_without_key = toleration("", TolerationOperator::Equal, "x");
        assert_eq!(
            problems(&with_toleration(equal_without_key)),
            [
                "spec.server.tolerations[0].key: a toleration without a key must use operator Exists (it then tolerates every taint)"
            ]
        );
        let mut seconds_without_no_execute = toleration("gpu", TolerationOperator::Exists, "");
        seconds_without_no_execute.toleration_seconds = Some(5);
        seconds_without_no_execute.effect = Some(TaintEffect::NoSchedule);
        assert_eq!(
            problems(&with_toleration(seconds_without_no_execute)),
            ["spec.server.tolerations[0].tolerationSeconds: applies only to effect NoExecute"]
        );
        let bad_key = toleration("-gpu", TolerationOperator::Equal, "a b");
        let found = problems(&with_toleration(bad_key));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("\"-gpu\" is not a valid taint key"),
            "{found:?}"
        );
        assert!(
            found[1].contains("\"a b\" is not a valid taint value"),
            "{found:?}"
        );
    }

    #[test]
    fn tolerate_everything_and_a_timed_no_execute_are_valid() {
        let everything = Toleration {
            key: None,
            operator: TolerationOperator::Exists,
            value: None,
            effect: None,
            toleration_seconds: None,
        };
        let timed = Toleration {
            key: Some("node.kubernetes.io/unreachable".into()),
            operator: TolerationOperator::Exists,
            value: None,
            effect: Some(TaintEffect::NoExecute),
            toleration_seconds: Some(300),
        };
        let mut spec = TenantSpec::default();
        spec.redis.tolerations = vec![everything, timed];
        assert_eq!(problems(&spec), Vec::<String>::new());
    }

    #[test]
    fn node_selector_keys_and_values_are_labels() {
        let mut spec = TenantSpec::default();
        spec.redis.node_selector = [("disk type".to_string(), "ssd".to_string())].into();
        let found = problems(&spec);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("spec.redis.nodeSelector: label key \"disk type\" is not valid"),
            "{found:?}"
        );
    }

    #[test]
    fn one_spread_per_topology_key() {
        let spread = TopologySpread {
            topology_key: "topology.kubernetes.io/zone".into(),
            max_skew: 1,
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        };
        let mut spec = TenantSpec::default();
        spec.server.topology_spread = vec![spread.clone(), spread];
        assert_eq!(
            problems(&spec),
            [
                "spec.server.topologySpread[1].topologyKey: \"topology.kubernetes.io/zone\" is spread over twice; keep one entry per key"
            ]
        );
    }

    #[test]
    fn pull_secrets_and_storage_class_are_object_names() {
        let mut spec = TenantSpec {
            image_pull_secrets: vec!["Registry".into(), "ok".into(), "ok".into()],
            ..TenantSpec::default()
        };
        spec.redis.storage_class_name = Some("fast_ssd".into());
        let found = problems(&spec);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with(
                "spec.redis.storageClassName: \"fast_ssd\" is not a StorageClass name"
            )
        );
        assert!(
            found[1].starts_with("spec.imagePullSecrets[0]: \"Registry\" is not a Secret name")
        );
        assert_eq!(found[2], "spec.imagePullSecrets[2]: \"ok\" is listed twice");
    }
}
