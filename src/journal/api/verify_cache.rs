//! `/journal/verify` without a full scan per request.
//!
//! A scan reads every record, so its outcome is kept together with a digest of every
//! chain's head (uid, last seq and last hash, read from the chains' summaries: cheap next
//! to a scan). A request that finds the same heads is answered from the kept outcome; any
//! append moves a head, and the next request scans again. One scan runs at a time:
//! requests that arrive meanwhile wait for it and take its outcome if nothing was appended.
//!
//! Freshness, as the response says it: `verifiedAt` is when the scan that produced the
//! outcome started, and `cached` is true when this request was answered from an earlier
//! scan. A cached outcome covers every record the journal holds now (no chain's head
//! moved since), but damage to stored bytes after `verifiedAt` (a failing disk) shows only
//! at the next scan, that is after the next append. `journal verify --journal DIR` (on a
//! stopped operator's journal) always scans.

use super::ApiError;
use super::admission::{Permit, on_own_thread};
use crate::journal::Journal;
use crate::journal::view::{VerifyOutcome, verify_journal};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What `/journal/verify` answers: the outcome's fields, and how fresh it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    #[serde(flatten)]
    pub outcome: VerifyOutcome,
    /// When the scan that produced this outcome started.
    pub verified_at: DateTime<Utc>,
    /// Answered from an earlier scan: no chain's head has moved since it.
    pub cached: bool,
}

/// The last scan's outcome.
#[derive(Default)]
pub(super) struct VerifyCache {
    /// Held during a scan, so that concurrent requests share it.
    last: tokio::sync::Mutex<Option<Verified>>,
    scans: AtomicU64,
}

#[derive(Clone)]
struct Verified {
    /// The chains' heads before the scan; `None` if they could not be read (never
    /// matches: the next request scans again).
    heads: Option<[u8; 32]>,
    outcome: VerifyOutcome,
    verified_at: DateTime<Utc>,
}

impl VerifyCache {
    /// How many full scans have run.
    pub(super) fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// The kept outcome if no chain's head moved since its scan, else a new scan's. Reads
    /// on a thread of its own, which holds `permit`.
    pub(super) async fn get(
        self: &Arc<Self>,
        permit: Permit,
        journal: impl FnOnce() -> Result<Arc<Journal>, ApiError> + Send + 'static,
    ) -> Result<VerifyResponse, ApiError> {
        let mut last = self.last.lock().await;
        let kept = last.clone();
        let cache = self.clone();
        let (verified, cached) = on_own_thread(permit, move || {
            let journal = journal()?;
            let heads = heads_digest(&journal);
            if let Some(kept) = kept
                && heads.is_some()
                && kept.heads == heads
            {
                return Ok((kept, true));
            }
            let verified_at = Utc::now();
            cache.scans.fetch_add(1, Ordering::Relaxed);
            let outcome = verify_journal(&journal, |_| {})?;
            Ok((
                Verified {
                    heads,
                    outcome,
                    verified_at,
                },
                false,
            ))
        })
        .await?;
        let response = VerifyResponse {
            outcome: verified.outcome.clone(),
            verified_at: verified.verified_at,
            cached,
        };
        *last = Some(verified);
        Ok(response)
    }
}

/// A digest of every chain's uid, last seq and last hash; `None` if a summary is
/// unreadable (the scan will say why).
fn heads_digest(journal: &Journal) -> Option<[u8; 32]> {
    let summaries = journal.tenants().ok()?;
    let mut hasher = Sha256::new();
    for summary in &summaries {
        hasher.update((summary.uid.len() as u64).to_le_bytes());
        hasher.update(summary.uid.as_bytes());
        hasher.update(summary.last_seq.to_le_bytes());
        hasher.update(summary.last_hash.0);
    }
    Some(hasher.finalize().into())
}
