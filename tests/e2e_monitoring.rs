//! What a platform team's monitoring gets: the kustomize component (deploy/monitoring) is
//! accepted by the API server, with the Prometheus Operator's CRDs installed from their
//! published manifests; it carries the chart's alerts; the alerts pass their
//! `promtool test rules` cases (tests/monitoring/alerts.test.yaml), which cover every alert;
//! and every metric the alerts and the Grafana dashboard use is one a running operator
//! exports, in queries promtool parses. promtool and the CRDs come from Go modules
//! (`tests/cluster/build.sh monitoring`).

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/tools.rs"]
mod tools;

use common::*;
use neurallog_auth_stub::Faults;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tools::{
    DryRunNamespace, client_with_monitoring_crds, documents, find, helm, kustomize, promtool,
    server_dry_run,
};

const CHART: &str = "charts/neurallog-operator";
const DASHBOARD: &str = "charts/neurallog-operator/dashboards/neurallog-operator.json";
const RULE_TESTS: &str = "tests/monitoring/alerts.test.yaml";
const BASIC: &str = include_str!("../examples/basic-tenant.yaml");

/// The chart's PrometheusRule and ServiceMonitor for the release deploy/ corresponds to
/// (`neurallog-operator` in `neurallog-system`, journal.size 1Gi).
fn chart_monitoring() -> Vec<Value> {
    documents(&helm(&[
        "template",
        "neurallog-operator",
        CHART,
        "--namespace",
        "neurallog-system",
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
        "--show-only",
        "templates/servicemonitor.yaml",
    ]))
}

/// The rules of a PrometheusRule, every group's.
fn rules(rule: &Value) -> impl Iterator<Item = &Value> {
    rule["spec"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
}

fn alert_names(rule: &Value) -> BTreeSet<String> {
    rules(rule)
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

fn expressions(rule: &Value) -> Vec<String> {
    rules(rule)
        .map(|r| r["expr"].as_str().expect("an expr").to_string())
        .collect()
}

/// The queries of every panel and variable of the dashboard, with Grafana's own variables
/// replaced by what Grafana would put there.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join(DASHBOARD)).expect(DASHBOARD);
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5, "the dashboard has its panels");
    let mut queries: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| t["expr"].as_str().expect("a target's expr").to_string())
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(metric, label) is Grafana's; the metric is what Prometheus sees.
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .expect("a label_values query");
            queries.push(metric.to_string());
        }
    }
    queries
        .into_iter()
        .map(|q| {
            q.replace("$__rate_interval", "2m")
                .replace("$job", "neurallog-operator")
        })
        .collect()
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bneurallog_[a-z_]+\b").unwrap();
    name.find_iter(expr)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// The sample names of the families in `/metrics` text (OpenMetrics): a counter `c` is
/// sampled as `c_total`, a histogram `h` as `h_bucket`, `h_sum` and `h_count`.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').expect("# TYPE name kind");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

#[test]
fn the_chart_and_the_kustomize_component_carry_the_same_monitoring() {
    let chart = chart_monitoring();
    let component = kustomize("deploy/monitoring");
    let rule = |docs: &[Value]| find(docs, "PrometheusRule", "neurallog-operator")["spec"].clone();
    assert_eq!(
        rule(&component),
        rule(&chart),
        "deploy/monitoring/prometheus_rule.yaml differs from the chart's alerts: regenerate it (see its header)"
    );
    let endpoints =
        |docs: &[Value]| find(docs, "ServiceMonitor", "neurallog-operator")["spec"].clone();
    let (ours, theirs) = (endpoints(&component), endpoints(&chart));
    assert_eq!(ours["endpoints"], theirs["endpoints"]);
    assert_eq!(ours["namespaceSelector"], theirs["namespaceSelector"]);
    // Each selects its own install's Service.
    let service = find(&kustomize("deploy"), "Service", "neurallog-operator").clone();
    for (key, value) in ours["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "the component's ServiceMonitor selects deploy/'s Service"
        );
    }
}

#[test]
fn the_alerts_pass_their_promtool_tests_which_cover_every_alert() {
    let chart = chart_monitoring();
    let rule = find(&chart, "PrometheusRule", "neurallog-operator");
    let alerts = alert_names(rule);
    assert_eq!(alerts.len(), 6, "{alerts:?}");

    let cases_text = std::fs::read_to_string(repo_root().join(RULE_TESTS)).expect(RULE_TESTS);
    let cases: Value = serde_yaml::from_str(&cases_text).expect("the rule tests parse");
    let fired: BTreeSet<String> = cases["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| {
            t["alert_rule_test"]
                .as_array()
                .expect("alert_rule_test")
                .iter()
        })
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|t| t["alertname"].as_str().map(String::from))
        .collect();
    assert_eq!(
        fired, alerts,
        "{RULE_TESTS} must expect every alert to fire somewhere"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let rules = serde_yaml::to_string(&rule["spec"]).expect("rules YAML");
    std::fs::write(dir.path().join("rules.yaml"), rules).expect("rules.yaml");
    std::fs::write(dir.path().join("alerts.test.yaml"), &cases_text).expect("the tests");
    let rules_path = dir.path().join("rules.yaml");
    let checked = promtool(&["check", "rules", rules_path.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tests_path = dir.path().join("alerts.test.yaml");
    let tested = promtool(&["test", "rules", tests_path.to_str().unwrap()]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_dashboard_queries_parse() {
    let rules: Vec<Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(i, expr)| json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let count = rules.len();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dashboard.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).expect("write");
    let checked = promtool(&["check", "rules", path.to_str().unwrap()]);
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_use_only_metrics_the_operator_exports() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("monitoring");
    let auth = auth_stub().await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    // A family shows in /metrics once it has a sample: one tenant through provisioning,
    // with Auth failing for a while (reconcile errors), then healed.
    auth.set_faults(Faults {
        error_500: true,
        ..Faults::default()
    })
    .await
    .expect("faults set");
    let name = format!("{run}-t");
    let _cleanup = TenantCleanup(vec![name.clone()]);
    apply_tenant(&client, &tenant_from_yaml(BASIC, &name, &run)).await;
    let provision = Duration::from_secs(120);
    wait_for_true_condition(&client, &name, "Reconciling", "AuthUnavailable", provision).await;
    auth.set_faults(Faults::default())
        .await
        .expect("faults cleared");
    wait_for_phase(&client, &name, "Running", provision).await;
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains("neurallog_reconcile_errors_total{reason=\"AuthUnavailable\"}"),
        "{metrics}"
    );
    let exported = exported_names(&metrics);
    assert!(
        exported.contains("neurallog_leader") && exported.contains("neurallog_tenant_count"),
        "{exported:?}"
    );

    let chart = chart_monitoring();
    let rule = find(&chart, "PrometheusRule", "neurallog-operator");
    let mut used = BTreeSet::new();
    for expr in expressions(rule).iter().chain(dashboard_queries().iter()) {
        used.extend(metric_names(expr));
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts or dashboard use metrics the operator does not export: {unknown:?}\nexported: {exported:?}"
    );
    // The dashboard shows what the issue asks for.
    for family in [
        "neurallog_tenant_count",
        "neurallog_tenant_reconciliation_duration_seconds_bucket",
        "neurallog_api_write_requests_total",
        "neurallog_journal_append_duration_seconds_bucket",
        "neurallog_reconcile_errors_total",
    ] {
        assert!(
            dashboard_queries()
                .iter()
                .any(|q| metric_names(q).contains(family)),
            "the dashboard has no panel on {family}"
        );
    }
}

#[tokio::test]
async fn the_kustomize_component_is_accepted_by_the_api_server() {
    let client = client_with_monitoring_crds().await;

    // An overlay of deploy/ with the component, as a user writes it (outside deploy/).
    let overlay = repo_root().join(format!("target/{}", unique("kustomize-monitoring")));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources:\n- ../../deploy\ncomponents:\n- ../../deploy/monitoring\n",
    )
    .expect("kustomization.yaml");
    let relative = overlay
        .strip_prefix(repo_root())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let rendered = kustomize(&relative);
    std::fs::remove_dir_all(&overlay).expect("overlay removed");
    let base = kustomize("deploy");
    assert_eq!(
        rendered.len(),
        base.len() + 2,
        "deploy/ and the two objects"
    );

    // The two objects, moved to a namespace of their own: deploy/'s namespace is e2e_deploy's.
    let namespace = DryRunNamespace::create(&client, &unique("monitoring-dry-run")).await;
    let objects: Vec<Value> = ["ServiceMonitor", "PrometheusRule"]
        .iter()
        .map(|kind| {
            let mut object = find(&rendered, kind, "neurallog-operator").clone();
            object["metadata"]["namespace"] = json!(namespace.0);
            object
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let (accepted, _) = server_dry_run(&list.to_string());
    assert_eq!(accepted, 2, "both objects are accepted");

    // And the API server checks what it should: a rule with a bad duration is refused.
    let mut broken = objects[1].clone();
    broken["spec"]["groups"][0]["rules"][0]["for"] = json!("fifteen minutes");
    let (ok, _, stderr) = kubectl_stdin(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        &broken.to_string(),
    );
    assert!(!ok, "a malformed PrometheusRule must be refused");
    assert!(stderr.contains("for"), "{stderr}");
}
