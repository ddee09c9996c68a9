//! deploy/'s operator identity in a sandbox: its ServiceAccount, RBAC and write-confining
//! admission policy, moved from `neurallog-system` to a namespace of the test's own and
//! renamed after it, so that tests using it run beside e2e_deploy (which installs the real
//! names). Included by the tests that use it
//! (`#[path = "common/sandbox.rs"] mod sandbox;`, beside `mod common;`).
#![allow(dead_code)]

use crate::common::{kubectl, kubectl_stdin, repo_root, service_account_token, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

pub const DEPLOY_NAMESPACE: &str = "neurallog-system";
pub const SERVICE_ACCOUNT: &str = "neurallog-operator";
/// The write-confining policy of deploy/admission/.
pub const WRITE_POLICY: &str = "neurallog-operator-writes";
const SANDBOXED_KINDS: [&str; 7] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];
/// A new policy takes effect once the API server has loaded it, a moment after it is stored.
const POLICY_IN_FORCE: Duration = Duration::from_secs(30);

/// The identity objects of `kubectl kustomize deploy/`: RBAC and the write policy (not the
/// deletion protection, which is the CRD's and shared by every test).
fn deploy_identity() -> Vec<Value> {
    let deploy_dir = repo_root().join("deploy");
    let rendered = kubectl(&["kustomize", deploy_dir.to_str().expect("a UTF-8 path")]);
    serde_yaml::Deserializer::from_str(&rendered)
        .map(|doc| Value::deserialize(doc).expect("YAML documents"))
        .filter(|doc| SANDBOXED_KINDS.contains(&doc["kind"].as_str().unwrap_or_default()))
        .filter(|doc| doc["metadata"]["name"] != "neurallog-tenant-deletion-protection")
        .collect()
}

/// Moves `neurallog-system` to `sandbox` and prefixes the names of cluster-wide and role
/// objects with it. The policy names the ServiceAccount and its namespace in CEL strings.
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
    if let Some(name) = object.pointer("/spec/policyName").cloned() {
        object["spec"]["policyName"] = prefixed(&name);
    }
    if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
        for subject in subjects {
            if subject["namespace"] == DEPLOY_NAMESPACE {
                subject["namespace"] = json!(sandbox);
            }
        }
    }
    if object["kind"] == "ValidatingAdmissionPolicy" {
        let spec = object["spec"].to_string();
        let quoted = |ns: &str| format!("'{ns}'");
        let account = |ns: &str| format!("system:serviceaccount:{ns}:{SERVICE_ACCOUNT}");
        assert!(
            spec.contains(&account(DEPLOY_NAMESPACE)) && spec.contains(&quoted(DEPLOY_NAMESPACE)),
            "the policy names the operator's ServiceAccount and namespace: {spec}"
        );
        let moved = spec
            .replace(&account(DEPLOY_NAMESPACE), &account(sandbox))
            .replace(&quoted(DEPLOY_NAMESPACE), &quoted(sandbox));
        object["spec"] = serde_json::from_str(&moved).expect("the policy stays JSON");
    }
    object
}

/// The sandbox: its namespace, ServiceAccount, RBAC and write policy. Removed on drop, even
/// when the test fails.
pub struct Sandbox {
    pub namespace: String,
    objects: Vec<Value>,
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// Installs the sandbox and waits until the API server enforces its write policy.
    pub async fn create(client: &Client, namespace: &str) -> Sandbox {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("a namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("the sandbox namespace is created");
        let objects: Vec<Value> = deploy_identity()
            .into_iter()
            .map(|o| relocate(o, namespace))
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let (ok, _, stderr) =
            kubectl_stdin(&["apply", "--server-side", "-f", "-"], &list.to_string());
        let sandbox = Sandbox {
            namespace: namespace.to_string(),
            objects,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        assert!(ok, "the RBAC and write policy of deploy/ apply: {stderr}");
        sandbox.wait_until_the_policy_is_in_force(client).await;
        sandbox
    }

    /// The write policy's name in the sandbox.
    pub fn write_policy(&self) -> String {
        format!("{}-{WRITE_POLICY}", self.namespace)
    }

    /// A kubeconfig that authenticates with a fresh token of the sandbox's ServiceAccount.
    pub async fn operator_kubeconfig(&self, client: &Client) -> PathBuf {
        let token = service_account_token(client, &self.namespace, SERVICE_ACCOUNT).await;
        let path = self.dir.path().join("operator.kubeconfig");
        crate::common::token_kubeconfig(&token, &path)
    }

    /// A client that authenticates as the sandbox's ServiceAccount.
    pub async fn operator_client(&self, client: &Client) -> Client {
        let path = self.operator_kubeconfig(client).await;
        let config = kube::config::Kubeconfig::read_from(path).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .expect("kubeconfig is usable");
        Client::try_from(config).expect("client")
    }

    /// RBAC lets the ServiceAccount create ConfigMaps in `default`; the policy does not. Until
    /// the API server enforces the policy, a dry run of that create goes through.
    async fn wait_until_the_policy_is_in_force(&self, client: &Client) {
        let operator = self.operator_client(client).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(operator, "default");
        let probe: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("{}-probe", self.namespace)}}),
        )
        .expect("a ConfigMap");
        let policy = self.write_policy();
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        wait_for(
            &format!("the API server to enforce {policy}"),
            POLICY_IN_FORCE,
            || {
                let (api, probe, dry_run, policy) = (
                    config_maps.clone(),
                    probe.clone(),
                    dry_run.clone(),
                    policy.clone(),
                );
                async move {
                    match api.create(&dry_run, &probe).await {
                        Err(kube::Error::Api(e))
                            if e.code == 403 && e.message.contains(&policy) =>
                        {
                            Some(())
                        }
                        _ => None,
                    }
                }
            },
        )
        .await;
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
