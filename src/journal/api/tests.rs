use super::*;
use crate::journal::client::Source;
use crate::journal::testing::{TO_RUNNING, lifecycle, open_temp, sample_entry, t0};
use verify_cache::VerifyResponse;

const UID_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const UID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// Serves the API on a loopback port; returns its base URL.
async fn serve(journal: SharedJournal) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(journal)).await });
    format!("http://{addr}")
}

fn shared_journal() -> (tempfile::TempDir, SharedJournal) {
    let (dir, journal) = open_temp();
    let mut entries = lifecycle("acme", UID_A, t0(), &TO_RUNNING);
    entries.extend(lifecycle("beta", UID_B, t0(), &TO_RUNNING[..2]));
    for entry in entries {
        journal.append(entry).unwrap();
    }
    let shared = SharedJournal::default();
    let _ = shared.set(Arc::new(crate::journal::slot::JournalSlot::new(journal)));
    (dir, shared)
}

#[tokio::test]
async fn serves_list_history_export_and_verify_to_the_client() {
    let (_dir, journal) = shared_journal();
    let source = Source::server(&serve(journal).await).unwrap();

    let tenants = source.tenants().await.unwrap();
    assert_eq!(tenants.len(), 2);
    assert_eq!(tenants[0].tenant, "acme");

    let history = source.history("acme", None).await.unwrap();
    assert_eq!((history.uid.as_str(), history.records.len()), (UID_A, 4));
    let error = source.history("nobody", None).await.unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
    assert!(error.to_string().contains("no tenant nobody"), "{error}");

    let mut out = Vec::new();
    let filter = ExportFilter {
        tenant: Some("beta".into()),
        since: Some(t0()),
    };
    let lines = source.export(&filter, &mut out, |_| {}).await.unwrap();
    assert_eq!(lines, 2);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);

    let outcome = source.verify(|_| {}).await.unwrap();
    assert!(outcome.is_ok());
    assert_eq!((outcome.chains, outcome.records), (2, 6));
}

#[tokio::test]
async fn a_replica_without_the_journal_answers_503() {
    let base = serve(SharedJournal::default()).await;
    let response = reqwest::get(format!("{base}/journal/tenants"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.text().await.unwrap(), NOT_LEADER);
    let error = Source::server(&base)
        .unwrap()
        .verify(|_| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not the leader"), "{error}");
}

#[tokio::test]
async fn only_get_is_allowed_and_bad_times_are_refused() {
    let (_dir, journal) = shared_journal();
    let base = serve(journal).await;
    let client = reqwest::Client::new();
    let response = client
        .delete(format!("{base}/journal/tenants/acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = reqwest::get(format!("{base}/journal/export?since=yesterday"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("RFC 3339"));
}

/// Serves the API with `limits` on a loopback port; returns its base URL and the state.
async fn serve_limited(journal: SharedJournal, limits: ApiLimits) -> (String, ApiState) {
    let state = ApiState::new(journal, limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = router_with(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), state)
}

/// A journal whose export is far larger than what loopback sockets buffer (about 4 MiB
/// sent plus what the client's small receive buffer takes).
fn large_journal() -> (tempfile::TempDir, SharedJournal) {
    let (dir, journal) = open_temp();
    let entries = (1..=LARGE_RECORDS).map(|seq| sample_entry("acme", UID_A, seq));
    assert_eq!(
        journal.bulk_append_unflushed(entries).unwrap(),
        LARGE_RECORDS
    );
    journal.flush().unwrap();
    let shared = SharedJournal::default();
    let _ = shared.set(Arc::new(crate::journal::slot::JournalSlot::new(journal)));
    (dir, shared)
}

const LARGE_RECORDS: u64 = 30_000;

/// Requests `path` on a socket with a small receive buffer and never reads: the server's
/// writes stall once the socket buffers are full.
async fn stalled_request(base: &str, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Polls `f` every 20 ms until it is true; fails after `limit`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    limit: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Reads the status line's start: the request was answered (and an export admitted).
async fn status_of(stream: &mut tokio::net::TcpStream) -> String {
    let mut status = [0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_exact(stream, &mut status),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    String::from_utf8_lossy(&status).into_owned()
}

async fn answers_ok(url: String) -> bool {
    reqwest::get(url).await.unwrap().status() == StatusCode::OK
}

#[tokio::test]
async fn over_the_limit_a_request_gets_503_with_retry_after_at_once() {
    let (_dir, journal) = large_journal();
    let limits = ApiLimits {
        max_requests: 1,
        ..ApiLimits::default()
    };
    let (base, _state) = serve_limited(journal, limits).await;
    let mut stalled = stalled_request(&base, "/journal/export").await;
    assert_eq!(status_of(&mut stalled).await, "HTTP/1.1 200");

    let start = std::time::Instant::now();
    let busy = reqwest::get(format!("{base}/journal/verify"))
        .await
        .unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
    let message = busy.text().await.unwrap();
    assert!(
        message.contains("serves at most 1 requests at once"),
        "{message}"
    );

    // A client that goes away frees its admission.
    drop(stalled);
    wait_until(std::time::Duration::from_secs(5), "a 200", || {
        answers_ok(format!("{base}/journal/tenants"))
    })
    .await;
}

#[tokio::test]
async fn an_export_whose_client_stops_reading_is_cut_off_after_the_write_timeout() {
    let (_dir, journal) = large_journal();
    let limits = ApiLimits {
        max_requests: 1,
        write_timeout: std::time::Duration::from_millis(200),
    };
    let (base, _state) = serve_limited(journal, limits).await;
    let mut stalled = stalled_request(&base, "/journal/export").await;
    assert_eq!(status_of(&mut stalled).await, "HTTP/1.1 200");

    // Only the export's end frees the one admission, and the client reads nothing.
    let freed = wait_until(std::time::Duration::from_secs(10), "a 200", || {
        answers_ok(format!("{base}/journal/tenants"))
    })
    .await;
    assert!(freed < std::time::Duration::from_secs(5), "{freed:?}");

    // The client sees a broken transfer: no last chunk, and fewer lines than records.
    let mut received = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut received),
    )
    .await
    .expect("the cut-off export's connection is closed"); // a reset is an end too
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.contains("transfer-encoding: chunked"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(!text.ends_with("0\r\n\r\n"), "the export looks complete");
    let lines = text.matches("\"uid\"").count() as u64;
    assert!(lines < LARGE_RECORDS, "{lines} lines");
}

#[tokio::test]
async fn verify_is_served_from_the_last_scan_until_something_is_appended() {
    let (_dir, journal) = shared_journal();
    let (base, state) = serve_limited(journal.clone(), ApiLimits::default()).await;
    let get = |base: String| async move {
        let response = reqwest::get(format!("{base}/journal/verify"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<VerifyResponse>().await.unwrap()
    };

    // Concurrent requests share one scan.
    let first = futures::future::join_all((0..4).map(|_| get(base.clone()))).await;
    assert_eq!(state.verify_scans(), 1);
    assert_eq!(first.iter().filter(|r| !r.cached).count(), 1);
    assert!(
        first
            .iter()
            .all(|r| r.outcome.records == 6 && r.outcome.is_ok())
    );
    assert!(first.iter().all(|r| r.verified_at == first[0].verified_at));

    let again = get(base.clone()).await;
    assert!(again.cached);
    assert_eq!(state.verify_scans(), 1);

    let slot = journal.get().unwrap().get().unwrap();
    slot.append(sample_entry("beta", UID_B, 3)).unwrap();
    let after = get(base.clone()).await;
    assert!(!after.cached);
    assert_eq!((after.outcome.records, state.verify_scans()), (7, 2));
    assert!(after.verified_at >= again.verified_at);

    // The client reads the outcome from the response as before.
    let outcome = Source::server(&base).unwrap().verify(|_| {}).await.unwrap();
    assert_eq!(outcome.records, 7);
    assert_eq!(state.verify_scans(), 2);
}

#[tokio::test]
async fn a_chain_is_served_after_a_seq_and_the_recovery_mark_with_it() {
    let (_dir, journal) = shared_journal();
    let base = serve(journal.clone()).await;
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move {
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let history = get(format!("/journal/tenants/acme?uid={UID_A}&after=2")).await;
    let seqs: Vec<u64> = history["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4]);
    let history = get(format!("/journal/tenants/acme?uid={UID_A}&after=4")).await;
    assert_eq!(history["records"], serde_json::json!([]));

    assert_eq!(
        get("/journal/recovery".into()).await,
        serde_json::Value::Null
    );
    let mark = crate::journal::RecoveryMark {
        moved_to: "/j.damaged".into(),
        reason: "lost tail".into(),
        at: t0(),
        chain: Some("r20250102030405".into()),
        earlier_chains: vec![None],
    };
    journal
        .get()
        .unwrap()
        .with(|j| j.mark_recovery(&mark))
        .unwrap();
    let served: crate::journal::RecoveryMark =
        serde_json::from_value(get("/journal/recovery".into()).await).unwrap();
    assert_eq!(served, mark);
}
