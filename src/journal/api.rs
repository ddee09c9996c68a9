//! The read-only HTTP journal API, served next to `/metrics`:
//!
//! - `GET /journal/tenants`: every chain's summary (JSON array).
//! - `GET /journal/tenants/{name}[?uid=UID][&after=SEQ]`: one chain's history (JSON, see
//!   [`History`]); the tenant's newest chain without `uid`; only the records after seq
//!   `SEQ` with `after` (how a standby follows the chain: `src/journal/follow.rs`).
//! - `GET /journal/recovery`: the journal's [`crate::journal::RecoveryMark`] (JSON, `null`
//!   for an original journal): which chain label its records are under.
//! - `GET /journal/export[?tenant=T][&since=RFC3339]`: JSON Lines, streamed.
//! - `GET /journal/verify`: a [`VerifyOutcome`], with when it was computed (see
//!   [`verify_cache`]).
//!
//! Only the leader opens the journal; until then (or on a replica that is not the leader)
//! every route answers 503.
//!
//! Readers never slow the reconciler: the reconciler's journal calls run on tokio's
//! blocking pool, so the API never uses it. Each request is admitted only while fewer than
//! [`ApiLimits::max_requests`] are being served (else 503 with `Retry-After`) and reads on
//! a thread of its own ([`admission`]). An export whose client takes no line for
//! [`ApiLimits::write_timeout`] is cut off, which frees its thread and its admission.

mod admission;
pub mod verify_cache;

use crate::journal::slot::JournalSlot;
use crate::journal::view::{
    ExportFilter, History, export_line, export_records, parse_time, read_history,
};
use crate::journal::{Journal, JournalError};
use admission::{Admission, on_own_thread, spawn_reader};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc::{self, error::SendTimeoutError, error::TrySendError};
use verify_cache::{VerifyCache, VerifyResponse};

#[cfg(doc)]
use crate::journal::view::VerifyOutcome;

/// The journal once this replica has opened it (as the leader).
pub type SharedJournal = Arc<OnceLock<Arc<JournalSlot>>>;

/// Lines buffered between the journal reader and the response body: bounds memory.
const EXPORT_BUFFER_LINES: usize = 256;

/// Journal API requests served at once unless configured otherwise.
pub const DEFAULT_MAX_REQUESTS: u16 = 8;

/// How long an export waits for its client to take a line before cutting it off.
pub const EXPORT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a busy API tells the client to wait before retrying, in seconds.
const RETRY_AFTER_SECONDS: u64 = 1;

pub const NOT_LEADER: &str = "this operator replica has not opened the journal: it is not the leader (or is still starting); only the leader serves the journal API";

/// How much of the operator the journal API may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Requests served at once; more are refused with 503 and `Retry-After`.
    pub max_requests: usize,
    /// How long an export waits for its client to take a line before it ends the
    /// response with an error.
    pub write_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_requests: usize::from(DEFAULT_MAX_REQUESTS),
            write_timeout: EXPORT_WRITE_TIMEOUT,
        }
    }
}

/// The routes' state.
#[derive(Clone)]
pub struct ApiState {
    journal: SharedJournal,
    admission: Admission,
    write_timeout: Duration,
    verify: Arc<VerifyCache>,
}

impl ApiState {
    pub fn new(journal: SharedJournal, limits: ApiLimits) -> Self {
        ApiState {
            journal,
            admission: Admission::new(limits.max_requests),
            write_timeout: limits.write_timeout,
            verify: Arc::default(),
        }
    }

    /// How many full scans `/journal/verify` has run.
    pub fn verify_scans(&self) -> u64 {
        self.verify.scans()
    }
}

pub fn router(journal: SharedJournal) -> Router {
    router_with(ApiState::new(journal, ApiLimits::default()))
}

pub fn router_with(state: ApiState) -> Router {
    Router::new()
        .route("/journal/tenants", get(tenants))
        .route("/journal/tenants/{name}", get(history))
        .route("/journal/export", get(export))
        .route("/journal/verify", get(verify))
        .route("/journal/recovery", get(recovery))
        .with_state(state)
}

/// What a request could not get.
enum ApiError {
    NotLeader,
    /// Already serving this many requests.
    Busy(usize),
    NotFound(String),
    BadRequest(String),
    Journal(String),
}

impl From<JournalError> for ApiError {
    fn from(error: JournalError) -> Self {
        ApiError::Journal(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotLeader => (StatusCode::SERVICE_UNAVAILABLE, NOT_LEADER.to_owned()),
            ApiError::Busy(limit) => {
                let message = format!(
                    "the journal API is busy: it serves at most {limit} requests at once \
                     (--journal-api-max-requests); retry in {RETRY_AFTER_SECONDS} s"
                );
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
                    message,
                )
                    .into_response();
            }
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::Journal(message) => (StatusCode::INTERNAL_SERVER_ERROR, message),
        };
        (status, message).into_response()
    }
}

/// The open journal. May reopen it from disk after a storage failure: call it off the
/// async threads.
fn opened(journal: &SharedJournal) -> Result<Arc<Journal>, ApiError> {
    let slot = journal.get().ok_or(ApiError::NotLeader)?;
    slot.get().map_err(|e| ApiError::Journal(e.to_string()))
}

impl ApiState {
    /// Admits a request (the leader only, and within the limit), then runs the journal
    /// read `f` on a thread of its own.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Journal) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.admit()?;
        let journal = self.journal.clone();
        on_own_thread(permit, move || f(&*opened(&journal)?)).await
    }

    fn admit(&self) -> Result<admission::Permit, ApiError> {
        if self.journal.get().is_none() {
            return Err(ApiError::NotLeader);
        }
        self.admission
            .try_admit()
            .ok_or(ApiError::Busy(self.admission.limit()))
    }
}

async fn tenants(State(api): State<ApiState>) -> Result<Response, ApiError> {
    let tenants = api.read(|j| Ok(j.tenants()?)).await?;
    Ok(axum::Json(tenants).into_response())
}

#[derive(Deserialize)]
struct HistoryQuery {
    uid: Option<String>,
    after: Option<u64>,
}

async fn history(
    State(api): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<History>, ApiError> {
    let found = api
        .read(move |j| {
            let mut history = read_history(j, &name, query.uid.as_deref())?;
            if let (Some(history), Some(after)) = (&mut history, query.after) {
                history.records.retain(|r| r.seq > after);
            }
            history.ok_or_else(|| {
                ApiError::NotFound(match query.uid {
                    Some(uid) => format!("the journal has no chain {uid} of tenant {name}"),
                    None => format!("the journal has no tenant {name}"),
                })
            })
        })
        .await?;
    Ok(axum::Json(found))
}

#[derive(Deserialize)]
struct ExportQuery {
    tenant: Option<String>,
    since: Option<String>,
}

impl ExportQuery {
    fn filter(self) -> Result<ExportFilter, ApiError> {
        let since = self
            .since
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("since: {e}")))?;
        Ok(ExportFilter {
            tenant: self.tenant.filter(|t| !t.is_empty()),
            since,
        })
    }
}

/// What the export's reader thread sends the response body.
enum Chunk {
    Line(String),
    /// The read failed: the body ends with this error.
    Failed(String),
    /// Every selected record was sent: the body ends cleanly. A body that never gets
    /// `End` ends with an error, so the client sees a broken transfer, never a silently
    /// short export.
    End,
}

async fn export(
    State(api): State<ApiState>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    let permit = api.admit()?;
    let (tx, rx) = mpsc::channel(EXPORT_BUFFER_LINES);
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let sender = LineSender {
        tx,
        runtime: tokio::runtime::Handle::current(),
        timeout: api.write_timeout,
    };
    let journal = api.journal.clone();
    spawn_reader(permit, move || {
        let journal = match opened(&journal) {
            Ok(journal) => journal,
            Err(error) => {
                let _ = opened_tx.send(Err(error));
                return;
            }
        };
        if opened_tx.send(Ok(())).is_ok() {
            stream_export(&journal, &filter, &sender);
        }
    })?;
    opened_rx
        .await
        .map_err(|_| ApiError::Journal("the export's reader thread failed".into()))??;
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl; charset=utf-8")],
        export_body(rx, api.write_timeout),
    )
        .into_response())
}

/// Sends each selected record's line, then [`Chunk::End`], until the client goes away or
/// stops reading.
fn stream_export(journal: &Journal, filter: &ExportFilter, out: &LineSender) {
    let records = match export_records(journal, filter) {
        Ok(records) => records,
        Err(error) => {
            out.send(Chunk::Failed(error.to_string()));
            return;
        }
    };
    for item in records {
        let chunk = match item {
            Ok(record) => Chunk::Line(export_line(&record)),
            Err(error) => Chunk::Failed(error.to_string()),
        };
        let failed = matches!(chunk, Chunk::Failed(_));
        if !out.send(chunk) || failed {
            return;
        }
    }
    out.send(Chunk::End);
}

/// The export reader's end of the channel to the response body.
struct LineSender {
    tx: mpsc::Sender<Chunk>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl LineSender {
    /// Sends `chunk`, waiting at most the write timeout for the client to take a line.
    /// False when the body is gone or the client took nothing for that long: the export
    /// stops there, and its body, which never gets [`Chunk::End`], ends with an error.
    fn send(&self, chunk: Chunk) -> bool {
        let chunk = match self.tx.try_send(chunk) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(chunk)) => chunk,
        };
        // A thread of our own, not the runtime's: blocking here is allowed.
        match self
            .runtime
            .block_on(self.tx.send_timeout(chunk, self.timeout))
        {
            Ok(()) => true,
            Err(SendTimeoutError::Closed(_)) => false,
            Err(SendTimeoutError::Timeout(_)) => {
                tracing::warn!(
                    timeout_seconds = self.timeout.as_secs_f64(),
                    "journal export cut off: its client took no line for the write timeout"
                );
                false
            }
        }
    }
}

/// The export's response body: the lines until [`Chunk::End`]; an error otherwise.
fn export_body(rx: mpsc::Receiver<Chunk>, write_timeout: Duration) -> Body {
    let lines = futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        let item = match rx.recv().await {
            Some(Chunk::Line(line)) => Ok(line),
            Some(Chunk::End) => return None,
            Some(Chunk::Failed(error)) => Err(std::io::Error::other(error)),
            // The reader stopped without `End`: it gave up on the client (or panicked).
            None => Err(std::io::Error::other(format!(
                "the export was cut off before its end: its client took no line for {} s",
                write_timeout.as_secs_f64()
            ))),
        };
        let next = item.is_ok().then_some(rx);
        Some((item, next))
    });
    Body::from_stream(lines)
}

async fn recovery(
    State(api): State<ApiState>,
) -> Result<axum::Json<Option<crate::journal::RecoveryMark>>, ApiError> {
    let mark = api.read(|j| Ok(j.recovery()?)).await?;
    Ok(axum::Json(mark))
}

async fn verify(State(api): State<ApiState>) -> Result<axum::Json<VerifyResponse>, ApiError> {
    let permit = api.admit()?;
    let journal = api.journal.clone();
    let cache = api.verify.clone();
    // A task of its own: a scan whose client went away still completes and is kept.
    let response = tokio::spawn(async move { cache.get(permit, move || opened(&journal)).await })
        .await
        .map_err(|e| ApiError::Journal(format!("the journal verify failed: {e}")))??;
    Ok(axum::Json(response))
}

#[cfg(test)]
mod tests;
