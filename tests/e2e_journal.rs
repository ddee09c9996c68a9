//! The journal tools against a live operator: after a tenant is created, updated and
//! deleted, `journal show` (through the operator's HTTP API) lists exactly the transitions
//! the tenant's Events show, `verify` passes, `export` and `replay` agree, and the file is
//! refused while the operator holds it and readable once it has stopped.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use neurallog_operator::crd::Tenant;
use std::process::{Command, Output};
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

fn operator_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_neurallog-operator"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("neurallog-operator runs")
}

fn stdout_of(args: &[&str]) -> String {
    let output = operator_cli(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (seq, phase, message) of each transition Event of the tenant, by seq.
async fn transition_events(client: &Client, uid: &str) -> Vec<(u64, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let selector = format!("involvedObject.uid={uid}");
    let events = api
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("events")
        .items;
    let mut transitions: Vec<_> = events
        .into_iter()
        .filter_map(|event| {
            let name = event.metadata.name?;
            let seq = name.rsplit('.').next()?.strip_prefix('t')?.parse().ok()?;
            Some((seq, event.reason?, event.message?))
        })
        .collect();
    transitions.sort();
    transitions
}

/// The rows of `journal show`: seq, the phase entered, and the whole line (its message is
/// the last column).
fn shown_rows(table: &str) -> Vec<(u64, String, String)> {
    table
        .lines()
        .skip(2)
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let seq = cells.first()?.parse().ok()?;
            Some((seq, cells.get(4)?.to_string(), line.to_string()))
        })
        .collect()
}

async fn journal_shows(server: &str, name: &str, transition: &str) -> Option<String> {
    let table = stdout_of(&["journal", "show", name, "--server", server]);
    table.contains(transition).then_some(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_show_matches_the_events_and_verify_passes() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("journal");
    let name = run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let auth = auth_stub().await;
    let mut operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    let server = operator.metrics_url.clone();

    let mut tenant = tenant_from_yaml(BASIC, &name, &run);
    apply_tenant(&client, &tenant).await;
    let created = wait_for_phase(&client, &name, "Running", PROVISION).await;
    let uid = created.metadata.uid.clone().expect("uid");

    tenant.spec.server.replicas += 1;
    apply_tenant(&client, &tenant).await;
    wait_for("the update to be journaled as done", PROVISION, || {
        journal_shows(&server, &name, "Updating -> Running")
    })
    .await;

    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &name, PROVISION).await;
    let table = wait_for("the deletion to be journaled", PROVISION, || {
        journal_shows(&server, &name, "Deleting -> Deleted")
    })
    .await;

    let rows = shown_rows(&table);
    let phases: Vec<&str> = rows.iter().map(|(_, phase, _)| phase.as_str()).collect();
    assert_eq!(
        phases,
        [
            "Pending",
            "ProvisioningRedis",
            "ProvisioningServer",
            "Running",
            "Updating",
            "Running",
            "Deleting",
            "Deleted"
        ],
        "{table}"
    );
    // The Deleted Event is mirrored after the finalizer is released: wait for it.
    let events = wait_for("one Event per journaled transition", PROVISION, || {
        let client = client.clone();
        let uid = uid.clone();
        let want = rows.len();
        async move {
            let events = transition_events(&client, &uid).await;
            (events.len() >= want).then_some(events)
        }
    })
    .await;
    assert_eq!(events.len(), rows.len(), "{events:?}\n{table}");
    for ((seq, phase, line), (event_seq, reason, message)) in rows.iter().zip(&events) {
        assert_eq!((seq, phase), (event_seq, reason), "{line}");
        assert!(
            line.ends_with(message.as_str()),
            "{line} vs Event {message:?}"
        );
    }

    let verify = stdout_of(&["journal", "verify", "--server", &server]);
    assert!(
        verify.starts_with("journal intact: 1 chains, 8 records"),
        "{verify}"
    );
    let export = stdout_of(&["journal", "export", "--tenant", &name, "--server", &server]);
    assert_eq!(export.lines().count(), rows.len());
    let list = stdout_of(&["journal", "list", "--server", &server]);
    assert!(list.contains(&format!("{name}  {uid}  Deleted")), "{list}");
    let replay = stdout_of(&["replay", &name, "--server", &server]);
    assert!(
        replay.contains("replay matches the journal: 8 step(s)"),
        "{replay}"
    );

    let history = kubectl_tenant(&["history", &name, "--server", &server]);
    assert_eq!(
        history, table,
        "kubectl tenant history shows what journal show shows"
    );
    let plugin_export = kubectl_tenant(&["journal", &name, "--server", &server]);
    assert_eq!(plugin_export, export);
    let plugin_replay = kubectl_tenant(&["replay", &name, "--server", &server]);
    assert_eq!(plugin_replay, replay);

    let journal = operator
        .journal_path()
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let held = operator_cli(&["journal", "verify", "--journal", &journal]);
    assert!(!held.status.success());
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(
        stderr.contains("the operator holds this journal; use --server URL"),
        "{stderr}"
    );

    operator.terminate(Duration::from_secs(30)).await;
    let offline = stdout_of(&["journal", "verify", "--journal", &journal]);
    assert_eq!(offline, verify);
    let offline_export = stdout_of(&[
        "journal",
        "export",
        "--tenant",
        &name,
        "--journal",
        &journal,
    ]);
    assert_eq!(
        offline_export, export,
        "the same records from the file and the API"
    );
}
