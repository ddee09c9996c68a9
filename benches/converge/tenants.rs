//! The benchmark's Tenants: examples/basic-tenant.yaml, renamed and labelled with the side
//! (operator or baseline) that provisions them.

use futures::{StreamExt, TryStreamExt};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use neurallog_operator::crd::Tenant;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub const SIDE_LABEL: &str = "bench.neurallog.io/side";

pub fn selector(side: &str) -> String {
    format!("{SIDE_LABEL}={side}")
}

pub fn template(name: &str, side: &str) -> Tenant {
    let mut tenant: Tenant = serde_yaml::from_str(include_str!("../../examples/basic-tenant.yaml"))
        .expect("examples/basic-tenant.yaml is a Tenant");
    tenant.metadata.name = Some(name.into());
    tenant.labels_mut().insert(SIDE_LABEL.into(), side.into());
    tenant
}

pub fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Creates one Tenant; returns it as the API server stored it (with its uid).
pub async fn create(client: &Client, tenant: &Tenant, writes: &AtomicU64) -> kube::Result<Tenant> {
    writes.fetch_add(1, Ordering::Relaxed);
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), tenant)
        .await
}

/// Creates the named Tenants of `side`, `concurrency` requests in flight.
pub async fn create_all(
    client: &Client,
    names: &[String],
    side: &str,
    concurrency: usize,
    writes: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    futures::stream::iter(names)
        .map(|name| {
            let writes = writes.clone();
            async move { create(client, &template(name, side), &writes).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}
