//! A ResourceQuota and LimitRange for the tenant namespace, derived from the spec: room
//! for every replica of each component (the most an autoscaled server may run) plus one
//! rolling-update surge pod.

use super::backup_storage;
use super::resources::{
    BACKUP_DEFAULTS, ContainerResources, REDIS_DEFAULTS, ResourceDefaults, SERVER_DEFAULTS,
    effective_resources,
};
use super::{RenderError, child_meta};
use crate::crd::Tenant;
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use std::collections::BTreeMap;

pub const QUOTA_NAME: &str = "tenant-quota";
pub const LIMIT_RANGE_NAME: &str = "tenant-limits";

pub fn resource_quota(tenant: &Tenant) -> Result<ResourceQuota, RenderError> {
    let server = &tenant.spec.server;
    let redis = &tenant.spec.redis;
    let server_pods = i64::from(server.scale().max()) + 1;
    let redis_pods = i64::from(redis.replicas) + 1;
    let server_each = effective_resources(
        server.resources.as_ref(),
        &SERVER_DEFAULTS,
        "spec.server.resources",
    )?;
    let redis_each = effective_resources(
        redis.resources.as_ref(),
        &REDIS_DEFAULTS,
        "spec.redis.resources",
    )?;
    // The backup Job runs one pod at a time (concurrencyPolicy Forbid), beside the rest.
    let backup_pods = i64::from(redis.backup.is_some());
    let backup_each = effective_resources(None, &BACKUP_DEFAULTS, "spec.redis.backup")?;
    let total = |pick: fn(&ContainerResources) -> &Quantity| -> Result<Quantity, RenderError> {
        let server = scaled(pick(&server_each), server_pods)?;
        let redis = scaled(pick(&redis_each), redis_pods)?;
        let backup = scaled(pick(&backup_each), backup_pods)?;
        server
            .checked_add(&redis)
            .and_then(|sum| sum.checked_add(&backup))
            .ok_or_else(overflow)
    };
    let storage = Quantity::parse(&redis.storage).map_err(|e| RenderError::InvalidField {
        field: "spec.redis.storage".into(),
        message: e.to_string(),
    })?;
    let mut storage_total = scaled(&storage, i64::from(redis.replicas))?;
    let mut claims = i64::from(redis.replicas);
    if let Some(backups) = backup_storage(tenant)? {
        storage_total = storage_total.checked_add(&backups).ok_or_else(overflow)?;
        claims += 1;
    }
    let hard = BTreeMap::from([
        (
            "pods".to_string(),
            (server_pods + redis_pods + backup_pods).to_string(),
        ),
        (
            "requests.cpu".to_string(),
            total(|r| &r.cpu_request)?.to_cpu_string(),
        ),
        (
            "limits.cpu".to_string(),
            total(|r| &r.cpu_limit)?.to_cpu_string(),
        ),
        (
            "requests.memory".to_string(),
            total(|r| &r.memory_request)?.to_bytes_string(),
        ),
        (
            "limits.memory".to_string(),
            total(|r| &r.memory_limit)?.to_bytes_string(),
        ),
        ("persistentvolumeclaims".to_string(), claims.to_string()),
        (
            "requests.storage".to_string(),
            storage_total.to_bytes_string(),
        ),
    ]);
    Ok(ResourceQuota {
        metadata: child_meta(tenant, QUOTA_NAME.into(), None)?,
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard.into_iter().map(|(k, v)| (k, K8sQuantity(v))).collect()),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    })
}

/// `quota` with room for a backup claim the spec no longer asks for but that still exists
/// (turning backups off keeps the claim and its snapshots): the API server counts it
/// against the quota all the same, and without the room no other claim could grow.
pub fn counting_kept_claim(
    quota: &ResourceQuota,
    storage: &Quantity,
) -> Result<ResourceQuota, RenderError> {
    let mut quota = quota.clone();
    let Some(hard) = quota.spec.as_mut().and_then(|s| s.hard.as_mut()) else {
        return Ok(quota);
    };
    let invalid = |message: String| RenderError::InvalidField {
        field: "spec.redis.backup".into(),
        message,
    };
    if let Some(total) = hard.get_mut("requests.storage") {
        let sum = Quantity::parse(&total.0)
            .map_err(|e| invalid(e.to_string()))?
            .checked_add(storage)
            .ok_or_else(overflow)?;
        total.0 = sum.to_bytes_string();
    }
    if let Some(claims) = hard.get_mut("persistentvolumeclaims") {
        let count: i64 = claims.0.parse().map_err(|_| invalid(claims.0.clone()))?;
        claims.0 = (count + 1).to_string();
    }
    Ok(quota)
}

/// Defaults for containers the operator did not render (a user's debug pod, say), so the
/// quota does not reject them for lacking requests and limits.
pub fn limit_range(tenant: &Tenant) -> Result<LimitRange, RenderError> {
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), K8sQuantity(cpu.into())),
            ("memory".to_string(), K8sQuantity(memory.into())),
        ])
    };
    let d: &ResourceDefaults = &SERVER_DEFAULTS;
    Ok(LimitRange {
        metadata: child_meta(tenant, LIMIT_RANGE_NAME.into(), None)?,
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(pair(d.cpu_limit, d.memory_limit)),
                default_request: Some(pair(d.cpu_request, d.memory_request)),
                ..LimitRangeItem::default()
            }],
        }),
    })
}

fn scaled(each: &Quantity, count: i64) -> Result<Quantity, RenderError> {
    each.checked_mul(count).ok_or_else(overflow)
}

fn overflow() -> RenderError {
    RenderError::InvalidField {
        field: "spec.resources".into(),
        message: "the namespace quota would overflow; use smaller values".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{basic, customized};

    fn hard(tenant: &Tenant) -> BTreeMap<String, String> {
        resource_quota(tenant)
            .expect("renders")
            .spec
            .and_then(|s| s.hard)
            .expect("hard")
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    #[test]
    fn the_quota_has_room_for_every_replica_plus_one_surge_pod_each() {
        let hard = hard(&customized());
        // server: 2 replicas + 1 surge at 200m/500m, 256Mi/512Mi;
        // redis: 1 + 1 at 100m/300m, 128Mi/256Mi.
        assert_eq!(hard["pods"], "5");
        assert_eq!(hard["requests.cpu"], "800m");
        assert_eq!(hard["limits.cpu"], "2100m");
        assert_eq!(hard["requests.memory"], "1Gi");
        assert_eq!(hard["limits.memory"], "2Gi");
        assert_eq!(hard["persistentvolumeclaims"], "1");
        assert_eq!(hard["requests.storage"], "5Gi");
    }

    #[test]
    fn a_kept_backup_claim_keeps_its_room_in_the_quota() {
        let quota = resource_quota(&customized()).unwrap();
        let kept = counting_kept_claim(&quota, &Quantity::parse("8Gi").unwrap()).unwrap();
        let hard = kept.spec.unwrap().hard.unwrap();
        // The Redis claim, 5Gi, and the kept backup claim, 8Gi.
        assert_eq!(hard["requests.storage"].0, "13Gi");
        assert_eq!(hard["persistentvolumeclaims"].0, "2");
    }

    #[test]
    fn backups_add_their_pod_and_their_claim() {
        let mut tenant = customized();
        tenant.spec.redis.backup = Some(crate::crd::RedisBackup {
            schedule: "0 3 * * *".into(),
            keep: 2,
            storage: None,
        });
        let hard = hard(&tenant);
        // One more pod at 50m/500m, 64Mi/128Mi.
        assert_eq!(hard["pods"], "6");
        assert_eq!(hard["requests.cpu"], "850m");
        assert_eq!(hard["limits.cpu"], "2600m");
        assert_eq!(hard["requests.memory"], "1088Mi");
        assert_eq!(hard["limits.memory"], "2176Mi");
        // The Redis claim, 5Gi, and the backup claim, (2 + 1) x 5Gi.
        assert_eq!(hard["persistentvolumeclaims"], "2");
        assert_eq!(hard["requests.storage"], "20Gi");
    }

    #[test]
    fn defaults_fill_in_when_the_spec_has_no_resources() {
        let hard = hard(&basic());
        assert_eq!(hard["pods"], "4");
        assert_eq!(hard["limits.cpu"], "2");
        assert_eq!(hard["requests.storage"], "1Gi");
    }
}
