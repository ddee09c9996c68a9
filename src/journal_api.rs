//! The read-only HTTP journal API, served next to `/metrics`:
//!
//! - `GET /journal/tenants`: every chain's summary (JSON array).
//! - `GET /journal/tenants/{name}[?uid=UID]`: one chain's history (JSON, see
//!   [`History`]); the tenant's newest chain without `uid`.
//! - `GET /journal/export[?tenant=T][&since=RFC3339]`: JSON Lines, streamed.
//! - `GET /journal/verify`: a [`VerifyOutcome`].
//!
//! Only the leader opens the journal; until then (or on a replica that is not the leader)
//! every route answers 503.

use crate::journal::{Journal, JournalError};
use crate::journal_slot::JournalSlot;
use crate::journal_view::{
    ExportFilter, History, VerifyOutcome, export_line, export_records, parse_time, read_history,
    verify_journal,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

/// The journal once this replica has opened it (as the leader).
pub type SharedJournal = Arc<OnceLock<Arc<JournalSlot>>>;

/// Lines buffered between the journal reader and the response body: bounds memory.
const EXPORT_BUFFER_LINES: usize = 256;

pub const NOT_LEADER: &str = "this operator replica has not opened the journal: it is not the leader (or is still starting); only the leader serves the journal API";

pub fn router(journal: SharedJournal) -> Router {
    Router::new()
        .route("/journal/tenants", get(tenants))
        .route("/journal/tenants/{name}", get(history))
        .route("/journal/export", get(export))
        .route("/journal/verify", get(verify))
        .with_state(journal)
}

/// What a request could not get.
enum ApiError {
    NotLeader,
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

/// Runs a journal read off the async threads.
async fn read<T: Send + 'static>(
    journal: &SharedJournal,
    f: impl FnOnce(&Journal) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let journal = journal.clone();
    tokio::task::spawn_blocking(move || f(&*opened(&journal)?))
        .await
        .map_err(|e| ApiError::Journal(format!("the journal read failed: {e}")))?
}

async fn tenants(State(journal): State<SharedJournal>) -> Result<Response, ApiError> {
    let tenants = read(&journal, |j| Ok(j.tenants()?)).await?;
    Ok(axum::Json(tenants).into_response())
}

#[derive(Deserialize)]
struct HistoryQuery {
    uid: Option<String>,
}

async fn history(
    State(journal): State<SharedJournal>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<History>, ApiError> {
    let found = read(&journal, move |j| {
        read_history(j, &name, query.uid.as_deref())?.ok_or_else(|| {
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

async fn export(
    State(journal): State<SharedJournal>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    let journal = tokio::task::spawn_blocking(move || opened(&journal))
        .await
        .map_err(|e| ApiError::Journal(format!("the journal read failed: {e}")))??;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(EXPORT_BUFFER_LINES);
    tokio::task::spawn_blocking(move || stream_export(&journal, &filter, &tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Sends each selected record's line until the client goes away. A read error ends the
/// body with an error, so the client sees a broken transfer, never a silently short export.
fn stream_export(
    journal: &Journal,
    filter: &ExportFilter,
    tx: &tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
) {
    let records = match export_records(journal, filter) {
        Ok(records) => records,
        Err(error) => {
            let _ = tx.blocking_send(Err(std::io::Error::other(error.to_string())));
            return;
        }
    };
    for item in records {
        let line = item
            .map(|record| export_line(&record))
            .map_err(|e| std::io::Error::other(e.to_string()));
        let failed = line.is_err();
        if tx.blocking_send(line).is_err() || failed {
            return;
        }
    }
}

async fn verify(
    State(journal): State<SharedJournal>,
) -> Result<axum::Json<VerifyOutcome>, ApiError> {
    let outcome = read(&journal, |j| Ok(verify_journal(j, |_| {})?)).await?;
    Ok(axum::Json(outcome))
}

#[cfg(test)]
mod tests;
