//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and the read-only
//! journal API under `/journal/` ([`crate::journal::api`]).
//!
//! Secure (the default when bound beyond loopback), `/metrics` and the journal API are
//! served over TLS ([`tls`]) to callers the API server authenticates and authorizes
//! ([`access`]); `/healthz` and `/readyz` stay open for the kubelet.

pub mod access;
pub mod tls;

use crate::journal::api::{self as journal_api, ApiLimits, ApiState, SharedJournal};
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Caches synced and journal open.
    pub ready: Arc<AtomicBool>,
    /// Set once this replica leads and has opened the journal.
    pub journal: SharedJournal,
    /// How much of the operator the journal API may take.
    pub journal_limits: ApiLimits,
}

/// The routes; with `access`, `/metrics` and the journal API only for callers it allows.
pub fn router(state: HttpState, access: Option<access::AccessReviewer>) -> Router {
    let journal =
        journal_api::router_with(ApiState::new(state.journal.clone(), state.journal_limits));
    let mut guarded = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(journal);
    if let Some(reviewer) = access {
        guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
            reviewer,
            access::require_access,
        ));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(guarded)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    match not_ready_because(&state) {
        None => (StatusCode::OK, "ready".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn not_ready_because(state: &HttpState) -> Option<String> {
    let Some(journal) = state.journal.get() else {
        return Some("not leading yet: the journal is not open".into());
    };
    if let Some(error) = journal.unwritable() {
        return Some(format!(
            "journal unwritable, phase changes are held until it can be written: {error}"
        ));
    }
    if !state.ready.load(Ordering::SeqCst) {
        return Some("caches not synced".into());
    }
    None
}

/// Serves `router` on `addr` (over TLS with `tls`) until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config)?, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
