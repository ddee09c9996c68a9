//! The NeuralLog server: a Deployment and a ClusterIP Service on port 3030.

use super::labels::selector_labels;
use super::placement::place;
use super::redis::{REDIS_PORT, redis_host};
use super::resources::{SERVER_DEFAULTS, effective_resources};
use super::security::{container_security, pod_security};
use super::{RenderError, RenderSettings, child_meta};
use crate::crd::{EnvVar, ServerScale, Tenant};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, Container, ContainerPort, EnvVar as K8sEnvVar, EnvVarSource,
    HTTPGetAction, PodSpec, PodTemplateSpec, Probe, SecretKeySelector, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const SERVER_PORT: i32 = 3030;
/// The `node` user of Node.js images.
const SERVER_UID: i64 = 1000;

pub fn server_name(tenant: &str) -> String {
    format!("{tenant}-server")
}

pub fn server_service(tenant: &Tenant) -> Result<Service, RenderError> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    Ok(Service {
        metadata: child_meta(tenant, server_name(&name), Some("server"))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&name, "server")),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVER_PORT,
                target_port: Some(IntOrString::Int(SERVER_PORT)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn server_deployment(
    tenant: &Tenant,
    settings: &RenderSettings,
) -> Result<Deployment, RenderError> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let mut pod_meta = child_meta(tenant, String::new(), Some("server"))?;
    pod_meta.name = None;
    pod_meta.namespace = None;
    pod_meta.owner_references = None;
    Ok(Deployment {
        metadata: child_meta(tenant, server_name(&name), Some("server"))?,
        spec: Some(DeploymentSpec {
            // Autoscaled: the count is the autoscaler's, and an apply without the field
            // leaves it alone (see `Applier::hand_replicas_to_autoscaler`).
            replicas: match tenant.spec.server.scale() {
                ServerScale::Fixed(n) => Some(n),
                ServerScale::Autoscaled { .. } => None,
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name, "server")),
                ..LabelSelector::default()
            },
            // One surge pod and none unavailable: the namespace quota has room for exactly that.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(server_pod(tenant, settings)?),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// A HorizontalPodAutoscaler of the server Deployment on CPU, when the spec asks for one.
pub fn server_autoscaler(tenant: &Tenant) -> Result<Option<HorizontalPodAutoscaler>, RenderError> {
    let Some(autoscaling) = &tenant.spec.server.autoscaling else {
        return Ok(None);
    };
    let name = tenant.metadata.name.clone().unwrap_or_default();
    Ok(Some(HorizontalPodAutoscaler {
        metadata: child_meta(tenant, server_name(&name), Some("server"))?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: server_name(&name),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }))
}

/// With more than one server pod (or an autoscaler that may run more), voluntary
/// disruptions (a node drain) take them down one at a time; with one there is nothing to
/// keep available, and a budget would only block the drain.
pub fn server_disruption_budget(
    tenant: &Tenant,
) -> Result<Option<PodDisruptionBudget>, RenderError> {
    if tenant.spec.server.scale().max() <= 1 {
        return Ok(None);
    }
    let name = tenant.metadata.name.clone().unwrap_or_default();
    Ok(Some(PodDisruptionBudget {
        metadata: child_meta(tenant, server_name(&name), Some("server"))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name, "server")),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }))
}

fn server_pod(tenant: &Tenant, settings: &RenderSettings) -> Result<PodSpec, RenderError> {
    let spec = &tenant.spec.server;
    let resources = effective_resources(
        spec.resources.as_ref(),
        &SERVER_DEFAULTS,
        "spec.server.resources",
    )?;
    let http_probe = |initial_delay: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/".into()),
            port: IntOrString::Int(SERVER_PORT),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let container = Container {
        name: "server".into(),
        image: Some(spec.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: SERVER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(server_env(tenant, settings)),
        resources: Some(resources.requirements()),
        readiness_probe: Some(http_probe(5)),
        liveness_probe: Some(http_probe(15)),
        security_context: Some(container_security(false)),
        ..Container::default()
    };
    let mut pod = PodSpec {
        containers: vec![container],
        security_context: Some(pod_security(SERVER_UID)),
        automount_service_account_token: Some(false),
        ..PodSpec::default()
    };
    let name = tenant.metadata.name.clone().unwrap_or_default();
    place(
        &mut pod,
        tenant,
        spec.placement(),
        &selector_labels(&name, "server"),
    );
    Ok(pod)
}

/// The operator's variables first, then the user's (validation refuses a user variable
/// that shadows one of ours).
pub fn server_env(tenant: &Tenant, settings: &RenderSettings) -> Vec<K8sEnvVar> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let literal = |key: &str, value: String| K8sEnvVar {
        name: key.into(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        literal("PORT", SERVER_PORT.to_string()),
        literal("TENANT_ID", name.clone()),
        literal("AUTH_URL", settings.tenant_auth_url.clone()),
        literal("STORAGE_TYPE", "redis".into()),
        literal("REDIS_HOST", redis_host(&name, settings)),
        literal("REDIS_PORT", REDIS_PORT.to_string()),
    ];
    env.extend(tenant.spec.server.env.iter().map(user_env));
    env
}

fn user_env(var: &EnvVar) -> K8sEnvVar {
    let value_from = var.value_from.as_ref().map(|source| EnvVarSource {
        secret_key_ref: source.secret_key_ref.as_ref().map(|r| SecretKeySelector {
            name: r.name.clone(),
            key: r.key.clone(),
            optional: r.optional,
        }),
        config_map_key_ref: source
            .config_map_key_ref
            .as_ref()
            .map(|r| ConfigMapKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: r.optional,
            }),
        ..EnvVarSource::default()
    });
    K8sEnvVar {
        name: var.name.clone(),
        // The API server drops an empty value (it is the default): rendering it would make
        // the stored Deployment differ from the desired one forever.
        value: var.value.clone().filter(|v| !v.is_empty()),
        value_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EnvVarSource as SpecSource, KeyRef};
    use crate::render::test_support::customized;

    fn env_of(tenant: &Tenant) -> Vec<(String, Option<String>)> {
        server_env(tenant, &RenderSettings::default())
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect()
    }

    #[test]
    fn the_server_gets_the_contract_env_then_the_users() {
        let env = env_of(&customized());
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "PORT",
                "TENANT_ID",
                "AUTH_URL",
                "STORAGE_TYPE",
                "REDIS_HOST",
                "REDIS_PORT",
                "LOG_LEVEL"
            ]
        );
        assert_eq!(env[0].1.as_deref(), Some("3030"));
        assert_eq!(env[1].1.as_deref(), Some("my-tenant"));
        assert_eq!(env[3].1.as_deref(), Some("redis"));
        assert_eq!(env[6].1.as_deref(), Some("debug"));
    }

    /// The server's REDIS_HOST and REDIS_PORT, from the rendered Deployment, reach the
    /// Redis that the other renderers describe: the headless Service's DNS name in the
    /// configured cluster domain and its port, which selects the StatefulSet's pods and
    /// forwards to the port redis.conf listens on.
    #[test]
    fn redis_host_and_port_point_at_the_rendered_headless_service() {
        use crate::render::{redis_conf, redis_service, redis_statefulset};
        let tenant = customized();
        let settings = RenderSettings {
            cluster_domain: "example.internal".into(),
            ..RenderSettings::default()
        };
        let deployment = server_deployment(&tenant, &settings).expect("renders");
        let env = deployment
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.env)
            .expect("server env");
        let env_value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| panic!("{name} is not set"))
        };
        let service = redis_service(&tenant).expect("renders");
        let service_name = service.metadata.name.clone().expect("name");
        let namespace = service.metadata.namespace.clone().expect("namespace");
        assert_eq!(
            env_value("REDIS_HOST"),
            format!("{service_name}.{namespace}.svc.example.internal")
        );
        let service_spec = service.spec.expect("spec");
        assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"), "headless");
        let ports = service_spec.ports.expect("ports");
        let [service_port] = ports.as_slice() else {
            panic!("one Service port: {ports:?}")
        };
        assert_eq!(env_value("REDIS_PORT"), service_port.port.to_string());

        let statefulset = redis_statefulset(&tenant).expect("renders");
        assert_eq!(statefulset.metadata.namespace.as_ref(), Some(&namespace));
        let sts_spec = statefulset.spec.expect("spec");
        assert_eq!(sts_spec.service_name.as_ref(), Some(&service_name));
        let pod_labels = sts_spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("pod labels");
        let selector = service_spec.selector.expect("selector");
        assert!(!selector.is_empty());
        for (key, value) in &selector {
            assert_eq!(pod_labels.get(key), Some(value), "selector {key}");
        }
        let pod = sts_spec.template.spec.expect("pod");
        let redis_port = pod.containers[0].ports.as_ref().expect("ports")[0].clone();
        let target_reaches_redis = match service_port.target_port.as_ref() {
            Some(IntOrString::Int(port)) => *port == redis_port.container_port,
            Some(IntOrString::String(name)) => redis_port.name.as_ref() == Some(name),
            None => service_port.port == redis_port.container_port,
        };
        assert!(target_reaches_redis, "{service_port:?} vs {redis_port:?}");
        let conf = redis_conf(&tenant);
        let listen = format!("port {}", redis_port.container_port);
        assert!(conf.lines().any(|line| line == listen), "{conf}");
        assert!(conf.lines().any(|line| line == "bind 0.0.0.0"), "{conf}");
    }

    #[test]
    fn env_from_secrets_and_config_maps_is_passed_through() {
        let mut tenant = customized();
        tenant.spec.server.env.push(EnvVar {
            name: "API_KEY".into(),
            value: None,
            value_from: Some(SpecSource {
                secret_key_ref: Some(KeyRef {
                    name: "api-keys".into(),
                    key: "my-tenant".into(),
                    optional: None,
                }),
                config_map_key_ref: None,
            }),
        });
        let env = server_env(&tenant, &RenderSettings::default());
        let api_key = env.last().expect("env");
        let secret = api_key
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("api-keys", "my-tenant")
        );
    }

    #[test]
    fn the_deployment_has_the_spec_replicas_probes_and_restricted_security() {
        let deployment =
            server_deployment(&customized(), &RenderSettings::default()).expect("renders");
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("my-tenant-server")
        );
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.expect("pod");
        let container = &pod.containers[0];
        let probe_path = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone());
        assert_eq!(probe_path.as_deref(), Some("/"));
        let caps = container
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.drop.clone());
        assert_eq!(caps, Some(vec!["ALL".to_string()]));
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits["cpu"].0, "500m");
        assert_eq!(limits["memory"].0, "512Mi");
    }
}
