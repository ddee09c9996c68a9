//! The user guide, end to end on the real control plane: create, describe, update, drift,
//! conflicts, Auth outages and deletion.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use neurallog_auth_stub::Faults;
use neurallog_operator::crd::Tenant;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

async fn env(prefix: &str) -> OperatorEnv {
    OperatorEnv::start(prefix).await
}

fn tenants(client: &Client) -> Api<Tenant> {
    Api::all(client.clone())
}

async fn tenant_events(client: &Client, tenant: &Tenant) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let selector = format!("involvedObject.uid={}", tenant.uid().expect("uid"));
    let mut events = api
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("events")
        .items;
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
}

async fn delete_and_wait(env: &OperatorEnv, name: &str) {
    tenants(&env.client)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants(&env.client), name, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_basic_tenant_runs_and_is_described_like_the_guide_then_deletes_cleanly() {
    let env = env("basic").await;
    let name = env.run.clone();
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    let tenant = wait_for_phase(&env.client, &name, "Running", PROVISION).await;

    let status = tenant.status.clone().expect("status");
    let ns = format!("tenant-{name}");
    assert_eq!(status.namespace.as_deref(), Some(ns.as_str()));
    let redis = status.redis_status.expect("redis status");
    assert_eq!(
        (
            redis.phase.as_str(),
            redis.message.as_str(),
            redis.ready_replicas,
            redis.total_replicas
        ),
        ("Running", "Redis is running", 1, 1)
    );
    let server = status.server_status.expect("server status");
    assert_eq!(
        (server.message.as_str(), server.ready_replicas),
        ("Server is running", 1)
    );
    assert_eq!(status.observed_generation, tenant.metadata.generation);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert!(env.auth.tenants().contains(&name), "registered with Auth");

    let listing = kubectl(&["get", "tenants", &name]);
    let header: Vec<&str> = listing
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "DISPLAY", "NAME", "NAMESPACE", "PHASE", "AGE"]
    );
    let row: Vec<&str> = listing
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        [name.as_str(), "My", "Tenant", ns.as_str(), "Running"]
    );
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("tenant/{name}"),
        "--timeout=10s",
    ]);

    let messages: Vec<String> = tenant_events(&env.client, &tenant)
        .await
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    let guide = [
        format!("Created namespace {ns}"),
        "Created Redis ConfigMap".into(),
        "Created Redis Service".into(),
        "Created Redis StatefulSet".into(),
        "Created Server Service".into(),
        "Created Server Deployment".into(),
        "Tenant is running".into(),
    ];
    let mut rest = messages.iter();
    for expected in &guide {
        assert!(
            rest.any(|m| m == expected),
            "event {expected:?} missing or out of order in {messages:?}"
        );
    }
    let described = kubectl(&["describe", "tenant", &name]);
    for expected in &guide {
        assert!(
            described.contains(expected.as_str()),
            "describe lacks {expected:?}:\n{described}"
        );
    }
    assert!(described.contains("tenant-controller"));

    let deployment: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    let owner = deployment
        .get(&format!("{name}-server"))
        .await
        .expect("deployment")
        .owner_references()[0]
        .clone();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Tenant", name.as_str())
    );

    delete_and_wait(&env, &name).await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    assert!(
        namespaces.get_opt(&ns).await.expect("readable").is_none(),
        "namespace left behind"
    );
    assert!(
        !env.auth.tenants().contains(&name),
        "still registered with Auth"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_update_of_the_guide_takes_effect() {
    let env = env("update").await;
    let name = env.run.clone();
    let ns = format!("tenant-{name}");
    let mut tenant = tenant_from_yaml(CUSTOMIZED, &name, &env.run);
    apply_tenant(&env.client, &tenant).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;

    // Scaling the server, changing resources and env: one update.
    tenant.spec.server.replicas = 3;
    let cpu = tenant
        .spec
        .server
        .resources
        .as_mut()
        .and_then(|r| r.cpu.as_mut())
        .expect("cpu");
    cpu.request = Some("300m".into());
    cpu.limit = Some("600m".into());
    tenant.spec.server.env.push(
        serde_json::from_value(
            serde_json::json!({"name": "FEATURE_FLAG_ENABLE_X", "value": "true"}),
        )
        .expect("env"),
    );
    tenant
        .spec
        .redis
        .config
        .insert("appendonly".into(), "yes".into());
    tenant.spec.network_policy.ingress_rules = vec![serde_json::from_value(serde_json::json!(
        {"description": "web", "from": {"app": "web-frontend"}, "ports": [{"protocol": "TCP", "port": 80}]}
    )).expect("rule")];
    let sts_api: Api<StatefulSet> = Api::namespaced(env.client.clone(), &ns);
    let checksum = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .map(|a| a["neurallog.io/redis-config-checksum"].clone())
    };
    let before = checksum(&sts_api.get(&format!("{name}-redis")).await.expect("sts"));
    apply_tenant(&env.client, &tenant).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    wait_for(
        "the server to scale to 3 with the new env and resources",
        PROVISION,
        || {
            let api = deployments.clone();
            let name = name.clone();
            async move {
                let d = api.get(&format!("{name}-server")).await.ok()?;
                let spec = d.spec?;
                let c = spec.template.spec?.containers.into_iter().next()?;
                let env_ok = c.env?.iter().any(|e| e.name == "FEATURE_FLAG_ENABLE_X");
                let cpu = c.resources?.limits?.get("cpu")?.0.clone();
                (spec.replicas == Some(3) && env_ok && cpu == "600m").then_some(())
            }
        },
    )
    .await;
    let after = checksum(&sts_api.get(&format!("{name}-redis")).await.expect("sts"));
    assert_ne!(before, after, "a Redis config change must roll the pod");
    let cm: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    let conf = cm
        .get(&format!("{name}-redis-config"))
        .await
        .expect("configmap")
        .data
        .expect("data")["redis.conf"]
        .clone();
    assert!(conf.contains("appendonly yes"));
    let policies: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), &ns);
    assert!(
        policies
            .get_opt("custom-ingress-0")
            .await
            .expect("readable")
            .is_some()
    );
    let running = wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    assert_eq!(
        running
            .status
            .and_then(|s| s.server_status)
            .map(|s| s.ready_replicas),
        Some(3)
    );

    // Removing the rule removes its policy.
    tenant.spec.network_policy.ingress_rules.clear();
    apply_tenant(&env.client, &tenant).await;
    wait_for("the removed rule's policy to be deleted", PROVISION, || {
        let api = policies.clone();
        async move {
            api.get_opt("custom-ingress-0")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;

    // Storage cannot shrink: the API server refuses it (growing is tests/e2e_storage_growth.rs).
    let (ok, _, stderr) = kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec:\n  redis:\n    storage: 512Mi\n"
        ),
    );
    assert!(
        !ok && stderr.contains(neurallog_operator::crd::STORAGE_SHRINK_MESSAGE),
        "{stderr}"
    );
    delete_and_wait(&env, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_children_is_restored() {
    let env = env("drift").await;
    let name = env.run.clone();
    let ns = format!("tenant-{name}");
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;

    let services: Api<Service> = Api::namespaced(env.client.clone(), &ns);
    let server_svc = format!("{name}-server");
    let old_uid = services.get(&server_svc).await.expect("service").uid();
    services
        .delete(&server_svc, &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for(
        "the deleted Service to be recreated",
        Duration::from_secs(60),
        || {
            let api = services.clone();
            let svc = server_svc.clone();
            let old = old_uid.clone();
            async move {
                let s = api.get_opt(&svc).await.ok()??;
                (s.uid() != old).then_some(())
            }
        },
    )
    .await;

    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns);
    deployments
        .patch(
            &server_svc,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("scaled by hand");
    wait_for(
        "the hand-made scale to be reverted",
        Duration::from_secs(60),
        || {
            let api = deployments.clone();
            let d = server_svc.clone();
            async move { (api.get(&d).await.ok()?.spec?.replicas == Some(1)).then_some(()) }
        },
    )
    .await;
    delete_and_wait(&env, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_namespace_is_never_adopted_or_deleted() {
    let env = env("foreign").await;
    let name = env.run.clone();
    let ns = format!("tenant-{name}");
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let foreign: Namespace = serde_json::from_value(
        serde_json::json!({"metadata": {"name": ns, "labels": {"owner": "someone-else"}}}),
    )
    .expect("ns");
    namespaces
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign namespace");
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    let failed = wait_for_phase(&env.client, &name, "Failed", PROVISION).await;
    let stalled = failed
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "NamespaceConflict")
    );
    assert!(
        stalled.message.contains("not managed by this tenant"),
        "{}",
        stalled.message
    );
    let untouched = namespaces.get(&ns).await.expect("still there");
    assert_eq!(
        untouched.labels().get("owner").map(String::as_str),
        Some("someone-else")
    );
    assert!(
        !untouched.labels().contains_key("neurallog.io/tenant"),
        "the namespace was adopted"
    );

    delete_and_wait(&env, &name).await;
    let survivor = namespaces
        .get(&ns)
        .await
        .expect("the foreign namespace survives");
    assert!(survivor.metadata.deletion_timestamp.is_none());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_outage_shows_as_reconciling_and_heals_by_itself() {
    let env = env("auth").await;
    let name = env.run.clone();
    env.auth
        .set_faults(Faults {
            down: true,
            ..Faults::default()
        })
        .await
        .expect("down");
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    wait_for_true_condition(
        &env.client,
        &name,
        "Reconciling",
        "AuthUnavailable",
        PROVISION,
    )
    .await;
    // Redis is ready, but the move to ProvisioningServer journals the intent to register
    // the name, and waits until Auth said the name is free.
    let waiting = tenants(&env.client).get(&name).await.expect("tenant");
    assert_eq!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("ProvisioningRedis")
    );
    env.auth.set_faults(Faults::default()).await.expect("up");
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    assert!(env.auth.tenants().contains(&name));
    delete_and_wait(&env, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_api_server_accepts_but_redis_would_not_is_failed_then_fixed() {
    let env = env("invalid").await;
    let name = env.run.clone();
    let mut tenant = tenant_from_yaml(BASIC, &name, &env.run);
    tenant
        .spec
        .redis
        .config
        .insert("maxmemory".into(), "256Mi".into());
    apply_tenant(&env.client, &tenant).await;
    let failed = wait_for_phase(&env.client, &name, "Failed", PROVISION).await;
    let stalled = failed
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert!(
        stalled.message.contains("spec.redis.config.maxmemory"),
        "{}",
        stalled.message
    );
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    assert!(
        namespaces
            .get_opt(&format!("tenant-{name}"))
            .await
            .expect("readable")
            .is_none(),
        "nothing is created for an invalid spec"
    );

    tenant
        .spec
        .redis
        .config
        .insert("maxmemory".into(), "256mb".into());
    apply_tenant(&env.client, &tenant).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    delete_and_wait(&env, &name).await;
}
