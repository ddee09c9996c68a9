//! What the operator renders for Redis, run on a real redis-server. kwok fakes pods, so the
//! cluster tests never run the Redis we configure; these tests need no cluster, only
//! Debian's redis-server and redis-cli (scripts/install-redis.sh installs them).
//!
//! Each test takes redis.conf exactly as the rendered ConfigMap holds it, changes only the
//! lines that tie it to the pod (`bind`, `port`, `dir`: loopback, a free port, a temp data
//! dir), starts redis-server with the rendered container command and checks that Redis
//! starts, reads back every user setting, passes the rendered probes and persists as
//! configured.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/redis_process.rs"]
mod redis_process;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use neurallog_operator::crd::Tenant;
use neurallog_operator::redis_config::{
    self, Directive, SUPPORTED_DIRECTIVES, ValueKind, memory_size_bytes, validate_entry,
};
use neurallog_operator::render::{
    BACKUP_CLAIM, RESTORE_SCRIPT, RenderSettings, backup_cronjob, redis_config_map,
    redis_statefulset,
};
use neurallog_operator::validation::validate;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use redis_process::{
    RedisProcess, Reply, Sandbox, StartFailure, free_port, open_files_limit, poll_until,
    redis_cli_path, redis_server_path,
};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const CUSTOMIZED: &str = include_str!("../examples/customized-tenant.yaml");
/// The user guide's "Custom Redis Configuration" example.
const GUIDE_REDIS_CONFIG: &str = r#"
spec:
  redis:
    config:
      maxmemory-policy: allkeys-lru
      appendonly: "yes"
      appendfsync: everysec
"#;

const PERSISTENCE_TIMEOUT: Duration = Duration::from_secs(15);
const MARKER_KEY: &str = "neurallog:real-redis-check";

// ---------------------------------------------------------------------------------------
// Tenants

/// A Tenant from YAML, as the API server would hand it over; it must pass validation.
fn tenant(yaml: &str) -> Tenant {
    let mut tenant: Tenant = serde_yaml::from_str(yaml).expect("Tenant YAML");
    tenant.metadata.uid = Some("0b6f3f0e-1111-2222-3333-444455556666".into());
    tenant.metadata.generation = Some(1);
    assert_accepted(&tenant);
    tenant
}

fn assert_accepted(tenant: &Tenant) {
    let name = tenant.metadata.name.as_deref().expect("name");
    let problems = validate(name, &tenant.spec);
    assert!(problems.is_empty(), "validation refuses it: {problems:?}");
}

/// The customized tenant with the guide's custom Redis configuration.
fn guide_custom_config_tenant() -> Tenant {
    let snippet: serde_yaml::Value = serde_yaml::from_str(GUIDE_REDIS_CONFIG).expect("YAML");
    let config = serde_yaml::from_value(snippet["spec"]["redis"]["config"].clone())
        .expect("a map of strings");
    with_config(&tenant(CUSTOMIZED), config)
}

fn with_config(base: &Tenant, config: BTreeMap<String, String>) -> Tenant {
    let mut tenant = base.clone();
    tenant.spec.redis.config = config;
    tenant
}

fn basic_with(entries: &[(&str, &str)]) -> Tenant {
    let config = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tenant = with_config(&tenant(BASIC), config);
    assert_accepted(&tenant);
    tenant
}

// ---------------------------------------------------------------------------------------
// The pod, as the rendered objects describe it

/// What the rendered ConfigMap and StatefulSet tell the Redis pod.
struct RedisPod {
    /// redis.conf as the ConfigMap holds it.
    conf: String,
    command: Vec<String>,
    /// Where the ConfigMap's redis.conf appears in the container.
    config_path: String,
    /// Where the data volume is mounted.
    data_dir: String,
    port: u16,
    readiness: Vec<String>,
    readiness_timeout: Duration,
    liveness_port: u16,
}

impl RedisPod {
    fn render(tenant: &Tenant) -> RedisPod {
        let config_map = redis_config_map(tenant).expect("the ConfigMap renders");
        let conf = config_map
            .data
            .as_ref()
            .and_then(|data| data.get("redis.conf"))
            .cloned()
            .expect("redis.conf in the ConfigMap");
        let statefulset = redis_statefulset(tenant).expect("the StatefulSet renders");
        let spec = statefulset.spec.expect("StatefulSet spec");
        let pod = spec.template.spec.expect("pod spec");
        let container = pod
            .containers
            .iter()
            .find(|c| c.name == "redis")
            .expect("a redis container");
        assert!(container.args.is_none(), "the command holds every argument");
        let mount_path = |volume: &str| {
            container
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == volume)
                .map(|m| m.mount_path.clone())
                .unwrap_or_else(|| panic!("volume {volume} is not mounted"))
        };
        let config_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.config_map.as_ref().map(|c| &c.name) == config_map.metadata.name.as_ref())
            .expect("a volume of the ConfigMap");
        assert!(
            config_volume
                .config_map
                .as_ref()
                .expect("configMap")
                .items
                .is_none(),
            "each key of the ConfigMap is a file of the same name"
        );
        let claim = &spec.volume_claim_templates.expect("claims")[0];
        let data_volume = claim.metadata.name.as_deref().expect("claim name");
        let readiness = container.readiness_probe.as_ref().expect("readiness probe");
        let liveness = container.liveness_probe.as_ref().expect("liveness probe");
        let pod = RedisPod {
            conf,
            command: container.command.clone().expect("command"),
            config_path: format!("{}/redis.conf", mount_path(&config_volume.name)),
            data_dir: mount_path(data_volume),
            port: port_number(container.ports.as_ref().expect("ports")[0].container_port),
            readiness: readiness
                .exec
                .as_ref()
                .and_then(|e| e.command.clone())
                .expect("an exec readiness probe"),
            readiness_timeout: Duration::from_secs(
                readiness
                    .timeout_seconds
                    .unwrap_or(1)
                    .try_into()
                    .expect("timeout"),
            ),
            liveness_port: match &liveness
                .tcp_socket
                .as_ref()
                .expect("a tcpSocket probe")
                .port
            {
                IntOrString::Int(port) => port_number(*port),
                IntOrString::String(name) => panic!("named liveness port {name}"),
            },
        };
        pod.assert_conf_matches_the_container();
        pod
    }

    /// redis.conf listens where the container and its probes expect, and keeps its data on
    /// the volume.
    fn assert_conf_matches_the_container(&self) {
        assert_eq!(conf_value(&self.conf, "bind"), Some("0.0.0.0"));
        assert_eq!(
            conf_value(&self.conf, "port"),
            Some(&*self.port.to_string())
        );
        assert_eq!(conf_value(&self.conf, "dir"), Some(&*self.data_dir));
        assert_eq!(self.liveness_port, self.port);
        assert!(
            self.command.contains(&self.config_path),
            "{:?}",
            self.command
        );
    }

    /// Starts redis-server as the container would, on loopback, a free port and the
    /// sandbox's data dir (kept across restarts). Retries if another process takes the port
    /// first.
    fn start(&self, sandbox: &Sandbox) -> Result<RedisProcess, StartFailure> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let conf = self.conf_for_test(port, &sandbox.data_dir());
            std::fs::write(sandbox.conf_path(), conf).expect("write redis.conf");
            match RedisProcess::start(&self.argv(&sandbox.conf_path()), port, &sandbox.log_path()) {
                Err(failure) if failure.port_was_taken() && attempts < 3 => continue,
                result => return result,
            }
        }
    }

    fn start_or_panic(&self, sandbox: &Sandbox) -> RedisProcess {
        self.start(sandbox).unwrap_or_else(|failure| {
            panic!(
                "Redis does not start on the rendered redis.conf:\n{}\n{failure}",
                self.conf
            )
        })
    }

    /// The container's command with the config file's path replaced by `conf_path`.
    fn argv(&self, conf_path: &Path) -> Vec<String> {
        assert_eq!(self.command[0], "redis-server");
        let mut argv = self.command.clone();
        argv[0] = redis_server_path().display().to_string();
        for arg in &mut argv[1..] {
            if *arg == self.config_path {
                *arg = conf_path.display().to_string();
            }
        }
        argv
    }

    /// The rendered redis.conf with only `bind`, `port` and `dir` changed.
    fn conf_for_test(&self, port: u16, data_dir: &Path) -> String {
        let data_dir = data_dir.to_str().expect("UTF-8 temp path");
        let conf: String = self
            .conf
            .lines()
            .map(|line| match directive_of(line) {
                Some("bind") => "bind 127.0.0.1".to_string(),
                Some("port") => format!("port {port}"),
                Some("dir") => redis_config::render_line("dir", data_dir),
                _ => line.to_string(),
            })
            .map(|line| line + "\n")
            .collect();
        let mut changed = changed_directives(&self.conf, &conf);
        changed.sort();
        assert_eq!(
            changed,
            ["bind", "dir", "port"],
            "only these lines may change"
        );
        conf
    }

    /// Runs the rendered readiness probe against `port` instead of the pod's port, within
    /// the probe's timeout as the kubelet would; Err holds what it printed.
    fn readiness(&self, port: u16) -> Result<(), String> {
        let argv = self.readiness_argv(port);
        let started = Instant::now();
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .env("PATH", path_with_redis_cli())
            .output()
            .expect("run the readiness probe");
        let elapsed = started.elapsed();
        if output.status.success() && elapsed < self.readiness_timeout {
            return Ok(());
        }
        Err(format!(
            "{argv:?}: {} after {elapsed:?}; stdout {:?}, stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// Polls the readiness probe, as the kubelet does, until it passes or `timeout` ends.
    fn becomes_ready(&self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.readiness(port);
            if result.is_ok() || Instant::now() > deadline {
                return result;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn readiness_argv(&self, port: u16) -> Vec<String> {
        let pod_port = self.port.to_string();
        let mut replaced = 0;
        let argv = self
            .readiness
            .iter()
            .map(|arg| {
                arg.split(' ')
                    .map(|word| {
                        if word == pod_port {
                            replaced += 1;
                            port.to_string()
                        } else {
                            word.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            replaced, 1,
            "the probe names the port once: {:?}",
            self.readiness
        );
        argv
    }

    /// The tcpSocket liveness probe: a TCP connection within a second.
    fn liveness_passes(&self, port: u16) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    }
}

fn port_number(port: i32) -> u16 {
    u16::try_from(port).expect("a port number")
}

/// The directive a redis.conf line sets, if it sets one.
fn directive_of(line: &str) -> Option<&str> {
    line.split_whitespace()
        .next()
        .filter(|w| !w.starts_with('#'))
}

fn conf_value<'a>(conf: &'a str, directive: &str) -> Option<&'a str> {
    conf.lines()
        .find(|line| directive_of(line) == Some(directive))
        .and_then(|line| line.split_once(' '))
        .map(|(_, value)| value)
}

fn changed_directives(before: &str, after: &str) -> Vec<String> {
    let before: Vec<&str> = before.lines().collect();
    let after: Vec<&str> = after.lines().collect();
    assert_eq!(before.len(), after.len(), "no line added or removed");
    before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| directive_of(b).unwrap_or("").to_string())
        .collect()
}

/// PATH with the directory of the redis-cli under test first: the probe runs it by name.
fn path_with_redis_cli() -> std::ffi::OsString {
    let cli = redis_cli_path();
    let mut dirs = vec![cli.parent().expect("redis-cli's directory").to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

// ---------------------------------------------------------------------------------------
// What CONFIG GET should say

/// Event classes that `A` stands for in notify-keyspace-events, in the order Redis prints
/// them (`n`, new keys, is not one of them and is printed last).
const ALL_EVENT_CLASSES: &str = "g$lshzxetd";

/// How Redis 7.0 prints (CONFIG GET) a value it accepted, from the value as written:
/// - yes/no and enum words in lower case;
/// - sizes in bytes (`1k` is 1000, `1kb` 1024);
/// - save: its numbers as integers separated by single spaces;
/// - notify-keyspace-events: `A` if every class `A` stands for is set, else the classes
///   in Redis's order, then `n`, `K`, `E`, `m`; Redis 7.0 omits `n` after `A`;
/// - integers as written: validation accepts only the canonical form.
fn as_redis_prints(kind: ValueKind, value: &str) -> String {
    match kind {
        ValueKind::YesNo | ValueKind::OneOf(_) => value.to_ascii_lowercase(),
        ValueKind::Integer { .. } => value.to_string(),
        ValueKind::MemorySize { .. } => memory_size_bytes(value).expect("a valid size").to_string(),
        ValueKind::SavePoints => value
            .split_whitespace()
            .map(|n| n.parse::<i64>().expect("a number").to_string())
            .collect::<Vec<_>>()
            .join(" "),
        ValueKind::KeyspaceEvents => keyspace_events_as_redis_prints(value),
    }
}

fn keyspace_events_as_redis_prints(value: &str) -> String {
    let all = value.contains('A') || ALL_EVENT_CLASSES.chars().all(|c| value.contains(c));
    let mut printed = String::new();
    if all {
        printed.push('A');
    } else {
        printed.extend(ALL_EVENT_CLASSES.chars().filter(|&c| value.contains(c)));
        printed.extend(value.contains('n').then_some('n'));
    }
    printed.extend("KEm".chars().filter(|&c| value.contains(c)));
    printed
}

/// What CONFIG GET `key` should return on `redis` after the user set `value`. Redis lowers
/// maxclients to what its open-file limit allows, less 32 descriptors it keeps for itself
/// (it logs a warning and starts): that depends on the machine, not on the config.
fn expected_config_get(directive: &Directive, value: &str, redis: &RedisProcess) -> String {
    let printed = as_redis_prints(directive.kind, value);
    if directive.name != "maxclients" {
        return printed;
    }
    let requested: u64 = printed.parse().expect("a number");
    requested
        .min(open_files_limit(redis.pid()) - 32)
        .to_string()
}

/// Each user setting whose CONFIG GET differs from what the user wrote, described.
fn settings_not_read_back(redis: &RedisProcess, config: &BTreeMap<String, String>) -> Vec<String> {
    let mut connection = redis.connect();
    let mismatches = config
        .iter()
        .filter_map(|(key, value)| {
            let directive = redis_config::directive(key).expect("a supported directive");
            let expected = expected_config_get(directive, value, redis);
            let actual = connection.config_get(key);
            (actual.as_deref() != Some(expected.as_str())).then(|| {
                format!(
                    "{key}: set to {value:?}, so CONFIG GET should say {expected:?}, not {actual:?}"
                )
            })
        })
        .collect();
    connection.close();
    mismatches
}

// ---------------------------------------------------------------------------------------
// Checks

/// Redis starts on the tenant's rendered config, reports each user setting as written, and
/// passes both rendered probes; once Redis is gone, both probes fail.
fn check_tenant_on_real_redis(tenant: &Tenant) {
    let pod = RedisPod::render(tenant);
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    let mismatches = settings_not_read_back(&redis, &tenant.spec.redis.config);
    assert!(
        mismatches.is_empty(),
        "{mismatches:#?}\nredis.conf:\n{}",
        pod.conf
    );
    let port = redis.port;
    if let Err(failure) = pod.becomes_ready(port, Duration::from_secs(5)) {
        panic!(
            "the readiness probe fails against a running Redis: {failure}; Redis's log:\n{}",
            redis.log()
        );
    }
    assert!(pod.liveness_passes(port), "the liveness probe fails");
    redis.kill();
    assert!(
        pod.readiness(port).is_err(),
        "readiness passes without Redis"
    );
    assert!(!pod.liveness_passes(port), "liveness passes without Redis");
}

#[test]
fn the_basic_tenant_runs_on_real_redis() {
    check_tenant_on_real_redis(&tenant(BASIC));
}

#[test]
fn the_customized_tenant_runs_on_real_redis() {
    let tenant = tenant(CUSTOMIZED);
    assert!(!tenant.spec.redis.config.is_empty());
    check_tenant_on_real_redis(&tenant);
}

#[test]
fn the_guides_custom_redis_config_runs_on_real_redis() {
    check_tenant_on_real_redis(&guide_custom_config_tenant());
}

#[test]
fn a_setting_redis_does_not_report_as_written_is_caught() {
    let tenant = basic_with(&[("maxmemory", "1mb")]);
    let pod = RedisPod::render(&tenant);
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    let mut claimed = tenant.spec.redis.config.clone();
    claimed.insert("maxmemory".into(), "2mb".into());
    assert_eq!(settings_not_read_back(&redis, &claimed).len(), 1);
}

/// Two tests may pick the same free port; the Redis that binds second must not be taken
/// for ready because the first answers PING there (CI once read another test's `hz 10`).
#[test]
fn a_redis_that_loses_its_port_to_another_is_not_taken_for_ready() {
    let (first, second) = (Sandbox::new(), Sandbox::new());
    let port = free_port();
    let argv = |sandbox: &Sandbox| {
        let dir = sandbox.data_dir().display().to_string();
        [redis_server_path().display().to_string()]
            .into_iter()
            .chain(["--bind", "127.0.0.1", "--save", "", "--dir", &dir].map(String::from))
            .chain(["--port".to_string(), port.to_string()])
            .collect::<Vec<_>>()
    };
    let holder = RedisProcess::start(&argv(&first), port, &first.log_path())
        .unwrap_or_else(|failure| panic!("the first Redis: {failure}"));
    match RedisProcess::start(&argv(&second), port, &second.log_path()) {
        Ok(loser) => panic!(
            "taken for ready on port {port}, which pid {} holds (this one is pid {})",
            holder.pid(),
            loser.pid()
        ),
        Err(failure) => assert!(failure.port_was_taken(), "{failure}"),
    }
}

// ---------------------------------------------------------------------------------------
// Persistence: write, stop Redis, start it again on the same data dir

fn write_marker(redis: &RedisProcess) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let value = format!("written-by-{}-at-{nanos}", std::process::id());
    let mut connection = redis.connect();
    assert_eq!(
        connection.expect(&["SET", MARKER_KEY, &value]),
        Reply::Status("OK".into())
    );
    connection.close();
    value
}

fn marker_after_restart(pod: &RedisPod, sandbox: &Sandbox) -> Option<String> {
    let redis = pod.start_or_panic(sandbox);
    let mut connection = redis.connect();
    connection.get(MARKER_KEY)
}

fn persistence_info(redis: &RedisProcess) -> BTreeMap<String, String> {
    redis.connect().info("persistence")
}

#[test]
fn aof_with_fsync_always_keeps_a_write_through_sigkill() {
    let pod = RedisPod::render(&basic_with(&[
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
    ]));
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    let value = write_marker(&redis);
    redis.kill();
    assert_eq!(marker_after_restart(&pod, &sandbox), Some(value));
}

#[test]
fn without_aof_or_save_points_a_write_is_lost_on_sigkill() {
    let pod = RedisPod::render(&basic_with(&[("appendonly", "no"), ("save", "")]));
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    write_marker(&redis);
    redis.kill();
    assert_eq!(marker_after_restart(&pod, &sandbox), None);
}

#[test]
fn a_save_point_snapshots_a_write_that_then_survives_sigkill() {
    let pod = RedisPod::render(&basic_with(&[("appendonly", "no"), ("save", "1 1")]));
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    let value = write_marker(&redis);
    assert_ne!(persistence_info(&redis)["rdb_changes_since_last_save"], "0");
    poll_until(
        "the save point to snapshot the write",
        PERSISTENCE_TIMEOUT,
        || {
            let info = persistence_info(&redis);
            let saved =
                info["rdb_changes_since_last_save"] == "0" && info["rdb_bgsave_in_progress"] == "0";
            assert_eq!(info["rdb_last_bgsave_status"], "ok", "{info:?}");
            saved.then_some(())
        },
        || redis.log(),
    );
    redis.kill();
    assert_eq!(marker_after_restart(&pod, &sandbox), Some(value));
}

#[test]
fn the_basic_tenant_saves_on_sigterm_and_restarts_with_its_data() {
    let tenant = tenant(BASIC);
    let pod = RedisPod::render(&tenant);
    assert_eq!(
        conf_value(&pod.conf, "save"),
        None,
        "Redis's default save points"
    );
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    assert_eq!(
        redis.connect().config_get("save").as_deref(),
        Some("3600 1 300 100 60 10000")
    );
    let value = write_marker(&redis);
    let (status, log) = redis.terminate(PERSISTENCE_TIMEOUT);
    assert!(status.success(), "{status}; log:\n{log}");
    assert!(log.contains("DB saved on disk"), "{log}");
    assert_eq!(marker_after_restart(&pod, &sandbox), Some(value));
}

#[test]
fn the_guides_everysec_aof_keeps_a_write_that_reached_the_file_through_sigkill() {
    let pod = RedisPod::render(&guide_custom_config_tenant());
    let sandbox = Sandbox::new();
    let redis = pod.start_or_panic(&sandbox);
    let aof_dir = sandbox.data_dir().join(
        redis
            .connect()
            .config_get("appenddirname")
            .expect("appenddirname"),
    );
    let value = write_marker(&redis);
    poll_until(
        "the write to reach the append-only file",
        PERSISTENCE_TIMEOUT,
        || dir_contains(&aof_dir, value.as_bytes()).then_some(()),
        || redis.log(),
    );
    redis.kill();
    assert_eq!(marker_after_restart(&pod, &sandbox), Some(value));
}

fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        .any(|content| content.windows(needle.len()).any(|w| w == needle))
}

// ---------------------------------------------------------------------------------------
// Generated configs

/// Values of `kind` in the forms users write, valid or not by our validation.
fn well_formed_value(kind: ValueKind) -> BoxedStrategy<String> {
    match kind {
        ValueKind::YesNo => select(&["yes", "no", "YES", "No"][..])
            .prop_map(String::from)
            .boxed(),
        ValueKind::Integer { min, max } => {
            prop_oneof![Just(min), Just(max), min..=max, min.max(0)..=max.min(1000),]
                .prop_map(|n| n.to_string())
                .boxed()
        }
        ValueKind::MemorySize { min, max } => memory_size(min, max),
        ValueKind::OneOf(words) => (select(words), any::<bool>())
            .prop_map(|(word, upper)| match upper {
                true => word.to_ascii_uppercase(),
                false => word.to_string(),
            })
            .boxed(),
        ValueKind::SavePoints => prop_oneof![
            Just(String::new()),
            proptest::collection::vec(
                (
                    prop_oneof![1..=3600i64, 1..=i64::MAX],
                    prop_oneof![0..=10_000i32, 0..=i32::MAX],
                    select(&[" ", "  ", "\t"][..]),
                ),
                1..4,
            )
            .prop_map(|pairs| {
                pairs
                    .iter()
                    .map(|(seconds, changes, gap)| format!("{seconds}{gap}{changes}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        ]
        .boxed(),
        ValueKind::KeyspaceEvents => prop_oneof![
            Just(String::new()),
            (
                select(&["K", "E", "KE"][..]),
                subsequence("Ag$lshzxetdmn".chars().collect::<Vec<_>>(), 1..6),
            )
                .prop_flat_map(|(channels, classes)| {
                    let letters: Vec<char> = channels.chars().chain(classes).collect();
                    Just(letters).prop_shuffle()
                })
                .prop_map(|letters| letters.into_iter().collect()),
        ]
        .boxed(),
    }
}

const UNITS: [(&str, u64); 10] = [
    ("", 1),
    ("b", 1),
    ("k", 1000),
    ("kb", 1 << 10),
    ("KB", 1 << 10),
    ("m", 1_000_000),
    ("mb", 1 << 20),
    ("Mb", 1 << 20),
    ("g", 1_000_000_000),
    ("gb", 1 << 30),
];

fn memory_size(min: u64, max: u64) -> BoxedStrategy<String> {
    let in_range = move |bytes: &Option<u64>| bytes.is_some_and(|b| (min..=max).contains(&b));
    prop_oneof![
        Just(min.to_string()),
        Just(max.to_string()),
        (min..=max).prop_map(|n| n.to_string()),
        (select(&UNITS[..]), 0..=4096u64, "0{0,3}")
            .prop_filter("in range", move |((_, multiplier), n, _)| in_range(
                &n.checked_mul(*multiplier)
            ))
            .prop_map(|((unit, _), n, zeros)| format!("{zeros}{n}{unit}")),
    ]
    .boxed()
}

/// Values our validation accepts for `directive`.
fn valid_value(directive: Directive) -> impl Strategy<Value = String> {
    well_formed_value(directive.kind).prop_filter("validation accepts it", move |value| {
        validate_entry(directive.name, value).is_ok()
    })
}

/// A config over any subset of the supported directives, each with a valid value.
fn valid_config() -> impl Strategy<Value = BTreeMap<String, String>> {
    subsequence(SUPPORTED_DIRECTIVES, 1..=SUPPORTED_DIRECTIVES.len())
        .prop_flat_map(|directives| {
            directives
                .into_iter()
                .map(|d| valid_value(d).prop_map(move |value| (d.name.to_string(), value)))
                .collect::<Vec<_>>()
        })
        .prop_map(|pairs| pairs.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any config our validation accepts runs on real Redis as the basic tenant's.
    #[test]
    fn generated_valid_configs_run_on_real_redis(config in valid_config()) {
        let tenant = with_config(&tenant(BASIC), config);
        let problems = validate("my-tenant", &tenant.spec);
        prop_assume!(problems.is_empty());
        check_tenant_on_real_redis(&tenant);
    }
}

// ---------------------------------------------------------------------------------------
// Validation against Redis itself

/// Values of `kind` at and just past its limits, or in forms Redis may read differently.
fn edge_values(kind: ValueKind) -> Vec<String> {
    let strings = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let limits = |min: i128, max: i128| [min - 1, min, min + 1, max - 1, max, max + 1];
    match kind {
        ValueKind::YesNo => strings(&[
            "yes", "no", "YES", "true", "false", "on", "off", "1", "0", "y", " yes", "no ",
        ]),
        ValueKind::Integer { min, max } => limits(min.into(), max.into())
            .map(|n| n.to_string())
            .into_iter()
            .chain(strings(&[
                "-0", "+1", "01", "1.0", "1e3", "0x10", " 1", "1 ", "1k", "1mb",
            ]))
            .collect(),
        ValueKind::MemorySize { min, max } => limits(min.into(), max.into())
            .map(|n| n.to_string())
            .into_iter()
            .chain(strings(&[
                "256Mi",
                "1Gi",
                "1.5gb",
                "1tb",
                "1 mb",
                "mb",
                "b",
                "-1",
                "+1",
                "0001mb",
                "1kB",
                "1e6",
                "18446744073709551616",
                "17179869184gb",
                "8589934591gb",
            ]))
            .chain([126, 127].map(|zeros| format!("{}1mb", "0".repeat(zeros))))
            .collect(),
        ValueKind::OneOf(words) => words
            .iter()
            .flat_map(|w| {
                [
                    w.to_ascii_uppercase(),
                    format!("{w}x"),
                    format!(" {w}"),
                    w.replace('-', "_"),
                ]
            })
            .chain(strings(&["lru", "always ", "none", "nothing"]))
            .collect(),
        ValueKind::SavePoints => strings(&[
            "",
            "3600",
            "0 1",
            "1 0",
            "1 -1",
            "-1 1",
            "1 1 2",
            "+1 1",
            "01 1",
            "1\t1",
            "1 2147483647",
            "1 2147483648",
            "9223372036854775807 1",
            "9223372036854775808 1",
            " 1 1 ",
            "1 1 1 1",
            "1 1e3",
        ]),
        ValueKind::KeyspaceEvents => strings(&[
            "",
            "K",
            "E",
            "KE",
            "A",
            "KA",
            "EA",
            "Kx",
            "xE",
            "Km",
            "Kn",
            "KEA",
            "KEAmn",
            "Kg$lshzxetd",
            "Eg$lshzxetdn",
            "Kq",
            "kx",
            "K x",
        ]),
    }
}

/// Values that fit no directive.
fn junk_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(" ".to_string()),
        "[a-z]{1,8}",
        "[ -~]{0,10}",
        "\"[a-z0-9]{0,4}\"",
        "'[a-z0-9]{0,4}'",
        any::<String>().prop_map(|s| s.chars().take(10).collect()),
    ]
}

fn directive_and_candidate_value() -> impl Strategy<Value = (Directive, String)> {
    select(SUPPORTED_DIRECTIVES).prop_flat_map(|directive| {
        let value = prop_oneof![
            2 => well_formed_value(directive.kind),
            1 => select(edge_values(directive.kind)),
            1 => "[KEAg$lshzxetdmnq ]{0,6}",
            1 => junk_value(),
        ];
        (Just(directive), value)
    })
}

/// Starts Redis on the basic tenant with `key: value` added, and runs `check` on it.
fn with_setting<T>(
    key: &str,
    value: &str,
    check: impl FnOnce(&RedisProcess) -> T,
) -> Result<T, StartFailure> {
    let mut tenant = tenant(BASIC);
    tenant.spec.redis.config.insert(key.into(), value.into());
    let pod = RedisPod::render(&tenant);
    let sandbox = Sandbox::new();
    let redis = pod.start(&sandbox)?;
    Ok(check(&redis))
}

/// Whether Redis starts on `key: value` and reports it as written; Err says why not.
fn redis_takes(directive: &Directive, value: &str) -> Result<(), String> {
    let line = redis_config::render_line(directive.name, value);
    let read_back = with_setting(directive.name, value, |redis| {
        let expected = expected_config_get(directive, value, redis);
        (expected, redis.connect().config_get(directive.name))
    });
    match read_back {
        Err(failure) => Err(format!(
            "validation accepts `{line}` but Redis does not start on it: {failure}"
        )),
        Ok((expected, actual)) if Some(&expected) != actual.as_ref() => Err(format!(
            "after `{line}`, CONFIG GET {} says {actual:?}, not {expected:?}",
            directive.name
        )),
        Ok(_) => Ok(()),
    }
}

/// Every edge value validation accepts, for every directive, runs on real Redis.
#[test]
fn redis_starts_on_every_edge_value_validation_accepts() {
    let failures: Vec<String> = SUPPORTED_DIRECTIVES
        .iter()
        .flat_map(|d| edge_values(d.kind).into_iter().map(move |v| (d, v)))
        .filter(|(d, value)| validate_entry(d.name, value).is_ok())
        .filter_map(|(d, value)| redis_takes(d, &value).err())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// What validation accepts, real Redis starts on, and reports as written; so a value
    /// Redis refuses is always refused by validation first (the contrapositive), reported
    /// on the Tenant instead of crash-looping the pod. Where validation is stricter than
    /// Redis, see `where_validation_is_stricter_than_redis`.
    #[test]
    fn redis_starts_on_every_value_validation_accepts(
        (directive, value) in directive_and_candidate_value()
    ) {
        prop_assume!(validate_entry(directive.name, &value).is_ok());
        if let Err(failure) = redis_takes(&directive, &value) {
            prop_assert!(false, "{}", failure);
        }
    }
}

/// Values validation refuses although Redis 7.0 starts on them, as (directive, value,
/// CONFIG GET afterwards if it does not depend on the machine, why we refuse). The test
/// checks both halves, so the list cannot go stale. Not listed: `activedefrag yes`, which
/// official images accept but Debian's Redis refuses (see redis_config::REFUSED_VALUES).
#[rustfmt::skip]
const STRICTER_THAN_REDIS: &[(&str, &str, Option<&str>, &str)] = &[
    ("maxmemory", "", Some("0"), "Redis reads an empty size as 0"),
    ("maxmemory", "mb", Some("0"), "Redis reads a unit without digits as 0"),
    ("maxmemory", "17179869184gb", Some("0"), "Redis wraps a size past 2^64"),
    ("maxmemory", "18446744073709551616", Some("18446744073709551615"), "Redis saturates it"),
    ("save", "1 2147483648", Some("1 -2147483648"), "Redis wraps changes past 2^31-1"),
    ("save", " ", Some(""), "a blank value reads as no save points; we ask for \"\""),
    ("hz", "0", Some("1"), "Redis clamps hz to 1..500; we take only values it keeps"),
    ("hz", "501", Some("500"), "Redis clamps hz to 1..500; we take only values it keeps"),
    ("databases", "10001", Some("10001"), "each database costs memory at start"),
    ("maxclients", "1048545", None, "more clients than Linux lets a process open files"),
    ("notify-keyspace-events", "K", Some("K"), "no event class: nothing is delivered"),
    ("notify-keyspace-events", "x", Some("x"), "no channel (K or E): nothing is delivered"),
];

#[test]
fn where_validation_is_stricter_than_redis() {
    for (key, value, redis_reads, why) in STRICTER_THAN_REDIS {
        assert!(
            validate_entry(key, value).is_err(),
            "{key}={value:?} is accepted"
        );
        let read_back = with_setting(key, value, |redis| redis.connect().config_get(key))
            .unwrap_or_else(|failure| {
                panic!("{key}={value:?} is listed as valid for Redis ({why}), but: {failure}")
            });
        if let Some(expected) = redis_reads {
            assert_eq!(read_back.as_deref(), Some(*expected), "{key}={value:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backups: the rendered CronJob's script against a real Redis, and the documented restore

/// The guide's basic tenant with daily backups, three kept.
const BACKED_UP: &str = r#"
apiVersion: neurallog.io/v1
kind: Tenant
metadata: {name: backed-up}
spec:
  redis:
    backup: {schedule: "0 3 * * *", keep: 3}
"#;

/// What the rendered CronJob tells its backup pod: the command and its environment.
struct BackupPod {
    command: Vec<String>,
    env: BTreeMap<String, String>,
    backup_dir: String,
}

impl BackupPod {
    fn render(tenant: &Tenant) -> BackupPod {
        let cronjob = backup_cronjob(tenant, &RenderSettings::default())
            .expect("the CronJob renders")
            .expect("a CronJob for a tenant with backups");
        let pod = cronjob
            .spec
            .and_then(|s| s.job_template.spec)
            .and_then(|s| s.template.spec)
            .expect("a pod template");
        let container = &pod.containers[0];
        let claim_volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.as_str())
                    == Some(BACKUP_CLAIM)
            })
            .expect("a volume of the backup claim");
        let backup_dir = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == claim_volume.name)
            .map(|m| m.mount_path.clone())
            .expect("the backup claim is mounted");
        let env: BTreeMap<String, String> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().expect("a literal value")))
            .collect();
        assert_eq!(
            env["BACKUP_DIR"], backup_dir,
            "the script writes to the claim"
        );
        BackupPod {
            command: container.command.clone().expect("command"),
            env,
            backup_dir,
        }
    }

    /// Runs the pod's command as the container would, with only where Redis and the claim
    /// are changed: loopback, the test Redis's port, a temp dir.
    fn run(&self, redis_port: u16, backup_dir: &Path) -> std::process::Output {
        let mut env = self.env.clone();
        env.insert("REDIS_HOST".into(), "127.0.0.1".into());
        env.insert("REDIS_PORT".into(), redis_port.to_string());
        env.insert("BACKUP_DIR".into(), backup_dir.display().to_string());
        let changed: Vec<&str> = env
            .iter()
            .filter(|(k, v)| self.env.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(changed, ["BACKUP_DIR", "REDIS_HOST", "REDIS_PORT"]);
        Command::new(&self.command[0])
            .args(&self.command[1..])
            .env_clear()
            .env("PATH", path_with_redis_cli())
            .envs(env)
            .output()
            .expect("run the backup command")
    }
}

/// The snapshot files in `dir`, oldest first, and whatever else is there.
fn snapshots(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the backup dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    names.sort();
    names.into_iter().partition(|name| {
        name.starts_with("dump-")
            && name.ends_with("Z.rdb")
            && name.len() == "dump-20261130T030000Z.rdb".len()
    })
}

/// A whole RDB file: the magic at its start, the EOF opcode and an 8-byte checksum at its end.
fn assert_whole_rdb(path: &Path) {
    let bytes = std::fs::read(path).expect("read the snapshot");
    assert!(
        bytes.starts_with(b"REDIS"),
        "{} lacks the RDB magic",
        path.display()
    );
    assert!(bytes.len() > 9 + 9, "{} is too short", path.display());
    assert_eq!(
        bytes[bytes.len() - 9],
        0xFF,
        "{} lacks the EOF opcode",
        path.display()
    );
}

/// The current UTC second: the script names snapshots to the second, and runs of a real
/// schedule are a minute apart at least.
fn wait_for_the_next_second() {
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let now = second();
    poll_until(
        "the next second",
        Duration::from_secs(2),
        || (second() > now).then_some(()),
        String::new,
    );
}

/// Runs the README's restore script (examples/redis-restore.yaml) as its pod would:
/// `snapshot` of `backup_dir` into `data_dir`, with the tenant's redis.conf as the pod
/// mounts it from the ConfigMap.
fn restore(redis_pod: &RedisPod, backup_dir: &Path, snapshot: &str, data_dir: &Path) {
    let conf_dir = tempfile::tempdir().expect("config dir");
    let conf = conf_dir.path().join("redis.conf");
    std::fs::write(&conf, &redis_pod.conf).expect("write redis.conf");
    let output = Command::new("sh")
        .args(["-c", RESTORE_SCRIPT])
        .env_clear()
        .env("PATH", path_with_redis_cli())
        .env("SNAPSHOT", snapshot)
        .env("BACKUP_DIR", backup_dir)
        .env("DATA_DIR", data_dir)
        .env("REDIS_CONF", &conf)
        .output()
        .expect("run the restore script");
    assert!(
        output.status.success(),
        "the restore failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The rendered backup script saves whole snapshots of a real Redis and keeps the newest
/// `keep`; the README's restore puts the newest into the data dir of a stopped Redis (here
/// one with data written after the backup), and Redis starts on exactly the data the last
/// backup saw.
fn check_backup_and_restore(yaml: &str) {
    let tenant = tenant(yaml);
    let keep = usize::try_from(tenant.spec.redis.backup.as_ref().expect("backup").keep).unwrap();
    let redis_pod = RedisPod::render(&tenant);
    let backup_pod = BackupPod::render(&tenant);
    assert_eq!(backup_pod.backup_dir, "/backups");
    let sandbox = Sandbox::new();
    let redis = redis_pod.start_or_panic(&sandbox);
    let backups = tempfile::tempdir().expect("backup dir");
    let mut conn = redis.connect();
    let big = "x".repeat(256 * 1024);
    conn.expect(&["SET", "tenant:big", &big]);
    conn.expect(&["RPUSH", "tenant:logs", "one", "two", "three"]);
    let runs = keep + 2;
    for run in 1..=runs {
        conn.expect(&["SET", "tenant:run", &run.to_string()]);
        wait_for_the_next_second();
        let output = backup_pod.run(redis.port, backups.path());
        assert!(
            output.status.success(),
            "backup run {run} failed: {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let (kept, other) = snapshots(backups.path());
        assert_eq!(other, Vec::<String>::new(), "nothing but snapshots stays");
        assert_eq!(kept.len(), run.min(keep), "after run {run}: {kept:?}");
        for snapshot in &kept {
            assert_whole_rdb(&backups.path().join(snapshot));
        }
    }
    let (kept, _) = snapshots(backups.path());
    let newest = kept.last().expect("a snapshot").clone();

    // Written after the last backup, and saved as Redis stops (SIGTERM, as the pod is
    // stopped for the restore): the restore must replace it.
    conn.expect(&["SET", "tenant:run", "after-the-last-backup"]);
    conn.expect(&["SET", "tenant:late", "after-the-last-backup"]);
    let logs = format!("{:?}", conn.expect(&["LRANGE", "tenant:logs", "0", "-1"]));
    let (status, log) = redis.terminate(Duration::from_secs(10));
    assert!(status.success(), "Redis stops cleanly: {log}");

    restore(&redis_pod, backups.path(), &newest, &sandbox.data_dir());
    let restored = redis_pod.start_or_panic(&sandbox);
    let mut conn = restored.connect();
    assert_eq!(
        conn.get("tenant:run"),
        Some(runs.to_string()),
        "the newest snapshot's data"
    );
    assert_eq!(
        conn.get("tenant:late"),
        None,
        "nothing written after the backup"
    );
    assert_eq!(conn.get("tenant:big").map(|v| v.len()), Some(big.len()));
    assert_eq!(
        format!("{:?}", conn.expect(&["LRANGE", "tenant:logs", "0", "-1"])),
        logs
    );

    // The restored Redis persists as configured: what it is given now survives a restart.
    conn.expect(&["SET", "tenant:after-restore", "kept"]);
    conn.close();
    let (status, log) = restored.terminate(Duration::from_secs(10));
    assert!(status.success(), "Redis stops cleanly: {log}");
    let again = redis_pod.start_or_panic(&sandbox);
    let mut conn = again.connect();
    assert_eq!(conn.get("tenant:run"), Some(runs.to_string()));
    assert_eq!(conn.get("tenant:after-restore"), Some("kept".to_string()));
    again.kill();
}

#[test]
fn backups_keep_the_newest_snapshots_and_restore_into_a_fresh_redis() {
    check_backup_and_restore(BACKED_UP);
}

/// With `appendonly yes` (the guide's custom config), Redis starts from its append-only
/// files and ignores dump.rdb: the restore makes the snapshot their base.
#[test]
fn a_restore_with_appendonly_starts_from_the_snapshot() {
    let yaml =
        format!("{BACKED_UP}    config:\n      appendonly: \"yes\"\n      appendfsync: everysec\n");
    let tenant = tenant(&yaml);
    assert_eq!(
        tenant
            .spec
            .redis
            .config
            .get("appendonly")
            .map(String::as_str),
        Some("yes")
    );
    check_backup_and_restore(&yaml);
}

/// A backup of a Redis that is not there fails the Job's pod (so the Job retries and the
/// CronJob's last success does not move) and leaves the kept snapshots alone.
#[test]
fn a_failed_backup_fails_and_keeps_what_was_there() {
    let tenant = tenant(BACKED_UP);
    let backup_pod = BackupPod::render(&tenant);
    let backups = tempfile::tempdir().expect("backup dir");
    let earlier = backups.path().join("dump-20260101T030000Z.rdb");
    std::fs::write(&earlier, b"REDIS0011 an earlier snapshot").expect("write");
    let output = backup_pod.run(free_port(), backups.path());
    assert!(!output.status.success(), "a backup without Redis succeeded");
    let (kept, other) = snapshots(backups.path());
    assert_eq!(kept, ["dump-20260101T030000Z.rdb"]);
    assert_eq!(other, Vec::<String>::new(), "no partial snapshot stays");
}
