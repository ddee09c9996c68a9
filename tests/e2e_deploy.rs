//! The install: `kubectl apply --server-side -k deploy/` on the test cluster gives an
//! available operator Deployment (kwok reports its pod Ready; nothing runs it) with its
//! journal volume bound, under the restricted Pod Security Standard.
//!
//! This is the one test that creates the fixed names of deploy/ (namespace
//! `neurallog-system`, ClusterRole `neurallog-operator`, ...); the others use copies under
//! unique names, so they can run at the same time. The CRD is shared with every e2e test:
//! it is applied (unchanged) but never deleted.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::{Api, Client};
use std::time::Duration;

const NAMESPACE: &str = "neurallog-system";
const DEPLOYMENT: &str = "neurallog-operator-controller-manager";
const JOURNAL_CLAIM: &str = "neurallog-operator-journal";
const INSTALL: Duration = Duration::from_secs(120);

/// The field manager of the harness's `install_crd`: applying the committed CRD as the
/// same manager co-owns nothing with anyone else, so it cannot conflict.
const FIELD_MANAGER: &str = "neurallog-e2e";

/// Deletes what deploy/ created, except the shared CRD; runs even when the test fails.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        let deletions: [&[&str]; 6] = [
            &[
                "delete",
                "clusterrolebinding,clusterrole",
                "neurallog-operator",
            ],
            // Who may read the secure endpoints (cluster-scoped).
            &[
                "delete",
                "clusterrole",
                "neurallog-metrics-reader",
                "neurallog-journal-auditor",
            ],
            // The roles for people (cluster-scoped; the journal reader goes with the namespace).
            &[
                "delete",
                "clusterrole",
                "neurallog-tenant-viewer",
                "neurallog-tenant-editor",
                "neurallog-tenant-admin",
            ],
            &[
                "delete",
                "rolebinding,role",
                "neurallog-operator-events",
                "-n",
                "default",
            ],
            // The write policy names this install's ServiceAccount; the deletion protection
            // is the CRD's, shared like it.
            &[
                "delete",
                "validatingadmissionpolicybinding,validatingadmissionpolicy",
                "neurallog-operator-writes",
            ],
            &["delete", "namespace", NAMESPACE, "--timeout=120s"],
        ];
        for deletion in deletions {
            let args = [deletion, &["--ignore-not-found"]].concat();
            let (ok, _, stderr) = kubectl_stdin(&args, "");
            if !ok {
                eprintln!("cleanup: kubectl {args:?} failed: {stderr}");
            }
        }
    }
}

/// The CRD in deploy/ must be what the code generates: applying a stale one would change
/// the schema under the other tests.
fn assert_committed_crd_is_current() {
    let committed =
        std::fs::read_to_string(repo_root().join("deploy/crd/tenants.neurallog.io.yaml"))
            .expect("deploy/crd/tenants.neurallog.io.yaml");
    let generated = neurallog_operator::crd::crd_yaml().expect("the CRD renders");
    assert!(
        committed == generated,
        "deploy/crd/tenants.neurallog.io.yaml is stale: run `make crd`"
    );
}

/// A killed earlier run may have left the namespace terminating; applying into it fails.
async fn wait_while_namespace_terminates(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for("the previous operator namespace to go", INSTALL, || {
        let api = namespaces.clone();
        async move {
            match api.get_opt(NAMESPACE).await.ok()? {
                Some(ns) if ns.metadata.deletion_timestamp.is_some() => None,
                _ => Some(()),
            }
        }
    })
    .await;
}

async fn wait_for_available_deployment(client: &Client) -> Deployment {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for("the operator Deployment to be available", INSTALL, || {
        let api = deployments.clone();
        async move {
            let d = api.get_opt(DEPLOYMENT).await.ok()??;
            let status = d.status.as_ref()?;
            let available = status
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            (available && status.ready_replicas == Some(1)).then_some(d)
        }
    })
    .await
}

async fn wait_for_bound_journal(client: &Client) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for("the journal claim to be bound", INSTALL, || {
        let api = claims.clone();
        async move {
            let claim = api.get_opt(JOURNAL_CLAIM).await.ok()??;
            (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn the_kustomize_install_applies_cleanly_and_becomes_available() {
    assert_committed_crd_is_current();
    let client = client().await;
    wait_while_namespace_terminates(&client).await;
    let _uninstall = Uninstall;

    let deploy_dir = repo_root().join("deploy");
    let (ok, stdout, stderr) = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            &format!("--field-manager={FIELD_MANAGER}"),
            "-k",
            deploy_dir.to_str().expect("a UTF-8 path"),
        ],
        "",
    );
    assert!(ok, "kubectl apply -k deploy/ failed:\n{stdout}\n{stderr}");
    assert!(
        !stderr.contains("PodSecurity"),
        "the operator's pod must meet the restricted Pod Security Standard:\n{stderr}"
    );

    let deployment = wait_for_available_deployment(&client).await;
    wait_for_bound_journal(&client).await;

    let spec = deployment.spec.expect("spec");
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("Recreate")
    );
    let pod = spec.template.spec.expect("pod spec");
    let manager = &pod.containers[0];
    assert_eq!(manager.name, "manager");
    assert!(
        manager
            .args
            .as_ref()
            .expect("args")
            .contains(&"--leader-election".to_string())
    );
    // The ReplicaSet controller created the pod: admission (restricted) accepted it.
    let listed = kubectl(&[
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/name=neurallog-operator",
        "-o",
        "name",
    ]);
    assert_eq!(listed.lines().count(), 1, "one operator pod: {listed}");

    let operator = format!("--as=system:serviceaccount:{NAMESPACE}:neurallog-operator");
    let can_i = |verb: &str, resource: &str| {
        let (_, answer, _) = kubectl_stdin(&["auth", "can-i", verb, resource, "-A", &operator], "");
        answer.trim() == "yes"
    };
    assert!(
        can_i("patch", "tenants.neurallog.io"),
        "the binding is in place"
    );
    assert!(
        !can_i("get", "secrets"),
        "the operator must not read secrets"
    );
    assert!(
        !can_i("list", "secrets"),
        "the operator must not list secrets"
    );

    // The write policy is in force for the install's ServiceAccount: RBAC would let it
    // create a Deployment in kube-system (a dry run), the API server refuses.
    let attempt = [
        "create",
        "deployment",
        "neurallog-admission-probe",
        "--image=registry.invalid/none",
        "-n",
        "kube-system",
        "--dry-run=server",
        &operator,
    ];
    let attempt = &attempt;
    let refusal = wait_for(
        "the API server to enforce neurallog-operator-writes",
        INSTALL,
        move || async move {
            let (ok, _, stderr) = kubectl_stdin(attempt, "");
            (!ok && stderr.contains("ValidatingAdmissionPolicy 'neurallog-operator-writes'"))
                .then_some(stderr)
        },
    )
    .await;
    assert!(
        refusal.contains("kube-system is not one of them"),
        "{refusal}"
    );
}
