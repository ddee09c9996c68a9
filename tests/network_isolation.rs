//! Tenant network isolation, judged by an independent evaluator of NetworkPolicy semantics
//! (tests/common/netpol_eval.rs, written from the Kubernetes documentation) over the
//! policies the operator renders for the guide's example tenants, side by side in one
//! cluster with DNS, Auth, ingress controllers, allowed namespaces and an attacker's
//! namespace. No cluster needed: the same rows run on the real node in
//! tests/e2e_real_node.rs where they can be realised.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/netpol_eval.rs"]
mod netpol_eval;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use netpol_eval::{Cluster, ContainerPort, Endpoint, Labels, Pod, labels};
use neurallog_operator::crd::Tenant;
use neurallog_operator::render::{
    RenderSettings, backup_cronjob, namespace, network_policies, redis_statefulset,
    server_deployment,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
/// The guide's "Network Policies" example, as written.
const GUIDE_RULES: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: x}
spec:
  networkPolicy:
    enabled: true
    allowedNamespaces:
      - default
      - monitoring
    ingressRules:
      - description: Allow ingress from app namespace
        from:
          app: web-frontend
        ports:
          - protocol: TCP
            port: 80
    egressRules:
      - description: Allow egress to database
        to:
          app: database
        ports:
          - protocol: TCP
            port: 5432
"#;
/// A rule without ports (all ports of the server pods) from pods labelled `app=web`.
const ANY_PORT_RULE: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: x}
spec:
  networkPolicy:
    allowedNamespaces: [partner]
    ingressRules:
      - from: {app: web}
"#;
/// The basic tenant with Redis backups: the backup Job's pod must reach Redis.
const BACKED_UP: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: x}
spec:
  redis:
    backup: {schedule: "0 3 * * *", keep: 3}
"#;
const POLICIES_OFF: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: x}
spec:
  networkPolicy: {enabled: false}
"#;

/// The tenants: (name, spec YAML).
const TENANTS: [(&str, &str); 6] = [
    ("basic", BASIC),
    ("customized", CUSTOMIZED),
    ("rules", GUIDE_RULES),
    ("wide", ANY_PORT_RULE),
    ("backed", BACKED_UP),
    ("open", POLICIES_OFF),
];

const INTERNET: &str = "internet";

/// Every pod by name (`<tenant>:redis`, `<tenant>:server`, `<tenant>:backup` for a tenant
/// with backups, `<namespace>/<pod>`), and the
/// cluster's policies.
struct World {
    cluster: Cluster,
    pods: BTreeMap<String, Pod>,
}

fn settings() -> RenderSettings {
    RenderSettings {
        auth_pod_labels: labels(&[("app", "neurallog-auth")]),
        ..RenderSettings::default()
    }
}

fn tenant(name: &str, yaml: &str) -> Tenant {
    let mut tenant: Tenant = serde_yaml::from_str(yaml).expect("Tenant YAML");
    tenant.metadata.name = Some(name.into());
    tenant.metadata.uid = Some(format!("00000000-0000-4000-8000-{:012}", name.len()));
    tenant
}

/// A pod as its workload's template makes it: labels and declared container ports.
fn pod_of(namespace: &str, template: &PodTemplateSpec, ip: IpAddr) -> Pod {
    let ports = template
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| ContainerPort {
            name: p.name.clone().unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.container_port,
        })
        .collect();
    Pod {
        namespace: namespace.into(),
        labels: template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        ip,
        ports,
    }
}

fn world() -> World {
    let settings = settings();
    let mut cluster = Cluster::default();
    let mut pods = BTreeMap::new();
    let mut next_ip = 0u8;
    let mut ip = || {
        next_ip += 1;
        IpAddr::from([10, 244, 0, next_ip])
    };
    for (name, yaml) in TENANTS {
        let tenant = tenant(name, yaml);
        let ns = namespace(&tenant).expect("namespace");
        let ns_name = ns.metadata.name.clone().expect("name");
        cluster.namespace(&ns_name, ns.metadata.labels.clone().unwrap_or_default());
        cluster.policies(network_policies(&tenant, &settings).expect("policies"));
        let redis = redis_statefulset(&tenant).expect("redis");
        let server = server_deployment(&tenant, &settings).expect("server");
        let template = |t: Option<PodTemplateSpec>| t.expect("a pod template");
        pods.insert(
            format!("{name}:redis"),
            pod_of(&ns_name, &template(redis.spec.map(|s| s.template)), ip()),
        );
        pods.insert(
            format!("{name}:server"),
            pod_of(&ns_name, &template(server.spec.map(|s| s.template)), ip()),
        );
        if let Some(backup) = backup_cronjob(&tenant, &settings).expect("backup") {
            let job = backup.spec.and_then(|s| s.job_template.spec);
            pods.insert(
                format!("{name}:backup"),
                pod_of(&ns_name, &template(job.map(|j| j.template)), ip()),
            );
        }
        // Someone else's pod in the tenant's namespace, with the guide rule's labels.
        pods.insert(
            format!("{ns_name}/web-frontend"),
            plain_pod(&ns_name, &[("app", "web-frontend")], ip()),
        );
    }
    for (ns, pod, pod_labels) in [
        ("kube-system", "coredns", &[("k8s-app", "kube-dns")][..]),
        (
            "kube-system",
            "metrics-server",
            &[("k8s-app", "metrics-server")],
        ),
        ("neurallog", "auth", &[("app", "neurallog-auth")]),
        ("neurallog", "operator", &[("app", "neurallog-operator")]),
        ("default", "client", &[]),
        ("default", "web-frontend", &[("app", "web-frontend")]),
        ("monitoring", "prometheus", &[("app", "prometheus")]),
        ("ingress-nginx", "controller", &[("app", "ingress-nginx")]),
        ("partner", "web", &[("app", "web")]),
        ("partner", "plain", &[]),
        ("db", "database", &[("app", "database")]),
        ("db", "other", &[("app", "other")]),
        ("attacker", "web", &[("app", "web")]),
        ("attacker", "web-frontend", &[("app", "web-frontend")]),
        ("attacker", "plain", &[]),
    ] {
        cluster.namespace(ns, Labels::new());
        pods.insert(format!("{ns}/{pod}"), plain_pod(ns, pod_labels, ip()));
    }
    World { cluster, pods }
}

fn plain_pod(namespace: &str, pod_labels: &[(&str, &str)], ip: IpAddr) -> Pod {
    Pod {
        namespace: namespace.into(),
        labels: labels(pod_labels),
        ip,
        ports: Vec::new(),
    }
}

impl World {
    fn endpoint(&self, name: &str) -> Endpoint<'_> {
        if name == INTERNET {
            return Endpoint::External(IpAddr::from([203, 0, 113, 10]));
        }
        Endpoint::Pod(
            self.pods
                .get(name)
                .unwrap_or_else(|| panic!("no pod {name} in the world")),
        )
    }

    fn allows(&self, from: &str, to: &str, protocol: &str, port: i32) -> bool {
        self.cluster
            .allows(self.endpoint(from), self.endpoint(to), protocol, port)
    }
}

const ALLOW: bool = true;
const DENY: bool = false;

/// (source, destination, protocol, port, expected, why).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    i32,
    bool,
    &'static str,
);

#[rustfmt::skip]
const TABLE: &[Row] = &[
    // Redis: its own server on 6379, nobody else, nothing else.
    ("basic:server", "basic:redis", "TCP", 6379, ALLOW, "a server reaches its Redis"),
    ("basic:server", "basic:redis", "TCP", 6380, DENY, "only Redis's port"),
    ("basic:server", "basic:redis", "UDP", 6379, DENY, "only TCP"),
    ("tenant-basic/web-frontend", "basic:redis", "TCP", 6379, DENY, "another pod of the tenant's namespace"),
    ("customized:server", "basic:redis", "TCP", 6379, DENY, "another tenant's server"),
    ("basic:server", "customized:redis", "TCP", 6379, DENY, "a server and another tenant's Redis"),
    ("default/client", "customized:redis", "TCP", 6379, DENY, "an allowed namespace never reaches Redis"),
    ("monitoring/prometheus", "customized:redis", "TCP", 6379, DENY, "an allowed namespace never reaches Redis"),
    ("ingress-nginx/controller", "basic:redis", "TCP", 6379, DENY, "an ingress controller never reaches Redis"),
    ("attacker/web", "wide:redis", "TCP", 6379, DENY, "the rule's labels elsewhere: no Redis"),
    ("partner/web", "wide:redis", "TCP", 6379, DENY, "a rule without ports does not open Redis"),
    ("default/web-frontend", "rules:redis", "TCP", 80, DENY, "a rule's port is the server's, not Redis's"),
    ("attacker/plain", "basic:redis", "TCP", 6379, DENY, "any other namespace"),
    (INTERNET, "basic:redis", "TCP", 6379, DENY, "outside the cluster"),
    // Backups: the backup Job's pod reaches its own Redis's port, and nothing else does.
    ("backed:backup", "backed:redis", "TCP", 6379, ALLOW, "the backup Job saves its Redis"),
    ("backed:backup", "backed:redis", "TCP", 6380, DENY, "only Redis's port"),
    ("backed:backup", "basic:redis", "TCP", 6379, DENY, "another tenant's Redis"),
    ("backed:backup", "backed:server", "TCP", 3030, ALLOW, "the tenant's namespace reaches its server"),
    ("backed:backup", "kube-system/coredns", "UDP", 53, ALLOW, "DNS: Redis's name"),
    ("backed:backup", "neurallog/auth", "TCP", 3040, DENY, "the backup has no business with Auth"),
    ("backed:backup", INTERNET, "TCP", 443, DENY, "no internet"),
    ("tenant-backed/web-frontend", "backed:redis", "TCP", 6379, DENY, "backups open Redis to the backup pods only"),
    ("basic:server", "backed:redis", "TCP", 6379, DENY, "another tenant's server"),
    ("backed:redis", "backed:backup", "TCP", 6379, DENY, "nothing calls the backup pod"),
    (INTERNET, "backed:backup", "TCP", 6379, DENY, "outside the cluster"),
    // The server port: the tenant's namespace, allowedNamespaces, ingress controllers.
    ("tenant-basic/web-frontend", "basic:server", "TCP", 3030, ALLOW, "the tenant's namespace"),
    ("basic:redis", "basic:server", "TCP", 3030, ALLOW, "the tenant's namespace"),
    ("basic:server", "basic:server", "TCP", 3030, ALLOW, "one replica to another"),
    ("tenant-basic/web-frontend", "basic:server", "TCP", 8080, DENY, "the server port only"),
    ("ingress-nginx/controller", "basic:server", "TCP", 3030, ALLOW, "the ingress controller"),
    ("ingress-nginx/controller", "basic:server", "TCP", 8080, DENY, "the server port only"),
    ("default/client", "basic:server", "TCP", 3030, DENY, "allowedNamespaces empty: nobody"),
    ("default/client", "customized:server", "TCP", 3030, ALLOW, "allowedNamespaces: default"),
    ("monitoring/prometheus", "customized:server", "TCP", 3030, ALLOW, "allowedNamespaces: monitoring"),
    ("monitoring/prometheus", "customized:server", "TCP", 9090, DENY, "the server port only"),
    ("attacker/plain", "customized:server", "TCP", 3030, DENY, "a namespace not allowed"),
    ("customized:server", "basic:server", "TCP", 3030, DENY, "another tenant's server"),
    ("basic:server", "customized:server", "TCP", 3030, DENY, "another tenant's server"),
    (INTERNET, "basic:server", "TCP", 3030, DENY, "outside the cluster"),
    // The guide's custom rules: peers in the tenant's or an allowed namespace, server only.
    ("default/web-frontend", "rules:server", "TCP", 80, ALLOW, "the ingress rule: labels in an allowed namespace"),
    ("tenant-rules/web-frontend", "rules:server", "TCP", 80, ALLOW, "the ingress rule: labels in the tenant's namespace"),
    ("tenant-rules/web-frontend", "rules:server", "TCP", 81, DENY, "the ingress rule's port only"),
    ("tenant-rules/web-frontend", "rules:redis", "TCP", 80, DENY, "the ingress rule's port on Redis"),
    ("default/web-frontend", "rules:server", "TCP", 3030, ALLOW, "allowedNamespaces"),
    ("default/client", "rules:server", "TCP", 80, DENY, "the ingress rule needs its labels"),
    ("default/web-frontend", "rules:server", "TCP", 81, DENY, "the ingress rule's port only"),
    ("attacker/web-frontend", "rules:server", "TCP", 80, DENY, "the rule's labels in another namespace"),
    ("attacker/web-frontend", "rules:server", "TCP", 3030, DENY, "the rule's labels in another namespace"),
    ("rules:server", "db/database", "TCP", 5432, ALLOW, "the egress rule"),
    ("rules:server", "db/database", "TCP", 5433, DENY, "the egress rule's port only"),
    ("rules:server", "db/other", "TCP", 5432, DENY, "the egress rule's labels only"),
    ("rules:redis", "db/database", "TCP", 5432, DENY, "egress rules apply to the server only"),
    ("basic:server", "db/database", "TCP", 5432, DENY, "another tenant's egress rule"),
    // A rule without ports: every port of the server pods, from its labels only.
    ("partner/web", "wide:server", "TCP", 9090, ALLOW, "all ports of the server"),
    ("partner/web", "wide:server", "UDP", 9090, ALLOW, "all ports of the server"),
    ("partner/plain", "wide:server", "TCP", 9090, DENY, "without the rule's labels"),
    ("partner/plain", "wide:server", "TCP", 3030, ALLOW, "allowedNamespaces"),
    ("attacker/web", "wide:server", "TCP", 9090, DENY, "the rule's labels in another namespace"),
    ("attacker/web", "wide:server", "TCP", 3030, DENY, "the rule's labels in another namespace"),
    // DNS: the cluster DNS pods on 53, from every tenant pod.
    ("basic:server", "kube-system/coredns", "UDP", 53, ALLOW, "DNS"),
    ("basic:server", "kube-system/coredns", "TCP", 53, ALLOW, "DNS over TCP"),
    ("basic:redis", "kube-system/coredns", "UDP", 53, ALLOW, "DNS for Redis too"),
    ("basic:server", "kube-system/coredns", "TCP", 8080, DENY, "DNS port only"),
    ("basic:server", "kube-system/metrics-server", "UDP", 53, DENY, "other pods of kube-system"),
    ("basic:server", INTERNET, "UDP", 53, DENY, "no outside resolver"),
    // Auth: the server reaches the Auth pods on the Auth port.
    ("basic:server", "neurallog/auth", "TCP", 3040, ALLOW, "Auth"),
    ("basic:server", "neurallog/auth", "TCP", 8080, DENY, "the Auth port only"),
    ("basic:server", "neurallog/operator", "TCP", 3040, DENY, "other pods of the Auth namespace"),
    ("basic:redis", "neurallog/auth", "TCP", 3040, DENY, "Redis has no business with Auth"),
    // Nothing else leaves a tenant.
    ("basic:server", INTERNET, "TCP", 443, DENY, "no internet"),
    ("basic:redis", INTERNET, "TCP", 443, DENY, "no internet"),
    ("customized:server", "default/client", "TCP", 8080, DENY, "allowed namespaces are not egress"),
    // Sanity: with policies off everything is open (the evaluator is not deny-all).
    ("attacker/plain", "open:redis", "TCP", 6379, ALLOW, "policies off"),
    ("open:server", INTERNET, "TCP", 443, ALLOW, "policies off"),
];

#[test]
fn the_isolation_table_holds() {
    let world = world();
    let wrong: Vec<String> = TABLE
        .iter()
        .filter(|(from, to, protocol, port, expected, _)| {
            world.allows(from, to, protocol, *port) != *expected
        })
        .map(|(from, to, protocol, port, expected, why)| {
            let verdict = if *expected { "allowed" } else { "denied" };
            format!("{from} -> {to} {protocol}/{port} should be {verdict}: {why}")
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

const PORTS: [i32; 10] = [1, 22, 80, 443, 3030, 5432, 6379, 6380, 9090, 65535];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// Beyond the table: from every pod and the internet, on a spread of ports and every
/// protocol, a tenant's Redis answers only its own server and its own backup Job's pod, on
/// TCP 6379.
#[test]
fn redis_accepts_only_its_own_server_and_backup_on_6379() {
    let world = world();
    for (tenant, _) in TENANTS.iter().filter(|(name, _)| *name != "open") {
        let redis = format!("{tenant}:redis");
        let own = [format!("{tenant}:server"), format!("{tenant}:backup")];
        let sources = world.pods.keys().map(String::as_str).chain([INTERNET]);
        for source in sources {
            for protocol in PROTOCOLS {
                for port in PORTS {
                    let expected =
                        own.iter().any(|pod| pod == source) && protocol == "TCP" && port == 6379;
                    assert_eq!(
                        world.allows(source, &redis, protocol, port),
                        expected,
                        "{source} -> {redis} {protocol}/{port}"
                    );
                }
            }
        }
    }
}

/// A tenant's pods reach nothing of another tenant on any port, either way.
#[test]
fn tenants_never_reach_each_other() {
    let world = world();
    let isolated: Vec<&str> = TENANTS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != "open")
        .collect();
    for a in &isolated {
        for b in isolated.iter().filter(|b| *b != a) {
            for from in ["redis", "server", "backup"] {
                for to in ["redis", "server", "backup"] {
                    for protocol in PROTOCOLS {
                        for port in PORTS {
                            let (source, destination) =
                                (format!("{a}:{from}"), format!("{b}:{to}"));
                            if !world.pods.contains_key(&source)
                                || !world.pods.contains_key(&destination)
                            {
                                continue;
                            }
                            assert!(
                                !world.allows(&source, &destination, protocol, port),
                                "{source} -> {destination} {protocol}/{port}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The server's declared port is the one the policies open (a renamed or moved port
/// would silently close the tenant).
#[test]
fn the_server_and_redis_declare_the_ports_the_policies_open() {
    let world = world();
    let declared =
        |name: &str| -> Vec<i32> { world.pods[name].ports.iter().map(|p| p.port).collect() };
    assert_eq!(declared("basic:server"), [3030]);
    assert_eq!(declared("basic:redis"), [6379]);
}
