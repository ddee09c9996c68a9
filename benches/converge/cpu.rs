//! CPU time of the processes that share the machine during a phase: each control-plane
//! component, the operator, this driver, and the whole machine (other work included).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Linux reports process times in clock ticks; USER_HZ is 100 on every mainstream kernel.
const TICKS_PER_SECOND: f64 = 100.0;

/// Named processes to account for.
pub struct Processes(Vec<(String, u32)>);

impl Processes {
    /// The bench cluster's components (from kwokctl's pid files and the provisioner's).
    pub fn of_cluster(cluster_dir: &Path) -> Processes {
        let mut found = Vec::new();
        let pids = cluster_dir.join("kwok/clusters/neurallog/pids");
        for entry in std::fs::read_dir(&pids).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if let (Some(name), Some(pid)) = (name, read_pid(&path)) {
                found.push((name, pid));
            }
        }
        if let Some(pid) = read_pid(&cluster_dir.join("provisioner.pid")) {
            found.push(("provisioner".into(), pid));
        }
        found.push(("bench-driver".into(), std::process::id()));
        Processes(found)
    }

    pub fn with(mut self, name: &str, pid: u32) -> Processes {
        self.0.push((name.into(), pid));
        self
    }

    pub fn sample(&self) -> Sample {
        Sample {
            seconds: self
                .0
                .iter()
                .map(|(name, pid)| (name.clone(), process_seconds(*pid).unwrap_or(0.0)))
                .collect(),
            machine_busy: machine_busy_seconds().unwrap_or(0.0),
        }
    }
}

pub struct Sample {
    seconds: BTreeMap<String, f64>,
    machine_busy: f64,
}

/// CPU seconds spent between two samples.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    pub by_process: BTreeMap<String, f64>,
    /// Every CPU of the machine, including work that is not this benchmark's.
    pub machine_busy: f64,
}

impl Sample {
    pub fn until(&self, after: &Sample) -> Usage {
        Usage {
            by_process: after
                .seconds
                .iter()
                .map(|(name, s)| {
                    let before = self.seconds.get(name).copied().unwrap_or(0.0);
                    (name.clone(), round(s - before))
                })
                .collect(),
            machine_busy: round(after.machine_busy - self.machine_busy),
        }
    }
}

fn round(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// utime + stime of a process (its threads included).
fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Busy (non-idle, non-iowait) CPU seconds of the machine since boot.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((ticks.iter().take(8).sum::<f64>() - idle) / TICKS_PER_SECOND)
}
