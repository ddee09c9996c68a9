//! The journal's upkeep while the operator leads: retention compacts old records (see
//! [`crate::journal::Retention`]) once at start and then every [`COMPACT_EVERY`], and
//! `neurallog_journal_disk_bytes` follows the journal's size every [`MEASURE_EVERY`].

use crate::journal::Retention;
use crate::journal::slot::JournalSlot;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

pub const MEASURE_EVERY: Duration = Duration::from_secs(60);
pub const COMPACT_EVERY: Duration = Duration::from_secs(3600);

/// Runs until the task is dropped (aborted at shutdown).
pub async fn run(journal: Arc<JournalSlot>, retention: Retention, metrics: Arc<Metrics>) {
    let compact_every = (COMPACT_EVERY.as_secs() / MEASURE_EVERY.as_secs()).max(1);
    let mut ticks = tokio::time::interval(MEASURE_EVERY);
    for tick in 0u64.. {
        ticks.tick().await;
        let compact = tick.is_multiple_of(compact_every);
        let slot = journal.clone();
        let retention = retention.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            slot.with(|j| {
                let compacted = if compact {
                    Some(j.compact(retention, chrono::Utc::now())?)
                } else {
                    None
                };
                Ok((compacted, j.size_on_disk()?))
            })
        })
        .await;
        match outcome {
            Ok(Ok((compacted, bytes))) => {
                metrics
                    .journal_disk_bytes
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                if let Some(done) = compacted.filter(|d| d.records > 0) {
                    metrics.journal_compacted_records.inc_by(done.records);
                    tracing::info!(
                        chains = done.chains,
                        records = done.records,
                        "retention compacted old journal records into checkpoints"
                    );
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "journal upkeep failed; retried later"),
            Err(error) => tracing::warn!(%error, "journal upkeep task failed; retried later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::journal::testing::{TO_RUNNING, lifecycle, t0};

    #[tokio::test]
    async fn compacts_at_start_and_reports_the_journals_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("journal")).expect("open");
        for entry in lifecycle("acme", "uid-1", t0(), &TO_RUNNING) {
            journal.append(entry).expect("append");
        }
        let slot = Arc::new(JournalSlot::new(journal));
        let metrics = Arc::new(Metrics::default());
        let retention = Retention {
            keep_records: 1,
            keep_for: chrono::Duration::days(3650),
            archive: None,
        };
        let task = tokio::spawn(run(slot.clone(), retention, metrics.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.journal_disk_bytes.get() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no upkeep within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        assert_eq!(metrics.journal_compacted_records.get(), 3);
        let kept = slot.with(|j| Ok(j.history("uid-1").count())).expect("read");
        assert_eq!(kept, 1);
    }
}
