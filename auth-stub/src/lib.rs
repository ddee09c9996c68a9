//! A loopback stand-in for the NeuralLog Auth service tenant API, with fault switches, for
//! end-to-end tests (in-process) and `make run` (as the `neurallog-auth-stub` binary).
//!
//! API, from an in-memory tenant set, behind an optional bearer token (401 when wrong or missing):
//! `POST /api/tenants` (201, 409 if present), `GET /api/tenants`, `DELETE /api/tenants/{id}`
//! (200, 404 if absent).
//!
//! Control, unauthenticated, never counted as calls:
//! - `GET /_stub/faults`, `PUT /_stub/faults` with a JSON [`Faults`] that replaces the whole set,
//!   e.g. `{"error_500": true}` or `{"slow_ms": 1500, "rate_limit": {"retry_after_secs": 2}}`;
//! - `GET /_stub/calls` ([`CallStats`]), `DELETE /_stub/calls` (resets them).
//!
//! `down` really closes the API listener and every open connection, so clients get "connection
//! refused"; bringing it back up re-binds the same port. A `PUT` with `down: true` on the API port
//! is answered (with `Connection: close`) before that connection closes. While down the API port
//! cannot be reached, so only the in-process handle ([`AuthStubHandle::set_faults`]) or the
//! optional admin listener ([`AuthStubOptions::admin_addr`]), which serves only `/_stub/...` and
//! never goes down, can bring it back.

pub use self::calls::{CallRecord, CallStats};
pub use self::faults::{Faults, RateLimit};
pub use self::server::{AuthStub, AuthStubHandle, AuthStubOptions};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks without panicking: the guarded data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

mod faults {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    /// Fault switches; the default is a healthy service.
    ///
    /// JSON form (all fields optional): `{"down": false, "slow_ms": null, "error_500": false,
    /// "rate_limit": {"retry_after_secs": 1}, "not_found_on_delete": false,
    /// "slow_register_ms": 30000}`.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Faults {
        /// The API port is closed: connections are refused.
        pub down: bool,
        /// Every API response is held back this long (after the call took effect).
        #[serde(rename = "slow_ms", with = "optional_millis")]
        pub slow: Option<Duration>,
        /// Every API call answers 500 (takes precedence over `rate_limit`).
        pub error_500: bool,
        /// Every API call answers 429 with `Retry-After`.
        pub rate_limit: Option<RateLimit>,
        /// `DELETE` removes the tenant if present but always answers 404.
        pub not_found_on_delete: bool,
        /// `POST /api/tenants` answers are held back this long, after the registration
        /// took effect: the window in which a caller can die before it learns the outcome.
        #[serde(
            rename = "slow_register_ms",
            with = "optional_millis",
            skip_serializing_if = "Option::is_none"
        )]
        pub slow_register: Option<Duration>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RateLimit {
        pub retry_after_secs: u64,
    }

    mod optional_millis {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            value: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(duration) => {
                    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                    serializer.serialize_some(&millis)
                }
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
        }
    }
}

mod calls {
    //! What the API was asked, for assertions.

    use std::collections::BTreeMap;
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use tokio::sync::watch;

    use super::lock;

    /// Recent calls kept in [`CallStats::recent`].
    const RECENT_CALLS: usize = 100;

    /// Counts of API calls since start (or the last reset), including failed ones.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CallStats {
        pub total: u64,
        /// Keyed by HTTP method, e.g. `"POST"`.
        pub by_method: BTreeMap<String, u64>,
        /// The latest calls, oldest first.
        pub recent: Vec<CallRecord>,
    }

    impl CallStats {
        /// Calls made with `method` (e.g. `"DELETE"`).
        pub fn count(&self, method: &str) -> u64 {
            self.by_method.get(method).copied().unwrap_or(0)
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CallRecord {
        pub method: String,
        pub path: String,
        pub status: u16,
    }

    pub struct CallLog {
        stats: Mutex<CallStats>,
        /// Mirrors `stats.total` so tests can wait for calls instead of polling.
        total: watch::Sender<u64>,
    }

    impl CallLog {
        pub fn new() -> Self {
            Self {
                stats: Mutex::new(CallStats::default()),
                total: watch::Sender::new(0),
            }
        }

        pub fn record(&self, record: CallRecord) {
            let total = {
                let mut stats = lock(&self.stats);
                stats.total += 1;
                *stats.by_method.entry(record.method.clone()).or_default() += 1;
                if stats.recent.len() == RECENT_CALLS {
                    stats.recent.remove(0);
                }
                stats.recent.push(record);
                stats.total
            };
            self.total.send_replace(total);
        }

        pub fn snapshot(&self) -> CallStats {
            lock(&self.stats).clone()
        }

        pub fn reset(&self) {
            *lock(&self.stats) = CallStats::default();
            self.total.send_replace(0);
        }

        pub async fn wait_for_total(
            &self,
            at_least: u64,
            timeout: Duration,
        ) -> io::Result<CallStats> {
            let mut total = self.total.subscribe();
            let reached = tokio::time::timeout(timeout, total.wait_for(|total| *total >= at_least))
                .await
                .is_ok_and(|waited| waited.is_ok());
            if reached {
                return Ok(self.snapshot());
            }
            let seen = *total.borrow();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the auth stub saw {seen} calls within {timeout:?}, expected at least {at_least}"
                ),
            ))
        }
    }
}

mod state {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::http::HeaderMap;
    use axum::http::header::AUTHORIZATION;

    use super::calls::CallLog;
    use super::faults::Faults;
    use super::lock;

    /// What the API serves and the control API changes.
    pub struct StubState {
        token: Option<String>,
        /// Tenant id to admin user id.
        tenants: Mutex<BTreeMap<String, String>>,
        faults: Mutex<Faults>,
        pub calls: CallLog,
    }

    pub enum Removal {
        Removed,
        Absent,
    }

    impl StubState {
        pub fn new(token: Option<String>) -> Self {
            Self {
                token,
                tenants: Mutex::new(BTreeMap::new()),
                faults: Mutex::new(Faults::default()),
                calls: CallLog::new(),
            }
        }

        pub fn is_authorized(&self, headers: &HeaderMap) -> bool {
            let Some(expected) = &self.token else {
                return true;
            };
            headers
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .is_some_and(|presented| presented.trim() == expected)
        }

        pub fn faults(&self) -> Faults {
            lock(&self.faults).clone()
        }

        pub fn set_faults(&self, faults: Faults) {
            *lock(&self.faults) = faults;
        }

        /// `false` if the tenant was already there (its admin is left unchanged).
        pub fn insert_tenant(&self, tenant_id: &str, admin_user_id: &str) -> bool {
            let mut tenants = lock(&self.tenants);
            if tenants.contains_key(tenant_id) {
                return false;
            }
            tenants.insert(tenant_id.to_owned(), admin_user_id.to_owned());
            true
        }

        pub fn remove_tenant(&self, tenant_id: &str) -> Removal {
            match lock(&self.tenants).remove(tenant_id) {
                Some(_) => Removal::Removed,
                None => Removal::Absent,
            }
        }

        pub fn tenant_ids(&self) -> Vec<String> {
            lock(&self.tenants).keys().cloned().collect()
        }

        pub fn admin_of(&self, tenant_id: &str) -> Option<String> {
            lock(&self.tenants).get(tenant_id).cloned()
        }
    }
}

mod responses {
    use axum::Json;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde::de::DeserializeOwned;

    /// An error answer: `{"error": message}` with a status.
    #[derive(Debug)]
    pub struct ErrorReply {
        status: StatusCode,
        message: String,
    }

    impl ErrorReply {
        pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
            Self {
                status,
                message: message.into(),
            }
        }
    }

    impl IntoResponse for ErrorReply {
        fn into_response(self) -> Response {
            let body = serde_json::json!({ "error": self.message });
            (self.status, Json(body)).into_response()
        }
    }

    pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
        ErrorReply::new(status, message).into_response()
    }

    /// Parses a JSON body; a malformed one becomes a 400 saying what is wrong.
    pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ErrorReply> {
        serde_json::from_slice(body).map_err(|problem| {
            ErrorReply::new(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {problem}"),
            )
        })
    }
}

mod api {
    //! The tenant API, with faults and the token check in front of it.

    use std::sync::Arc;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Path, Request, State};
    use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
    use axum::http::{HeaderValue, StatusCode};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{delete, get};
    use serde::Deserialize;

    use super::calls::CallRecord;
    use super::faults::Faults;
    use super::responses::{ErrorReply, error, parse_json};
    use super::state::{Removal, StubState};

    pub fn router(state: Arc<StubState>) -> Router {
        Router::new()
            .route("/api/tenants", get(list_tenants).post(register_tenant))
            .route("/api/tenants/{id}", delete(deregister_tenant))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                faults_and_auth,
            ))
            .with_state(state)
    }

    /// Counts the call, answers with an injected failure or a 401 if due, and holds back the
    /// response if the service is slow.
    async fn faults_and_auth(
        State(state): State<Arc<StubState>>,
        request: Request,
        next: Next,
    ) -> Response {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let registering = method == "POST" && path.ends_with("/api/tenants");
        let faults = state.faults();
        let response = match injected_failure(&faults) {
            Some(failure) => failure,
            None if !state.is_authorized(request.headers()) => unauthorized(),
            None => next.run(request).await,
        };
        let status = response.status().as_u16();
        tracing::info!(%method, %path, status, "auth stub call");
        state.calls.record(CallRecord {
            method,
            path,
            status,
        });
        if let Some(delay) = faults.slow {
            tokio::time::sleep(delay).await;
        }
        if let Some(delay) = faults.slow_register.filter(|_| registering) {
            tokio::time::sleep(delay).await;
        }
        response
    }

    fn injected_failure(faults: &Faults) -> Option<Response> {
        if faults.error_500 {
            return Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault: error_500",
            ));
        }
        let limit = faults.rate_limit?;
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "injected fault: rate_limit");
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(limit.retry_after_secs));
        Some(response)
    }

    fn unauthorized() -> Response {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RegisterBody {
        tenant_id: String,
        admin_user_id: String,
    }

    async fn register_tenant(
        State(state): State<Arc<StubState>>,
        body: Bytes,
    ) -> Result<Response, ErrorReply> {
        let registration: RegisterBody = parse_json(&body)?;
        if registration.tenant_id.trim().is_empty() || registration.admin_user_id.trim().is_empty()
        {
            return Err(ErrorReply::new(
                StatusCode::BAD_REQUEST,
                "tenantId and adminUserId must not be empty",
            ));
        }
        if !state.insert_tenant(&registration.tenant_id, &registration.admin_user_id) {
            return Err(ErrorReply::new(
                StatusCode::CONFLICT,
                "tenant already exists",
            ));
        }
        let created = serde_json::json!({ "tenantId": registration.tenant_id });
        Ok((StatusCode::CREATED, axum::Json(created)).into_response())
    }

    async fn list_tenants(State(state): State<Arc<StubState>>) -> Response {
        axum::Json(serde_json::json!({ "tenants": state.tenant_ids() })).into_response()
    }

    async fn deregister_tenant(
        State(state): State<Arc<StubState>>,
        Path(tenant_id): Path<String>,
    ) -> Response {
        let removal = state.remove_tenant(&tenant_id);
        if state.faults().not_found_on_delete {
            return error(StatusCode::NOT_FOUND, "injected fault: not_found_on_delete");
        }
        match removal {
            Removal::Removed => axum::Json(serde_json::json!({})).into_response(),
            Removal::Absent => error(StatusCode::NOT_FOUND, "unknown tenant"),
        }
    }
}

mod control {
    //! `/_stub/...`: read and change the faults, read and reset the call counts.

    use std::sync::{Arc, Weak};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::header::CONNECTION;
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Extension, Json, Router};

    use super::calls::CallStats;
    use super::faults::Faults;
    use super::responses::{ErrorReply, parse_json};
    use super::server::{ConnectionId, Inner};

    /// Weak so the router, owned by the server tasks, does not keep the server alive.
    type StubRef = Weak<Inner>;

    pub fn router(stub: StubRef) -> Router {
        Router::new()
            .route("/_stub/faults", get(get_faults).put(put_faults))
            .route("/_stub/calls", get(get_calls).delete(reset_calls))
            .with_state(stub)
    }

    fn upgrade(stub: &StubRef) -> Result<Arc<Inner>, ErrorReply> {
        stub.upgrade().ok_or_else(|| {
            ErrorReply::new(StatusCode::SERVICE_UNAVAILABLE, "the stub is shutting down")
        })
    }

    async fn get_faults(State(stub): State<StubRef>) -> Result<Json<Faults>, ErrorReply> {
        Ok(Json(upgrade(&stub)?.state.faults()))
    }

    async fn put_faults(
        State(stub): State<StubRef>,
        Extension(connection): Extension<ConnectionId>,
        body: Bytes,
    ) -> Result<Response, ErrorReply> {
        let faults: Faults = parse_json(&body)?;
        let inner = upgrade(&stub)?;
        inner
            .apply_faults(faults.clone(), Some(connection))
            .await
            .map_err(|problem| {
                ErrorReply::new(StatusCode::INTERNAL_SERVER_ERROR, problem.to_string())
            })?;
        let down = faults.down;
        let mut response = Json(faults).into_response();
        if down {
            // Lets the client see the answer before this connection goes away with the rest.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(response)
    }

    async fn get_calls(State(stub): State<StubRef>) -> Result<Json<CallStats>, ErrorReply> {
        Ok(Json(upgrade(&stub)?.state.calls.snapshot()))
    }

    async fn reset_calls(State(stub): State<StubRef>) -> Result<StatusCode, ErrorReply> {
        upgrade(&stub)?.state.calls.reset();
        Ok(StatusCode::NO_CONTENT)
    }
}

mod listener {
    //! Serving one listener with every connection tracked, so that going down can really close
    //! them all (hyper's graceful shutdown would let in-flight requests finish).

    use std::collections::HashMap;
    use std::mem;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::{Extension, Router};
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::lock;
    use super::server::ConnectionId;

    type Connections = Arc<Mutex<HashMap<ConnectionId, JoinHandle<()>>>>;

    /// A listener being served; dropping it detaches the tasks, [`Serving::stop`] ends them.
    pub struct Serving {
        accept_loop: JoinHandle<()>,
        connections: Connections,
    }

    impl Serving {
        pub fn start(listener: TcpListener, router: Router) -> Self {
            let connections = Connections::default();
            let accept_loop = tokio::spawn(accept_loop(listener, router, connections.clone()));
            Self {
                accept_loop,
                connections,
            }
        }

        /// Closes the listener, then every connection but `spare`, and waits until they are gone.
        pub async fn stop(self, spare: Option<ConnectionId>) {
            self.accept_loop.abort();
            // Awaiting an aborted task returns once its future, and so the listener, is dropped.
            let _ = self.accept_loop.await;
            let connections = mem::take(&mut *lock(&self.connections));
            for (id, connection) in connections {
                if Some(id) == spare {
                    continue;
                }
                connection.abort();
                let _ = connection.await;
            }
        }
    }

    async fn accept_loop(listener: TcpListener, router: Router, connections: Connections) {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    let id = next_connection_id();
                    let task = tokio::spawn(serve_connection(stream, router.clone(), id));
                    let mut connections = lock(&connections);
                    connections.retain(|_, task| !task.is_finished());
                    connections.insert(id, task);
                }
                Err(problem) => {
                    tracing::warn!(error = %problem, "auth stub failed to accept a connection");
                    // Such errors (e.g. out of file descriptors) tend to persist; do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_connection(stream: TcpStream, router: Router, id: ConnectionId) {
        let service = TowerToHyperService::new(router.layer(Extension(id)));
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        if let Err(problem) = served {
            tracing::debug!(error = %problem, "auth stub connection ended with an error");
        }
    }

    fn next_connection_id() -> ConnectionId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

mod server {
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use tokio::net::TcpListener;
    use tokio::sync::Mutex;

    use super::calls::CallStats;
    use super::faults::Faults;
    use super::listener::Serving;
    use super::state::StubState;
    use super::{api, control};

    /// Identifies an accepted connection, so a request can spare its own when going down.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ConnectionId(pub u64);

    /// Where and how to start the stub.
    #[derive(Debug, Clone)]
    pub struct AuthStubOptions {
        /// API address (control routes are served there too); port 0 picks a free port.
        pub addr: SocketAddr,
        /// Bearer token the API requires; `None` accepts every call.
        pub token: Option<String>,
        /// Optional second address serving only `/_stub/...`, which stays up while the API is
        /// down, so `down` can be undone over HTTP.
        pub admin_addr: Option<SocketAddr>,
    }

    /// Starts stubs; see the module documentation.
    pub struct AuthStub;

    impl AuthStub {
        /// Serves the API and control routes on `addr` (port 0 picks a free port).
        pub async fn start(addr: SocketAddr, token: Option<String>) -> io::Result<AuthStubHandle> {
            Self::start_with(AuthStubOptions {
                addr,
                token,
                admin_addr: None,
            })
            .await
        }

        pub async fn start_with(options: AuthStubOptions) -> io::Result<AuthStubHandle> {
            let api_listener = bind(options.addr).await?;
            let admin_listener = match options.admin_addr {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            };
            let inner = Arc::new(Inner {
                state: Arc::new(StubState::new(options.token)),
                addr: api_listener.local_addr()?,
                admin_addr: admin_listener
                    .as_ref()
                    .map(TcpListener::local_addr)
                    .transpose()?,
                lifecycle: Mutex::new(Lifecycle::default()),
            });
            {
                let mut lifecycle = inner.lifecycle.lock().await;
                lifecycle.api = Some(Serving::start(api_listener, inner.api_router()));
                lifecycle.admin =
                    admin_listener.map(|listener| Serving::start(listener, inner.control_router()));
            }
            tracing::info!(addr = %inner.addr, admin_addr = ?inner.admin_addr, "auth stub started");
            Ok(AuthStubHandle { inner })
        }
    }

    /// Controls a running stub. Clones control the same stub.
    #[derive(Clone)]
    pub struct AuthStubHandle {
        inner: Arc<Inner>,
    }

    impl AuthStubHandle {
        /// The API address; it stays the same across down/up.
        pub fn addr(&self) -> SocketAddr {
            self.inner.addr
        }

        /// `http://{addr}`, the base URL for an Auth client.
        pub fn url(&self) -> String {
            format!("http://{}", self.inner.addr)
        }

        /// The admin-only listener's address, if one was asked for.
        pub fn admin_addr(&self) -> Option<SocketAddr> {
            self.inner.admin_addr
        }

        pub fn faults(&self) -> Faults {
            self.inner.state.faults()
        }

        /// Replaces the faults. Returns once they are in force: after `down`, the port is
        /// closed and every connection dropped; after `down: false`, the same port is bound
        /// again (which fails if something else took it meanwhile).
        pub async fn set_faults(&self, faults: Faults) -> io::Result<()> {
            self.inner.apply_faults(faults, None).await
        }

        /// Registered tenant ids, sorted.
        pub fn tenants(&self) -> Vec<String> {
            self.inner.state.tenant_ids()
        }

        /// The admin user a tenant was registered with.
        pub fn tenant_admin(&self, tenant_id: &str) -> Option<String> {
            self.inner.state.admin_of(tenant_id)
        }

        pub fn calls(&self) -> CallStats {
            self.inner.state.calls.snapshot()
        }

        pub fn reset_calls(&self) {
            self.inner.state.calls.reset();
        }

        /// Waits until the API has received at least `at_least` calls since start or reset.
        pub async fn wait_for_calls(
            &self,
            at_least: u64,
            timeout: Duration,
        ) -> io::Result<CallStats> {
            self.inner
                .state
                .calls
                .wait_for_total(at_least, timeout)
                .await
        }

        /// Closes both listeners and every connection; later `set_faults` calls fail.
        pub async fn shutdown(&self) {
            let mut lifecycle = self.inner.lifecycle.lock().await;
            lifecycle.shut_down = true;
            if let Some(api) = lifecycle.api.take() {
                api.stop(None).await;
            }
            if let Some(admin) = lifecycle.admin.take() {
                admin.stop(None).await;
            }
            tracing::info!(addr = %self.inner.addr, "auth stub stopped");
        }
    }

    pub struct Inner {
        pub state: Arc<StubState>,
        addr: SocketAddr,
        admin_addr: Option<SocketAddr>,
        /// Async because going down waits for connections to close; also serializes changes.
        lifecycle: Mutex<Lifecycle>,
    }

    #[derive(Default)]
    struct Lifecycle {
        api: Option<Serving>,
        admin: Option<Serving>,
        shut_down: bool,
    }

    impl Inner {
        fn api_router(self: &Arc<Self>) -> Router {
            api::router(self.state.clone()).merge(self.control_router())
        }

        fn control_router(self: &Arc<Self>) -> Router {
            control::router(Arc::downgrade(self))
        }

        /// Brings the API listener down or up as `faults.down` says, then stores the faults.
        /// `spare` is the connection asking, left open so it can receive the answer.
        pub async fn apply_faults(
            self: &Arc<Self>,
            faults: Faults,
            spare: Option<ConnectionId>,
        ) -> io::Result<()> {
            let mut lifecycle = self.lifecycle.lock().await;
            if lifecycle.shut_down {
                return Err(io::Error::other("the auth stub was shut down"));
            }
            match (faults.down, lifecycle.api.take()) {
                (true, Some(serving)) => {
                    serving.stop(spare).await;
                    tracing::info!(addr = %self.addr, "auth stub API is down");
                }
                (false, None) => {
                    let listener = bind(self.addr).await?;
                    lifecycle.api = Some(Serving::start(listener, self.api_router()));
                    tracing::info!(addr = %self.addr, "auth stub API is up again");
                }
                (_, unchanged) => lifecycle.api = unchanged,
            }
            self.state.set_faults(faults);
            Ok(())
        }
    }

    async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await.map_err(|problem| {
            io::Error::new(
                problem.kind(),
                format!("auth stub cannot listen on {addr}: {problem}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use super::*;

    const TOKEN: &str = "stub-token";

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    async fn start(token: Option<&str>) -> AuthStubHandle {
        AuthStub::start(loopback(), token.map(str::to_owned))
            .await
            .expect("stub starts")
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn register(http: &reqwest::Client, base: &str, tenant: &str) -> reqwest::Response {
        http.post(format!("{base}/api/tenants"))
            .json(&json!({ "tenantId": tenant, "adminUserId": "admin" }))
            .send()
            .await
            .expect("POST answered")
    }

    async fn status(request: reqwest::RequestBuilder) -> StatusCode {
        request.send().await.expect("answered").status()
    }

    async fn json_body(request: reqwest::RequestBuilder) -> Value {
        request
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON body")
    }

    async fn put_faults(http: &reqwest::Client, base: &str, faults: Value) -> reqwest::Response {
        http.put(format!("{base}/_stub/faults"))
            .json(&faults)
            .send()
            .await
            .expect("PUT answered")
    }

    async fn set(stub: &AuthStubHandle, faults: Faults) {
        stub.set_faults(faults).await.expect("faults applied");
    }

    fn down() -> Faults {
        Faults {
            down: true,
            ..Faults::default()
        }
    }

    fn assert_refused(result: reqwest::Result<reqwest::Response>) {
        match result {
            Ok(response) => panic!("expected a refused connection, got {}", response.status()),
            Err(error) => assert!(error.is_connect(), "expected a connect error: {error:?}"),
        }
    }

    #[tokio::test]
    async fn the_tenant_api_registers_lists_and_deregisters() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());

        assert_eq!(
            register(&http, &base, "beta").await.status(),
            StatusCode::CREATED
        );
        assert_eq!(
            register(&http, &base, "alpha").await.status(),
            StatusCode::CREATED
        );
        assert_eq!(
            register(&http, &base, "alpha").await.status(),
            StatusCode::CONFLICT
        );
        let listed = json_body(http.get(format!("{base}/api/tenants"))).await;
        assert_eq!(listed, json!({ "tenants": ["alpha", "beta"] }));

        let delete_alpha = || http.delete(format!("{base}/api/tenants/alpha"));
        assert_eq!(status(delete_alpha()).await, StatusCode::OK);
        assert_eq!(status(delete_alpha()).await, StatusCode::NOT_FOUND);
        assert_eq!(stub.tenants(), ["beta"]);
        assert_eq!(stub.tenant_admin("beta").as_deref(), Some("admin"));
    }

    #[tokio::test]
    async fn bad_bodies_are_answered_400_with_a_message() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());
        let post = |body: &'static str| http.post(format!("{base}/api/tenants")).body(body);

        for body in [
            "not json",
            r#"{"tenantId": "acme"}"#,
            r#"{"tenantId": "", "adminUserId": "a"}"#,
        ] {
            let response = post(body).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            let answer: Value = response.json().await.unwrap();
            assert!(
                answer["error"].as_str().is_some_and(|m| !m.is_empty()),
                "{answer}"
            );
        }
        let put = |body: &'static str| http.put(format!("{base}/_stub/faults")).body(body);
        assert_eq!(status(put("{")).await, StatusCode::BAD_REQUEST);
        assert_eq!(
            status(put(r#"{"dwon": true}"#)).await,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(put(r#"{"slow_ms": -1}"#)).await,
            StatusCode::BAD_REQUEST
        );
        assert!(stub.tenants().is_empty());
        assert_eq!(stub.faults(), Faults::default());
    }

    #[tokio::test]
    async fn a_configured_token_is_required_by_the_api_only() {
        let stub = start(Some(TOKEN)).await;
        let (http, base) = (http(), stub.url());
        let list = || http.get(format!("{base}/api/tenants"));

        assert_eq!(status(list()).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(list().bearer_auth("wrong")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(list().basic_auth(TOKEN, None::<&str>)).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(status(list().bearer_auth(TOKEN)).await, StatusCode::OK);
        assert_eq!(
            status(http.get(format!("{base}/_stub/faults"))).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn slow_delays_every_api_response() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());
        let delay = Duration::from_millis(300);
        set(
            &stub,
            Faults {
                slow: Some(delay),
                ..Faults::default()
            },
        )
        .await;

        let started = Instant::now();
        assert_eq!(
            register(&http, &base, "acme").await.status(),
            StatusCode::CREATED
        );
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        let started = Instant::now();
        assert_eq!(
            status(http.get(format!("{base}/api/tenants"))).await,
            StatusCode::OK
        );
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn error_500_fails_every_api_call_but_not_the_control_api() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());
        let reply = put_faults(&http, &base, json!({ "error_500": true })).await;
        assert_eq!(reply.status(), StatusCode::OK);

        assert_eq!(
            register(&http, &base, "acme").await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let list = http.get(format!("{base}/api/tenants"));
        assert_eq!(status(list).await, StatusCode::INTERNAL_SERVER_ERROR);
        let delete = http.delete(format!("{base}/api/tenants/acme"));
        assert_eq!(status(delete).await, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(stub.tenants().is_empty());
        let faults = json_body(http.get(format!("{base}/_stub/faults"))).await;
        assert_eq!(faults["error_500"], json!(true));
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());
        set(
            &stub,
            Faults {
                rate_limit: Some(RateLimit {
                    retry_after_secs: 7,
                }),
                ..Faults::default()
            },
        )
        .await;

        let response = register(&http, &base, "acme").await;

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
        assert!(stub.tenants().is_empty());
    }

    #[tokio::test]
    async fn not_found_on_delete_removes_the_tenant_but_answers_404() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());
        register(&http, &base, "acme").await;
        put_faults(&http, &base, json!({ "not_found_on_delete": true })).await;

        let delete = http.delete(format!("{base}/api/tenants/acme"));
        assert_eq!(status(delete).await, StatusCode::NOT_FOUND);
        assert!(stub.tenants().is_empty());
    }

    #[tokio::test]
    async fn down_refuses_connections_and_up_rebinds_the_same_port() {
        let stub = start(None).await;
        let (pooled, base) = (http(), stub.url());
        let addr = stub.addr();
        assert_eq!(
            register(&pooled, &base, "acme").await.status(),
            StatusCode::CREATED
        );

        set(&stub, down()).await;
        assert_refused(http().get(format!("{base}/api/tenants")).send().await);
        // The kept-alive connection was closed too, so no request gets through.
        assert!(
            pooled
                .get(format!("{base}/api/tenants"))
                .send()
                .await
                .is_err()
        );
        assert!(stub.faults().down);

        set(&stub, Faults::default()).await;
        assert_eq!(stub.addr(), addr);
        let listed = json_body(pooled.get(format!("{base}/api/tenants"))).await;
        assert_eq!(listed, json!({ "tenants": ["acme"] }));
    }

    #[tokio::test]
    async fn down_cuts_requests_in_flight() {
        let stub = start(None).await;
        let base = stub.url();
        set(
            &stub,
            Faults {
                slow: Some(Duration::from_secs(30)),
                ..Faults::default()
            },
        )
        .await;
        let in_flight = tokio::spawn(http().get(format!("{base}/api/tenants")).send());
        stub.wait_for_calls(1, Duration::from_secs(5))
            .await
            .unwrap();

        set(&stub, down()).await;

        let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight).await;
        assert!(outcome.expect("cut, not left hanging").unwrap().is_err());
    }

    #[tokio::test]
    async fn down_over_http_is_answered_before_the_port_closes() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());

        let reply = put_faults(&http, &base, json!({ "down": true })).await;

        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers()["connection"], "close");
        assert_refused(http.get(format!("{base}/_stub/faults")).send().await);
        set(&stub, Faults::default()).await;
        assert_eq!(
            status(http.get(format!("{base}/api/tenants"))).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_admin_listener_can_bring_the_api_back() {
        let options = AuthStubOptions {
            addr: loopback(),
            token: None,
            admin_addr: Some(loopback()),
        };
        let stub = AuthStub::start_with(options).await.unwrap();
        let admin = format!("http://{}", stub.admin_addr().unwrap());
        let (http, base) = (http(), stub.url());
        let admin_only = http.get(format!("{admin}/api/tenants"));
        assert_eq!(status(admin_only).await, StatusCode::NOT_FOUND);

        assert_eq!(
            put_faults(&http, &admin, json!({ "down": true }))
                .await
                .status(),
            StatusCode::OK
        );
        assert_refused(http.get(format!("{base}/api/tenants")).send().await);
        assert_eq!(
            put_faults(&http, &admin, json!({})).await.status(),
            StatusCode::OK
        );

        assert_eq!(
            status(http.get(format!("{base}/api/tenants"))).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn calls_are_counted_per_method_and_can_be_reset() {
        let stub = start(Some(TOKEN)).await;
        let (http, base) = (http(), stub.url());
        register(&http, &base, "acme").await;
        for _ in 0..2 {
            http.get(format!("{base}/api/tenants"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
        }
        http.delete(format!("{base}/api/tenants/acme"))
            .send()
            .await
            .unwrap();

        let stats: CallStats = json_body(http.get(format!("{base}/_stub/calls")))
            .await
            .as_object()
            .map(|object| serde_json::from_value(Value::Object(object.clone())).unwrap())
            .unwrap();
        assert_eq!(stats, stub.calls());
        assert_eq!(
            (stats.total, stats.count("GET"), stats.count("POST")),
            (4, 2, 1)
        );
        assert_eq!(stats.count("DELETE"), 1);
        let last = stats.recent.last().unwrap();
        assert_eq!(
            (last.method.as_str(), last.path.as_str()),
            ("DELETE", "/api/tenants/acme")
        );
        assert_eq!(last.status, 401);

        assert_eq!(
            status(http.delete(format!("{base}/_stub/calls"))).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(stub.calls(), CallStats::default());
    }

    #[tokio::test]
    async fn waiting_for_calls_times_out_with_a_clear_error() {
        let stub = start(None).await;
        let error = stub
            .wait_for_calls(1, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("expected at least 1"), "{error}");
    }

    #[tokio::test]
    async fn shutdown_closes_the_port_for_good() {
        let stub = start(None).await;
        let base = stub.url();

        stub.shutdown().await;

        assert_refused(http().get(format!("{base}/api/tenants")).send().await);
        assert!(stub.set_faults(Faults::default()).await.is_err());
    }

    #[tokio::test]
    async fn slow_register_holds_only_registrations_after_they_took_effect() {
        let stub = start(None).await;
        let (http, base) = (http(), stub.url());
        let delay = Duration::from_millis(300);
        set(
            &stub,
            Faults {
                slow_register: Some(delay),
                ..Faults::default()
            },
        )
        .await;

        let started = Instant::now();
        let registering = tokio::spawn({
            let (http, base) = (http.clone(), base.clone());
            async move { register(&http, &base, "acme").await.status() }
        });
        stub.wait_for_calls(1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(stub.tenants(), ["acme"], "registered before the answer");
        assert_eq!(registering.await.unwrap(), StatusCode::CREATED);
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());

        let started = Instant::now();
        assert_eq!(
            status(http.get(format!("{base}/api/tenants"))).await,
            StatusCode::OK
        );
        assert!(started.elapsed() < delay, "{:?}", started.elapsed());
    }

    #[test]
    fn faults_use_a_flat_json_form() {
        let faults = Faults {
            slow: Some(Duration::from_millis(1500)),
            rate_limit: Some(RateLimit {
                retry_after_secs: 2,
            }),
            ..Faults::default()
        };
        let encoded = serde_json::to_value(&faults).unwrap();
        assert_eq!(
            encoded,
            json!({
                "down": false, "slow_ms": 1500, "error_500": false,
                "rate_limit": { "retry_after_secs": 2 }, "not_found_on_delete": false
            })
        );
        assert_eq!(serde_json::from_value::<Faults>(encoded).unwrap(), faults);
        assert_eq!(
            serde_json::from_value::<Faults>(json!({})).unwrap(),
            Faults::default()
        );
    }
}
