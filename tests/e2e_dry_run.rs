//! Arbitrary Tenant specs through validation and rendering: nothing panics, and every
//! object rendered for a spec the operator accepts passes the API server's own admission
//! (server-side dry-run create), so an accepted spec never stalls on a refused object.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

/// What the shared strategies expect their including module's parent to import.
mod specs {
    use neurallog_operator::crd::*;
    use neurallog_operator::{crd, redis_config};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[allow(dead_code)]
    pub mod arbitrary {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/arbitrary_spec.rs"
        ));
    }
}
use specs::arbitrary;

/// Specs drawn from valid-looking values, so most pass validation and reach the renderers
/// (arbitrary ones almost never do).
mod plausible {
    use neurallog_operator::crd::*;
    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// request <= limit: both from one ascending list.
    fn request_limit(values: &'static [&'static str]) -> impl Strategy<Value = RequestLimit> {
        (0..values.len(), 0..values.len(), any::<(bool, bool)>()).prop_map(
            move |(a, b, (has_request, has_limit))| RequestLimit {
                request: has_request.then(|| QuantityValue(values[a.min(b)].into())),
                limit: has_limit.then(|| QuantityValue(values[a.max(b)].into())),
            },
        )
    }

    fn resources() -> impl Strategy<Value = Option<Resources>> {
        const CPU: &[&str] = &["50m", "100m", "250m", "500m", "1", "2"];
        const MEMORY: &[&str] = &["64Mi", "128Mi", "256Mi", "512Mi", "1Gi", "2Gi"];
        option::of(
            (
                option::of(request_limit(CPU)),
                option::of(request_limit(MEMORY)),
            )
                .prop_map(|(cpu, memory)| Resources { cpu, memory }),
        )
    }

    fn env() -> impl Strategy<Value = Vec<EnvVar>> {
        let names = select(&["LOG_LEVEL", "FEATURE_X", "API_TOKEN", "A_B", "x1"][..]);
        btree_map(names, "[ -~]{0,30}", 0..4).prop_map(|vars| {
            vars.into_iter()
                .map(|(name, value)| EnvVar {
                    name: name.to_string(),
                    value: Some(value),
                    value_from: None,
                })
                .collect()
        })
    }

    fn redis_config() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
        let pair = select(
            &[
                ("maxmemory", "256mb"),
                ("maxmemory-policy", "allkeys-lru"),
                ("appendonly", "yes"),
                ("appendfsync", "everysec"),
                ("databases", "4"),
                ("hz", "20"),
                ("loglevel", "warning"),
                ("activerehashing", "no"),
            ][..],
        );
        vec(pair, 0..4).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    fn ports() -> impl Strategy<Value = Vec<PortRule>> {
        let protocol = prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)];
        vec(
            (protocol, 1..=65535i32).prop_map(|(protocol, port)| PortRule { protocol, port }),
            0..3,
        )
    }

    /// A rule's peer selector: at least one label (validation refuses an empty one).
    fn labels() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
        btree_map("[a-z]{1,8}(/[a-z]{1,8})?", "[a-z0-9]{0,8}", 1..3)
    }

    fn network_policy() -> impl Strategy<Value = NetworkPolicySpec> {
        let description = option::of("[ -~]{0,20}");
        let ingress =
            (description.clone(), labels(), ports()).prop_map(|(description, from, ports)| {
                IngressRule {
                    description,
                    from,
                    ports,
                }
            });
        let egress =
            (description, labels(), ports()).prop_map(|(description, to, ports)| EgressRule {
                description,
                to,
                ports,
            });
        (
            any::<bool>(),
            vec("[a-z][a-z0-9-]{0,20}[a-z0-9]", 0..3),
            vec(ingress, 0..3),
            vec(egress, 0..3),
        )
            .prop_map(
                |(enabled, allowed_namespaces, ingress_rules, egress_rules)| NetworkPolicySpec {
                    enabled,
                    allowed_namespaces,
                    ingress_rules,
                    egress_rules,
                },
            )
    }

    fn backup() -> impl Strategy<Value = RedisBackup> {
        let schedule = select(
            &[
                "0 3 * * *",
                "*/15 * * * *",
                "0 4 * * MON-FRI",
                "5,35 0-23/2 1 jan,jul ?",
                "@daily",
                "@hourly",
            ][..],
        );
        (
            schedule,
            1..=limits::MAX_BACKUP_KEEP,
            option::of(select(&["500Mi", "20Gi"][..])),
        )
            .prop_map(|(schedule, keep, storage)| RedisBackup {
                schedule: schedule.to_string(),
                keep,
                storage: storage.map(str::to_string),
            })
    }

    type PlacementParts = (
        std::collections::BTreeMap<String, String>,
        Vec<Toleration>,
        Vec<TopologySpread>,
    );

    fn placement() -> impl Strategy<Value = PlacementParts> {
        let tolerations = select(
            &[
                (
                    "dedicated",
                    TolerationOperator::Equal,
                    "neurallog",
                    Some(TaintEffect::NoSchedule),
                    None,
                ),
                (
                    "example.com/gpu",
                    TolerationOperator::Exists,
                    "",
                    None,
                    None,
                ),
                ("", TolerationOperator::Exists, "", None, None),
                (
                    "node.kubernetes.io/unreachable",
                    TolerationOperator::Exists,
                    "",
                    Some(TaintEffect::NoExecute),
                    Some(30),
                ),
                (
                    "spot",
                    TolerationOperator::Equal,
                    "",
                    Some(TaintEffect::PreferNoSchedule),
                    None,
                ),
            ][..],
        )
        .prop_map(
            |(key, operator, value, effect, toleration_seconds)| Toleration {
                key: (!key.is_empty()).then(|| key.to_string()),
                operator,
                value: (!value.is_empty()).then(|| value.to_string()),
                effect,
                toleration_seconds,
            },
        );
        let spread = (
            select(&["kubernetes.io/hostname", "topology.kubernetes.io/zone"][..]),
            1..4i32,
            any::<bool>(),
        )
            .prop_map(|(key, max_skew, soft)| TopologySpread {
                topology_key: key.to_string(),
                max_skew,
                when_unsatisfiable: if soft {
                    WhenUnsatisfiable::ScheduleAnyway
                } else {
                    WhenUnsatisfiable::DoNotSchedule
                },
            });
        (
            btree_map("[a-z]{1,8}(/[a-z]{1,8})?", "[a-z0-9]{0,8}", 0..3),
            vec(tolerations, 0..3),
            option::of(spread).prop_map(|s| s.into_iter().collect()),
        )
    }

    pub fn spec() -> impl Strategy<Value = TenantSpec> {
        let images = select(
            &[
                "neurallog/server:latest",
                "registry.local:5000/nl/server:1.2.3",
            ][..],
        );
        let autoscaling = option::of((1..4i32, 0..4i32, 1..200i32).prop_map(
            |(min_replicas, extra, target)| Autoscaling {
                min_replicas,
                max_replicas: min_replicas + extra,
                target_cpu_utilization_percentage: target,
            },
        ));
        let server = (
            (1..5i32, images, resources(), env()),
            autoscaling,
            placement(),
        )
            .prop_map(
                |(
                    (replicas, image, resources, env),
                    autoscaling,
                    (node_selector, tolerations, topology_spread),
                )| {
                    ServerSpec {
                        replicas,
                        image: image.to_string(),
                        resources,
                        env,
                        autoscaling,
                        node_selector,
                        tolerations,
                        topology_spread,
                    }
                },
            );
        let redis = (
            resources(),
            select(&["512Mi", "1Gi", "10Gi"][..]),
            redis_config(),
            option::of(select(&["standard", "fast-ssd.example.com"][..])),
            placement(),
            any::<bool>(),
            option::of(backup()),
        )
            .prop_map(
                |(
                    resources,
                    storage,
                    config,
                    storage_class,
                    (node_selector, tolerations, topology_spread),
                    retain_storage,
                    backup,
                )| RedisSpec {
                    replicas: 1,
                    image: "redis:7-alpine".into(),
                    resources,
                    storage: storage.to_string(),
                    config,
                    storage_class_name: storage_class.map(str::to_string),
                    node_selector,
                    tolerations,
                    topology_spread,
                    retain_storage,
                    backup,
                },
            );
        let auth = option::of(
            option::of("[a-z0-9-]{1,20}").prop_map(|admin_user_id| AuthSpec { admin_user_id }),
        );
        (
            option::of("[ -~]{0,40}"),
            option::of("[ -~]{0,80}"),
            server,
            redis,
            network_policy(),
            auth,
            vec("[a-z][a-z0-9-]{0,20}[a-z0-9](\\.[a-z]{1,8})?", 0..3),
            proptest::bool::ANY,
        )
            .prop_map(
                |(
                    display_name,
                    description,
                    server,
                    redis,
                    network_policy,
                    auth,
                    mut image_pull_secrets,
                    deletion_protection,
                )| {
                    image_pull_secrets.sort();
                    image_pull_secrets.dedup();
                    TenantSpec {
                        display_name,
                        description,
                        server,
                        redis,
                        network_policy,
                        auth,
                        image_pull_secrets,
                        deletion_protection,
                    }
                },
            )
    }
}

use common::*;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use neurallog_operator::controller::compare::is_subset;
use neurallog_operator::crd::{MAX_TENANT_NAME_LEN, Tenant, TenantSpec};
use neurallog_operator::render::{self, RenderSettings, invalid_derived_names};
use neurallog_operator::validation::validate;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

const SPECS: usize = 300;

/// Tenant names of every admitted length (1 to the limit, cycling), and some the CRD
/// refuses (a leading digit, one character too long), which validation must refuse too.
fn name_for(i: usize) -> String {
    let length = i % (MAX_TENANT_NAME_LEN + 2) + 1;
    let letters = "drytenantnamesateverylengthuptothelimitandonemoreforgoodmeasure";
    let mut name: String = letters.chars().cycle().take(length).collect();
    if i % 7 == 3 {
        name.replace_range(0..1, "7");
    }
    name
}

fn tenant(name: &str, spec: TenantSpec) -> Tenant {
    let mut tenant = Tenant::new(name, spec);
    tenant.metadata.uid = Some("0b6f3f0e-0000-4000-8000-000000000001".into());
    tenant
}

/// Every object the operator would apply for `tenant`, or the render error.
fn rendered(tenant: &Tenant, settings: &RenderSettings) -> Result<Rendered, String> {
    let e = |e: render::RenderError| e.to_string();
    Ok(Rendered {
        namespace: render::namespace(tenant).map_err(e)?,
        config_map: render::redis_config_map(tenant).map_err(e)?,
        services: vec![
            render::redis_service(tenant).map_err(e)?,
            render::server_service(tenant).map_err(e)?,
        ],
        statefulset: render::redis_statefulset(tenant).map_err(e)?,
        deployment: render::server_deployment(tenant, settings).map_err(e)?,
        policies: render::network_policies(tenant, settings).map_err(e)?,
        quota: render::resource_quota(tenant).map_err(e)?,
        limit_range: render::limit_range(tenant).map_err(e)?,
        disruption_budget: render::server_disruption_budget(tenant).map_err(e)?,
        autoscaler: render::server_autoscaler(tenant).map_err(e)?,
        backup_cronjob: render::backup_cronjob(tenant, settings).map_err(e)?,
        backup_claim: render::backup_claim(tenant).map_err(e)?,
    })
}

struct Rendered {
    namespace: Namespace,
    config_map: k8s_openapi::api::core::v1::ConfigMap,
    services: Vec<k8s_openapi::api::core::v1::Service>,
    statefulset: k8s_openapi::api::apps::v1::StatefulSet,
    deployment: k8s_openapi::api::apps::v1::Deployment,
    policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    quota: k8s_openapi::api::core::v1::ResourceQuota,
    limit_range: k8s_openapi::api::core::v1::LimitRange,
    disruption_budget: Option<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    autoscaler: Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    backup_cronjob: Option<k8s_openapi::api::batch::v1::CronJob>,
    backup_claim: Option<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
}

/// Dry-run creates `object` in namespace `ns` (the tenant namespace does not exist here).
async fn admitted<K>(client: &Client, ns: &str, mut object: K) -> Result<(), String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    object.meta_mut().namespace = Some(ns.to_string());
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let stored = Api::<K>::namespaced(client.clone(), ns)
        .create(&params, &object)
        .await
        .map_err(|e| format!("{} {:?}: {e}", K::kind(&()), object.meta().name))?;
    kept_as_rendered(&object, &stored)
}

/// The API server stores what was rendered: a value it drops or rewrites (an empty env
/// value, an empty selector) would make the operator see drift and apply again forever.
fn kept_as_rendered<K: Resource<DynamicType = ()> + Serialize>(
    desired: &K,
    stored: &K,
) -> Result<(), String> {
    let desired_json = serde_json::to_value(desired).map_err(|e| e.to_string())?;
    let stored_json = serde_json::to_value(stored).map_err(|e| e.to_string())?;
    if is_subset(&desired_json, &stored_json) {
        Ok(())
    } else {
        Err(format!(
            "{} {:?} is stored differently from how it was rendered:\n  rendered: {desired_json}\n  stored:   {stored_json}",
            K::kind(&()),
            desired.meta().name
        ))
    }
}

async fn all_admitted(client: &Client, ns: &str, r: Rendered) -> Vec<String> {
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut refused = Vec::new();
    let mut note = |result: Result<(), String>| {
        if let Err(e) = result {
            refused.push(e);
        }
    };
    note(
        Api::<Namespace>::all(client.clone())
            .create(&params, &r.namespace)
            .await
            .map_err(|e| format!("Namespace: {e}"))
            .and_then(|stored| kept_as_rendered(&r.namespace, &stored)),
    );
    note(admitted(client, ns, r.config_map).await);
    for service in r.services {
        note(admitted(client, ns, service).await);
    }
    note(admitted(client, ns, r.statefulset).await);
    note(admitted(client, ns, r.deployment).await);
    for policy in r.policies {
        note(admitted(client, ns, policy).await);
    }
    note(admitted(client, ns, r.quota).await);
    note(admitted(client, ns, r.limit_range).await);
    if let Some(budget) = r.disruption_budget {
        note(admitted(client, ns, budget).await);
    }
    if let Some(autoscaler) = r.autoscaler {
        note(admitted(client, ns, autoscaler).await);
    }
    if let Some(cronjob) = r.backup_cronjob {
        note(admitted(client, ns, cronjob).await);
    }
    if let Some(claim) = r.backup_claim {
        note(admitted(client, ns, claim).await);
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_rendered_for_an_accepted_spec_passes_admission() {
    let client = client().await;
    let ns = unique("dryrun");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await
        .expect("the dry-run namespace");

    let settings = RenderSettings::default();
    let mut runner = TestRunner::deterministic();
    let arbitrary = arbitrary::spec().boxed();
    let plausible = plausible::spec().boxed();
    let (mut accepted, mut objects_checked) = (0, 0);
    let mut refused = Vec::new();
    for i in 0..SPECS {
        let strategy = if i % 3 == 0 { &arbitrary } else { &plausible };
        let spec = strategy.new_tree(&mut runner).expect("a spec").current();
        let name = name_for(i);
        if !validate(&name, &spec).is_empty() {
            // The operator never renders a rejected spec; rendering must still not panic.
            let _ = rendered(&tenant(&name, spec), &settings);
            continue;
        }
        let too_long = invalid_derived_names(&name);
        assert!(
            too_long.is_empty(),
            "validation accepted {name:?}, which breaks {too_long:?}"
        );
        accepted += 1;
        let tenant = tenant(&name, spec);
        let objects = rendered(&tenant, &settings)
            .unwrap_or_else(|e| panic!("an accepted spec does not render: {e}: {:?}", tenant.spec));
        objects_checked += 6 + objects.policies.len() + 2;
        for problem in all_admitted(&client, &ns, objects).await {
            refused.push(format!("{problem}\n  spec: {:?}", tenant.spec));
        }
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &Default::default())
        .await;
    println!(
        "dry-run: {SPECS} specs (a third arbitrary, the rest plausible), {accepted} accepted by validation, \
         {objects_checked} rendered objects sent to server-side dry-run, {} refused",
        refused.len()
    );
    assert!(
        accepted >= SPECS / 4,
        "only {accepted} of {SPECS} specs were valid: the strategy no longer explores valid specs"
    );
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
