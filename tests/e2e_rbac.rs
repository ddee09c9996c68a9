//! The RBAC of deploy/ is enough, and no more: the operator runs with a token of its
//! ServiceAccount, bound exactly as deploy/ binds it, and takes a tenant through create,
//! update (growing the Redis volume too) and delete (with leader election on). A missing
//! permission fails the test: the caches never sync, or the tenant never reaches Running
//! or never goes away.
//!
//! The RBAC objects are deploy/'s own rules under unique names (a sandbox namespace
//! instead of `neurallog-system`, prefixed role and binding names), so this test runs
//! alongside e2e_deploy, which installs the real names. deploy/'s admission policy that
//! confines the operator's writes is in force for the sandbox's ServiceAccount too
//! (tests/common/sandbox.rs): the lifecycle also proves that it refuses nothing the
//! operator needs.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sandbox.rs"]
mod sandbox;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DeleteParams;
use kube::{Api, Client};
use neurallog_operator::crd::Tenant;
use sandbox::{SERVICE_ACCOUNT, Sandbox};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

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
    let operator_kubeconfig = sandbox.operator_kubeconfig(&client).await;
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

    // Create: namespace, guards, policies, Redis and its backups, server, Events, status,
    // finalizer.
    let mut tenant = tenant_from_yaml(CUSTOMIZED, &run, &run);
    tenant.spec.redis.backup = Some(neurallog_operator::crd::RedisBackup {
        schedule: "0 3 * * *".into(),
        keep: 2,
        storage: None,
    });
    tenant.spec.network_policy.ingress_rules = vec![
        serde_json::from_value(json!(
            {"description": "web", "from": {"app": "web-frontend"}, "ports": [{"protocol": "TCP", "port": 80}]}
        ))
        .expect("rule"),
    ];
    apply_tenant(&client, &tenant).await;
    wait_for_phase(&client, &run, "Running", PROVISION).await;
    wait_for_policy(&client, &run, "custom-ingress-0", true).await;
    let ns = format!("tenant-{run}");
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    assert!(cronjobs.get_opt("redis-backup").await.unwrap().is_some());
    assert!(claims.get_opt("redis-backups").await.unwrap().is_some());

    // Update: apply changes, prune the policy of a removed rule and the backup CronJob, and
    // grow the Redis volume (read its class, patch its claim, replace the StatefulSet
    // orphaning its pod).
    tenant.spec.server.replicas = 3;
    tenant.spec.network_policy.ingress_rules.clear();
    tenant.spec.redis.backup = None;
    tenant.spec.redis.storage = "6Gi".into();
    apply_tenant(&client, &tenant).await;
    wait_for_server_replicas(&client, &run, 3).await;
    wait_for_policy(&client, &run, "custom-ingress-0", false).await;
    wait_until_gone(&cronjobs, "redis-backup", PROVISION).await;
    wait_for_phase(&client, &run, "Running", PROVISION).await;
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &format!("tenant-{run}"));
    let claim = claims
        .get(&format!("redis-data-{run}-redis-0"))
        .await
        .expect("the Redis claim");
    let capacity = claim.status.and_then(|s| s.capacity).expect("a capacity");
    assert_eq!(capacity["storage"].0, "6Gi", "the volume grew");

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
