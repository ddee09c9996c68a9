//! Redis: a ConfigMap holding redis.conf, a headless Service and a StatefulSet with a volume.

use super::labels::selector_labels;
use super::placement::place;
use super::resources::{REDIS_DEFAULTS, effective_resources};
use super::security::{container_security, pod_security};
use super::{RenderError, RenderSettings, child_meta, string_map};
use crate::crd::{Tenant, namespace_for};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const REDIS_PORT: i32 = 6379;
/// The redis user of the official images.
pub(super) const REDIS_UID: i64 = 999;
const CONFIG_KEY: &str = "redis.conf";
const CONFIG_DIR: &str = "/etc/redis";
const DATA_DIR: &str = "/data";
pub const DATA_VOLUME: &str = "redis-data";
/// Changes whenever redis.conf does, so that a config edit rolls the pod.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "neurallog.io/redis-config-checksum";

/// Settings the pod depends on; user config may not override them.
const FIXED_SETTINGS: [(&str, &str); 5] = [
    ("bind", "0.0.0.0"),
    ("port", "6379"),
    ("dir", DATA_DIR),
    // No password (secrets do not belong in a ConfigMap): the network policies isolate
    // Redis instead, so it must accept connections from the server's pods.
    ("protected-mode", "no"),
    ("daemonize", "no"),
];

pub fn redis_name(tenant: &str) -> String {
    format!("{tenant}{}", crate::crd::REDIS_SUFFIX)
}

pub fn redis_config_map_name(tenant: &str) -> String {
    format!("{tenant}-redis-config")
}

/// The DNS name of the headless Service, as the server's `REDIS_HOST`.
pub fn redis_host(tenant: &str, settings: &RenderSettings) -> String {
    format!(
        "{}.{}.svc.{}",
        redis_name(tenant),
        namespace_for(tenant),
        settings.cluster_domain
    )
}

/// redis.conf: the fixed settings, then the user's keys in sorted order.
pub fn redis_conf(tenant: &Tenant) -> String {
    let mut conf = String::from(
        "# Rendered by the NeuralLog tenant operator; edit spec.redis.config instead.\n",
    );
    for (key, value) in FIXED_SETTINGS {
        conf.push_str(&crate::redis_config::render_line(key, value));
        conf.push('\n');
    }
    for (key, value) in &tenant.spec.redis.config {
        conf.push_str(&crate::redis_config::render_line(key, value));
        conf.push('\n');
    }
    conf
}

pub fn redis_config_map(tenant: &Tenant) -> Result<ConfigMap, RenderError> {
    let name = tenant_name(tenant);
    Ok(ConfigMap {
        metadata: child_meta(tenant, redis_config_map_name(&name), Some("redis"))?,
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            redis_conf(tenant),
        )])),
        ..ConfigMap::default()
    })
}

/// Headless, so each Redis pod has a stable DNS name.
pub fn redis_service(tenant: &Tenant) -> Result<Service, RenderError> {
    let name = tenant_name(tenant);
    Ok(Service {
        metadata: child_meta(tenant, redis_name(&name), Some("redis"))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&name, "redis")),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: REDIS_PORT,
                target_port: Some(IntOrString::Int(REDIS_PORT)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn redis_statefulset(tenant: &Tenant) -> Result<StatefulSet, RenderError> {
    let name = tenant_name(tenant);
    let spec = &tenant.spec.redis;
    let checksum = hex::encode(Sha256::digest(redis_conf(tenant).as_bytes()));
    let mut pod_meta = child_meta(tenant, String::new(), Some("redis"))?;
    pod_meta.name = None;
    pod_meta.namespace = None;
    pod_meta.owner_references = None;
    pod_meta.annotations = Some(string_map([(CONFIG_CHECKSUM_ANNOTATION, &checksum)]));
    Ok(StatefulSet {
        metadata: child_meta(tenant, redis_name(&name), Some("redis"))?,
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(redis_name(&name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, "redis")),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(redis_pod(tenant)?),
            },
            volume_claim_templates: Some(vec![data_claim(
                &spec.storage,
                spec.storage_class_name.as_deref(),
            )]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn redis_pod(tenant: &Tenant) -> Result<PodSpec, RenderError> {
    let name = tenant_name(tenant);
    let spec = &tenant.spec.redis;
    let resources = effective_resources(
        spec.resources.as_ref(),
        &REDIS_DEFAULTS,
        "spec.redis.resources",
    )?;
    let container = Container {
        name: "redis".into(),
        image: Some(spec.image.clone()),
        command: Some(vec![
            "redis-server".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources.requirements()),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(REDIS_PORT),
                host: None,
            }),
            initial_delay_seconds: Some(15),
            period_seconds: Some(20),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(readiness_command()),
            }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(container_security(true)),
        ..Container::default()
    };
    let mut pod = PodSpec {
        containers: vec![container],
        security_context: Some(pod_security(REDIS_UID)),
        automount_service_account_token: Some(false),
        volumes: Some(vec![Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: redis_config_map_name(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    };
    place(
        &mut pod,
        tenant,
        spec.placement(),
        &selector_labels(&name, "redis"),
    );
    Ok(pod)
}

/// The readiness probe: Redis answers PING with PONG (an error reply fails it too).
pub fn readiness_command() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("redis-cli -h 127.0.0.1 -p {REDIS_PORT} ping | grep -q PONG"),
    ]
}

fn data_claim(storage: &str, storage_class: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    K8sQuantity(storage.to_string()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: storage_class.map(str::to_string),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn tenant_name(tenant: &Tenant) -> String {
    tenant.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{basic, customized};

    #[test]
    fn redis_conf_has_fixed_settings_then_sorted_user_keys() {
        let mut tenant = customized();
        tenant
            .spec
            .redis
            .config
            .insert("appendonly".into(), "yes".into());
        let conf = redis_conf(&tenant);
        let lines: Vec<&str> = conf.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                "bind 0.0.0.0",
                "port 6379",
                "dir /data",
                "protected-mode no",
                "daemonize no",
                "appendonly yes",
                "maxmemory-policy allkeys-lru",
            ]
        );
    }

    #[test]
    fn a_config_change_changes_the_pod_template_checksum() {
        let before = redis_statefulset(&customized()).expect("renders");
        let mut changed = customized();
        changed
            .spec
            .redis
            .config
            .insert("maxmemory".into(), "256mb".into());
        let after = redis_statefulset(&changed).expect("renders");
        let checksum = |s: &StatefulSet| {
            s.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .map(|a| a[CONFIG_CHECKSUM_ANNOTATION].clone())
        };
        assert!(checksum(&before).is_some());
        assert_ne!(checksum(&before), checksum(&after));
    }

    #[test]
    fn the_statefulset_claims_the_specified_storage_and_mounts_it() {
        let sts = redis_statefulset(&customized()).expect("renders");
        assert_eq!(sts.metadata.name.as_deref(), Some("my-tenant-redis"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("tenant-my-tenant"));
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.service_name.as_deref(), Some("my-tenant-redis"));
        let claim = &spec.volume_claim_templates.expect("claims")[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("redis-data"));
        let storage = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone());
        assert_eq!(storage.as_deref(), Some("5Gi"));
        let pod = spec.template.spec.expect("pod");
        let container = &pod.containers[0];
        let mounts = container.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "redis-data" && m.mount_path == "/data")
        );
        let security = container.security_context.as_ref().expect("security");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            pod.security_context.and_then(|s| s.run_as_non_root),
            Some(true)
        );
    }

    #[test]
    fn the_service_is_headless_on_6379_and_owned_by_the_tenant() {
        let svc = redis_service(&basic()).expect("renders");
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.ports.expect("ports")[0].port, 6379);
        let owner = &svc.metadata.owner_references.expect("owners")[0];
        assert_eq!(owner.kind, "Tenant");
        assert_eq!(owner.controller, Some(true));
    }
}
