//! Who may read `/metrics` and the journal API when the endpoints are secure: the caller's
//! bearer token is checked by the API server (a TokenReview, authentication.k8s.io/v1),
//! then the user it names must be allowed `get` on the request's path as a non-resource
//! URL (a SubjectAccessReview, authorization.k8s.io/v1), as controller-runtime's secure
//! metrics and kube-rbac-proxy do. RBAC grants it with `nonResourceURLs`:
//! `/metrics`, `/journal/*` (deploy/rbac/endpoint_roles.yaml).
//!
//! Answers are cached briefly (bounded, keyed by the token's SHA-256, never the token), so
//! a scrape is not two API calls every time; each review waits at most
//! [`AccessConfig::review_timeout`], and an API server that does not answer gets the caller
//! a 503, never a hung endpoint. Failed reviews are not cached.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The header that carries the caller's token through the API server's service proxy,
/// which authenticates the caller with `Authorization` and removes it before proxying.
/// Same form: `Bearer <token>`.
pub const PROXIED_TOKEN_HEADER: &str = "x-neurallog-authorization";

#[derive(Debug, Clone, Copy)]
pub struct AccessConfig {
    /// How long one TokenReview or SubjectAccessReview may take.
    pub review_timeout: Duration,
    /// How long an allowed answer is reused.
    pub allowed_ttl: Duration,
    /// How long a refusal (unknown token, forbidden path) is reused.
    pub denied_ttl: Duration,
    /// Entries per cache; the oldest go first when full.
    pub max_entries: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            review_timeout: Duration::from_secs(5),
            allowed_ttl: Duration::from_secs(60),
            denied_ttl: Duration::from_secs(10),
            max_entries: 1024,
        }
    }
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` (nor the proxied header).
    NoToken,
    /// The API server does not know the token (expired, revoked, malformed).
    Unauthenticated(String),
    /// The token's user may not `get` the path.
    Forbidden {
        user: String,
        path: String,
        reason: String,
    },
    /// The API server could not be asked (timed out, unreachable, refused the review).
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let realm = [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"neurallog-operator\""),
        )];
        match self {
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                realm,
                "a bearer token is required (Authorization: Bearer <token>, a Kubernetes token, e.g. from kubectl create token)\n",
            )
                .into_response(),
            Refusal::Unauthenticated(why) => (
                StatusCode::UNAUTHORIZED,
                realm,
                format!("the API server did not authenticate the token: {why}\n"),
            )
                .into_response(),
            Refusal::Forbidden { user, path, reason } => {
                let role = if path.starts_with("/journal") {
                    "neurallog-journal-auditor"
                } else {
                    "neurallog-metrics-reader"
                };
                let reason = if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                (
                    StatusCode::FORBIDDEN,
                    format!(
                        "user {user:?} may not get {path}{reason}: bind the ClusterRole {role} to it\n"
                    ),
                )
                    .into_response()
            }
            Refusal::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
                format!("cannot check the caller's access now: {why}\n"),
            )
                .into_response(),
        }
    }
}

/// Checks callers against the API server, with a cache.
#[derive(Clone)]
pub struct AccessReviewer {
    client: kube::Client,
    config: AccessConfig,
    users: Arc<Mutex<TtlCache<TokenHash, Result<UserInfo, String>>>>,
    decisions: Arc<Mutex<DecisionCache>>,
}

type TokenHash = [u8; 32];
/// Per token and path: allowed, or the reason it is not.
type DecisionCache = TtlCache<(TokenHash, String), Result<(), String>>;

impl AccessReviewer {
    pub fn new(client: kube::Client, config: AccessConfig) -> AccessReviewer {
        AccessReviewer {
            client,
            config,
            users: Arc::new(Mutex::new(TtlCache::new(config.max_entries))),
            decisions: Arc::new(Mutex::new(TtlCache::new(config.max_entries))),
        }
    }

    /// `Ok` when the token's user may `get` `path`.
    pub async fn check(&self, token: &str, path: &str) -> Result<(), Refusal> {
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        let user = self
            .user(&hash, token)
            .await?
            .map_err(Refusal::Unauthenticated)?;
        let key = (hash, path.to_owned());
        let cached = lock(&self.decisions).get(&key, Instant::now());
        let decision = match cached {
            Some(decision) => decision,
            None => {
                let decision = self.authorize(&user, path).await?;
                let ttl = self.ttl(decision.is_ok());
                lock(&self.decisions).insert(key, decision.clone(), Instant::now() + ttl);
                decision
            }
        };
        decision.map_err(|reason| Refusal::Forbidden {
            user: user.username.clone().unwrap_or_default(),
            path: path.to_owned(),
            reason,
        })
    }

    fn ttl(&self, allowed: bool) -> Duration {
        if allowed {
            self.config.allowed_ttl
        } else {
            self.config.denied_ttl
        }
    }

    /// The token's user (`Ok(Err(why))`: the API server does not know the token).
    async fn user(
        &self,
        hash: &TokenHash,
        token: &str,
    ) -> Result<Result<UserInfo, String>, Refusal> {
        if let Some(user) = lock(&self.users).get(hash, Instant::now()) {
            return Ok(user);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let api = kube::Api::<TokenReview>::all(self.client.clone());
        let answer = self
            .within_timeout("TokenReview", api.create(&PostParams::default(), &review))
            .await?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => {
                Ok(user)
            }
            _ => Err(status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "unknown or expired token".into())),
        };
        let ttl = self.ttl(user.is_ok());
        lock(&self.users).insert(*hash, user.clone(), Instant::now() + ttl);
        Ok(user)
    }

    /// `Ok` when allowed, else `Err(reason)`.
    async fn authorize(&self, user: &UserInfo, path: &str) -> Result<Result<(), String>, Refusal> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some("get".into()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        let api = kube::Api::<SubjectAccessReview>::all(self.client.clone());
        let answer = self
            .within_timeout(
                "SubjectAccessReview",
                api.create(&PostParams::default(), &review),
            )
            .await?;
        let status = answer.status.unwrap_or_default();
        Ok(if status.allowed && status.denied != Some(true) {
            Ok(())
        } else {
            Err(status.reason.unwrap_or_default())
        })
    }

    async fn within_timeout<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T, Refusal> {
        match tokio::time::timeout(self.config.review_timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                tracing::warn!(%error, "{what} failed");
                Err(Refusal::Unavailable(format!("{what} failed: {error}")))
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.config.review_timeout, "{what} timed out");
                Err(Refusal::Unavailable(format!(
                    "the API server did not answer the {what} within {:?}",
                    self.config.review_timeout
                )))
            }
        }
    }
}

/// A poisoned cache is still a valid cache: every entry is written whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The caller's token: `Authorization: Bearer`, else the header the service proxy passes.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    [header::AUTHORIZATION.as_str(), PROXIED_TOKEN_HEADER]
        .into_iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .find_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
        })
}

/// The middleware in front of `/metrics` and the journal API.
pub async fn require_access(
    State(reviewer): State<AccessReviewer>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer_token(request.headers()) else {
        return Refusal::NoToken.into_response();
    };
    let path = request.uri().path().to_owned();
    match reviewer.check(token, &path).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// A map whose entries expire, holding at most `capacity` of them.
struct TtlCache<K, V> {
    capacity: usize,
    entries: HashMap<K, (V, Instant)>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: K, value: V, expires: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let now = Instant::now();
            self.entries.retain(|_, (_, until)| *until > now);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, (value, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests;
