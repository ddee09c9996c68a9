//! "Nothing to change" means "no write": after a full resync of Running tenants (an
//! operator restart reconciles every one of them), the operator sent no write request,
//! by its own counter and by the API server's `apiserver_request_total`.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

const TENANTS: usize = 5;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_of_running_tenants_sends_no_write_request() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("noop");
    let auth = auth_stub().await;
    let mut operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    let names: Vec<String> = (0..TENANTS).map(|i| format!("{run}-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let mut tenant =
            tenant_from_yaml(include_str!("../examples/basic-tenant.yaml"), name, &run);
        // One with backups: its CronJob and claim are objects of the resync too.
        if i == 0 {
            tenant.spec.redis.backup = Some(neurallog_operator::crd::RedisBackup {
                // January 1st only: no Job starts during the test.
                schedule: "0 3 1 1 *".into(),
                keep: 7,
                storage: None,
            });
        }
        apply_tenant(&client, &tenant).await;
    }
    for name in &names {
        wait_for_phase(&client, name, "Running", Duration::from_secs(180)).await;
    }

    operator.restart();
    let before = apiserver_writes();
    operator.wait_ready().await;
    wait_for(
        "the restarted operator to reconcile every tenant",
        Duration::from_secs(60),
        || {
            let op = &operator;
            async move {
                let done = op
                    .counter("neurallog_tenant_reconciliation_duration_seconds_count")
                    .await;
                (done >= TENANTS as f64).then_some(())
            }
        },
    )
    .await;
    let operator_writes = operator.counter("neurallog_api_write_requests_total").await as u64;
    let delta = apiserver_writes_since(&before);
    println!(
        "resync of {TENANTS} Running tenants: operator write requests = {operator_writes}, \
         API server write requests on operator-owned resources = {delta:?}"
    );
    assert_eq!(operator_writes, 0, "the operator counted its own writes");
    assert!(delta.is_empty(), "the API server saw writes: {delta:?}");

    for name in &names {
        kubectl(&["delete", "tenant", name, "--wait=false"]);
    }
    for name in &names {
        wait_until_gone(
            &kube::Api::<neurallog_operator::crd::Tenant>::all(client.clone()),
            name,
            Duration::from_secs(120),
        )
        .await;
    }
}
