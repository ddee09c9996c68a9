//! Converge N tenants with the operator, and the same objects with a plain client, on the
//! bench control plane; then a no-op resync. Prints figures and writes them as JSON;
//! asserts nothing about speed. Run through `make bench` (scripts/bench.sh), which
//! starts the bench cluster and builds the release operator.
//!
//! | variable | default | meaning |
//! |----------|---------|---------|
//! | `CONVERGE_TENANTS` | 1000 | tenants per side |
//! | `CONVERGE_CONCURRENCY` | 16 | operator `--concurrency`; tenants the baseline provisions at once |
//! | `CONVERGE_KUBECONFIG` | `$CONVERGE_CLUSTER_DIR/kubeconfig` | the bench cluster |
//! | `CONVERGE_CLUSTER_DIR` | `target/bench-cluster` | its state (pid files for CPU accounting) |
//! | `CONVERGE_OPERATOR_BIN` | `target/release/neurallog-operator` | the operator |
//! | `CONVERGE_WORK_DIR` | `target/bench` | journal, operator logs, `results.json` |
//! | `CONVERGE_TIMEOUT_SECONDS` | 1800 | limit of each wait |
//! | `CONVERGE_APISERVER_PROFILES` | 0 | 1: CPU profiles of the API server during each side (`profile.rs`) |
//! | `CONVERGE_RUN` | `both` | the sides converged: `both`, `baseline`, `operator`, `mirrored` (to `$CONVERGE_WORK_DIR/mirrored.json`) or `baseline-twice` (`settings::Run`) |
//! | `CONVERGE_BASELINE_JSON` | `$CONVERGE_WORK_DIR/baseline.json` | `operator`: the figures of a `baseline` run |
//! | `CONVERGE_MIRRORED_JSON` | unset | `operator`: the figures of a `mirrored` run, reported beside |

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apiserver;
mod baseline;
mod cpu;
mod histogram;
mod mirror;
mod operator;
mod profile;
mod report;
mod settings;
mod tenants;
mod wait;

use apiserver::{Requests, Writes};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use neurallog_auth_stub::AuthStub;
use neurallog_operator::controller::observation::{deployment_state, statefulset_state};
use neurallog_operator::crd::{ServerScale, Tenant};
use operator::OperatorProcess;
use profile::Profiler;
use report::{Convergence, OperatorFigures, Results, Resync};
use settings::{Run, Settings};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OPERATOR_SIDE: &str = "operator";
const MIB: f64 = 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    prepare_work_dir(&settings)?;
    let client = client(&settings).await?;
    install_crd(&client, settings.timeout).await?;
    let n = settings.tenants;
    eprintln!(
        "bench: {n} tenants per side, concurrency {}",
        settings.concurrency
    );

    if settings.run == Run::Mirrored {
        let mirrored = converge_baseline(&client, &settings, &baseline::MIRRORED).await?;
        eprintln!(
            "bench: mirrored baseline converged in {:.1} s",
            mirrored.seconds
        );
        return write_side(&settings.work_dir.join("mirrored.json"), &mirrored);
    }
    let baseline = match settings.run {
        Run::Operator => read_side(&settings.baseline_json)?,
        _ => converge_baseline(&client, &settings, &baseline::FIRST).await?,
    };
    eprintln!("bench: baseline converged in {:.1} s", baseline.seconds);
    match settings.run {
        Run::Baseline => return write_side(&settings.baseline_json, &baseline),
        Run::BaselineTwice => return baseline_twice(&client, &settings, baseline).await,
        _ => {}
    }
    let mirrored = match &settings.mirrored_json {
        Some(path) => Some(read_side(path)?),
        None => None,
    };

    let auth = AuthStub::start("127.0.0.1:0".parse()?, None).await?;
    let mut op = OperatorProcess::start(&settings, "operator-converge", &auth.url(), &selector())?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let (operator, operator_process) = converge_operator(&client, &settings, &op).await?;
    eprintln!("bench: operator converged in {:.1} s", operator.seconds);

    op.stop(Duration::from_secs(120)).await?;
    let resync = resync(&client, &settings, &auth.url()).await?;
    eprintln!(
        "bench: resync reconciled {} tenants in {:.1} s",
        resync.reconciles, resync.seconds
    );

    let results = Results {
        date: chrono::Utc::now().to_rfc3339(),
        tenants: n,
        concurrency: settings.concurrency,
        machine_cpus: std::thread::available_parallelism().map_or(0, |c| c.get()),
        ratio_operator_to_baseline: operator.seconds / baseline.seconds,
        ratio_mirrored_to_baseline: mirrored.as_ref().map(|m| m.seconds / baseline.seconds),
        ratio_operator_to_mirrored: mirrored.as_ref().map(|m| operator.seconds / m.seconds),
        mirrored,
        baseline,
        operator,
        operator_process,
        resync,
    };
    let path = settings.work_dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("{}", results.markdown());
    println!("results: {}", path.display());
    Ok(())
}

/// The figures of a side run alone, kept for the `operator` run on a fresh cluster.
fn write_side(path: &std::path::Path, side: &Convergence) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(side)?)?;
    println!("figures: {}", path.display());
    Ok(())
}

fn read_side(path: &std::path::Path) -> anyhow::Result<Convergence> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "CONVERGE_RUN=operator needs the figures of a run of that side at {}: {e}",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// The control of a `both` run: the same baseline again, after the first's tenants.
async fn baseline_twice(
    client: &Client,
    settings: &Settings,
    first: Convergence,
) -> anyhow::Result<()> {
    let again = converge_baseline(client, settings, &baseline::AGAIN).await?;
    eprintln!(
        "bench: the baseline again converged in {:.1} s",
        again.seconds
    );
    let control = report::Control::of(first, again);
    let path = settings.work_dir.join("baseline-twice.json");
    std::fs::write(&path, serde_json::to_string_pretty(&control)?)?;
    println!("{}", control.markdown(settings.tenants));
    println!("results: {}", path.display());
    Ok(())
}

fn selector() -> String {
    tenants::selector(OPERATOR_SIDE)
}

fn prepare_work_dir(settings: &Settings) -> anyhow::Result<()> {
    let journal = settings.work_dir.join("journal");
    if journal.exists() {
        std::fs::remove_dir_all(&journal)?;
    }
    let profiles = settings.work_dir.join("apiserver-profiles");
    if profiles.exists() {
        std::fs::remove_dir_all(&profiles)?;
    }
    std::fs::create_dir_all(&settings.work_dir)?;
    Ok(())
}

async fn client(settings: &Settings) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&settings.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn install_crd(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = neurallog_operator::crd::crd();
    let name = "tenants.neurallog.io";
    api.patch(
        name,
        &PatchParams::apply("neurallog-bench").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let deadline = Instant::now() + timeout;
    loop {
        let established = api.get(name).await?.status.and_then(|s| s.conditions);
        if established
            .iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the CRD was not established");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything measured around one convergence.
struct Window {
    requests: Requests,
    cpu: cpu::Sample,
    started: Instant,
}

impl Window {
    async fn open(client: &Client, processes: &cpu::Processes) -> anyhow::Result<Window> {
        Ok(Window {
            requests: Requests::read(client).await?,
            cpu: processes.sample(),
            started: Instant::now(),
        })
    }

    async fn close(
        self,
        client: &Client,
        processes: &cpu::Processes,
        done: Instant,
        client_writes: u64,
        tenants: usize,
    ) -> anyhow::Result<Convergence> {
        let requests = self.requests.delta(&Requests::read(client).await?);
        let (writes, reads) = (requests.writes, requests.reads);
        let per_tenant = |count: u64| count as f64 / tenants.max(1) as f64;
        Ok(Convergence {
            seconds: (done - self.started).as_secs_f64(),
            client_writes,
            client_writes_per_tenant: per_tenant(client_writes),
            apiserver_writes_per_tenant: per_tenant(writes.total()),
            apiserver_tenant_object_writes_per_tenant: per_tenant(
                writes.on_tenant_objects().total(),
            ),
            apiserver_writes_by_verb: writes.by_verb(),
            apiserver_conflicts: writes.refused_with("409"),
            apiserver_writes: writes,
            apiserver_reads_per_tenant: per_tenant(reads.total()),
            apiserver_reads_by_verb: reads.by_verb(),
            apiserver_reads: reads,
            cpu_seconds: self.cpu.until(&processes.sample()),
        })
    }
}

async fn converge_baseline(
    client: &Client,
    settings: &Settings,
    run: &baseline::Run,
) -> anyhow::Result<Convergence> {
    let names = tenants::names(run.prefix, settings.tenants);
    let spec = tenants::template(run.prefix, run.side).spec;
    let (redis_replicas, server_replicas) = (spec.redis.replicas, spec.server.replicas);
    let redis_ready = tokio::spawn(wait::until_all(
        format!("{} Redis StatefulSets ready", run.side),
        Api::<StatefulSet>::all(client.clone()),
        run.workload_selector(),
        settings.tenants,
        settings.timeout,
        move |s| statefulset_state(Some(s), redis_replicas, true).is_ready(),
    ));
    let server_ready = tokio::spawn(wait::until_all(
        format!("{} server Deployments ready", run.side),
        Api::<Deployment>::all(client.clone()),
        run.workload_selector(),
        settings.tenants,
        settings.timeout,
        move |d| deployment_state(Some(d), ServerScale::Fixed(server_replicas), true).is_ready(),
    ));
    let processes = cpu::Processes::of_cluster(&settings.cluster_dir);
    let window = Window::open(client, &processes).await?;
    let profiler = Profiler::start(
        settings.apiserver_profiles,
        client,
        &settings.work_dir,
        run.side,
    );
    let writes = baseline::provision_all(client, run, &names, settings.concurrency).await?;
    let done = redis_ready.await??.max(server_ready.await??);
    profiler.stop();
    window
        .close(client, &processes, done, writes, settings.tenants)
        .await
}

async fn converge_operator(
    client: &Client,
    settings: &Settings,
    op: &OperatorProcess,
) -> anyhow::Result<(Convergence, OperatorFigures)> {
    let names = tenants::names("op", settings.tenants);
    let running = tokio::spawn(wait::until_all(
        "operator tenants Running".into(),
        Api::<Tenant>::all(client.clone()),
        selector(),
        settings.tenants,
        settings.timeout,
        |t: &Tenant| t.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
    ));
    let processes = cpu::Processes::of_cluster(&settings.cluster_dir).with("operator", op.pid());
    let window = Window::open(client, &processes).await?;
    let profiler = Profiler::start(
        settings.apiserver_profiles,
        client,
        &settings.work_dir,
        OPERATOR_SIDE,
    );
    let creates = Arc::new(AtomicU64::new(0));
    tenants::create_all(
        client,
        &names,
        OPERATOR_SIDE,
        settings.concurrency,
        creates.clone(),
    )
    .await?;
    let done = running.await??;
    profiler.stop();
    let metrics = op.metrics().await?;
    let by_operator = op.sum("neurallog_api_write_requests_total").await? as u64;
    let convergence = window
        .close(
            client,
            &processes,
            done,
            by_operator + creates.load(Ordering::Relaxed),
            settings.tenants,
        )
        .await?;
    let reconcile =
        histogram::summarize(&metrics, "neurallog_tenant_reconciliation_duration_seconds");
    let failed_passes = op.sum("neurallog_reconcile_errors_total").await? as u64;
    let cpu_seconds = convergence
        .cpu_seconds
        .by_process
        .get("operator")
        .copied()
        .unwrap_or(0.0);
    let per_tenant = |x: f64| x / settings.tenants.max(1) as f64;
    let figures = OperatorFigures {
        peak_rss_mib: op.peak_rss_bytes()? as f64 / MIB,
        writes_by_operator: by_operator,
        passes_per_tenant: per_tenant((reconcile.count + failed_passes) as f64),
        failed_passes,
        cpu_seconds,
        cpu_seconds_per_1000_tenants: per_tenant(cpu_seconds) * 1000.0,
        reconcile,
        journal_append: histogram::summarize(&metrics, "neurallog_journal_append_duration_seconds"),
        journal_storage: histogram::summarize(
            &metrics,
            "neurallog_journal_storage_duration_seconds",
        ),
    };
    Ok((convergence, figures))
}

/// Restarts the operator on the same journal: a full resync of N Running tenants.
async fn resync(client: &Client, settings: &Settings, auth_url: &str) -> anyhow::Result<Resync> {
    let before = wait_until_quiet(client, Duration::from_secs(120)).await?;
    let started = Instant::now();
    let mut op = OperatorProcess::start(settings, "operator-resync", auth_url, &selector())?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let deadline = Instant::now() + settings.timeout;
    let reconciles = loop {
        let done = op
            .sum("neurallog_tenant_reconciliation_duration_seconds_count")
            .await?;
        if done >= settings.tenants as f64 {
            break done as u64;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the restarted operator reconciled only {done} tenants"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let writes = before.delta(&Writes::read(client).await?);
    let resync = Resync {
        seconds,
        reconciles,
        operator_write_counter: op.sum("neurallog_api_write_requests_total").await? as u64,
        apiserver_tenant_object_writes: writes.on_tenant_objects(),
        apiserver_all_writes_by_verb: writes.by_verb(),
        peak_rss_mib: op.peak_rss_bytes()? as f64 / MIB,
    };
    op.stop(Duration::from_secs(120)).await?;
    Ok(resync)
}

/// Waits until nobody has written a tenant object or an Event for two seconds (the
/// controllers' Events of the converged run die down), so that the resync's counts are
/// the restarted operator's alone. Returns the counters at that point.
async fn wait_until_quiet(client: &Client, timeout: Duration) -> anyhow::Result<Writes> {
    const QUIET: Duration = Duration::from_secs(2);
    let deadline = Instant::now() + timeout;
    let mut last = Writes::read(client).await?;
    loop {
        tokio::time::sleep(QUIET).await;
        let now = Writes::read(client).await?;
        let delta = last.delta(&now);
        if delta.is_quiet() {
            return Ok(now);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cluster still writes tenant objects after {timeout:?}: {:?}",
            delta.on_tenant_objects().0
        );
        last = now;
    }
}
