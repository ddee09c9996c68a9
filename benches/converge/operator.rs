//! The release operator as a child process: start, readiness, /metrics, peak memory,
//! graceful stop.

use crate::settings::Settings;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct OperatorProcess {
    child: Child,
    metrics_url: String,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts `neurallog-operator run` on `journal`, reconciling the Tenants that match
    /// `selector`. `name` tells apart the logs of successive processes.
    pub fn start(
        settings: &Settings,
        name: &str,
        auth_url: &str,
        selector: &str,
    ) -> anyhow::Result<Self> {
        let log = settings.work_dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log)?;
        let port = free_port()?;
        let child = Command::new(&settings.operator_bin)
            .arg("run")
            .arg("--kubeconfig")
            .arg(&settings.kubeconfig)
            .arg("--journal")
            .arg(settings.work_dir.join("journal"))
            .args(["--auth-url", auth_url])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--concurrency", &settings.concurrency.to_string()])
            .args(["--tenant-selector", selector])
            .env_remove("POD_NAME")
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start {}: {e}", settings.operator_bin.display())
            })?;
        Ok(OperatorProcess {
            child,
            metrics_url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until every watch cache has synced (/readyz answers 200).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.metrics_url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the operator exited ({status}); log: {}",
                    self.log.display()
                );
            }
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("the operator was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = reqwest::get(format!("{}/metrics", self.metrics_url)).await?;
        Ok(response.error_for_status()?.text().await?)
    }

    /// Sum of the samples of a counter or gauge series whose name starts with `prefix`.
    pub async fn sum(&self, prefix: &str) -> anyhow::Result<f64> {
        Ok(self
            .metrics()
            .await?
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The process's peak resident set size so far (VmHWM).
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{}/status", self.pid()))?;
        Ok(kib * 1024)
    }

    /// SIGTERM (the operator finishes in-flight reconciles and flushes its journal), then
    /// waits for the exit.
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                anyhow::bail!("the operator did not stop within {timeout:?}; killed");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
