//! The Helm chart: lints, renders what deploy/ installs (same pod, same RBAC rules, same
//! CRD), and its output, with every optional part switched on, is accepted by the API
//! server (`kubectl apply --server-side --dry-run=server`: validated and admitted, never
//! stored): monitoring (with the Prometheus Operator's CRDs, installed from its published
//! manifests), the Grafana dashboard, the roles for people, the admission policies (the
//! release's ServiceAccount confined to its tenant namespaces; deletion protection). Helm is built from its Go
//! module by tests/cluster/build.sh.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/tools.rs"]
mod tools;

use common::*;
use serde_json::Value;
use tools::{
    DryRunNamespace, client_with_monitoring_crds, documents, find, helm, helm_refused, kustomize,
    server_dry_run,
};

const CHART: &str = "charts/neurallog-operator";
const RELEASE: &str = "neurallog-operator";
const NAMESPACE: &str = "neurallog-system";
/// Values that switch every optional part on.
const ALL_OPTIONS: &str = "tests/fixtures/chart-all-options.yaml";
const DASHBOARD: &str = "charts/neurallog-operator/dashboards/neurallog-operator.json";

#[test]
fn the_chart_lints_cleanly() {
    helm(&["lint", "--strict", CHART]);
}

#[test]
fn the_chart_renders_the_pod_and_rbac_of_deploy() {
    let chart = documents(&helm(&[
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
    ]));
    let deploy = kustomize("deploy");
    let deployment = "neurallog-operator-controller-manager";
    let pod = |docs: &[Value]| find(docs, "Deployment", deployment)["spec"].clone();
    let (ours, theirs) = (pod(&chart), pod(&deploy));
    let container = |spec: &Value| spec["template"]["spec"]["containers"][0].clone();
    for field in [
        "name",
        "args",
        "securityContext",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "volumeMounts",
    ] {
        assert!(!container(&theirs)[field].is_null(), "deploy/ sets {field}");
        assert_eq!(
            container(&ours)[field],
            container(&theirs)[field],
            "the chart's manager container differs from deploy/ in {field}"
        );
    }
    for field in ["securityContext", "serviceAccountName", "volumes"] {
        assert!(
            !theirs["template"]["spec"][field].is_null(),
            "deploy/ sets {field}"
        );
        assert_eq!(
            ours["template"]["spec"][field], theirs["template"]["spec"][field],
            "the chart's pod differs from deploy/ in {field}"
        );
    }
    assert_eq!(ours["strategy"], theirs["strategy"]);
    assert_eq!(ours["replicas"], theirs["replicas"]);
    for (kind, name) in [
        ("ClusterRole", "neurallog-operator"),
        ("Role", "neurallog-operator-leader-election"),
        ("Role", "neurallog-operator-events"),
        ("ClusterRole", "neurallog-tenant-viewer"),
        ("ClusterRole", "neurallog-tenant-editor"),
        ("ClusterRole", "neurallog-tenant-admin"),
        ("Role", "neurallog-journal-reader"),
        ("ClusterRole", "neurallog-metrics-reader"),
        ("ClusterRole", "neurallog-journal-auditor"),
    ] {
        assert!(find(&deploy, kind, name)["rules"].is_array());
        let aggregation = |docs: &[Value]| {
            let labels = find(docs, kind, name)["metadata"]["labels"].clone();
            labels
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            aggregation(&chart),
            aggregation(&deploy),
            "the chart's {kind} {name} aggregates differently from deploy/"
        );
        assert_eq!(
            find(&chart, kind, name)["rules"],
            find(&deploy, kind, name)["rules"],
            "the chart's {kind} {name} differs from deploy/"
        );
        assert_eq!(
            find(&chart, kind, name)["metadata"]["namespace"],
            find(&deploy, kind, name)["metadata"]["namespace"]
        );
    }
    // The admission policies: the release's names are deploy/'s for this release.
    for (kind, name) in [
        ("ValidatingAdmissionPolicy", "neurallog-operator-writes"),
        (
            "ValidatingAdmissionPolicyBinding",
            "neurallog-operator-writes",
        ),
    ] {
        assert!(find(&deploy, kind, name)["spec"].is_object());
        assert_eq!(
            find(&chart, kind, name)["spec"],
            find(&deploy, kind, name)["spec"],
            "the chart's {kind} {name} differs from deploy/"
        );
    }
    let policy = |docs: &[Value]| find(docs, "NetworkPolicy", "neurallog-operator")["spec"].clone();
    // The same rule; the chart's pod selectors add its release's instance label.
    for field in ["policyTypes", "ingress"] {
        let strip = |mut spec: Value| {
            spec["ingress"][0]["from"][1] = Value::Null;
            spec[field].clone()
        };
        assert_eq!(
            strip(policy(&chart)),
            strip(policy(&deploy)),
            "the chart's NetworkPolicy differs from deploy/ in {field}"
        );
    }
    let ingress = &policy(&deploy)["ingress"];
    assert_eq!(
        ingress[0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["monitoring"]),
        "the operator's port admits the monitoring namespace: {ingress}"
    );
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"port": 8080, "protocol": "TCP"}])
    );
    let crd = |path: &str| std::fs::read_to_string(repo_root().join(path)).expect(path);
    for file in [
        "tenants.neurallog.io.yaml",
        "tenant_deletion_protection.yaml",
    ] {
        assert!(
            crd(&format!("charts/neurallog-operator/crds/{file}"))
                == crd(&format!("deploy/crd/{file}")),
            "the chart's crds/{file} is stale: `make crd` copies deploy/crd/{file}"
        );
    }
}

/// The journal API stays inside the cluster: the chart never publishes it.
#[test]
fn the_chart_refuses_to_expose_the_journal_outside_the_cluster() {
    for exposed in ["LoadBalancer", "NodePort"] {
        let setting = format!("service.type={exposed}");
        let refusal = helm_refused(&["template", "x", CHART, "--set", &setting]);
        assert!(
            refusal.contains(&format!(
                "service.type {exposed} would expose the operator's journal API"
            )),
            "{refusal}"
        );
    }
}

/// A standby cannot yet present a token to the leader's secure journal API.
#[test]
fn the_chart_refuses_journal_follow_with_secure_endpoints() {
    let refusal = helm_refused(&["template", "x", CHART, "--set", "journal.follow=true"]);
    assert!(
        refusal.contains("journal.follow is not supported with the secure endpoints"),
        "{refusal}"
    );
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    let client = client_with_monitoring_crds().await;
    let release = unique("helm");
    let namespace = DryRunNamespace::create(&client, &release).await;
    let rendered = helm(&[
        "template",
        &release,
        CHART,
        "--namespace",
        &namespace.0,
        "--include-crds",
        "--values",
        ALL_OPTIONS,
    ]);
    let docs = documents(&rendered);
    let mut kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "Deployment",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PrometheusRule",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ],
        "every optional part is rendered"
    );
    let dashboard = find(
        &docs,
        "ConfigMap",
        &format!("{release}-neurallog-operator-dashboard"),
    );
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join(DASHBOARD)).expect(DASHBOARD),
    )
    .expect("the dashboard is JSON");
    let shipped: Value = serde_json::from_str(
        dashboard["data"]["neurallog-operator.json"]
            .as_str()
            .expect("the dashboard's key"),
    )
    .expect("the ConfigMap's dashboard is JSON");
    assert_eq!(shipped, committed, "the ConfigMap carries {DASHBOARD}");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let deployment = find(
        &docs,
        "Deployment",
        &format!("{release}-neurallog-operator-controller-manager"),
    );
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "NEURALLOG_AUTH_TOKEN_FILE"
                && e["value"] == "/var/run/secrets/neurallog/auth/token"),
        "the token Secret becomes a file the operator reads: {env}"
    );
    for (name, value) in [
        (
            "NEURALLOG_TLS_CERT_FILE",
            "/var/run/secrets/neurallog/tls/tls.crt",
        ),
        (
            "NEURALLOG_TLS_KEY_FILE",
            "/var/run/secrets/neurallog/tls/tls.key",
        ),
    ] {
        assert!(
            env.as_array()
                .expect("env")
                .iter()
                .any(|e| e["name"] == name && e["value"] == value),
            "the TLS Secret becomes the files the operator serves: {env}"
        );
    }
    let monitor = find(
        &docs,
        "ServiceMonitor",
        &format!("{release}-neurallog-operator"),
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["secret"]["name"],
        "neurallog-operator-tls"
    );
    assert!(
        endpoint["tlsConfig"]["insecureSkipVerify"].is_null(),
        "{endpoint}"
    );
    let policy = find(
        &docs,
        "NetworkPolicy",
        &format!("{release}-neurallog-operator"),
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["monitoring", "observability"])
    );

    // The write policy confines this release's ServiceAccount, in its namespace.
    let policy = find(
        &docs,
        "ValidatingAdmissionPolicy",
        &format!("{release}-neurallog-operator-writes"),
    );
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        format!(
            "request.userInfo.username == 'system:serviceaccount:{}:{release}-neurallog-operator'",
            namespace.0
        )
    );
    let operator_namespace = policy["spec"]["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "operatorNamespace")
        .expect("the operator's namespace")["expression"]
        .clone();
    assert_eq!(operator_namespace, format!("'{}'", namespace.0));
    assert_eq!(
        find(
            &docs,
            "ValidatingAdmissionPolicyBinding",
            &format!("{release}-neurallog-operator-writes"),
        )["spec"]["policyName"],
        policy["metadata"]["name"]
    );

    // The CRD as the harness's manager: the same content, so it co-owns and cannot conflict.
    let (accepted, warnings) = server_dry_run(&rendered);
    assert!(
        !warnings.contains("PodSecurity"),
        "the pod must meet the restricted Pod Security Standard:\n{warnings}"
    );
    assert_eq!(accepted, docs.len(), "every rendered object is accepted");
}
