//! The pass, scenario by scenario, with the exact requests each pass makes.

use super::fixtures::*;
use crate::controller::observation::AuthState;
use crate::controller::{FINALIZER, JOURNAL_UNWRITABLE};
use crate::journal::testing::TO_RUNNING;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use neurallog_auth_stub::Faults;
use neurallog_machines::{Phase, Trigger};
use std::time::Duration;

/// The triggers that bring a new tenant to ProvisioningServer.
const TO_PROVISIONING_SERVER: &[Trigger] = &[
    Trigger::Observed,
    Trigger::NamespaceReady,
    Trigger::RedisReady,
];

/// How soon the pass after one that made the next transition possible comes.
const NEXT_TRANSITION: Duration = Duration::from_millis(100);

/// How soon a Running tenant is looked at again without a change.
const RUNNING_RECHECK: Duration = Duration::from_secs(600);

/// How soon a pass follows one that could not write an Event.
const EVENT_RETRY: Duration = Duration::from_secs(5);

/// How soon a Deleting tenant is looked at again (the namespace controller can take a while).
const DELETING_RECHECK: Duration = Duration::from_secs(5);

/// What a new tenant's first pass asks of the API server: Pending journaled and told, the
/// finalizer, the namespace, the status.
fn first_pass() -> Vec<Exchange> {
    vec![
        // Not in the (label-selected) cache: a foreign namespace would carry no label.
        get_namespace(),
        transition_event(1, Phase::Pending),
        patch_finalizers("1", &[FINALIZER]),
        create_namespace(),
        event("Normal", "Created").with("/message", "Created namespace tenant-my-tenant"),
        patch_status("Pending").with("/status/journal/sequence", 1),
    ]
}

fn phase_and_seq(record: &crate::journal::Record) -> (Phase, u64) {
    (record.to, record.seq)
}

#[tokio::test]
async fn a_first_pass_journals_pending_then_takes_the_finalizer_and_creates_the_namespace() {
    let mut fx = Fixture::new(tenant()).await;
    let action = fx.pass(first_pass()).await.expect("the pass succeeds");
    assert_eq!(
        action,
        Action::requeue(NEXT_TRANSITION),
        "the namespace is there: NamespaceReady is next"
    );
    let tail = fx.tail();
    assert_eq!(
        (tail.from, tail.to, tail.seq),
        (Phase::New, Phase::Pending, 1)
    );
    assert_eq!(fx.api.tenant().finalizers(), [FINALIZER]);
}

#[tokio::test]
async fn the_watch_events_of_the_passs_own_tenant_writes_are_recognised_once() {
    let mut fx = Fixture::new(tenant()).await;
    let before = fx.api.tenant();
    fx.pass(first_pass()).await.expect("the pass succeeds");
    let at = |version: &str| {
        let mut tenant = fx.api.tenant();
        tenant.metadata.resource_version = Some(version.into());
        tenant
    };
    // The stored Tenant went 1 -> 2 (finalizer patch) -> 3 (status patch).
    assert_eq!(fx.api.tenant().resource_version().as_deref(), Some("3"));
    assert!(
        !fx.ctx.is_own_write_echo(&before),
        "the version the pass read"
    );
    assert!(
        fx.ctx.is_own_write_echo(&at("2")),
        "the finalizer patch's event"
    );
    assert!(
        fx.ctx.is_own_write_echo(&at("3")),
        "the status patch's event"
    );
    assert!(
        !fx.ctx.is_own_write_echo(&at("3")),
        "a relist bringing it again"
    );
    assert!(!fx.ctx.is_own_write_echo(&at("4")), "someone else's change");
}

#[tokio::test]
async fn the_status_a_pass_patched_is_forgotten_once_the_watch_moves_past_its_version() {
    let mut fx = Fixture::new(tenant()).await;
    fx.pass(first_pass()).await.expect("the pass succeeds");
    let tenant = fx.api.tenant();
    let kept = || fx.ctx.memo(&tenant, |m| m.status_patched_from.clone());
    let from = kept()
        .expect("the patch's status is kept while the watch lags")
        .0;
    let at = |version: &str| {
        let mut tenant = fx.api.tenant();
        tenant.metadata.resource_version = Some(version.into());
        tenant
    };
    fx.ctx.is_own_write_echo(&at(&from));
    assert!(kept().is_some(), "the watch is still at the patch's base");
    fx.ctx.is_own_write_echo(&at("3"));
    assert_eq!(
        kept(),
        None,
        "the status patch's own event moved the watch past it"
    );
}

#[tokio::test]
async fn the_watch_event_of_the_namespace_a_pass_created_starts_no_second_pass() {
    let mut fx = Fixture::new(tenant()).await;
    let mut script = first_pass();
    script[3] = create_namespace().reply(Reply::CreatedNamespaceEchoedLater);
    let action = fx.pass(script).await.expect("the pass succeeds");
    assert_eq!(
        fx.api.namespace_passes,
        [false],
        "the namespace's event, at the version its create returned"
    );
    // The pass saw the namespace, and asks for the next one itself.
    assert_eq!(action, Action::requeue(NEXT_TRANSITION));
    assert_eq!(fx.ctx.own_writes.pending(), 0);
    // Someone else changes the namespace: a new version, a pass.
    let mut labelled = fx.api.cached_namespace();
    labelled["metadata"]["resourceVersion"] = "2".into();
    labelled["metadata"]["labels"]["team"] = "blue".into();
    fx.api.deliver_namespace(&labelled);
    assert_eq!(fx.api.namespace_passes, [false, true]);
}

#[tokio::test]
async fn the_watch_event_of_a_created_namespace_that_overtakes_the_answer_starts_no_pass() {
    let mut fx = Fixture::new(tenant()).await;
    let mut script = first_pass();
    script[3] = create_namespace().reply(Reply::CreatedNamespaceEchoedFirst);
    let action = fx.pass(script).await.expect("the pass succeeds");
    assert_eq!(
        fx.api.namespace_passes,
        [false],
        "parked until the answer named its version: the echo"
    );
    assert_eq!(action, Action::requeue(NEXT_TRANSITION));
    assert_eq!(fx.ctx.own_writes.pending(), 0, "nothing parked or expected");
    let mut labelled = fx.api.cached_namespace();
    labelled["metadata"]["resourceVersion"] = "2".into();
    labelled["metadata"]["labels"]["team"] = "blue".into();
    fx.api.deliver_namespace(&labelled);
    assert_eq!(fx.api.namespace_passes, [false, true], "a later change");
}

#[tokio::test]
async fn a_pass_expects_no_echo_of_its_writes_once_it_stops_waiting_for_the_caches() {
    let mut fx = Fixture::new(tenant()).await;
    fx.pass(first_pass()).await.expect("the pass succeeds");
    // Here the API server fills the cache before it answers: the namespace's event came
    // before the pass knew its version. Nothing stays expected after the pass.
    assert_eq!(fx.ctx.own_writes.pending(), 0);
}

#[tokio::test]
async fn a_settled_running_tenant_costs_no_request_at_all() {
    let mut fx = settled(&TO_RUNNING, AuthState::Registered).await;
    let action = fx.pass(vec![]).await.expect("the pass succeeds");
    assert_eq!(action, Action::requeue(RUNNING_RECHECK));
    assert_eq!(fx.ctx.metrics.total_writes(), 0);
    assert_eq!(fx.auth.calls().total, 0, "no Auth call either");
    assert_eq!(phase_and_seq(&fx.tail()), (Phase::Running, 4));
}

#[tokio::test]
async fn an_unwritable_journal_fails_the_pass_with_a_warning_on_the_tenant() {
    let mut fx = settled(&TO_RUNNING, AuthState::Registered).await;
    let status = fx.api.tenant().status;
    fx.break_journal();
    let error = fx
        .pass(vec![event("Warning", JOURNAL_UNWRITABLE)])
        .await
        .expect_err("the pass fails");
    assert_eq!(error.reason(), JOURNAL_UNWRITABLE);
    assert_eq!(
        fx.api.tenant().status,
        status,
        "the status is left as it was"
    );
}

#[tokio::test]
async fn a_failed_event_write_holds_nothing_and_is_retried_by_a_later_pass() {
    // A pass journaled Running, then stopped before mirroring it.
    let mut fx = settled(TO_PROVISIONING_SERVER, AuthState::Registered).await;
    fx.journal(Trigger::AllReady).await;
    let action = fx
        .pass(vec![
            transition_event(4, Phase::Running).reply(Reply::Failure(500, "InternalError")),
            patch_status("Running").with("/status/journal/sequence", 4),
        ])
        .await
        .expect("a failed Event does not fail the pass");
    assert_eq!(action, Action::requeue(EVENT_RETRY), "soon, for the Event");
    assert!(fx.ctx.events_behind(&fx.api.tenant()));

    // After a failed Event write the status no longer vouches for the earlier Events: the
    // retry writes the chain's Events from the first; those that exist answer
    // AlreadyExists, which counts as written.
    let exists = || Reply::Failure(409, "AlreadyExists");
    let action = fx
        .pass(vec![
            transition_event(1, Phase::Pending).reply(exists()),
            transition_event(2, Phase::ProvisioningRedis).reply(exists()),
            transition_event(3, Phase::ProvisioningServer).reply(exists()),
            transition_event(4, Phase::Running),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(RUNNING_RECHECK));
    assert!(!fx.ctx.events_behind(&fx.api.tenant()));
}

/// A tenant at ProvisioningServer whose objects are all ready, not registered with Auth
/// yet, and Auth down.
async fn waiting_for_auth_that_is_down() -> Fixture {
    let fx = settled(TO_PROVISIONING_SERVER, AuthState::Unknown).await;
    let down = Faults {
        down: true,
        ..Faults::default()
    };
    fx.auth.set_faults(down).await.expect("the stub goes down");
    fx
}

/// The status patch that tells of Auth being down: still ProvisioningServer.
fn status_auth_unavailable() -> Exchange {
    patch_status("ProvisioningServer")
        .with("/status/conditions/1/type", "Reconciling")
        .with("/status/conditions/1/reason", "AuthUnavailable")
}

#[tokio::test]
async fn auth_down_is_a_warning_and_a_retry_never_a_transition() {
    let mut fx = waiting_for_auth_that_is_down().await;
    let error = fx
        .pass(vec![
            event("Warning", "AuthUnavailable"),
            status_auth_unavailable(),
        ])
        .await
        .expect_err("the pass fails, for a retry with backoff");
    assert_eq!(error.reason(), "AuthUnavailable");
    assert_eq!(phase_and_seq(&fx.tail()), (Phase::ProvisioningServer, 3));

    fx.auth
        .set_faults(Faults::default())
        .await
        .expect("the stub comes back");
    let action = fx
        .pass(vec![
            patch_status("ProvisioningServer")
                .with("/status/conditions/1/reason", "ProvisioningServer"),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(NEXT_TRANSITION), "Running is next");
    assert_eq!(fx.auth.tenants(), ["my-tenant"]);
    assert_eq!(fx.auth.tenant_admin("my-tenant").as_deref(), Some(ADMIN));
    assert_eq!(
        phase_and_seq(&fx.tail()),
        (Phase::ProvisioningServer, 3),
        "the transition is the next pass's"
    );
}

#[tokio::test]
async fn a_deleted_tenant_is_torn_down_then_released() {
    let mut fx = settled(&TO_RUNNING, AuthState::Registered).await;
    fx.ctx
        .auth
        .register("my-tenant", ADMIN)
        .await
        .expect("registered");
    let mut deleted = fx.api.tenant();
    deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    fx.api.store_tenant(&deleted);

    let action = fx
        .pass(vec![
            transition_event(5, Phase::Deleting),
            delete_namespace(&namespace_uid()),
            patch_status("Deleting"),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(
        action,
        Action::requeue(DELETING_RECHECK),
        "still terminating"
    );
    assert_eq!(phase_and_seq(&fx.tail()), (Phase::Deleting, 5));
    assert!(fx.auth.tenants().is_empty(), "deregistered from Auth");

    fx.api.namespace_gone();
    let action = fx
        .pass(vec![
            get_namespace(),
            transition_event(6, Phase::Deleted),
            patch_finalizers("2", &[]),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::await_change());
    assert_eq!(phase_and_seq(&fx.tail()), (Phase::Deleted, 6));
    assert!(fx.api.tenant().finalizers().is_empty());
}

#[tokio::test]
async fn a_warning_event_that_could_not_be_written_is_sent_by_the_next_pass() {
    let mut fx = waiting_for_auth_that_is_down().await;
    let forbidden = Reply::Failure(403, "Forbidden");
    fx.pass(vec![
        event("Warning", "AuthUnavailable").reply(forbidden),
        status_auth_unavailable(),
    ])
    .await
    .expect_err("Auth is down");
    assert!(fx.ctx.events_behind(&fx.api.tenant()));

    // Auth is still down. The same cause makes no second Warning, but the one that could
    // not be written goes first thing; the status already tells.
    fx.pass(vec![event("Warning", "AuthUnavailable")])
        .await
        .expect_err("Auth is still down");
    assert!(!fx.ctx.events_behind(&fx.api.tenant()));
}

/// The Auth calls a pass made, in order: `(method, status)`.
fn auth_calls(fx: &Fixture) -> Vec<(String, u16)> {
    fx.auth
        .calls()
        .recent
        .into_iter()
        .map(|call| (call.method, call.status))
        .collect()
}

fn calls(expected: &[(&str, u16)]) -> Vec<(String, u16)> {
    expected.iter().map(|(m, s)| (m.to_string(), *s)).collect()
}

fn mark_deleted(fx: &mut Fixture) {
    let mut deleted = fx.api.tenant();
    deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    fx.api.store_tenant(&deleted);
}

#[tokio::test]
async fn a_free_name_is_checked_and_the_intent_journaled_before_it_is_registered() {
    let mut fx = settled(
        &[Trigger::Observed, Trigger::NamespaceReady],
        AuthState::Unknown,
    )
    .await;
    let action = fx
        .pass(vec![
            transition_event(3, Phase::ProvisioningServer),
            patch_status("ProvisioningServer")
                .with("/status/conditions/3/type", "AuthRegistered")
                .with("/status/conditions/3/reason", "Registered"),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(NEXT_TRANSITION), "Running is next");
    assert_eq!(auth_calls(&fx), calls(&[("GET", 200), ("POST", 201)]));
    let intent = fx.tail();
    assert_eq!(
        (intent.to, intent.input.trigger),
        (Phase::ProvisioningServer, Trigger::RedisReady)
    );
    assert!(neurallog_machines::intends_registration(&intent.outputs));
}

#[tokio::test]
async fn a_pass_whose_objects_already_allow_the_next_transition_takes_it_and_writes_status_once() {
    let mut fx = settled_taking(
        &[Trigger::Observed, Trigger::NamespaceReady],
        AuthState::Unknown,
        crate::controller::DEFAULT_TRANSITIONS_PER_PASS,
    )
    .await;
    // Redis is ready: the intent to register is journaled and carried out; the server's
    // objects are there and ready too, so the same pass goes on to Running. Each
    // transition has its Event, in order; the status is written once, for the last.
    let action = fx
        .pass(vec![
            transition_event(3, Phase::ProvisioningServer),
            transition_event(4, Phase::Running),
            patch_status("Running").with("/status/journal/sequence", 4),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(RUNNING_RECHECK));
    assert_eq!(auth_calls(&fx), calls(&[("GET", 200), ("POST", 201)]));
    let running = fx.tail();
    assert_eq!(phase_and_seq(&running), (Phase::Running, 4));
    assert_eq!(running.from, Phase::ProvisioningServer);
}

#[tokio::test]
async fn a_pass_that_finds_redis_ready_on_entering_provisioning_redis_asks_for_the_next_at_once() {
    // Redis was ready before the phase began (another replica provisioned it before a
    // takeover): no StatefulSet event will come to start the pass that checks the name.
    let mut fx = settled(&[Trigger::Observed], AuthState::Unknown).await;
    let action = fx
        .pass(vec![
            transition_event(2, Phase::ProvisioningRedis),
            patch_status("ProvisioningRedis").with("/status/journal/sequence", 2),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(
        action,
        Action::requeue(NEXT_TRANSITION),
        "the name check and the intent are next"
    );
    assert_eq!(auth_calls(&fx), calls(&[]));
}

#[tokio::test]
async fn a_name_auth_already_knows_fails_the_tenant_and_outlives_its_deletion() {
    let mut fx = settled(
        &[Trigger::Observed, Trigger::NamespaceReady],
        AuthState::Unknown,
    )
    .await;
    // Another cluster's tenant of the same name.
    fx.ctx
        .auth
        .register("my-tenant", "someone-else")
        .await
        .expect("registered");
    fx.auth.reset_calls();

    let action = fx
        .pass(vec![
            registration_exists_event(3),
            patch_status("Failed")
                .with("/status/conditions/2/type", "Stalled")
                .with("/status/conditions/2/reason", "RegistrationExists")
                .with("/status/conditions/3/type", "AuthRegistered")
                .with("/status/conditions/3/status", "False")
                .with("/status/conditions/3/reason", "RegistrationExists"),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "checked again"
    );
    let failed = fx.tail();
    assert_eq!(
        (failed.to, failed.input.trigger),
        (Phase::Failed, Trigger::RegistrationExists)
    );
    assert!(
        failed.message.contains("another name"),
        "{}",
        failed.message
    );
    assert_eq!(auth_calls(&fx), calls(&[("GET", 200)]), "never a POST");

    // Still taken: the recheck asks again and journals nothing.
    fx.auth.reset_calls();
    fx.pass(vec![]).await.expect("the pass succeeds");
    assert_eq!(auth_calls(&fx), calls(&[("GET", 200)]));
    assert_eq!(fx.tail().seq, 3);

    fx.auth.reset_calls();
    mark_deleted(&mut fx);
    fx.pass(vec![
        transition_event(4, Phase::Deleting),
        delete_namespace(&namespace_uid()),
        patch_status("Deleting").with("/status/conditions/3/reason", "RegistrationExists"),
    ])
    .await
    .expect("the pass succeeds");
    assert_eq!(
        auth_calls(&fx),
        calls(&[]),
        "no DELETE of someone else's name"
    );
    assert_eq!(fx.auth.tenants(), ["my-tenant"]);
    assert_eq!(
        fx.auth.tenant_admin("my-tenant").as_deref(),
        Some("someone-else")
    );
}

#[tokio::test]
async fn a_tenant_that_failed_before_registering_is_deleted_without_an_auth_call() {
    let mut fx = settled(&[Trigger::SpecInvalid], AuthState::Unknown).await;
    fx.ctx
        .auth
        .register("my-tenant", "someone-else")
        .await
        .expect("registered");
    fx.auth.reset_calls();
    mark_deleted(&mut fx);
    fx.pass(vec![
        transition_event(2, Phase::Deleting),
        delete_namespace(&namespace_uid()),
        patch_status("Deleting").with("/status/conditions/3/reason", "NotRegistered"),
    ])
    .await
    .expect("the pass succeeds");
    assert_eq!(auth_calls(&fx), calls(&[]));
    assert_eq!(fx.auth.tenants(), ["my-tenant"]);
}

/// The process died after Auth registered the name and before it learned so: after the
/// restart (nothing remembered) the `POST` answers 409, which the journaled intent makes
/// this tenant's own; deleting the Tenant then deregisters it.
#[tokio::test]
async fn a_409_after_the_journaled_intent_is_the_tenants_own_registration() {
    let mut fx = settled(TO_PROVISIONING_SERVER, AuthState::Unknown).await;
    fx.ctx
        .auth
        .register("my-tenant", ADMIN)
        .await
        .expect("registered before the crash");
    fx.auth.reset_calls();

    let action = fx
        .pass(vec![
            patch_status("ProvisioningServer")
                .with("/status/conditions/3/status", "True")
                .with("/status/conditions/3/reason", "Registered"),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(NEXT_TRANSITION), "Running is next");
    assert_eq!(auth_calls(&fx), calls(&[("POST", 409)]));

    fx.auth.reset_calls();
    mark_deleted(&mut fx);
    fx.pass(vec![
        transition_event(4, Phase::Deleting),
        delete_namespace(&namespace_uid()),
        patch_status("Deleting"),
    ])
    .await
    .expect("the pass succeeds");
    assert_eq!(auth_calls(&fx), calls(&[("DELETE", 200)]));
    assert!(fx.auth.tenants().is_empty(), "deregistered");
}

#[tokio::test]
async fn a_paused_tenant_journals_the_pause_writes_nothing_and_resumes_from_pending() {
    use crate::controller::pause::PAUSED_ANNOTATION;
    let mut fx = settled(&TO_RUNNING, AuthState::Registered).await;
    let mut tenant = fx.api.tenant();
    tenant
        .annotations_mut()
        .insert(PAUSED_ANNOTATION.into(), "true".into());
    fx.api.store_tenant(&tenant);
    let action = fx
        .pass(vec![
            transition_event(5, Phase::Paused).with(
                "/message",
                "Tenant is paused: the operator changes none of its resources until it is \
                 resumed with `kubectl annotate tenant my-tenant neurallog.io/paused-`",
            ),
            patch_status("Paused")
                .with("/status/journal/sequence", 5)
                .with("/status/conditions/4/type", "Paused")
                .with("/status/conditions/4/status", "True"),
        ])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(RUNNING_RECHECK));
    assert_eq!(phase_and_seq(&fx.tail()), (Phase::Paused, 5));

    // Drift meanwhile: the namespace is gone. The pass only reads.
    fx.api.namespace_gone();
    let writes = fx.ctx.metrics.total_writes();
    let action = fx
        .pass(vec![get_namespace(), get_namespace()])
        .await
        .expect("the pass succeeds");
    assert_eq!(action, Action::requeue(RUNNING_RECHECK));
    assert_eq!(fx.ctx.metrics.total_writes(), writes, "no write at all");
    assert_eq!(fx.auth.calls().total, 0, "no Auth call");
    assert_eq!(phase_and_seq(&fx.tail()), (Phase::Paused, 5));

    let mut tenant = fx.api.tenant();
    tenant.annotations_mut().remove(PAUSED_ANNOTATION);
    fx.api.store_tenant(&tenant);
    fx.pass(vec![
        get_namespace(),
        resumed_event(6),
        create_namespace(),
        event("Normal", "Created").with("/message", "Created namespace tenant-my-tenant"),
        patch_status("Pending").with("/status/journal/sequence", 6),
    ])
    .await
    .expect("the pass succeeds");
    let resumed = fx.tail();
    assert_eq!(
        (resumed.from, resumed.to, resumed.seq, resumed.input.trigger),
        (Phase::Paused, Phase::Pending, 6, Trigger::ResumeRequested)
    );
}
