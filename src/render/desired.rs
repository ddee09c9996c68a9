//! Every object a tenant needs, rendered together: a reconcile pass renders once and
//! shares the result between observation and the applier.

use super::{
    RenderError, RenderSettings, backup_claim, backup_cronjob, limit_range, namespace,
    network_policies, redis_config_map, redis_service, redis_statefulset, resource_quota,
    server_autoscaler, server_deployment, server_disruption_budget, server_service,
};
use crate::crd::Tenant;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub namespace: Namespace,
    pub limit_range: LimitRange,
    pub resource_quota: ResourceQuota,
    pub network_policies: Vec<NetworkPolicy>,
    pub redis_config_map: ConfigMap,
    pub redis_service: Service,
    pub redis_statefulset: StatefulSet,
    pub server_service: Service,
    pub server_deployment: Deployment,
    /// Only with more than one server replica.
    pub server_disruption_budget: Option<PodDisruptionBudget>,
    /// Only with `spec.server.autoscaling`.
    pub server_autoscaler: Option<HorizontalPodAutoscaler>,
    /// Only with `spec.redis.backup`.
    pub backup_cronjob: Option<CronJob>,
    /// Only with `spec.redis.backup`.
    pub backup_claim: Option<PersistentVolumeClaim>,
}

impl Desired {
    pub fn render(tenant: &Tenant, settings: &RenderSettings) -> Result<Desired, RenderError> {
        Ok(Desired {
            namespace: namespace(tenant)?,
            limit_range: limit_range(tenant)?,
            resource_quota: resource_quota(tenant)?,
            network_policies: network_policies(tenant, settings)?,
            redis_config_map: redis_config_map(tenant)?,
            redis_service: redis_service(tenant)?,
            redis_statefulset: redis_statefulset(tenant)?,
            server_service: server_service(tenant)?,
            server_deployment: server_deployment(tenant, settings)?,
            server_disruption_budget: server_disruption_budget(tenant)?,
            server_autoscaler: server_autoscaler(tenant)?,
            backup_cronjob: backup_cronjob(tenant, settings)?,
            backup_claim: backup_claim(tenant)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::basic;

    #[test]
    fn the_bundle_holds_what_each_renderer_gives() {
        let tenant = basic();
        let settings = RenderSettings::default();
        let desired = Desired::render(&tenant, &settings).unwrap();
        assert_eq!(
            desired.redis_statefulset,
            redis_statefulset(&tenant).unwrap()
        );
        assert_eq!(
            desired.server_deployment,
            server_deployment(&tenant, &settings).unwrap()
        );
        assert_eq!(
            desired.network_policies,
            network_policies(&tenant, &settings).unwrap()
        );
    }

    #[test]
    fn a_tenant_without_uid_is_an_error_not_a_panic() {
        let mut tenant = basic();
        tenant.metadata.uid = None;
        assert_eq!(
            Desired::render(&tenant, &RenderSettings::default()),
            Err(RenderError::MissingUid)
        );
    }
}
