//! What the operator must write beyond the objects, written by a plain client: the
//! finalizer, one status patch per phase a user sees (ProvisioningRedis,
//! ProvisioningServer, Running) and the guide's ten Events (four transitions, six
//! "Created ..."), built by the operator's own code and sent in the operator's order.
//! The baseline with these (`baseline::MIRRORED`) sends them with the objects, at once,
//! without waiting for Redis before the server. Meant as the floor of any operator of
//! this product, it is not one: the operator, which spreads the same writes over the
//! phases, converged sooner in 2 of 3 rounds (README, round eighteen).

use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use neurallog_machines::{Input, Phase, Trigger, message};
use neurallog_operator::controller::FINALIZER;
use neurallog_operator::controller::events::{
    EVENT_NAMESPACE, EventType, event, phase_event_name, transition_event_name,
};
use neurallog_operator::controller::observation::{NamespaceState, Observation, WorkloadState};
use neurallog_operator::controller::status::{JournalTail, desired_status};
use neurallog_operator::crd::{Tenant, namespace_for};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Mirror<'a> {
    client: &'a Client,
    tenant: Tenant,
    writes: &'a AtomicU64,
}

impl<'a> Mirror<'a> {
    pub fn new(client: &'a Client, tenant: Tenant, writes: &'a AtomicU64) -> Self {
        Mirror {
            client,
            tenant,
            writes,
        }
    }

    /// The finalizer, as the operator adds it: a JSON patch guarded by the version read.
    pub async fn hold_finalizer(&self) -> anyhow::Result<()> {
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": self.tenant.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Api::<Tenant>::all(self.client.clone())
            .patch(
                &self.tenant.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await?;
        Ok(())
    }

    /// The Event of journal record `seq`, the transition into `to`.
    pub async fn transition(&self, seq: u64, to: Phase) -> anyhow::Result<()> {
        let name = transition_event_name(&self.tenant, seq, None);
        let text = message(to, &Input::new(Trigger::Observed, 1));
        self.send(name, to.as_str(), &text).await
    }

    /// "Created ..." of object `key` in the phase of record `seq`.
    pub async fn created(&self, seq: u64, key: &str, text: &str) -> anyhow::Result<()> {
        let name = phase_event_name(&self.tenant, None, seq, chrono::Utc::now(), key);
        self.send(name, "Created", text).await
    }

    async fn send(&self, name: String, reason: &str, text: &str) -> anyhow::Result<()> {
        let event = event(
            &self.tenant,
            name,
            EventType::Normal,
            reason,
            text,
            chrono::Utc::now(),
            "bench-mirror",
        );
        self.writes.fetch_add(1, Ordering::Relaxed);
        Api::<Event>::namespaced(self.client.clone(), EVENT_NAMESPACE)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }

    /// The status the operator writes when record `seq` took the tenant to `phase`, with
    /// Redis and the server as far as they are then (created, not ready yet).
    pub async fn status(&self, seq: u64, phase: Phase) -> anyhow::Result<()> {
        let created = |exists: bool| WorkloadState {
            exists,
            desired: 1,
            current: exists,
            ..WorkloadState::default()
        };
        let (redis, server) = match phase {
            Phase::ProvisioningRedis => (created(true), created(false)),
            Phase::ProvisioningServer => (ready(), created(true)),
            _ => (ready(), ready()),
        };
        let observation = Observation {
            namespace: NamespaceState::Ours { active: true },
            redis,
            server,
            ..Observation::default()
        };
        let tail = JournalTail {
            phase,
            sequence: seq,
            hash: format!("{:064x}", seq),
            message: message(phase, &Input::new(Trigger::Observed, 1)),
            chain: None,
        };
        let status = desired_status(
            Some(&tail),
            &namespace_for(&self.tenant.name_any()),
            self.tenant.metadata.generation.unwrap_or(0),
            &observation,
            None,
            chrono::Utc::now(),
        );
        self.writes.fetch_add(1, Ordering::Relaxed);
        Api::<Tenant>::all(self.client.clone())
            .patch_status(
                &self.tenant.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await?;
        Ok(())
    }
}

fn ready() -> WorkloadState {
    WorkloadState {
        exists: true,
        ready: 1,
        desired: 1,
        current: true,
        ..WorkloadState::default()
    }
}
