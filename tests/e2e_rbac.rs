//! The RBAC of deploy/ is enough, and no more: the operator runs with a token of its
//! ServiceAccount, bound exactly as deploy/ binds it, and takes a tenant through create,
//! update and delete (with leader election on). A missing permission fails the test: the
//! caches never sync, or the tenant never reaches Running or never goes away.
//!
//! The RBAC objects are deploy/'s own rules under unique names (a sandbox namespace
//! instead of `neurallog-system`, prefixed role and binding names), so this test runs
//! alongside e2e_deploy, which installs the real names.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use neurallog_operator::crd::Tenant;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
const DEPLOY_NAMESPACE: &str = "neurallog-system";
const SERVICE_ACCOUNT: &str = "neurallog-operator";
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The RBAC objects of `kubectl kustomize deploy/`.
fn deploy_rbac() -> Vec<Value> {
    let deploy_dir = repo_root().join("deploy");
    let rendered = kubectl(&["kustomize", deploy_dir.to_str().expect("a UTF-8 path")]);
    serde_yaml::Deserializer::from_str(&rendered)
        .map(|doc| Value::deserialize(doc).expect("YAML documents"))
        .filter(|doc| RBAC_KINDS.contains(&doc["kind"].as_str().unwrap_or_default()))
        .collect()
}

/// Moves `neurallog-system` to `sandbox` and prefixes role and binding names with it.
fn relocate(mut object: Value, sandbox: &str) -> Value {
    let prefixed = |name: &Value| json!(format!("{sandbox}-{}", name.as_str().unwrap_or_default()));
    if object["metadata"]["namespace"] == DEPLOY_NAMESPACE {
        object["metadata"]["namespace"] = json!(sandbox);
    }
    if object["kind"] != "ServiceAccount" {
        object["metadata"]["name"] = prefixed(&object["metadata"]["name"]);
    }
    if let Some(name) = object.pointer("/roleRef/name").cloned() {
        object["roleRef"]["name"] = prefixed(&name);
    }
    if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects {
            if subject["namespace"] == DEPLOY_NAMESPACE {
                subject["namespace"] = json!(sandbox);
            }
        }
    }
    object
}

/// Removes the sandbox's RBAC objects and namespace; runs even when the test fails.
struct Sandbox {
    namespace: String,
    objects: Vec<Value>,
}

impl Sandbox {
    async fn create(client: &Client, namespace: &str) -> Sandbox {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("the sandbox namespace is created");
        let objects: Vec<Value> = deploy_rbac()
            .into_iter()
            .map(|o| relocate(o, namespace))
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let (ok, _, stderr) =
            kubectl_stdin(&["apply", "--server-side", "-f", "-"], &list.to_string());
        assert!(ok, "the RBAC of deploy/ applies: {stderr}");
        Sandbox {
            namespace: namespace.to_string(),
            objects,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.objects});
        let deletions = [
            (
                vec!["delete", "--ignore-not-found", "-f", "-"],
                list.to_string(),
            ),
            (
                vec![
                    "delete",
                    "namespace",
                    &self.namespace,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                String::new(),
            ),
        ];
        for (args, input) in deletions {
            let (ok, _, stderr) = kubectl_stdin(&args, &input);
            if !ok {
                eprintln!("cleanup: kubectl {args:?} failed: {stderr}");
            }
        }
    }
}

/// `kubectl auth can-i` as `who` (`--as=...` with the admin kubeconfig, or the token's).
fn can_i(kubeconfig: &Path, who: &[&str], verb: &str, resource: &str, scope: &[&str]) -> bool {
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "can-i", verb, resource])
        .args(scope)
        .args(who)
        .output()
        .expect("kubectl runs");
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {verb} {resource}: {answer} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    answer == "yes"
}

fn assert_no_secret_access(token_kubeconfig: &Path, namespace: &str) {
    let impersonated = format!("--as=system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}");
    let as_admin = [impersonated.as_str()];
    let admin = kubeconfig();
    // The impersonation works (a granted verb says yes), so its "no" below means something.
    assert!(can_i(
        &admin,
        &as_admin,
        "patch",
        "tenants.neurallog.io",
        &[]
    ));
    for (who, config) in [
        (&as_admin[..], admin.as_path()),
        (&[][..], token_kubeconfig),
    ] {
        for verb in ["get", "list", "watch"] {
            assert!(
                !can_i(config, who, verb, "secrets", &["--all-namespaces"]),
                "the operator must not {verb} secrets"
            );
            assert!(
                !can_i(config, who, verb, "secrets", &["-n", namespace]),
                "the operator must not {verb} secrets in its own namespace"
            );
        }
    }
}

async fn wait_for_server_replicas(client: &Client, tenant: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let name = format!("{tenant}-server");
    wait_for(&format!("{name} to have {replicas} replicas"), PROVISION, || {
        let api = deployments.clone();
        let name = name.clone();
        async move { (api.get(&name).await.ok()?.spec?.replicas == Some(replicas)).then_some(()) }
    })
    .await;
}

async fn wait_for_policy(client: &Client, tenant: &str, policy: &str, present: bool) {
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let what = format!(
        "policy {policy} to be {}",
        if present { "present" } else { "gone" }
    );
    wait_for(&what, PROVISION, || {
        let api = policies.clone();
        async move { (api.get_opt(policy).await.ok()?.is_some() == present).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_tenant_lifecycle_with_exactly_the_rbac_of_deploy() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("rbac");
    let sandbox = Sandbox::create(&client, &run).await;
    let token = service_account_token(&client, &sandbox.namespace, SERVICE_ACCOUNT).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let operator_kubeconfig = token_kubeconfig(&token, &dir.path().join("operator.kubeconfig"));
    assert_no_secret_access(&operator_kubeconfig, &sandbox.namespace);

    let _leftovers = TenantCleanup(vec![run.clone()]);
    let auth = auth_stub().await;
    let options = OperatorOptions {
        kubeconfig: Some(operator_kubeconfig),
        args: [
            "--leader-election",
            "--lease-namespace",
            &sandbox.namespace,
            "--identity",
            &format!("{run}-operator"),
        ]
        .map(String::from)
        .to_vec(),
        name: None,
    };
    let operator = Operator::start_with_options(&run, &auth.url(), &options);
    operator.wait_ready().await;

    // Create: namespace, guards, policies, Redis, server, Events, status, finalizer.
    let mut tenant = tenant_from_yaml(CUSTOMIZED, &run, &run);
    tenant.spec.network_policy.ingress_rules = vec![
        serde_json::from_value(json!(
            {"description": "web", "from": {"app": "web-frontend"}, "ports": [{"protocol": "TCP", "port": 80}]}
        ))
        .expect("rule"),
    ];
    apply_tenant(&client, &tenant).await;
    wait_for_phase(&client, &run, "Running", PROVISION).await;
    wait_for_policy(&client, &run, "custom-ingress-0", true).await;

    // Update: apply changes, and prune the policy of a removed rule.
    tenant.spec.server.replicas = 3;
    tenant.spec.network_policy.ingress_rules.clear();
    apply_tenant(&client, &tenant).await;
    wait_for_server_replicas(&client, &run, 3).await;
    wait_for_policy(&client, &run, "custom-ingress-0", false).await;
    wait_for_phase(&client, &run, "Running", PROVISION).await;

    // Delete: the namespace goes, then the finalizer.
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&run, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &run, PROVISION).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_until_gone(&namespaces, &format!("tenant-{run}"), PROVISION).await;
    assert!(
        !auth.tenants().contains(&run),
        "the tenant is deregistered from Auth"
    );
}
