//! Kubernetes Events with deterministic names, so a retried or repeated mirror finds the
//! Event it already wrote (`AlreadyExists` means "already mirrored").

use crate::crd::Tenant;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

/// The controller name users see in `kubectl describe`'s From column.
pub const REPORTER: &str = "tenant-controller";
/// Events of a cluster-scoped Tenant live here, where `kubectl describe` finds them.
pub const EVENT_NAMESPACE: &str = "default";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// The Event of journal record `seq`. A journal started after damage has a `chain` label:
/// its records restart at seq 1 and must not take the names of the replaced chain's Events.
pub fn transition_event_name(tenant: &Tenant, seq: u64, chain: Option<&str>) -> String {
    format!("{}.t{seq:06}", event_prefix(tenant, chain))
}

/// Any other Event of a tenant (an object created, a warning), sent while the tenant is
/// in the phase of journal record `seq`. Its name sorts after that phase's transition
/// Event and, within the phase, by the time it was sent. Names then sort as the times do,
/// which is what keeps `kubectl describe` in causal order: it sorts by `lastTimestamp`
/// (one-second resolution) with an unstable sort that leaves an already ordered list as
/// it is, and the API server lists Events by name. `key` tells apart Events sent within
/// one microsecond.
pub fn phase_event_name(
    tenant: &Tenant,
    chain: Option<&str>,
    seq: u64,
    at: DateTime<Utc>,
    key: &str,
) -> String {
    let digest = Sha256::digest(format!("{}/{key}", tenant.uid().unwrap_or_default()));
    format!(
        "{}.{:016}-{}",
        transition_event_name(tenant, seq, chain),
        at.timestamp_micros().max(0),
        &hex::encode(digest)[..8]
    )
}

fn event_prefix(tenant: &Tenant, chain: Option<&str>) -> String {
    match chain {
        None => format!("{}.{}", tenant.name_any(), short_uid(tenant)),
        Some(chain) => format!("{}.{}.{chain}", tenant.name_any(), short_uid(tenant)),
    }
}

pub fn event(
    tenant: &Tenant,
    name: String,
    type_: EventType,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
    instance: &str,
) -> Event {
    let time = k8s_openapi::jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default();
    let micro =
        k8s_openapi::jiff::Timestamp::from_microsecond(now.timestamp_micros()).unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(EVENT_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(Tenant::api_version(&()).into_owned()),
            kind: Some(Tenant::kind(&()).into_owned()),
            name: tenant.metadata.name.clone(),
            uid: tenant.metadata.uid.clone(),
            resource_version: tenant.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        source: Some(EventSource {
            component: Some(REPORTER.into()),
            host: None,
        }),
        reporting_component: Some(REPORTER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        first_timestamp: Some(Time(time)),
        last_timestamp: Some(Time(time)),
        event_time: Some(MicroTime(micro)),
        count: Some(1),
        action: Some(reason.into()),
        ..Event::default()
    }
}

fn short_uid(tenant: &Tenant) -> String {
    tenant.uid().unwrap_or_default().chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::basic;

    #[test]
    fn names_are_deterministic_valid_and_distinct() {
        let tenant = basic();
        assert_eq!(
            transition_event_name(&tenant, 7, None),
            "my-tenant.0b6f3f0e.t000007"
        );
        assert_eq!(
            transition_event_name(&tenant, 7, Some("r20261123125300")),
            "my-tenant.0b6f3f0e.r20261123125300.t000007"
        );
        let at = Utc::now();
        let a = phase_event_name(&tenant, None, 2, at, "ConfigMap/x/uid-1");
        assert_eq!(
            a,
            phase_event_name(&tenant, None, 2, at, "ConfigMap/x/uid-1")
        );
        assert_ne!(
            a,
            phase_event_name(&tenant, None, 2, at, "ConfigMap/x/uid-2")
        );
        for name in [
            a,
            transition_event_name(&tenant, 1, Some("r20261123125300")),
            phase_event_name(&tenant, Some("r1"), 999_999, at, "AuthUnavailable/down"),
        ] {
            assert!(name.len() <= 253);
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            );
        }
    }

    #[test]
    fn names_sort_in_causal_order() {
        let tenant = basic();
        let t = |secs: i64, micros: i64| {
            DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
                + chrono::Duration::microseconds(micros)
        };
        let story = [
            transition_event_name(&tenant, 1, None),
            phase_event_name(&tenant, None, 1, t(0, 10), "Namespace/n/u"),
            transition_event_name(&tenant, 2, None),
            phase_event_name(&tenant, None, 2, t(0, 900), "ConfigMap/c/u"),
            phase_event_name(&tenant, None, 2, t(0, 901), "Service/r/u"),
            phase_event_name(&tenant, None, 2, t(1, 2), "StatefulSet/r/u"),
            transition_event_name(&tenant, 3, None),
            phase_event_name(&tenant, None, 3, t(1, 5), "WriteRefused/x"),
            phase_event_name(&tenant, None, 3, t(90, 0), "Service/s/u"),
            transition_event_name(&tenant, 4, None),
            transition_event_name(&tenant, 10, None),
        ];
        let mut sorted = story.clone();
        sorted.sort();
        assert_eq!(sorted, story);
    }

    #[test]
    fn events_come_from_the_tenant_controller() {
        let e = event(
            &basic(),
            "n".into(),
            EventType::Normal,
            "Running",
            "Tenant is running",
            Utc::now(),
            "pod-1",
        );
        assert_eq!(
            e.source.and_then(|s| s.component).as_deref(),
            Some("tenant-controller")
        );
        assert_eq!(e.involved_object.kind.as_deref(), Some("Tenant"));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
    }
}
