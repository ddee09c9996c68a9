//! The API server, not only RBAC, confines what the operator may do:
//!
//! - deploy/admission/operator_write_policy.yaml: with a token of the operator's
//!   ServiceAccount (deploy/'s RBAC and policy in a sandbox, tests/common/sandbox.rs), writes
//!   that RBAC grants are refused outside the namespaces the operator manages (a Deployment
//!   in `kube-system`, a ConfigMap in `default`, an unlabelled namespace deleted or created,
//!   a `tenant-*` namespace without the managed-by label, the label removed), while writes
//!   in a labelled `tenant-*` namespace, Events in `default` and its Lease are admitted; and
//!   the operator running under that identity takes a tenant through its whole lifecycle.
//!   The one cluster-scoped write besides its namespaces and Tenants: a PersistentVolume
//!   bound to a `tenant-*` claim switched to `Retain` (spec.redis.retainStorage); any other
//!   change of a volume, or of a volume bound elsewhere, is refused.
//! - deploy/crd/tenant_deletion_protection.yaml: a Tenant with `spec.deletionProtection`
//!   cannot be deleted, the refusal says how to lift it, and once lifted the delete goes
//!   through.
//!
//! Writes that would do harm if admitted are server-side dry runs: they go through
//! admission all the same.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sandbox.rs"]
mod sandbox;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, PersistentVolume};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use neurallog_operator::crd::Tenant;
use sandbox::Sandbox;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
const DELETION_PROTECTION: &str = "deploy/crd/tenant_deletion_protection.yaml";
const MANAGED_BY: &str = "neurallog.io/managed-by";

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

fn deployment(name: &str) -> Deployment {
    object(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/none"}]},
            },
        },
    }))
}

fn config_map(name: &str) -> ConfigMap {
    object(json!({"metadata": {"name": name}, "data": {"k": "v"}}))
}

fn namespace(name: &str, managed: bool) -> Namespace {
    let labels = if managed {
        json!({MANAGED_BY: "tenant-operator"})
    } else {
        json!({})
    };
    object(json!({"metadata": {"name": name, "labels": labels}}))
}

/// The message of a refusal by `policy`; any other outcome fails the test.
fn refused_by<T: Debug>(policy: &str, what: &str, result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e))
            if e.code == 403
                && e.message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'")) =>
        {
            e.message
        }
        other => panic!("{what}: expected a refusal by {policy}, got {other:?}"),
    }
}

fn admitted<T: Debug>(what: &str, result: Result<T, kube::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{what} is admitted: {e}"))
}

/// Namespaces the admin made for the test; deleted at the end, even when it fails.
struct Namespaces(Vec<String>);

impl Namespaces {
    async fn create(&mut self, admin: &Client, ns: Namespace) {
        let name = ns.metadata.name.clone().expect("a name");
        self.0.push(name);
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("the admin creates the namespace");
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let (ok, _, stderr) = delete_namespace(name);
            if !ok {
                eprintln!("cleanup: namespace {name}: {stderr}");
            }
        }
    }
}

#[tokio::test]
async fn the_operator_identity_writes_only_what_it_manages() {
    let admin = client().await;
    let run = unique("admission");
    let sandbox = Sandbox::create(&admin, &run).await;
    let policy = sandbox.write_policy();
    let operator = sandbox.operator_client(&admin).await;
    let mut namespaces = Namespaces(vec![]);
    let ours = format!("tenant-{run}");
    let foreign_tenant = format!("tenant-{run}-foreign");
    let plain = format!("{run}-plain");
    namespaces.create(&admin, namespace(&plain, false)).await;
    namespaces
        .create(&admin, namespace(&foreign_tenant, false))
        .await;

    // Outside its namespaces: RBAC grants all of these (cluster-wide verbs), the policy not.
    let message = refused_by(
        &policy,
        "a Deployment in kube-system",
        Api::<Deployment>::namespaced(operator.clone(), "kube-system")
            .create(&dry_run(), &deployment(&run))
            .await,
    );
    assert!(
        message.contains(&format!(
            "CREATE deployments {run} in namespace kube-system is refused, kube-system is not one of them"
        )),
        "the refusal says what and why: {message}"
    );
    refused_by(
        &policy,
        "a ConfigMap in default",
        Api::<ConfigMap>::namespaced(operator.clone(), "default")
            .create(&dry_run(), &config_map(&run))
            .await,
    );
    refused_by(
        &policy,
        "a ConfigMap in an unlabelled tenant-* namespace",
        Api::<ConfigMap>::namespaced(operator.clone(), &foreign_tenant)
            .create(&PostParams::default(), &config_map(&run))
            .await,
    );

    // Namespaces it does not own: neither deleted nor changed nor made.
    let operator_namespaces: Api<Namespace> = Api::all(operator.clone());
    let message = refused_by(
        &policy,
        "deleting an unlabelled namespace",
        operator_namespaces
            .delete(&plain, &DeleteParams::default())
            .await,
    );
    assert!(
        message.contains(&format!("DELETE namespaces {plain} is refused")),
        "{message}"
    );
    let message = refused_by(
        &policy,
        "deleting an unlabelled tenant-* namespace",
        operator_namespaces
            .delete(&foreign_tenant, &DeleteParams::default())
            .await,
    );
    assert!(
        message.contains(&format!("{foreign_tenant} does not carry the label")),
        "{message}"
    );
    let adopt = json!({"metadata": {"labels": {MANAGED_BY: "tenant-operator"}}});
    refused_by(
        &policy,
        "labelling a foreign tenant-* namespace as managed",
        operator_namespaces
            .patch(
                &foreign_tenant,
                &PatchParams::default(),
                &Patch::Merge(&adopt),
            )
            .await,
    );
    refused_by(
        &policy,
        "creating a namespace not named tenant-*",
        operator_namespaces
            .create(&dry_run(), &namespace(&format!("{run}-other"), true))
            .await,
    );
    let message = refused_by(
        &policy,
        "creating a tenant-* namespace without the label",
        operator_namespaces
            .create(&dry_run(), &namespace(&format!("{ours}-bare"), false))
            .await,
    );
    assert!(
        message.contains("only with the label neurallog.io/managed-by=tenant-operator"),
        "{message}"
    );
    let admin_namespaces: Api<Namespace> = Api::all(admin.clone());
    for name in [&plain, &foreign_tenant] {
        let ns = admin_namespaces
            .get(name)
            .await
            .expect("the namespace is still there");
        assert!(
            ns.metadata.deletion_timestamp.is_none(),
            "{name} is not being deleted"
        );
    }

    // Its own: a labelled tenant-* namespace, what it writes there, its Events and Lease.
    namespaces.0.push(ours.clone());
    admitted(
        "creating a labelled tenant-* namespace",
        operator_namespaces
            .create(&PostParams::default(), &namespace(&ours, true))
            .await,
    );
    admitted(
        "a Deployment in its namespace",
        Api::<Deployment>::namespaced(operator.clone(), &ours)
            .create(&PostParams::default(), &deployment(&run))
            .await,
    );
    admitted(
        "a ConfigMap in its namespace",
        Api::<ConfigMap>::namespaced(operator.clone(), &ours)
            .create(&PostParams::default(), &config_map(&run))
            .await,
    );
    let policies: Api<NetworkPolicy> = Api::namespaced(operator.clone(), &ours);
    admitted(
        "a NetworkPolicy in its namespace",
        policies
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": run}, "spec": {"podSelector": {}}})),
            )
            .await,
    );
    admitted(
        "deleting a NetworkPolicy in its namespace",
        policies.delete(&run, &DeleteParams::default()).await,
    );
    admitted(
        "an Event in default",
        Api::<Event>::namespaced(operator.clone(), "default")
            .create(
                &dry_run(),
                &object(json!({
                    "metadata": {"name": run},
                    "involvedObject": {"kind": "Tenant", "name": run},
                    "reason": "Test",
                    "message": "admitted",
                })),
            )
            .await,
    );
    admitted(
        "a Lease in its own namespace",
        Api::<Lease>::namespaced(operator.clone(), &sandbox.namespace)
            .create(&dry_run(), &object(json!({"metadata": {"name": run}})))
            .await,
    );
    // Its secure endpoints ask the API server who a caller is and what it may do: reviews
    // store nothing and do not pass admission, but RBAC must allow them.
    let review = |kind: &str, group: &str, spec: Value| json!({"apiVersion": format!("{group}/v1"), "kind": kind, "spec": spec});
    admitted(
        "a TokenReview",
        Api::<k8s_openapi::api::authentication::v1::TokenReview>::all(operator.clone())
            .create(
                &PostParams::default(),
                &object(review(
                    "TokenReview",
                    "authentication.k8s.io",
                    json!({"token": "not-a-token"}),
                )),
            )
            .await,
    );
    admitted(
        "a SubjectAccessReview",
        Api::<k8s_openapi::api::authorization::v1::SubjectAccessReview>::all(operator.clone())
            .create(
                &PostParams::default(),
                &object(review(
                    "SubjectAccessReview",
                    "authorization.k8s.io",
                    json!({"user": "someone", "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}),
                )),
            )
            .await,
    );
    let strip = json!({"metadata": {"labels": {MANAGED_BY: null}}});
    refused_by(
        &policy,
        "removing the managed-by label of its namespace",
        operator_namespaces
            .patch(&ours, &PatchParams::default(), &Patch::Merge(&strip))
            .await,
    );
    admitted(
        "deleting its namespace",
        operator_namespaces
            .delete(&ours, &DeleteParams::default())
            .await,
    );
}

fn volume(name: &str, claim_namespace: &str) -> PersistentVolume {
    object(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "admission-test-none",
            "hostPath": {"path": format!("/tmp/{name}")},
            "claimRef": {"namespace": claim_namespace, "name": "redis-data-x-redis-0"},
        },
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_identity_may_only_retain_the_volumes_of_tenant_claims() {
    let admin = client().await;
    let run = unique("volumes");
    let sandbox = Sandbox::create(&admin, &run).await;
    let policy = sandbox.write_policy();
    let operator = sandbox.operator_client(&admin).await;
    let (tenant_volume, foreign_volume) = (format!("{run}-tenant"), format!("{run}-foreign"));
    let _volumes = VolumeCleanup(vec![tenant_volume.clone(), foreign_volume.clone()]);
    let admin_volumes: Api<PersistentVolume> = Api::all(admin.clone());
    for (name, claim_namespace) in [
        (&tenant_volume, format!("tenant-{run}")),
        (&foreign_volume, "default".to_string()),
    ] {
        admin_volumes
            .create(&PostParams::default(), &volume(name, &claim_namespace))
            .await
            .expect("the admin creates a volume");
    }
    let volumes: Api<PersistentVolume> = Api::all(operator.clone());
    let dry_patch = PatchParams::default().dry_run();
    let retain = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}, "metadata": {"labels": {"neurallog.io/tenant": run}}});
    admitted(
        "retaining the volume of a tenant-* claim",
        volumes
            .patch(&tenant_volume, &dry_patch, &Patch::Merge(&retain))
            .await,
    );
    let message = refused_by(
        &policy,
        "retaining a volume bound to a claim in default",
        volumes
            .patch(&foreign_volume, &dry_patch, &Patch::Merge(&retain))
            .await,
    );
    assert!(
        message.contains(&format!(
            "UPDATE persistentvolumes {foreign_volume} is refused"
        )),
        "the refusal says what: {message}"
    );
    refused_by(
        &policy,
        "growing a tenant volume",
        volumes
            .patch(
                &tenant_volume,
                &dry_patch,
                &Patch::Merge(&json!({"spec": {"persistentVolumeReclaimPolicy": "Retain", "capacity": {"storage": "2Gi"}}})),
            )
            .await,
    );
    refused_by(
        &policy,
        "re-binding a tenant volume",
        volumes
            .patch(
                &tenant_volume,
                &dry_patch,
                &Patch::Merge(&json!({"spec": {"persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default"}}})),
            )
            .await,
    );
    // Deleting or creating volumes: not even RBAC grants it.
    let deleted = volumes
        .delete(&tenant_volume, &DeleteParams::default().dry_run())
        .await;
    assert!(
        matches!(&deleted, Err(kube::Error::Api(e)) if e.code == 403),
        "deleting a tenant volume is forbidden: {deleted:?}"
    );
    let created = volumes
        .create(
            &dry_run(),
            &volume(&format!("{run}-new"), &format!("tenant-{run}")),
        )
        .await;
    assert!(
        matches!(&created, Err(kube::Error::Api(e)) if e.code == 403),
        "creating a volume is forbidden: {created:?}"
    );
}

/// Installs the deletion protection policy as deploy/ ships it (shared, like the CRD: never
/// removed) and waits until it refuses the delete of a protected tenant.
async fn install_deletion_protection(admin: &Client, probe: &str) {
    let path = repo_root().join(DELETION_PROTECTION);
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=neurallog-e2e",
        "-f",
        path.to_str().expect("a UTF-8 path"),
    ]);
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    wait_for(
        "the API server to enforce the deletion protection",
        Duration::from_secs(30),
        || {
            let (tenants, delete) = (tenants.clone(), delete.clone());
            async move {
                match tenants.delete(probe, &delete).await {
                    Err(kube::Error::Api(e)) if e.code == 403 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
}

/// Lifts the deletion protection of a tenant at the end, before its cleanup deletes it, so
/// that a failed test leaves nothing behind.
struct Unprotect(String);

impl Drop for Unprotect {
    fn drop(&mut self) {
        let unprotect = r#"{"spec":{"deletionProtection":false}}"#;
        let args = [
            "patch", "tenant", &self.0, "--type", "merge", "-p", unprotect,
        ];
        let (ok, _, stderr) = kubectl_stdin(&args, "");
        if !ok && !stderr.contains("NotFound") {
            eprintln!("cleanup: tenant {}: {stderr}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_tenant_lives_and_dies_under_the_operators_confined_identity() {
    let admin = client().await;
    install_crd(&admin).await;
    let run = unique("protected");
    let sandbox = Sandbox::create(&admin, &run).await;
    let _leftovers = TenantCleanup(vec![run.clone()]);
    let _unprotect = Unprotect(run.clone());
    let auth = auth_stub().await;
    let options = OperatorOptions {
        kubeconfig: Some(sandbox.operator_kubeconfig(&admin).await),
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

    // Create, under the write policy: namespace, guards, policies, Redis, server, Events.
    let mut tenant = tenant_from_yaml(BASIC, &run, &run);
    tenant.spec.deletion_protection = true;
    tenant.spec.redis.retain_storage = true;
    apply_tenant(&admin, &tenant).await;
    wait_for_phase(&admin, &run, "Running", PROVISION).await;
    install_deletion_protection(&admin, &run).await;

    // Update.
    tenant.spec.server.replicas = 2;
    apply_tenant(&admin, &tenant).await;
    wait_for_phase(&admin, &run, "Running", PROVISION).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &format!("tenant-{run}"));
    let server = deployments
        .get(&format!("{run}-server"))
        .await
        .expect("the server");
    assert_eq!(server.spec.and_then(|s| s.replicas), Some(2));

    // Delete: refused while protected, with the way out.
    let tenants: Api<Tenant> = Api::all(admin.clone());
    let message = refused_by(
        "neurallog-tenant-deletion-protection",
        "deleting a protected tenant",
        tenants.delete(&run, &DeleteParams::default()).await,
    );
    let lift = format!(
        r#"kubectl patch tenant {run} --type merge -p '{{"spec":{{"deletionProtection":false}}}}'"#
    );
    assert!(
        message.contains(&format!("tenant {run} has spec.deletionProtection: true"))
            && message.contains(&lift),
        "the refusal says how to lift the protection ({lift}): {message}"
    );
    let still = tenants.get(&run).await.expect("the tenant is still there");
    assert!(still.metadata.deletion_timestamp.is_none());
    wait_for_phase(&admin, &run, "Running", PROVISION).await;

    // Lifted as the message says, the delete goes through: the namespace, then the Tenant.
    kubectl(&[
        "patch",
        "tenant",
        &run,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"deletionProtection":false}}"#,
    ]);
    admitted(
        "deleting the tenant once unprotected",
        tenants.delete(&run, &DeleteParams::default()).await,
    );
    wait_until_gone(&tenants, &run, PROVISION).await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    wait_until_gone(&namespaces, &format!("tenant-{run}"), PROVISION).await;
    assert!(
        !auth.tenants().contains(&run),
        "the tenant is deregistered from Auth"
    );
    // spec.redis.retainStorage, under the same identity: the data volume outlives it.
    let volumes: Api<PersistentVolume> = Api::all(admin.clone());
    let retained = volumes
        .list(&kube::api::ListParams::default().labels(&format!("neurallog.io/tenant={run}")))
        .await
        .expect("volumes")
        .items;
    let _volumes = VolumeCleanup(
        retained
            .iter()
            .map(|v| v.metadata.name.clone().unwrap_or_default())
            .collect(),
    );
    assert_eq!(
        retained.len(),
        1,
        "the Redis data volume is retained: {retained:?}"
    );
    let policy = retained[0]
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.clone());
    assert_eq!(policy.as_deref(), Some("Retain"));
}
