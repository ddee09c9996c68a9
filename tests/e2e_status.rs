//! Status tells the truth when things go wrong, read the way a user reads it: `kubectl
//! apply` refusing what can never run, `kubectl describe` telling the story in order, and
//! every failure the operator meets (a refused write, a pod that cannot be scheduled,
//! pulled or kept running, a namespace conflict) on the Tenant, with recovery journaled.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use neurallog_operator::crd::{MAX_TENANT_NAME_LEN, Tenant};
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
/// The progress deadline the failure tests give the operator (the default is 10 minutes).
const DEADLINE_SECONDS: &str = "15";
/// Images the local cluster's kwok stages treat as a kubelet would a failing one.
const MISSING_IMAGE: &str = "registry.invalid/neurallog/no-such-image:1";
const CRASHING_IMAGE: &str = "registry.invalid/neurallog/crashes:1";

async fn env(prefix: &str, args: &[&str]) -> OperatorEnv {
    OperatorEnv::start_with_args(prefix, args).await
}

fn tenants(client: &Client) -> Api<Tenant> {
    Api::all(client.clone())
}

/// `kubectl apply` of a tenant manifest: (accepted, stderr).
fn kubectl_apply(name: &str, run: &str, spec: &str) -> (bool, String) {
    let manifest = format!(
        "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata:\n  name: {name}\n  labels:\n    {RUN_LABEL}: {run}\nspec:\n{spec}"
    );
    let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &manifest);
    (ok, stderr)
}

/// The messages of the Events section of `kubectl describe tenant`, in the order shown.
fn described_event_messages(name: &str) -> Vec<String> {
    let described = kubectl(&["describe", "tenant", name]);
    let events = described
        .split("\nEvents:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section:\n{described}"));
    events
        .lines()
        .filter_map(|line| line.split_once("tenant-controller"))
        .map(|(_, message)| message.trim().to_string())
        .collect()
}

/// The `reason` of the `kubectl describe tenant` Events with type Warning.
fn described_warnings(name: &str) -> Vec<String> {
    let described = kubectl(&["describe", "tenant", name]);
    described
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Warning"))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_string))
        .collect()
}

fn condition(tenant: &Tenant, type_: &str) -> (String, String, String) {
    tenant
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Waits until the tenant's status (for its current generation) satisfies `check`.
async fn wait_for_status(
    client: &Client,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Tenant) -> bool,
) -> Tenant {
    let api = tenants(client);
    let check = &check;
    wait_for(&format!("tenant {name}: {what}"), timeout, || {
        let api = api.clone();
        async move {
            let t = api.get_opt(name).await.ok()??;
            let current = t.status.as_ref()?.observed_generation == t.metadata.generation;
            (current && check(&t)).then_some(t)
        }
    })
    .await
}

fn phase_of(tenant: &Tenant) -> &str {
    tenant
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The PHASE column of `kubectl get tenant`.
fn printed_phase(name: &str) -> String {
    let listing = kubectl(&["get", "tenant", name, "--no-headers"]);
    listing
        .split_whitespace()
        .rev()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_admitted_name_runs_and_admission_names_the_limit() {
    let env = env("names", &[]).await;
    let longest: String = format!("{}-{}", env.run, "x".repeat(MAX_TENANT_NAME_LEN))
        .chars()
        .take(MAX_TENANT_NAME_LEN)
        .collect();
    let _cleanup = TenantCleanup(vec![longest.clone()]);
    assert_eq!(longest.len(), 46);
    let (ok, stderr) = kubectl_apply(&longest, &env.run, "  displayName: Longest\n");
    assert!(ok, "{stderr}");
    // Running needs the Redis pod, which the StatefulSet controller creates only if its
    // controller-revision-hash label (<name>-redis-<hash>) fits in 63 characters.
    wait_for_phase(&env.client, &longest, "Running", PROVISION).await;
    assert_eq!(printed_phase(&longest), "Running");

    let too_long = format!("{longest}x");
    let (ok, stderr) = kubectl_apply(&too_long, &env.run, "  displayName: Too long\n");
    assert!(!ok, "a 47-character name was admitted");
    assert!(
        stderr.contains("a tenant name is at most 46 characters")
            && stderr.contains("<revision hash of up to 10 characters>"),
        "{stderr}"
    );
    let leading_digit = format!("7{}", &env.run[1..]);
    let (ok, stderr) = kubectl_apply(&leading_digit, &env.run, "  displayName: Digit\n");
    assert!(!ok, "a name with a leading digit was admitted");
    assert!(
        stderr.contains("must start with a lower-case letter"),
        "{stderr}"
    );

    kubectl(&["delete", "tenant", &longest, "--wait=false"]);
    wait_until_gone(&tenants(&env.client), &longest, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_tells_the_story_in_causal_order() {
    let env = env("story", &[]).await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    let expected = [
        "Tenant accepted; creating its namespace".to_string(),
        format!("Created namespace tenant-{name}"),
        "Namespace is ready; provisioning Redis".into(),
        "Created Redis ConfigMap".into(),
        "Created Redis Service".into(),
        "Created Redis StatefulSet".into(),
        "Redis is ready; provisioning the server".into(),
        "Created Server Service".into(),
        "Created Server Deployment".into(),
        "Tenant is running".into(),
    ];
    let described = described_event_messages(&name);
    assert_eq!(
        described, expected,
        "kubectl describe shows the Events out of order"
    );
    kubectl(&["delete", "tenant", &name, "--wait=false"]);
    wait_until_gone(&tenants(&env.client), &name, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_stalls_at_once_with_the_api_servers_words_and_recovers() {
    let env = env("refused", &[]).await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let policy = deny_server_services(&name);
    let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &policy);
    assert!(ok, "{stderr}");
    wait_until_server_services_are_refused(&name).await;
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;

    let stalled = wait_for_status(&env.client, &name, "Stalled", PROVISION, |t| {
        phase_of(t) == "Stalled"
    })
    .await;
    let (status, reason, message) = condition(&stalled, "Stalled");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "WriteRefused"));
    assert!(
        message.contains(&format!("Service {name}-server"))
            && message.contains("server Services are not allowed in this namespace (e2e policy)"),
        "{message}"
    );
    assert_eq!(condition(&stalled, "Ready").0, "False");
    assert_eq!(printed_phase(&name), "Stalled");
    let warnings = described_warnings(&name);
    assert!(
        warnings.iter().any(|w| w == "WriteRefused") && warnings.iter().any(|w| w == "Stalled"),
        "describe shows the Warnings {warnings:?}"
    );

    // The policy goes; any change of the Tenant brings a pass at once.
    let (ok, _, stderr) = kubectl_stdin(&["delete", "-f", "-"], &policy);
    assert!(ok, "{stderr}");
    let nudges = std::sync::atomic::AtomicU32::new(0);
    wait_for("the fixed tenant to run", PROVISION, || {
        let api = tenants(&env.client);
        let name = name.clone();
        // A new value each time: a patch that changes nothing brings no watch event.
        let n = nudges.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nudge =
            serde_json::json!({"metadata": {"annotations": {"e2e.neurallog.io/nudge": n.to_string()}}});
        async move {
            // Policy removal reaches the API server's admission after a moment; nudging
            // again until then is what a user retrying would do.
            let t = api.get(&name).await.ok()?;
            if phase_of(&t) == "Running" {
                return Some(());
            }
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&nudge))
                .await
            {
                eprintln!("nudge failed: {e}");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            None
        }
    })
    .await;
    let recovered = wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    assert_eq!(condition(&recovered, "Stalled").0, "False");
    let journal = kubectl_stdin(&["describe", "tenant", &name], "").1;
    assert!(journal.contains("Tenant is running"), "{journal}");
    kubectl(&["delete", "tenant", &name, "--wait=false"]);
    wait_until_gone(&tenants(&env.client), &name, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failures_name_the_pod_and_stall_after_the_deadline_then_recover() {
    let env = env("pods", &["--progress-deadline-seconds", DEADLINE_SECONDS]).await;
    let pull = format!("{}-pull", env.run);
    let crash = format!("{}-crash", env.run);
    let unschedulable = format!("{}-sched", env.run);
    let _cleanup = TenantCleanup(vec![pull.clone(), crash.clone(), unschedulable.clone()]);
    let with_server = |name: &str, server: serde_json::Value| {
        let mut tenant = tenant_from_yaml(BASIC, name, &env.run);
        tenant.spec.server = serde_json::from_value(server).expect("server spec");
        tenant
    };
    apply_tenant(
        &env.client,
        &with_server(&pull, serde_json::json!({"image": MISSING_IMAGE})),
    )
    .await;
    apply_tenant(
        &env.client,
        &with_server(&crash, serde_json::json!({"image": CRASHING_IMAGE})),
    )
    .await;
    apply_tenant(
        &env.client,
        &with_server(
            &unschedulable,
            serde_json::json!({"resources": {"cpu": {"request": "64", "limit": "64"}}}),
        ),
    )
    .await;

    let cases = [
        (&pull, "ImagePullBackOff", "Back-off pulling image"),
        (
            &crash,
            "CrashLoopBackOff",
            "exited with code 1 (Error), restarted 3 times",
        ),
        (&unschedulable, "Unschedulable", "Insufficient cpu"),
    ];
    for (name, reason, words) in cases {
        let seen = wait_for_status(
            &env.client,
            name,
            &format!("the server status names the pod and {reason}"),
            PROVISION,
            |t| server_message(t).contains(reason),
        )
        .await;
        let message = server_message(&seen);
        assert!(
            message.contains(&format!("{name}-server-")) && message.contains(words),
            "{message}"
        );
        assert_eq!(condition(&seen, "Ready").0, "False");
        let stalled = wait_for_status(&env.client, name, "Stalled", PROVISION, |t| {
            phase_of(t) == "Stalled"
        })
        .await;
        let (status, condition_reason, stall) = condition(&stalled, "Stalled");
        assert_eq!(
            (status.as_str(), condition_reason.as_str()),
            ("True", "ProgressDeadlineExceeded")
        );
        assert!(
            stall.contains("no progress for 15s") && stall.contains(reason),
            "{stall}"
        );
        assert_eq!(
            described_warnings(name),
            ["Stalled"],
            "{name}: one Warning, the journaled stall (the pod's own Events tell the rest)"
        );
        if phase_of(&seen) != "Stalled" {
            let (_, reconciling_reason, _) = condition(&seen, "Reconciling");
            assert_eq!(reconciling_reason, reason, "{name}");
        }
    }

    // Fixing the spec leaves Stalled through Updating, journaled like every transition.
    apply_tenant(
        &env.client,
        &with_server(
            &pull,
            serde_json::json!({"image": "neurallog/server:latest"}),
        ),
    )
    .await;
    wait_for_phase(&env.client, &pull, "Running", PROVISION).await;
    let story = described_event_messages(&pull);
    let stalled_at = story
        .iter()
        .position(|m| m.starts_with("Tenant is stalled: no progress for 15s"))
        .unwrap_or_else(|| panic!("no Stalled Event in {story:?}"));
    assert!(
        story[stalled_at..]
            .iter()
            .any(|m| m.starts_with("Spec changed (generation 2)")),
        "{story:?}"
    );
    assert_eq!(story.last().map(String::as_str), Some("Tenant is running"));

    for name in [&pull, &crash, &unschedulable] {
        kubectl(&["delete", "tenant", name, "--wait=false"]);
    }
    for name in [&pull, &crash, &unschedulable] {
        wait_until_gone(&tenants(&env.client), name, PROVISION).await;
    }
}

/// A claim that never binds (its StorageClass does not exist) keeps the Redis pod
/// unschedulable. While a volume may still be on its way (two minutes, the operator's
/// volume grace) the status says only that Redis is not ready; then it names the pod and
/// the scheduler's words, in `kubectl describe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_never_binds_is_reported_after_the_volume_grace() {
    const VOLUME_GRACE: Duration = Duration::from_secs(120);
    let env = env("noclaim", &[]).await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let mut tenant = tenant_from_yaml(BASIC, &name, &env.run);
    tenant.spec.redis.storage_class_name = Some("no-such-class".into());
    let applied = std::time::Instant::now();
    apply_tenant(&env.client, &tenant).await;
    let words = "pod has unbound immediate PersistentVolumeClaims";
    let reported = wait_for_status(
        &env.client,
        &name,
        "the Redis status to name the unbound claim",
        VOLUME_GRACE + PROVISION,
        |t| redis_message(t).contains(words),
    )
    .await;
    // The pod waits from some time after the apply; lastTransitionTime has whole seconds.
    let waited = applied.elapsed();
    assert!(
        waited >= VOLUME_GRACE - Duration::from_secs(2),
        "reported after {waited:?}, within the volume grace: {}",
        redis_message(&reported)
    );
    assert_eq!(phase_of(&reported), "ProvisioningRedis");
    let described = kubectl(&["describe", "tenant", &name]);
    let shown = format!("Redis has 0/1 replicas ready: {name}-redis-0: Unschedulable: ");
    assert!(
        described.contains(&shown) && described.contains(words),
        "{described}"
    );
    kubectl(&["delete", "tenant", &name, "--wait=false"]);
    wait_until_gone(&tenants(&env.client), &name, PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_conflict_heals_once_the_foreign_namespace_is_gone() {
    let env = env("conflict", &[]).await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let ns = format!("tenant-{name}");
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let foreign: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign namespace");
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    let failed = wait_for_phase(&env.client, &name, "Failed", PROVISION).await;
    assert_eq!(condition(&failed, "Stalled").1, "NamespaceConflict");
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("the foreign namespace goes");
    // The operator looks again at least once a minute; the namespace must be gone first.
    wait_for_phase(&env.client, &name, "Running", Duration::from_secs(240)).await;
    let story = described_event_messages(&name);
    assert!(
        story
            .iter()
            .any(|m| m.starts_with("Tenant cannot be provisioned: the namespace already exists")),
        "{story:?}"
    );
    assert_eq!(story.last().map(String::as_str), Some("Tenant is running"));
    kubectl(&["delete", "tenant", &name, "--wait=false"]);
    wait_until_gone(&tenants(&env.client), &name, PROVISION).await;
}

/// A ValidatingAdmissionPolicy that refuses every Event about one Tenant.
fn deny_events_about(name: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: e2e-deny-events-{name}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["events"]
  validations:
  - expression: "object.involvedObject.name != '{name}'"
    message: "no Events about {name} (e2e policy)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: e2e-deny-events-{name}
spec:
  policyName: e2e-deny-events-{name}
  validationActions: [Deny]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_hold_neither_status_nor_provisioning_and_are_written_later() {
    let env = env("events", &[]).await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let policy = deny_events_about(&name);
    let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &policy);
    assert!(ok, "{stderr}");
    // The policy is in force once an Event about the tenant is refused.
    wait_for("the Event policy to be in force", PROVISION, || async {
        let (created, _, _) = kubectl_stdin(
            &["create", "-f", "-", "--dry-run=server"],
            &format!(
                "apiVersion: v1\nkind: Event\nmetadata: {{name: probe, namespace: default}}\ninvolvedObject: {{name: {name}}}\nreason: Probe\nmessage: probe\n"
            ),
        );
        (!created).then_some(())
    })
    .await;

    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &name, &env.run)).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    assert!(
        described_event_messages(&name).is_empty(),
        "Events were written despite the policy"
    );
    let failed = env
        .operator
        .counter("neurallog_reconcile_errors_total{reason=\"EventWriteFailed\"}")
        .await;
    assert!(failed >= 1.0, "failed Event writes are counted: {failed}");
    let log = env.operator.log_text();
    assert_eq!(
        log.matches("cannot write an Event; it is retried later")
            .count(),
        1,
        "logged once"
    );

    let (ok, _, stderr) = kubectl_stdin(&["delete", "-f", "-"], &policy);
    assert!(ok, "{stderr}");
    wait_for("the held-back Events to be written", PROVISION, || {
        let name = name.clone();
        async move {
            let story = described_event_messages(&name);
            (story.first().map(String::as_str) == Some("Tenant accepted; creating its namespace")
                && story.last().map(String::as_str) == Some("Tenant is running"))
            .then_some(())
        }
    })
    .await;
    kubectl(&["delete", "tenant", &name, "--wait=false"]);
    wait_until_gone(&tenants(&env.client), &name, PROVISION).await;
}
