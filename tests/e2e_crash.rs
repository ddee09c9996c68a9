//! Crash consistency: the operator is SIGKILLed at random moments, over and over, while
//! tenants are created, updated and deleted. At the end nothing is lost or duplicated.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use neurallog_machines::Phase;
use neurallog_operator::crd::Tenant;
use neurallog_operator::journal::Journal;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TENANTS: usize = 50;
const MIN_KILLS: usize = 20;
const BASIC: &str = include_str!("../examples/basic-tenant.yaml");

fn name(run: &str, i: usize) -> String {
    format!("{run}-{i:02}")
}

fn is_deleted(i: usize) -> bool {
    i % 4 == 3
}

fn is_updated(i: usize) -> bool {
    i.is_multiple_of(3)
}

/// Creates every tenant, updates a third of them and deletes a quarter, in a fixed order.
async fn workload(client: Client, run: String) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    for i in 0..TENANTS {
        apply_tenant(&client, &tenant_from_yaml(BASIC, &name(&run, i), &run)).await;
    }
    for i in (0..TENANTS).filter(|i| is_updated(*i)) {
        let mut t = tenant_from_yaml(BASIC, &name(&run, i), &run);
        t.spec.server.replicas = 2;
        t.spec
            .redis
            .config
            .insert("maxmemory-policy".into(), "allkeys-lru".into());
        apply_tenant(&client, &t).await;
    }
    for i in (0..TENANTS).filter(|i| is_deleted(*i)) {
        // Deleted once the operator has taken it in charge (its finalizer is on): a Tenant
        // deleted before that is simply gone, with nothing to clean up or journal.
        let n = name(&run, i);
        wait_for(
            &format!("{n} to carry the finalizer"),
            Duration::from_secs(300),
            || {
                let api = tenants.clone();
                let n = n.clone();
                async move {
                    let t = api.get(&n).await.ok()?;
                    t.finalizers()
                        .iter()
                        .any(|f| f == "neurallog.io/finalizer")
                        .then_some(())
                }
            },
        )
        .await;
        let _ = tenants.delete(&n, &DeleteParams::default()).await;
    }
}

/// Kills and restarts the operator at pseudo-random moments until told to stop.
async fn killer(mut operator: Operator, stop: Arc<AtomicBool>) -> (Operator, usize) {
    let mut kills = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::SeqCst) || kills < MIN_KILLS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pause = Duration::from_millis(200 + seed % 1300);
        tokio::time::sleep(pause).await;
        operator.restart();
        kills += 1;
    }
    (operator, kills)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_lose_and_duplicate_nothing() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("crash");
    let auth = auth_stub().await;
    let operator = Operator::start(&run, &auth.url());
    let stop = Arc::new(AtomicBool::new(false));
    let killing = tokio::spawn(killer(operator, stop.clone()));
    workload(client.clone(), run.clone()).await;
    stop.store(true, Ordering::SeqCst);
    let (mut operator, kills) = killing.await.expect("killer task");
    operator.wait_ready().await;

    let tenants: Api<Tenant> = Api::all(client.clone());
    for i in 0..TENANTS {
        let n = name(&run, i);
        if is_deleted(i) {
            wait_until_gone(&tenants, &n, Duration::from_secs(300)).await;
        } else {
            let replicas = if is_updated(i) { 2 } else { 1 };
            wait_for(
                &format!("{n} Running at its latest spec"),
                Duration::from_secs(300),
                || {
                    let api = tenants.clone();
                    let n = n.clone();
                    async move {
                        let t = api.get(&n).await.ok()?;
                        let s = t.status.as_ref()?;
                        let done = s.phase.as_deref() == Some("Running")
                            && s.observed_generation == t.metadata.generation
                            && s.server_status.as_ref()?.ready_replicas == replicas;
                        done.then_some(())
                    }
                },
            )
            .await;
        }
    }
    let journal_path = operator.journal_path().to_path_buf();
    operator.kill();
    let journal = Journal::open(&journal_path).expect("the journal opens after the last kill");

    let report = journal.verify().expect("verify runs");
    assert!(
        report.is_ok(),
        "journal verify failed: {:?}",
        report.first_problem
    );

    let summaries: BTreeMap<String, _> = journal
        .tenants()
        .expect("summaries")
        .into_iter()
        .filter(|s| s.tenant.starts_with(&run))
        .map(|s| (s.tenant.clone(), s))
        .collect();
    assert_eq!(summaries.len(), TENANTS, "one chain per tenant");

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut records_checked = 0;
    let mut events_checked = 0;
    for (tenant_name, summary) in &summaries {
        let records: Vec<_> = journal
            .history(&summary.uid)
            .collect::<Result<_, _>>()
            .expect("history");
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (1..=records.len() as u64).collect::<Vec<_>>(),
            "{tenant_name}: gapless"
        );
        for pair in records.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{tenant_name}: chained phases");
            let repeated = pair[0].from == pair[1].from
                && pair[0].to == pair[1].to
                && pair[0].generation == pair[1].generation;
            assert!(
                !repeated,
                "{tenant_name}: transition recorded twice at seq {}",
                pair[1].seq
            );
        }
        records_checked += records.len();

        let selector = format!("involvedObject.uid={}", summary.uid);
        let transition_events: BTreeSet<String> = events
            .list(&ListParams::default().fields(&selector))
            .await
            .expect("events")
            .items
            .into_iter()
            .map(|e| e.name_any())
            .filter(|n| is_transition_event_name(n))
            .collect();
        let expected: BTreeSet<String> = records
            .iter()
            .map(|r| format!("{}.{}.t{:06}", tenant_name, &summary.uid[..8], r.seq))
            .collect();
        assert_eq!(
            transition_events, expected,
            "{tenant_name}: one Event per transition"
        );
        events_checked += transition_events.len();

        let index: usize = tenant_name
            .rsplit('-')
            .next()
            .and_then(|i| i.parse().ok())
            .expect("index");
        if is_deleted(index) {
            assert_eq!(summary.last_phase, Phase::Deleted, "{tenant_name}");
            assert!(
                namespaces
                    .get_opt(&format!("tenant-{tenant_name}"))
                    .await
                    .expect("readable")
                    .is_none()
            );
            assert!(
                !auth.tenants().contains(tenant_name),
                "{tenant_name} still registered"
            );
        } else {
            let t = tenants.get(tenant_name).await.expect("tenant");
            assert_eq!(
                t.status.and_then(|s| s.phase).as_deref(),
                Some(summary.last_phase.as_str()),
                "{tenant_name}: status mirrors the journal"
            );
        }
    }
    println!(
        "crash test: {kills} SIGKILLs survived; {TENANTS} tenants ({} deleted, {} updated); \
         {records_checked} journal records and {events_checked} transition Events checked; \
         verify: {} chains, {} records, 0 problems",
        (0..TENANTS).filter(|i| is_deleted(*i)).count(),
        (0..TENANTS).filter(|i| is_updated(*i)).count(),
        report.chains,
        report.records,
    );
    assert!(kills >= MIN_KILLS);

    for i in (0..TENANTS).filter(|i| !is_deleted(*i)) {
        let _ = tenants
            .delete(&name(&run, i), &DeleteParams::default())
            .await;
    }
    let mut cleanup = Operator::start(&run, &auth.url());
    cleanup.wait_ready().await;
    for i in (0..TENANTS).filter(|i| !is_deleted(*i)) {
        wait_until_gone(&tenants, &name(&run, i), Duration::from_secs(300)).await;
    }
    cleanup.kill();
}
