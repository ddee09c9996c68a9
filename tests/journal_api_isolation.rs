//! Readers never slow the reconciler: 600 clients that request `/journal/export` and
//! never read do not hold up journal work on tokio's blocking pool (where the
//! reconciler's appends run), `/readyz` on the same server still answers, and the
//! requests over the journal API's limit get 503 at once.
//!
//! The server is the operator's router (`http::router`) on a loopback port. The journal's
//! export is far larger than what a stalled connection buffers, so each admitted export
//! stalls for good.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration as TimeDelta, Utc};
use neurallog_machines::{Input, Phase, Trigger, step};
use neurallog_operator::http::{self, HttpState};
use neurallog_operator::journal::api::{ApiLimits, DEFAULT_MAX_REQUESTS, SharedJournal};
use neurallog_operator::journal::slot::JournalSlot;
use neurallog_operator::journal::{Journal, NewRecord, spec_digest};
use neurallog_operator::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// More than tokio's blocking pool holds (512 threads).
const CLIENTS: usize = 600;
/// About 15 MiB of export; a stalled loopback connection buffers about 4 MiB.
const RECORDS: u64 = 30_000;
const UID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_stalled_exports_do_not_stop_journal_appends_or_readyz() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let journal = Journal::open(&dir.path().join("journal")).expect("the journal opens");
    let entries = (1..=RECORDS).map(entry);
    assert_eq!(
        journal.bulk_append_unflushed(entries).expect("bulk append"),
        RECORDS
    );
    journal.flush().expect("flush");
    let slot = Arc::new(JournalSlot::new(journal));
    let shared = SharedJournal::default();
    let _ = shared.set(slot.clone());
    let addr = serve(shared).await;

    // 600 exports, never read.
    let sent = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(request(addr, "/journal/export").await);
    }
    // Each is answered: the first few admitted (200, then stalled), the rest refused.
    let mut admitted = 0;
    let mut refused = 0;
    for client in &mut clients {
        match status_of(client).await.as_str() {
            "HTTP/1.1 200" => admitted += 1,
            "HTTP/1.1 503" => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let answered = sent.elapsed();
    let limit = usize::from(DEFAULT_MAX_REQUESTS);
    assert_eq!((admitted, refused), (limit, CLIENTS - limit));
    assert!(answered < Duration::from_secs(20), "{answered:?}");
    assert_eq!(threads_named("journal-api"), limit);

    // A reconcile's journal append on tokio's blocking pool completes promptly.
    let started = Instant::now();
    let append = tokio::task::spawn_blocking({
        let slot = slot.clone();
        move || slot.with(|j| j.append(entry(RECORDS + 1)))
    });
    let appended = tokio::time::timeout(Duration::from_secs(5), append)
        .await
        .expect("the blocking pool ran the append within 5 s")
        .expect("the append task")
        .expect("the append");
    assert_eq!(appended.seq, RECORDS + 1);
    let append_took = started.elapsed();

    // /readyz on the same server answers.
    let started = Instant::now();
    let mut readyz = request(addr, "/readyz").await;
    assert_eq!(status_of(&mut readyz).await, "HTTP/1.1 200");
    let readyz_took = started.elapsed();

    eprintln!(
        "{CLIENTS} stalled exports: {admitted} admitted, {refused} refused with 503, all \
         answered in {answered:?}; blocking-pool append took {append_took:?}; /readyz took \
         {readyz_took:?}"
    );

    // Clients that go away free the readers' threads.
    drop(clients);
    let start = Instant::now();
    while threads_named("journal-api") > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "reader threads left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The operator's router, served on a loopback port.
async fn serve(journal: SharedJournal) -> SocketAddr {
    let state = HttpState {
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(true)),
        journal,
        journal_limits: ApiLimits::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, http::router(state, None)).await });
    addr
}

/// Sends `GET path` on a connection with a small receive buffer, which the server fills
/// quickly when nothing reads it.
async fn request(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket (raise `ulimit -n`?)");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream
}

/// The status line's start, read within 10 s.
async fn status_of(stream: &mut TcpStream) -> String {
    let mut status = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut status))
        .await
        .expect("an answer within 10 s")
        .expect("read the answer");
    String::from_utf8_lossy(&status).into_owned()
}

/// How many of this process's threads are named `name`.
fn threads_named(name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .count()
}

/// Record `seq` of the one chain, one second after the previous.
fn entry(seq: u64) -> NewRecord {
    let input = Input::new(Trigger::Observed, 1);
    let transition = step(Phase::New, &input).expect("a transition");
    let start = DateTime::<Utc>::from_timestamp(1_764_460_800, 0).unwrap_or_default();
    NewRecord::from_transition(
        "acme",
        UID,
        seq,
        start + TimeDelta::seconds(seq as i64),
        1,
        input,
        transition,
        spec_digest(&serde_json::json!({"redis": {"replicas": 1}})),
    )
}
