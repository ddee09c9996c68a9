//! Prometheus metrics (prometheus-client), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub verb: String,
    pub resource: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub tenant_creation: Family<ResultLabel, Counter>,
    pub tenant_deletion: Counter,
    pub reconcile_duration: Family<PhaseLabel, Histogram>,
    pub tenant_count: Family<PhaseLabel, Gauge>,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub journal_append: Histogram,
    /// The part of an append spent in the journal's own thread (transaction and flush),
    /// without the hand-off to and from it: what tells storage from scheduling.
    pub journal_storage: Histogram,
    /// Bytes of the journal's files on disk.
    pub journal_disk_bytes: Gauge,
    /// Records retention compacted into checkpoints.
    pub journal_compacted_records: Counter,
    /// uid -> phase, to keep `neurallog_tenant_count` exact.
    phases: Mutex<HashMap<String, String>>,
}

/// Durable appends take a device round trip or two (about 0.2 ms each on an SSD): buckets
/// every 0.25 ms up to 5 ms tell one sync from two, then doubling up to about 5 s.
fn journal_buckets() -> impl Iterator<Item = f64> {
    let fine = (1..=20).map(|i| f64::from(i) * 0.000_25);
    fine.chain(exponential_buckets(0.01, 2.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let tenant_creation = Family::<ResultLabel, Counter>::default();
        let tenant_deletion = Counter::default();
        let reconcile_duration = Family::<PhaseLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let tenant_count = Family::<PhaseLabel, Gauge>::default();
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        let api_writes = Family::<WriteLabels, Counter>::default();
        let journal_append = Histogram::new(journal_buckets());
        let journal_storage = Histogram::new(journal_buckets());
        registry.register(
            "neurallog_tenant_creation",
            "Tenants that finished provisioning (success) or failed",
            tenant_creation.clone(),
        );
        registry.register(
            "neurallog_tenant_deletion",
            "Tenants whose deletion completed",
            tenant_deletion.clone(),
        );
        registry.register(
            "neurallog_tenant_reconciliation_duration_seconds",
            "Reconcile duration by phase",
            reconcile_duration.clone(),
        );
        registry.register(
            "neurallog_tenant_count",
            "Tenants by phase",
            tenant_count.clone(),
        );
        registry.register(
            "neurallog_reconcile_errors",
            "Failed reconciles by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "neurallog_api_write_requests",
            "Write requests sent to the Kubernetes API server",
            api_writes.clone(),
        );
        registry.register(
            "neurallog_journal_append_duration_seconds",
            "Durable journal append latency",
            journal_append.clone(),
        );
        registry.register(
            "neurallog_journal_storage_duration_seconds",
            "Journal append latency inside the journal thread: transaction and flush",
            journal_storage.clone(),
        );
        let journal_disk_bytes = Gauge::default();
        let journal_compacted_records = Counter::default();
        registry.register(
            "neurallog_journal_disk_bytes",
            "Bytes of the journal's files on disk",
            journal_disk_bytes.clone(),
        );
        registry.register(
            "neurallog_journal_compacted_records",
            "Journal records retention compacted into checkpoints",
            journal_compacted_records.clone(),
        );
        Self {
            registry,
            tenant_creation,
            tenant_deletion,
            reconcile_duration,
            tenant_count,
            reconcile_errors,
            api_writes,
            journal_append,
            journal_storage,
            journal_disk_bytes,
            journal_compacted_records,
            phases: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn count_write(&self, verb: &str, resource: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    pub fn total_writes(&self) -> u64 {
        let text = self.encode();
        text.lines()
            .filter(|l| l.starts_with("neurallog_api_write_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn observe_reconcile(&self, phase: &str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&PhaseLabel {
                phase: phase.into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn count_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Records that tenant `uid` is in `phase` (`None`: gone).
    pub fn set_phase(&self, uid: &str, phase: Option<&str>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        let old = match phase {
            Some(p) => phases.insert(uid.to_string(), p.to_string()),
            None => phases.remove(uid),
        };
        if old.as_deref() == phase {
            return;
        }
        if let Some(old) = old {
            self.tenant_count
                .get_or_create(&PhaseLabel { phase: old })
                .dec();
        }
        if let Some(new) = phase {
            self.tenant_count
                .get_or_create(&PhaseLabel { phase: new.into() })
                .inc();
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_metric_names_are_exported() {
        let m = Metrics::default();
        m.tenant_creation
            .get_or_create(&ResultLabel {
                result: "success".into(),
            })
            .inc();
        m.tenant_deletion.inc();
        m.observe_reconcile("Running", Duration::from_millis(3));
        m.set_phase("u1", Some("Running"));
        m.count_write("patch", "deployments");
        m.count_write("create", "events");
        let text = m.encode();
        for name in [
            "neurallog_tenant_creation_total{result=\"success\"} 1",
            "neurallog_tenant_deletion_total 1",
            "neurallog_tenant_reconciliation_duration_seconds_bucket{",
            "neurallog_tenant_count{phase=\"Running\"} 1",
            "neurallog_journal_disk_bytes 0",
            "neurallog_journal_compacted_records_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert_eq!(m.total_writes(), 2);
    }

    #[test]
    fn tenant_count_moves_between_phases() {
        let m = Metrics::default();
        m.set_phase("u1", Some("Pending"));
        m.set_phase("u1", Some("Running"));
        m.set_phase("u2", Some("Running"));
        m.set_phase("u2", None);
        let text = m.encode();
        assert!(text.contains("neurallog_tenant_count{phase=\"Pending\"} 0"));
        assert!(text.contains("neurallog_tenant_count{phase=\"Running\"} 1"));
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    #[test]
    fn journal_buckets_resolve_a_quarter_millisecond_below_5_ms() {
        let bounds: Vec<f64> = journal_buckets().collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        let below_5ms: Vec<_> = bounds.iter().filter(|b| **b <= 0.005 + 1e-12).collect();
        assert_eq!(below_5ms.len(), 20);
        assert!(
            bounds
                .windows(2)
                .filter(|w| w[1] <= 0.005 + 1e-12)
                .all(|w| w[1] - w[0] <= 0.000_25 + 1e-12)
        );
        assert!(*bounds.last().unwrap_or(&0.0) >= 5.0);
    }
}
