//! Redis backups (`spec.redis.backup`): a CronJob whose pod saves an RDB snapshot of the
//! tenant's Redis with `redis-cli --rdb` into the claim `redis-backups`, then deletes all
//! but the newest `keep`.
//!
//! The names are fixed, like the quota's and the network policies': the namespace is the
//! tenant's own, and a CronJob name may have at most 52 characters (its Jobs append a
//! timestamp), less than `<tenant>-redis-backup` takes for the longest tenant names.

use super::labels::selector_labels;
use super::placement::place;
use super::redis::{REDIS_PORT, REDIS_UID, redis_host};
use super::resources::{BACKUP_DEFAULTS, effective_resources};
use super::security::{container_security, pod_security};
use super::{RenderError, RenderSettings, child_meta};
use crate::crd::{RedisBackup, Tenant};
use crate::quantity::Quantity;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The CronJob.
pub const BACKUP_CRONJOB: &str = "redis-backup";
/// The claim the snapshots are written to.
pub const BACKUP_CLAIM: &str = "redis-backups";
/// The component label of the backup objects and pods: not `redis`, which the Redis
/// Service and the Redis network policy select.
pub const BACKUP_COMPONENT: &str = "redis-backup";
/// Where the claim is mounted in the backup pod.
pub const BACKUP_DIR: &str = "/backups";
/// The schedule's time zone: a schedule means the same hours on every cluster.
pub const BACKUP_TIME_ZONE: &str = "Etc/UTC";
/// Retries of a failed backup within one scheduled run.
const BACKOFF_LIMIT: i32 = 2;
/// A run that could not start within this long after its time is skipped, not run late.
const STARTING_DEADLINE_SECONDS: i64 = 600;

/// The backup pod's script. Parameters come from the environment: REDIS_HOST, REDIS_PORT,
/// BACKUP_DIR and KEEP. The snapshot is written under a temporary name and renamed only
/// once complete (an RDB file starts with "REDIS"), so `dump-*.rdb` files are always
/// whole; the names sort by time, and all but the newest KEEP are deleted after a success.
pub const BACKUP_SCRIPT: &str = r#"set -eu
stamp=$(date -u +%Y%m%dT%H%M%SZ)
partial="$BACKUP_DIR/.dump-$stamp.rdb.partial"
rm -f "$BACKUP_DIR"/.dump-*.rdb.partial
trap 'rm -f "$partial"' EXIT
redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --rdb "$partial"
if [ "$(head -c 5 "$partial")" != "REDIS" ]; then
  echo "the snapshot $partial is not an RDB file" >&2
  exit 1
fi
mv "$partial" "$BACKUP_DIR/dump-$stamp.rdb"
echo "saved $BACKUP_DIR/dump-$stamp.rdb"
ls -1 "$BACKUP_DIR" | grep -E '^dump-[0-9]{8}T[0-9]{6}Z\.rdb$' | sort -r | tail -n +$((KEEP + 1)) |
  while read -r old; do
    rm -f "$BACKUP_DIR/$old"
    echo "deleted $BACKUP_DIR/$old"
  done
"#;

/// The restore script of the README's "Backups and restore" (examples/redis-restore.yaml
/// runs it while Redis is stopped). Parameters from the environment: SNAPSHOT (a file name
/// in BACKUP_DIR), DATA_DIR (the Redis volume) and REDIS_CONF (the tenant's redis.conf).
/// The snapshot becomes dump.rdb; with `appendonly yes`, Redis 7 would start from its
/// append-only files instead (an empty data set when there are none), so the snapshot is
/// also made the base of a new append-only file.
pub const RESTORE_SCRIPT: &str = r#"set -eu
snapshot="$BACKUP_DIR/$SNAPSHOT"
if [ "$(head -c 5 "$snapshot")" != "REDIS" ]; then
  echo "$snapshot is not an RDB snapshot" >&2
  exit 1
fi
rm -rf "$DATA_DIR/appendonlydir" "$DATA_DIR/dump.rdb"
cp "$snapshot" "$DATA_DIR/.dump.rdb.restoring"
mv "$DATA_DIR/.dump.rdb.restoring" "$DATA_DIR/dump.rdb"
if grep -Eiq '^appendonly +"?yes"?$' "$REDIS_CONF"; then
  mkdir "$DATA_DIR/appendonlydir"
  cp "$snapshot" "$DATA_DIR/appendonlydir/appendonly.aof.1.base.rdb"
  echo "file appendonly.aof.1.base.rdb seq 1 type b" >"$DATA_DIR/appendonlydir/appendonly.aof.manifest"
fi
echo "restored $snapshot into $DATA_DIR"
"#;

/// The CronJob, when the spec asks for backups.
pub fn backup_cronjob(
    tenant: &Tenant,
    settings: &RenderSettings,
) -> Result<Option<CronJob>, RenderError> {
    let Some(backup) = &tenant.spec.redis.backup else {
        return Ok(None);
    };
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let mut pod_meta = child_meta(tenant, String::new(), Some(BACKUP_COMPONENT))?;
    pod_meta.name = None;
    pod_meta.namespace = None;
    pod_meta.owner_references = None;
    let job_meta = ObjectMeta {
        labels: pod_meta.labels.clone(),
        ..ObjectMeta::default()
    };
    Ok(Some(CronJob {
        metadata: child_meta(tenant, BACKUP_CRONJOB.into(), Some(BACKUP_COMPONENT))?,
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            time_zone: Some(BACKUP_TIME_ZONE.into()),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(STARTING_DEADLINE_SECONDS),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(1),
            job_template: JobTemplateSpec {
                metadata: Some(job_meta),
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKOFF_LIMIT),
                    template: PodTemplateSpec {
                        metadata: Some(pod_meta),
                        spec: Some(backup_pod(tenant, &name, backup, settings)?),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    }))
}

fn backup_pod(
    tenant: &Tenant,
    name: &str,
    backup: &RedisBackup,
    settings: &RenderSettings,
) -> Result<PodSpec, RenderError> {
    let redis = &tenant.spec.redis;
    let resources = effective_resources(None, &BACKUP_DEFAULTS, "spec.redis.backup")?;
    let env = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let container = Container {
        name: "backup".into(),
        // The tenant's own Redis image: its redis-cli speaks its server's protocol.
        image: Some(redis.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), BACKUP_SCRIPT.into()]),
        env: Some(vec![
            env("REDIS_HOST", redis_host(name, settings)),
            env("REDIS_PORT", REDIS_PORT.to_string()),
            env("BACKUP_DIR", BACKUP_DIR.into()),
            env("KEEP", backup.keep.to_string()),
        ]),
        resources: Some(resources.requirements()),
        volume_mounts: Some(vec![VolumeMount {
            name: "backups".into(),
            mount_path: BACKUP_DIR.into(),
            ..VolumeMount::default()
        }]),
        security_context: Some(container_security(true)),
        ..Container::default()
    };
    let mut pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        security_context: Some(pod_security(REDIS_UID)),
        automount_service_account_token: Some(false),
        volumes: Some(vec![Volume {
            name: "backups".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: BACKUP_CLAIM.into(),
                read_only: None,
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    // Redis's placement: the claim is in Redis's storage class, so its zone and nodes are
    // Redis's too.
    place(
        &mut pod,
        tenant,
        redis.placement(),
        &selector_labels(name, BACKUP_COMPONENT),
    );
    Ok(pod)
}

/// The backup claim's size: `storage`, or room for `keep` snapshots and the one being
/// taken, each at most the size of the Redis volume it was saved from.
pub fn backup_storage(tenant: &Tenant) -> Result<Option<Quantity>, RenderError> {
    let Some(backup) = &tenant.spec.redis.backup else {
        return Ok(None);
    };
    let invalid = |field: &str, message: String| RenderError::InvalidField {
        field: field.into(),
        message,
    };
    if let Some(storage) = &backup.storage {
        return Quantity::parse(storage)
            .map(Some)
            .map_err(|e| invalid("spec.redis.backup.storage", e.to_string()));
    }
    let each = Quantity::parse(&tenant.spec.redis.storage)
        .map_err(|e| invalid("spec.redis.storage", e.to_string()))?;
    each.checked_mul(i64::from(backup.keep) + 1)
        .map(Some)
        .ok_or_else(|| {
            invalid(
                "spec.redis.backup",
                "(keep + 1) x spec.redis.storage overflows; set spec.redis.backup.storage".into(),
            )
        })
}

/// The claim the snapshots go to, when the spec asks for backups.
pub fn backup_claim(tenant: &Tenant) -> Result<Option<PersistentVolumeClaim>, RenderError> {
    let Some(storage) = backup_storage(tenant)? else {
        return Ok(None);
    };
    Ok(Some(PersistentVolumeClaim {
        metadata: child_meta(tenant, BACKUP_CLAIM.into(), Some(BACKUP_COMPONENT))?,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    K8sQuantity(storage.to_bytes_string()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: tenant.spec.redis.storage_class_name.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{basic, tenant};
    use crate::render::{COMPONENT_LABEL, redis_statefulset};

    const BACKED_UP: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: acme}
spec:
  imagePullSecrets: [registry]
  redis:
    image: redis:7.2-alpine
    storage: 2Gi
    storageClassName: fast
    nodeSelector: {disk: ssd}
    tolerations: [{key: dedicated, operator: Equal, value: redis, effect: NoSchedule}]
    backup: {schedule: "0 3 * * *", keep: 3}
"#;

    fn cronjob(yaml: &str) -> CronJob {
        backup_cronjob(&tenant(yaml), &RenderSettings::default())
            .unwrap()
            .expect("a CronJob")
    }

    fn pod(cronjob: &CronJob) -> PodSpec {
        let spec = cronjob.spec.clone().unwrap();
        spec.job_template.spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn no_backup_no_cronjob_and_no_claim() {
        let basic = basic();
        assert_eq!(backup_cronjob(&basic, &RenderSettings::default()), Ok(None));
        assert_eq!(backup_claim(&basic), Ok(None));
    }

    #[test]
    fn the_cronjob_runs_the_schedule_one_at_a_time_in_utc() {
        let cronjob = cronjob(BACKED_UP);
        assert_eq!(cronjob.metadata.name.as_deref(), Some("redis-backup"));
        assert_eq!(cronjob.metadata.namespace.as_deref(), Some("tenant-acme"));
        let owner = &cronjob.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Tenant", Some(true))
        );
        let spec = cronjob.spec.clone().unwrap();
        assert_eq!(spec.schedule, "0 3 * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    }

    #[test]
    fn the_pod_saves_from_the_tenants_redis_with_its_image_and_keeps_keep() {
        let pod = pod(&cronjob(BACKED_UP));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("redis:7.2-alpine"));
        let env: BTreeMap<String, String> = container
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env["REDIS_HOST"],
            "acme-redis.tenant-acme.svc.cluster.local"
        );
        assert_eq!(env["REDIS_PORT"], "6379");
        assert_eq!(env["BACKUP_DIR"], "/backups");
        assert_eq!(env["KEEP"], "3");
        let command = container.command.clone().unwrap();
        assert!(command[2].contains("redis-cli -h \"$REDIS_HOST\" -p \"$REDIS_PORT\" --rdb"));
        let volume = &pod.volumes.clone().unwrap()[0];
        assert_eq!(
            volume
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("redis-backups")
        );
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn the_pod_is_secured_and_placed_like_the_redis_pod() {
        let tenant = tenant(BACKED_UP);
        let backup = pod(&cronjob(BACKED_UP));
        let redis = redis_statefulset(&tenant)
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(backup.security_context, redis.security_context);
        assert_eq!(
            backup.containers[0].security_context,
            redis.containers[0].security_context
        );
        assert_eq!(backup.node_selector, redis.node_selector);
        assert_eq!(backup.tolerations, redis.tolerations);
        assert_eq!(backup.image_pull_secrets, redis.image_pull_secrets);
        assert!(backup.containers[0].resources.is_some());
    }

    #[test]
    fn the_pods_are_not_redis_to_its_service_or_policies() {
        let cronjob = cronjob(BACKED_UP);
        let spec = cronjob.spec.unwrap();
        let labels = spec
            .job_template
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(labels[COMPONENT_LABEL], BACKUP_COMPONENT);
        let redis = selector_labels("acme", "redis");
        assert!(
            redis.iter().any(|(k, v)| labels.get(k) != Some(v)),
            "the backup pod must not match the Redis selector: {labels:?}"
        );
    }

    #[test]
    fn the_claim_holds_keep_plus_one_redis_volumes_by_default() {
        let claim = backup_claim(&tenant(BACKED_UP)).unwrap().expect("a claim");
        assert_eq!(claim.metadata.name.as_deref(), Some("redis-backups"));
        let spec = claim.spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let storage = &spec.resources.unwrap().requests.unwrap()["storage"];
        // (3 + 1) x 2Gi
        assert_eq!(storage.0, "8Gi");
    }

    #[test]
    fn an_explicit_storage_sizes_the_claim() {
        let yaml = BACKED_UP.replace("keep: 3}", "keep: 3, storage: 500Mi}");
        let claim = backup_claim(&tenant(&yaml)).unwrap().expect("a claim");
        let storage = &claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"];
        assert_eq!(storage.0, "500Mi");
    }

    /// The README's restore pod runs the tested script, restricted like the Redis pod, on
    /// the claims and ConfigMap of the guide's tenant.
    #[test]
    fn the_example_restore_pod_runs_the_restore_script_as_redis_would() {
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_yaml::from_str(include_str!("../../examples/redis-restore.yaml")).unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("tenant-my-tenant"));
        let spec = pod.spec.unwrap();
        let container = &spec.containers[0];
        assert_eq!(
            container.command.clone().unwrap(),
            ["sh", "-c", RESTORE_SCRIPT]
        );
        let redis = redis_statefulset(&basic()).unwrap().spec.unwrap();
        let redis_pod = redis.template.spec.unwrap();
        assert_eq!(spec.security_context, redis_pod.security_context);
        assert_eq!(
            container.security_context,
            redis_pod.containers[0].security_context
        );
        let claims: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .collect();
        assert_eq!(claims, ["redis-data-my-tenant-redis-0", BACKUP_CLAIM]);
        let env: BTreeMap<String, String> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["BACKUP_DIR"], BACKUP_DIR);
        assert_eq!(env["DATA_DIR"], "/data");
        assert_eq!(env["REDIS_CONF"], "/etc/redis/redis.conf");
    }

    #[test]
    fn a_malformed_storage_is_an_error_not_a_panic() {
        let yaml = BACKED_UP.replace("keep: 3}", "keep: 3, storage: lots}");
        assert!(matches!(
            backup_claim(&tenant(&yaml)),
            Err(RenderError::InvalidField { field, .. }) if field == "spec.redis.backup.storage"
        ));
    }
}
