//! Proves the test cluster is real: controllers run, kwok makes pods Ready, claims bind,
//! and deleting a namespace removes what was in it.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, unique, wait_for, wait_until_gone};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use std::time::Duration;

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

#[tokio::test]
async fn workloads_become_ready_claims_bind_and_namespace_deletion_cleans_up() {
    let client = client().await;
    let ns_name = unique("selftest");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({"metadata": {"name": ns_name}})),
        )
        .await
        .expect("namespace created");

    let labels = serde_json::json!({"app": "web"});
    let deployment: Deployment = from_json(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }));
    let db_labels = serde_json::json!({"app": "db"});
    let statefulset: StatefulSet = from_json(serde_json::json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": db_labels},
                 "template": {"metadata": {"labels": db_labels},
                              "spec": {"containers": [{"name": "db", "image": "redis"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    }));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns_name);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns_name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns_name);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment created");
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await
        .expect("statefulset created");

    wait_for(
        "the deployment's 2 replicas to be ready",
        Duration::from_secs(60),
        || {
            let api = deployments.clone();
            async move {
                let d = api.get("web").await.ok()?;
                (d.status?.ready_replicas? == 2).then_some(())
            }
        },
    )
    .await;
    wait_for(
        "the statefulset's replica to be ready",
        Duration::from_secs(60),
        || {
            let api = statefulsets.clone();
            async move {
                let s = api.get("db").await.ok()?;
                (s.status?.ready_replicas? == 1).then_some(())
            }
        },
    )
    .await;
    wait_for("the volume claim to bind", Duration::from_secs(60), || {
        let api = claims.clone();
        async move {
            let c = api.get("data-db-0").await.ok()?;
            (c.status?.phase.as_deref() == Some("Bound")).then_some(())
        }
    })
    .await;

    namespaces
        .delete(&ns_name, &DeleteParams::default())
        .await
        .expect("namespace deleted");
    wait_until_gone(&namespaces, &ns_name, Duration::from_secs(120)).await;
    let leftover = deployments.get_opt("web").await.expect("readable");
    assert!(leftover.is_none(), "the deployment outlived its namespace");
}

/// The operator harness counts a /readyz answer only from the process holding the port
/// (two tests may pick the same free port): its /proc reading must tell holders apart.
#[test]
fn the_harness_tells_which_process_listens_on_a_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    assert!(
        common::listens_on(me, port),
        "this process holds port {port}"
    );
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    assert!(!common::listens_on(other.id(), port), "sleep holds no port");
    assert!(common::process_alive(other.id()));
    drop(listener);
    assert!(!common::listens_on(me, port), "port {port} was closed");
    other.kill().unwrap();
    wait_for_exit_unreaped(other.id());
    assert!(!common::process_alive(other.id()), "a zombie does not run");
    other.wait().unwrap();
}

/// Waits (up to 10 s) until `pid` has exited, without reaping it.
fn wait_for_exit_unreaped(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z"))
    {
        assert!(std::time::Instant::now() < deadline, "pid {pid} still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
}
