//! The access layer against a mock API server (tower-test): which answers it gives, what it
//! caches, and that a silent API server costs the caller a bounded wait.

use super::*;
use crate::http::{HttpState, router};
use crate::journal::api::{ApiLimits, SharedJournal};
use crate::metrics::Metrics;
use kube::client::Body;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const GOOD: &str = "token-of-auditor";
const VIEWER: &str = "token-of-viewer";

/// What the mock API server knows: GOOD is `auditor` (allowed /metrics and /journal/*),
/// VIEWER is `viewer` (allowed nothing); other tokens are unknown.
fn review_answer(path: &str, body: &serde_json::Value) -> serde_json::Value {
    if path.contains("tokenreviews") {
        let token = body["spec"]["token"].as_str().unwrap_or_default();
        let user = match token {
            GOOD => Some("auditor"),
            VIEWER => Some("viewer"),
            _ => None,
        };
        let status = match user {
            Some(user) => serde_json::json!({
                "authenticated": true,
                "user": {"username": user, "groups": ["system:authenticated"]}
            }),
            None => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": body["spec"], "status": status})
    } else {
        let user = body["spec"]["user"].as_str().unwrap_or_default();
        let asked = body["spec"]["nonResourceAttributes"]["path"]
            .as_str()
            .unwrap_or_default();
        let verb = body["spec"]["nonResourceAttributes"]["verb"]
            .as_str()
            .unwrap_or_default();
        let allowed = user == "auditor"
            && verb == "get"
            && (asked == "/metrics" || asked.starts_with("/journal/"));
        serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": body["spec"],
            "status": {"allowed": allowed, "reason": if allowed { "" } else { "no RBAC rule" }}
        })
    }
}

struct MockApi {
    client: kube::Client,
    calls: Arc<AtomicUsize>,
}

/// A kube client whose API server answers reviews with [`review_answer`], each after
/// `delay`, counting the calls.
fn mock_api(delay: Duration) -> MockApi {
    let (service, mut handle) =
        tower_test::mock::pair::<::http::Request<Body>, ::http::Response<Body>>();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let answer = review_answer(&path, &body);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let response = ::http::Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                respond.send_response(response);
            });
        }
    });
    MockApi {
        client: kube::Client::new(service, "default"),
        calls,
    }
}

fn reviewer(api: &MockApi, config: AccessConfig) -> AccessReviewer {
    AccessReviewer::new(api.client.clone(), config)
}

#[tokio::test]
async fn a_known_token_with_the_role_is_allowed_and_the_answer_reused() {
    let api = mock_api(Duration::ZERO);
    let reviewer = reviewer(&api, AccessConfig::default());
    assert_eq!(reviewer.check(GOOD, "/metrics").await, Ok(()));
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        2,
        "a TokenReview and a SAR"
    );
    for _ in 0..5 {
        assert_eq!(reviewer.check(GOOD, "/metrics").await, Ok(()));
    }
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        2,
        "scrapes within the TTL ask nothing"
    );
    // Another path of the same token: its user is known, only the SAR is asked.
    assert_eq!(reviewer.check(GOOD, "/journal/tenants/acme").await, Ok(()));
    assert_eq!(api.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_unknown_token_is_unauthenticated_and_a_user_without_the_role_forbidden() {
    let api = mock_api(Duration::ZERO);
    let reviewer = reviewer(&api, AccessConfig::default());
    assert_eq!(
        reviewer.check("stolen", "/metrics").await,
        Err(Refusal::Unauthenticated("invalid bearer token".into()))
    );
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        1,
        "no SAR for an unknown token"
    );
    let refused = reviewer.check(VIEWER, "/journal/verify").await;
    assert_eq!(
        refused,
        Err(Refusal::Forbidden {
            user: "viewer".into(),
            path: "/journal/verify".into(),
            reason: "no RBAC rule".into()
        })
    );
    // The auditor may read the journal but not a path outside it.
    assert!(matches!(
        reviewer.check(GOOD, "/debug/pprof").await,
        Err(Refusal::Forbidden { .. })
    ));
}

#[tokio::test]
async fn refusals_expire_sooner_than_grants() {
    let api = mock_api(Duration::ZERO);
    let config = AccessConfig {
        allowed_ttl: Duration::from_secs(60),
        denied_ttl: Duration::from_millis(50),
        ..AccessConfig::default()
    };
    let reviewer = reviewer(&api, config);
    assert!(reviewer.check(VIEWER, "/metrics").await.is_err());
    assert!(reviewer.check(GOOD, "/metrics").await.is_ok());
    let asked = api.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(reviewer.check(GOOD, "/metrics").await.is_ok());
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        asked,
        "the grant is still cached"
    );
    assert!(reviewer.check(VIEWER, "/metrics").await.is_err());
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        asked + 1,
        "the refusal expired: asked again (a role bound since then counts)"
    );
}

#[tokio::test]
async fn a_silent_api_server_costs_a_bounded_wait_and_is_not_cached() {
    let api = mock_api(Duration::from_secs(30));
    let config = AccessConfig {
        review_timeout: Duration::from_millis(100),
        ..AccessConfig::default()
    };
    let reviewer = reviewer(&api, config);
    let started = Instant::now();
    let refused = reviewer.check(GOOD, "/metrics").await;
    assert!(
        matches!(&refused, Err(Refusal::Unavailable(why)) if why.contains("TokenReview")),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = reviewer.check(GOOD, "/metrics").await;
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        2,
        "a failed review is asked again, not cached"
    );
}

#[test]
fn the_cache_is_bounded_and_drops_the_oldest_entry() {
    let mut cache = TtlCache::new(3);
    let now = Instant::now();
    for i in 0..3u64 {
        cache.insert(i, i, now + Duration::from_secs(10 + i));
    }
    cache.insert(9, 9, now + Duration::from_secs(60));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&0, now), None, "the one expiring first went");
    assert_eq!(cache.get(&9, now), Some(9));
    assert_eq!(
        cache.get(&9, now + Duration::from_secs(61)),
        None,
        "expired"
    );
    assert_eq!(cache.len(), 2);
}

#[test]
fn the_token_comes_from_authorization_or_the_proxied_header() {
    let mut headers = HeaderMap::new();
    assert_eq!(bearer_token(&headers), None);
    headers.insert(PROXIED_TOKEN_HEADER, HeaderValue::from_static("Bearer abc"));
    assert_eq!(bearer_token(&headers), Some("abc"));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("bearer  xyz "),
    );
    assert_eq!(bearer_token(&headers), Some("xyz"), "Authorization first");
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Basic dTpw"),
    );
    assert_eq!(bearer_token(&headers), Some("abc"));
    headers.insert(PROXIED_TOKEN_HEADER, HeaderValue::from_static("Bearer "));
    assert_eq!(bearer_token(&headers), None);
}

/// The operator's router with access checks, on a loopback port (plain HTTP: TLS is
/// [`crate::http::tls`]'s and the e2e test's).
async fn serve_guarded(api: &MockApi) -> String {
    let state = HttpState {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(true)),
        journal: SharedJournal::default(),
        journal_limits: ApiLimits::default(),
    };
    let app = router(state, Some(reviewer(api, AccessConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_router_answers_401_403_200_and_leaves_the_probes_open() {
    let api = mock_api(Duration::ZERO);
    let base = serve_guarded(&api).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = get("/metrics", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bearer token is required"), "{body}");
    let (status, body) = get("/journal/tenants", Some("unknown")).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get("/journal/tenants", Some(VIEWER)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("\"viewer\" may not get /journal/tenants")
            && body.contains("neurallog-journal-auditor"),
        "{body}"
    );
    let (status, body) = get("/metrics", Some(GOOD)).await;
    assert_eq!(status, 200, "{body}");
    // Allowed through; the journal is not open in this test, so the API says so itself.
    let (status, body) = get("/journal/tenants", Some(GOOD)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not the leader"), "{body}");
    let calls = api.calls.load(Ordering::SeqCst);
    for probe in ["/healthz", "/readyz"] {
        let (status, _) = get(probe, None).await;
        assert_ne!(status, 401, "{probe} stays open for the kubelet");
    }
    assert_eq!(
        api.calls.load(Ordering::SeqCst),
        calls,
        "probes ask the API server nothing"
    );
}
