//! An evaluator of Kubernetes NetworkPolicy semantics, written from the API documentation
//! (concepts/services-networking/network-policies and the networking.k8s.io/v1 reference),
//! not from the operator's renderer: given every policy of a cluster, its namespaces and
//! pods, it says whether a connection is allowed.
//!
//! The rules it implements:
//! - a policy applies to the pods of its own namespace that its `podSelector` selects (an
//!   empty selector selects every pod of the namespace);
//! - `policyTypes` defaults to `Ingress`, plus `Egress` when the policy has egress rules;
//! - a pod is isolated for a direction only when some policy that selects it has that
//!   type; a pod not isolated for a direction allows everything in that direction;
//! - an isolated pod allows what the union of the rules of the policies selecting it, for
//!   that direction, allows; a policy with the type but no rules allows nothing;
//! - a rule matches when one of its peers matches the other end (no or empty `from`/`to`:
//!   every peer) and one of its ports matches (no or empty `ports`: every port);
//! - a peer is `podSelector` alone (pods of the policy's namespace), `namespaceSelector`
//!   alone (every pod of the selected namespaces), both in one element (pods selected by
//!   `podSelector` in namespaces selected by `namespaceSelector`), or `ipBlock` (`cidr`
//!   minus `except`), which selectors never replace: an external address matches only
//!   an `ipBlock` or an empty peer list;
//! - a port has a protocol (default TCP), a number or a name (a named port is the
//!   destination pod's container port of that name and protocol), or no port (every port
//!   of the protocol), and `endPort` makes a number a range;
//! - a label selector is the conjunction of `matchLabels` and `matchExpressions` (`In`,
//!   `NotIn`, `Exists`, `DoesNotExist`; `NotIn` matches a missing key); empty selects all;
//! - a connection needs both ends: the egress of its source and the ingress of its
//!   destination (an external end has no policies of its own).
//!
//! Namespaces carry `kubernetes.io/metadata.name`, as the API server sets it on every one.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub type Labels = BTreeMap<String, String>;

/// `[("k", "v"), ...]` as labels.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A container port a pod declares, which named ports in policies refer to.
#[derive(Clone, Debug)]
pub struct ContainerPort {
    pub name: String,
    pub protocol: String,
    pub port: i32,
}

/// A pod as policies see it: where it runs, its labels, its address and declared ports.
#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub labels: Labels,
    pub ip: IpAddr,
    pub ports: Vec<ContainerPort>,
}

/// One end of a connection: a pod of the cluster or an address outside it.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    Pod(&'a Pod),
    External(IpAddr),
}

impl Endpoint<'_> {
    fn ip(&self) -> IpAddr {
        match self {
            Endpoint::Pod(pod) => pod.ip,
            Endpoint::External(ip) => *ip,
        }
    }
}

/// The policies of a cluster and the labels of its namespaces.
#[derive(Default, Clone, Debug)]
pub struct Cluster {
    namespaces: BTreeMap<String, Labels>,
    policies: Vec<NetworkPolicy>,
}

const NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Cluster {
    /// Adds (or relabels) namespace `name`; it always carries its name label.
    pub fn namespace(&mut self, name: &str, extra: Labels) -> &mut Self {
        let mut all = extra;
        all.insert(NAME_LABEL.into(), name.into());
        self.namespaces.insert(name.into(), all);
        self
    }

    /// Adds policies; each must name its namespace, which gets registered if unknown.
    pub fn policies(&mut self, policies: impl IntoIterator<Item = NetworkPolicy>) -> &mut Self {
        for policy in policies {
            let ns = policy
                .metadata
                .namespace
                .clone()
                .expect("a NetworkPolicy names its namespace");
            if !self.namespaces.contains_key(&ns) {
                self.namespace(&ns, Labels::new());
            }
            self.policies.push(policy);
        }
        self
    }

    fn namespace_labels(&self, name: &str) -> Labels {
        self.namespaces
            .get(name)
            .cloned()
            .unwrap_or_else(|| labels(&[(NAME_LABEL, name)]))
    }

    /// Whether a connection from `source` to `destination` on `protocol`/`port` is allowed:
    /// the source's egress and the destination's ingress must both allow it.
    pub fn allows(
        &self,
        source: Endpoint,
        destination: Endpoint,
        protocol: &str,
        port: i32,
    ) -> bool {
        let egress = match source {
            Endpoint::Pod(pod) => self.egress_allows(pod, destination, protocol, port),
            Endpoint::External(_) => true,
        };
        let ingress = match destination {
            Endpoint::Pod(pod) => self.ingress_allows(pod, source, protocol, port),
            Endpoint::External(_) => true,
        };
        egress && ingress
    }

    /// Whether `pod`'s ingress policies admit `source` on `protocol`/`port`.
    pub fn ingress_allows(&self, pod: &Pod, source: Endpoint, protocol: &str, port: i32) -> bool {
        self.direction_allows(Direction::Ingress, pod, source, pod, protocol, port)
    }

    /// Whether `pod`'s egress policies let it reach `destination` on `protocol`/`port`.
    pub fn egress_allows(
        &self,
        pod: &Pod,
        destination: Endpoint,
        protocol: &str,
        port: i32,
    ) -> bool {
        let target = match destination {
            Endpoint::Pod(target) => Some(target),
            Endpoint::External(_) => None,
        };
        self.direction_allows(Direction::Egress, pod, destination, target, protocol, port)
    }

    /// `selected`'s policies of `direction` against the other end `peer`; named ports are
    /// looked up on `destination` (the pod that receives the connection, if any).
    fn direction_allows<'a>(
        &self,
        direction: Direction,
        selected: &Pod,
        peer: Endpoint,
        destination: impl Into<Option<&'a Pod>>,
        protocol: &str,
        port: i32,
    ) -> bool {
        let destination = destination.into();
        let applying: Vec<&NetworkPolicy> = self
            .policies
            .iter()
            .filter(|p| self.selects(p, selected) && has_type(p, direction))
            .collect();
        if applying.is_empty() {
            return true;
        }
        applying.iter().any(|policy| {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
            rules(policy, direction).iter().any(|(peers, ports)| {
                let peer_ok = match peers {
                    None => true,
                    Some(peers) if peers.is_empty() => true,
                    Some(peers) => peers.iter().any(|p| self.peer_matches(p, namespace, peer)),
                };
                let port_ok = match ports {
                    None => true,
                    Some(ports) if ports.is_empty() => true,
                    Some(ports) => ports
                        .iter()
                        .any(|p| port_matches(p, destination, protocol, port)),
                };
                peer_ok && port_ok
            })
        })
    }

    fn selects(&self, policy: &NetworkPolicy, pod: &Pod) -> bool {
        let Some(spec) = &policy.spec else {
            return false;
        };
        policy.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
            && selector_matches(
                spec.pod_selector
                    .as_ref()
                    .unwrap_or(&LabelSelector::default()),
                &pod.labels,
            )
    }

    fn peer_matches(
        &self,
        peer: &NetworkPolicyPeer,
        policy_namespace: &str,
        end: Endpoint,
    ) -> bool {
        if let Some(block) = &peer.ip_block {
            assert!(
                peer.pod_selector.is_none() && peer.namespace_selector.is_none(),
                "an ipBlock peer sets no selector (the API refuses it)"
            );
            return ip_block_matches(block, end.ip());
        }
        let Endpoint::Pod(pod) = end else {
            return false;
        };
        let namespace_ok = match &peer.namespace_selector {
            Some(selector) => selector_matches(selector, &self.namespace_labels(&pod.namespace)),
            None => {
                assert!(
                    peer.pod_selector.is_some(),
                    "a peer sets a selector or an ipBlock (the API refuses an empty one)"
                );
                pod.namespace == policy_namespace
            }
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|selector| selector_matches(selector, &pod.labels));
        namespace_ok && pod_ok
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    Ingress,
    Egress,
}

/// The policy's types, defaulted as the API documents.
fn has_type(policy: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    let wanted = match direction {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    };
    match &spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == wanted),
        _ => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        },
    }
}

type Rule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

fn rules(policy: &NetworkPolicy, direction: Direction) -> Vec<Rule<'_>> {
    let Some(spec) = &policy.spec else {
        return Vec::new();
    };
    match direction {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect(),
    }
}

fn port_matches(
    rule: &NetworkPolicyPort,
    destination: Option<&Pod>,
    protocol: &str,
    port: i32,
) -> bool {
    let rule_protocol = rule.protocol.as_deref().unwrap_or("TCP");
    if rule_protocol != protocol {
        return false;
    }
    match &rule.port {
        None => true,
        Some(IntOrString::Int(first)) => {
            let last = rule.end_port.unwrap_or(*first);
            (*first..=last).contains(&port)
        }
        Some(IntOrString::String(name)) => {
            assert!(rule.end_port.is_none(), "endPort needs a numeric port");
            destination.is_some_and(|pod| {
                pod.ports
                    .iter()
                    .any(|p| &p.name == name && p.protocol == protocol && p.port == port)
            })
        }
    }
}

/// A label selector against a set of labels; an empty selector selects everything.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown label selector operator {other}"),
        }
    });
    labels_ok && expressions_ok
}

fn ip_block_matches(block: &IPBlock, ip: IpAddr) -> bool {
    cidr_contains(&block.cidr, ip)
        && !block
            .except
            .iter()
            .flatten()
            .any(|except| cidr_contains(except, ip))
}

/// Whether `cidr` ("10.0.0.0/24", "fd00::/8") holds `ip`; addresses of the other family
/// never match.
fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (base, bits) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("CIDR {cidr} has no prefix length"));
    let base: IpAddr = base.parse().unwrap_or_else(|_| panic!("CIDR {cidr}"));
    let bits: u32 = bits.parse().unwrap_or_else(|_| panic!("CIDR {cidr}"));
    let (base, ip, width) = match (base, ip) {
        (IpAddr::V4(b), IpAddr::V4(i)) => (u128::from(u32::from(b)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(b), IpAddr::V6(i)) => (u128::from(b), u128::from(i), 128),
        _ => return false,
    };
    assert!(bits <= width, "CIDR {cidr}: prefix longer than the address");
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (base >> shift) == (ip >> shift)
}

/// The documentation's own examples and statements, one test each.
#[cfg(test)]
mod documented_semantics {
    use super::*;

    fn policy(yaml: &str) -> NetworkPolicy {
        serde_yaml::from_str(yaml).expect("a NetworkPolicy")
    }

    fn pod(namespace: &str, pod_labels: &[(&str, &str)], ip: &str) -> Pod {
        Pod {
            namespace: namespace.into(),
            labels: labels(pod_labels),
            ip: ip.parse().expect("IP"),
            ports: Vec::new(),
        }
    }

    fn external(ip: &str) -> Endpoint<'static> {
        Endpoint::External(ip.parse().expect("IP"))
    }

    /// The reference example `test-network-policy`, and what the docs say it means.
    #[test]
    fn the_documented_example_policy() {
        let mut cluster = Cluster::default();
        cluster
            .namespace("default", Labels::new())
            .namespace("myproject", labels(&[("project", "myproject")]))
            .namespace("elsewhere", Labels::new())
            .policies([policy(
                r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: test-network-policy, namespace: default}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    - namespaceSelector: {matchLabels: {project: myproject}}
    - podSelector: {matchLabels: {role: frontend}}
    ports: [{protocol: TCP, port: 6379}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
    ports: [{protocol: TCP, port: 5978}]
"#,
            )]);
        let db = pod("default", &[("role", "db")], "10.1.0.1");
        let frontend = pod("default", &[("role", "frontend")], "10.1.0.2");
        let frontend_elsewhere = pod("elsewhere", &[("role", "frontend")], "10.1.0.3");
        let any_in_project = pod("myproject", &[], "10.1.0.4");
        let other_default = pod("default", &[("role", "cache")], "10.1.0.5");
        let to_db = |from: Endpoint, port| cluster.ingress_allows(&db, from, "TCP", port);

        assert!(to_db(Endpoint::Pod(&frontend), 6379));
        assert!(!to_db(Endpoint::Pod(&frontend), 6380), "only TCP 6379");
        assert!(!cluster.ingress_allows(&db, Endpoint::Pod(&frontend), "UDP", 6379));
        assert!(to_db(Endpoint::Pod(&any_in_project), 6379));
        assert!(
            !to_db(Endpoint::Pod(&frontend_elsewhere), 6379),
            "a podSelector alone selects pods of the policy's namespace only"
        );
        assert!(!to_db(Endpoint::Pod(&other_default), 6379));
        assert!(to_db(external("172.17.0.9"), 6379));
        assert!(to_db(external("172.17.2.9"), 6379));
        assert!(!to_db(external("172.17.1.9"), 6379), "except carves out");
        assert!(!to_db(external("172.18.0.1"), 6379));
        // Egress: to 10.0.0.0/24 on TCP 5978, nothing else.
        assert!(cluster.allows(Endpoint::Pod(&db), external("10.0.0.7"), "TCP", 5978));
        assert!(!cluster.allows(Endpoint::Pod(&db), external("10.0.0.7"), "TCP", 80));
        assert!(!cluster.allows(Endpoint::Pod(&db), external("10.0.1.7"), "TCP", 5978));
        // Pods the policy does not select are not isolated.
        assert!(cluster.allows(
            Endpoint::Pod(&frontend_elsewhere),
            Endpoint::Pod(&other_default),
            "TCP",
            1
        ));
    }

    /// "Behavior of to and from selectors": one element with both selectors is a
    /// conjunction; two elements are a union.
    #[test]
    fn namespace_and_pod_selector_in_one_element_versus_two() {
        let one = r#"
metadata: {name: one, namespace: db}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {user: alice}}
      podSelector: {matchLabels: {role: client}}
"#;
        let two = r#"
metadata: {name: two, namespace: db}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {user: alice}}
    - podSelector: {matchLabels: {role: client}}
"#;
        let target = pod("db", &[], "10.0.0.1");
        let alice_client = pod("alice", &[("role", "client")], "10.0.0.2");
        let alice_other = pod("alice", &[], "10.0.0.3");
        let db_client = pod("db", &[("role", "client")], "10.0.0.4");
        let bob_client = pod("bob", &[("role", "client")], "10.0.0.5");
        let admits = |yaml: &str, source: &Pod| {
            let mut cluster = Cluster::default();
            cluster
                .namespace("alice", labels(&[("user", "alice")]))
                .namespace("bob", labels(&[("user", "bob")]))
                .policies([policy(yaml)]);
            cluster.ingress_allows(&target, Endpoint::Pod(source), "TCP", 80)
        };
        assert!(admits(one, &alice_client));
        assert!(!admits(one, &alice_other));
        assert!(!admits(one, &db_client), "the namespace must match too");
        assert!(!admits(one, &bob_client));
        assert!(admits(two, &alice_client));
        assert!(admits(two, &alice_other), "any pod of alice's namespaces");
        assert!(
            admits(two, &db_client),
            "role=client in the policy's namespace"
        );
        assert!(
            !admits(two, &bob_client),
            "role=client elsewhere is not enough"
        );
    }

    /// "Default policies": deny all, allow all, per direction; a pod that no policy
    /// selects for a direction is not isolated for it.
    #[test]
    fn the_default_policies() {
        let deny_ingress = "metadata: {name: d, namespace: ns}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n";
        let allow_ingress = "metadata: {name: a, namespace: ns}\nspec:\n  podSelector: {}\n  ingress: [{}]\n  policyTypes: [Ingress]\n";
        let deny_egress = "metadata: {name: e, namespace: ns}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n";
        let allow_egress = "metadata: {name: f, namespace: ns}\nspec:\n  podSelector: {}\n  egress: [{}]\n  policyTypes: [Egress]\n";
        let inside = pod("ns", &[("app", "x")], "10.0.0.1");
        let outside = pod("other", &[], "10.0.0.2");
        let check = |yamls: &[&str]| {
            let mut cluster = Cluster::default();
            cluster.policies(yamls.iter().map(|y| policy(y)));
            (
                cluster.allows(Endpoint::Pod(&outside), Endpoint::Pod(&inside), "TCP", 80),
                cluster.allows(Endpoint::Pod(&inside), Endpoint::Pod(&outside), "TCP", 80),
                cluster.allows(Endpoint::Pod(&inside), external("8.8.8.8"), "UDP", 53),
            )
        };
        assert_eq!(check(&[]), (true, true, true), "no policy: not isolated");
        assert_eq!(check(&[deny_ingress]), (false, true, true));
        assert_eq!(
            check(&[deny_ingress, allow_ingress]),
            (true, true, true),
            "union"
        );
        assert_eq!(check(&[deny_egress]), (true, false, false));
        assert_eq!(check(&[deny_egress, allow_egress]), (true, true, true));
        assert_eq!(check(&[deny_ingress, deny_egress]), (false, false, false));
    }

    /// policyTypes left out: Ingress always, Egress only when there are egress rules.
    #[test]
    fn policy_types_default_from_the_rules() {
        let egress_rules_only = r#"
metadata: {name: p, namespace: ns}
spec:
  podSelector: {}
  egress: [{ports: [{port: 53, protocol: UDP}]}]
"#;
        let nothing = "metadata: {name: q, namespace: ns}\nspec:\n  podSelector: {}\n";
        let inside = pod("ns", &[], "10.0.0.1");
        let outside = pod("other", &[], "10.0.0.2");
        let mut cluster = Cluster::default();
        cluster.policies([policy(egress_rules_only)]);
        assert!(
            !cluster.allows(Endpoint::Pod(&outside), Endpoint::Pod(&inside), "TCP", 80),
            "Ingress is implied: isolated with no ingress rules"
        );
        assert!(cluster.allows(Endpoint::Pod(&inside), external("1.1.1.1"), "UDP", 53));
        assert!(!cluster.allows(Endpoint::Pod(&inside), external("1.1.1.1"), "TCP", 53));
        let mut cluster = Cluster::default();
        cluster.policies([policy(nothing)]);
        assert!(!cluster.allows(Endpoint::Pod(&outside), Endpoint::Pod(&inside), "TCP", 80));
        assert!(
            cluster.allows(Endpoint::Pod(&inside), Endpoint::Pod(&outside), "TCP", 80),
            "no egress rules: Egress is not implied"
        );
    }

    /// Ports: a range with endPort, a protocol, all ports of a protocol, a named port.
    #[test]
    fn ports_ranges_protocols_and_names() {
        let yaml = r#"
metadata: {name: p, namespace: ns}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - {protocol: TCP, port: 32000, endPort: 32768}
    - {protocol: UDP}
    - {port: http}
"#;
        let mut cluster = Cluster::default();
        cluster.policies([policy(yaml)]);
        let mut target = pod("ns", &[], "10.0.0.1");
        target.ports.push(ContainerPort {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 8080,
        });
        let from = external("192.0.2.1");
        let admits = |protocol, port| cluster.ingress_allows(&target, from, protocol, port);
        assert!(admits("TCP", 32000) && admits("TCP", 32500) && admits("TCP", 32768));
        assert!(!admits("TCP", 31999) && !admits("TCP", 32769));
        assert!(admits("UDP", 1) && admits("UDP", 65535), "every UDP port");
        assert!(
            admits("TCP", 8080),
            "the named port, on the destination pod"
        );
        assert!(!admits("TCP", 8081) && !admits("SCTP", 8080));
    }

    #[test]
    fn label_selector_expressions() {
        let selector: LabelSelector = serde_yaml::from_str(
            r#"
matchLabels: {tier: web}
matchExpressions:
- {key: env, operator: In, values: [prod, staging]}
- {key: team, operator: NotIn, values: [red]}
- {key: owner, operator: Exists}
- {key: legacy, operator: DoesNotExist}
"#,
        )
        .expect("selector");
        let base = [("tier", "web"), ("env", "prod"), ("owner", "x")];
        assert!(selector_matches(&selector, &labels(&base)));
        assert!(
            selector_matches(
                &selector,
                &labels(&[base[0], base[1], base[2], ("team", "blue")])
            ),
            "NotIn holds for another value"
        );
        assert!(!selector_matches(
            &selector,
            &labels(&[base[0], base[1], base[2], ("team", "red")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[base[0], ("env", "dev"), base[2]])
        ));
        assert!(
            !selector_matches(&selector, &labels(&[base[0], base[2]])),
            "In needs the key"
        );
        assert!(
            !selector_matches(&selector, &labels(&[base[0], base[1]])),
            "Exists"
        );
        assert!(!selector_matches(
            &selector,
            &labels(&[base[0], base[1], base[2], ("legacy", "")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[("tier", "db"), base[1], base[2]])
        ));
        assert!(
            selector_matches(&LabelSelector::default(), &Labels::new()),
            "empty: all"
        );
    }

    /// A namespace is selected by name through the label the API server sets.
    #[test]
    fn namespaces_are_selected_by_their_name_label() {
        let yaml = r#"
metadata: {name: p, namespace: ns}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [good]}]
"#;
        let mut cluster = Cluster::default();
        cluster
            .namespace("good", Labels::new())
            .policies([policy(yaml)]);
        let target = pod("ns", &[], "10.0.0.1");
        let good = pod("good", &[], "10.0.0.2");
        let bad = pod("bad", &[], "10.0.0.3");
        assert!(cluster.ingress_allows(&target, Endpoint::Pod(&good), "TCP", 1));
        assert!(!cluster.ingress_allows(&target, Endpoint::Pod(&bad), "TCP", 1));
        assert!(
            !cluster.ingress_allows(&target, external("10.0.0.2"), "TCP", 1),
            "selectors never match an address outside the cluster"
        );
    }

    /// Both ends must agree: an egress-isolated source cannot reach a destination whose
    /// ingress is open, and the reverse.
    #[test]
    fn a_connection_needs_egress_and_ingress() {
        let deny_egress = "metadata: {name: e, namespace: a}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n";
        let deny_ingress = "metadata: {name: i, namespace: b}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n";
        let in_a = pod("a", &[], "10.0.0.1");
        let in_b = pod("b", &[], "10.0.0.2");
        let mut cluster = Cluster::default();
        cluster.policies([policy(deny_egress), policy(deny_ingress)]);
        assert!(!cluster.ingress_allows(&in_b, Endpoint::Pod(&in_a), "TCP", 1));
        assert!(!cluster.egress_allows(&in_a, Endpoint::Pod(&in_b), "TCP", 1));
        let mut only_egress = Cluster::default();
        only_egress.policies([policy(deny_egress)]);
        assert!(only_egress.ingress_allows(&in_b, Endpoint::Pod(&in_a), "TCP", 1));
        assert!(!only_egress.allows(Endpoint::Pod(&in_a), Endpoint::Pod(&in_b), "TCP", 1));
        let mut only_ingress = Cluster::default();
        only_ingress.policies([policy(deny_ingress)]);
        assert!(only_ingress.egress_allows(&in_a, Endpoint::Pod(&in_b), "TCP", 1));
        assert!(!only_ingress.allows(Endpoint::Pod(&in_a), Endpoint::Pod(&in_b), "TCP", 1));
    }

    #[test]
    fn cidr_prefixes() {
        let at = |ip: &str| ip.parse::<IpAddr>().expect("IP");
        assert!(cidr_contains("10.0.0.0/8", at("10.255.1.1")));
        assert!(!cidr_contains("10.0.0.0/8", at("11.0.0.1")));
        assert!(cidr_contains("0.0.0.0/0", at("203.0.113.5")));
        assert!(cidr_contains("192.0.2.7/32", at("192.0.2.7")));
        assert!(!cidr_contains("192.0.2.7/32", at("192.0.2.8")));
        assert!(cidr_contains("fd00::/8", at("fd12::1")));
        assert!(
            !cidr_contains("10.0.0.0/8", at("fd12::1")),
            "families never mix"
        );
    }
}
