// Strategies for arbitrary Tenant specs: mostly plausible values, with arbitrary strings
// and integers mixed in to reach every branch. Shared (through `include!`) by the
// validation unit tests and the dry-run e2e test; the including module brings the CRD
// types, `crd`, `redis_config` and `proptest::prelude::*` into scope.

use super::*;
use proptest::collection::{btree_map, vec};
use proptest::option;

pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9.-]{0,70}",
        "[A-Za-z0-9._/ -]{0,12}",
        Just(String::new()),
    ]
}

fn quantity_text() -> impl Strategy<Value = QuantityValue> {
    prop_oneof![
        "[-+]?[0-9]{0,4}(\\.[0-9]{0,3})?(m|k|Mi|Gi|e3|E-2)?",
        any::<String>(),
    ]
    .prop_map(QuantityValue)
}

fn count() -> impl Strategy<Value = i32> {
    prop_oneof![-2..4i32, any::<i32>()]
}

fn request_limit() -> impl Strategy<Value = RequestLimit> {
    (option::of(quantity_text()), option::of(quantity_text()))
        .prop_map(|(request, limit)| RequestLimit { request, limit })
}

fn resources() -> impl Strategy<Value = Option<Resources>> {
    option::of(
        (option::of(request_limit()), option::of(request_limit()))
            .prop_map(|(cpu, memory)| Resources { cpu, memory }),
    )
}

fn key_ref() -> impl Strategy<Value = Option<KeyRef>> {
    option::of((text(), text(), option::of(any::<bool>())).prop_map(
        |(name, key, optional)| KeyRef {
            name,
            key,
            optional,
        },
    ))
}

fn env_var() -> impl Strategy<Value = EnvVar> {
    let source = (key_ref(), key_ref()).prop_map(|(secret_key_ref, config_map_key_ref)| {
        EnvVarSource {
            secret_key_ref,
            config_map_key_ref,
        }
    });
    let name = prop_oneof![text(), Just("PORT".to_string()), Just("A".to_string())];
    (name, option::of(text()), option::of(source)).prop_map(|(name, value, value_from)| {
        EnvVar {
            name,
            value,
            value_from,
        }
    })
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        Just("kubernetes.io/hostname".to_string()),
        Just("topology.kubernetes.io/zone".to_string()),
        "[a-z]{1,8}(\\.[a-z]{1,8})?/[a-zA-Z0-9._-]{0,10}",
    ]
}

fn toleration() -> impl Strategy<Value = Toleration> {
    let operator = prop_oneof![
        Just(TolerationOperator::Equal),
        Just(TolerationOperator::Exists)
    ];
    let effect = option::of(prop_oneof![
        Just(TaintEffect::NoSchedule),
        Just(TaintEffect::PreferNoSchedule),
        Just(TaintEffect::NoExecute),
    ]);
    let seconds = option::of(prop_oneof![-2..100i64, any::<i64>()]);
    (
        option::of(label_key()),
        operator,
        option::of(text()),
        effect,
        seconds,
    )
        .prop_map(
            |(key, operator, value, effect, toleration_seconds)| Toleration {
                key,
                operator,
                value,
                effect,
                toleration_seconds,
            },
        )
}

fn topology_spread() -> impl Strategy<Value = TopologySpread> {
    let when = prop_oneof![
        Just(WhenUnsatisfiable::DoNotSchedule),
        Just(WhenUnsatisfiable::ScheduleAnyway)
    ];
    (label_key(), prop_oneof![-1..4i32, any::<i32>()], when).prop_map(
        |(topology_key, max_skew, when_unsatisfiable)| TopologySpread {
            topology_key,
            max_skew,
            when_unsatisfiable,
        },
    )
}

/// Node selector, tolerations and topology spread, as both components take them.
type PlacementParts = (
    BTreeMap<String, String>,
    Vec<Toleration>,
    Vec<TopologySpread>,
);

fn placement() -> impl Strategy<Value = PlacementParts> {
    (
        btree_map(label_key(), text(), 0..3),
        vec(toleration(), 0..3),
        vec(topology_spread(), 0..3),
    )
}

fn server() -> impl Strategy<Value = ServerSpec> {
    let autoscaling = option::of((count(), count(), prop_oneof![-1..300i32, any::<i32>()]).prop_map(
        |(min_replicas, max_replicas, target_cpu_utilization_percentage)| Autoscaling {
            min_replicas,
            max_replicas,
            target_cpu_utilization_percentage,
        },
    ));
    (
        count(),
        text(),
        resources(),
        vec(env_var(), 0..4),
        autoscaling,
        placement(),
    )
        .prop_map(
            |(
                replicas,
                image,
                resources,
                env,
                autoscaling,
                (node_selector, tolerations, topology_spread),
            )| ServerSpec {
                replicas,
                image,
                resources,
                env,
                autoscaling,
                node_selector,
                tolerations,
                topology_spread,
            },
        )
}

fn redis_key() -> impl Strategy<Value = String> {
    let known: Vec<String> = redis_config::SUPPORTED_DIRECTIVES
        .iter()
        .map(|d| d.name.to_string())
        .chain(
            crd::RESERVED_REDIS_KEYS
                .iter()
                .map(|k| k.to_string()),
        )
        .collect();
    prop_oneof![proptest::sample::select(known), text()]
}

fn redis() -> impl Strategy<Value = RedisSpec> {
    let value = prop_oneof![text(), "[-0-9a-zA-Z $]{0,12}"];
    (
        count(),
        text(),
        resources(),
        prop_oneof![quantity_text().prop_map(|q| q.0), text()],
        btree_map(redis_key(), value, 0..4),
        option::of(text()),
        placement(),
        any::<bool>(),
        option::of(backup()),
    )
        .prop_map(
            |(
                replicas,
                image,
                resources,
                storage,
                config,
                storage_class_name,
                (node_selector, tolerations, topology_spread),
                retain_storage,
                backup,
            )| RedisSpec {
                replicas,
                image,
                resources,
                storage,
                config,
                storage_class_name,
                node_selector,
                tolerations,
                topology_spread,
                retain_storage,
                backup,
            },
        )
}

fn backup() -> impl Strategy<Value = crd::RedisBackup> {
    let schedule = prop_oneof![
        Just("0 3 * * *".to_string()),
        "[0-9*/,a-zA-Z@ -]{0,20}",
        text()
    ];
    let storage = option::of(prop_oneof![quantity_text().prop_map(|q| q.0), text()]);
    (schedule, prop_oneof![0..120i32, any::<i32>()], storage).prop_map(
        |(schedule, keep, storage)| crd::RedisBackup {
            schedule,
            keep,
            storage,
        },
    )
}

fn ports() -> impl Strategy<Value = Vec<PortRule>> {
    let protocol = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ];
    vec(
        (protocol, prop_oneof![0..70000i32, any::<i32>()])
            .prop_map(|(protocol, port)| PortRule { protocol, port }),
        0..3,
    )
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(text(), text(), 0..3)
}

fn network_policy() -> impl Strategy<Value = NetworkPolicySpec> {
    let ingress =
        (option::of(text()), labels(), ports()).prop_map(|(description, from, ports)| {
            IngressRule {
                description,
                from,
                ports,
            }
        });
    let egress =
        (option::of(text()), labels(), ports()).prop_map(|(description, to, ports)| {
            EgressRule {
                description,
                to,
                ports,
            }
        });
    (
        any::<bool>(),
        vec(text(), 0..3),
        vec(ingress, 0..3),
        vec(egress, 0..3),
    )
        .prop_map(
            |(enabled, allowed_namespaces, ingress_rules, egress_rules)| {
                NetworkPolicySpec {
                    enabled,
                    allowed_namespaces,
                    ingress_rules,
                    egress_rules,
                }
            },
        )
}

pub fn spec() -> impl Strategy<Value = TenantSpec> {
    let auth =
        option::of(option::of(text()).prop_map(|admin_user_id| AuthSpec { admin_user_id }));
    (
        option::of(text()),
        option::of(text()),
        server(),
        redis(),
        network_policy(),
        auth,
        vec(text(), 0..3),
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
                image_pull_secrets,
                deletion_protection,
            )| {
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
