//! No write loops: a corpus of diverse specs (the longest name, empty env values, lists at
//! their limits, a write the API server refuses, pods that cannot be pulled or scheduled, a
//! namespace conflict) converges or stalls, and then the operator sends no write request
//! for a minute, by its own counter and by the API server's `apiserver_request_total`.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use neurallog_operator::crd::{MAX_TENANT_NAME_LEN, Tenant};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const SETTLE: Duration = Duration::from_secs(180);
/// The window in which nothing may be written.
const QUIET: Duration = Duration::from_secs(60);

/// Lists at the limits the CRD admits: 128 env variables (some empty), 64 allowed
/// namespaces, 32 ingress and 32 egress rules with 32 ports and 32 labels each.
fn lists_at_their_limits() -> serde_json::Value {
    let env: Vec<_> = (0..128)
        .map(|i| {
            let value = if i % 3 == 0 {
                String::new()
            } else {
                format!("v{i}")
            };
            json!({"name": format!("VAR_{i}"), "value": value})
        })
        .collect();
    let namespaces: Vec<_> = (0..64).map(|i| format!("team-{i}")).collect();
    let labels: BTreeMap<String, String> = (0..32)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let ports: Vec<_> = (0..32)
        .map(|i| json!({"protocol": "TCP", "port": 1000 + i}))
        .collect();
    let ingress: Vec<_> = (0..32)
        .map(|i| json!({"description": format!("in {i}"), "from": labels, "ports": ports}))
        .collect();
    let egress: Vec<_> = (0..32)
        .map(|i| json!({"description": format!("out {i}"), "to": labels, "ports": ports}))
        .collect();
    json!({
        "server": {"env": env},
        "networkPolicy": {
            "enabled": true,
            "allowedNamespaces": namespaces,
            "ingressRules": ingress,
            "egressRules": egress,
        },
    })
}

fn tenant(name: &str, run: &str, spec: serde_json::Value) -> Tenant {
    let mut tenant = tenant_from_yaml(BASIC, name, run);
    let mut base = serde_json::to_value(&tenant.spec).expect("spec");
    if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    tenant.spec = serde_json::from_value(base).expect("a valid spec");
    tenant
}

async fn settled(client: &Client, name: &str, phase: &str) {
    wait_for_phase(client, name, phase, SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_and_stalled_tenants_cost_no_writes() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("loops");
    let auth = auth_stub().await;
    let options = OperatorOptions {
        args: vec!["--progress-deadline-seconds".into(), "15".into()],
        ..OperatorOptions::default()
    };
    let operator = Operator::start_with_options(&run, &auth.url(), &options);
    operator.wait_ready().await;

    let longest: String = format!("{run}-{}", "l".repeat(MAX_TENANT_NAME_LEN))
        .chars()
        .take(MAX_TENANT_NAME_LEN)
        .collect();
    let limits = format!("{run}-limits");
    let refused = format!("{run}-refused");
    let pull = format!("{run}-pull");
    let unschedulable = format!("{run}-sched");
    let conflict = format!("{run}-conflict");
    let names = [
        &longest,
        &limits,
        &refused,
        &pull,
        &unschedulable,
        &conflict,
    ];
    let _cleanup = TenantCleanup(names.iter().map(|n| n.to_string()).collect());

    let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &deny_server_services(&refused));
    assert!(ok, "{stderr}");
    wait_until_server_services_are_refused(&refused).await;
    let foreign: Namespace =
        serde_json::from_value(json!({"metadata": {"name": format!("tenant-{conflict}")}}))
            .expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &foreign)
        .await
        .expect("the foreign namespace");

    apply_tenant(&client, &tenant(&longest, &run, json!({}))).await;
    apply_tenant(&client, &tenant(&limits, &run, lists_at_their_limits())).await;
    apply_tenant(&client, &tenant(&refused, &run, json!({}))).await;
    let missing = json!({"server": {"image": "registry.invalid/neurallog/no-such-image:1"}});
    apply_tenant(&client, &tenant(&pull, &run, missing)).await;
    let huge = json!({"server": {"resources": {"cpu": {"request": "64", "limit": "64"}}}});
    apply_tenant(&client, &tenant(&unschedulable, &run, huge)).await;
    apply_tenant(&client, &tenant(&conflict, &run, json!({}))).await;

    settled(&client, &longest, "Running").await;
    settled(&client, &limits, "Running").await;
    settled(&client, &refused, "Stalled").await;
    settled(&client, &pull, "Stalled").await;
    settled(&client, &unschedulable, "Stalled").await;
    settled(&client, &conflict, "Failed").await;

    let operator_before = operator.counter("neurallog_api_write_requests_total").await;
    let before = apiserver_writes();
    // The measurement itself: a quiet minute, with the Failed tenant looked at again
    // (its recheck runs every minute) and the stalled ones' pods as they are.
    tokio::time::sleep(QUIET).await;
    let operator_writes =
        operator.counter("neurallog_api_write_requests_total").await - operator_before;
    let delta = apiserver_writes_since(&before);
    println!(
        "{} settled tenants (2 Running, 3 Stalled, 1 Failed), {}s quiet window: operator write \
         requests = {operator_writes}, API server write requests on operator-owned resources = {delta:?}",
        names.len(),
        QUIET.as_secs()
    );
    assert_eq!(operator_writes, 0.0, "the operator counted its own writes");
    assert!(delta.is_empty(), "the API server saw writes: {delta:?}");

    let (ok, _, stderr) = kubectl_stdin(&["delete", "-f", "-"], &deny_server_services(&refused));
    assert!(ok, "{stderr}");
    for name in names {
        kubectl(&["delete", "tenant", name, "--wait=false"]);
    }
    let tenants: Api<Tenant> = Api::all(client.clone());
    for name in names {
        wait_until_gone(&tenants, name, Duration::from_secs(120)).await;
    }
    let _ = kubectl_stdin(
        &[
            "delete",
            "namespace",
            &format!("tenant-{conflict}"),
            "--wait=false",
        ],
        "",
    );
}
