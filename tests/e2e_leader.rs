//! Leader election: of two operator processes on one Lease, exactly one reconciles; the
//! other waits, not ready, and takes over when the leader dies (after the lease expires),
//! shuts down (at once: it releases the lease) or loses the lease (it exits).
//!
//! Each process here has its own journal. Without `--journal-follow` a new leader starts
//! with an empty journal for tenants the old one journaled, which its start-up check finds
//! behind the Tenants' statuses (and replaces). With it, the waiting replica keeps a copy
//! of the leader's journal, and a takeover continues the same chains.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use neurallog_auth_stub::AuthStubHandle;
use neurallog_operator::crd::Tenant;
use neurallog_operator::journal::client::Source;
use neurallog_operator::journal::{Digest, Record, TenantSummary};
use serde_json::json;
use std::collections::BTreeMap;
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

    /// A candidate that follows the leader's journal while it waits.
    fn start_following(&self, candidate: &str) -> Operator {
        let mut options = self.options(candidate);
        options
            .args
            .extend(["--journal-follow", "--journal-follow-interval-ms", "100"].map(String::from));
        Operator::start_with_options(&self.run, &self.auth.url(), &options)
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

/// The chain heads of an operator's journal, through its journal API.
async fn journal_heads(operator: &Operator) -> Option<Vec<TenantSummary>> {
    let response = reqwest::get(format!("{}/journal/tenants", operator.metrics_url))
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Waits until `standby` has imported every record the leader's journal holds, and the
/// leader's chain heads are `wanted`. Returns those heads.
async fn caught_up(
    leader: &Operator,
    standby: &Operator,
    what: &str,
    wanted: impl Fn(&[TenantSummary]) -> bool,
) -> Vec<TenantSummary> {
    wait_for(
        &format!("the standby to have every record of the leader's journal, {what}"),
        PROVISION,
        || async {
            let heads = journal_heads(leader).await?;
            let total: u64 = heads.iter().map(|h| h.last_seq).sum();
            let imported = standby
                .counter("neurallog_journal_follow_records_total")
                .await;
            (total > 0 && imported == total as f64 && wanted(&heads)).then_some(heads)
        },
    )
    .await
}

/// Some tenant is still provisioning: its last record is neither Running nor failed.
fn provisioning(heads: &[TenantSummary]) -> bool {
    heads
        .iter()
        .any(|h| h.last_phase.as_str() != "Running" && !h.last_phase.is_warning())
}

/// A transition Event's chain label (`None`: the original chain) and seq.
type EventKey = (Option<String>, u64);

/// The transition Events of the Tenant `uid`: (chain, seq) -> (count, reason).
async fn transition_events(client: &Client, uid: &str) -> BTreeMap<EventKey, (usize, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
    let mut found = BTreeMap::new();
    for event in events.list(&params).await.expect("list Events").items {
        let name = event.metadata.name.clone().unwrap_or_default();
        if !is_transition_event_name(&name) {
            continue;
        }
        // <tenant>.<uid8>[.<chain>].t<seq>
        let parts: Vec<&str> = name.split('.').collect();
        let seq: u64 = parts[parts.len() - 1][1..].parse().expect("a seq number");
        let chain = (parts.len() == 4).then(|| parts[2].to_owned());
        let entry = found.entry((chain, seq)).or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = event.reason.unwrap_or_default();
    }
    found
}

/// Each record links to the one before it, from seq 1 on.
fn assert_continuous_from_one(tenant: &str, records: &[Record]) {
    let mut prev = Digest::ZERO;
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq,
            i as u64 + 1,
            "tenant {tenant}: a gap before {}",
            record.seq
        );
        assert_eq!(
            record.prev_hash, prev,
            "tenant {tenant}: seq {} does not link",
            record.seq
        );
        assert_eq!(
            record.recompute_hash(),
            record.hash,
            "tenant {tenant}: seq {}",
            record.seq
        );
        prev = record.hash;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_the_leaders_journal_and_a_kill_9_takeover_continues_its_chains() {
    const TENANTS: usize = 4;
    let election = Election::new("follow").await;
    let names: Vec<String> = (0..TENANTS)
        .map(|i| format!("{}-{i}", election.run))
        .collect();
    let _leftovers = TenantCleanup(names.clone());
    let mut candidates = [election.start_following("a"), election.start_following("b")];
    let leader = election.wait_for_leader(&["a", "b"]).await;
    let standby = 1 - leader;
    assert_one_active(&candidates[leader], &candidates[standby]).await;
    let lease = election.leases().get(LEASE_NAME).await.expect("the lease");
    assert_eq!(
        lease
            .metadata
            .annotations
            .unwrap_or_default()
            .get("neurallog.io/journal-url"),
        Some(&candidates[leader].metrics_url),
        "the leader advertises its journal API on the lease"
    );

    for name in &names {
        apply_tenant(
            &election.client,
            &tenant_from_yaml(BASIC, name, &election.run),
        )
        .await;
    }
    let heads = caught_up(
        &candidates[leader],
        &candidates[standby],
        "while a tenant provisions",
        provisioning,
    )
    .await;
    candidates[leader].kill();
    let provisioning: Vec<String> = heads
        .iter()
        .filter(|h| h.last_phase.as_str() != "Running")
        .map(|h| {
            format!(
                "{} at seq {} ({})",
                h.tenant,
                h.last_seq,
                h.last_phase.as_str()
            )
        })
        .collect();
    println!("killed the leader (SIGKILL) while provisioning: {provisioning:?}");

    election
        .wait_for_holder(&election.identity(["a", "b"][standby]), PROVISION)
        .await;
    let new_leader = &candidates[standby];
    new_leader.wait_ready().await;
    let source = Source::server(&new_leader.metrics_url).expect("the journal API URL");
    for name in &names {
        let tenant = wait_for_phase(&election.client, name, "Running", PROVISION).await;
        let position = tenant
            .status
            .as_ref()
            .and_then(|s| s.journal.clone())
            .expect("a journal position in the status");
        assert_eq!(
            position.chain, None,
            "tenant {name}: the new leader's journal is the original chain, not a replacement"
        );
        let history = source.history(name, None).await.expect("the chain");
        let records = history.records;
        assert_continuous_from_one(name, &records);
        let last = records.last().expect("records");
        assert_eq!(
            (position.sequence, position.hash.as_str()),
            (last.seq, last.hash.to_hex().as_str()),
            "tenant {name}: the status names the chain's last record"
        );
        // What the old leader had journaled is the start of the new leader's chain.
        let old = heads
            .iter()
            .find(|h| h.tenant == *name)
            .expect("the tenant was in the old leader's journal");
        assert_eq!(history.uid, old.uid);
        let at_kill = &records[usize::try_from(old.last_seq).expect("seq") - 1];
        assert_eq!(
            at_kill.hash, old.last_hash,
            "tenant {name}: the new leader's record {} is the old leader's",
            old.last_seq
        );
        let uid = tenant.metadata.uid.clone().expect("a uid");
        one_event_per_record(&election.client, name, &uid, None, &records).await;
    }
    let verified = source.verify(|_| {}).await.expect("verify answers");
    assert!(verified.is_ok(), "{verified:?}");
    let log = new_leader.log_text();
    assert!(
        !log.contains("the journal was damaged"),
        "no recovery on takeover"
    );
    assert!(!log.contains("no longer following"), "no refused record");
}

/// Waits until the transition Events of chain `chain` of the Tenant `uid` are exactly one
/// per record of `records`, each saying its phase (and none of that chain beyond them).
async fn one_event_per_record(
    client: &Client,
    name: &str,
    uid: &str,
    chain: Option<&str>,
    records: &[Record],
) {
    let expected: BTreeMap<EventKey, (usize, String)> = records
        .iter()
        .map(|r| {
            (
                (chain.map(String::from), r.seq),
                (1, r.to.as_str().to_owned()),
            )
        })
        .collect();
    wait_for(
        &format!("tenant {name}: one transition Event per journal record of chain {chain:?}"),
        Duration::from_secs(30),
        || async {
            let mut events = transition_events(client, uid).await;
            events.retain(|(c, _), _| c.as_deref() == chain);
            (events == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_the_standby_missed_is_found_at_takeover_and_recorded_not_journaled_again() {
    let election = Election::new("missed").await;
    let (synced, missed) = (format!("{}-0", election.run), format!("{}-1", election.run));
    let _leftovers = TenantCleanup(vec![synced.clone(), missed.clone()]);
    let mut candidates = [election.start_following("a"), election.start_following("b")];
    let leader = election.wait_for_leader(&["a", "b"]).await;
    let standby = 1 - leader;
    assert_one_active(&candidates[leader], &candidates[standby]).await;

    apply_tenant(
        &election.client,
        &tenant_from_yaml(BASIC, &synced, &election.run),
    )
    .await;
    caught_up(
        &candidates[leader],
        &candidates[standby],
        "with a tenant",
        |h| !h.is_empty(),
    )
    .await;
    // The standby stops polling; what the leader journals now, it misses.
    candidates[standby].signal("STOP");
    apply_tenant(
        &election.client,
        &tenant_from_yaml(BASIC, &missed, &election.run),
    )
    .await;
    let witnessed = wait_for(
        "the missed tenant's status to name a record",
        PROVISION,
        || async {
            let tenant = election.tenants().get_opt(&missed).await.ok()??;
            tenant.status?.journal.filter(|j| j.sequence >= 1)
        },
    )
    .await;
    candidates[leader].kill();
    candidates[standby].signal("CONT");
    let old_journal = Source::file(candidates[leader].journal_path()).expect("the old journal");
    let old_chain = old_journal
        .history(&missed, None)
        .await
        .expect("the chain")
        .records;
    assert!(old_chain.len() as u64 >= witnessed.sequence);

    election
        .wait_for_holder(&election.identity(["a", "b"][standby]), PROVISION)
        .await;
    let new_leader = &candidates[standby];
    new_leader.wait_ready().await;
    let log = new_leader.log_text();
    assert!(
        log.contains("the journal was damaged") && log.contains("its tail was lost"),
        "the start-up check finds the missed tail"
    );
    let journal = new_leader.journal_path();
    let kept_aside = std::fs::read_dir(journal.parent().expect("a parent"))
        .expect("the journal's directory")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal.damaged-")
        });
    assert!(kept_aside, "the copy that missed the tail is kept aside");

    let source = Source::server(&new_leader.metrics_url).expect("the journal API URL");
    let tenant = wait_for_phase(&election.client, &missed, "Running", PROVISION).await;
    let position = tenant
        .status
        .as_ref()
        .and_then(|s| s.journal.clone())
        .expect("a position");
    let label = position
        .chain
        .clone()
        .expect("a new chain label after the recovery");
    let uid = tenant.metadata.uid.clone().expect("a uid");
    let records = source
        .history(&missed, None)
        .await
        .expect("the chain")
        .records;
    assert_continuous_from_one(&missed, &records);
    assert_eq!(position.sequence, records.last().expect("records").seq);
    one_event_per_record(&election.client, &missed, &uid, Some(&label), &records).await;
    // The old chain's Events are the old leader's, one per record at most: nothing of the
    // old chain was journaled or sent again.
    let events = transition_events(&election.client, &uid).await;
    for ((chain, seq), (count, reason)) in &events {
        if chain.is_none() {
            let old = old_chain
                .iter()
                .find(|r| r.seq == *seq)
                .unwrap_or_else(|| panic!("an Event of seq {seq}, which the old chain lacks"));
            assert_eq!((*count, reason.as_str()), (1, old.to.as_str()));
        }
    }
    wait_for(
        "the JournalRecovered Event",
        Duration::from_secs(30),
        || async {
            let events: Api<Event> = Api::namespaced(election.client.clone(), "default");
            let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
            let list = events.list(&params).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("JournalRecovered"))
                .then_some(())
        },
    )
    .await;
    let verified = source.verify(|_| {}).await.expect("verify answers");
    assert!(verified.is_ok(), "{verified:?}");
}
