//! Growing the Redis volume, pass by pass: the exact requests that grow the claim and
//! replace the StatefulSet, and the status they leave.

use super::fixtures::*;
use crate::controller::observation::AuthState;
use crate::controller::storage::{NOT_EXPANDABLE, RESIZING};
use crate::journal::testing::TO_RUNNING;
use http::Method;
use neurallog_machines::Phase;
use serde_json::{Value, json};

const NS: &str = "tenant-my-tenant";
const CLAIM: &str = "redis-data-my-tenant-redis-0";

fn claim_path() -> String {
    format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/{CLAIM}")
}

fn statefulset_path() -> String {
    format!("/apis/apps/v1/namespaces/{NS}/statefulsets/my-tenant-redis")
}

/// The Redis claim as the StatefulSet controller made it and the provisioner bound it.
fn claim(class: &str, requested: &str, capacity: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": CLAIM,
            "namespace": NS,
            "labels": {"neurallog.io/tenant": "my-tenant", "neurallog.io/component": "redis", "app": "redis"},
        },
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": requested}},
            "volumeName": "pvc-1",
        },
        "status": {"phase": "Bound", "capacity": {"storage": capacity}},
    })
}

fn storage_class(name: &str, expandable: bool) -> Exchange {
    let path = format!("/apis/storage.k8s.io/v1/storageclasses/{name}");
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "example.com/csi",
        "allowVolumeExpansion": expandable,
    });
    Exchange::new(Method::GET, &path, Reply::Stored(class))
}

/// A Running tenant whose Redis claim (of `class`) holds 1Gi, and whose spec now asks
/// for 5Gi.
async fn grown_to_5gi(class: &str) -> Fixture {
    let mut fx = settled(&TO_RUNNING, AuthState::Registered).await;
    fx.api.deliver(&claim(class, "1Gi", "1Gi"));
    let mut tenant = fx.api.tenant();
    tenant.spec.redis.storage = "5Gi".into();
    tenant.metadata.generation = Some(2);
    fx.api.store_tenant(&tenant);
    fx
}

fn quota_applied(storage: &str) -> Exchange {
    let path = format!("/api/v1/namespaces/{NS}/resourcequotas/tenant-quota");
    Exchange::patch(&path, APPLY_PATCH)
        .with("/spec/hard/requests.storage", storage)
        .reply(Reply::Created)
}

fn condition(fx: &Fixture, type_: &str) -> (String, String, String) {
    let status = fx.api.tenant().status.expect("a status");
    let c = status
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .expect("the condition");
    (c.status, c.reason, c.message)
}

#[tokio::test]
async fn a_larger_size_grows_the_claim_and_replaces_the_statefulset_without_its_pods() {
    let mut fx = grown_to_5gi("standard").await;
    let mut terminating = fx.api.cached_statefulset("my-tenant-redis");
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    fx.pass(vec![
        storage_class("standard", true),
        transition_event(5, Phase::Updating),
        quota_applied("5Gi"),
        Exchange::patch(&claim_path(), MERGE_PATCH)
            .with("/spec/resources/requests/storage", "5Gi")
            .reply(Reply::Stored(claim("standard", "5Gi", "1Gi"))),
        Exchange::new(
            Method::DELETE,
            &statefulset_path(),
            Reply::Stored(terminating.clone()),
        )
        .with("/propagationPolicy", "Orphan")
        .with("/preconditions/uid", "uid-my-tenant-redis"),
        patch_status("Updating").with("/status/conditions/1/reason", RESIZING),
    ])
    .await
    .expect("the pass succeeds");
    let (status, reason, message) = condition(&fx, "Reconciling");
    assert_eq!((status.as_str(), reason.as_str()), ("True", RESIZING));
    assert_eq!(
        message,
        format!("The Redis volume grows to 5Gi: {CLAIM} has 1Gi")
    );

    // Still going away (the garbage collector orphans its pods first): nothing to apply.
    fx.pass(vec![]).await.expect("the pass succeeds");

    // Gone: created again, its claim template asking for the new size.
    fx.api.remove(&terminating);
    fx.pass(vec![
        Exchange::patch(&statefulset_path(), APPLY_PATCH)
            .with(
                "/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
                "5Gi",
            )
            .reply(Reply::Created),
        event("Normal", "Created").with("/message", "Created Redis StatefulSet"),
        patch_status("Updating").with("/status/conditions/1/reason", RESIZING),
    ])
    .await
    .expect("the pass succeeds");
    assert_eq!(fx.tail().to, Phase::Updating);

    // The volume grew and the new StatefulSet adopted the running pod: Running.
    fx.api.deliver(&claim("standard", "5Gi", "5Gi"));
    let mut ready = fx.api.cached_statefulset("my-tenant-redis");
    ready["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1});
    fx.api.deliver(&ready);
    fx.pass(vec![
        transition_event(6, Phase::Running),
        patch_status("Running"),
    ])
    .await
    .expect("the pass succeeds");
    assert_eq!(condition(&fx, "Ready").0, "True");
}

#[tokio::test]
async fn a_class_without_expansion_stalls_naming_it_and_changes_nothing() {
    let mut fx = grown_to_5gi("fixed").await;
    fx.pass(vec![
        storage_class("fixed", false),
        transition_event(5, Phase::Updating),
        quota_applied("5Gi"),
        storage_class("fixed", false),
        patch_status("Updating").with("/status/conditions/2/reason", NOT_EXPANDABLE),
    ])
    .await
    .expect("the pass succeeds");
    fx.pass(vec![
        storage_class("fixed", false),
        transition_event(6, Phase::Stalled),
        storage_class("fixed", false),
        patch_status("Stalled").with("/status/conditions/2/reason", NOT_EXPANDABLE),
    ])
    .await
    .expect("the pass succeeds");
    let (status, reason, message) = condition(&fx, "Stalled");
    assert_eq!((status.as_str(), reason.as_str()), ("True", NOT_EXPANDABLE));
    assert!(
        message.contains("StorageClass fixed, which does not allow volume expansion"),
        "{message}"
    );
}
