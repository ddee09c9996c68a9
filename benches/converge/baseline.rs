//! The baseline: what the operator's objects cost without the operator. A plain client
//! creates the Tenant (for the owner references, as the operator side does) and applies
//! the objects the operator's pure renderers produce, in the operator's order, with the
//! same kube client settings, server-side apply parameters, retry policy and concurrency:
//! no journal, no phase machine, no status, no Events, no Auth, no waiting on Redis
//! before the server.
//!
//! One difference, on purpose: the `managed-by` label says `bench-baseline`, so that the
//! operator's label-selected watch caches (and its memory) never see these objects.

use crate::tenants;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use neurallog_operator::controller::apply::{FIELD_MANAGER, retry};
use neurallog_operator::controller::compare::{DESIRED_HASH_ANNOTATION, desired_hash};
use neurallog_operator::crd::namespace_for;
use neurallog_operator::render::{self, MANAGED_BY_LABEL, RenderSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub const SIDE: &str = "baseline";
pub const MANAGED_BY: &str = "bench-baseline";

pub fn workload_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Provisions every named tenant, `concurrency` tenants at a time; returns the write
/// requests sent.
pub async fn provision_all(
    client: &Client,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<u64> {
    let writes = Arc::new(AtomicU64::new(0));
    let settings = RenderSettings::default();
    futures::stream::iter(names)
        .map(|name| provision(client, name, &settings, &writes))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(writes.load(Ordering::Relaxed))
}

async fn provision(
    client: &Client,
    name: &str,
    settings: &RenderSettings,
    writes: &AtomicU64,
) -> anyhow::Result<()> {
    let tenant = tenants::create(client, &tenants::template(name, SIDE), writes).await?;
    let mut namespace = render::namespace(&tenant)?;
    relabel(&mut namespace.metadata);
    writes.fetch_add(1, Ordering::Relaxed);
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let apply = Applier {
        client,
        namespace: namespace_for(name),
        writes,
    };
    apply.object(render::limit_range(&tenant)?).await?;
    apply.object(render::resource_quota(&tenant)?).await?;
    for policy in render::network_policies(&tenant, settings)? {
        apply.object(policy).await?;
    }
    apply.object(render::redis_config_map(&tenant)?).await?;
    apply.object(render::redis_service(&tenant)?).await?;
    apply.object(render::redis_statefulset(&tenant)?).await?;
    apply.object(render::server_service(&tenant)?).await?;
    apply
        .object(render::server_deployment(&tenant, settings)?)
        .await
}

fn relabel(meta: &mut ObjectMeta) {
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
}

struct Applier<'a> {
    client: &'a Client,
    namespace: String,
    writes: &'a AtomicU64,
}

impl Applier<'_> {
    /// Server-side apply, with the desired-state annotation the operator adds.
    async fn object<K>(&self, mut desired: K) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        relabel(desired.meta_mut());
        let hash = desired_hash(&desired);
        desired
            .meta_mut()
            .annotations
            .get_or_insert_with(Default::default)
            .insert(DESIRED_HASH_ANNOTATION.into(), hash);
        let name = desired.meta().name.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&desired);
        self.writes.fetch_add(1, Ordering::Relaxed);
        retry(|| api.patch(&name, &params, &patch)).await?;
        Ok(())
    }
}
