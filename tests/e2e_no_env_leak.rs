//! Env values may be secrets: they reach the tenant's Deployment and nothing else — not the
//! journal, not the operator's logs, not the Events.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use neurallog_operator::crd::Tenant;
use neurallog_operator::journal::Journal;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const LONG: Duration = Duration::from_secs(120);

fn with_env(tenant: &mut Tenant, value: &str) {
    tenant.spec.server.env = vec![
        serde_json::from_value(serde_json::json!({"name": "API_TOKEN", "value": value}))
            .expect("env var"),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_stay_out_of_journal_logs_and_events() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("noleak");
    let auth = auth_stub().await;
    let mut operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    let secret = format!("s3cr3t-{run}");
    let changed = format!("changed-{secret}");

    let mut tenant = tenant_from_yaml(BASIC, &run, &run);
    with_env(&mut tenant, &secret);
    apply_tenant(&client, &tenant).await;
    wait_for_phase(&client, &run, "Running", LONG).await;
    with_env(&mut tenant, &changed);
    apply_tenant(&client, &tenant).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("tenant-{run}"));
    wait_for("the changed value in the Deployment", LONG, || {
        let (deployments, name, changed) = (
            deployments.clone(),
            format!("{run}-server"),
            changed.clone(),
        );
        async move {
            let d = deployments.get(&name).await.ok()?;
            serde_json::to_string(&d.spec?)
                .ok()?
                .contains(&changed)
                .then_some(())
        }
    })
    .await;
    wait_for_phase(&client, &run, "Running", LONG).await;
    let uid = Api::<Tenant>::all(client.clone())
        .get(&run)
        .await
        .expect("tenant")
        .uid()
        .expect("uid");
    kubectl(&["delete", "tenant", &run, "--timeout=120s"]);
    operator.kill();

    let journal = Journal::open(&operator.journal).expect("journal");
    let records: Vec<_> = journal
        .history(&uid)
        .collect::<Result<_, _>>()
        .expect("history");
    assert!(
        records.len() >= 6,
        "create, update and delete were journaled"
    );
    let journaled = serde_json::to_string(&records).expect("records as JSON");
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
        .expect("events")
        .items;
    let events = serde_json::to_string(&events).expect("events as JSON");
    let log = std::fs::read_to_string(&operator.log).expect("operator log");
    for value in [&secret, &changed] {
        assert!(
            !journaled.contains(value.as_str()),
            "the journal holds an env value"
        );
        assert!(
            !events.contains(value.as_str()),
            "an Event holds an env value"
        );
        assert!(
            !log.contains(value.as_str()),
            "the operator log holds an env value"
        );
    }
    println!(
        "no env value in {} journal records, the tenant's Events or {} bytes of log",
        records.len(),
        log.len()
    );
}
