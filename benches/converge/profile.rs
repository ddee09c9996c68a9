//! CPU profiles of the bench cluster's API server while one side converges
//! (`CONVERGE_APISERVER_PROFILES=1`): where the operator side's extra API server CPU goes.
//! Back-to-back 5-second profiles from `/debug/pprof/profile`, written as
//! `apiserver-profiles/<side>-<k>.pb.gz` in the work directory; `go tool pprof -top -cum
//! <files>` merges one side's files. The profile cut short by the side's end is not
//! written: short ones lose less of the side, and cover nothing of the next.

use futures::AsyncReadExt;
use kube::Client;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;

const PROFILE_SECONDS: u32 = 5;

pub struct Profiler {
    task: Option<JoinHandle<()>>,
}

impl Profiler {
    /// Starts profiling for `side` when `enabled`; otherwise a profiler that does nothing.
    pub fn start(enabled: bool, client: &Client, work_dir: &Path, side: &str) -> Self {
        if !enabled {
            return Profiler { task: None };
        }
        let dir = work_dir.join("apiserver-profiles");
        let client = client.clone();
        let side = side.to_string();
        let task = tokio::spawn(async move {
            if let Err(error) = capture(&client, &dir, &side).await {
                eprintln!("bench: API server profiles of the {side} side stopped: {error:#}");
            }
        });
        Profiler { task: Some(task) }
    }

    /// Stops at once; the profile in flight is dropped. (Dropping the profiler, as an
    /// error that ends the side does, stops it too.)
    pub fn stop(self) {}
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn capture(client: &Client, dir: &Path, side: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for k in 1.. {
        let request = http::Request::get(format!("/debug/pprof/profile?seconds={PROFILE_SECONDS}"))
            .body(Vec::new())?;
        let mut body = Vec::new();
        client
            .request_stream(request)
            .await?
            .read_to_end(&mut body)
            .await?;
        std::fs::write(profile_path(dir, side, k), body)?;
    }
    Ok(())
}

fn profile_path(dir: &Path, side: &str, k: u32) -> PathBuf {
    dir.join(format!("{side}-{k:03}.pb.gz"))
}
