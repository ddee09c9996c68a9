//! The operator's client for the NeuralLog Auth service tenant API:
//! `POST /api/tenants`, `GET /api/tenants` and `DELETE /api/tenants/{id}`, with bearer-token auth.
//!
//! Every call retries transient failures (connection errors, timeouts, 5xx, 408, 429) with
//! jittered exponential backoff, within a bounded number of attempts and a wall-clock budget
//! (twice the request timeout by default), so one reconcile is never held up for long: the
//! reconciler re-queues on failure anyway. Anything else (400, 401, 403, other 4xx) is returned
//! at once. Registration and deregistration are idempotent: 409 on register and 404 on
//! deregister are successes.
//!
//! Errors name the URL and the cause, never the token.

pub use self::client::{AuthClient, Deregistration, Registration};
pub use self::config::{AuthConfig, DEFAULT_TIMEOUT, RetryPolicy, load_token_file};
pub use self::error::AuthError;

mod config {
    use std::fmt;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use reqwest::Url;

    use super::error::AuthError;

    /// Per-request timeout unless configured otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The largest answer read from Auth unless configured otherwise: a tenant list of tens
    /// of thousands of names fits; a misbehaving server cannot make the operator buffer more.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

    /// Where the Auth service is and how to talk to it.
    ///
    /// `Debug` redacts the token.
    #[derive(Clone)]
    pub struct AuthConfig {
        /// Base URL; the API lives under `{base_url}/api/tenants`.
        pub base_url: Url,
        /// Bearer token sent with every call, if the service requires one.
        pub token: Option<String>,
        /// Where the token was read from: re-read when the file changes (a rotated Secret).
        pub token_file: Option<PathBuf>,
        /// Timeout of one HTTP request (connect included).
        pub timeout: Duration,
        /// Admin user registered for tenants that do not name one.
        pub admin_user_id: String,
        pub retry: RetryPolicy,
        /// Answers larger than this are refused, not read.
        pub max_body_bytes: usize,
    }

    impl AuthConfig {
        /// A configuration with no token, the default timeout and the default retry policy.
        pub fn new(base_url: &str, admin_user_id: impl Into<String>) -> Result<Self, AuthError> {
            Ok(Self {
                base_url: parse_base_url(base_url)?,
                token: None,
                token_file: None,
                timeout: DEFAULT_TIMEOUT,
                admin_user_id: admin_user_id.into(),
                retry: RetryPolicy::default(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            })
        }

        pub fn with_max_body_bytes(mut self, max: usize) -> Self {
            self.max_body_bytes = max;
            self
        }

        /// Whether the bearer token would travel unencrypted (an `http://` URL).
        pub fn sends_token_in_clear(&self) -> bool {
            self.token.is_some() && self.base_url.scheme() == "http"
        }

        pub fn with_token(mut self, token: impl Into<String>) -> Self {
            self.token = Some(token.into());
            self
        }

        /// Reads the token from a file (see [`load_token_file`]), and again whenever the
        /// file changes.
        pub fn with_token_file(self, path: impl AsRef<Path>) -> Result<Self, AuthError> {
            let path = path.as_ref();
            let mut config = self.with_token(load_token_file(path)?);
            config.token_file = Some(path.to_path_buf());
            Ok(config)
        }

        pub fn with_timeout(mut self, timeout: Duration) -> Self {
            self.timeout = timeout;
            self
        }

        pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
            self.retry = retry;
            self
        }

        /// Wall-clock budget of one call, attempts and backoff sleeps together.
        pub fn call_budget(&self) -> Duration {
            self.retry
                .max_elapsed
                .unwrap_or_else(|| self.timeout.saturating_mul(2))
        }

        /// Checks what `new` cannot see because the fields are public.
        pub(crate) fn validate(&self) -> Result<(), AuthError> {
            validate_base_url(&self.base_url)?;
            if self.timeout.is_zero() {
                return Err(AuthError::Config(
                    "the auth request timeout must be above zero".into(),
                ));
            }
            if self
                .token
                .as_deref()
                .is_some_and(|token| token.trim().is_empty())
            {
                return Err(AuthError::Config("the auth token is empty".into()));
            }
            Ok(())
        }
    }

    impl fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AuthConfig")
                .field("base_url", &self.base_url.as_str())
                .field("token", &self.token.as_ref().map(|_| "<redacted>"))
                .field("timeout", &self.timeout)
                .field("admin_user_id", &self.admin_user_id)
                .field("retry", &self.retry)
                .finish()
        }
    }

    /// How one call retries transient failures.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RetryPolicy {
        /// Attempts per call, the first included; 1 disables retries.
        pub max_attempts: usize,
        /// First backoff delay; each later one doubles, plus up to 100% jitter.
        pub min_delay: Duration,
        /// Cap of one backoff delay (before jitter).
        pub max_delay: Duration,
        /// Budget of one call, attempts and sleeps together; `None` means twice the timeout.
        pub max_elapsed: Option<Duration>,
        /// Longest `Retry-After` the client waits out inside a call; a longer one ends the
        /// call with [`AuthError::RateLimited`] so the caller can re-queue for that long.
        pub max_retry_after: Duration,
    }

    impl RetryPolicy {
        /// One attempt per call.
        pub fn no_retries() -> Self {
            Self {
                max_attempts: 1,
                ..Self::default()
            }
        }
    }

    impl Default for RetryPolicy {
        fn default() -> Self {
            Self {
                max_attempts: 3,
                min_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                max_elapsed: None,
                max_retry_after: Duration::from_secs(2),
            }
        }
    }

    /// Reads a bearer token from a file, trimming surrounding whitespace (files usually end
    /// with a newline). Fails with [`AuthError::Config`] naming the path if the file cannot
    /// be read or holds only whitespace.
    pub fn load_token_file(path: impl AsRef<Path>) -> Result<String, AuthError> {
        let path = path.as_ref();
        let contents = std::fs::read_to_string(path).map_err(|error| {
            AuthError::Config(format!(
                "cannot read the auth token file {}: {error}",
                path.display()
            ))
        })?;
        let token = contents.trim();
        if token.is_empty() {
            return Err(AuthError::Config(format!(
                "the auth token file {} is empty",
                path.display()
            )));
        }
        Ok(token.to_owned())
    }

    fn parse_base_url(base_url: &str) -> Result<Url, AuthError> {
        let url = Url::parse(base_url).map_err(|error| {
            AuthError::Config(format!("invalid auth service URL {base_url:?}: {error}"))
        })?;
        validate_base_url(&url)?;
        Ok(url)
    }

    fn validate_base_url(url: &Url) -> Result<(), AuthError> {
        let usable = matches!(url.scheme(), "http" | "https") && url.has_host();
        if !usable {
            return Err(AuthError::Config(format!(
                "the auth service URL {} must be an http or https URL with a host",
                super::url_for_display(url)
            )));
        }
        Ok(())
    }
}

mod error {
    use std::time::Duration;

    /// Why a call to the Auth service failed.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum AuthError {
        /// Could not connect, timed out, or answered 5xx, on every attempt the policy allowed.
        #[error("auth service at {url} is unavailable: {reason}")]
        Unavailable { url: String, reason: String },
        /// Answered 429 on the last attempt.
        #[error("auth service at {url} is rate limiting the operator{}", retry_hint(*.retry_after))]
        RateLimited {
            url: String,
            retry_after: Option<Duration>,
        },
        /// Answered 401 or 403: the token is missing, wrong or not allowed.
        #[error(
            "auth service at {url} refused the operator's credentials (HTTP {status}); check the auth token"
        )]
        Unauthorized { url: String, status: u16 },
        /// Answered another status that retrying will not change (400, 404, 405, ...).
        #[error("auth service at {url} rejected the request with HTTP {status}: {body}")]
        Rejected {
            url: String,
            status: u16,
            /// The start of the response body.
            body: String,
        },
        /// The client or a call's arguments are unusable (bad URL, unreadable token file, ...).
        #[error("auth client configuration error: {0}")]
        Config(String),
    }

    impl AuthError {
        /// A stable CamelCase reason for status conditions, events and metrics.
        pub fn reason(&self) -> &'static str {
            match self {
                Self::Unavailable { .. } => "AuthUnavailable",
                Self::RateLimited { .. } => "AuthRateLimited",
                Self::Unauthorized { .. } => "AuthUnauthorized",
                Self::Rejected { .. } => "AuthRejected",
                Self::Config(_) => "AuthMisconfigured",
            }
        }

        /// How long the service asked the caller to wait before trying again, if it said.
        pub fn retry_after(&self) -> Option<Duration> {
            match self {
                Self::RateLimited { retry_after, .. } => *retry_after,
                _ => None,
            }
        }

        /// Whether the same call may succeed later without anyone changing anything.
        pub fn is_transient(&self) -> bool {
            matches!(self, Self::Unavailable { .. } | Self::RateLimited { .. })
        }
    }

    fn retry_hint(retry_after: Option<Duration>) -> String {
        match retry_after {
            Some(wait) => format!(" (retry after {}s)", wait.as_secs_f64()),
            None => String::new(),
        }
    }
}

mod retry {
    //! Which attempt failures are retried, and how long to wait before the next attempt.

    use std::time::Duration;

    use backon::ExponentialBuilder;
    use tokio::time::Instant;

    use super::config::RetryPolicy;
    use super::error::AuthError;

    /// The failure of one attempt, sorted by whether another attempt may help.
    #[derive(Debug)]
    pub enum AttemptFailure {
        Transient(AuthError),
        Final(AuthError),
    }

    impl AttemptFailure {
        pub fn is_transient(&self) -> bool {
            matches!(self, Self::Transient(_))
        }

        pub fn error(&self) -> &AuthError {
            match self {
                Self::Transient(error) | Self::Final(error) => error,
            }
        }

        /// The error the caller sees once no attempt is left.
        pub fn into_error(self, attempts: usize) -> AuthError {
            match self {
                Self::Transient(AuthError::Unavailable { url, reason }) if attempts > 1 => {
                    AuthError::Unavailable {
                        url,
                        reason: format!("{reason} (gave up after {attempts} attempts)"),
                    }
                }
                Self::Transient(error) | Self::Final(error) => error,
            }
        }
    }

    pub fn backoff(policy: &RetryPolicy) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.max_attempts.saturating_sub(1))
    }

    /// The sleep before the next attempt, or `None` to stop: no attempts left, a `Retry-After`
    /// above the cap, or a sleep that would use up what is left of the call's budget.
    pub fn next_delay(
        policy: &RetryPolicy,
        error: &AuthError,
        backoff_delay: Option<Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        let mut delay = backoff_delay?;
        if let Some(wait) = error.retry_after() {
            if wait > policy.max_retry_after {
                return None;
            }
            delay = delay.max(wait);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        (delay < remaining).then_some(delay)
    }

    /// Parses `Retry-After`: delay-seconds or an HTTP date. `None` when absent or unreadable.
    pub fn parse_retry_after(value: &str) -> Option<Duration> {
        let value = value.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let wait = date.signed_duration_since(chrono::Utc::now());
        Some(wait.to_std().unwrap_or(Duration::ZERO))
    }
}

mod client {
    use std::fmt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use backon::Retryable;
    use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
    use reqwest::{Method, StatusCode, Url};
    use serde::{Deserialize, Serialize};
    use tokio::time::Instant;

    use super::config::{AuthConfig, RetryPolicy, load_token_file};
    use super::error::AuthError;
    use super::retry::{self, AttemptFailure};
    use super::{describe_transport_error, summarize_body, url_for_display};

    /// Outcome of [`AuthClient::register`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Registration {
        Created,
        /// The service answered 409: the tenant was registered before.
        AlreadyExisted,
    }

    /// Outcome of [`AuthClient::deregister`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Deregistration {
        Removed,
        /// The service answered 404: the tenant was not (or no longer) registered.
        WasAbsent,
    }

    /// A client of the Auth service tenant API. Cheap to clone; clones share connections.
    #[derive(Clone)]
    pub struct AuthClient {
        http: reqwest::Client,
        base_url: Url,
        admin_user_id: String,
        timeout: Duration,
        budget: Duration,
        retry: RetryPolicy,
        /// Sent as the bearer token, and scrubbed from echoed response bodies.
        token: Arc<Mutex<Option<String>>>,
        token_file: Option<Arc<TokenFile>>,
        max_body_bytes: usize,
    }

    /// The token's file and how it looked when last read.
    struct TokenFile {
        path: PathBuf,
        read_as: Mutex<Option<FileStamp>>,
    }

    /// Modification time and size: a rewritten or swapped (Secret volume) file differs.
    type FileStamp = (Option<std::time::SystemTime>, u64);

    fn stamp_of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok(), meta.len()))
    }

    fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RegisterRequest<'a> {
        tenant_id: &'a str,
        admin_user_id: &'a str,
    }

    #[derive(Deserialize)]
    struct TenantList {
        tenants: Vec<String>,
    }

    /// One API call, re-sent as is by every attempt.
    struct Call<'a> {
        method: Method,
        url: Url,
        json_body: Option<Vec<u8>>,
        /// Non-2xx statuses that answer the call rather than fail it.
        accepted: &'a [StatusCode],
    }

    /// A response whose status answers the call.
    struct Reply {
        status: StatusCode,
        body: Vec<u8>,
    }

    impl AuthClient {
        pub fn new(config: AuthConfig) -> Result<Self, AuthError> {
            config.validate()?;
            if let Some(token) = &config.token {
                bearer(token)?;
            }
            if config.sends_token_in_clear() {
                tracing::warn!(
                    url = %url_for_display(&config.base_url),
                    "the Auth token is sent over plain HTTP: use an https:// Auth URL outside a trusted network"
                );
            }
            let http = reqwest::Client::builder()
                .use_rustls_tls()
                .timeout(config.timeout)
                .connect_timeout(config.timeout)
                // A redirect would be a misconfigured URL; following it could send the token elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| {
                    AuthError::Config(format!("cannot build the HTTP client: {error}"))
                })?;
            Ok(Self {
                http,
                budget: config.call_budget(),
                base_url: config.base_url,
                admin_user_id: config.admin_user_id,
                timeout: config.timeout,
                retry: config.retry,
                token_file: config.token_file.map(|path| {
                    Arc::new(TokenFile {
                        read_as: Mutex::new(stamp_of(&path)),
                        path,
                    })
                }),
                token: Arc::new(Mutex::new(config.token)),
                max_body_bytes: config.max_body_bytes,
            })
        }

        pub fn base_url(&self) -> &Url {
            &self.base_url
        }

        /// The admin user to register for tenants that do not name one.
        pub fn default_admin_user_id(&self) -> &str {
            &self.admin_user_id
        }

        /// Registers a tenant; registering an existing tenant is not an error.
        pub async fn register(
            &self,
            tenant_id: &str,
            admin_user_id: &str,
        ) -> Result<Registration, AuthError> {
            let body = RegisterRequest {
                tenant_id: checked_tenant_id(tenant_id)?,
                admin_user_id,
            };
            let json_body = serde_json::to_vec(&body).map_err(|error| {
                AuthError::Config(format!("cannot encode the registration: {error}"))
            })?;
            let call = Call {
                method: Method::POST,
                url: self.tenants_url(None)?,
                json_body: Some(json_body),
                accepted: &[StatusCode::CONFLICT],
            };
            let reply = self.execute(&call).await?;
            Ok(match reply.status {
                StatusCode::CONFLICT => Registration::AlreadyExisted,
                _ => Registration::Created,
            })
        }

        /// Deregisters a tenant; deregistering an unknown tenant is not an error.
        pub async fn deregister(&self, tenant_id: &str) -> Result<Deregistration, AuthError> {
            let call = Call {
                method: Method::DELETE,
                url: self.tenants_url(Some(checked_tenant_id(tenant_id)?))?,
                json_body: None,
                accepted: &[StatusCode::NOT_FOUND],
            };
            let reply = self.execute(&call).await?;
            Ok(match reply.status {
                StatusCode::NOT_FOUND => Deregistration::WasAbsent,
                _ => Deregistration::Removed,
            })
        }

        /// The ids of all registered tenants, in the service's order.
        pub async fn list(&self) -> Result<Vec<String>, AuthError> {
            let call = Call {
                method: Method::GET,
                url: self.tenants_url(None)?,
                json_body: None,
                accepted: &[],
            };
            let reply = self.execute(&call).await?;
            let list: TenantList =
                serde_json::from_slice(&reply.body).map_err(|error| AuthError::Unavailable {
                    url: url_for_display(&call.url),
                    reason: format!("unexpected tenant list body: {error}"),
                })?;
            Ok(list.tenants)
        }

        /// `{base}/api/tenants` or `{base}/api/tenants/{id}`, the id percent-encoded.
        pub(super) fn tenants_url(&self, tenant_id: Option<&str>) -> Result<Url, AuthError> {
            let mut url = self.base_url.clone();
            {
                let mut segments = url.path_segments_mut().map_err(|()| {
                    AuthError::Config(format!(
                        "the auth service URL {} cannot have a path",
                        url_for_display(&self.base_url)
                    ))
                })?;
                segments.pop_if_empty().extend(["api", "tenants"]);
                if let Some(id) = tenant_id {
                    segments.push(id);
                }
            }
            Ok(url)
        }

        /// Sends the call until it is answered, fails for good, or the retry policy gives up.
        async fn execute(&self, call: &Call<'_>) -> Result<Reply, AuthError> {
            let deadline = Instant::now() + self.budget;
            let attempts = AtomicUsize::new(0);
            let counter = &attempts;
            let attempt = move || async move {
                counter.fetch_add(1, Ordering::Relaxed);
                self.attempt(call, deadline).await
            };
            attempt
                .retry(retry::backoff(&self.retry))
                .when(AttemptFailure::is_transient)
                .adjust(|failure, delay| {
                    retry::next_delay(&self.retry, failure.error(), delay, deadline)
                })
                .notify(|failure, delay| {
                    tracing::debug!(
                        method = %call.method,
                        error = %failure.error(),
                        retry_in = ?delay,
                        "auth call failed, retrying"
                    );
                })
                .await
                .map_err(|failure| failure.into_error(attempts.load(Ordering::Relaxed)))
        }

        async fn attempt(
            &self,
            call: &Call<'_>,
            deadline: Instant,
        ) -> Result<Reply, AttemptFailure> {
            // No attempt may outlast the budget of the whole call.
            let timeout = self
                .timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let mut request = self
                .http
                .request(call.method.clone(), call.url.clone())
                .timeout(timeout);
            if let Some(token) = self.current_token() {
                // Checked when read: a token that is no header value is never kept.
                if let Ok(value) = bearer(&token) {
                    request = request.header(AUTHORIZATION, value);
                }
            }
            if let Some(body) = &call.json_body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let transport_failure = |error| self.transport_failure(&call.url, error);
            let response = request.send().await.map_err(transport_failure)?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(retry::parse_retry_after);
            let body = self.read_body(&call.url, response).await?;
            if status.is_success() || call.accepted.contains(&status) {
                return Ok(Reply { status, body });
            }
            Err(self.status_failure(&call.url, status, retry_after, &body))
        }

        /// The token to send: re-read first when its file changed since the last read. A
        /// file that cannot be used (unreadable, empty, not a header value) keeps the
        /// previous token, with a warning.
        fn current_token(&self) -> Option<String> {
            if let Some(file) = &self.token_file {
                let now = stamp_of(&file.path);
                let mut read_as = locked(&file.read_as);
                if now.is_some() && now != *read_as {
                    *read_as = now;
                    match load_token_file(&file.path).and_then(|token| {
                        bearer(&token)?;
                        Ok(token)
                    }) {
                        Ok(token) => {
                            tracing::info!(file = %file.path.display(), "re-read the Auth token file");
                            *locked(&self.token) = Some(token);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "keeping the previous Auth token");
                        }
                    }
                }
            }
            locked(&self.token).clone()
        }

        /// The answer's body, refused (not retried) once it passes `max_body_bytes`.
        async fn read_body(
            &self,
            url: &Url,
            mut response: reqwest::Response,
        ) -> Result<Vec<u8>, AttemptFailure> {
            let too_large = || {
                AttemptFailure::Final(AuthError::Unavailable {
                    url: url_for_display(url),
                    reason: format!(
                        "the answer is larger than {} bytes; not read",
                        self.max_body_bytes
                    ),
                })
            };
            if response
                .content_length()
                .is_some_and(|length| length > self.max_body_bytes as u64)
            {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|error| self.transport_failure(url, error))?
            {
                if body.len() + chunk.len() > self.max_body_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }

        fn transport_failure(&self, url: &Url, error: reqwest::Error) -> AttemptFailure {
            let url = url_for_display(url);
            if error.is_builder() {
                return AttemptFailure::Final(AuthError::Config(format!(
                    "cannot build a request to {url}: {}",
                    describe_transport_error(error)
                )));
            }
            let reason = if error.is_timeout() {
                format!("timed out (request timeout {:?})", self.timeout)
            } else {
                describe_transport_error(error)
            };
            AttemptFailure::Transient(AuthError::Unavailable { url, reason })
        }

        fn status_failure(
            &self,
            url: &Url,
            status: StatusCode,
            retry_after: Option<Duration>,
            body: &[u8],
        ) -> AttemptFailure {
            let url = url_for_display(url);
            match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    AttemptFailure::Final(AuthError::Unauthorized {
                        url,
                        status: status.as_u16(),
                    })
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    AttemptFailure::Transient(AuthError::RateLimited { url, retry_after })
                }
                _ if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => {
                    AttemptFailure::Transient(AuthError::Unavailable {
                        url,
                        reason: format!(
                            "HTTP {status}: {}",
                            summarize_body(body, self.current_token().as_deref())
                        ),
                    })
                }
                _ => AttemptFailure::Final(AuthError::Rejected {
                    url,
                    status: status.as_u16(),
                    body: summarize_body(body, self.current_token().as_deref()),
                }),
            }
        }
    }

    impl fmt::Debug for AuthClient {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AuthClient")
                .field("base_url", &self.base_url.as_str())
                .field("admin_user_id", &self.admin_user_id)
                .field("timeout", &self.timeout)
                .field("budget", &self.budget)
                .field("retry", &self.retry)
                .finish_non_exhaustive()
        }
    }

    /// The Authorization header of `token`, marked sensitive (never logged).
    fn bearer(token: &str) -> Result<HeaderValue, AuthError> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                AuthError::Config(
                    "the auth token holds characters not allowed in an HTTP header".into(),
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Rejects ids that cannot name one path segment (`url` drops `.` and `..` segments).
    fn checked_tenant_id(tenant_id: &str) -> Result<&str, AuthError> {
        if tenant_id.is_empty() || tenant_id == "." || tenant_id == ".." {
            return Err(AuthError::Config(format!(
                "invalid tenant id {tenant_id:?}"
            )));
        }
        Ok(tenant_id)
    }
}

/// Longest response body quoted in an error.
const MAX_BODY_CHARS: usize = 256;

/// The URL without any user name or password it may carry.
fn url_for_display(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot carry credentials anyway.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The error and its causes, without the URL reqwest would add (the caller names it).
fn describe_transport_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut description = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !description.contains(&cause_text) {
            description.push_str(": ");
            description.push_str(&cause_text);
        }
        source = cause.source();
    }
    description
}

/// The start of a response body for an error message, with the token scrubbed in case the
/// service echoes request headers.
fn summarize_body(body: &[u8], token: Option<&str>) -> String {
    let text = String::from_utf8_lossy(body);
    let mut text = text.trim().to_owned();
    if let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) {
        text = text.replace(token, "<redacted>");
    }
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(MAX_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::retry::{next_delay, parse_retry_after};
    use super::*;
    use neurallog_auth_stub::{AuthStub, AuthStubHandle, Faults, RateLimit};

    const TOKEN: &str = "s3cret-token";

    async fn stub(token: Option<&str>) -> AuthStubHandle {
        AuthStub::start("127.0.0.1:0".parse().unwrap(), token.map(str::to_owned))
            .await
            .expect("stub starts")
    }

    fn fast_retries() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_elapsed: Some(Duration::from_secs(5)),
            max_retry_after: Duration::from_secs(2),
        }
    }

    fn config(stub: &AuthStubHandle) -> AuthConfig {
        AuthConfig::new(&stub.url(), "admin")
            .unwrap()
            .with_timeout(Duration::from_secs(2))
            .with_retry(fast_retries())
    }

    fn client(stub: &AuthStubHandle) -> AuthClient {
        AuthClient::new(config(stub)).unwrap()
    }

    #[tokio::test]
    async fn register_creates_and_then_reports_already_existed() {
        let stub = stub(None).await;
        let auth = client(&stub);

        assert_eq!(
            auth.register("acme", "alice").await,
            Ok(Registration::Created)
        );
        assert_eq!(
            auth.register("acme", "bob").await,
            Ok(Registration::AlreadyExisted)
        );

        assert_eq!(stub.tenants(), ["acme"]);
        assert_eq!(stub.tenant_admin("acme").as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn deregister_removes_and_then_reports_was_absent() {
        let stub = stub(None).await;
        let auth = client(&stub);
        auth.register("acme", "alice").await.unwrap();

        assert_eq!(auth.deregister("acme").await, Ok(Deregistration::Removed));
        assert_eq!(auth.deregister("acme").await, Ok(Deregistration::WasAbsent));
        assert!(stub.tenants().is_empty());
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_limit_is_refused_not_read() {
        let stub = stub(None).await;
        let auth = client(&stub);
        for i in 0..20 {
            auth.register(&format!("tenant-{i:02}"), "alice")
                .await
                .unwrap();
        }
        assert_eq!(auth.list().await.map(|t| t.len()), Ok(20));
        let small = AuthClient::new(config(&stub).with_max_body_bytes(64)).unwrap();
        let error = small.list().await.expect_err("refused");
        assert!(
            error.to_string().contains("larger than 64 bytes"),
            "{error}"
        );
        assert_eq!(stub.calls().count("GET"), 2, "refused, not retried");
    }

    /// A rotated Secret rewrites the file: the next call sends the new token; a file that
    /// turns empty keeps the previous one.
    #[tokio::test]
    async fn a_changed_token_file_is_read_again() {
        let stub = stub(Some(TOKEN)).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "an-old-token\n").unwrap();
        let auth = AuthClient::new(config(&stub).with_token_file(&path).unwrap()).unwrap();
        let refused = auth.list().await.expect_err("the old token is refused");
        assert!(
            matches!(refused, AuthError::Unauthorized { .. }),
            "{refused}"
        );

        // A new size as well as a new time: the check must not depend on the clock's grain.
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        assert_eq!(auth.list().await, Ok(Vec::new()), "the new token is sent");

        std::fs::write(&path, "\n").unwrap();
        assert_eq!(
            auth.list().await,
            Ok(Vec::new()),
            "an emptied file keeps the token in use"
        );
    }

    #[test]
    fn a_token_over_plain_http_is_noticed() {
        let config = AuthConfig::new("http://auth.example:3040", "admin").unwrap();
        assert!(!config.sends_token_in_clear(), "no token, nothing to leak");
        assert!(config.clone().with_token(TOKEN).sends_token_in_clear());
        let tls = AuthConfig::new("https://auth.example", "admin")
            .unwrap()
            .with_token(TOKEN);
        assert!(!tls.sends_token_in_clear());
    }

    #[tokio::test]
    async fn deregister_treats_404_as_success() {
        let stub = stub(None).await;
        let auth = client(&stub);
        auth.register("acme", "alice").await.unwrap();
        let faults = Faults {
            not_found_on_delete: true,
            ..Faults::default()
        };
        stub.set_faults(faults).await.unwrap();

        assert_eq!(auth.deregister("acme").await, Ok(Deregistration::WasAbsent));
        assert!(stub.tenants().is_empty());
    }

    #[tokio::test]
    async fn list_returns_the_registered_tenants() {
        let stub = stub(None).await;
        let auth = client(&stub);
        assert_eq!(auth.list().await, Ok(vec![]));
        auth.register("beta", "admin").await.unwrap();
        auth.register("alpha", "admin").await.unwrap();

        assert_eq!(auth.list().await.unwrap(), ["alpha", "beta"]);
    }

    #[tokio::test]
    async fn tenant_ids_are_one_percent_encoded_path_segment() {
        let stub = stub(None).await;
        let auth = client(&stub);
        let url = auth.tenants_url(Some("a/b c")).unwrap();
        assert!(url.as_str().ends_with("/api/tenants/a%2Fb%20c"), "{url}");

        auth.register("a/b c", "admin").await.unwrap();
        assert_eq!(auth.deregister("a/b c").await, Ok(Deregistration::Removed));
    }

    #[tokio::test]
    async fn the_api_path_is_appended_to_the_base_path() {
        let config = AuthConfig::new("http://auth.example:8080/prefix/", "admin").unwrap();
        let auth = AuthClient::new(config).unwrap();
        let url = auth.tenants_url(Some("acme")).unwrap();
        assert_eq!(
            url.as_str(),
            "http://auth.example:8080/prefix/api/tenants/acme"
        );
    }

    #[tokio::test]
    async fn the_token_is_sent_as_a_bearer_token() {
        let stub = stub(Some(TOKEN)).await;
        let auth = AuthClient::new(config(&stub).with_token(TOKEN)).unwrap();

        assert_eq!(
            auth.register("acme", "admin").await,
            Ok(Registration::Created)
        );
    }

    #[tokio::test]
    async fn a_wrong_token_is_unauthorized_and_not_retried() {
        let stub = stub(Some(TOKEN)).await;
        let wrong = "wrong-token-value";
        let auth = AuthClient::new(config(&stub).with_token(wrong)).unwrap();

        let error = auth.list().await.unwrap_err();

        assert!(
            matches!(error, AuthError::Unauthorized { status: 401, .. }),
            "{error:?}"
        );
        assert_eq!(error.reason(), "AuthUnauthorized");
        assert!(!error.is_transient());
        assert_eq!(stub.calls().total, 1);
        let message = error.to_string();
        assert!(message.contains(&stub.url()), "{message}");
        assert!(!message.contains(wrong) && !format!("{error:?}").contains(wrong));
    }

    #[tokio::test]
    async fn a_missing_token_is_unauthorized() {
        let stub = stub(Some(TOKEN)).await;
        let error = client(&stub).list().await.unwrap_err();
        assert_eq!(error.reason(), "AuthUnauthorized");
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_reported_unavailable() {
        let stub = stub(None).await;
        let auth = AuthClient::new(config(&stub).with_token(TOKEN)).unwrap();
        let faults = Faults {
            error_500: true,
            ..Faults::default()
        };
        stub.set_faults(faults).await.unwrap();

        let error = auth.register("acme", "admin").await.unwrap_err();

        assert!(matches!(error, AuthError::Unavailable { .. }), "{error:?}");
        assert_eq!(error.reason(), "AuthUnavailable");
        assert!(error.is_transient());
        assert_eq!(stub.calls().count("POST"), 3);
        let message = error.to_string();
        assert!(
            message.contains(&format!("{}/api/tenants", stub.url())),
            "{message}"
        );
        assert!(
            message.contains("HTTP 500") && message.contains("3 attempts"),
            "{message}"
        );
        assert!(!message.contains(TOKEN));
    }

    #[tokio::test]
    async fn a_call_recovers_when_the_service_does() {
        let stub = stub(None).await;
        let retry = RetryPolicy {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_millis(500),
            ..fast_retries()
        };
        let auth = AuthClient::new(config(&stub).with_retry(retry)).unwrap();
        let failing = Faults {
            error_500: true,
            ..Faults::default()
        };
        stub.set_faults(failing).await.unwrap();

        let call = tokio::spawn(async move { auth.register("acme", "admin").await });
        stub.wait_for_calls(1, Duration::from_secs(5))
            .await
            .unwrap();
        // The client now sleeps at least min_delay before its second attempt.
        stub.set_faults(Faults::default()).await.unwrap();

        assert_eq!(call.await.unwrap(), Ok(Registration::Created));
        assert_eq!(stub.calls().count("POST"), 2);
    }

    #[tokio::test]
    async fn rate_limiting_is_retried_then_reported_with_retry_after() {
        let stub = stub(None).await;
        let auth = client(&stub);
        let faults = Faults {
            rate_limit: Some(RateLimit {
                retry_after_secs: 0,
            }),
            ..Faults::default()
        };
        stub.set_faults(faults).await.unwrap();

        let error = auth.list().await.unwrap_err();

        assert_eq!(error.reason(), "AuthRateLimited");
        assert_eq!(error.retry_after(), Some(Duration::ZERO));
        assert_eq!(stub.calls().count("GET"), 3);
    }

    #[tokio::test]
    async fn a_retry_after_above_the_cap_is_handed_to_the_caller_at_once() {
        let stub = stub(None).await;
        let auth = client(&stub);
        let faults = Faults {
            rate_limit: Some(RateLimit {
                retry_after_secs: 30,
            }),
            ..Faults::default()
        };
        stub.set_faults(faults).await.unwrap();

        let error = auth.deregister("acme").await.unwrap_err();

        assert!(matches!(error, AuthError::RateLimited { .. }), "{error:?}");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(stub.calls().total, 1);
        assert!(error.to_string().contains("retry after 30s"), "{error}");
    }

    #[tokio::test]
    async fn a_down_service_is_unavailable() {
        let stub = stub(None).await;
        let auth = client(&stub);
        let down = Faults {
            down: true,
            ..Faults::default()
        };
        stub.set_faults(down).await.unwrap();

        let error = auth.list().await.unwrap_err();

        assert_eq!(error.reason(), "AuthUnavailable");
        let message = error.to_string();
        assert!(
            message.contains(&stub.url()) && message.contains("3 attempts"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_slow_service_times_out_within_the_call_budget() {
        let stub = stub(None).await;
        let retry = RetryPolicy {
            max_elapsed: None,
            ..fast_retries()
        };
        let timeout = Duration::from_millis(200);
        let auth = AuthClient::new(config(&stub).with_timeout(timeout).with_retry(retry)).unwrap();
        let slow = Faults {
            slow: Some(Duration::from_secs(5)),
            ..Faults::default()
        };
        stub.set_faults(slow).await.unwrap();

        let started = Instant::now();
        let error = auth.list().await.unwrap_err();

        // The budget defaults to twice the timeout; allow for scheduling on a busy machine.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(error.reason(), "AuthUnavailable");
        assert!(
            error
                .to_string()
                .contains("timed out (request timeout 200ms)"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn other_client_errors_are_rejected_without_retry() {
        let stub = stub(None).await;
        let auth = client(&stub);

        let error = auth.register("acme", "").await.unwrap_err();

        assert!(
            matches!(error, AuthError::Rejected { status: 400, .. }),
            "{error:?}"
        );
        assert_eq!(error.reason(), "AuthRejected");
        assert!(error.to_string().contains("must not be empty"), "{error}");
        assert_eq!(stub.calls().total, 1);
    }

    #[tokio::test]
    async fn unusable_tenant_ids_are_refused_before_any_call() {
        let stub = stub(None).await;
        let auth = client(&stub);
        for id in ["", ".", ".."] {
            let error = auth.deregister(id).await.unwrap_err();
            assert!(matches!(error, AuthError::Config(_)), "{error:?}");
        }
        assert_eq!(stub.calls().total, 0);
    }

    #[test]
    fn base_urls_must_be_http_with_a_host() {
        for bad in ["not a url", "ftp://auth:21", "unix:/run/auth.sock"] {
            let error = AuthConfig::new(bad, "admin").unwrap_err();
            assert_eq!(error.reason(), "AuthMisconfigured", "{bad}");
        }
        assert!(AuthConfig::new("https://auth.example", "admin").is_ok());
    }

    #[test]
    fn bad_configs_are_refused_by_the_client() {
        let config = AuthConfig::new("http://127.0.0.1:1", "admin").unwrap();
        let zero_timeout = config.clone().with_timeout(Duration::ZERO);
        assert!(matches!(
            AuthClient::new(zero_timeout),
            Err(AuthError::Config(_))
        ));
        let header_breaking_token = config.with_token("line\nbreak");
        let error = AuthClient::new(header_breaking_token).unwrap_err();
        assert!(!error.to_string().contains("line"), "{error}");
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let config = AuthConfig::new("http://127.0.0.1:1", "admin")
            .unwrap()
            .with_token(TOKEN);
        assert!(!format!("{config:?}").contains(TOKEN));
        let client = AuthClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains(TOKEN));
    }

    #[test]
    fn token_files_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("  {TOKEN}\n")).unwrap();

        assert_eq!(load_token_file(&path).unwrap(), TOKEN);
        let config = AuthConfig::new("http://127.0.0.1:1", "admin")
            .unwrap()
            .with_token_file(&path)
            .unwrap();
        assert_eq!(config.token.as_deref(), Some(TOKEN));
    }

    #[test]
    fn unreadable_or_empty_token_files_are_config_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = load_token_file(&missing).unwrap_err();
        assert_eq!(error.reason(), "AuthMisconfigured");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(
            load_token_file(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let wait = parse_retry_after(&in_a_minute).unwrap();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn the_next_delay_honours_retry_after_the_cap_and_the_budget() {
        let policy = RetryPolicy::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let unavailable = AuthError::Unavailable {
            url: String::new(),
            reason: String::new(),
        };
        let limited = |seconds| AuthError::RateLimited {
            url: String::new(),
            retry_after: Some(Duration::from_secs(seconds)),
        };
        let backoff = Some(Duration::from_millis(100));

        assert_eq!(
            next_delay(&policy, &unavailable, backoff, deadline),
            backoff
        );
        assert_eq!(next_delay(&policy, &unavailable, None, deadline), None);
        assert_eq!(
            next_delay(&policy, &limited(1), backoff, deadline),
            Some(Duration::from_secs(1))
        );
        assert_eq!(next_delay(&policy, &limited(3), backoff, deadline), None);
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(next_delay(&policy, &unavailable, backoff, soon), None);
    }

    #[test]
    fn quoted_bodies_are_truncated_and_scrubbed() {
        let long = "x".repeat(1000);
        let summary = summarize_body(long.as_bytes(), None);
        assert_eq!(summary.chars().count(), MAX_BODY_CHARS + 1);
        assert!(summary.ends_with('…'));

        let echoed = format!("bad header Bearer {TOKEN}");
        assert_eq!(
            summarize_body(echoed.as_bytes(), Some(TOKEN)),
            "bad header Bearer <redacted>"
        );
        assert_eq!(summarize_body(b"  ", None), "(empty body)");
        assert_eq!(
            summarize_body("é".repeat(300).as_bytes(), None)
                .chars()
                .count(),
            257
        );
    }

    #[test]
    fn credentials_in_urls_are_not_displayed() {
        let url = reqwest::Url::parse("http://user:pass@auth.example/api").unwrap();
        assert_eq!(url_for_display(&url), "http://auth.example/api");
    }
}
