//! Where a component's pods run and how their images are pulled: node selector,
//! tolerations, topology spread over the component's own pods, image pull secrets. Each
//! field is left out when the spec leaves it empty, so tenants that set none render the
//! same pod template as before these fields existed (no rollout on upgrade).

use crate::crd::{Placement, TaintEffect, Tenant, TolerationOperator, WhenUnsatisfiable};
use k8s_openapi::api::core::v1::{
    LocalObjectReference, PodSpec, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Sets `pod`'s placement from `placement`; `pod_labels` select the component's pods,
/// which is what each topology spread constraint counts.
pub(super) fn place(
    pod: &mut PodSpec,
    tenant: &Tenant,
    placement: Placement<'_>,
    pod_labels: &BTreeMap<String, String>,
) {
    pod.node_selector = non_empty(placement.node_selector.clone());
    pod.tolerations = non_empty_vec(placement.tolerations.iter().map(toleration).collect());
    pod.topology_spread_constraints = non_empty_vec(
        placement
            .topology_spread
            .iter()
            .map(|spread| TopologySpreadConstraint {
                topology_key: spread.topology_key.clone(),
                max_skew: spread.max_skew,
                when_unsatisfiable: match spread.when_unsatisfiable {
                    WhenUnsatisfiable::DoNotSchedule => "DoNotSchedule",
                    WhenUnsatisfiable::ScheduleAnyway => "ScheduleAnyway",
                }
                .into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(pod_labels.clone()),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            })
            .collect(),
    );
    pod.image_pull_secrets = non_empty_vec(
        tenant
            .spec
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect(),
    );
}

fn toleration(from: &crate::crd::Toleration) -> Toleration {
    Toleration {
        key: from.key.clone().filter(|key| !key.is_empty()),
        operator: Some(
            match from.operator {
                TolerationOperator::Equal => "Equal",
                TolerationOperator::Exists => "Exists",
            }
            .into(),
        ),
        value: from.value.clone().filter(|value| !value.is_empty()),
        effect: from.effect.map(|effect| {
            match effect {
                TaintEffect::NoSchedule => "NoSchedule",
                TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                TaintEffect::NoExecute => "NoExecute",
            }
            .into()
        }),
        toleration_seconds: from.toleration_seconds,
    }
}

fn non_empty<K, V>(map: BTreeMap<K, V>) -> Option<BTreeMap<K, V>> {
    (!map.is_empty()).then_some(map)
}

fn non_empty_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use crate::render::test_support::{basic, tenant};
    use crate::render::{RenderSettings, redis_statefulset, server_deployment};
    use k8s_openapi::api::core::v1::PodSpec;

    fn server_pod(yaml: &str) -> PodSpec {
        let deployment = server_deployment(&tenant(yaml), &RenderSettings::default()).unwrap();
        deployment.spec.unwrap().template.spec.unwrap()
    }

    fn redis_pod(yaml: &str) -> PodSpec {
        let sts = redis_statefulset(&tenant(yaml)).unwrap();
        sts.spec.unwrap().template.spec.unwrap()
    }

    const PLACED: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: placed}
spec:
  imagePullSecrets: [registry-a]
  server:
    replicas: 3
    nodeSelector: {pool: web}
    tolerations:
      - {key: dedicated, operator: Equal, value: neurallog, effect: NoSchedule}
      - {operator: Exists, effect: NoExecute, tolerationSeconds: 30}
    topologySpread:
      - {topologyKey: topology.kubernetes.io/zone}
  redis:
    storageClassName: fast-ssd
    nodeSelector: {disk: ssd}
"#;

    #[test]
    fn a_tenant_without_placement_renders_no_placement_fields() {
        for pod in [
            server_deployment(&basic(), &RenderSettings::default())
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
            redis_statefulset(&basic())
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
        ] {
            assert_eq!(pod.node_selector, None);
            assert_eq!(pod.tolerations, None);
            assert_eq!(pod.topology_spread_constraints, None);
            assert_eq!(pod.image_pull_secrets, None);
        }
    }

    #[test]
    fn the_server_pod_carries_its_placement_and_spreads_over_its_own_pods() {
        let pod = server_pod(PLACED);
        assert_eq!(
            serde_json::to_value(&pod.node_selector).unwrap(),
            serde_json::json!({"pool": "web"})
        );
        assert_eq!(
            serde_json::to_value(&pod.tolerations).unwrap(),
            serde_json::json!([
                {"key": "dedicated", "operator": "Equal", "value": "neurallog", "effect": "NoSchedule"},
                {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
            ])
        );
        let spread = pod.topology_spread_constraints.unwrap();
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread[0].max_skew, 1);
        assert_eq!(spread[0].when_unsatisfiable, "DoNotSchedule");
        let selected = spread[0]
            .label_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(selected["neurallog.io/component"], "server");
        assert_eq!(selected["neurallog.io/tenant"], "placed");
        assert_eq!(
            pod.image_pull_secrets.unwrap()[0].name,
            "registry-a".to_string()
        );
    }

    #[test]
    fn redis_gets_its_own_placement_the_shared_pull_secrets_and_its_storage_class() {
        let pod = redis_pod(PLACED);
        assert_eq!(
            serde_json::to_value(&pod.node_selector).unwrap(),
            serde_json::json!({"disk": "ssd"})
        );
        assert_eq!(pod.tolerations, None);
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry-a");
        let sts = redis_statefulset(&tenant(PLACED)).unwrap();
        let claim = &sts.spec.unwrap().volume_claim_templates.unwrap()[0];
        assert_eq!(
            claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast-ssd")
        );
    }
}
