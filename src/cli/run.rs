//! `neurallog-operator run`: the operator process.

use crate::auth::{AuthClient, AuthConfig};
use crate::controller::{self, Context};
use crate::crd::Tenant;
use crate::http::{self, HttpState};
use crate::journal;
use crate::journal::api::{self as journal_api, ApiLimits, SharedJournal};
use crate::journal::follow::{FollowMetrics, Follower};
use crate::journal::recovery::{self as journal_recovery, StatusPosition};
use crate::journal::slot::JournalSlot;
use crate::journal::upkeep as journal_upkeep;
use crate::leader::{self, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::render::RenderSettings;
use anyhow::Context as _;
use chrono::Utc;
use kube::ResourceExt;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Kubeconfig to use; in-cluster configuration (or $KUBECONFIG) when unset.
    #[arg(long, env = "NEURALLOG_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Directory of the journal (sled). One operator process per journal.
    #[arg(
        long,
        env = "NEURALLOG_JOURNAL",
        default_value = "/var/lib/neurallog-operator/journal"
    )]
    journal: PathBuf,
    /// Journal records kept per tenant chain: older ones are compacted into the chain's
    /// checkpoint (hourly). The chain's last record is always kept.
    #[arg(
        long,
        env = "NEURALLOG_JOURNAL_KEEP_RECORDS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    journal_keep_records: u64,
    /// Days a journal record is kept: older ones are compacted too, even within the newest
    /// --journal-keep-records.
    #[arg(
        long,
        env = "NEURALLOG_JOURNAL_KEEP_DAYS",
        default_value_t = 90,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    journal_keep_days: u32,
    /// Directory where retention archives the records it compacts, as export lines (one
    /// `<tenant>_<uid>.jsonl` per chain, fsynced before the records are deleted). Unset:
    /// compacted records are only deleted.
    #[arg(long, env = "NEURALLOG_JOURNAL_ARCHIVE_DIR")]
    journal_archive_dir: Option<PathBuf>,
    /// sled's page cache for the journal, in MiB (sled's own default is 1 GiB).
    #[arg(
        long,
        env = "NEURALLOG_JOURNAL_CACHE_MB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(8..)
    )]
    journal_cache_mb: u64,
    /// While waiting for the leader lease, follow the leader's journal (through its journal
    /// API, each record checked against its hash chain) into this replica's own journal,
    /// so that a takeover continues the leader's chains. Only for replicas that each have
    /// a journal directory of their own, never one shared with the leader.
    #[arg(
        long = "journal-follow",
        env = "NEURALLOG_JOURNAL_FOLLOW",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    journal_follow: bool,
    /// How often a following replica polls the leader's journal, in milliseconds.
    #[arg(
        long,
        env = "NEURALLOG_JOURNAL_FOLLOW_INTERVAL_MS",
        default_value_t = 250,
        value_parser = clap::value_parser!(u64).range(10..)
    )]
    journal_follow_interval_ms: u64,
    /// Where other replicas reach this replica's journal API; the leader advertises it on
    /// the Lease. Default: http://$POD_IP:<port of --metrics-addr>, else
    /// http://<--metrics-addr> unless that is a wildcard address.
    #[arg(long, env = "NEURALLOG_JOURNAL_ADVERTISE_URL")]
    journal_advertise_url: Option<String>,
    /// Base URL of the NeuralLog Auth service, as the operator reaches it.
    #[arg(
        long,
        env = "NEURALLOG_AUTH_URL",
        default_value = "http://auth.neurallog.svc.cluster.local:3040"
    )]
    auth_url: String,
    /// File holding the Auth bearer token.
    #[arg(long, env = "NEURALLOG_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// Timeout of one Auth request, in seconds.
    #[arg(long, env = "NEURALLOG_AUTH_TIMEOUT_SECONDS", default_value_t = 5.0)]
    auth_timeout_seconds: f64,
    /// Admin user registered for tenants that do not set spec.auth.adminUserId.
    #[arg(long, env = "NEURALLOG_AUTH_ADMIN_USER_ID", default_value = "admin")]
    auth_admin_user_id: String,
    /// AUTH_URL given to tenant servers (how pods reach Auth).
    #[arg(
        long,
        env = "NEURALLOG_TENANT_AUTH_URL",
        default_value = "http://auth.neurallog.svc.cluster.local:3040"
    )]
    tenant_auth_url: String,
    /// Namespace of the Auth service (tenant servers may reach it).
    #[arg(long, env = "NEURALLOG_AUTH_NAMESPACE", default_value = "neurallog")]
    auth_namespace: String,
    /// Port of the Auth service (tenant servers may reach it).
    #[arg(long, env = "NEURALLOG_AUTH_PORT", default_value_t = 3040)]
    auth_port: i32,
    /// Labels (key=value,...) of the Auth pods tenant servers may reach; empty: every pod
    /// of the Auth namespace.
    #[arg(long, env = "NEURALLOG_AUTH_POD_SELECTOR", default_value = "", value_parser = crate::validation::parse_match_labels)]
    auth_pod_selector: BTreeMap<String, String>,
    /// Labels (key=value,...) of the cluster DNS pods in kube-system that tenant pods may
    /// ask; empty: every pod of kube-system.
    #[arg(long, env = "NEURALLOG_DNS_POD_SELECTOR", default_value = "k8s-app=kube-dns", value_parser = crate::validation::parse_match_labels)]
    dns_pod_selector: BTreeMap<String, String>,
    /// Namespaces of ingress controllers, admitted to the server port (3030) of every
    /// tenant with network policies on (policy allow-ingress-controller). Comma-separated;
    /// an empty value admits none.
    #[arg(
        long,
        env = "NEURALLOG_INGRESS_CONTROLLER_NAMESPACES",
        value_delimiter = ',',
        default_value = "ingress-nginx,nginx-ingress,traefik,haproxy-controller,kong,projectcontour,istio-ingress",
        value_parser = ingress_controller_namespace
    )]
    ingress_controller_namespaces: Vec<String>,
    /// Cluster DNS domain.
    #[arg(
        long,
        env = "NEURALLOG_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// Address of /metrics, /healthz, /readyz and the journal API.
    #[arg(long, env = "NEURALLOG_METRICS_ADDR", default_value = "127.0.0.1:8080")]
    metrics_addr: SocketAddr,
    /// Serve /metrics and the journal API over TLS, only to callers whose bearer token the
    /// API server authenticates (TokenReview) and allows `get` on the path as a
    /// non-resource URL (SubjectAccessReview). auto: on unless --metrics-addr is a
    /// loopback address; false is refused beyond loopback. /healthz and /readyz stay open.
    #[arg(
        long,
        env = "NEURALLOG_SECURE_ENDPOINTS",
        value_enum,
        default_value = "auto"
    )]
    secure_endpoints: SecureEndpoints,
    /// PEM certificate (chain) of the secure endpoints, read again when it changes. Unset:
    /// a self-signed certificate made at start.
    #[arg(long, env = "NEURALLOG_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "NEURALLOG_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Tenants reconciled at once.
    #[arg(long, env = "NEURALLOG_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Journal API requests served at once (on threads of their own, never the
    /// reconciler's); more are answered 503 with Retry-After.
    #[arg(
        long,
        env = "NEURALLOG_JOURNAL_API_MAX_REQUESTS",
        default_value_t = journal_api::DEFAULT_MAX_REQUESTS,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    journal_api_max_requests: u16,
    /// Seconds a tenant may wait for the cluster (pods scheduled, pulled, started, ready)
    /// in one phase before it is journaled as Stalled. A write the API server refuses
    /// stalls it at once.
    #[arg(
        long,
        env = "NEURALLOG_PROGRESS_DEADLINE_SECONDS",
        default_value_t = 600
    )]
    progress_deadline_seconds: u64,
    /// Only reconcile Tenants matching this label selector (shards tenants across
    /// operators, each with its own journal).
    #[arg(long, env = "NEURALLOG_TENANT_SELECTOR")]
    tenant_selector: Option<String>,
    /// Log format.
    #[arg(long, env = "NEURALLOG_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    leader_election: LeaderElectionArgs,
}

#[derive(clap::Args)]
pub struct LeaderElectionArgs {
    /// Run the controller only while holding the leader Lease, so that one replica is
    /// active at a time. Others wait, not ready, and take over when it expires.
    #[arg(
        long = "leader-election",
        env = "NEURALLOG_LEADER_ELECTION",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    enabled: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "NEURALLOG_LEASE_NAME",
        default_value = "neurallog-operator"
    )]
    lease_name: String,
    /// Namespace of the leader Lease.
    #[arg(
        long,
        env = "NEURALLOG_LEASE_NAMESPACE",
        default_value = "neurallog-system"
    )]
    lease_namespace: String,
    /// How long the lease stays valid after its holder's last renewal.
    #[arg(long, env = "NEURALLOG_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u32,
    /// How long the leader keeps failing to renew before it stops leading (and exits).
    /// Below the lease duration.
    #[arg(
        long,
        env = "NEURALLOG_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10.0
    )]
    lease_renew_deadline_seconds: f64,
    /// How often candidates try to acquire the lease and the leader renews it. Below the
    /// renew deadline.
    #[arg(
        long,
        env = "NEURALLOG_LEASE_RETRY_PERIOD_SECONDS",
        default_value_t = 2.0
    )]
    lease_retry_period_seconds: f64,
    /// This replica's name in the lease; unique per replica. Default: $POD_NAME, else
    /// hostname-pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

impl LeaderElectionArgs {
    /// The validated lease settings, or `None` when leader election is off.
    fn lease_config(&self) -> anyhow::Result<Option<LeaseConfig>> {
        if !self.enabled {
            return Ok(None);
        }
        let seconds = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| anyhow::anyhow!("--{name} must be a non-negative number of seconds"))
        };
        let config = LeaseConfig {
            name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity: self
                .identity
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(leader::default_identity),
            lease_duration: Duration::from_secs(self.lease_duration_seconds.into()),
            renew_deadline: seconds(
                "lease-renew-deadline-seconds",
                self.lease_renew_deadline_seconds,
            )?,
            retry_period: seconds(
                "lease-retry-period-seconds",
                self.lease_retry_period_seconds,
            )?,
            journal_url: None,
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SecureEndpoints {
    Auto,
    #[value(name = "true")]
    On,
    #[value(name = "false")]
    Off,
}

/// Whether the endpoints at `addr` are secure (see `--secure-endpoints`).
fn endpoints_secure(mode: SecureEndpoints, addr: SocketAddr) -> anyhow::Result<bool> {
    let loopback = addr.ip().is_loopback();
    match mode {
        SecureEndpoints::Auto => Ok(!loopback),
        SecureEndpoints::On => Ok(true),
        SecureEndpoints::Off if loopback => Ok(false),
        SecureEndpoints::Off => anyhow::bail!(
            "--secure-endpoints=false is only for a loopback --metrics-addr: {addr} would serve the journal and metrics to anyone who reaches it"
        ),
    }
}

/// TLS and access review of the endpoints, when secure.
struct SecureSetup {
    tls: Arc<rustls::ServerConfig>,
    access: http::access::AccessReviewer,
    reloader: Option<http::tls::Reloader>,
}

fn secure_setup(args: &RunArgs, client: &kube::Client) -> anyhow::Result<Option<SecureSetup>> {
    if !endpoints_secure(args.secure_endpoints, args.metrics_addr)? {
        return Ok(None);
    }
    if args.journal_follow {
        anyhow::bail!(
            "--journal-follow reads the leader's journal API over plain HTTP without credentials: with secure endpoints (--metrics-addr {}) it is not supported yet",
            args.metrics_addr
        );
    }
    let source = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => http::tls::CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => http::tls::CertSource::SelfSigned {
            names: self_signed_names(args.metrics_addr),
        },
    };
    let (tls, resolver) = http::tls::server_config(&source)?;
    let reloader = match source {
        http::tls::CertSource::Files { cert, key } => {
            Some(http::tls::Reloader::new(cert, key, resolver))
        }
        http::tls::CertSource::SelfSigned { .. } => None,
    };
    let access = http::access::AccessReviewer::new(client.clone(), Default::default());
    Ok(Some(SecureSetup {
        tls,
        access,
        reloader,
    }))
}

/// What a self-signed certificate names: this host as the pod and its clients know it.
fn self_signed_names(addr: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for name in [std::env::var("HOSTNAME").ok(), std::env::var("POD_IP").ok()]
        .into_iter()
        .flatten()
        .chain((!addr.ip().is_unspecified()).then(|| addr.ip().to_string()))
    {
        let name = name.trim().to_string();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) async fn kube_config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    })
}

pub(crate) async fn kube_client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    super::api_client::client(kube_config(kubeconfig).await?)
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let secure_endpoints = endpoints_secure(args.secure_endpoints, args.metrics_addr)?;
    let lease = args
        .leader_election
        .lease_config()?
        .map(|lease| LeaseConfig {
            journal_url: journal_advertise_url(
                args.journal_advertise_url.as_deref(),
                std::env::var("POD_IP").ok().as_deref(),
                args.metrics_addr,
            )
            .map(|url| secure_scheme(url, secure_endpoints)),
            ..lease
        });
    let client = kube_client(args.kubeconfig.as_ref()).await?;
    let secure = secure_setup(&args, &client)?;
    let auth = auth_client(&args)?;
    let mut metrics = Metrics::default();
    let leading = register_leader_gauge(&mut metrics);
    let follow_metrics = FollowMetrics::register(&mut metrics.registry);
    let options = journal::Options {
        cache_bytes: args.journal_cache_mb << 20,
        ..Default::default()
    };
    let metrics = Arc::new(metrics);
    let ready = Arc::new(AtomicBool::new(false));
    let stop = stop_on_signal();
    let shared_journal = SharedJournal::default();
    let http_state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        journal: shared_journal.clone(),
        journal_limits: ApiLimits {
            max_requests: args.journal_api_max_requests.into(),
            ..ApiLimits::default()
        },
    };
    let (tls, access) = match secure {
        Some(SecureSetup {
            tls,
            access,
            reloader,
        }) => {
            if let Some(reloader) = reloader {
                tokio::spawn(reloader.run());
            }
            tracing::info!(addr = %args.metrics_addr, "serving /metrics and the journal API over TLS to callers the API server authorizes");
            (Some(tls), Some(access))
        }
        None => {
            tracing::info!(addr = %args.metrics_addr, "serving /metrics and the journal API over plain HTTP without authentication (loopback)");
            (None, None)
        }
    };
    let server = tokio::spawn(http::serve(
        args.metrics_addr,
        http::router(http_state, access),
        tls,
        stopped(stop.clone()),
    ));
    let leadership = match lease {
        None => None,
        Some(lease) => {
            let (leader_journal_tx, leader_journal) = watch::channel(None);
            let follower = if args.journal_follow {
                start_following(&args, options, leader_journal, follow_metrics).await
            } else {
                None
            };
            let acquire = leader::acquire(client.clone(), lease, leader_journal_tx);
            let acquired = until_stopped(acquire, stop.clone()).await;
            if let Some(follower) = follower {
                follower.stop().await;
            }
            let Some(leadership) = acquired else {
                server.await??;
                tracing::info!("stopped before leading; bye");
                return Ok(());
            };
            Some(leadership)
        }
    };
    leading.set(1);
    // Opened (and checked) here by the leader; a waiting replica opens it only to follow
    // the leader's journal, and has closed it again.
    let statuses = status_positions(&client, args.tenant_selector.as_deref()).await?;
    let journal = open_journal(&args.journal, options, statuses).await?;
    let recovery = journal.with(|j| j.recovery())?;
    let retention = journal::Retention {
        keep_records: args.journal_keep_records,
        keep_for: chrono::Duration::days(args.journal_keep_days.into()),
        archive: args.journal_archive_dir.clone(),
    };
    let upkeep = tokio::spawn(journal_upkeep::run(
        journal.clone(),
        retention,
        metrics.clone(),
    ));
    let _ = shared_journal.set(journal.clone());
    let settings = render_settings(&args);
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "neurallog-operator".into());
    let ctx_journal = journal.clone();
    let ctx_client = client.clone();
    let progress_deadline_seconds = args.progress_deadline_seconds.max(1);
    let tenant_selector = args.tenant_selector.clone();
    let controller = async move {
        controller::run(
            client,
            move |stores| {
                Context::new(
                    ctx_client,
                    ctx_journal,
                    auth,
                    settings,
                    metrics,
                    stores,
                    instance,
                )
                .with_recovery(recovery)
                .with_progress_deadline(Duration::from_secs(progress_deadline_seconds))
            },
            args.concurrency,
            tenant_selector.as_deref(),
            ready,
            stopped(stop),
        )
        .await
    };
    run_while_leading(on_the_workers(controller), leadership, &journal).await;
    upkeep.abort();
    leading.set(0);
    journal.flush()?;
    server.await??;
    tracing::info!("journal flushed; bye");
    Ok(())
}

fn auth_client(args: &RunArgs) -> anyhow::Result<AuthClient> {
    let mut config = AuthConfig::new(&args.auth_url, args.auth_admin_user_id.clone())?
        .with_timeout(Duration::from_secs_f64(args.auth_timeout_seconds.max(0.1)));
    if let Some(file) = &args.auth_token_file {
        config = config.with_token_file(file)?;
    }
    Ok(AuthClient::new(config)?)
}

fn render_settings(args: &RunArgs) -> RenderSettings {
    RenderSettings {
        tenant_auth_url: args.tenant_auth_url.clone(),
        auth_namespace: args.auth_namespace.clone(),
        auth_port: args.auth_port,
        auth_pod_labels: args.auth_pod_selector.clone(),
        dns_pod_labels: args.dns_pod_selector.clone(),
        cluster_domain: args.cluster_domain.clone(),
        ingress_controller_namespaces: args
            .ingress_controller_namespaces
            .iter()
            .filter(|ns| !ns.is_empty())
            .cloned()
            .collect(),
    }
}

/// A namespace name (a DNS-1123 label), or empty (an empty flag value admits none).
fn ingress_controller_namespace(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() || crate::validation::is_dns_label(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a namespace name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
        ))
    }
}

/// Where other replicas reach this replica's journal API (see `--journal-advertise-url`).
fn journal_advertise_url(
    explicit: Option<&str>,
    pod_ip: Option<&str>,
    metrics_addr: SocketAddr,
) -> Option<String> {
    if let Some(url) = explicit.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let pod_ip = pod_ip.and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok());
    match pod_ip {
        Some(ip) => Some(format!(
            "http://{}",
            SocketAddr::new(ip, metrics_addr.port())
        )),
        None if metrics_addr.ip().is_unspecified() => None,
        None => Some(format!("http://{metrics_addr}")),
    }
}

/// The advertised URL over https when the endpoints are secure (unless given explicitly
/// with a scheme of its own).
fn secure_scheme(url: String, secure: bool) -> String {
    match url.strip_prefix("http://") {
        Some(rest) if secure => format!("https://{rest}"),
        _ => url,
    }
}

/// Opens this replica's journal and follows the leader's into it, until stopped. `None`
/// (logged) when the journal cannot be opened: the start-up check deals with it on
/// takeover.
async fn start_following(
    args: &RunArgs,
    options: journal::Options,
    leader_journal: watch::Receiver<Option<String>>,
    metrics: FollowMetrics,
) -> Option<Follower> {
    let path = args.journal.clone();
    let opened = tokio::task::spawn_blocking(move || journal::Journal::open_with(&path, options))
        .await
        .map_err(|e| e.to_string())
        .and_then(|opened| opened.map_err(|e| e.to_string()));
    match opened {
        Ok(journal) => Some(Follower::start(
            Arc::new(journal),
            leader_journal,
            Duration::from_millis(args.journal_follow_interval_ms),
            metrics,
        )),
        Err(error) => {
            tracing::error!(%error, "cannot open the journal to follow the leader's: not following");
            None
        }
    }
}

/// Opens the journal, replacing it if it is damaged (see [`journal_recovery`], the
/// start-up check).
async fn open_journal(
    path: &Path,
    options: journal::Options,
    statuses: Vec<StatusPosition>,
) -> anyhow::Result<Arc<JournalSlot>> {
    let path = path.to_path_buf();
    let journal = tokio::task::spawn_blocking(move || {
        journal_recovery::open_or_replace_with(&path, options, &statuses, Utc::now())
    })
    .await??;
    Ok(Arc::new(JournalSlot::new(journal)))
}

/// Where each served Tenant's status says its journal chain ends: the witness of a
/// journal that lost its tail.
async fn status_positions(
    client: &kube::Client,
    selector: Option<&str>,
) -> anyhow::Result<Vec<StatusPosition>> {
    let mut params = kube::api::ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let tenants = kube::Api::<Tenant>::all(client.clone())
        .list(&params)
        .await
        .context("listing Tenants to check the journal against their status")?;
    Ok(tenants
        .items
        .into_iter()
        .filter_map(|t| {
            let position = t.status.as_ref()?.journal.clone()?;
            Some(StatusPosition {
                tenant: t.name_any(),
                uid: t.uid()?,
                sequence: position.sequence,
                hash: position.hash,
                chain: position.chain,
            })
        })
        .collect())
}

/// The stop signal, sent on SIGTERM or Ctrl-C.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight reconciles");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Resolves when the stop signal is sent.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `work`'s output, or `None` when the stop signal comes first.
async fn until_stopped<T>(work: impl Future<Output = T>, stop: watch::Receiver<bool>) -> Option<T> {
    tokio::select! {
        value = work => Some(value),
        () = stopped(stop) => None,
    }
}

fn register_leader_gauge(metrics: &mut Metrics) -> Gauge {
    let leading = Gauge::default();
    metrics.registry.register(
        "neurallog_leader",
        "1 while this process runs the controller (holds the leader lease, or leader election is off)",
        leading.clone(),
    );
    leading
}

/// Runs `controller` as a task of the runtime's worker threads. The future `main` blocks on
/// is polled on the main thread instead: the controller's watch streams, scheduler and
/// applier would run there while their HTTP connections and reconciles run on the workers,
/// and every watch event and every reconcile would wake a thread to cross over. A panic
/// in the controller goes on as a panic, as it did when `main` polled it.
async fn on_the_workers(controller: impl Future<Output = ()> + Send + 'static) {
    if let Err(stopped) = tokio::spawn(controller).await {
        if stopped.is_panic() {
            std::panic::resume_unwind(stopped.into_panic());
        }
        tracing::error!(error = %stopped, "the controller task was cancelled");
    }
}

/// Runs the controller to its end, then steps down (releasing the lease). A leader that
/// loses the lease exits at once: another replica may already be reconciling, and the
/// restart makes this one a candidate again.
async fn run_while_leading(
    controller: impl Future<Output = ()>,
    leadership: Option<Leadership>,
    journal: &JournalSlot,
) {
    let Some(mut leadership) = leadership else {
        controller.await;
        return;
    };
    tokio::pin!(controller);
    tokio::select! {
        () = &mut controller => leadership.step_down().await,
        lost = leadership.lost() => {
            tracing::error!(reason = %lost, "lost the leader lease: exiting without finishing in-flight reconciles");
            if let Err(e) = journal.flush() {
                tracing::error!(error = %e, "cannot flush the journal");
            }
            std::process::exit(1);
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Election {
        #[command(flatten)]
        args: LeaderElectionArgs,
    }

    fn lease_config(args: &[&str]) -> anyhow::Result<Option<LeaseConfig>> {
        let parsed = Election::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        parsed.args.lease_config()
    }

    #[test]
    fn the_advertised_journal_url_is_explicit_or_the_pod_ip_or_a_specific_listen_address() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
        assert_eq!(
            journal_advertise_url(Some("http://op-0.ops:8080/"), Some("10.0.0.7"), any).as_deref(),
            Some("http://op-0.ops:8080")
        );
        assert_eq!(
            journal_advertise_url(None, Some("10.0.0.7"), any).as_deref(),
            Some("http://10.0.0.7:8080")
        );
        assert_eq!(
            journal_advertise_url(None, Some("fd00::7"), any).as_deref(),
            Some("http://[fd00::7]:8080")
        );
        assert_eq!(
            journal_advertise_url(None, None, local).as_deref(),
            Some("http://127.0.0.1:9090")
        );
        assert_eq!(journal_advertise_url(None, Some("not-an-ip"), any), None);
        assert_eq!(journal_advertise_url(Some(" "), None, any), None);
    }

    #[test]
    fn endpoints_are_secure_beyond_loopback_and_plain_only_on_it() {
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let local6: SocketAddr = "[::1]:8080".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let pod: SocketAddr = "10.0.0.7:8080".parse().expect("addr");
        use SecureEndpoints::{Auto, Off, On};
        assert!(!endpoints_secure(Auto, local).expect("valid"));
        assert!(!endpoints_secure(Auto, local6).expect("valid"));
        assert!(endpoints_secure(Auto, any).expect("valid"));
        assert!(endpoints_secure(Auto, pod).expect("valid"));
        assert!(endpoints_secure(On, local).expect("valid"));
        assert!(!endpoints_secure(Off, local).expect("valid"));
        let refused = endpoints_secure(Off, any).expect_err("refused");
        assert!(
            refused.to_string().contains("only for a loopback"),
            "{refused}"
        );
        let parsed = Run::try_parse_from(["test", "--secure-endpoints", "true"]).expect("valid");
        assert_eq!(parsed.args.secure_endpoints, On);
        assert!(
            Run::try_parse_from(["test", "--tls-cert-file", "c.pem"]).is_err(),
            "a key too"
        );
    }

    #[test]
    fn the_advertised_url_is_https_when_secure() {
        assert_eq!(
            secure_scheme("http://10.0.0.7:8080".into(), true),
            "https://10.0.0.7:8080"
        );
        assert_eq!(
            secure_scheme("http://10.0.0.7:8080".into(), false),
            "http://10.0.0.7:8080"
        );
    }

    #[test]
    fn leader_election_is_off_unless_asked_for() {
        assert!(lease_config(&[]).expect("valid").is_none());
    }

    #[test]
    fn leader_election_defaults_to_the_deployed_lease_and_client_go_timing() {
        let config = lease_config(&["--leader-election", "--identity", "pod-1"])
            .expect("valid")
            .expect("enabled");
        assert_eq!(
            (
                config.name.as_str(),
                config.namespace.as_str(),
                config.identity.as_str()
            ),
            ("neurallog-operator", "neurallog-system", "pod-1")
        );
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_deadline, Duration::from_secs(10));
        assert_eq!(config.retry_period, Duration::from_secs(2));
    }

    #[derive(Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn ingress_namespaces(args: &[&str]) -> Result<Vec<String>, clap::Error> {
        let parsed = Run::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        Ok(render_settings(&parsed.args).ingress_controller_namespaces)
    }

    #[test]
    fn ingress_controller_namespaces_default_to_the_common_controllers() {
        assert_eq!(
            ingress_namespaces(&[]).expect("valid"),
            crate::render::DEFAULT_INGRESS_CONTROLLER_NAMESPACES.map(String::from)
        );
        assert_eq!(
            ingress_namespaces(&["--ingress-controller-namespaces", "edge, gateway-system"])
                .expect("valid"),
            ["edge", "gateway-system"]
        );
        assert!(
            ingress_namespaces(&["--ingress-controller-namespaces", ""])
                .expect("valid")
                .is_empty(),
            "an empty value admits no ingress controller"
        );
    }

    fn settings(args: &[&str]) -> Result<RenderSettings, clap::Error> {
        let parsed = Run::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        Ok(render_settings(&parsed.args))
    }

    #[test]
    fn dns_and_auth_pod_selectors_default_to_kube_dns_and_every_auth_pod() {
        let defaults = settings(&[]).expect("valid");
        assert_eq!(
            defaults.dns_pod_labels,
            BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])
        );
        assert!(defaults.auth_pod_labels.is_empty());
        let chosen = settings(&[
            "--auth-pod-selector",
            "app=auth, tier=api",
            "--dns-pod-selector",
            "",
        ])
        .expect("valid");
        assert_eq!(
            chosen.auth_pod_labels,
            BTreeMap::from([
                ("app".to_string(), "auth".to_string()),
                ("tier".to_string(), "api".to_string())
            ])
        );
        assert!(chosen.dns_pod_labels.is_empty());
        let refused = settings(&["--dns-pod-selector", "k8s-app"]).expect_err("no value");
        assert!(
            refused.to_string().contains("\"k8s-app\" is not key=value"),
            "{refused}"
        );
        let refused = settings(&["--auth-pod-selector", "app=bad value"]).expect_err("a space");
        assert!(
            refused.to_string().contains("label value \"bad value\""),
            "{refused}"
        );
    }

    #[test]
    fn an_ingress_controller_namespace_that_is_no_namespace_name_is_refused() {
        let error = ingress_namespaces(&["--ingress-controller-namespaces", "ok,Bad_Name"])
            .expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("\"Bad_Name\" is not a namespace name"),
            "{error}"
        );
    }

    #[test]
    fn unsafe_lease_timing_is_refused() {
        let error = lease_config(&[
            "--leader-election",
            "--identity",
            "pod-1",
            "--lease-duration-seconds",
            "5",
        ])
        .expect_err("a renew deadline of 10s with a 5s lease");
        assert!(error.to_string().contains("renew deadline"));
        assert!(lease_config(&["--leader-election", "--lease-retry-period-seconds=-1"]).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_controller_runs_on_a_worker_not_on_the_thread_that_awaits_it() {
        let awaiting = std::thread::current().id();
        let (ran_on, seen) = tokio::sync::oneshot::channel();
        on_the_workers(async move {
            let _ = ran_on.send(std::thread::current().id());
        })
        .await;
        assert_ne!(seen.await.unwrap(), awaiting);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "a bug in a reconcile")]
    async fn a_panic_in_the_controller_is_not_swallowed() {
        on_the_workers(async { panic!("a bug in a reconcile") }).await;
    }
}
