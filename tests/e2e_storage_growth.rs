//! The guide's basic -> customized sequence on the real control plane: a larger
//! `spec.redis.storage` grows the Redis volume in place (the claim asks for more, the test
//! provisioner grows the volume as an external resizer would, the StatefulSet is replaced
//! without its pods so that its claim template follows), the tenant shows Reconciling with
//! reason Resizing meanwhile, and a smaller size is refused at admission. A class that
//! cannot expand stalls the tenant, naming the class.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use neurallog_operator::crd::{STORAGE_SHRINK_MESSAGE, Tenant};
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
/// The class of tests/cluster/manifests/storage.yaml whose volumes cannot grow.
const FIXED_SIZE_CLASS: &str = "fixed-size";

struct Redis {
    claims: Api<PersistentVolumeClaim>,
    statefulsets: Api<StatefulSet>,
    pods: Api<Pod>,
    claim: String,
    statefulset: String,
    pod: String,
}

impl Redis {
    fn of(client: &Client, name: &str) -> Redis {
        let ns = format!("tenant-{name}");
        Redis {
            claims: Api::namespaced(client.clone(), &ns),
            statefulsets: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client.clone(), &ns),
            claim: format!("redis-data-{name}-redis-0"),
            statefulset: format!("{name}-redis"),
            pod: format!("{name}-redis-0"),
        }
    }

    /// (what the claim asks for, what its volume holds).
    async fn claim_sizes(&self) -> (String, String) {
        let claim = self.claims.get(&self.claim).await.unwrap();
        let requested = claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
            .0
            .clone();
        let capacity = claim
            .status
            .and_then(|s| s.capacity)
            .and_then(|c| c.get("storage").cloned())
            .map(|q| q.0)
            .unwrap_or_default();
        (requested, capacity)
    }

    async fn statefulset(&self) -> StatefulSet {
        self.statefulsets.get(&self.statefulset).await.unwrap()
    }

    async fn template_size(&self) -> String {
        let sts = self.statefulset().await;
        sts.spec.unwrap().volume_claim_templates.unwrap()[0]
            .spec
            .clone()
            .unwrap()
            .resources
            .unwrap()
            .requests
            .unwrap()["storage"]
            .0
            .clone()
    }

    async fn pod(&self) -> Pod {
        self.pods.get(&self.pod).await.unwrap()
    }
}

/// The UID of the pod's controlling owner.
fn controller_uid(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

async fn apply_storage(client: &Client, tenant: &mut Tenant, storage: &str) {
    tenant.spec.redis.storage = storage.into();
    apply_tenant(client, tenant).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_basic_then_customized_tenant_grows_its_volume_in_place() {
    skip_without_cluster();
    let env = OperatorEnv::start("grow").await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let redis = Redis::of(&env.client, &name);

    // The guide's basic tenant: 1Gi.
    let mut tenant = tenant_from_yaml(BASIC, &name, &env.run);
    apply_tenant(&env.client, &tenant).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    assert_eq!(redis.claim_sizes().await, ("1Gi".into(), "1Gi".into()));
    let pod = redis.pod().await;
    let first_sts = redis.statefulset().await.uid().unwrap();
    assert_eq!(controller_uid(&pod), Some(first_sts.clone()));

    // Only the size grows: the volume grows in place, the StatefulSet is replaced and the
    // Redis pod keeps running under the new one.
    apply_storage(&env.client, &mut tenant, "2Gi").await;
    let resizing = wait_for_condition(
        &env.client,
        &name,
        "Reconciling",
        "True",
        "Resizing",
        PROVISION,
    )
    .await;
    assert!(
        resizing.contains(&redis.claim) && resizing.contains("2Gi"),
        "{resizing}"
    );
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    assert_eq!(redis.claim_sizes().await, ("2Gi".into(), "2Gi".into()));
    assert_eq!(redis.template_size().await, "2Gi");
    let second_sts = redis.statefulset().await.uid().unwrap();
    assert_ne!(second_sts, first_sts, "the StatefulSet was replaced");
    let adopted = redis.pod().await;
    assert_eq!(adopted.uid(), pod.uid(), "the Redis pod was never deleted");
    assert_eq!(
        controller_uid(&adopted),
        Some(second_sts),
        "the new StatefulSet adopted the running pod"
    );

    // The guide's customized tenant, applied to the same name: 5Gi.
    let customized = tenant_from_yaml(CUSTOMIZED, &name, &env.run);
    assert_eq!(customized.spec.redis.storage, "5Gi");
    apply_tenant(&env.client, &customized).await;
    wait_for_condition(
        &env.client,
        &name,
        "Reconciling",
        "True",
        "Resizing",
        PROVISION,
    )
    .await;
    let running = wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    let ready = running
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(redis.claim_sizes().await, ("5Gi".into(), "5Gi".into()));
    assert_eq!(redis.template_size().await, "5Gi");
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), &format!("tenant-{name}"));
    let quota = quotas.list(&Default::default()).await.unwrap().items;
    assert_eq!(
        quota[0].spec.as_ref().unwrap().hard.as_ref().unwrap()["requests.storage"].0,
        "5Gi"
    );

    // Smaller is refused by the API server, saying why.
    let mut smaller = customized.clone();
    smaller.spec.redis.storage = "4Gi".into();
    let tenants: Api<Tenant> = Api::all(env.client.clone());
    let refused = tenants
        .patch(
            &name,
            &PatchParams::apply("neurallog-e2e").force(),
            &Patch::Apply(&smaller),
        )
        .await
        .expect_err("a smaller storage is refused");
    assert!(
        refused.to_string().contains(STORAGE_SHRINK_MESSAGE),
        "{refused}"
    );
    assert_eq!(redis.claim_sizes().await, ("5Gi".into(), "5Gi".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_that_cannot_expand_stalls_the_tenant_naming_the_class() {
    skip_without_cluster();
    let env = OperatorEnv::start("fixed").await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let redis = Redis::of(&env.client, &name);

    let mut tenant = tenant_from_yaml(BASIC, &name, &env.run);
    tenant.spec.redis.storage_class_name = Some(FIXED_SIZE_CLASS.into());
    apply_tenant(&env.client, &tenant).await;
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    let sts = redis.statefulset().await.uid();

    apply_storage(&env.client, &mut tenant, "2Gi").await;
    let stalled = wait_for_condition(
        &env.client,
        &name,
        "Stalled",
        "True",
        "StorageClassNotExpandable",
        PROVISION,
    )
    .await;
    assert!(
        stalled.contains(&format!(
            "StorageClass {FIXED_SIZE_CLASS}, which does not allow volume expansion"
        )),
        "{stalled}"
    );
    wait_for_phase(&env.client, &name, "Stalled", PROVISION).await;
    // Nothing was asked of the claim, and the StatefulSet was left as it was.
    assert_eq!(redis.claim_sizes().await, ("1Gi".into(), "1Gi".into()));
    assert_eq!(redis.statefulset().await.uid(), sts);
    assert_eq!(redis.template_size().await, "1Gi");
}
