//! The test tools built beside the control plane (tests/cluster/build.sh): helm, promtool
//! and the Prometheus Operator's CRDs, found where tests/cluster/lib.sh puts them; and what
//! chart and manifest tests share. Included by the tests that use it
//! (`#[path = "common/tools.rs"] mod tools;`, beside `mod common;`).
#![allow(dead_code)]

use crate::common::{
    client, delete_namespace, install_crd, kubeconfig, kubectl, kubectl_stdin, repo_root,
    skip_without_cluster,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A version pinned in tests/cluster/versions.env.
pub fn cluster_version(key: &str) -> String {
    let versions = std::fs::read_to_string(repo_root().join("tests/cluster/versions.env"))
        .expect("tests/cluster/versions.env");
    versions
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in versions.env"))
        .trim()
        .to_string()
}

/// The control plane's cache directory, as tests/cluster/lib.sh computes it.
pub fn cluster_cache_dir() -> PathBuf {
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
        "kube-{}-etcd-{}-kwok-{}",
        cluster_version("KUBE_VERSION"),
        cluster_version("ETCD_VERSION"),
        cluster_version("KWOK_VERSION")
    ))
}

/// `$<env>`, else `name` in the cache's bin directory; it must exist (`build.sh <part>`
/// builds it).
fn tool(env: &str, name: &str, part: &str) -> PathBuf {
    // The tools come with the cluster's (tests/cluster/build.sh).
    skip_without_cluster();
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| cluster_cache_dir().join("bin").join(name));
    assert!(
        path.exists(),
        "{name} is missing at {}: run `bash tests/cluster/build.sh {part}`",
        path.display()
    );
    path
}

/// Runs `program` in the repository; returns stdout, panics with stderr on failure.
fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .current_dir(repo_root())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs helm where it must fail; returns its stderr.
pub fn helm_refused(args: &[&str]) -> String {
    let program = tool("NEURALLOG_HELM", "helm", "helm");
    let output = Command::new(&program)
        .current_dir(repo_root())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
    assert!(
        !output.status.success(),
        "helm {args:?} was expected to fail and rendered:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs helm (`$NEURALLOG_HELM`, else the cache's).
pub fn helm(args: &[&str]) -> String {
    run(&tool("NEURALLOG_HELM", "helm", "helm"), args)
}

/// Runs promtool (`$NEURALLOG_PROMTOOL`, else the cache's).
pub fn promtool(args: &[&str]) -> String {
    run(&tool("NEURALLOG_PROMTOOL", "promtool", "monitoring"), args)
}

/// The YAML documents of `yaml`, as JSON values (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("YAML documents"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// `kubectl kustomize` of a directory of the repository.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let path = repo_root().join(dir);
    documents(&kubectl(&[
        "kustomize",
        path.to_str().expect("a UTF-8 path"),
    ]))
}

/// Installs the ServiceMonitor and PrometheusRule CRDs of the Prometheus Operator release
/// in versions.env, from its published manifests (`build.sh monitoring` copies them out of
/// the Go module into the cache), and waits until they are established. Never deleted:
/// like the Tenant CRD, they are shared by the tests.
pub fn install_prometheus_operator_crds() {
    let dir = std::env::var_os("NEURALLOG_PROMETHEUS_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cluster_cache_dir()
                .join(format!(
                    "prometheus-operator-{}",
                    cluster_version("PROMETHEUS_OPERATOR_VERSION")
                ))
                .join("crds")
        });
    let _ = kubeconfig();
    for plural in ["servicemonitors", "prometheusrules"] {
        let file = dir.join(format!("monitoring.coreos.com_{plural}.yaml"));
        assert!(
            file.exists(),
            "{} is missing: run `bash tests/cluster/build.sh monitoring`",
            file.display()
        );
        kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=neurallog-e2e",
            "-f",
            file.to_str().expect("a UTF-8 path"),
        ]);
        wait_until_established(&format!("{plural}.monitoring.coreos.com"));
    }
}

/// Waits until CRD `name` serves. Not `kubectl wait --for=condition=Established`: right after
/// a create it fails when the CRD has no conditions yet, rather than waiting for them.
fn wait_until_established(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let established = r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#;
    loop {
        let (ok, stdout, stderr) = kubectl_stdin(&["get", "crd", name, "-o", established], "");
        if ok && stdout.trim() == "True" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CRD {name} is not Established after 60 s: {stdout} {stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The namespace of a server-side dry run, enforcing the restricted Pod Security Standard
/// like deploy/'s; deleted at the end (it holds nothing: a dry run stores nothing).
pub struct DryRunNamespace(pub String);

impl DryRunNamespace {
    pub async fn create(client: &Client, name: &str) -> DryRunNamespace {
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
        let _ = delete_namespace(&self.0);
    }
}

/// A client of the test cluster, with the Tenant CRD and the Prometheus Operator's
/// installed: what a dry run of the chart's or deploy/'s monitoring objects needs.
pub async fn client_with_monitoring_crds() -> Client {
    let client = client().await;
    install_crd(&client).await;
    install_prometheus_operator_crds();
    client
}

/// `kubectl apply --server-side --dry-run=server` of `manifests` as the harness's field
/// manager (validated and admitted, never stored). Asserts that it succeeds and returns
/// how many objects were accepted, and kubectl's stderr (warnings).
pub fn server_dry_run(manifests: &str) -> (usize, String) {
    let (ok, stdout, stderr) = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=neurallog-e2e",
            "-f",
            "-",
        ],
        manifests,
    );
    assert!(ok, "the API server refuses them:\n{stdout}\n{stderr}");
    let accepted = stdout
        .matches("serverside-applied (server dry run)")
        .count();
    (accepted, stderr)
}
