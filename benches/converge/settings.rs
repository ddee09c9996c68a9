//! What one benchmark run uses, read from the environment (`cargo bench` passes its own
//! `--bench` argument, so flags are `scripts/bench.sh`'s business).

use std::path::PathBuf;
use std::time::Duration;

pub struct Settings {
    /// Tenants per side (operator run and baseline).
    pub tenants: usize,
    /// Reconcile concurrency of the operator, and tenants provisioned at once by the
    /// baseline; also how many Tenant creates are in flight on either side.
    pub concurrency: usize,
    pub kubeconfig: PathBuf,
    /// The bench cluster's state directory (pid files of the control plane).
    pub cluster_dir: PathBuf,
    pub operator_bin: PathBuf,
    /// Journal, operator logs and results.
    pub work_dir: PathBuf,
    /// Limit of each wait (convergence, readiness, resync).
    pub timeout: Duration,
    /// CPU profiles of the API server during each side (`profile.rs`).
    pub apiserver_profiles: bool,
    /// Which sides this process converges.
    pub run: Run,
    /// `Run::Operator`: the baseline's figures, from a `Run::Baseline` on another cluster.
    pub baseline_json: PathBuf,
    /// `Run::Operator`: the mirrored baseline's figures (`Run::Mirrored`), if one was run.
    pub mirrored_json: Option<PathBuf>,
}

/// Which sides one process converges (`CONVERGE_RUN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// `both`: the baseline, then the operator on the same cluster, then the resync.
    Both,
    /// `baseline`: the baseline alone; its figures go to `baseline.json`.
    Baseline,
    /// `operator`: the operator and the resync, against the figures of a `baseline` run
    /// on a cluster of its own (`CONVERGE_BASELINE_JSON`).
    Operator,
    /// `mirrored`: the baseline that also writes what the operator must beyond the objects
    /// (`mirror`); its figures go to `mirrored.json`.
    Mirrored,
    /// `baseline-twice`: the control for `both`: the baseline twice on one cluster, the
    /// second after the first's tenants. Their ratio is what coming second costs.
    BaselineTwice,
}

impl Run {
    fn parse(value: &str) -> anyhow::Result<Self> {
        match value {
            "both" => Ok(Run::Both),
            "baseline" => Ok(Run::Baseline),
            "operator" => Ok(Run::Operator),
            "mirrored" => Ok(Run::Mirrored),
            "baseline-twice" => Ok(Run::BaselineTwice),
            other => anyhow::bail!(
                "CONVERGE_RUN={other} is none of both, baseline, operator, mirrored, baseline-twice"
            ),
        }
    }
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cluster_dir = path_var("CONVERGE_CLUSTER_DIR", repo.join("target/bench-cluster"));
        let work_dir = path_var("CONVERGE_WORK_DIR", repo.join("target/bench"));
        let run = match std::env::var("CONVERGE_RUN") {
            Ok(value) => Run::parse(&value)?,
            Err(_) => Run::Both,
        };
        Ok(Settings {
            tenants: number_var("CONVERGE_TENANTS", 1000)?,
            concurrency: number_var("CONVERGE_CONCURRENCY", 16)?.max(1),
            kubeconfig: path_var("CONVERGE_KUBECONFIG", cluster_dir.join("kubeconfig")),
            cluster_dir,
            operator_bin: path_var(
                "CONVERGE_OPERATOR_BIN",
                repo.join("target/release/neurallog-operator"),
            ),
            baseline_json: path_var("CONVERGE_BASELINE_JSON", work_dir.join("baseline.json")),
            mirrored_json: std::env::var_os("CONVERGE_MIRRORED_JSON").map(PathBuf::from),
            work_dir,
            timeout: Duration::from_secs(number_var("CONVERGE_TIMEOUT_SECONDS", 1800)? as u64),
            apiserver_profiles: number_var("CONVERGE_APISERVER_PROFILES", 0)? != 0,
            run,
        })
    }
}

fn path_var(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map_or(default, PathBuf::from)
}

fn number_var(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={value} is not a number")),
        Err(_) => Ok(default),
    }
}
