//! A journal damaged while the operator was down (a flipped byte, a truncated tail) is
//! detected at start: moved aside and kept, replaced by a new journal whose recovery mark
//! points at it, announced by a Warning Event on each tenant; the operator keeps running
//! and the tenants stay what their specs ask for.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use neurallog_operator::crd::Tenant;
use neurallog_operator::journal::Journal;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const LONG: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipByte,
    TruncateTail,
}

/// Damages sled's data file as a bad disk or an interrupted copy would.
fn damage(journal: &Path, how: Damage) {
    let file = journal.join("db");
    let mut db = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .expect("the journal's data file");
    let len = db.metadata().expect("metadata").len();
    assert!(len > 64, "the journal holds records");
    match how {
        Damage::FlipByte => {
            let at = len / 2;
            let mut byte = [0u8];
            db.seek(SeekFrom::Start(at)).expect("seek");
            db.read_exact(&mut byte).expect("read");
            byte[0] ^= 0xff;
            db.seek(SeekFrom::Start(at)).expect("seek");
            db.write_all(&byte).expect("write");
        }
        Damage::TruncateTail => db.set_len(len - len / 3).expect("truncate"),
    }
    db.sync_all().expect("sync");
}

/// Whether the journal's write-ahead log holds a frame: the first page of either of its
/// halves starts with the frame magic (a checkpoint zeroes it).
fn write_ahead_log_holds_frames(journal: &Path) -> bool {
    const PAGE: usize = 4096;
    std::fs::read(journal.join("wal")).is_ok_and(|log| {
        let second_half = log.len() / PAGE / 2 * PAGE;
        [0, second_half]
            .iter()
            .any(|&at| log.get(at..).is_some_and(|half| half.starts_with(b"NLW1")))
    })
}

fn damaged_copies(journal: &Path) -> Vec<PathBuf> {
    let parent = journal.parent().expect("parent");
    std::fs::read_dir(parent)
        .expect("journal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("journal.damaged-"))
        .collect()
}

async fn recovered_warning(client: &kube::Client, uid: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|e| {
            e.reason.as_deref() == Some("JournalRecovered") && e.type_.as_deref() == Some("Warning")
        })
        .and_then(|e| e.message)
}

async fn damaged_journal_is_replaced(prefix: &str, how: Damage) {
    let client = client().await;
    install_crd(&client).await;
    let run = unique(prefix);
    let auth = auth_stub().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal");
    let mut operator = Operator::start_with_journal(&run, &auth.url(), journal.clone());
    operator.wait_ready().await;
    let names: Vec<String> = (0..3).map(|i| format!("{run}-{i}")).collect();
    for name in &names {
        apply_tenant(&client, &tenant_from_yaml(BASIC, name, &run)).await;
    }
    for name in &names {
        wait_for_phase(&client, name, "Running", LONG).await;
    }

    // Damage to sled's file loses records only once they are checkpointed into it: until
    // then they are in the write-ahead log too, and the restart replays them.
    wait_for(
        "the journal to checkpoint its write-ahead log",
        LONG,
        || {
            let journal = journal.clone();
            async move { (!write_ahead_log_holds_frames(&journal)).then_some(()) }
        },
    )
    .await;
    operator.kill();
    damage(&journal, how);
    operator.restart();
    operator.wait_ready().await;

    let copies = damaged_copies(&journal);
    assert_eq!(
        copies.len(),
        1,
        "the damaged journal is moved aside and kept"
    );
    let tenants: Api<Tenant> = Api::all(client.clone());
    for name in &names {
        let uid = tenants.get(name).await.expect("tenant").uid().expect("uid");
        let message = wait_for("a JournalRecovered Warning Event", LONG, || {
            let (client, uid) = (client.clone(), uid.clone());
            async move { recovered_warning(&client, &uid).await }
        })
        .await;
        assert!(
            message.contains(&copies[0].display().to_string()),
            "the Event points at the kept journal: {message}"
        );
        wait_for_phase(&client, name, "Running", LONG).await;
    }
    assert!(operator.is_alive(), "the operator keeps running");

    // Deleting still works on the new chain.
    kubectl(&["delete", "tenant", &names[0], "--timeout=120s"]);
    operator.kill();
    let replaced = Journal::open(&journal).expect("the new journal opens");
    let mark = replaced
        .recovery()
        .expect("readable")
        .expect("a recovery mark");
    assert_eq!(mark.moved_to, copies[0].display().to_string());
    assert!(replaced.verify().expect("verify runs").is_ok());
    println!(
        "{how:?}: detected ({}), moved to {}",
        mark.reason, mark.moved_to
    );
    drop(replaced);
    operator.restart();
    operator.wait_ready().await;
    for name in &names[1..] {
        kubectl(&["delete", "tenant", name, "--timeout=120s"]);
    }
    assert_eq!(
        damaged_copies(&journal).len(),
        1,
        "a restart on the new journal finds nothing to recover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_detected_and_the_journal_replaced() {
    damaged_journal_is_replaced("flip", Damage::FlipByte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tail_is_detected_and_the_journal_replaced() {
    damaged_journal_is_replaced("trunc", Damage::TruncateTail).await;
}
