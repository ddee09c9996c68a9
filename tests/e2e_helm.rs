//! The Helm chart: lints, renders what deploy/ installs (same pod, same RBAC rules, same
//! CRD), and its output, with every optional part switched on, is accepted by the API
//! server (`kubectl apply --server-side --dry-run=server`: validated and admitted, never
//! stored). Helm is built from its Go module by tests/cluster/build.sh.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;

const CHART: &str = "charts/neurallog-operator";
const RELEASE: &str = "neurallog-operator";
const NAMESPACE: &str = "neurallog-system";

/// `$NEURALLOG_HELM`, else helm in the control plane's cache bin directory (as
/// tests/cluster/lib.sh computes it from versions.env).
fn helm_path() -> PathBuf {
    if let Some(path) = std::env::var_os("NEURALLOG_HELM") {
        return PathBuf::from(path);
    }
    let versions = std::fs::read_to_string(repo_root().join("tests/cluster/versions.env"))
        .expect("tests/cluster/versions.env");
    let version = |key: &str| {
        versions
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in versions.env"))
            .trim()
            .to_string()
    };
    let root = std::env::var_os("NEURALLOG_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("neurallog-operator"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/neurallog-operator"))
        })
        .expect("a cache directory");
    root.join(format!(
        "kube-{}-etcd-{}-kwok-{}/bin/helm",
        version("KUBE_VERSION"),
        version("ETCD_VERSION"),
        version("KWOK_VERSION")
    ))
}

fn helm(args: &[&str]) -> String {
    // Helm comes with the cluster's tools (tests/cluster/build.sh).
    skip_without_cluster();
    let helm = helm_path();
    assert!(
        helm.exists(),
        "helm is missing at {}: run `bash tests/cluster/build.sh helm`",
        helm.display()
    );
    let output = Command::new(&helm)
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML documents"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn kustomized() -> Vec<Value> {
    let deploy = repo_root().join("deploy");
    documents(&kubectl(&[
        "kustomize",
        deploy.to_str().expect("a UTF-8 path"),
    ]))
}

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
    let deploy = kustomized();
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
    ] {
        assert!(find(&deploy, kind, name)["rules"].is_array());
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
    let crd = |path: &str| std::fs::read_to_string(repo_root().join(path)).expect(path);
    assert!(
        crd("charts/neurallog-operator/crds/tenants.neurallog.io.yaml")
            == crd("deploy/crd/tenants.neurallog.io.yaml"),
        "the chart's CRD is stale: copy deploy/crd/tenants.neurallog.io.yaml to charts/neurallog-operator/crds/"
    );
}

/// The namespace of the dry run, enforcing the restricted Pod Security Standard like
/// deploy/'s; deleted at the end (it holds nothing: a dry run stores nothing).
struct DryRunNamespace(String);

impl DryRunNamespace {
    async fn create(client: &Client, name: &str) -> DryRunNamespace {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        }}))
        .expect("a namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("the namespace is created");
        DryRunNamespace(name.to_string())
    }
}

impl Drop for DryRunNamespace {
    fn drop(&mut self) {
        let _ = kubectl_stdin(
            &[
                "delete",
                "namespace",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            "",
        );
    }
}

#[tokio::test]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    let client = client().await;
    install_crd(&client).await;
    let release = unique("helm");
    let namespace = DryRunNamespace::create(&client, &release).await;
    let rendered = helm(&[
        "template",
        &release,
        CHART,
        "--namespace",
        &namespace.0,
        "--include-crds",
        "--set",
        "auth.tokenSecret.name=neurallog-auth-token",
        "--set",
        "journal.storageClassName=standard",
        "--set",
        "tenantSelector=neurallog.io/shard=a",
        "--set",
        "replicas=1",
    ]);
    let docs = documents(&rendered);
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

    // The CRD as the harness's manager: the same content, so it co-owns and cannot conflict.
    let (ok, stdout, stderr) = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=neurallog-e2e",
            "-f",
            "-",
        ],
        &rendered,
    );
    assert!(ok, "the rendered chart is rejected:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("PodSecurity"),
        "the pod must meet the restricted Pod Security Standard:\n{stderr}"
    );
    assert_eq!(
        stdout
            .matches("serverside-applied (server dry run)")
            .count(),
        docs.len(),
        "every rendered object is accepted:\n{stdout}"
    );
}
