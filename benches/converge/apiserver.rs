//! The API server's own count of the requests it served (`apiserver_request_total`),
//! read from its /metrics before and after a phase: writes, and reads (GET, LIST, WATCH)
//! apart.

use kube::Client;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];
const READ_VERBS: [&str; 3] = ["GET", "LIST", "WATCH"];

/// Resources only the operator (or the baseline) writes in steady state: controllers
/// write status subresources, kwok writes nodes and leases; those are not counted here.
const TENANT_RESOURCES: [&str; 10] = [
    "tenants",
    "namespaces",
    "configmaps",
    "services",
    "statefulsets",
    "deployments",
    "networkpolicies",
    "limitranges",
    "resourcequotas",
    "events",
];

/// Write requests by "VERB resource[/subresource]".
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Writes(pub BTreeMap<String, u64>);

impl Writes {
    pub async fn read(client: &Client) -> anyhow::Result<Writes> {
        Ok(Requests::read(client).await?.writes)
    }

    /// What happened between `self` (before) and `after`.
    pub fn delta(&self, after: &Writes) -> Writes {
        let changed = after
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v - self.0.get(k).copied().unwrap_or(0).min(*v)))
            .filter(|(_, d)| *d > 0)
            .collect();
        Writes(changed)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn by_verb(&self) -> BTreeMap<String, u64> {
        let mut verbs = BTreeMap::new();
        for (key, count) in &self.0 {
            let verb = key.split(' ').next().unwrap_or_default().to_string();
            *verbs.entry(verb).or_insert(0) += count;
        }
        verbs
    }

    /// The requests refused with `code` (e.g. "409": conflicts and AlreadyExists).
    pub fn refused_with(&self, code: &str) -> u64 {
        let suffix = format!(" ({code})");
        self.0
            .iter()
            .filter(|(key, _)| key.ends_with(&suffix))
            .map(|(_, count)| count)
            .sum()
    }

    /// Writes to the tenant objects and Events alone, whoever made them.
    pub fn is_quiet(&self) -> bool {
        self.on_tenant_objects().total() == 0
    }

    /// Writes to the objects a tenant is made of (not pods, claims, status subresources
    /// of workloads, nodes, leases: those are the controllers').
    pub fn on_tenant_objects(&self) -> Writes {
        Writes(
            self.0
                .iter()
                .filter(|(key, _)| is_tenant_object(key))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        )
    }
}

/// Write and read requests, from one read of the API server's /metrics.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    pub writes: Writes,
    /// Reads by "VERB resource[/subresource]" (GET, LIST, WATCH; a WATCH counts when it
    /// ends, so long watches show up late or not at all).
    pub reads: Writes,
}

impl Requests {
    pub async fn read(client: &Client) -> anyhow::Result<Requests> {
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let text = client.request_text(request).await?;
        Ok(Requests {
            writes: parse(&text, &WRITE_VERBS),
            reads: parse(&text, &READ_VERBS),
        })
    }

    pub fn delta(&self, after: &Requests) -> Requests {
        Requests {
            writes: self.writes.delta(&after.writes),
            reads: self.reads.delta(&after.reads),
        }
    }
}

fn is_tenant_object(key: &str) -> bool {
    let target = key.split(' ').nth(1).unwrap_or_default();
    let (resource, subresource) = target.split_once('/').unwrap_or((target, ""));
    TENANT_RESOURCES.contains(&resource) && (subresource.is_empty() || resource == "tenants")
}

fn parse(metrics: &str, verbs: &[&str]) -> Writes {
    let mut writes = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let verb = label(labels, "verb");
        if !verbs.contains(&verb) {
            continue;
        }
        let (resource, subresource) = (label(labels, "resource"), label(labels, "subresource"));
        let mut key = match subresource {
            "" => format!("{verb} {resource}"),
            sub => format!("{verb} {resource}/{sub}"),
        };
        // Refused requests (409 AlreadyExists or Conflict, 429, 5xx) are kept apart: they
        // tell retries and duplicates from the writes that changed something.
        let code = label(labels, "code");
        if !code.starts_with('2') {
            key.push_str(&format!(" ({code})"));
        }
        *writes.entry(key).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    Writes(writes)
}

fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(&format!(",{name}=\""))
        .nth(1)
        .or_else(|| labels.split(&format!("{{{name}=\"")).nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}
