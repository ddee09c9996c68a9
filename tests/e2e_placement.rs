//! Placement on the real control plane: the spec's node selector, tolerations, topology
//! spread, image pull secrets and storage class reach the pods the scheduler places; a
//! selector no node matches shows as the scheduler's reason on the tenant; the server's
//! disruption budget follows its replica count; admission refuses what a Pod would not
//! take, and a storage class change.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Client};
use neurallog_operator::crd::Tenant;
use serde_json::json;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

fn with_spec(name: &str, run: &str, spec: serde_json::Value) -> Tenant {
    let mut tenant = tenant_from_yaml(BASIC, name, run);
    let mut merged = serde_json::to_value(&tenant.spec).unwrap();
    json_merge(&mut merged, spec);
    tenant.spec = serde_json::from_value(merged).unwrap();
    tenant
}

fn json_merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(into), serde_json::Value::Object(from)) => {
            for (key, value) in from {
                json_merge(into.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

async fn disruption_budget(client: &Client, name: &str) -> Option<PodDisruptionBudget> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &format!("tenant-{name}"));
    api.get_opt(&format!("{name}-server")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_reaches_the_scheduled_pods_and_the_budget_follows_the_replicas() {
    skip_without_cluster();
    let env = OperatorEnv::start("place").await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let ns = format!("tenant-{name}");

    // A node selector no node matches: the server cannot be scheduled, and the tenant says
    // so in the scheduler's words.
    let mut tenant = with_spec(
        &name,
        &env.run,
        json!({
            "imagePullSecrets": ["registry-credentials"],
            "server": {
                "replicas": 2,
                "nodeSelector": {"neurallog.io/pool": "nowhere"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "neurallog", "effect": "NoSchedule"}],
                "topologySpread": [{"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}],
            },
            "redis": {"storageClassName": "standard", "nodeSelector": {"type": "kwok"}},
        }),
    );
    apply_tenant(&env.client, &tenant).await;
    let tenants: Api<Tenant> = Api::all(env.client.clone());
    let stuck = wait_for(
        "the server's unschedulable pods on the tenant",
        PROVISION,
        || {
            let tenants = tenants.clone();
            let name = name.clone();
            async move {
                let t = tenants.get_opt(&name).await.ok()??;
                let message = server_message(&t);
                message.contains("Unschedulable").then_some(message)
            }
        },
    )
    .await;
    assert!(
        stuck.contains("node affinity/selector") || stuck.contains("didn't match"),
        "the scheduler's reason is shown: {stuck}"
    );

    // What the pods carry is what the spec says.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    let pod = deployments
        .get(&format!("{name}-server"))
        .await
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(
        serde_json::to_value(&pod.node_selector).unwrap(),
        json!({"neurallog.io/pool": "nowhere"})
    );
    assert_eq!(
        serde_json::to_value(&pod.tolerations).unwrap(),
        json!([{"key": "dedicated", "operator": "Equal", "value": "neurallog", "effect": "NoSchedule"}])
    );
    assert_eq!(
        pod.image_pull_secrets.unwrap()[0].name,
        "registry-credentials"
    );
    let spread = &pod.topology_spread_constraints.unwrap()[0];
    assert_eq!(spread.topology_key, "kubernetes.io/hostname");
    assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &ns);
    let sts = statefulsets
        .get(&format!("{name}-redis"))
        .await
        .unwrap()
        .spec
        .unwrap();
    let claim = &sts.volume_claim_templates.unwrap()[0];
    assert_eq!(
        claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("standard")
    );

    // Two replicas: one may be disrupted at a time.
    let budget = disruption_budget(&env.client, &name)
        .await
        .expect("a disruption budget for two server replicas");
    assert_eq!(
        serde_json::to_value(budget.spec.unwrap().max_unavailable).unwrap(),
        json!(1)
    );

    // A selector the fake nodes match: the tenant runs, its pods on the selected nodes.
    tenant.spec.server.node_selector = [("type".to_string(), "kwok".to_string())].into();
    apply_tenant(&env.client, &tenant).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    let server_pods = pods
        .list(&ListParams::default().labels("neurallog.io/component=server"))
        .await
        .unwrap()
        .items;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    for pod in server_pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let node_name = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
        let node = nodes.get(&node_name).await.unwrap();
        assert_eq!(
            node.metadata
                .labels
                .unwrap()
                .get("type")
                .map(String::as_str),
            Some("kwok"),
            "server pod on node {node_name}"
        );
    }

    // Back to one replica: a budget would only block node drains.
    tenant.spec.server.replicas = 1;
    apply_tenant(&env.client, &tenant).await;
    wait_for("the disruption budget to be removed", PROVISION, || {
        let client = env.client.clone();
        let name = name.clone();
        async move {
            disruption_budget(&client, &name)
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_tolerations_a_pod_would_not_take_and_a_storage_class_change() {
    skip_without_cluster();
    let client = client().await;
    install_crd(&client).await;
    let name = unique("placeadm");
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let manifest = |spec: &str| {
        format!(
            "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    };
    let refusals = [
        (
            "  server:\n    tolerations: [{key: gpu, operator: Exists, value: \"yes\"}]\n",
            "tolerations: operator Exists takes no value",
        ),
        (
            "  redis:\n    tolerations: [{operator: Equal, value: x}]\n",
            "a toleration without a key must use operator Exists",
        ),
        (
            "  server:\n    tolerations: [{key: gpu, effect: NoSchedule, tolerationSeconds: 5}]\n",
            "tolerationSeconds applies only to effect NoExecute",
        ),
        (
            "  server:\n    topologySpread: [{topologyKey: zone, maxSkew: 0}]\n",
            "spec.server.topologySpread[0].maxSkew",
        ),
    ];
    for (spec, expected) in refusals {
        let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &manifest(spec));
        assert!(!ok, "admitted:\n{spec}");
        assert!(
            stderr.contains(expected),
            "for\n{spec}\nkubectl said: {stderr}"
        );
    }

    let (ok, _, stderr) = kubectl_stdin(
        &["apply", "-f", "-"],
        &manifest("  redis:\n    storageClassName: standard\n"),
    );
    assert!(ok, "{stderr}");
    for changed in ["  redis:\n    storageClassName: fast\n", "  redis: {}\n"] {
        let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &manifest(changed));
        assert!(!ok, "a storage class change was admitted:\n{changed}");
        assert!(
            stderr.contains("spec.redis.storageClassName is immutable"),
            "kubectl said: {stderr}"
        );
    }
}
