//! NetworkPolicies of a tenant namespace: deny by default, then allow what the tenant
//! needs and what its spec asks for.

use super::labels::selector_labels;
use super::redis::REDIS_PORT;
use super::server::SERVER_PORT;
use super::{RenderError, RenderSettings, child_meta};
use crate::crd::{PortRule, Protocol, Tenant, namespace_for};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Every policy the tenant should have; empty when policies are disabled. Policies of ours
/// that are not in this list (a removed custom rule, say) are to be deleted.
pub fn network_policies(
    tenant: &Tenant,
    settings: &RenderSettings,
) -> Result<Vec<NetworkPolicy>, RenderError> {
    let spec = &tenant.spec.network_policy;
    if !spec.enabled {
        return Ok(Vec::new());
    }
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let server = || pods_of(&name, "server");
    let redis = || pods_of(&name, "redis");
    let mut policies = vec![
        policy(
            tenant,
            "default-deny-all",
            all_pods(),
            &["Ingress", "Egress"],
            vec![],
            vec![],
        )?,
        // Redis has no password: only its own server may connect, and only to Redis's port.
        policy(
            tenant,
            "allow-redis-from-server",
            redis(),
            &["Ingress"],
            vec![ingress(
                vec![pods_here(server())],
                vec![port(Protocol::Tcp, REDIS_PORT)],
            )],
            vec![],
        )?,
        policy(
            tenant,
            "allow-server-to-redis",
            server(),
            &["Egress"],
            vec![],
            vec![egress(
                vec![pods_here(redis())],
                vec![port(Protocol::Tcp, REDIS_PORT)],
            )],
        )?,
        // Pods of the tenant namespace reach the server port. Their egress to the server
        // pods is open on every port: the server's ingress policies decide (the port 3030
        // here, a custom ingress rule's ports for its peers in this namespace).
        policy(
            tenant,
            "allow-server-from-namespace",
            server(),
            &["Ingress"],
            vec![ingress(
                vec![pods_here(all_pods())],
                vec![port(Protocol::Tcp, SERVER_PORT)],
            )],
            vec![],
        )?,
        policy(
            tenant,
            "allow-egress-to-server",
            all_pods(),
            &["Egress"],
            vec![],
            vec![egress(vec![pods_here(server())], vec![])],
        )?,
        policy(
            tenant,
            "allow-dns",
            all_pods(),
            &["Egress"],
            vec![],
            vec![egress(
                vec![pods_in(
                    &["kube-system".to_string()],
                    &settings.dns_pod_labels,
                )],
                vec![port(Protocol::Udp, 53), port(Protocol::Tcp, 53)],
            )],
        )?,
        policy(
            tenant,
            "allow-auth-egress",
            server(),
            &["Egress"],
            vec![],
            vec![egress(
                vec![pods_in(
                    std::slice::from_ref(&settings.auth_namespace),
                    &settings.auth_pod_labels,
                )],
                vec![port(Protocol::Tcp, settings.auth_port)],
            )],
        )?,
    ];
    // The backup Job's pods save Redis's snapshot over Redis's port, nothing more.
    if tenant.spec.redis.backup.is_some() {
        let backup = || pods_of(&name, super::BACKUP_COMPONENT);
        policies.push(policy(
            tenant,
            "allow-redis-from-backup",
            redis(),
            &["Ingress"],
            vec![ingress(
                vec![pods_here(backup())],
                vec![port(Protocol::Tcp, REDIS_PORT)],
            )],
            vec![],
        )?);
        policies.push(policy(
            tenant,
            "allow-backup-to-redis",
            backup(),
            &["Egress"],
            vec![],
            vec![egress(
                vec![pods_here(redis())],
                vec![port(Protocol::Tcp, REDIS_PORT)],
            )],
        )?);
    }
    // An empty list allows nobody: then the policy is simply not there.
    if !spec.allowed_namespaces.is_empty() {
        policies.push(server_port_from(
            tenant,
            "allow-api-access",
            &spec.allowed_namespaces,
        )?);
    }
    // The guide's Ingress reaches the server through the ingress controller's pods.
    if !settings.ingress_controller_namespaces.is_empty() {
        policies.push(server_port_from(
            tenant,
            "allow-ingress-controller",
            &settings.ingress_controller_namespaces,
        )?);
    }
    // A custom rule's peers: pods with its labels in the tenant's namespace or an allowed
    // one. It selects the server pods only, so even "all ports" never opens Redis.
    let mut rule_namespaces = vec![namespace_for(&name)];
    for allowed in &spec.allowed_namespaces {
        if !rule_namespaces.contains(allowed) {
            rule_namespaces.push(allowed.clone());
        }
    }
    for (i, rule) in spec.ingress_rules.iter().enumerate() {
        policies.push(policy(
            tenant,
            &format!("custom-ingress-{i}"),
            server(),
            &["Ingress"],
            vec![ingress(
                vec![pods_in(&rule_namespaces, &rule.from)],
                ports(&rule.ports),
            )],
            vec![],
        )?);
    }
    for (i, rule) in spec.egress_rules.iter().enumerate() {
        policies.push(policy(
            tenant,
            &format!("custom-egress-{i}"),
            server(),
            &["Egress"],
            vec![],
            vec![egress(vec![pods_anywhere(&rule.to)], ports(&rule.ports))],
        )?);
    }
    Ok(policies)
}

/// Policy `name`: pods of `from_namespaces` may reach the server port, nothing else.
fn server_port_from(
    tenant: &Tenant,
    name: &str,
    from_namespaces: &[String],
) -> Result<NetworkPolicy, RenderError> {
    let tenant_name = tenant.metadata.name.clone().unwrap_or_default();
    policy(
        tenant,
        name,
        pods_of(&tenant_name, "server"),
        &["Ingress"],
        vec![ingress(
            vec![namespaces(from_namespaces)],
            vec![port(Protocol::Tcp, SERVER_PORT)],
        )],
        vec![],
    )
}

fn policy(
    tenant: &Tenant,
    name: &str,
    pod_selector: LabelSelector,
    types: &[&str],
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> Result<NetworkPolicy, RenderError> {
    Ok(NetworkPolicy {
        metadata: child_meta(tenant, name.to_string(), None)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector),
            policy_types: Some(types.iter().map(|t| t.to_string()).collect()),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    })
}

fn ingress(
    from: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn egress(to: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(to),
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn all_pods() -> LabelSelector {
    LabelSelector::default()
}

fn pods_of(tenant: &str, component: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(tenant, component)),
        ..LabelSelector::default()
    }
}

/// Pods matching `selector` in the policy's own namespace.
fn pods_here(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..NetworkPolicyPeer::default()
    }
}

fn namespaces(names: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(names.to_vec()),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Pods with `labels` (all pods when empty) in the namespaces `names`.
fn pods_in(names: &[String], labels: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: (!labels.is_empty()).then(|| LabelSelector {
            match_labels: Some(labels.clone()),
            ..LabelSelector::default()
        }),
        ..namespaces(names)
    }
}

/// Pods with `labels` in any namespace.
fn pods_anywhere(labels: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn ports(rules: &[PortRule]) -> Vec<NetworkPolicyPort> {
    rules.iter().map(|p| port(p.protocol, p.port)).collect()
}

fn port(protocol: Protocol, number: i32) -> NetworkPolicyPort {
    let protocol = match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    };
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(number)),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EgressRule, IngressRule};
    use crate::render::DEFAULT_INGRESS_CONTROLLER_NAMESPACES;
    use crate::render::test_support::{basic, customized};

    fn names(policies: &[NetworkPolicy]) -> Vec<String> {
        policies
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    fn without_ingress_controllers() -> RenderSettings {
        RenderSettings {
            ingress_controller_namespaces: Vec::new(),
            ..RenderSettings::default()
        }
    }

    #[test]
    fn an_empty_allowed_namespaces_list_allows_nobody() {
        let policies = network_policies(&basic(), &without_ingress_controllers()).expect("renders");
        assert_eq!(
            names(&policies),
            [
                "default-deny-all",
                "allow-redis-from-server",
                "allow-server-to-redis",
                "allow-server-from-namespace",
                "allow-egress-to-server",
                "allow-dns",
                "allow-auth-egress"
            ]
        );
    }

    /// The one ingress rule of policy `name`: its source namespaces and ports.
    fn ingress_of(policies: &[NetworkPolicy], name: &str) -> (Vec<String>, Vec<IntOrString>) {
        let policy = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("policy {name}"));
        let spec = policy.spec.clone().expect("spec");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.expect("ingress");
        assert_eq!(rules.len(), 1);
        let namespaces = rules[0].from.as_ref().expect("from")[0]
            .namespace_selector
            .clone()
            .expect("namespaces")
            .match_expressions
            .expect("expressions")[0]
            .values
            .clone()
            .expect("values");
        let ports = rules[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.clone())
            .collect();
        (namespaces, ports)
    }

    #[test]
    fn ingress_controllers_reach_the_server_port_only() {
        let policies = network_policies(&basic(), &RenderSettings::default()).expect("renders");
        let (namespaces, ports) = ingress_of(&policies, "allow-ingress-controller");
        assert_eq!(
            namespaces,
            DEFAULT_INGRESS_CONTROLLER_NAMESPACES.map(String::from)
        );
        assert_eq!(ports, [IntOrString::Int(SERVER_PORT)]);
        let policy = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("allow-ingress-controller"))
            .expect("policy");
        let selected = policy
            .spec
            .as_ref()
            .and_then(|s| s.pod_selector.clone())
            .and_then(|s| s.match_labels)
            .expect("server pods");
        assert_eq!(
            selected
                .get(crate::render::COMPONENT_LABEL)
                .map(String::as_str),
            Some("server")
        );
    }

    /// The peer of the one egress rule of policy `name`.
    fn egress_peer(policies: &[NetworkPolicy], name: &str) -> NetworkPolicyPeer {
        let policy = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("policy {name}"));
        let rules = policy.spec.clone().and_then(|s| s.egress).expect("egress");
        rules[0].to.clone().expect("to")[0].clone()
    }

    #[test]
    fn dns_and_auth_egress_reach_only_the_selected_pods_of_their_namespace() {
        let mut settings = RenderSettings::default();
        let policies = network_policies(&basic(), &settings).expect("renders");
        let dns = egress_peer(&policies, "allow-dns");
        assert_eq!(
            dns.pod_selector.and_then(|s| s.match_labels),
            Some(BTreeMap::from([(
                "k8s-app".to_string(),
                "kube-dns".to_string()
            )]))
        );
        assert!(dns.namespace_selector.is_some(), "in kube-system only");
        let auth = egress_peer(&policies, "allow-auth-egress");
        assert_eq!(auth.pod_selector, None, "every pod of the Auth namespace");

        settings.auth_pod_labels = BTreeMap::from([("app".to_string(), "auth".to_string())]);
        settings.dns_pod_labels = BTreeMap::new();
        let policies = network_policies(&basic(), &settings).expect("renders");
        let auth = egress_peer(&policies, "allow-auth-egress");
        assert_eq!(
            auth.pod_selector.and_then(|s| s.match_labels),
            Some(settings.auth_pod_labels.clone())
        );
        assert_eq!(egress_peer(&policies, "allow-dns").pod_selector, None);
    }

    #[test]
    fn no_ingress_controller_namespaces_means_no_such_policy() {
        let policies = network_policies(&basic(), &without_ingress_controllers()).expect("renders");
        assert!(!names(&policies).contains(&"allow-ingress-controller".to_string()));
    }

    #[test]
    fn allowed_namespaces_may_reach_the_server_port_only() {
        let policies =
            network_policies(&customized(), &RenderSettings::default()).expect("renders");
        let api = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("allow-api-access"))
            .expect("policy");
        let rule = &api
            .spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .expect("ingress")[0];
        let selector = rule.from.as_ref().expect("from")[0]
            .namespace_selector
            .clone()
            .expect("namespaces");
        let values = selector.match_expressions.expect("expressions")[0]
            .values
            .clone();
        assert_eq!(
            values,
            Some(vec!["default".to_string(), "monitoring".to_string()])
        );
        assert_eq!(
            rule.ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(3030))
        );
    }

    #[test]
    fn dns_egress_is_open_on_udp_and_tcp_53() {
        let policies = network_policies(&basic(), &RenderSettings::default()).expect("renders");
        let dns = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("allow-dns"))
            .expect("policy");
        let ports = dns
            .spec
            .as_ref()
            .and_then(|s| s.egress.clone())
            .expect("egress")[0]
            .ports
            .clone()
            .expect("ports");
        let pairs: Vec<(Option<String>, Option<IntOrString>)> =
            ports.into_iter().map(|p| (p.protocol, p.port)).collect();
        assert_eq!(
            pairs,
            [
                (Some("UDP".into()), Some(IntOrString::Int(53))),
                (Some("TCP".into()), Some(IntOrString::Int(53)))
            ]
        );
    }

    #[test]
    fn each_custom_rule_gets_its_own_policy_and_disabled_means_none() {
        let mut tenant = basic();
        tenant.spec.network_policy.ingress_rules = vec![IngressRule {
            description: Some("web".into()),
            from: [("app".to_string(), "web-frontend".to_string())].into(),
            ports: vec![PortRule {
                protocol: Protocol::Tcp,
                port: 80,
            }],
        }];
        tenant.spec.network_policy.egress_rules = vec![EgressRule {
            description: None,
            to: [("app".to_string(), "database".to_string())].into(),
            ports: vec![PortRule {
                protocol: Protocol::Tcp,
                port: 5432,
            }],
        }];
        tenant.spec.network_policy.allowed_namespaces = vec!["monitoring".into()];
        let policies = network_policies(&tenant, &RenderSettings::default()).expect("renders");
        let all = names(&policies);
        assert!(all.contains(&"custom-ingress-0".to_string()));
        assert!(all.contains(&"custom-egress-0".to_string()));
        for name in ["custom-ingress-0", "custom-egress-0"] {
            let policy = policies
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
                .expect("policy");
            let selected = policy.spec.as_ref().and_then(|s| s.pod_selector.clone());
            assert_eq!(
                selected.and_then(|s| s.match_labels),
                Some(selector_labels("my-tenant", "server")),
                "{name} selects the server pods only"
            );
        }
        let (namespaces, _) = ingress_of(&policies, "custom-ingress-0");
        assert_eq!(namespaces, ["tenant-my-tenant", "monitoring"]);
        tenant.spec.network_policy.enabled = false;
        assert!(
            network_policies(&tenant, &RenderSettings::default())
                .expect("renders")
                .is_empty()
        );
    }
}
