//! Redis backups on the real control plane: `spec.redis.backup` renders the CronJob
//! `redis-backup` and the claim `redis-backups` as specified; schedule and keep changes
//! reach the CronJob; the Tenant's status follows the CronJob's last successful backup
//! (kwok runs no pods, so the test writes the CronJob's status as its controller would
//! after a successful Job); removing the field deletes the CronJob and keeps the claim;
//! admission refuses a schedule of the wrong shape and a keep out of bounds, and the
//! operator stalls on a schedule only it can tell is wrong. The backup itself and the
//! restore run on a real redis-server in tests/redis_real.rs.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use neurallog_operator::crd::{RedisBackup, Tenant};
use serde_json::json;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

async fn cronjob(client: &Client, ns: &str) -> Option<CronJob> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), ns);
    api.get_opt("redis-backup").await.unwrap()
}

/// Waits until the CronJob exists and `check` holds of it.
async fn wait_for_cronjob(
    client: &Client,
    ns: &str,
    what: &str,
    check: impl Fn(&CronJob) -> bool,
) -> CronJob {
    let check = &check;
    wait_for(what, PROVISION, || async move {
        cronjob(client, ns).await.filter(|c| check(c))
    })
    .await
}

fn schedule_and_keep(cronjob: &CronJob) -> (String, String) {
    let spec = cronjob.spec.clone().unwrap();
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    let keep = pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "KEEP")
        .and_then(|e| e.value.clone())
        .unwrap();
    (spec.schedule, keep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_follow_the_spec_and_the_status_follows_the_cronjob() {
    skip_without_cluster();
    let env = OperatorEnv::start("backup").await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let ns = format!("tenant-{name}");
    let client = &env.client;

    let mut tenant = tenant_from_yaml(BASIC, &name, &env.run);
    tenant.spec.redis.storage = "1Gi".into();
    tenant.spec.redis.backup = Some(RedisBackup {
        // Schedules that fire on January 1st only: the CronJob controller must not start a
        // Job (and write the CronJob's status) during the test.
        schedule: "0 3 1 1 *".into(),
        keep: 3,
        storage: None,
    });
    apply_tenant(client, &tenant).await;
    wait_for_phase(client, &name, "Running", PROVISION).await;

    // Rendered as specified: the schedule in UTC, one run at a time, the tenant's Redis
    // image, the claim mounted.
    let created = wait_for_cronjob(client, &ns, "the backup CronJob", |_| true).await;
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(
        schedule_and_keep(&created),
        ("0 3 1 1 *".into(), "3".into())
    );
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some(tenant.spec.redis.image.as_str())
    );
    assert_eq!(
        pod.volumes.unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "redis-backups"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let claim = claims.get("redis-backups").await.unwrap();
    let size = &claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"];
    assert_eq!(size.0, "4Gi", "(keep + 1) x the Redis volume");
    // The backup pods may reach Redis, on its port only.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    for policy in ["allow-redis-from-backup", "allow-backup-to-redis"] {
        assert!(
            policies.get_opt(policy).await.unwrap().is_some(),
            "{policy}"
        );
    }
    // The status shows backups, none successful yet.
    let tenants: Api<Tenant> = Api::all(client.clone());
    let status = tenants.get(&name).await.unwrap().status.unwrap();
    let backup = status.backup.expect("status.backup with backups on");
    assert_eq!(backup.last_successful_time, None);

    // A schedule and keep change reach the CronJob.
    tenant.spec.redis.backup = Some(RedisBackup {
        schedule: "@yearly".into(),
        keep: 5,
        storage: None,
    });
    apply_tenant(client, &tenant).await;
    wait_for_cronjob(client, &ns, "the new schedule and keep", |c| {
        schedule_and_keep(c) == ("@yearly".into(), "5".into())
    })
    .await;
    // The claim keeps the size it was created with (a claim cannot shrink; growing it
    // needs an expandable class): documented, and the quota follows the spec.
    let claim = claims.get("redis-backups").await.unwrap();
    let size = &claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"];
    assert_eq!(size.0, "4Gi", "the claim is not resized");

    // A successful backup, as the CronJob controller records it: the status follows.
    let finished = "2026-11-30T03:00:07Z";
    let crons: Api<CronJob> = Api::namespaced(client.clone(), &ns);
    crons
        .patch_status(
            "redis-backup",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "lastScheduleTime": "2026-11-30T03:00:00Z",
                "lastSuccessfulTime": finished,
            }})),
        )
        .await
        .unwrap();
    let followed = wait_for("the Tenant status to show the backup", PROVISION, || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let backup = tenants.get(&name).await.ok()?.status?.backup?;
            let time = serde_json::to_value(backup.last_successful_time.clone()?).ok()?;
            (time == json!(finished)).then_some(backup)
        }
    })
    .await;
    assert_eq!(
        serde_json::to_value(followed.last_schedule_time).unwrap(),
        json!("2026-11-30T03:00:00Z")
    );
    let described = kubectl(&["describe", "tenant", &name]);
    assert!(
        described.contains("Last Successful Time") && described.contains(finished),
        "kubectl describe shows the last backup:\n{described}"
    );

    // Backups off: the CronJob goes, the claim with the snapshots stays, so does nothing
    // else of the backups.
    tenant.spec.redis.backup = None;
    apply_tenant(client, &tenant).await;
    wait_until_gone(&crons, "redis-backup", PROVISION).await;
    wait_for("the backup policies to be removed", PROVISION, || {
        let policies = policies.clone();
        async move {
            policies
                .get_opt("allow-redis-from-backup")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    wait_for("status.backup to go", PROVISION, || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let t = tenants.get(&name).await.ok()?;
            let status = t.status?;
            (status.observed_generation == t.metadata.generation && status.backup.is_none())
                .then_some(())
        }
    })
    .await;
    assert!(
        claims.get_opt("redis-backups").await.unwrap().is_some(),
        "the backup claim stays when backups are turned off"
    );
    wait_for_phase(client, &name, "Running", PROVISION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_malformed_backups_and_the_operator_stalls_on_a_wrong_field() {
    skip_without_cluster();
    let env = OperatorEnv::start("backupadm").await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let manifest = |backup: &str| {
        format!(
            "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata:\n  name: {name}\n  labels: {{e2e.neurallog.io/run: {name}}}\nspec:\n  redis:\n    backup: {backup}\n"
        )
    };
    for (backup, expected) in [
        (
            "{schedule: '0 3 * *'}",
            "spec.redis.backup.schedule must be a cron schedule",
        ),
        (
            "{schedule: '@reboot'}",
            "spec.redis.backup.schedule must be a cron schedule",
        ),
        ("{schedule: '0 3 * * *', keep: 0}", "spec.redis.backup.keep"),
        (
            "{schedule: '0 3 * * *', keep: 101}",
            "spec.redis.backup.keep",
        ),
        (
            "{schedule: '0 3 * * *', storage: lots}",
            "spec.redis.backup.storage must be a positive Kubernetes quantity",
        ),
        ("{keep: 3}", "spec.redis.backup.schedule: Required value"),
    ] {
        let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &manifest(backup));
        assert!(!ok, "admitted: {backup}");
        assert!(
            stderr.contains(expected),
            "for {backup} kubectl said: {stderr}"
        );
    }

    // The right shape, a minute that does not exist: admitted, and the operator says why
    // it will not go on instead of failing the CronJob's apply.
    let (ok, _, stderr) =
        kubectl_stdin(&["apply", "-f", "-"], &manifest("{schedule: '60 3 * * *'}"));
    assert!(ok, "{stderr}");
    let message = wait_for_condition(
        &env.client,
        &name,
        "Stalled",
        "True",
        "InvalidSpec",
        PROVISION,
    )
    .await;
    assert!(
        message.contains("spec.redis.backup.schedule") && message.contains("minute"),
        "{message}"
    );
    let explained = kubectl(&["explain", "tenants.spec.redis.backup"]);
    for field in ["schedule", "keep", "storage", "RDB snapshots"] {
        assert!(
            explained.contains(field),
            "kubectl explain lacks {field}:\n{explained}"
        );
    }
}
