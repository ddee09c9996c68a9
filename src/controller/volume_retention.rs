//! `spec.redis.retainStorage`: the Redis data volumes outlive the tenant. Before the
//! tenant's namespace is deleted (which deletes its claims, and with the usual `Delete`
//! reclaim policy their volumes and data), each volume bound to a Redis data claim is
//! switched to `Retain` and labelled with the tenant's name. Only once every such volume
//! says so does the namespace go: a failure holds the deletion, never loses the data.

use super::apply::retry;
use super::events::{self, EventType};
use super::{Context, Error};
use crate::crd::Tenant;
use crate::render::{DATA_VOLUME, TENANT_LABEL, redis_name};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

pub const RETAIN: &str = "Retain";
/// Marks a volume the operator kept for a deleted tenant (with `neurallog.io/tenant`).
pub const RETAINED_LABEL: &str = "neurallog.io/retained";
/// The claim the volume belonged to, `namespace/name`: where its data came from.
pub const RETAINED_CLAIM_ANNOTATION: &str = "neurallog.io/retained-from-claim";

/// Why a volume cannot be retained: the tenant's deletion waits until it can.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("cannot retain PersistentVolume {volume} of claim {claim}: {why}")]
pub struct RetentionRefused {
    volume: String,
    claim: String,
    why: String,
}

/// Whether `claim` is one of the tenant's Redis data claims (the StatefulSet's claim
/// template names them `<template>-<statefulset>-<ordinal>`).
pub fn is_redis_data_claim(tenant: &str, claim_name: &str) -> bool {
    claim_name
        .strip_prefix(&format!("{DATA_VOLUME}-{}-", redis_name(tenant)))
        .is_some_and(|ordinal| !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
}

/// The merge patch that retains `volume` for `tenant`, `None` when it already is, or why
/// it must not be touched (it is not bound to `claim`).
pub fn retention_patch(
    tenant: &str,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<Option<Value>, RetentionRefused> {
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let bound_to_claim = claim_ref.is_some_and(|r| {
        r.namespace == claim.metadata.namespace
            && r.name == claim.metadata.name
            && (r.uid.is_none() || r.uid == claim.metadata.uid)
    });
    let claim_id = format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.name_any()
    );
    if !bound_to_claim {
        return Err(RetentionRefused {
            volume: volume.name_any(),
            claim: claim_id,
            why: "the volume is not bound to that claim".into(),
        });
    }
    let policy = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    let labels = volume.labels();
    let retained = policy == Some(RETAIN)
        && labels.get(TENANT_LABEL).map(String::as_str) == Some(tenant)
        && labels.get(RETAINED_LABEL).map(String::as_str) == Some("true");
    if retained {
        return Ok(None);
    }
    Ok(Some(json!({
        "metadata": {
            "labels": { TENANT_LABEL: tenant, RETAINED_LABEL: "true" },
            "annotations": { RETAINED_CLAIM_ANNOTATION: claim_id },
        },
        "spec": { "persistentVolumeReclaimPolicy": RETAIN },
    })))
}

impl Context {
    /// Retains every volume bound to one of the tenant's Redis data claims in `namespace`,
    /// with an Event for each volume this call switched. Claims not bound yet hold no data.
    pub(super) async fn retain_redis_volumes(
        &self,
        tenant: &Tenant,
        namespace: &str,
        seq: u64,
    ) -> Result<(), Error> {
        let name = tenant.name_any();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let all = ListParams::default();
        let listed = retry(|| claims.list(&all)).await.map_err(Error::Kube)?;
        for claim in listed
            .items
            .iter()
            .filter(|c| is_redis_data_claim(&name, &c.name_any()))
        {
            let Some(volume_name) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
                continue;
            };
            let Some(volume) = retry(|| volumes.get_opt(&volume_name))
                .await
                .map_err(Error::Kube)?
            else {
                continue;
            };
            let patch = match retention_patch(&name, claim, &volume) {
                Ok(Some(patch)) => patch,
                Ok(None) => continue,
                Err(refused) => {
                    let message = format!(
                        "The tenant's deletion waits: spec.redis.retainStorage is set and {refused}"
                    );
                    self.warn_once(tenant, seq, "RetentionRefused", &message, &message)
                        .await;
                    return Err(Error::Retention(refused));
                }
            };
            self.metrics.count_write("patch", "persistentvolumes");
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            retry(|| volumes.patch(&volume_name, &params, &patch))
                .await
                .map_err(|source| Error::Write {
                    object: format!("PersistentVolume {volume_name}"),
                    source,
                })?;
            let message = format!(
                "Retained PersistentVolume {volume_name} (claim {namespace}/{}): reclaim policy \
                 Retain, labelled {TENANT_LABEL}={name}; a new tenant can start from it \
                 (README: Restoring a tenant from a retained volume)",
                claim.name_any()
            );
            let event = events::phase_event_name(
                tenant,
                self.chain(),
                seq,
                chrono::Utc::now(),
                &format!("PersistentVolume/{volume_name}/retained"),
            );
            self.emit_event(tenant, event, EventType::Normal, "VolumeRetained", &message)
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn claim(name: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("tenant-acme".into()),
                uid: Some("claim-uid".into()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    fn volume(claim_name: &str, policy: &str, labels: &[(&str, &str)]) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-claim-uid".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                persistent_volume_reclaim_policy: Some(policy.into()),
                claim_ref: Some(ObjectReference {
                    namespace: Some("tenant-acme".into()),
                    name: Some(claim_name.into()),
                    uid: Some("claim-uid".into()),
                    ..ObjectReference::default()
                }),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    #[test]
    fn only_the_statefulsets_data_claims_are_the_tenants_redis_data() {
        assert!(is_redis_data_claim("acme", "redis-data-acme-redis-0"));
        assert!(is_redis_data_claim("acme", "redis-data-acme-redis-12"));
        for other in [
            "redis-data-acme-redis-",
            "redis-data-acme-redis-0x",
            "redis-data-acme-redis2-redis-0",
            "backup-acme",
            "redis-data-other-redis-0",
        ] {
            assert!(!is_redis_data_claim("acme", other), "{other}");
        }
    }

    #[test]
    fn a_deleting_volume_is_switched_to_retain_and_labelled_with_its_tenant() {
        let claim = claim("redis-data-acme-redis-0");
        let patch = retention_patch("acme", &claim, &volume(&claim.name_any(), "Delete", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(patch["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(patch["metadata"]["labels"][TENANT_LABEL], "acme");
        assert_eq!(patch["metadata"]["labels"][RETAINED_LABEL], "true");
        assert_eq!(
            patch["metadata"]["annotations"][RETAINED_CLAIM_ANNOTATION],
            "tenant-acme/redis-data-acme-redis-0"
        );
    }

    #[test]
    fn a_volume_already_retained_for_the_tenant_needs_no_write() {
        let claim = claim("redis-data-acme-redis-0");
        let retained = volume(
            &claim.name_any(),
            "Retain",
            &[(TENANT_LABEL, "acme"), (RETAINED_LABEL, "true")],
        );
        assert_eq!(retention_patch("acme", &claim, &retained), Ok(None));
        // Retain set by someone else, without the labels users find it by: labelled.
        let unlabelled = volume(&claim.name_any(), "Retain", &[]);
        assert!(
            retention_patch("acme", &claim, &unlabelled)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_volume_bound_to_another_claim_is_never_touched() {
        let claim = claim("redis-data-acme-redis-0");
        let refused = retention_patch("acme", &claim, &volume("someone-else", "Delete", &[]));
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("pvc-claim-uid"), "{message}");
        assert!(
            message.contains("tenant-acme/redis-data-acme-redis-0"),
            "{message}"
        );
        let mut other_uid = volume(&claim.name_any(), "Delete", &[]);
        if let Some(r) = other_uid.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            r.uid = Some("an-earlier-claim".into());
        }
        assert!(retention_patch("acme", &claim, &other_uid).is_err());
    }
}
