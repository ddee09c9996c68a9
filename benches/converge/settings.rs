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
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cluster_dir = path_var("CONVERGE_CLUSTER_DIR", repo.join("target/bench-cluster"));
        Ok(Settings {
            tenants: number_var("CONVERGE_TENANTS", 1000)?,
            concurrency: number_var("CONVERGE_CONCURRENCY", 16)?.max(1),
            kubeconfig: path_var("CONVERGE_KUBECONFIG", cluster_dir.join("kubeconfig")),
            cluster_dir,
            operator_bin: path_var(
                "CONVERGE_OPERATOR_BIN",
                repo.join("target/release/neurallog-operator"),
            ),
            work_dir: path_var("CONVERGE_WORK_DIR", repo.join("target/bench")),
            timeout: Duration::from_secs(number_var("CONVERGE_TIMEOUT_SECONDS", 1800)? as u64),
            apiserver_profiles: number_var("CONVERGE_APISERVER_PROFILES", 0)? != 0,
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
