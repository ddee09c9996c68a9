//! Pausing a tenant on the real control plane: while `neurallog.io/paused: "true"` is set,
//! drift and spec changes stay as they are (no write to the tenant's objects, no Auth
//! call), the pause is journaled and shown; removing the annotation journals the resume
//! and converges.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use neurallog_operator::crd::Tenant;
use std::process::Command;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
const RESUME: &str = "neurallog.io/paused-";

/// `journal show` of the tenant, through the operator's HTTP API.
fn journal_show(server: &str, name: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_neurallog-operator"))
        .args(["journal", "show", name, "--server", server])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("neurallog-operator runs");
    assert!(
        output.status.success(),
        "journal show failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Writes the operator made to anything but the Tenant itself and Events.
async fn writes_to_tenant_objects(operator: &Operator) -> f64 {
    operator
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("neurallog_api_write_requests_total{"))
        .filter(|l| !l.contains("resource=\"tenants") && !l.contains("resource=\"events\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn event_messages(client: &Client, uid: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_keeps_its_drift_until_resumed_then_converges() {
    let OperatorEnv {
        client,
        run,
        auth,
        operator,
    } = OperatorEnv::start("pause").await;
    let name = run.clone();
    let ns = format!("tenant-{name}");
    let server = operator.metrics_url.clone();
    let tenants: Api<Tenant> = Api::all(client.clone());

    let mut tenant = tenant_from_yaml(BASIC, &name, &run);
    apply_tenant(&client, &tenant).await;
    let running = wait_for_phase(&client, &name, "Running", PROVISION).await;
    let uid = running.uid().expect("uid");

    kubectl(&["annotate", "tenant", &name, "neurallog.io/paused=true"]);
    wait_for_true_condition(&client, &name, "Paused", "Paused", PROVISION).await;
    let paused = wait_for_phase(&client, &name, "Paused", PROVISION).await;
    let condition = paused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Paused").cloned())
        .expect("a Paused condition");
    let resume_command = format!("kubectl annotate tenant {name} {RESUME}");
    assert!(
        condition.message.contains(&resume_command),
        "{}",
        condition.message
    );
    assert!(
        journal_show(&server, &name).contains("Running -> Paused"),
        "the pause is journaled"
    );
    wait_for("the pause's Event", PROVISION, || {
        let client = client.clone();
        let uid = uid.clone();
        let command = resume_command.clone();
        async move {
            event_messages(&client, &uid)
                .await
                .iter()
                .any(|m| m.starts_with("Tenant is paused") && m.contains(&command))
                .then_some(())
        }
    })
    .await;
    let writes_before = writes_to_tenant_objects(&operator).await;
    let auth_calls_before = auth.calls().total;

    // Drift made meanwhile, and a spec change.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config = format!("{name}-redis-config");
    configmaps
        .delete(&config, &DeleteParams::default())
        .await
        .expect("ConfigMap deleted by hand");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let server_name = format!("{name}-server");
    deployments
        .patch(
            &server_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scaled to zero by hand");
    tenant.spec.server.replicas = 2;
    apply_tenant(&client, &tenant).await;

    // The operator saw all of it: its status, written for the new generation, counts the
    // server scaled to zero by hand (a pass that applied would have scaled it back).
    wait_for(
        "the paused tenant's status to show the new generation and the hand-made scale to zero",
        PROVISION,
        || {
            let api = tenants.clone();
            let name = name.clone();
            async move {
                let t = api.get(&name).await.ok()?;
                let status = t.status?;
                (status.observed_generation == t.metadata.generation
                    && status.phase.as_deref() == Some("Paused")
                    && status.server_status?.ready_replicas == 0)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        deployments
            .get(&server_name)
            .await
            .expect("deployment")
            .spec
            .and_then(|s| s.replicas),
        Some(0),
        "neither the drift nor the spec change is applied while paused"
    );
    assert!(
        configmaps
            .get_opt(&config)
            .await
            .expect("readable")
            .is_none(),
        "the deleted ConfigMap is not recreated while paused"
    );
    assert_eq!(
        writes_to_tenant_objects(&operator).await,
        writes_before,
        "no write to the tenant's objects while paused"
    );
    assert_eq!(
        auth.calls().total,
        auth_calls_before,
        "no Auth call while paused"
    );

    kubectl(&["annotate", "tenant", &name, RESUME]);
    wait_for("the resume to be journaled", PROVISION, || {
        let server = server.clone();
        let name = name.clone();
        async move {
            journal_show(&server, &name)
                .contains("Paused -> Pending")
                .then_some(())
        }
    })
    .await;
    wait_for(
        "the spec's replicas and the ConfigMap to be back",
        PROVISION,
        || {
            let deployments = deployments.clone();
            let configmaps = configmaps.clone();
            let (server_name, config) = (server_name.clone(), config.clone());
            async move {
                let replicas = deployments.get(&server_name).await.ok()?.spec?.replicas;
                let config = configmaps.get_opt(&config).await.ok()?;
                (replicas == Some(2) && config.is_some()).then_some(())
            }
        },
    )
    .await;
    let resumed = wait_for_phase(&client, &name, "Running", PROVISION).await;
    assert!(
        resumed
            .status
            .expect("status")
            .conditions
            .iter()
            .all(|c| c.type_ != "Paused"),
        "the Paused condition goes with the pause"
    );
    assert!(
        event_messages(&client, &uid)
            .await
            .iter()
            .any(|m| m.starts_with("Tenant resumed")),
        "the resume's Event"
    );

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &name, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_paused_tenant_overrides_the_pause() {
    let OperatorEnv {
        client,
        run,
        auth,
        operator: _operator,
    } = OperatorEnv::start("pausedel").await;
    let name = run.clone();
    let tenants: Api<Tenant> = Api::all(client.clone());

    apply_tenant(&client, &tenant_from_yaml(BASIC, &name, &run)).await;
    wait_for_phase(&client, &name, "Running", PROVISION).await;
    kubectl(&["annotate", "tenant", &name, "neurallog.io/paused=true"]);
    wait_for_phase(&client, &name, "Paused", PROVISION).await;

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &name, PROVISION).await;
    assert!(
        !auth.tenants().contains(&name),
        "deleting a paused tenant deregisters it"
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    wait_until_gone(&namespaces, &format!("tenant-{name}"), PROVISION).await;
}
