//! Leader election: of two operator processes on one Lease, exactly one reconciles; the
//! other waits, not ready, and takes over when the leader dies (after the lease expires),
//! shuts down (at once: it releases the lease) or loses the lease (it exits).
//!
//! Each process here has its own journal, so a new leader starts with an empty journal for
//! tenants the old one journaled: it walks them through the machine again from `New`
//! (finding their objects in place) and carries on. In production both replicas would
//! share the one journal on the PVC, and the Deployment (`Recreate`, one replica) never
//! runs two at once.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use neurallog_auth_stub::AuthStubHandle;
use neurallog_operator::crd::Tenant;
use serde_json::json;
use std::time::{Duration, Instant};

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
const LEASE_NAME: &str = "neurallog-operator";
/// Short timings, so the test takes seconds: duration > renew deadline > retry period.
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_secs(1);
/// What the test's own observation adds to a takeover time: its poll interval (200 ms)
/// and round trips to an API server that shares two cores with everything else.
const MEASUREMENT_SLACK: Duration = Duration::from_secs(1);

/// Candidates for one lease, in a namespace of their own (deleted at the end).
struct Election {
    client: Client,
    run: String,
    namespace: String,
    auth: AuthStubHandle,
}

impl Election {
    async fn new(prefix: &str) -> Election {
        let client = client().await;
        install_crd(&client).await;
        let run = unique(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": run}})).expect("a namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("the lease namespace is created");
        Election {
            client,
            namespace: run.clone(),
            run,
            auth: auth_stub().await,
        }
    }

    fn identity(&self, candidate: &str) -> String {
        format!("{}-{candidate}", self.run)
    }

    fn options(&self, candidate: &str) -> OperatorOptions {
        let seconds = |d: Duration| d.as_secs_f64().to_string();
        OperatorOptions {
            kubeconfig: None,
            args: vec![
                "--leader-election".into(),
                "--lease-namespace".into(),
                self.namespace.clone(),
                "--lease-name".into(),
                LEASE_NAME.into(),
                "--identity".into(),
                self.identity(candidate),
                "--lease-duration-seconds".into(),
                LEASE_DURATION.as_secs().to_string(),
                "--lease-renew-deadline-seconds".into(),
                seconds(RENEW_DEADLINE),
                "--lease-retry-period-seconds".into(),
                seconds(RETRY_PERIOD),
            ],
            name: Some(candidate.into()),
        }
    }

    /// A candidate; every candidate of the election serves the same tenants.
    fn start(&self, candidate: &str) -> Operator {
        Operator::start_with_options(&self.run, &self.auth.url(), &self.options(candidate))
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn holder(&self) -> Option<String> {
        let lease = self.leases().get_opt(LEASE_NAME).await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Waits until one of `candidates` holds the lease; returns its index.
    async fn wait_for_leader(&self, candidates: &[&str]) -> usize {
        let identities: Vec<String> = candidates.iter().map(|c| self.identity(c)).collect();
        wait_for("a leader to be elected", PROVISION, || {
            let identities = identities.clone();
            async move {
                let holder = self.holder().await?;
                identities.iter().position(|i| *i == holder)
            }
        })
        .await
    }

    async fn wait_for_holder(&self, identity: &str, timeout: Duration) {
        wait_for(
            &format!("{identity} to hold the lease"),
            timeout,
            || async { (self.holder().await.as_deref() == Some(identity)).then_some(()) },
        )
        .await;
    }

    fn tenants(&self) -> Api<Tenant> {
        Api::all(self.client.clone())
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        let (ok, _, stderr) = kubectl_stdin(
            &[
                "delete",
                "namespace",
                &self.namespace,
                "--ignore-not-found",
                "--wait=false",
            ],
            "",
        );
        if !ok {
            eprintln!(
                "cleanup: cannot delete namespace {}: {stderr}",
                self.namespace
            );
        }
    }
}

/// The leader runs the controller (ready, gauge 1); the follower does not (503, gauge 0).
async fn assert_one_active(leader: &Operator, follower: &Operator) {
    leader.wait_ready().await;
    assert!(
        !follower.is_ready().await,
        "a follower must not report ready"
    );
    assert_eq!(leader.counter("neurallog_leader ").await, 1.0);
    assert_eq!(follower.counter("neurallog_leader ").await, 0.0);
}

async fn wait_for_server_replicas(client: &Client, tenant: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let name = format!("{tenant}-server");
    wait_for(
        &format!("{name} to have {replicas} replicas"),
        PROVISION,
        || {
            let api = deployments.clone();
            let name = name.clone();
            async move {
                (api.get(&name).await.ok()?.spec?.replicas == Some(replicas)).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_duration_and_tenants_keep_reconciling() {
    let election = Election::new("leader").await;
    let name = election.run.clone();
    let _leftovers = TenantCleanup(vec![name.clone()]);
    let mut candidates = [election.start("a"), election.start("b")];
    let leader = election.wait_for_leader(&["a", "b"]).await;
    let follower = 1 - leader;
    let follower_identity = election.identity(["a", "b"][follower]);
    assert_one_active(&candidates[leader], &candidates[follower]).await;

    let mut tenant = tenant_from_yaml(BASIC, &name, &election.run);
    apply_tenant(&election.client, &tenant).await;
    wait_for_phase(&election.client, &name, "Running", PROVISION).await;
    assert!(
        !candidates[follower].is_ready().await,
        "the follower is still waiting"
    );

    candidates[leader].kill();
    let killed = Instant::now();
    let bound = LEASE_DURATION + RETRY_PERIOD + MEASUREMENT_SLACK;
    election
        .wait_for_holder(&follower_identity, bound + Duration::from_secs(10))
        .await;
    let lease_taken = killed.elapsed();
    candidates[follower].wait_ready().await;
    let ready = killed.elapsed();
    println!(
        "takeover after kill -9 of the leader: lease held by the follower after {lease_taken:?}, \
         follower ready after {ready:?} (lease duration {LEASE_DURATION:?}, retry period \
         {RETRY_PERIOD:?})"
    );
    assert!(
        lease_taken <= bound,
        "takeover took {lease_taken:?}, more than the lease duration + retry period ({:?}) \
         + {MEASUREMENT_SLACK:?} of measurement",
        LEASE_DURATION + RETRY_PERIOD
    );

    // The new leader reconciles: an update takes effect, and deletion completes.
    tenant.spec.server.replicas = 2;
    apply_tenant(&election.client, &tenant).await;
    wait_for_server_replicas(&election.client, &name, 2).await;
    wait_for_phase(&election.client, &name, "Running", PROVISION).await;
    election
        .tenants()
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&election.tenants(), &name, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_releases_the_lease_and_the_follower_takes_over_at_once() {
    let election = Election::new("handover").await;
    let mut candidates = [election.start("a"), election.start("b")];
    let leader = election.wait_for_leader(&["a", "b"]).await;
    let follower = 1 - leader;
    assert_one_active(&candidates[leader], &candidates[follower]).await;

    let stopping = Instant::now();
    let status = candidates[leader].terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "a graceful shutdown exits 0: {status}");
    election
        .wait_for_holder(
            &election.identity(["a", "b"][follower]),
            LEASE_DURATION + Duration::from_secs(10),
        )
        .await;
    let handed_over = stopping.elapsed();
    println!("handover after SIGTERM of the leader: {handed_over:?}");
    // Without the release the follower would wait for expiry: at least the lease duration
    // after it last saw a renewal, which was at most a retry period before the SIGTERM.
    assert!(
        handed_over < LEASE_DURATION - RETRY_PERIOD,
        "a released lease is taken at once, not after expiry: {handed_over:?}"
    );
    candidates[follower].wait_ready().await;
    assert!(
        candidates[leader]
            .log_text()
            .contains("released the leader lease")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_stops_reconciling_and_exits() {
    let election = Election::new("usurped").await;
    let mut leader = election.start("a");
    election
        .wait_for_holder(&election.identity("a"), PROVISION)
        .await;
    leader.wait_ready().await;

    // Someone else writes the lease (as a partitioned leader's successor would).
    let mut lease = election.leases().get(LEASE_NAME).await.expect("the lease");
    let spec = lease.spec.as_mut().expect("a lease spec");
    spec.holder_identity = Some("usurper".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    election
        .leases()
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
        .expect("the lease is taken over");

    let status = wait_for(
        "the usurped leader to exit",
        RETRY_PERIOD * 2 + MEASUREMENT_SLACK,
        || {
            let status = leader.exit_status();
            async move { status }
        },
    )
    .await;
    assert_eq!(status.code(), Some(1), "losing the lease is an error exit");
    assert!(leader.log_text().contains("lost the leader lease"));
}
