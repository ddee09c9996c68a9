//! `spec.redis.retainStorage` on the real control plane: a deleted tenant's Redis volume
//! outlives it (Retain, labelled with the tenant, its data on disk), while a tenant without
//! it loses its volume as before; and the README's restore steps, run as written, bind the
//! kept volume, data and all, to a new tenant's Redis.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use neurallog_operator::crd::Tenant;
use std::path::PathBuf;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);
const MARKER: &str = "written-before-the-tenant-was-deleted";

fn data_claim(tenant: &str) -> String {
    format!("redis-data-{tenant}-redis-0")
}

/// The volume bound to the tenant's Redis data claim, once bound.
async fn bound_volume(client: &Client, tenant: &str) -> PersistentVolume {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &format!("tenant-{tenant}"));
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claim = data_claim(tenant);
    wait_for(&format!("claim {claim} bound"), PROVISION, || {
        let (claims, volumes, claim) = (claims.clone(), volumes.clone(), claim.clone());
        async move {
            let bound = claims.get_opt(&claim).await.ok()??;
            let volume = bound.spec?.volume_name?;
            volumes.get_opt(&volume).await.ok()?
        }
    })
    .await
}

fn host_path(volume: &PersistentVolume) -> PathBuf {
    let path = volume
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .map(|h| h.path.clone())
        .expect("the test provisioner makes hostPath volumes");
    PathBuf::from(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_volume_outlives_its_tenant_and_the_readme_restores_it() {
    skip_without_cluster();
    let env = OperatorEnv::start("keep").await;
    let kept = env.run.clone();
    let dropped = format!("{}-drop", env.run);
    let restored = format!("{}-new", env.run);
    let _cleanup = TenantCleanup(vec![kept.clone(), dropped.clone(), restored.clone()]);

    let mut retaining = tenant_from_yaml(BASIC, &kept, &env.run);
    retaining.spec.redis.retain_storage = true;
    apply_tenant(&env.client, &retaining).await;
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &dropped, &env.run)).await;
    wait_for_phase(&env.client, &kept, "Running", PROVISION).await;
    wait_for_phase(&env.client, &dropped, "Running", PROVISION).await;
    let volume = bound_volume(&env.client, &kept).await;
    let volume_name = volume.name_any();
    let _volumes = VolumeCleanup(vec![volume_name.clone()]);
    std::fs::write(host_path(&volume).join("dump.rdb"), MARKER).unwrap();
    let dropped_volume = bound_volume(&env.client, &dropped).await.name_any();

    let tenants: Api<Tenant> = Api::all(env.client.clone());
    for name in [&kept, &dropped] {
        tenants
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in [&kept, &dropped] {
        wait_until_gone(&tenants, name, PROVISION).await;
    }

    // Without retainStorage the volume goes with its claim, as before.
    let volumes: Api<PersistentVolume> = Api::all(env.client.clone());
    wait_until_gone(&volumes, &dropped_volume, PROVISION).await;

    // With it: kept, released, Retain, labelled with the tenant, its data on disk; and an
    // Event said so.
    let listed = kubectl(&[
        "get",
        "pv",
        "-l",
        &format!("neurallog.io/tenant={kept},neurallog.io/retained=true"),
        "-o",
        "name",
    ]);
    assert_eq!(listed.trim(), format!("persistentvolume/{volume_name}"));
    let released = wait_for("the kept volume released", PROVISION, || {
        let volumes = volumes.clone();
        let volume_name = volume_name.clone();
        async move {
            let v = volumes.get_opt(&volume_name).await.ok()??;
            (v.status.as_ref()?.phase.as_deref() == Some("Released")).then_some(v)
        }
    })
    .await;
    assert_eq!(
        released
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref()),
        Some("Retain")
    );
    assert_eq!(
        released
            .annotations()
            .get("neurallog.io/retained-from-claim")
            .map(String::as_str),
        Some(format!("tenant-{kept}/{}", data_claim(&kept)).as_str())
    );
    assert_eq!(
        std::fs::read_to_string(host_path(&released).join("dump.rdb")).unwrap(),
        MARKER
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let retained_event = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={kept}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("VolumeRetained"))
        .expect("a VolumeRetained Event on the tenant");
    assert!(
        retained_event
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&volume_name)),
        "{retained_event:?}"
    );

    // The README's restore, step by step: reserve the volume for the new tenant's claim,
    // then create the tenant.
    reserve_volume_for(&volume_name, &restored);
    apply_tenant(&env.client, &tenant_from_yaml(BASIC, &restored, &env.run)).await;
    wait_for_phase(&env.client, &restored, "Running", PROVISION).await;
    let rebound = bound_volume(&env.client, &restored).await;
    assert_eq!(
        rebound.name_any(),
        volume_name,
        "the new tenant's Redis claim binds the kept volume, not a new one"
    );
    assert_eq!(
        std::fs::read_to_string(host_path(&rebound).join("dump.rdb")).unwrap(),
        MARKER,
        "the new tenant's Redis sees the old tenant's data"
    );
}
