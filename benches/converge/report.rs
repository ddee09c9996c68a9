//! The results: one JSON document, and a Markdown table against the targets.

use crate::apiserver::Writes;
use crate::cpu::Usage;
use crate::histogram::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const TARGET_RATIO: f64 = 1.25;
pub const TARGET_RESYNC_WRITES: u64 = 0;
pub const TARGET_PEAK_RSS_MIB: f64 = 48.0;
pub const TARGET_PASSES_PER_TENANT: f64 = 6.0;
pub const TARGET_CPU_SECONDS_PER_1000_TENANTS: f64 = 15.0;
pub const TARGET_JOURNAL_P99_MS: f64 = 5.0;

#[derive(Serialize)]
pub struct Results {
    pub date: String,
    pub tenants: usize,
    pub concurrency: usize,
    pub machine_cpus: usize,
    pub baseline: Convergence,
    pub operator: Convergence,
    pub operator_process: OperatorFigures,
    pub ratio_operator_to_baseline: f64,
    /// The baseline that also writes what the operator must beyond the objects (a
    /// `mirrored` run), when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<Convergence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_mirrored_to_baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_operator_to_mirrored: Option<f64>,
    pub resync: Resync,
}

/// One side's convergence of N tenants, from the first Tenant create until the last
/// tenant is ready (baseline: Redis StatefulSet and server Deployment ready; operator:
/// phase Running, which requires the same).
#[derive(Serialize, Deserialize)]
pub struct Convergence {
    pub seconds: f64,
    /// Write requests the side sent itself (Tenant creates included).
    pub client_writes: u64,
    pub client_writes_per_tenant: f64,
    /// Every write the API server served meanwhile (controllers, scheduler, kwok included).
    pub apiserver_writes_per_tenant: f64,
    /// Those on the objects a tenant is made of (and Events, Tenants).
    pub apiserver_tenant_object_writes_per_tenant: f64,
    pub apiserver_writes_by_verb: BTreeMap<String, u64>,
    pub apiserver_writes: Writes,
    /// Writes refused with 409 (conflicts, AlreadyExists), by anyone.
    pub apiserver_conflicts: u64,
    /// GET, LIST and WATCH requests the API server served meanwhile, by anyone.
    pub apiserver_reads_per_tenant: f64,
    pub apiserver_reads_by_verb: BTreeMap<String, u64>,
    pub apiserver_reads: Writes,
    pub cpu_seconds: Usage,
}

#[derive(Serialize)]
pub struct OperatorFigures {
    pub peak_rss_mib: f64,
    pub writes_by_operator: u64,
    /// Reconcile passes until every tenant was Running: completed ones (the reconcile
    /// histogram's count) and failed ones (the error counter, which also counts failed
    /// Event writes), per tenant.
    pub passes_per_tenant: f64,
    pub failed_passes: u64,
    /// The operator process's own utime + stime during convergence.
    pub cpu_seconds: f64,
    pub cpu_seconds_per_1000_tenants: f64,
    pub reconcile: Summary,
    pub journal_append: Summary,
    /// The same appends, timed inside the journal's thread: storage without hand-off.
    pub journal_storage: Summary,
}

#[derive(Serialize)]
pub struct Resync {
    /// From the restart until every tenant was reconciled once.
    pub seconds: f64,
    pub reconciles: u64,
    pub operator_write_counter: u64,
    pub apiserver_tenant_object_writes: Writes,
    /// Every write the API server served in the window (kwok's node heartbeats ...).
    pub apiserver_all_writes_by_verb: BTreeMap<String, u64>,
    pub peak_rss_mib: f64,
}

fn apiserver_cpu(side: &Convergence) -> f64 {
    side.cpu_seconds
        .by_process
        .get("kube-apiserver")
        .copied()
        .unwrap_or(0.0)
}

fn ms(seconds: Option<f64>) -> String {
    seconds.map_or("n/a".into(), |s| format!("{:.2} ms", s * 1e3))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

impl Results {
    pub fn markdown(&self) -> String {
        let o = &self.operator_process;
        let resync_writes =
            self.resync.operator_write_counter + self.resync.apiserver_tenant_object_writes.total();
        let peak_rss = o.peak_rss_mib.max(self.resync.peak_rss_mib);
        let journal_p99 = o.journal_append.p99_seconds.unwrap_or(f64::INFINITY) * 1e3;
        let rows = [
            (
                "Convergence, operator".to_string(),
                format!("{:.1} s", self.operator.seconds),
                String::new(),
                String::new(),
            ),
            (
                "Convergence, baseline".into(),
                format!("{:.1} s", self.baseline.seconds),
                String::new(),
                String::new(),
            ),
            (
                "Ratio operator / baseline".into(),
                format!("{:.2}", self.ratio_operator_to_baseline),
                format!("<= {TARGET_RATIO}"),
                verdict(self.ratio_operator_to_baseline <= TARGET_RATIO).into(),
            ),
            (
                "No-op resync: writes (operator counter + API server, tenant objects)".into(),
                format!(
                    "{} + {}",
                    self.resync.operator_write_counter,
                    self.resync.apiserver_tenant_object_writes.total()
                ),
                format!("{TARGET_RESYNC_WRITES}"),
                verdict(resync_writes == TARGET_RESYNC_WRITES).into(),
            ),
            (
                "Operator peak RSS (VmHWM)".into(),
                format!("{peak_rss:.1} MiB"),
                format!("<= {TARGET_PEAK_RSS_MIB} MiB"),
                verdict(peak_rss <= TARGET_PEAK_RSS_MIB).into(),
            ),
            (
                "Reconcile passes per tenant to Running".into(),
                format!("{:.2}", o.passes_per_tenant),
                format!("<= {TARGET_PASSES_PER_TENANT}"),
                verdict(o.passes_per_tenant <= TARGET_PASSES_PER_TENANT).into(),
            ),
            (
                "Operator CPU per 1,000 tenants (utime + stime)".into(),
                format!("{:.1} s", o.cpu_seconds_per_1000_tenants),
                format!("<= {TARGET_CPU_SECONDS_PER_1000_TENANTS} s"),
                verdict(o.cpu_seconds_per_1000_tenants <= TARGET_CPU_SECONDS_PER_1000_TENANTS)
                    .into(),
            ),
            (
                "API server CPU, operator / baseline side".into(),
                format!(
                    "{:.1} / {:.1} s",
                    apiserver_cpu(&self.operator),
                    apiserver_cpu(&self.baseline)
                ),
                String::new(),
                String::new(),
            ),
            (
                "API server reads per tenant (GET, LIST, WATCH), operator / baseline".into(),
                format!(
                    "{:.1} / {:.1}",
                    self.operator.apiserver_reads_per_tenant,
                    self.baseline.apiserver_reads_per_tenant
                ),
                String::new(),
                String::new(),
            ),
            (
                "Writes refused with 409, operator / baseline side".into(),
                format!(
                    "{} / {}",
                    self.operator.apiserver_conflicts, self.baseline.apiserver_conflicts
                ),
                String::new(),
                String::new(),
            ),
            (
                "Journal append p50 / p99".into(),
                format!(
                    "{} / {}",
                    ms(o.journal_append.p50_seconds),
                    ms(o.journal_append.p99_seconds)
                ),
                format!("p99 <= {TARGET_JOURNAL_P99_MS} ms"),
                verdict(journal_p99 <= TARGET_JOURNAL_P99_MS).into(),
            ),
            (
                "Journal append in its thread (transaction + flush) p50 / p99".into(),
                format!(
                    "{} / {}",
                    ms(o.journal_storage.p50_seconds),
                    ms(o.journal_storage.p99_seconds)
                ),
                String::new(),
                String::new(),
            ),
            (
                "Reconcile p50 / p99".into(),
                format!(
                    "{} / {}",
                    ms(o.reconcile.p50_seconds),
                    ms(o.reconcile.p99_seconds)
                ),
                String::new(),
                String::new(),
            ),
            (
                "Writes per tenant, operator / baseline (own count)".into(),
                format!(
                    "{:.1} / {:.1}",
                    self.operator.client_writes_per_tenant, self.baseline.client_writes_per_tenant
                ),
                String::new(),
                String::new(),
            ),
            (
                "API server writes per tenant, tenant objects, operator / baseline".into(),
                format!(
                    "{:.1} / {:.1}",
                    self.operator.apiserver_tenant_object_writes_per_tenant,
                    self.baseline.apiserver_tenant_object_writes_per_tenant
                ),
                String::new(),
                String::new(),
            ),
            (
                "API server writes per tenant, all clients, operator / baseline".into(),
                format!(
                    "{:.1} / {:.1}",
                    self.operator.apiserver_writes_per_tenant,
                    self.baseline.apiserver_writes_per_tenant
                ),
                String::new(),
                String::new(),
            ),
        ];
        let mut rows = rows.to_vec();
        if let (Some(mirrored), Some(mirrored_ratio), Some(operator_ratio)) = (
            &self.mirrored,
            self.ratio_mirrored_to_baseline,
            self.ratio_operator_to_mirrored,
        ) {
            rows.push((
                "Convergence, baseline with the operator's Events, status and finalizer".into(),
                format!("{:.1} s", mirrored.seconds),
                String::new(),
                String::new(),
            ));
            rows.push((
                "Ratio mirrored baseline / baseline, operator / mirrored baseline".into(),
                format!("{mirrored_ratio:.2}, {operator_ratio:.2}"),
                String::new(),
                String::new(),
            ));
        }
        let mut out = format!(
            "N = {} tenants per side, concurrency {}, {} CPUs, {}\n\n\
             | Figure | Value | Target | |\n| --- | --- | --- | --- |\n",
            self.tenants, self.concurrency, self.machine_cpus, self.date
        );
        for (name, value, target, met) in rows {
            out.push_str(&format!("| {name} | {value} | {target} | {met} |\n"));
        }
        out
    }
}

/// The baseline run twice on one cluster (`CONVERGE_RUN=baseline-twice`): what a side
/// pays for coming after another's converged tenants, as the operator does in a `both` run.
#[derive(Serialize)]
pub struct Control {
    pub first: Convergence,
    pub again: Convergence,
    pub ratio_again_to_first: f64,
    pub machine_busy_ratio_again_to_first: f64,
}

impl Control {
    pub fn of(first: Convergence, again: Convergence) -> Self {
        Control {
            ratio_again_to_first: again.seconds / first.seconds,
            machine_busy_ratio_again_to_first: again.cpu_seconds.machine_busy
                / first.cpu_seconds.machine_busy,
            first,
            again,
        }
    }

    pub fn markdown(&self, tenants: usize) -> String {
        let mut out = format!(
            "The baseline twice, N = {tenants} each, one cluster\n\n\
             | Figure | First | Again | Again / first |\n| --- | --- | --- | --- |\n"
        );
        let row = |name: &str, first: f64, again: f64| {
            format!(
                "| {name} | {first:.1} | {again:.1} | {:.3} |\n",
                again / first
            )
        };
        out.push_str(&row(
            "Convergence (s)",
            self.first.seconds,
            self.again.seconds,
        ));
        out.push_str(&row(
            "Machine busy (CPU-s)",
            self.first.cpu_seconds.machine_busy,
            self.again.cpu_seconds.machine_busy,
        ));
        let processes = self
            .first
            .cpu_seconds
            .by_process
            .keys()
            .chain(self.again.cpu_seconds.by_process.keys())
            .collect::<std::collections::BTreeSet<_>>();
        for process in processes {
            let cpu = |side: &Convergence| {
                side.cpu_seconds
                    .by_process
                    .get(process)
                    .copied()
                    .unwrap_or(0.0)
            };
            out.push_str(&row(
                &format!("CPU-s, {process}"),
                cpu(&self.first),
                cpu(&self.again),
            ));
        }
        out
    }
}
