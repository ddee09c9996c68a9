use super::*;
use crate::journal::testing::{TO_RUNNING, lifecycle, open_temp, t0};
use crate::journal_client::Source;

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
    let _ = shared.set(Arc::new(crate::journal_slot::JournalSlot::new(journal)));
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
