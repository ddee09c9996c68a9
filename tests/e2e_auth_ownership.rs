//! Auth ownership: the operator deregisters only the registrations it made. A name Auth
//! already knew is reported (`RegistrationExists`) and left alone; a tenant that failed
//! before registering deletes nothing in Auth; a normal tenant registers and deregisters
//! its name; and a registration whose answer the operator never saw (killed right after
//! its `POST`) is still its own after a restart, because the intent was journaled first.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::ListParams;
use neurallog_auth_stub::{AuthStubHandle, Faults};
use neurallog_operator::crd::Tenant;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const LONG: Duration = Duration::from_secs(120);

/// Another cluster's registration of `name`, made straight at the stub; the stub's call
/// log then starts afresh, to hold the operator's calls only.
async fn register_elsewhere(auth: &AuthStubHandle, name: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/tenants", auth.url()))
        .json(&serde_json::json!({"tenantId": name, "adminUserId": "other-cluster-admin"}))
        .send()
        .await
        .expect("the stub answers");
    assert_eq!(response.status(), 201);
    auth.reset_calls();
}

/// The Auth calls the stub answered: `(method, path, status)`.
fn calls(auth: &AuthStubHandle) -> Vec<(String, String, u16)> {
    auth.calls()
        .recent
        .into_iter()
        .map(|c| (c.method, c.path, c.status))
        .collect()
}

fn deletes_of(auth: &AuthStubHandle, name: &str) -> usize {
    let path = format!("/api/tenants/{name}");
    calls(auth)
        .iter()
        .filter(|(method, p, _)| method == "DELETE" && *p == path)
        .count()
}

async fn delete_tenant(client: &kube::Client, name: &str) {
    kubectl(&["delete", "tenant", name, "--timeout=120s"]);
    let api: Api<Tenant> = Api::all(client.clone());
    wait_until_gone(&api, name, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_auth_already_knows_is_reported_and_outlives_the_tenant() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("authtaken");
    let auth = auth_stub().await;
    register_elsewhere(&auth, &run).await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;

    apply_tenant(&client, &tenant_from_yaml(BASIC, &run, &run)).await;
    wait_for_phase(&client, &run, "Failed", LONG).await;
    let message = wait_for_condition(
        &client,
        &run,
        "AuthRegistered",
        "False",
        "RegistrationExists",
        LONG,
    )
    .await;
    assert!(
        message.contains("did not register") && message.contains("another name"),
        "{message}"
    );
    wait_for_true_condition(&client, &run, "Stalled", "RegistrationExists", LONG).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let warning = wait_for("the RegistrationExists Event", LONG, || {
        let events = events.clone();
        let selector = format!("involvedObject.name={run},reason=RegistrationExists");
        async move {
            let list = events
                .list(&ListParams::default().fields(&selector))
                .await
                .ok()?;
            list.items.into_iter().next()
        }
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        calls(&auth).iter().all(|(method, _, _)| method != "POST"),
        "the name was never asked for: {:?}",
        calls(&auth)
    );

    delete_tenant(&client, &run).await;
    assert_eq!(deletes_of(&auth, &run), 0, "{:?}", calls(&auth));
    assert_eq!(
        auth.tenants(),
        std::slice::from_ref(&run),
        "the other registration stays"
    );
    assert_eq!(
        auth.tenant_admin(&run).as_deref(),
        Some("other-cluster-admin")
    );
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_never_registered_is_deleted_without_an_auth_delete() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("authnever");
    let namespace = format!("tenant-{run}");
    kubectl(&["create", "namespace", &namespace]);
    let auth = auth_stub().await;
    // The same name is registered by someone else: deleting this Tenant must not touch it.
    register_elsewhere(&auth, &run).await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;

    apply_tenant(&client, &tenant_from_yaml(BASIC, &run, &run)).await;
    wait_for_true_condition(&client, &run, "Stalled", "NamespaceConflict", LONG).await;
    wait_for_condition(
        &client,
        &run,
        "AuthRegistered",
        "False",
        "NotRegistered",
        LONG,
    )
    .await;

    delete_tenant(&client, &run).await;
    assert_eq!(deletes_of(&auth, &run), 0, "{:?}", calls(&auth));
    assert_eq!(auth.tenants(), std::slice::from_ref(&run));
    drop(operator);
    kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_tenant_registers_and_deregisters_its_name() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("authown");
    let auth = auth_stub().await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;

    apply_tenant(&client, &tenant_from_yaml(BASIC, &run, &run)).await;
    wait_for_phase(&client, &run, "Running", LONG).await;
    wait_for_true_condition(&client, &run, "AuthRegistered", "Registered", LONG).await;
    assert_eq!(auth.tenants(), std::slice::from_ref(&run));
    let asked: Vec<(String, u16)> = calls(&auth)
        .into_iter()
        .filter(|(method, _, _)| method != "DELETE")
        .map(|(method, _, status)| (method, status))
        .collect();
    assert_eq!(
        asked,
        [("GET".to_string(), 200), ("POST".to_string(), 201)],
        "checked, then registered once"
    );

    delete_tenant(&client, &run).await;
    assert_eq!(deletes_of(&auth, &run), 1, "{:?}", calls(&auth));
    assert!(auth.tenants().is_empty());
    drop(operator);
}

/// The operator dies after Auth registered the name and before it saw the answer. On
/// restart its `POST` answers 409; the journaled intent makes that registration its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_answer_was_lost_is_still_the_tenants_own() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("authcrash");
    let auth = auth_stub().await;
    auth.set_faults(Faults {
        slow_register: Some(Duration::from_secs(60)),
        ..Faults::default()
    })
    .await
    .expect("faults set");
    let mut operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;

    apply_tenant(&client, &tenant_from_yaml(BASIC, &run, &run)).await;
    wait_for("the operator's POST to reach Auth", LONG, || {
        let posted = auth.calls().count("POST") >= 1;
        async move { posted.then_some(()) }
    })
    .await;
    // Registered in Auth, the answer held back: the operator never learns the outcome.
    operator.kill();
    assert_eq!(auth.tenants(), std::slice::from_ref(&run));
    auth.set_faults(Faults::default())
        .await
        .expect("faults cleared");

    operator.restart();
    operator.wait_ready().await;
    wait_for_phase(&client, &run, "Running", LONG).await;
    wait_for_true_condition(&client, &run, "AuthRegistered", "Registered", LONG).await;
    let posts: Vec<u16> = calls(&auth)
        .into_iter()
        .filter(|(method, _, _)| method == "POST")
        .map(|(_, _, status)| status)
        .collect();
    assert_eq!(posts.first(), Some(&201), "{posts:?}");
    assert!(
        posts.contains(&409),
        "the restarted operator met its own registration: {posts:?}"
    );

    delete_tenant(&client, &run).await;
    assert_eq!(deletes_of(&auth, &run), 1, "{:?}", calls(&auth));
    assert!(auth.tenants().is_empty(), "deregistered as its own");
    drop(operator);
}
