//! Tenants on the real node of the local cluster (`NEURALLOG_REAL_NODE=1`, see
//! tests/cluster/node/node.sh): real containers under containerd and runc, real probes,
//! DNS from CoreDNS, Services from kube-proxy and NetworkPolicies enforced by kube-router.
//! Only pods whose containers all use the node's local images (`localhost/neurallog-test/`)
//! are scheduled there; every other test keeps the kwok nodes.
//!
//! Without the real node these tests say so and pass: `make test` turns it on.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use neurallog_operator::crd::Tenant;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
const NODE: &str = "neurallog-real-node";
/// Real pods: images unpacked, probes with their initial delays, a 2-core machine shared
/// with other builds.
const PROVISION: Duration = Duration::from_secs(300);

fn real_node() -> bool {
    if std::env::var("NEURALLOG_REAL_NODE").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: no real node (NEURALLOG_REAL_NODE=1 starts one with the cluster)");
    false
}

/// The name under which the node holds a locally built image (tests/cluster/node/images.sh).
fn local_image(name: &str) -> String {
    let prefix = format!("localhost/neurallog-test/{name}:");
    let names = kubectl(&[
        "get",
        "node",
        NODE,
        "-o",
        "jsonpath={range .status.images[*]}{range .names[*]}{@}{\"\\n\"}{end}{end}",
    ]);
    names
        .lines()
        .find(|n| n.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the real node has no image {prefix}*; it has:\n{names}"))
        .to_string()
}

/// `kubectl exec`: (success, stdout, stderr).
fn exec(namespace: &str, pod: &str, command: &[&str]) -> (bool, String, String) {
    let mut args = vec!["-n", namespace, "exec", pod, "--"];
    args.extend_from_slice(command);
    kubectl_stdin(&args, "")
}

/// `kubectl exec` that must succeed; returns stdout.
fn exec_ok(namespace: &str, pod: &str, command: &[&str]) -> String {
    let (ok, out, err) = exec(namespace, pod, command);
    assert!(
        ok,
        "exec {command:?} in {namespace}/{pod} failed: {err}{out}"
    );
    out
}

/// A field of /proc/1/status in the pod (its main process): `Uid`, `CapEff`, `Seccomp`...
fn main_process_status(namespace: &str, pod: &str, field: &str) -> String {
    let status = exec_ok(namespace, pod, &["cat", "/proc/1/status"]);
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/1/status of {pod}:\n{status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Asserts the restricted profile from inside: the uid, no capabilities, no privilege
/// escalation, a seccomp filter.
fn assert_restricted(namespace: &str, pod: &str, uid: u32) {
    let uid = uid.to_string();
    assert_eq!(
        main_process_status(namespace, pod, "Uid"),
        [uid.as_str(); 4].join(" "),
        "{pod} runs as uid {uid}"
    );
    assert_eq!(
        main_process_status(namespace, pod, "CapEff"),
        "0000000000000000",
        "{pod} has no capabilities"
    );
    assert_eq!(
        main_process_status(namespace, pod, "NoNewPrivs"),
        "1",
        "{pod} cannot gain privileges"
    );
    assert_eq!(
        main_process_status(namespace, pod, "Seccomp"),
        "2",
        "{pod} runs under a seccomp filter (RuntimeDefault)"
    );
}

struct Env {
    client: Client,
    run: String,
    _operator: Operator,
}

async fn env(prefix: &str) -> Env {
    env_with(prefix, |_| Vec::new()).await
}

/// `env`, with more operator flags made from the run id.
async fn env_with(prefix: &str, args: impl FnOnce(&str) -> Vec<String>) -> Env {
    let client = client().await;
    install_crd(&client).await;
    let run = unique(prefix);
    let auth = auth_stub().await;
    let options = OperatorOptions {
        args: args(&run),
        ..OperatorOptions::default()
    };
    let operator = Operator::start_with_options(&run, &auth.url(), &options);
    operator.wait_ready().await;
    // The stub serves while the test runs (its handle would stop it when dropped).
    std::mem::forget(auth);
    Env {
        client,
        run,
        _operator: operator,
    }
}

/// The guide's basic tenant, with the node's local images (the defaults name registries
/// that this machine cannot reach, and `:latest` would make the kubelet pull).
fn basic_tenant(name: &str, run: &str) -> Tenant {
    let mut tenant = tenant_from_yaml(BASIC, name, run);
    tenant.spec.server.image = local_image("server-standin");
    tenant.spec.redis.image = local_image("redis");
    tenant
}

async fn pod_on_node(client: &Client, namespace: &str, name_prefix: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let what = format!("a ready pod {name_prefix}* in {namespace}");
    wait_for(&what, PROVISION, || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|p| {
                    p.name_any().starts_with(name_prefix)
                        && p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .flatten()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_basic_tenant_runs_real_containers_with_its_config_probes_claim_and_persistence() {
    if !real_node() {
        return;
    }
    let env = env("real").await;
    let name = env.run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let ns = format!("tenant-{name}");
    let mut tenant = basic_tenant(&name, &env.run);
    // Persistence on: every write is in the append-only file before Redis answers.
    tenant
        .spec
        .redis
        .config
        .insert("appendonly".into(), "yes".into());
    tenant
        .spec
        .redis
        .config
        .insert("appendfsync".into(), "always".into());
    // The data outlives the tenant, for a new tenant to start from (checked at the end).
    tenant.spec.redis.retain_storage = true;
    apply_tenant(&env.client, &tenant).await;
    // Running needs both readiness probes to pass: redis-cli PING in the Redis pod, and
    // GET / of the stand-in, which answers 200 only while it reaches Redis.
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;

    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let namespace = namespaces.get(&ns).await.expect("namespace");
    assert_eq!(
        namespace
            .labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );

    let redis = pod_on_node(&env.client, &ns, &format!("{name}-redis-")).await;
    let server = pod_on_node(&env.client, &ns, &format!("{name}-server-")).await;
    for pod in [&redis, &server] {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(
            spec.node_name.as_deref(),
            Some(NODE),
            "{} runs on the real node",
            pod.name_any()
        );
    }
    let redis_pod = redis.name_any();
    let server_pod = server.name_any();

    // Redis runs the rendered redis.conf.
    let config_maps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    let rendered = config_maps
        .get(&format!("{name}-redis-config"))
        .await
        .expect("the Redis ConfigMap")
        .data
        .expect("data")
        .remove("redis.conf")
        .expect("redis.conf");
    assert_eq!(
        exec_ok(&ns, &redis_pod, &["cat", "/etc/redis/redis.conf"]),
        rendered
    );
    let info = exec_ok(&ns, &redis_pod, &["redis-cli", "info", "server"]);
    assert!(
        info.lines()
            .any(|l| l.trim() == "config_file:/etc/redis/redis.conf"),
        "redis-server was started with the rendered file:\n{info}"
    );
    for (key, value) in [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("dir", "/data"),
    ] {
        let answer = exec_ok(&ns, &redis_pod, &["redis-cli", "config", "get", key]);
        assert_eq!(
            answer.lines().collect::<Vec<_>>(),
            [key, value],
            "CONFIG GET {key}"
        );
    }

    // Non-root with the restricted profile, enforced by the runtime.
    assert_restricted(&ns, &redis_pod, 999);
    assert_restricted(&ns, &server_pod, 1000);
    let (wrote, _, err) = exec(&ns, &redis_pod, &["touch", "/written-to-root"]);
    assert!(!wrote, "the Redis root filesystem is read-only");
    assert!(err.contains("Read-only file system"), "{err}");

    // The claim is mounted at /data: a file written there is in the volume on the machine.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &ns);
    let claim = claims
        .get(&format!("redis-data-{name}-redis-0"))
        .await
        .expect("the Redis claim");
    let volume_name = claim.spec.and_then(|s| s.volume_name).expect("bound claim");
    let volumes: Api<PersistentVolume> = Api::all(env.client.clone());
    let host_path = volumes
        .get(&volume_name)
        .await
        .expect("the volume")
        .spec
        .and_then(|s| s.host_path)
        .expect("a hostPath volume")
        .path;
    exec_ok(
        &ns,
        &redis_pod,
        &["sh", "-c", "echo mounted > /data/e2e-probe"],
    );
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&host_path).join("e2e-probe"))
            .expect("the file written in the pod is in the volume"),
        "mounted\n"
    );

    // The stand-in reaches Redis through REDIS_HOST (a DNS name) and REDIS_PORT.
    let env_vars = exec_ok(
        &ns,
        &server_pod,
        &["sh", "-c", "echo $REDIS_HOST $REDIS_PORT"],
    );
    let redis_host = format!("{name}-redis.{ns}.svc.cluster.local");
    assert_eq!(env_vars.trim(), format!("{redis_host} 6379"));
    let lookup = exec_ok(&ns, &server_pod, &["nslookup", &redis_host]);
    let redis_ip = redis
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("Redis pod IP");
    assert!(
        lookup.contains(&redis_ip),
        "{redis_host} resolves to the Redis pod {redis_ip}:\n{lookup}"
    );
    let page = talk(
        &ns,
        &server_pod,
        "127.0.0.1",
        3030,
        "GET / HTTP/1.0\\r\\n\\r\\n",
    );
    assert!(
        page.starts_with("HTTP/1.0 200")
            && page.contains(&format!("redis {redis_host}:6379 answers PING")),
        "{page}"
    );

    // Data written with persistence on survives deleting the Redis pod.
    assert_eq!(
        exec_ok(
            &ns,
            &redis_pod,
            &["redis-cli", "set", "e2e-key", "survives"]
        )
        .trim(),
        "OK"
    );
    let old_uid = redis.uid().expect("uid");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    pods.delete(&redis_pod, &DeleteParams::default())
        .await
        .expect("delete the Redis pod");
    let what = format!("a new ready {redis_pod}");
    wait_for(&what, PROVISION, || {
        let pods = pods.clone();
        let redis_pod = redis_pod.clone();
        let old_uid = old_uid.clone();
        async move {
            let p = pods.get_opt(&redis_pod).await.ok()??;
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (p.uid()? != old_uid && ready).then_some(())
        }
    })
    .await;
    assert_eq!(
        exec_ok(&ns, &redis_pod, &["redis-cli", "get", "e2e-key"]).trim(),
        "survives"
    );

    let tenants: Api<Tenant> = Api::all(env.client.clone());
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &name, PROVISION).await;

    // spec.redis.retainStorage: the README's restore gives a new tenant the old data, read
    // by a real Redis from the kept volume.
    let _kept = VolumeCleanup(vec![volume_name.clone()]);
    let restored = format!("{name}-new");
    let _cleanup_restored = TenantCleanup(vec![restored.clone()]);
    reserve_volume_for(&volume_name, &restored);
    let mut restored_tenant = tenant.clone();
    restored_tenant.metadata = tenant_from_yaml(BASIC, &restored, &env.run).metadata;
    apply_tenant(&env.client, &restored_tenant).await;
    wait_for_phase(&env.client, &restored, "Running", PROVISION).await;
    let restored_ns = format!("tenant-{restored}");
    let restored_redis =
        pod_on_node(&env.client, &restored_ns, &format!("{restored}-redis-")).await;
    assert_eq!(
        exec_ok(
            &restored_ns,
            &restored_redis.name_any(),
            &["redis-cli", "get", "e2e-key"]
        )
        .trim(),
        "survives",
        "the restored tenant's Redis holds the deleted tenant's data"
    );
}

/// A pod `client` that only sleeps, in namespace `namespace` (created `real-node-*`, so it
/// lands on the real node), to connect from with the stand-in image's busybox `nc`.
fn client_pod(namespace: &str) -> String {
    standin_pod(namespace, "client", "{}", r#"command: ["sleep", "3600"]"#);
    namespace.to_string()
}

/// A namespace `namespace` (created if missing; `real-node-*` lands on the real node) with a
/// restricted pod `name` of the stand-in image, labelled `labels` (a YAML flow map); `run` is the container's
/// command or env, as YAML lines at container level.
fn standin_pod(namespace: &str, name: &str, labels: &str, run: &str) {
    let image = local_image("server-standin");
    let manifest = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    seccompProfile: {{type: RuntimeDefault}}
  containers:
  - name: main
    image: {image}
    {run}
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
"#
    );
    let (ok, out, err) = kubectl_stdin(&["apply", "-f", "-"], &manifest);
    assert!(ok, "pod {namespace}/{name}: {err}{out}");
}

/// Sends `request` to `host:port` with busybox `nc` from `pod` (an image with busybox and
/// no glibc: busybox's static resolver crashes next to a glibc of another build), giving
/// up after 5 seconds; returns the answer, empty when the connection failed.
fn talk(namespace: &str, pod: &str, host: &str, port: u16, request: &str) -> String {
    let script = format!("printf '{request}' | timeout 6 nc -w 5 {host} {port}");
    let (_, out, _) = exec(namespace, pod, &["sh", "-c", &script]);
    out
}

/// Redis at `host` answers PING from `pod`.
fn redis_answers(namespace: &str, pod: &str, host: &str) -> bool {
    talk(namespace, pod, host, 6379, "PING\\r\\n").contains("+PONG")
}

/// The server at `host` answers GET / from `pod` (200, it reaches its Redis).
fn server_answers(namespace: &str, pod: &str, host: &str) -> bool {
    let answer = http_get(namespace, pod, host, 3030);
    answer.starts_with("HTTP/1.0 200") && answer.contains("answers PING")
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

fn service_ip(namespace: &str, service: &str) -> String {
    kubectl(&[
        "-n",
        namespace,
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])
}

struct NamespaceCleanup(Vec<String>);

impl Drop for NamespaceCleanup {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = kubectl_stdin(
                &[
                    "delete",
                    "namespace",
                    ns,
                    "--ignore-not-found",
                    "--wait=false",
                ],
                "",
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_isolate_tenants_with_real_connections() {
    if !real_node() {
        return;
    }
    let ingress_ns_of = |run: &str| format!("real-node-ingress-{run}");
    let env = env_with("real", |run| {
        vec!["--ingress-controller-namespaces".into(), ingress_ns_of(run)]
    })
    .await;
    let isolated = format!("{}-a", env.run);
    let neighbour = format!("{}-b", env.run);
    let open = format!("{}-c", env.run);
    let _cleanup = TenantCleanup(vec![isolated.clone(), neighbour.clone(), open.clone()]);
    let allowed_ns = format!("real-node-allowed-{}", env.run);
    let other_ns = format!("real-node-other-{}", env.run);
    let ingress_ns = ingress_ns_of(&env.run);
    let _namespaces = NamespaceCleanup(vec![
        allowed_ns.clone(),
        other_ns.clone(),
        ingress_ns.clone(),
    ]);

    let with_policy = |allowed: &str, enabled: bool| {
        format!(
            "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata:\n  name: x\nspec:\n  displayName: Isolation\n  networkPolicy:\n    enabled: {enabled}\n    allowedNamespaces: [{allowed}]\n"
        )
    };
    for (name, yaml) in [
        (&isolated, with_policy(&allowed_ns, true)),
        (&neighbour, with_policy("", true)),
        (&open, with_policy("", false)),
    ] {
        let mut tenant = tenant_from_yaml(&yaml, name, &env.run);
        tenant.spec.server.image = local_image("server-standin");
        tenant.spec.redis.image = local_image("redis");
        apply_tenant(&env.client, &tenant).await;
    }
    client_pod(&allowed_ns);
    client_pod(&other_ns);
    client_pod(&ingress_ns);
    for name in [&isolated, &neighbour, &open] {
        wait_for_phase(&env.client, name, "Running", PROVISION).await;
    }
    for ns in [&allowed_ns, &other_ns, &ingress_ns] {
        pod_on_node(&env.client, ns, "client").await;
    }

    let ns_of = |name: &str| format!("tenant-{name}");
    let a_ns = ns_of(&isolated);
    let a_redis = pod_ip(&pod_on_node(&env.client, &a_ns, &format!("{isolated}-redis-")).await);
    let a_server = service_ip(&a_ns, &format!("{isolated}-server"));
    let a_server_dns = format!("{isolated}-server.{a_ns}.svc.cluster.local");
    let a_server_pod = pod_on_node(&env.client, &a_ns, &format!("{isolated}-server-"))
        .await
        .name_any();
    let b_ns = ns_of(&neighbour);
    let b_server_pod = pod_on_node(&env.client, &b_ns, &format!("{neighbour}-server-"))
        .await
        .name_any();
    let b_server = service_ip(&b_ns, &format!("{neighbour}-server"));
    let b_redis = pod_ip(&pod_on_node(&env.client, &b_ns, &format!("{neighbour}-redis-")).await);
    let c_ns = ns_of(&open);
    let c_redis = pod_ip(&pod_on_node(&env.client, &c_ns, &format!("{open}-redis-")).await);
    let c_server = service_ip(&c_ns, &format!("{open}-server"));

    assert_reach(&[
        // Redis answers its own server (the one client it admits).
        (
            &a_ns,
            &a_server_pod,
            Redis(&a_redis),
            true,
            "its own server -> Redis",
        ),
        // An allowed namespace reaches the server (by Service name and ClusterIP), not Redis.
        (
            &allowed_ns,
            "client",
            Server(&a_server_dns),
            true,
            "allowed namespace -> server (DNS)",
        ),
        (
            &allowed_ns,
            "client",
            Server(&a_server),
            true,
            "allowed namespace -> server (ClusterIP)",
        ),
        (
            &allowed_ns,
            "client",
            Redis(&a_redis),
            false,
            "allowed namespace -> Redis is refused",
        ),
        // Another namespace reaches neither.
        (
            &other_ns,
            "client",
            Server(&a_server),
            false,
            "other namespace -> server is refused",
        ),
        (
            &other_ns,
            "client",
            Redis(&a_redis),
            false,
            "other namespace -> Redis is refused",
        ),
        // Another tenant's pods reach neither.
        (
            &b_ns,
            &b_server_pod,
            Server(&a_server),
            false,
            "other tenant -> server is refused",
        ),
        (
            &b_ns,
            &b_server_pod,
            Redis(&a_redis),
            false,
            "other tenant -> Redis is refused",
        ),
        // The ingress controllers' namespace (the operator's --ingress-controller-namespaces)
        // reaches the server of a tenant that allows no namespace, as the guide's Ingress
        // needs, and never its Redis; other namespaces do not reach that server.
        (
            &ingress_ns,
            "client",
            Server(&b_server),
            true,
            "ingress controller namespace -> server",
        ),
        (
            &ingress_ns,
            "client",
            Redis(&b_redis),
            false,
            "ingress controller namespace -> Redis is refused",
        ),
        (
            &other_ns,
            "client",
            Server(&b_server),
            false,
            "other namespace -> server of a tenant allowing none is refused",
        ),
        // With policies disabled, everything is reachable.
        (
            &other_ns,
            "client",
            Server(&c_server),
            true,
            "policies off -> server",
        ),
        (
            &other_ns,
            "client",
            Redis(&c_redis),
            true,
            "policies off -> Redis",
        ),
    ]);
    // The refusals are the policies', not a dead network: the same client reaches the
    // isolated tenant once its policies are off.
    let mut tenant = tenant_from_yaml(&with_policy(&allowed_ns, false), &isolated, &env.run);
    tenant.spec.server.image = local_image("server-standin");
    tenant.spec.redis.image = local_image("redis");
    apply_tenant(&env.client, &tenant).await;
    wait_for(
        "the isolated tenant's Redis to be reachable once its policies are off",
        PROVISION,
        || {
            let (ns, redis) = (other_ns.clone(), a_redis.clone());
            async move { redis_answers(&ns, "client", &redis).then_some(()) }
        },
    )
    .await;

    let tenants: Api<Tenant> = Api::all(env.client.clone());
    for name in [&isolated, &neighbour, &open] {
        tenants
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in [&isolated, &neighbour, &open] {
        wait_until_gone(&tenants, name, PROVISION).await;
    }
}

/// The guide's customized tenant with real pods: every server replica runs and is ready,
/// the runtime enforces the resources it sets, Redis runs its config, the claim has its
/// size, the server has its env, and every container runs non-root and restricted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customized_tenant_runs_real_containers_with_its_resources_config_and_env() {
    if !real_node() {
        return;
    }
    let env = env("real").await;
    let name = format!("{}-c", env.run);
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let ns = format!("tenant-{name}");
    let mut tenant = tenant_from_yaml(CUSTOMIZED, &name, &env.run);
    tenant.spec.server.image = local_image("server-standin");
    tenant.spec.redis.image = local_image("redis");
    apply_tenant(&env.client, &tenant).await;
    let running = wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    let ready = running
        .status
        .and_then(|s| s.server_status)
        .map(|s| s.ready_replicas);
    assert_eq!(ready, Some(2), "both server replicas are ready");

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    let servers = pods
        .list(&ListParams::default().labels("neurallog.io/component=server"))
        .await
        .expect("server pods")
        .items;
    assert_eq!(servers.len(), 2, "two server pods");
    for server in &servers {
        let pod = server.name_any();
        assert_eq!(
            server.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some(NODE),
            "{pod} runs on the real node"
        );
        assert_restricted(&ns, &pod, 1000);
        let log_level = exec_ok(&ns, &pod, &["sh", "-c", "echo $LOG_LEVEL"]);
        assert_eq!(log_level.trim(), "debug", "{pod}: the spec's env");
        // 512Mi and 500m, as the spec says, enforced by the container's cgroup.
        assert_eq!(cgroup_memory_limit(&ns, &pod), 512 * 1024 * 1024, "{pod}");
        assert_eq!(cgroup_cpu_quota(&ns, &pod), (50_000, 100_000), "{pod}");
    }

    let redis = pod_on_node(&env.client, &ns, &format!("{name}-redis-")).await;
    let redis_pod = redis.name_any();
    assert_restricted(&ns, &redis_pod, 999);
    assert_eq!(cgroup_memory_limit(&ns, &redis_pod), 256 * 1024 * 1024);
    assert_eq!(cgroup_cpu_quota(&ns, &redis_pod), (30_000, 100_000));
    let policy = exec_ok(
        &ns,
        &redis_pod,
        &["redis-cli", "config", "get", "maxmemory-policy"],
    );
    assert_eq!(
        policy.lines().collect::<Vec<_>>(),
        ["maxmemory-policy", "allkeys-lru"],
        "Redis runs the spec's config"
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), &ns);
    let claim = claims
        .get(&format!("redis-data-{name}-redis-0"))
        .await
        .expect("the Redis claim");
    let capacity = claim
        .status
        .and_then(|s| s.capacity)
        .and_then(|c| c.get("storage").cloned())
        .map(|q| q.0);
    assert_eq!(
        capacity.as_deref(),
        Some("5Gi"),
        "the claim has the spec's size"
    );
}

/// The memory limit the runtime set on the container's cgroup, in bytes (cgroup v1 or v2).
fn cgroup_memory_limit(namespace: &str, pod: &str) -> u64 {
    let read = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max";
    let limit = exec_ok(namespace, pod, &["sh", "-c", read]);
    limit
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{pod}: memory limit {limit:?}"))
}

/// (quota, period) of the container's CPU cgroup, in microseconds (cgroup v1 or v2).
fn cgroup_cpu_quota(namespace: &str, pod: &str) -> (i64, i64) {
    let read = "if [ -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); else cat /sys/fs/cgroup/cpu.max; fi";
    let answer = exec_ok(namespace, pod, &["sh", "-c", read]);
    let numbers: Vec<i64> = answer
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [quota, period] => (quota, period),
        _ => panic!("{pod}: CPU quota {answer:?}"),
    }
}

/// The guide's custom rules, with real connections: an ingress rule admits pods with its
/// labels from the tenant's allowed namespaces only, to the server only (a rule without
/// ports never opens Redis); an egress rule lets the server reach pods with its labels on
/// its port, and no other pod. The rows of tests/network_isolation.rs that real pods can
/// realise (the stand-in listens on the server port only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_rules_open_exactly_what_they_say() {
    if !real_node() {
        return;
    }
    let env = env("real").await;
    let name = format!("{}-r", env.run);
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let front_ns = format!("real-node-front-{}", env.run);
    let stranger_ns = format!("real-node-stranger-{}", env.run);
    let db_ns = format!("real-node-db-{}", env.run);
    let _namespaces = NamespaceCleanup(vec![front_ns.clone(), stranger_ns.clone(), db_ns.clone()]);
    let yaml = format!(
        "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata:\n  name: x\nspec:\n  networkPolicy:\n    enabled: true\n    allowedNamespaces: [{front_ns}]\n    ingressRules:\n      - description: Allow ingress from the web front end\n        from: {{app: web-frontend}}\n        ports: [{{protocol: TCP, port: 3030}}]\n      - description: Every port of the server, from the web pods\n        from: {{app: web}}\n    egressRules:\n      - description: Allow egress to the database\n        to: {{app: database}}\n        ports: [{{protocol: TCP, port: 5432}}]\n"
    );
    let mut tenant = tenant_from_yaml(&yaml, &name, &env.run);
    tenant.spec.server.image = local_image("server-standin");
    tenant.spec.redis.image = local_image("redis");
    apply_tenant(&env.client, &tenant).await;
    let sleep = r#"command: ["sleep", "3600"]"#;
    standin_pod(&front_ns, "web", "{app: web}", sleep);
    standin_pod(&stranger_ns, "web", "{app: web}", sleep);
    standin_pod(&stranger_ns, "frontend", "{app: web-frontend}", sleep);
    // Stand-ins listening on 5432: they answer HTTP (503: they have no Redis) when reached.
    let listen = r#"env: [{name: PORT, value: "5432"}, {name: REDIS_HOST, value: "127.0.0.1"}, {name: REDIS_PORT, value: "1"}]"#;
    standin_pod(&db_ns, "database", "{app: database}", listen);
    standin_pod(&db_ns, "elsewhere", "{app: other}", listen);
    wait_for_phase(&env.client, &name, "Running", PROVISION).await;
    for (ns, pod) in [
        (&front_ns, "web"),
        (&stranger_ns, "web"),
        (&stranger_ns, "frontend"),
    ] {
        pod_on_node(&env.client, ns, pod).await;
    }
    let database = pod_ip(&running_pod(&env.client, &db_ns, "database").await);
    let elsewhere = pod_ip(&running_pod(&env.client, &db_ns, "elsewhere").await);

    let ns = format!("tenant-{name}");
    let server = service_ip(&ns, &format!("{name}-server"));
    let redis = pod_ip(&pod_on_node(&env.client, &ns, &format!("{name}-redis-")).await);
    let server_pod = pod_on_node(&env.client, &ns, &format!("{name}-server-"))
        .await
        .name_any();

    assert_reach(&[
        (
            &front_ns,
            "web",
            Server(&server),
            true,
            "an allowed namespace's pod with the rule's labels -> server",
        ),
        (
            &front_ns,
            "web",
            Redis(&redis),
            false,
            "a rule without ports does not open Redis",
        ),
        (
            &stranger_ns,
            "frontend",
            Server(&server),
            false,
            "the rule's labels in a namespace not allowed -> server is refused",
        ),
        (
            &stranger_ns,
            "web",
            Server(&server),
            false,
            "the port-less rule's labels in a namespace not allowed -> server is refused",
        ),
        (
            &stranger_ns,
            "web",
            Redis(&redis),
            false,
            "the port-less rule's labels in a namespace not allowed -> Redis is refused",
        ),
        (
            &ns,
            &server_pod,
            Http(&database, 5432),
            true,
            "server -> a pod with the egress rule's labels on its port",
        ),
        (
            &ns,
            &server_pod,
            Http(&elsewhere, 5432),
            false,
            "server -> a pod without the egress rule's labels is refused",
        ),
        // The refusal is the policies', not a dead listener: it answers a pod of its own
        // namespace.
        (
            &db_ns,
            "database",
            Http(&elsewhere, 5432),
            true,
            "the listener without the labels answers otherwise",
        ),
    ]);
}

/// What a test connects to: a tenant's server (GET / on 3030, answered 200), its Redis
/// (PING on 6379), or anything answering HTTP on a port.
enum Target<'a> {
    Server(&'a str),
    Redis(&'a str),
    Http(&'a str, u16),
}
use Target::{Http, Redis, Server};

/// Checks each (namespace, pod, target, open, what): from `pod`, `target` answers exactly
/// when `open`.
fn assert_reach(cases: &[(&str, &str, Target, bool, &str)]) {
    for (namespace, pod, target, open, what) in cases {
        let answered = match target {
            Server(host) => server_answers(namespace, pod, host),
            Redis(host) => redis_answers(namespace, pod, host),
            Http(host, port) => http_answers(namespace, pod, host, *port),
        };
        assert_eq!(answered, *open, "{what}");
    }
}

/// A pod `name` in `namespace` that is running (not necessarily ready: the listeners
/// without Redis never are).
async fn running_pod(client: &Client, namespace: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(&format!("pod {namespace}/{name} to run"), PROVISION, || {
        let pods = pods.clone();
        async move {
            let pod = pods.get_opt(name).await.ok()??;
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_ref());
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            (running && ip.is_some()).then_some(pod)
        }
    })
    .await
}

/// Anything at `host:port` answers an HTTP request from `pod`.
fn http_answers(namespace: &str, pod: &str, host: &str, port: u16) -> bool {
    http_get(namespace, pod, host, port).starts_with("HTTP/1.0 ")
}

/// The answer to `GET /` at `host:port` from `pod`; empty when the connection failed.
fn http_get(namespace: &str, pod: &str, host: &str, port: u16) -> String {
    let request = format!("GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n");
    talk(namespace, pod, host, port, &request)
}

/// Builds (tests/cluster/node/images.sh) and imports the named images into the real node;
/// returns (reference, archive) of each.
fn import_images(names: &[&str]) -> Vec<(String, std::path::PathBuf)> {
    let script = repo_root().join("tests/cluster/cluster.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg("import-image")
        .args(names)
        .status()
        .expect("cluster.sh runs");
    assert!(status.success(), "cluster.sh import-image {names:?}");
    let out = std::process::Command::new("bash")
        .arg(repo_root().join("tests/cluster/node/images.sh"))
        .args(names)
        .output()
        .expect("images.sh runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), std::path::PathBuf::from(f[2]))
        })
        .collect()
}

/// A file of an OCI archive.
fn archive_file(archive: &std::path::Path, path: &str) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(path)
        .output()
        .expect("tar runs");
    assert!(out.status.success(), "{path} in {}", archive.display());
    out.stdout
}

fn blob_path(digest: &serde_json::Value) -> String {
    format!(
        "blobs/sha256/{}",
        digest
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:")
    )
}

/// The last value of a Dockerfile instruction (the runtime stage's).
fn dockerfile_value(dockerfile: &str, instruction: &str) -> String {
    dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"))
        .trim()
        .to_string()
}

#[test]
fn the_operator_image_matches_the_dockerfile() {
    if !real_node() {
        return;
    }
    let dockerfile =
        std::fs::read_to_string(repo_root().join("Dockerfile")).expect("the Dockerfile");
    let (_, archive) = import_images(&["operator"]).remove(0);
    let index: serde_json::Value =
        serde_json::from_slice(&archive_file(&archive, "index.json")).expect("index.json");
    let manifest: serde_json::Value = serde_json::from_slice(&archive_file(
        &archive,
        &blob_path(&index["manifests"][0]["digest"]),
    ))
    .expect("manifest");
    let config: serde_json::Value = serde_json::from_slice(&archive_file(
        &archive,
        &blob_path(&manifest["config"]["digest"]),
    ))
    .expect("config");
    let config = &config["config"];
    assert_eq!(config["User"], dockerfile_value(&dockerfile, "USER"));
    let entrypoint: serde_json::Value =
        serde_json::from_str(&dockerfile_value(&dockerfile, "ENTRYPOINT")).expect("ENTRYPOINT");
    assert_eq!(config["Entrypoint"], entrypoint);
    let cmd: serde_json::Value =
        serde_json::from_str(&dockerfile_value(&dockerfile, "CMD")).expect("CMD");
    assert_eq!(config["Cmd"], cmd);
    let port = format!("{}/tcp", dockerfile_value(&dockerfile, "EXPOSE"));
    assert_eq!(
        config["ExposedPorts"]
            .as_object()
            .expect("ExposedPorts")
            .keys()
            .collect::<Vec<_>>(),
        [&port]
    );
    // The journal directory: owned by the runtime user, as the Dockerfile's COPY --chown.
    let journal_copy = dockerfile
        .lines()
        .find(|l| l.starts_with("COPY") && l.contains("--chown="))
        .expect("the journal directory's COPY");
    let owner = journal_copy
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--chown="))
        .expect("--chown")
        .replace(':', "/");
    let journal_dir = journal_copy
        .split_whitespace()
        .last()
        .expect("destination")
        .trim_start_matches('/')
        .to_string();
    let layer = archive_file(&archive, &blob_path(&manifest["layers"][0]["digest"]));
    let listing = {
        use std::io::Write;
        let mut tar = std::process::Command::new("tar")
            .args(["-tvf", "-", "--numeric-owner"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("tar runs");
        tar.stdin
            .take()
            .expect("stdin")
            .write_all(&layer)
            .expect("layer");
        String::from_utf8_lossy(&tar.wait_with_output().expect("tar").stdout).into_owned()
    };
    let entry = listing
        .lines()
        .find(|l| l.trim_end_matches('/').ends_with(&journal_dir))
        .unwrap_or_else(|| panic!("no {journal_dir} in the image:\n{listing}"));
    assert!(
        entry.starts_with('d') && entry.split_whitespace().nth(1) == Some(owner.as_str()),
        "{journal_dir} is a directory owned by {owner}: {entry}"
    );
    assert!(listing.lines().any(|l| l.ends_with(" neurallog-operator")));
}

/// The node's containerd socket (tests/cluster/node/node.sh).
fn containerd_socket() -> std::path::PathBuf {
    let state = std::env::var_os("NEURALLOG_CLUSTER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/cluster"));
    state.join("node/containerd/containerd.sock")
}

/// The machine's pid of a container's main process, from containerd.
fn container_pid(container_id: &str) -> u32 {
    let id = container_id.trim_start_matches("containerd://");
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket())
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("ctr runs");
    let tasks = String::from_utf8_lossy(&out.stdout).into_owned();
    tasks
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id) && f.get(2) == Some(&"RUNNING")).then(|| f[1].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no running task {id}:\n{tasks}"))
}

const OPERATOR_NS: &str = "neurallog-system";

fn operator_pod(client_ns: &str) -> serde_json::Value {
    let pods: serde_json::Value = serde_json::from_str(&kubectl(&[
        "-n",
        client_ns,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=neurallog-operator",
        "-o",
        "json",
    ]))
    .expect("pods");
    pods["items"][0].clone()
}

/// The ServiceAccount whose token reads the journal, bound to the installed ClusterRole
/// neurallog-journal-auditor (its binding is removed by `uninstall`).
const AUDITOR: &str = "journal-auditor";
const AUDITOR_BINDING: &str = "neurallog-e2e-journal-auditor";

/// A fresh token of the auditor, created (with its binding) in the installed namespace.
fn auditor_token() -> String {
    let objects = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {AUDITOR}, namespace: {OPERATOR_NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {AUDITOR_BINDING}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: neurallog-journal-auditor}}
subjects: [{{kind: ServiceAccount, name: {AUDITOR}, namespace: {OPERATOR_NS}}}]
"#
    );
    let (ok, out, err) = kubectl_stdin(&["apply", "-f", "-"], &objects);
    assert!(ok, "{err}{out}");
    kubectl(&["-n", OPERATOR_NS, "create", "token", AUDITOR])
        .trim()
        .to_string()
}

/// GET through the API server's service proxy to the operator's journal API (TLS), with
/// the auditor's `token` in the header the proxy passes on.
async fn journal_api(client: &Client, token: &str, path: &str) -> (bool, String) {
    let url = format!(
        "/api/v1/namespaces/{OPERATOR_NS}/services/https:neurallog-operator:8080/proxy{path}"
    );
    let request = http::Request::get(&url)
        .header(
            neurallog_operator::http::access::PROXIED_TOKEN_HEADER,
            format!("Bearer {token}"),
        )
        .body(Vec::new())
        .expect("a request");
    match client.request_text(request).await {
        Ok(text) => (true, text),
        Err(error) => (false, error.to_string()),
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_in_the_cluster_from_its_image_and_survives_kill_9() {
    if !real_node() {
        return;
    }
    let client = client().await;
    let run = unique("real-op");
    let name = run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let _namespaces = NamespaceCleanup(vec![OPERATOR_NS.to_string(), "neurallog".to_string()]);
    let _install = Uninstall;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // e2e_deploy and e2e_helm install into the same namespace before this file runs.
    wait_until_gone(&namespaces, OPERATOR_NS, PROVISION).await;
    let images = import_images(&["operator", "auth-stub"]);
    let (operator_ref, auth_ref) = (images[0].0.clone(), images[1].0.clone());
    let (repository, tag) = operator_ref.rsplit_once(':').expect("tag");

    // The Auth service the operator registers tenants with (its default URL).
    let auth = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: neurallog}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: auth, namespace: neurallog}}
spec:
  selector: {{matchLabels: {{app: auth}}}}
  template:
    metadata: {{labels: {{app: auth}}}}
    spec:
      automountServiceAccountToken: false
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: auth
        image: {auth_ref}
        securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
        ports: [{{containerPort: 3040}}]
        readinessProbe: {{tcpSocket: {{port: 3040}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: auth, namespace: neurallog}}
spec:
  selector: {{app: auth}}
  ports: [{{port: 3040, targetPort: 3040}}]
"#
    );
    let (ok, out, err) = kubectl_stdin(&["apply", "-f", "-"], &auth);
    assert!(ok, "{err}{out}");

    // deploy/ as it is, with the image set as its kustomization says (`kustomize edit set
    // image`) and, so that it leaves other tests' tenants alone, a tenant selector.
    let overlay = tempfile::tempdir().expect("temp dir");
    copy_dir(&repo_root().join("deploy"), overlay.path());
    let kustomization = overlay.path().join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).expect("kustomization");
    text.push_str(&format!(
        r#"images:
- name: neurallog/tenant-operator
  newName: {repository}
  newTag: "{tag}"
patches:
- target: {{kind: Deployment, name: neurallog-operator-controller-manager}}
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/env/-
      value: {{name: NEURALLOG_TENANT_SELECTOR, value: "{RUN_LABEL}={run}"}}
"#
    ));
    std::fs::write(&kustomization, text).expect("kustomization");
    let dir = overlay.path().to_string_lossy().into_owned();
    // The CRD is already there, applied by the tests' own field manager.
    kubectl(&["apply", "--server-side", "--force-conflicts", "-k", &dir]);
    kubectl(&[
        "-n",
        OPERATOR_NS,
        "rollout",
        "status",
        "deployment/neurallog-operator-controller-manager",
        "--timeout=300s",
    ]);

    // It reconciles a tenant from inside the cluster.
    apply_tenant(&client, &basic_tenant(&name, &run)).await;
    wait_for_phase(&client, &name, "Running", PROVISION).await;

    let pod = operator_pod(OPERATOR_NS);
    assert_eq!(pod["spec"]["nodeName"], NODE);
    assert_eq!(pod["spec"]["containers"][0]["image"], operator_ref.as_str());
    let pid = container_pid(
        pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .expect("container id"),
    );
    // Non-root, read-only root filesystem, the journal on its claim (read from the
    // machine: the image has no shell).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Uid:", "65532", "65532", "65532", "65532"]),
        "{status}"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let mount_options = |point: &str| {
        mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(4) == Some(&point)).then(|| f[5].to_string())
            })
            .unwrap_or_else(|| panic!("no mount at {point}:\n{mounts}"))
    };
    assert!(
        mount_options("/").split(',').any(|o| o == "ro"),
        "read-only root"
    );
    assert!(
        mount_options("/var/lib/neurallog-operator")
            .split(',')
            .any(|o| o == "rw"),
        "the journal claim is mounted read-write"
    );

    // The journal through the API server's service proxy, with an auditor's token; none
    // (the admin's client certificate is not passed on) is refused by the operator.
    let token = auditor_token();
    let (ok, refused) = journal_api(&client, "", &format!("/journal/tenants/{name}")).await;
    assert!(
        !ok && refused.contains("bearer token is required"),
        "{refused}"
    );
    let (ok, before) = journal_api(&client, &token, &format!("/journal/tenants/{name}")).await;
    assert!(ok, "{before}");
    let before: serde_json::Value = serde_json::from_str(&before).expect("journal JSON");

    // kill -9 of the operator's process: the kubelet restarts the container, which opens
    // the same journal on the same claim.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for(
        "the kubelet to restart the operator's container",
        PROVISION,
        || async {
            let pod = operator_pod(OPERATOR_NS);
            let status = &pod["status"]["containerStatuses"][0];
            (status["restartCount"].as_i64() == Some(1) && status["ready"] == true).then_some(())
        },
    )
    .await;
    // The same journal: verify passes with no problem and the tenant's chain still starts
    // with every record written before the kill.
    let (ok, verify) = journal_api(&client, &token, "/journal/verify").await;
    assert!(ok, "{verify}");
    let verify: serde_json::Value = serde_json::from_str(&verify).expect("verify JSON");
    assert_eq!(verify["problems"], 0, "{verify}");
    let (ok, after) = journal_api(&client, &token, &format!("/journal/tenants/{name}")).await;
    assert!(ok, "{after}");
    let after: serde_json::Value = serde_json::from_str(&after).expect("journal JSON");
    let before_records = before["records"].as_array().expect("records");
    let after_records = after["records"].as_array().expect("records");
    assert!(!before_records.is_empty());
    assert_eq!(after["uid"], before["uid"]);
    assert_eq!(
        &after_records[..before_records.len()],
        &before_records[..],
        "the restarted operator serves the records written before the kill"
    );
    eprintln!("journal after the restart: {verify}");
    // The journal tools through the real API server's service proxy.
    let service = format!("{OPERATOR_NS}/https:neurallog-operator:8080");
    let token_dir = tempfile::tempdir().expect("temp dir");
    let token_file = token_dir.path().join("auditor.token");
    std::fs::write(&token_file, &token).expect("token file");
    let token_file = token_file.display().to_string();
    let tool = std::process::Command::new(env!("CARGO_BIN_EXE_neurallog-operator"))
        .args([
            "journal",
            "verify",
            "--kube-service",
            &service,
            "--token-file",
            &token_file,
            "--kubeconfig",
        ])
        .arg(kubeconfig())
        .output()
        .expect("the journal tool runs");
    let said = String::from_utf8_lossy(&tool.stdout);
    assert!(
        tool.status.success() && said.contains("journal intact"),
        "journal verify --kube-service: {said}{}",
        String::from_utf8_lossy(&tool.stderr)
    );
    // The kubectl plugin, run by kubectl as a user would, through the same proxy.
    let history = kubectl_tenant(&[
        "history",
        &name,
        "--service",
        &service,
        "--token-file",
        &token_file,
        "--kubeconfig",
        &kubeconfig().display().to_string(),
    ]);
    assert!(
        history.lines().count() > 4 && history.contains("Running"),
        "kubectl tenant history through the service proxy: {history}"
    );
    let exported = kubectl_tenant(&[
        "journal",
        &name,
        "--service",
        &service,
        "--token-file",
        &token_file,
        "--kubeconfig",
        &kubeconfig().display().to_string(),
    ]);
    let seqs: Vec<u64> = exported
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            record["seq"].as_u64().expect("a seq")
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "kubectl tenant journal through the service proxy: every record, in order: {exported}"
    );
    assert!(seqs.len() >= before_records.len(), "{exported}");

    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &name, PROVISION).await;

    // The same with the Helm chart, once deploy/'s install is gone.
    uninstall();
    wait_until_gone(&namespaces, OPERATOR_NS, PROVISION).await;
    let helm_name = format!("{run}-helm");
    let _helm_cleanup = TenantCleanup(vec![helm_name.clone()]);
    let helm = std::env::var("NEURALLOG_HELM").unwrap_or_else(|_| {
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("tests/cluster/build.sh"))
            .arg("helm")
            .output()
            .expect("build.sh runs");
        let dir = String::from_utf8_lossy(&out.stdout);
        format!("{}/helm", dir.lines().last().expect("bin dir"))
    });
    let output = std::process::Command::new(helm)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["install", "neurallog-operator"])
        .arg(repo_root().join("charts/neurallog-operator"))
        .args([
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "5m",
        ])
        .args(["--set", &format!("image.repository={repository}")])
        .args(["--set-string", &format!("image.tag={tag}")])
        .args(["--set-string", &format!("tenantSelector={RUN_LABEL}={run}")])
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pod = operator_pod(OPERATOR_NS);
    assert_eq!(pod["spec"]["nodeName"], NODE);
    assert_eq!(pod["spec"]["containers"][0]["image"], operator_ref.as_str());
    apply_tenant(&client, &basic_tenant(&helm_name, &run)).await;
    wait_for_phase(&client, &helm_name, "Running", PROVISION).await;
    let token = auditor_token();
    let (ok, verify) = journal_api(&client, &token, "/journal/verify").await;
    assert!(ok, "{verify}");
    tenants
        .delete(&helm_name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&tenants, &helm_name, PROVISION).await;
}

/// Deletes what deploy/ (or the chart) installed, but the shared CRD: the fixed names
/// that tests/e2e_deploy.rs and e2e_helm.rs use too (test files run one after another).
fn uninstall() {
    let deletions: [&[&str]; 7] = [
        &[
            "delete",
            "clusterrolebinding,clusterrole",
            "neurallog-operator",
        ],
        // The endpoint roles and the test's auditor binding.
        &[
            "delete",
            "clusterrole",
            "neurallog-metrics-reader",
            "neurallog-journal-auditor",
        ],
        &["delete", "clusterrolebinding", AUDITOR_BINDING],
        // The roles for people (cluster-scoped; the journal reader goes with the namespace).
        &[
            "delete",
            "clusterrole",
            "neurallog-tenant-viewer",
            "neurallog-tenant-editor",
            "neurallog-tenant-admin",
        ],
        &[
            "-n",
            "default",
            "delete",
            "rolebinding,role",
            "neurallog-operator-events",
        ],
        // The write policy names the install's ServiceAccount (the chart's release has the
        // same name); the deletion protection is the CRD's, shared like it.
        &[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "neurallog-operator-writes",
        ],
        &["delete", "namespace", OPERATOR_NS, "--wait=false"],
    ];
    for deletion in deletions {
        let _ = kubectl_stdin(&[deletion, &["--ignore-not-found"]].concat(), "");
    }
}

struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        uninstall();
    }
}

/// Waits until the tenant's server status contains every one of `words`.
async fn wait_for_server_message(client: &Client, name: &str, words: &[&str]) -> String {
    let api: Api<Tenant> = Api::all(client.clone());
    let what = format!("tenant {name}: the server status says {words:?}");
    wait_for(&what, PROVISION, || {
        let api = api.clone();
        async move {
            let message = server_message(&api.get(name).await.ok()?);
            words.iter().all(|w| message.contains(w)).then_some(message)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_kubelets_failures_reach_the_tenant_status() {
    if !real_node() {
        return;
    }
    let env = env("realfail").await;
    let pull = format!("{}-pull", env.run);
    let secret = format!("{}-secret", env.run);
    let _cleanup = TenantCleanup(vec![pull.clone(), secret.clone()]);

    // An image no registry serves (this node reaches none): the kubelet's pull fails.
    let mut missing_image = basic_tenant(&pull, &env.run);
    missing_image.spec.server.image = "localhost/neurallog-test/no-such-image:1".into();
    apply_tenant(&env.client, &missing_image).await;
    // The guide's env from a Secret, for a Secret that does not exist.
    let mut missing_secret = basic_tenant(&secret, &env.run);
    missing_secret.spec.server.env = vec![
        serde_json::from_value(serde_json::json!({
            "name": "API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "api-keys", "key": secret}}
        }))
        .expect("env"),
    ];
    apply_tenant(&env.client, &missing_secret).await;

    let pulled = wait_for_server_message(
        &env.client,
        &pull,
        &[&format!("{pull}-server-"), "no-such-image"],
    )
    .await;
    assert!(
        pulled.contains("ErrImagePull") || pulled.contains("ImagePullBackOff"),
        "{pulled}"
    );
    let configured = wait_for_server_message(
        &env.client,
        &secret,
        &[
            "CreateContainerConfigError",
            "secret \"api-keys\" not found",
        ],
    )
    .await;
    assert!(
        configured.contains(&format!("{secret}-server-")),
        "{configured}"
    );

    for name in [&pull, &secret] {
        kubectl(&["delete", "tenant", name, "--wait=false"]);
    }
    let tenants: Api<Tenant> = Api::all(env.client.clone());
    for name in [&pull, &secret] {
        wait_until_gone(&tenants, name, PROVISION).await;
    }
}
