//! A standby replica's copy of the leader's journal, so that a takeover continues the
//! leader's chains instead of forking them.
//!
//! While it waits for the lease, a replica run with `--journal-follow` opens its own
//! journal and, every poll interval, asks the leader's journal API (its URL is on the
//! Lease, see [`crate::leader::JOURNAL_URL_ANNOTATION`]) for every chain's head, then for
//! each chain it is behind on, for the records after its own last seq
//! (`/journal/tenants/{name}?uid=UID&after=SEQ`). Each record is imported only if it links
//! to the local chain ([`Journal::import`]). A record that does not (a fork, a gap, a
//! changed record) stops following for its chain: it is logged and counted
//! (`neurallog_journal_follow_refused_total`), never imported. A journal of another
//! lineage (the leader's was replaced after damage, see [`RecoveryMark`]) is not followed
//! at all.
//!
//! On takeover following stops and the journal is closed; the new leader then opens it
//! with the start-up check as always, which compares it with the Tenants' statuses: a tail
//! the old leader appended after the last poll is found there and handled as damage.

use crate::journal::client::encode;
use crate::journal::view::History;
use crate::journal::{Checkpoint, Journal, JournalError, Record, RecoveryMark, TenantSummary};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one poll of the leader may take before it is given up (and tried again).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// The follower's counters, on `/metrics`.
#[derive(Clone, Default)]
pub struct FollowMetrics {
    /// Records imported from the leader.
    pub records: Counter,
    /// Chains (or whole journals) no longer followed because a record did not link.
    pub refused: Counter,
    /// Polls of the leader that failed (unreachable, not serving yet, timed out).
    pub failed_polls: Counter,
}

impl FollowMetrics {
    pub fn register(registry: &mut Registry) -> FollowMetrics {
        let metrics = FollowMetrics::default();
        registry.register(
            "neurallog_journal_follow_records",
            "Journal records a standby replica imported from the leader's journal",
            metrics.records.clone(),
        );
        registry.register(
            "neurallog_journal_follow_refused",
            "Chains a standby stopped following because a leader's record did not link to its copy",
            metrics.refused.clone(),
        );
        registry.register(
            "neurallog_journal_follow_failed_polls",
            "Polls of the leader's journal API that failed",
            metrics.failed_polls.clone(),
        );
        metrics
    }
}

/// Following in the background, until stopped.
pub struct Follower {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Follower {
    /// Follows the journal API at the URL `leader` holds (none: waits) into `journal`,
    /// polling every `interval`.
    pub fn start(
        journal: Arc<Journal>,
        leader: watch::Receiver<Option<String>>,
        interval: Duration,
        metrics: FollowMetrics,
    ) -> Follower {
        let (stop, stopped) = watch::channel(false);
        let state = State {
            journal,
            metrics,
            refused: HashSet::new(),
            last_failure: None,
        };
        Follower {
            stop,
            task: tokio::spawn(state.run(leader, interval, stopped)),
        }
    }

    /// Stops following and closes the journal: when this returns, nothing of this
    /// process holds it open (but sled may let go of its file lock a moment later).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the journal follower failed");
        }
    }
}

struct State {
    journal: Arc<Journal>,
    metrics: FollowMetrics,
    /// Chains no longer followed (uid), or `""` for the whole journal.
    refused: HashSet<String>,
    /// The last failed poll's error, logged once until it changes.
    last_failure: Option<String>,
}

/// Records of one chain to import, with the leader's checkpoint of it.
struct Batch {
    start: Option<Checkpoint>,
    records: Vec<Record>,
}

/// The whole journal, in [`State::refused`].
const WHOLE_JOURNAL: &str = "";

impl State {
    async fn run(
        mut self,
        leader: watch::Receiver<Option<String>>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        tracing::info!(
            path = %self.journal.path().display(),
            "following the leader's journal while waiting for the lease"
        );
        let mut source: Option<LeaderApi> = None;
        while !*stop.borrow() {
            let url = leader.borrow().clone();
            if let Some(url) = url {
                if source.as_ref().is_none_or(|known| known.base != url) {
                    source = LeaderApi::new(&url)
                        .map_err(|error| self.failed(&url, &error.to_string()))
                        .ok();
                }
                if let Some(leader) = &source {
                    // A poll is given up when the stop comes; an import, once started, ends.
                    let polled = tokio::select! {
                        _ = stop.changed() => break,
                        polled = tokio::time::timeout(POLL_TIMEOUT, self.poll(leader)) => polled,
                    };
                    match polled {
                        Ok(Ok(batches)) => self.import(batches).await,
                        Ok(Err(error)) => self.failed(&url, &format!("{error:#}")),
                        Err(_) => self.failed(&url, "timed out"),
                    }
                }
            }
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
        let journal = self.journal;
        // Closing flushes and joins the writer thread: blocking work.
        let _ = tokio::task::spawn_blocking(move || drop(journal)).await;
        tracing::info!("stopped following the leader's journal");
    }

    /// What to import: the records after this journal's tail of each chain the leader is
    /// ahead on.
    async fn poll(&mut self, leader: &LeaderApi) -> anyhow::Result<Vec<Batch>> {
        if self.refused.contains(WHOLE_JOURNAL) {
            return Ok(Vec::new());
        }
        let mark = leader.recovery().await?;
        let heads = leader.tenants().await?;
        let local = self.local(mark.clone()).await?;
        if let Err(reason) = local.lineage {
            self.refuse(WHOLE_JOURNAL, &reason);
            return Ok(Vec::new());
        }
        let mut batches = Vec::new();
        for head in heads {
            if self.refused.contains(&head.uid) {
                continue;
            }
            let ours = local
                .heads
                .get(&head.uid)
                .map(|h| (h.last_seq, h.last_hash));
            let after = match ours {
                Some((seq, hash)) if seq == head.last_seq && hash == head.last_hash => continue,
                Some((seq, _)) if seq >= head.last_seq => {
                    let reason = format!(
                        "tenant {} chain {}: this replica holds seq {seq}, the leader's chain ends at {} with another hash",
                        head.tenant, head.uid, head.last_seq
                    );
                    self.refuse(&head.uid, &reason);
                    continue;
                }
                Some((seq, _)) => seq,
                None => 0,
            };
            let history = leader.history_after(&head.tenant, &head.uid, after).await?;
            batches.push(Batch {
                start: history.compacted,
                records: history.records,
            });
        }
        Ok(batches)
    }

    /// This journal's chain heads, and whether it is of the leader's lineage (adopting the
    /// leader's recovery mark when this journal is still empty).
    async fn local(&self, leader_mark: Option<RecoveryMark>) -> anyhow::Result<Local> {
        let journal = self.journal.clone();
        let local = tokio::task::spawn_blocking(move || -> Result<Local, JournalError> {
            let heads: HashMap<String, TenantSummary> = journal
                .tenants()?
                .into_iter()
                .map(|h| (h.uid.clone(), h))
                .collect();
            let ours = journal.recovery()?;
            let lineage = if ours == leader_mark {
                Ok(())
            } else if let (None, Some(mark), true) = (&ours, &leader_mark, heads.is_empty()) {
                journal.mark_recovery(mark)?;
                Ok(())
            } else {
                Err(format!(
                    "this replica's journal is of chain {} and the leader's of chain {}: they are different histories",
                    label(ours.as_ref()),
                    label(leader_mark.as_ref())
                ))
            };
            Ok(Local { heads, lineage })
        })
        .await??;
        Ok(local)
    }

    async fn import(&mut self, batches: Vec<Batch>) {
        for batch in batches {
            let Some(first) = batch.records.first() else {
                continue;
            };
            let (tenant, uid) = (first.tenant.clone(), first.uid.clone());
            let journal = self.journal.clone();
            let imported =
                tokio::task::spawn_blocking(move || journal.import(batch.start, batch.records))
                    .await;
            match imported {
                Ok(Ok(imported)) => {
                    self.metrics.records.inc_by(imported.records);
                    if imported.records > 0 {
                        tracing::debug!(%tenant, %uid, records = imported.records, "imported the leader's journal records");
                    }
                    if let Some(refused) = imported.refused {
                        self.refuse(&uid, &refused.to_string());
                    }
                }
                Ok(Err(error)) => {
                    tracing::error!(%tenant, %uid, %error, "cannot import the leader's journal records; retrying at the next poll");
                }
                Err(error) => tracing::error!(%error, "the journal import failed"),
            }
        }
        self.last_failure = None;
    }

    fn refuse(&mut self, uid: &str, reason: &str) {
        if self.refused.insert(uid.to_owned()) {
            self.metrics.refused.inc();
            let what = if uid == WHOLE_JOURNAL {
                "the leader's journal"
            } else {
                "this chain of the leader's journal"
            };
            tracing::error!(%uid, %reason, "a record of the leader's journal does not link to this replica's copy: no longer following {what}; a takeover finds the difference in the start-up check");
        }
    }

    fn failed(&mut self, url: &str, error: &str) {
        self.metrics.failed_polls.inc();
        if self.last_failure.as_deref() != Some(error) {
            tracing::warn!(%url, %error, "cannot read the leader's journal; retrying");
            self.last_failure = Some(error.to_owned());
        } else {
            tracing::debug!(%url, %error, "cannot read the leader's journal; retrying");
        }
    }
}

/// This journal as a poll sees it.
struct Local {
    heads: HashMap<String, TenantSummary>,
    /// Why this journal is not a copy of the leader's, if it is not.
    lineage: Result<(), String>,
}

fn label(mark: Option<&RecoveryMark>) -> String {
    mark.map_or_else(
        || "original".to_owned(),
        |m| format!("{:?}", m.chain_label()),
    )
}

/// The leader's journal API, as the follower reads it.
struct LeaderApi {
    http: reqwest::Client,
    base: String,
}

impl LeaderApi {
    fn new(base: &str) -> reqwest::Result<LeaderApi> {
        Ok(LeaderApi {
            http: reqwest::Client::builder().timeout(POLL_TIMEOUT).build()?,
            base: base.to_owned(),
        })
    }

    async fn recovery(&self) -> anyhow::Result<Option<RecoveryMark>> {
        self.get("/journal/recovery", &[]).await
    }

    async fn tenants(&self) -> anyhow::Result<Vec<TenantSummary>> {
        self.get("/journal/tenants", &[]).await
    }

    /// Chain `uid` of tenant `name` after seq `after`, with its checkpoint.
    async fn history_after(&self, name: &str, uid: &str, after: u64) -> anyhow::Result<History> {
        let path = format!("/journal/tenants/{}", encode(name));
        self.get(&path, &[("uid", uid), ("after", &after.to_string())])
            .await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let response = self.http.get(&url).query(query).send().await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("{url} answered {status}: {}", text.trim());
        }
        Ok(response.json().await?)
    }
}

#[cfg(test)]
mod tests;
