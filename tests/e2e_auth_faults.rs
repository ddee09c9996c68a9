//! Auth faults: down (connection refused), 500s, 429 with Retry-After, answers slower than
//! the timeout, and 404 on delete. Each tenant reports why it waits, retries with backoff
//! and recovers on its own.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use neurallog_auth_stub::{Faults, RateLimit};
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const LONG: Duration = Duration::from_secs(120);

async fn waits_with_reason_then_recovers(prefix: &str, faults: Faults, reason: &str) {
    let client = client().await;
    install_crd(&client).await;
    let run = unique(prefix);
    let auth = auth_stub().await;
    auth.set_faults(faults).await.expect("faults set");
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    apply_tenant(&client, &tenant_from_yaml(BASIC, &run, &run)).await;
    wait_for_true_condition(&client, &run, "Reconciling", reason, LONG).await;
    auth.set_faults(Faults::default())
        .await
        .expect("faults cleared");
    wait_for_phase(&client, &run, "Running", LONG).await;
    assert!(auth.tenants().contains(&run));
    kubectl(&["delete", "tenant", &run, "--timeout=120s"]);
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_service_shows_auth_unavailable_and_heals() {
    let faults = Faults {
        down: true,
        ..Faults::default()
    };
    waits_with_reason_then_recovers("authdown", faults, "AuthUnavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_show_auth_unavailable_and_heal() {
    let faults = Faults {
        error_500: true,
        ..Faults::default()
    };
    waits_with_reason_then_recovers("auth500", faults, "AuthUnavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_show_auth_rate_limited_and_heal() {
    let faults = Faults {
        rate_limit: Some(RateLimit {
            retry_after_secs: 1,
        }),
        ..Faults::default()
    };
    waits_with_reason_then_recovers("auth429", faults, "AuthRateLimited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_timeout_show_auth_unavailable_and_heal() {
    // The operator under test times Auth calls out after 1 s.
    let faults = Faults {
        slow: Some(Duration::from_secs(3)),
        ..Faults::default()
    };
    waits_with_reason_then_recovers("authslow", faults, "AuthUnavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_on_delete_counts_as_deleted() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("auth404");
    let auth = auth_stub().await;
    let operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    apply_tenant(&client, &tenant_from_yaml(BASIC, &run, &run)).await;
    wait_for_phase(&client, &run, "Running", LONG).await;
    auth.set_faults(Faults {
        not_found_on_delete: true,
        ..Faults::default()
    })
    .await
    .expect("faults");
    kubectl(&["delete", "tenant", &run, "--timeout=120s"]);
    assert!(!auth.tenants().contains(&run));
    drop(operator);
}
