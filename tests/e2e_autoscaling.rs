//! The guide's "use horizontal pod autoscaling" on the real control plane: with
//! `spec.server.autoscaling` the operator renders a HorizontalPodAutoscaler, hands the
//! replica count over without dropping it, sizes the quota for the maximum, and leaves
//! the autoscaler's changes alone: no revert, no journaled transition.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::{Api, Client};
use neurallog_operator::crd::{Autoscaling, Tenant};
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

async fn server_replicas(client: &Client, name: &str) -> Option<i32> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), &format!("tenant-{name}"));
    api.get(&format!("{name}-server"))
        .await
        .ok()?
        .spec?
        .replicas
}

fn journal_sequence(tenant: &Tenant) -> u64 {
    tenant
        .status
        .as_ref()
        .unwrap()
        .journal
        .as_ref()
        .unwrap()
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_owns_the_count_and_its_changes_are_not_transitions() {
    skip_without_cluster();
    let client = client().await;
    install_crd(&client).await;
    let run = unique("hpa");
    let auth = auth_stub().await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    let name = run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let ns = format!("tenant-{name}");

    let mut tenant = tenant_from_yaml(BASIC, &name, &run);
    tenant.spec.server.replicas = 3;
    apply_tenant(&client, &tenant).await;
    wait_for_phase(&client, &name, "Running", PROVISION).await;

    // Autoscaling on: the count the server had stays (it is handed over, never reset to
    // the default of one), and the autoscaler gets the bounds.
    tenant.spec.server.autoscaling = Some(Autoscaling {
        min_replicas: 2,
        max_replicas: 5,
        target_cpu_utilization_percentage: 70,
    });
    apply_tenant(&client, &tenant).await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let hpa = wait_for("the HorizontalPodAutoscaler", PROVISION, || {
        let hpas = hpas.clone();
        let name = name.clone();
        async move { hpas.get_opt(&format!("{name}-server")).await.ok()? }
    })
    .await;
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 5));
    assert_eq!(spec.scale_target_ref.name, format!("{name}-server"));
    let target = &spec.metrics.unwrap()[0];
    assert_eq!(
        target.resource.as_ref().unwrap().target.average_utilization,
        Some(70)
    );
    let running = wait_for_phase(&client, &name, "Running", PROVISION).await;
    assert_eq!(server_replicas(&client, &name).await, Some(3));
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
    let quota = quotas.get("tenant-quota").await.unwrap();
    assert_eq!(
        quota.spec.unwrap().hard.unwrap()["pods"].0,
        "8",
        "5 server pods + 1 surge, 1 Redis pod + 1 surge"
    );

    // What an autoscaler does: change the count through the scale subresource. The operator
    // neither reverts it nor journals a transition; the status follows the new count.
    let sequence = journal_sequence(&running);
    let (ok, _, stderr) = kubectl_stdin(
        &[
            "-n",
            &ns,
            "scale",
            "deployment",
            &format!("{name}-server"),
            "--replicas=4",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    let tenants: Api<Tenant> = Api::all(client.clone());
    let scaled = wait_for(
        "the status to show 4 ready server replicas",
        PROVISION,
        || {
            let tenants = tenants.clone();
            let name = name.clone();
            async move {
                let t = tenants.get(&name).await.ok()?;
                let server = t.status.as_ref()?.server_status.as_ref()?;
                (server.ready_replicas == 4 && server.total_replicas == 4).then_some(t)
            }
        },
    )
    .await;
    assert_eq!(
        scaled.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        journal_sequence(&scaled),
        sequence,
        "a replica change by the autoscaler is not a transition"
    );
    assert_eq!(server_replicas(&client, &name).await, Some(4));

    // Autoscaling off: the autoscaler goes and the spec's count is back.
    tenant.spec.server.autoscaling = None;
    tenant.spec.server.replicas = 2;
    apply_tenant(&client, &tenant).await;
    wait_for(
        "the autoscaler to be removed and 2 replicas",
        PROVISION,
        || {
            let hpas = hpas.clone();
            let client = client.clone();
            let name = name.clone();
            async move {
                let gone = hpas
                    .get_opt(&format!("{name}-server"))
                    .await
                    .ok()?
                    .is_none();
                (gone && server_replicas(&client, &name).await == Some(2)).then_some(())
            }
        },
    )
    .await;
    wait_for_phase(&client, &name, "Running", PROVISION).await;
}
