//! The API server restarted mid-run: the operator's watches resume and nothing is missed.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const AFTER_RESTART: Duration = Duration::from_secs(300);

fn restart_apiserver() {
    let status = Command::new("bash")
        .arg(repo_root().join("tests/cluster/cluster.sh"))
        .arg("restart-apiserver")
        .status()
        .expect("cluster.sh runs");
    assert!(status.success(), "kube-apiserver did not restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_after_an_api_server_restart() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("apirestart");
    let auth = auth_stub().await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    let before = format!("{run}-a");
    let mut tenant = tenant_from_yaml(BASIC, &before, &run);
    apply_tenant(&client, &tenant).await;
    wait_for_phase(&client, &before, "Running", Duration::from_secs(120)).await;

    restart_apiserver();
    let client = common::client().await;

    // A change to an existing tenant and a new tenant, both made after the restart.
    tenant.spec.server.replicas = 2;
    apply_tenant(&client, &tenant).await;
    let after = format!("{run}-b");
    apply_tenant(&client, &tenant_from_yaml(BASIC, &after, &run)).await;
    // Generous: watches come back on their own backoff, slower on a loaded CI machine.
    wait_for_phase(&client, &after, "Running", AFTER_RESTART).await;
    wait_for(
        "the update made after the restart to take effect",
        AFTER_RESTART,
        || {
            let client = client.clone();
            let name = before.clone();
            async move {
                let api: kube::Api<neurallog_operator::crd::Tenant> = kube::Api::all(client);
                let t = api.get(&name).await.ok()?;
                let s = t.status?;
                (s.phase.as_deref() == Some("Running") && s.server_status?.ready_replicas == 2)
                    .then_some(())
            }
        },
    )
    .await;
    for name in [&before, &after] {
        kubectl(&["delete", "tenant", name, "--timeout=120s"]);
    }
    drop(operator);
}
