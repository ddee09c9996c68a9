//! The requests and limits each container actually gets: the spec's, completed the way
//! Kubernetes would (a lone limit is also the request) and by per-component defaults, so
//! that the namespace quota can be computed from them exactly.

use super::RenderError;
use crate::crd::{RequestLimit, Resources};
use crate::quantity::Quantity;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use std::collections::BTreeMap;

/// Defaults for a container whose spec leaves a value out.
#[derive(Clone, Copy, Debug)]
pub struct ResourceDefaults {
    pub cpu_request: &'static str,
    pub cpu_limit: &'static str,
    pub memory_request: &'static str,
    pub memory_limit: &'static str,
}

pub const SERVER_DEFAULTS: ResourceDefaults = ResourceDefaults {
    cpu_request: "100m",
    cpu_limit: "500m",
    memory_request: "128Mi",
    memory_limit: "512Mi",
};

/// The backup pod: redis-cli streams the snapshot to its file, in little memory.
pub const BACKUP_DEFAULTS: ResourceDefaults = ResourceDefaults {
    cpu_request: "50m",
    cpu_limit: "500m",
    memory_request: "64Mi",
    memory_limit: "128Mi",
};

pub const REDIS_DEFAULTS: ResourceDefaults = ResourceDefaults {
    cpu_request: "100m",
    cpu_limit: "500m",
    memory_request: "128Mi",
    memory_limit: "256Mi",
};

/// Fully specified requests and limits of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerResources {
    pub cpu_request: Quantity,
    pub cpu_limit: Quantity,
    pub memory_request: Quantity,
    pub memory_limit: Quantity,
}

/// Completes `spec` with `defaults`. `field` names the spec field in errors.
pub fn effective_resources(
    spec: Option<&Resources>,
    defaults: &ResourceDefaults,
    field: &str,
) -> Result<ContainerResources, RenderError> {
    let (cpu_request, cpu_limit) = complete(
        spec.and_then(|r| r.cpu.as_ref()),
        defaults.cpu_request,
        defaults.cpu_limit,
        &format!("{field}.cpu"),
    )?;
    let (memory_request, memory_limit) = complete(
        spec.and_then(|r| r.memory.as_ref()),
        defaults.memory_request,
        defaults.memory_limit,
        &format!("{field}.memory"),
    )?;
    Ok(ContainerResources {
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
    })
}

fn complete(
    spec: Option<&RequestLimit>,
    default_request: &str,
    default_limit: &str,
    field: &str,
) -> Result<(Quantity, Quantity), RenderError> {
    let parse = |value: &str, which: &str| {
        Quantity::parse(value).map_err(|e| RenderError::InvalidField {
            field: format!("{field}.{which}"),
            message: e.to_string(),
        })
    };
    let request = spec.and_then(|s| s.request.as_ref()).map(|q| q.as_str());
    let limit = spec.and_then(|s| s.limit.as_ref()).map(|q| q.as_str());
    let (request, limit) = match (request, limit) {
        (Some(r), Some(l)) => (parse(r, "request")?, parse(l, "limit")?),
        (None, Some(l)) => (parse(l, "limit")?, parse(l, "limit")?),
        (Some(r), None) => {
            let request = parse(r, "request")?;
            let limit = parse(default_limit, "limit")?.max(request.clone());
            (request, limit)
        }
        (None, None) => (
            parse(default_request, "request")?,
            parse(default_limit, "limit")?,
        ),
    };
    if request > limit {
        return Err(RenderError::InvalidField {
            field: field.to_string(),
            message: "request must not exceed limit".into(),
        });
    }
    Ok((request, limit))
}

impl ContainerResources {
    /// As a container's `resources`, in canonical quantity notation.
    pub fn requirements(&self) -> ResourceRequirements {
        let pair = |cpu: &Quantity, memory: &Quantity| {
            BTreeMap::from([
                ("cpu".to_string(), K8sQuantity(cpu.to_cpu_string())),
                ("memory".to_string(), K8sQuantity(memory.to_bytes_string())),
            ])
        };
        ResourceRequirements {
            requests: Some(pair(&self.cpu_request, &self.memory_request)),
            limits: Some(pair(&self.cpu_limit, &self.memory_limit)),
            ..ResourceRequirements::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::QuantityValue;

    fn rl(request: Option<&str>, limit: Option<&str>) -> RequestLimit {
        RequestLimit {
            request: request.map(QuantityValue::from),
            limit: limit.map(QuantityValue::from),
        }
    }

    fn cpu_of(cpu: RequestLimit) -> (String, String) {
        let spec = Resources {
            cpu: Some(cpu),
            memory: None,
        };
        let r = effective_resources(Some(&spec), &SERVER_DEFAULTS, "spec.server.resources")
            .expect("valid");
        (r.cpu_request.to_cpu_string(), r.cpu_limit.to_cpu_string())
    }

    #[test]
    fn values_are_completed_like_kubernetes_does() {
        assert_eq!(
            cpu_of(rl(Some("200m"), Some("1"))),
            ("200m".into(), "1".into())
        );
        assert_eq!(
            cpu_of(rl(None, Some("300m"))),
            ("300m".into(), "300m".into())
        );
        assert_eq!(cpu_of(rl(Some("50m"), None)), ("50m".into(), "500m".into()));
        assert_eq!(cpu_of(rl(Some("2"), None)), ("2".into(), "2".into()));
        assert_eq!(cpu_of(rl(None, None)), ("100m".into(), "500m".into()));
    }

    #[test]
    fn a_request_above_its_limit_is_an_error_not_a_panic() {
        let spec = Resources {
            cpu: Some(rl(Some("2"), Some("1"))),
            memory: None,
        };
        let err = effective_resources(Some(&spec), &SERVER_DEFAULTS, "spec.server.resources");
        assert!(
            matches!(err, Err(RenderError::InvalidField { field, .. }) if field == "spec.server.resources.cpu")
        );
    }

    #[test]
    fn a_malformed_quantity_names_its_field() {
        let spec = Resources {
            cpu: None,
            memory: Some(rl(Some("banana"), None)),
        };
        let err = effective_resources(Some(&spec), &SERVER_DEFAULTS, "spec.redis.resources");
        assert!(
            matches!(err, Err(RenderError::InvalidField { field, .. }) if field == "spec.redis.resources.memory.request")
        );
    }
}
