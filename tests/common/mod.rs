//! Shared harness of the end-to-end tests: the local cluster (tests/cluster), an operator
//! process per test with its own journal and tenant label, and an in-process Auth stub.
#![allow(dead_code)]

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use neurallog_auth_stub::{AuthStub, AuthStubHandle};
use neurallog_operator::crd::Tenant;
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const RUN_LABEL: &str = "e2e.neurallog.io/run";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// With `NEURALLOG_REQUIRE_CLUSTER=1` (`make test` sets it) a missing cluster fails the
/// end-to-end tests instead of skipping them.
pub const REQUIRE_CLUSTER_ENV: &str = "NEURALLOG_REQUIRE_CLUSTER";

/// The kubeconfig the tests were given (`NEURALLOG_E2E_KUBECONFIG`), else the local
/// cluster's if it was started (`make cluster-up`); `None` when no cluster is configured.
fn configured_kubeconfig() -> Option<PathBuf> {
    let given = std::env::var_os("NEURALLOG_E2E_KUBECONFIG").map(PathBuf::from);
    let local = repo_root().join("target/cluster/kubeconfig");
    given.or_else(|| local.exists().then_some(local))
}

/// The one gate of the end-to-end tests: without a configured cluster, and unless
/// `NEURALLOG_REQUIRE_CLUSTER=1`, this whole test binary says so in one line and exits
/// successfully, so a plain `cargo test` on a fresh clone passes. Every test binary that
/// needs the cluster reaches it through here (`kubeconfig()`, and so `client()`,
/// `kubectl()` and the operator processes).
pub fn skip_without_cluster() {
    if configured_kubeconfig().is_some() || std::env::var(REQUIRE_CLUSTER_ENV).as_deref() == Ok("1")
    {
        return;
    }
    // Tests run in parallel: one of them says it and ends the process.
    static SKIPPING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SKIPPING.lock();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.file_stem()?.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(name, _hash)| name.to_owned())
        })
        .unwrap_or_else(|| "this test".to_owned());
    // Straight to stderr: the test harness would swallow a line printed with `eprintln!`.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "{binary}: skipped: it needs a Kubernetes cluster; `make test` starts one and runs it \
         ({REQUIRE_CLUSTER_ENV}=1 makes a missing cluster fail)"
    );
    std::process::exit(0);
}

pub fn kubeconfig() -> PathBuf {
    skip_without_cluster();
    let path =
        configured_kubeconfig().unwrap_or_else(|| repo_root().join("target/cluster/kubeconfig"));
    assert!(
        path.exists(),
        "no test cluster: {} is missing. Run `make test` (or `make cluster-up` first)",
        path.display()
    );
    path
}

pub fn kubectl_path() -> PathBuf {
    std::env::var_os("NEURALLOG_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// `kubectl tenant ARGS` run by kubectl, which finds the plugin binary on $PATH; stdout.
pub fn kubectl_tenant(args: &[&str]) -> String {
    let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-tenant"));
    let dir = plugin.parent().expect("the plugin's directory");
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let output = std::process::Command::new(kubectl_path())
        .arg("tenant")
        .args(args)
        .env("PATH", path)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl tenant {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs kubectl against the test cluster; returns stdout, panics with stderr on failure.
/// It blocks its thread: a test serving the Auth stub must run on a multi-thread runtime.
pub fn kubectl(args: &[&str]) -> String {
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// kubectl with stdin; returns (success, stdout, stderr).
pub fn kubectl_stdin(args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("kubectl finishes");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub async fn client() -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client")
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs (server-side applies) the CRD and waits until it is established.
pub async fn install_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = neurallog_operator::crd::crd();
    api.patch(
        "tenants.neurallog.io",
        &PatchParams::apply("neurallog-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("CRD applies");
    wait_for(
        "the Tenant CRD to be established",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let crd = api.get("tenants.neurallog.io").await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        },
    )
    .await;
}

/// Whether process `pid` holds a listening TCP socket on `port` (Linux's /proc).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let listening = listening_socket_inodes(port);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            target.parse::<u64>().ok()
        })
        .any(|inode| listening.contains(&inode))
}

/// The inodes of the sockets listening on `port`, IPv4 or IPv6.
fn listening_socket_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
                    let listens_here = u16::from_str_radix(local_port, 16).ok() == Some(port)
                        && *fields.get(3)? == LISTEN;
                    listens_here.then(|| fields.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Whether `pid` runs (a zombie, exited but not yet waited for, does not).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        !matches!(state, Some(Some('Z' | 'X')) | None)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An operator process serving only the Tenants labelled with its run id.
pub struct Operator {
    pub run: String,
    pub metrics_url: String,
    pub journal: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    auth_url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Operator {
    pub fn start(run: &str, auth_url: &str) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = dir.path().join("journal");
        Operator::start_on(run, auth_url, journal, Some(dir))
    }

    /// An operator whose journal lives at `journal` (kept after the test).
    pub fn start_with_journal(run: &str, auth_url: &str, journal: PathBuf) -> Operator {
        Operator::start_on(run, auth_url, journal, None)
    }

    fn start_on(
        run: &str,
        auth_url: &str,
        journal: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Operator {
        let mut op = Operator {
            run: run.to_string(),
            metrics_url: String::new(),
            journal,
            log: repo_root().join(format!("target/e2e-logs/{run}.log")),
            child: None,
            auth_url: auth_url.to_string(),
            _dir: dir,
        };
        op.spawn();
        op
    }

    /// The /readyz answer: (status code, body).
    pub async fn readiness(&self) -> Option<(u16, String)> {
        let response = loopback_http()
            .get(format!("{}/readyz", self.metrics_url))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(self.log.parent().expect("log dir")).expect("log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let port = free_port();
        self.metrics_url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_neurallog-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .arg("--journal")
            .arg(&self.journal)
            .args(["--auth-url", &self.auth_url])
            .args(["--auth-timeout-seconds", "1"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--tenant-selector", &format!("{RUN_LABEL}={}", self.run)])
            .env(
                "RUST_LOG",
                std::env::var("NEURALLOG_E2E_RUST_LOG")
                    .unwrap_or_else(|_| "info,kube=warn,neurallog_operator=debug".into()),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        self.child = Some(child);
    }

    /// Waits until /readyz answers 200 from this operator. Two tests may pick the same
    /// free port, so the answer only counts once this process holds the listening socket.
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.metrics_url);
        let pid = self.child.as_ref().expect("a running operator").id();
        let port: u16 = self
            .metrics_url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the metrics URL ends in a port");
        let what = format!(
            "operator pid {pid} to be ready on port {port} (log: {})",
            self.log.display()
        );
        wait_for(&what, Duration::from_secs(90), || {
            let url = url.clone();
            async move {
                let r = loopback_http().get(&url).send().await.ok()?;
                let ours = listens_on(pid, port);
                assert!(
                    ours || process_alive(pid),
                    "operator pid {pid} exited while another process answers on its port \
                     {port} (log: {})",
                    self.log.display()
                );
                (r.status().is_success() && ours).then_some(())
            }
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics body")
    }

    /// Sum of a counter family's samples whose line starts with `prefix`.
    pub async fn counter(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running (it never exits on its own).
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn journal_path(&self) -> &Path {
        &self.journal
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn auth_stub() -> AuthStubHandle {
    AuthStub::start("127.0.0.1:0".parse().expect("addr"), None)
        .await
        .expect("the Auth stub starts")
}

/// A Tenant from YAML, renamed and labelled for run `run`.
pub fn tenant_from_yaml(yaml: &str, name: &str, run: &str) -> Tenant {
    let mut tenant: Tenant = serde_yaml::from_str(yaml).expect("Tenant YAML parses");
    tenant.metadata.name = Some(name.to_string());
    tenant
        .labels_mut()
        .insert(RUN_LABEL.to_string(), run.to_string());
    tenant
}

pub async fn apply_tenant(client: &Client, tenant: &Tenant) {
    let api: Api<Tenant> = Api::all(client.clone());
    api.patch(
        &tenant.name_any(),
        &PatchParams::apply("neurallog-e2e").force(),
        &Patch::Apply(tenant),
    )
    .await
    .expect("the Tenant applies");
}

/// Waits until the tenant's status, written for its current generation, says `phase`.
/// A status from before the last spec change is stale, whatever phase it names.
pub async fn wait_for_phase(client: &Client, name: &str, phase: &str, timeout: Duration) -> Tenant {
    let api: Api<Tenant> = Api::all(client.clone());
    wait_for(&format!("tenant {name} to reach {phase}"), timeout, || {
        let api = api.clone();
        async move {
            let t = api.get_opt(name).await.ok()??;
            let status = t.status.as_ref()?;
            let current = status.observed_generation == t.metadata.generation
                && status.phase.as_deref() == Some(phase);
            current.then_some(t)
        }
    })
    .await
}

/// Waits until the tenant's condition `type_` is True with `reason`.
pub async fn wait_for_true_condition(
    client: &Client,
    name: &str,
    type_: &str,
    reason: &str,
    timeout: Duration,
) {
    wait_for_condition(client, name, type_, "True", reason, timeout).await;
}

/// Waits until the tenant's condition `type_` has `status` and `reason`; returns its message.
pub async fn wait_for_condition(
    client: &Client,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> String {
    let api: Api<Tenant> = Api::all(client.clone());
    let what = format!("tenant {name}: {type_}={status} with reason {reason}");
    wait_for(&what, timeout, || {
        let api = api.clone();
        async move {
            let t = api.get_opt(name).await.ok()??;
            let c = t
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == type_)?;
            (c.status == status && c.reason == reason).then_some(c.message)
        }
    })
    .await
}

pub async fn wait_until_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(&format!("{name} to be gone"), timeout, || {
        let api = api.clone();
        let name = name.to_string();
        async move { api.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
}

/// A short unique id for names of one test run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{:x}{:04x}",
        std::process::id() % 0xfff,
        nanos % 0xffff
    )
}

/// An HTTP client for the operator on loopback, which accepts the self-signed certificate
/// it makes at start when its endpoints are secure (`--secure-endpoints=true`).
pub fn loopback_http() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("an HTTP client")
}

/// A test's own operator (it watches only the tenants labelled with `run`) and Auth stub,
/// against the local cluster with the CRD installed; ready when returned.
pub struct OperatorEnv {
    pub client: Client,
    pub run: String,
    pub auth: AuthStubHandle,
    pub operator: Operator,
}

impl OperatorEnv {
    pub async fn start(prefix: &str) -> OperatorEnv {
        Self::start_with_args(prefix, &[]).await
    }

    /// `start`, the operator run with the extra `run` flags `args`.
    pub async fn start_with_args(prefix: &str, args: &[&str]) -> OperatorEnv {
        let client = client().await;
        install_crd(&client).await;
        let run = unique(prefix);
        let auth = auth_stub().await;
        let options = OperatorOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..OperatorOptions::default()
        };
        let operator = Operator::start_with_options(&run, &auth.url(), &options);
        operator.wait_ready().await;
        OperatorEnv {
            client,
            run,
            auth,
            operator,
        }
    }
}

/// How `Operator::start_with_options` runs the operator, beyond what `start` sets.
#[derive(Clone, Debug, Default)]
pub struct OperatorOptions {
    /// The operator's kubeconfig (a ServiceAccount token's, say); default: the admin one.
    pub kubeconfig: Option<PathBuf>,
    /// More `run` flags (leader election, say).
    pub args: Vec<String>,
    /// Tells apart the processes of one run: each logs to `target/e2e-logs/<run>-<name>.log`.
    pub name: Option<String>,
}

impl Operator {
    /// `start`, authenticating with `kubeconfig` instead of the cluster admin's.
    pub fn start_with(run: &str, auth_url: &str, kubeconfig: &Path) -> Operator {
        let options = OperatorOptions {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..OperatorOptions::default()
        };
        Self::start_with_options(run, auth_url, &options)
    }

    /// `start` with `options`; each call has its own journal, even for the same run.
    pub fn start_with_options(run: &str, auth_url: &str, options: &OperatorOptions) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_name = match &options.name {
            Some(name) => format!("{run}-{name}"),
            None => run.to_string(),
        };
        let mut op = Operator {
            run: run.to_string(),
            metrics_url: String::new(),
            journal: dir.path().join("journal"),
            log: repo_root().join(format!("target/e2e-logs/{log_name}.log")),
            child: None,
            auth_url: auth_url.to_string(),
            _dir: Some(dir),
        };
        op.spawn_with(options);
        op
    }

    /// Kills the process and starts it again with `options` (`restart` uses `start`'s).
    pub fn restart_with(&mut self, options: &OperatorOptions) {
        self.kill();
        self.spawn_with(options);
    }

    fn spawn_with(&mut self, options: &OperatorOptions) {
        std::fs::create_dir_all(self.log.parent().expect("log dir")).expect("log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let port = free_port();
        // Secure endpoints on loopback serve TLS with a certificate made at start.
        let scheme = if options.args.iter().any(|a| a == "--secure-endpoints=true") {
            "https"
        } else {
            "http"
        };
        self.metrics_url = format!("{scheme}://127.0.0.1:{port}");
        let kubeconfig = options.kubeconfig.clone().unwrap_or_else(kubeconfig);
        let child = Command::new(env!("CARGO_BIN_EXE_neurallog-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--journal")
            .arg(&self.journal)
            .args(["--auth-url", &self.auth_url])
            .args(["--auth-timeout-seconds", "1"])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--tenant-selector", &format!("{RUN_LABEL}={}", self.run)])
            .args(&options.args)
            .env(
                "RUST_LOG",
                std::env::var("NEURALLOG_E2E_RUST_LOG")
                    .unwrap_or_else(|_| "info,kube=warn,neurallog_operator=debug".into()),
            )
            .env_remove("POD_NAME")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        self.child = Some(child);
    }

    /// The exit status, once the process has ended on its own (or been stopped).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok()?
    }

    /// Asks the operator to shut down (SIGTERM) and waits for it to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("a running operator").id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "cannot signal the operator (pid {pid})");
        wait_for("the operator to exit", timeout, || {
            let status = self.exit_status();
            async move { status }
        })
        .await
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running operator").id();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(
            sent.success(),
            "cannot send SIG{signal} to the operator (pid {pid})"
        );
    }

    /// Whether /readyz answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        reqwest::get(format!("{}/readyz", self.metrics_url))
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// The log so far (both output streams).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Best-effort removal of a tenant that a failed test left behind with its operator gone:
/// deletes it, drops its finalizer (nobody else will) and deletes its namespace.
pub fn discard_tenant(name: &str) {
    let namespace = format!("tenant-{name}");
    let steps: [&[&str]; 3] = [
        &[
            "delete",
            "tenant",
            name,
            "--ignore-not-found",
            "--wait=false",
        ],
        &[
            "patch",
            "tenant",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        &[
            "delete",
            "namespace",
            &namespace,
            "--ignore-not-found",
            "--wait=false",
        ],
    ];
    for args in steps {
        // The tenant is usually gone already (the test passed): nothing to patch.
        let _ = kubectl_stdin(args, "");
    }
}

/// Discards the named tenants when dropped, so a failing test leaves nothing stuck. Declare
/// it before the operator: locals drop in reverse order, the operator first.
pub struct TenantCleanup(pub Vec<String>);

impl Drop for TenantCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            discard_tenant(name);
        }
    }
}

/// The README's restore step 2 (Restoring a tenant from a retained volume): reserves the
/// kept volume `volume` for the Redis data claim of tenant `tenant`, not created yet, with
/// the README's `kubectl patch pv`.
pub fn reserve_volume_for(volume: &str, tenant: &str) {
    let reserve = format!(
        r#"{{"spec":{{"claimRef":{{"namespace":"tenant-{tenant}","name":"redis-data-{tenant}-redis-0","uid":null,"resourceVersion":null}}}}}}"#
    );
    kubectl(&["patch", "pv", volume, "--type", "merge", "-p", &reserve]);
}

/// Deletes the PersistentVolumes a test made or kept (cluster-scoped: they outlive their
/// namespaces), when the test ends however it ends.
pub struct VolumeCleanup(pub Vec<String>);

impl Drop for VolumeCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new(kubectl_path())
                .arg("--kubeconfig")
                .arg(kubeconfig())
                .args(["delete", "pv", name, "--ignore-not-found", "--wait=false"])
                .output();
        }
    }
}

pub const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];
/// Resources only the operator writes in steady state (controllers write their status
/// subresources, kwok writes nodes and leases: those are not counted).
pub const OUR_RESOURCES: [&str; 10] = [
    "tenants",
    "cronjobs",
    "persistentvolumeclaims",
    "namespaces",
    "configmaps",
    "services",
    "statefulsets",
    "deployments",
    "networkpolicies",
    "limitranges",
];

/// Write requests the API server served for our resources, by (verb, resource, subresource).
pub fn apiserver_writes() -> std::collections::BTreeMap<String, f64> {
    let metrics = kubectl(&["get", "--raw", "/metrics"]);
    let mut writes = std::collections::BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let (verb, resource, subresource) =
            (label("verb"), label("resource"), label("subresource"));
        let ours = OUR_RESOURCES.contains(&resource.as_str())
            && (subresource.is_empty() || resource == "tenants");
        if ours && WRITE_VERBS.contains(&verb.as_str()) {
            let key = format!("{verb} {resource}/{subresource}");
            *writes.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    writes
}

/// A ValidatingAdmissionPolicy (the API server's own CEL admission) that refuses the
/// server Service in one tenant's namespace: a policy the operator cannot satisfy.
pub fn deny_server_services(name: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: e2e-deny-server-service-{name}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["services"]
  validations:
  - expression: "!object.metadata.name.endsWith('-server')"
    message: "server Services are not allowed in this namespace (e2e policy)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: e2e-deny-server-service-{name}
spec:
  policyName: e2e-deny-server-service-{name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        neurallog.io/tenant: {name}
"#
    )
}

/// Waits until the API server enforces `deny_server_services(name)` (admission policies
/// take a moment to load): a dry-run of a server Service in a namespace labelled like the
/// tenant's is refused.
pub async fn wait_until_server_services_are_refused(name: &str) {
    let probe = format!("probe-{name}");
    let namespace = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {probe}\n  labels:\n    neurallog.io/tenant: {name}\n"
    );
    let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &namespace);
    assert!(ok, "{stderr}");
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: probe-server\n  namespace: {probe}\nspec:\n  ports: [{{port: 80}}]\n"
    );
    wait_for(
        "the admission policy to be in force",
        Duration::from_secs(60),
        || {
            let service = service.clone();
            async move {
                let (created, _, _) =
                    kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &service);
                (!created).then_some(())
            }
        },
    )
    .await;
    let _ = kubectl_stdin(&["delete", "namespace", &probe, "--wait=false"], "");
}

/// The write requests counted since `before` (an `apiserver_writes()` reading), those
/// that grew only.
pub fn apiserver_writes_since(
    before: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    apiserver_writes()
        .into_iter()
        .map(|(k, v)| {
            let grew = v - before.get(&k).copied().unwrap_or(0.0);
            (k, grew)
        })
        .filter(|(_, grew)| *grew > 0.0)
        .collect()
}

/// Whether an Event name is a transition's (`<tenant>.<uid8>[.<chain>].t<seq>`), not one
/// sent within a phase (`....t<seq>.<time>-<hash>`).
pub fn is_transition_event_name(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|last| {
        last.len() == 7 && last.starts_with('t') && last[1..].chars().all(|c| c.is_ascii_digit())
    })
}

/// The message of the tenant's server status ("" before there is one).
pub fn redis_message(tenant: &Tenant) -> String {
    tenant
        .status
        .as_ref()
        .and_then(|s| s.redis_status.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_default()
}

pub fn server_message(tenant: &Tenant) -> String {
    tenant
        .status
        .as_ref()
        .and_then(|s| s.server_status.as_ref())
        .map(|s| s.message.clone())
        .unwrap_or_default()
}

/// Deletes namespace `name` without waiting (and without failing when it is gone already);
/// returns kubectl's (success, stdout, stderr).
pub fn delete_namespace(name: &str) -> (bool, String, String) {
    kubectl_stdin(
        &[
            "delete",
            "namespace",
            name,
            "--ignore-not-found",
            "--wait=false",
        ],
        "",
    )
}

/// A short-lived token of ServiceAccount `name`, from the TokenRequest API.
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("a token request status")
        .token
}

/// Writes to `path` a kubeconfig for the test cluster (its server and CA) that authenticates
/// with `token`, and returns `path`.
pub fn token_kubeconfig(token: &str, path: &Path) -> PathBuf {
    let admin = kube::config::Kubeconfig::read_from(kubeconfig()).expect("kubeconfig parses");
    let context = admin
        .contexts
        .iter()
        .find(|c| Some(&c.name) == admin.current_context.as_ref())
        .and_then(|c| c.context.as_ref())
        .expect("a current context");
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .expect("the context's cluster");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server,
            "certificate-authority": cluster.certificate_authority,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "test", "user": "token"}}],
        "current-context": "token",
    });
    std::fs::write(path, serde_yaml::to_string(&config).expect("YAML"))
        .expect("kubeconfig written");
    path.to_path_buf()
}
