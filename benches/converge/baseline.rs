//! The baseline: what the operator's objects cost without the operator. A plain client
//! creates the Tenant (for the owner references, as the operator side does) and applies
//! the objects the operator's pure renderers produce, in the operator's order, with the
//! same kube client settings, server-side apply parameters, retry policy and concurrency:
//! no journal, no phase machine, no status, no Events, no Auth, no waiting on Redis
//! before the server.
//!
//! One difference, on purpose: the `managed-by` label says `bench-baseline`, so that the
//! operator's label-selected watch caches (and its memory) never see these objects.
//!
//! [`AGAIN`] is the same baseline a second time, under labels of its own: run after the
//! first on the same cluster (`CONVERGE_RUN=baseline-twice`), it shows what the first
//! side's converged tenants cost the side that comes after them.

use crate::mirror::Mirror;
use crate::tenants;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use neurallog_machines::Phase;
use neurallog_operator::controller::apply::{FIELD_MANAGER, retry};
use neurallog_operator::controller::compare::{DESIRED_HASH_ANNOTATION, desired_hash};
use neurallog_operator::crd::namespace_for;
use neurallog_operator::render::{self, MANAGED_BY_LABEL, RenderSettings};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One run of the baseline: the labels that tell its objects from any other side's.
pub struct Run {
    /// The Tenants' side label (see `tenants`).
    pub side: &'static str,
    /// The `managed-by` label of every other object.
    pub managed_by: &'static str,
    /// Tenant names are `<prefix>-00000` ...
    pub prefix: &'static str,
    /// Also what the operator writes beyond the objects (`mirror`), with the objects.
    pub mirrored: bool,
}

pub const FIRST: Run = Run {
    side: "baseline",
    managed_by: "bench-baseline",
    prefix: "bl",
    mirrored: false,
};

pub const AGAIN: Run = Run {
    side: "baseline-again",
    managed_by: "bench-baseline-again",
    prefix: "bb",
    mirrored: false,
};

pub const MIRRORED: Run = Run {
    side: "baseline-mirrored",
    managed_by: "bench-baseline-mirrored",
    prefix: "bm",
    mirrored: true,
};

impl Run {
    pub fn workload_selector(&self) -> String {
        format!("{MANAGED_BY_LABEL}={}", self.managed_by)
    }
}

/// Provisions every named tenant, `concurrency` tenants at a time; returns the write
/// requests sent.
pub async fn provision_all(
    client: &Client,
    run: &Run,
    names: &[String],
    concurrency: usize,
) -> anyhow::Result<u64> {
    let writes = Arc::new(AtomicU64::new(0));
    let settings = RenderSettings::default();
    futures::stream::iter(names)
        .map(|name| provision(client, run, name, &settings, &writes))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(writes.load(Ordering::Relaxed))
}

async fn provision(
    client: &Client,
    run: &Run,
    name: &str,
    settings: &RenderSettings,
    writes: &AtomicU64,
) -> anyhow::Result<()> {
    let tenant = tenants::create(client, &tenants::template(name, run.side), writes).await?;
    let mirror = run
        .mirrored
        .then(|| Mirror::new(client, tenant.clone(), writes));
    let mirror = mirror.as_ref();
    if let Some(mirror) = mirror {
        mirror.hold_finalizer().await?;
        mirror.transition(1, Phase::Pending).await?;
    }
    let mut namespace = render::namespace(&tenant)?;
    relabel(&mut namespace.metadata, run.managed_by);
    writes.fetch_add(1, Ordering::Relaxed);
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let ns = namespace_for(name);
    if let Some(mirror) = mirror {
        let text = format!("Created namespace {ns}");
        mirror.created(1, &format!("Namespace/{ns}"), &text).await?;
        mirror.transition(2, Phase::ProvisioningRedis).await?;
    }
    let apply = Applier {
        client,
        namespace: ns,
        managed_by: run.managed_by,
        writes,
        mirror,
    };
    apply.object(render::limit_range(&tenant)?, None).await?;
    apply.object(render::resource_quota(&tenant)?, None).await?;
    for policy in render::network_policies(&tenant, settings)? {
        apply.object(policy, None).await?;
    }
    let redis = (2, Phase::ProvisioningRedis);
    let server = (3, Phase::ProvisioningServer);
    apply
        .object(
            render::redis_config_map(&tenant)?,
            Some((redis.0, "Redis ConfigMap")),
        )
        .await?;
    apply
        .object(
            render::redis_service(&tenant)?,
            Some((redis.0, "Redis Service")),
        )
        .await?;
    apply
        .object(
            render::redis_statefulset(&tenant)?,
            Some((redis.0, "Redis StatefulSet")),
        )
        .await?;
    if let Some(mirror) = mirror {
        mirror.status(redis.0, redis.1).await?;
        mirror.transition(server.0, server.1).await?;
    }
    apply
        .object(
            render::server_service(&tenant)?,
            Some((server.0, "Server Service")),
        )
        .await?;
    apply
        .object(
            render::server_deployment(&tenant, settings)?,
            Some((server.0, "Server Deployment")),
        )
        .await?;
    if let Some(mirror) = mirror {
        mirror.status(server.0, server.1).await?;
        mirror.transition(4, Phase::Running).await?;
        mirror.status(4, Phase::Running).await?;
    }
    Ok(())
}

fn relabel(meta: &mut ObjectMeta, managed_by: &str) {
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(MANAGED_BY_LABEL.into(), managed_by.into());
}

struct Applier<'a> {
    client: &'a Client,
    namespace: String,
    managed_by: &'a str,
    writes: &'a AtomicU64,
    mirror: Option<&'a Mirror<'a>>,
}

impl Applier<'_> {
    /// Server-side apply, with the desired-state annotation the operator adds; `created`
    /// (the journal record of the phase, the object's label) names its "Created" Event
    /// when the run is mirrored.
    async fn object<K>(&self, mut desired: K, created: Option<(u64, &str)>) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        relabel(desired.meta_mut(), self.managed_by);
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
        let applied = retry(|| api.patch(&name, &params, &patch)).await?;
        if let (Some(mirror), Some((seq, label))) = (self.mirror, created) {
            let key = format!(
                "{}/{name}/{}",
                K::kind(&()),
                applied.meta().uid.as_deref().unwrap_or_default()
            );
            mirror
                .created(seq, &key, &format!("Created {label}"))
                .await?;
        }
        Ok(())
    }
}
