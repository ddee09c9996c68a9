//! The applier's part of growing the Redis volume (see `controller::storage`): ask each
//! claim for the new size, then replace the StatefulSet so its claim template follows.

use super::{Applier, is_transient, retry, write_error};
use crate::controller::Error;
use crate::controller::storage::{StorageState, template_outgrown};
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;

impl Applier<'_> {
    /// Grows the Redis claims to the spec's size and replaces a StatefulSet whose claim
    /// template asks for another. Whether the StatefulSet may be applied now: not while
    /// its claims cannot grow (the template would outgrow them), nor while it is replaced.
    pub(super) async fn grow_redis_storage(&self, desired: &StatefulSet) -> Result<bool, Error> {
        match &self.obs.storage {
            StorageState::Refused { .. } => return Ok(false),
            StorageState::Growing { to, to_ask, .. } => {
                for claim in to_ask {
                    self.ask_for_more(claim, to).await?;
                }
            }
            StorageState::Settled => {}
        }
        self.replace_outgrown(desired).await
    }

    /// Asks claim `name` for `size`; its StorageClass's resizer does the rest.
    async fn ask_for_more(&self, name: &str, size: &str) -> Result<(), Error> {
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
        self.ctx
            .metrics
            .count_write("patch", "persistentvolumeclaims");
        let patch = Patch::Merge(&patch);
        let params = PatchParams::default();
        (|| api.patch(name, &params, &patch))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(8)
                    .with_jitter(),
            )
            .when(|e| is_transient(e) || is_quota_not_seen_yet(e))
            .await
            .map_err(write_error("PersistentVolumeClaim", name))?;
        tracing::info!(claim = name, size, "asked the Redis claim for more storage");
        Ok(())
    }

    /// Deletes the StatefulSet, leaving its pods running (orphaned), when its claim
    /// template asks for another size than the spec: the API server refuses any change of
    /// the template, and the StatefulSet created again adopts the pods. Whether the
    /// StatefulSet may be applied now.
    async fn replace_outgrown(&self, desired: &StatefulSet) -> Result<bool, Error> {
        let ns = self.namespace();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let key = ObjectRef::new(&name).within(&ns);
        let Some(live) = self.ctx.stores.statefulsets.get(&key) else {
            return Ok(true);
        };
        if live.metadata.deletion_timestamp.is_some() {
            // Applying now would write to the object going away.
            return Ok(false);
        }
        if !template_outgrown(&live, desired) {
            return Ok(true);
        }
        let api: Api<StatefulSet> = Api::namespaced(self.ctx.client.clone(), &ns);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.ctx.metrics.count_write("delete", "statefulsets");
        match retry(|| api.delete(&name, &params)).await {
            Ok(_) => {}
            // Gone already, or replaced by someone else meanwhile: the next pass sees.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(write_error("StatefulSet", &name)(e)),
        }
        tracing::info!(
            statefulset = %name,
            "replacing the Redis StatefulSet (its pods keep running) for its claim template to ask for the new size"
        );
        Ok(false)
    }
}

/// The quota admission refused the claim's new size, though the quota was raised for it
/// earlier in the pass: the API server's quota cache may not show the raise yet. Retried a
/// few seconds; a claim that truly exceeds the quota is refused then.
fn is_quota_not_seen_yet(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 403 && e.message.contains("exceeded quota"))
}
