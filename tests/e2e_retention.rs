//! Retention against a live operator: restarted with `--journal-keep-records 2`, it
//! compacts a Running tenant's first records into a checkpoint at start (archiving them
//! first), the journal API shows where the chain now starts, `verify` passes, and the
//! tenant's next transitions continue the chain from the checkpoint.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use neurallog_operator::journal::Record;
use neurallog_operator::journal::view::History;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const PROVISION: Duration = Duration::from_secs(120);

async fn history(server: &str, name: &str) -> Option<History> {
    let response = reqwest::get(format!("{server}/journal/tenants/{name}"))
        .await
        .ok()?;
    response.json().await.ok()
}

#[tokio::test]
async fn a_restarted_operator_compacts_old_records_and_the_chain_continues() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("retain");
    let name = run.clone();
    let _cleanup = TenantCleanup(vec![name.clone()]);
    let auth = auth_stub().await;
    let mut operator = Operator::start_with_options(&run, &auth.url(), &OperatorOptions::default());
    operator.wait_ready().await;

    let mut tenant = tenant_from_yaml(BASIC, &name, &run);
    apply_tenant(&client, &tenant).await;
    wait_for_phase(&client, &name, "Running", PROVISION).await;
    let before = history(&operator.metrics_url, &name)
        .await
        .expect("history");
    let seqs: Vec<u64> = before.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "New -> ... -> Running");
    assert!(before.compacted.is_none());

    let archive = tempfile::tempdir().expect("archive dir");
    let archive_dir = archive.path().to_str().expect("utf-8").to_owned();
    operator.restart_with(&OperatorOptions {
        args: vec![
            "--journal-keep-records".into(),
            "2".into(),
            "--journal-archive-dir".into(),
            archive_dir,
        ],
        ..OperatorOptions::default()
    });
    operator.wait_ready().await;
    let server = operator.metrics_url.clone();
    let compacted = wait_for("retention to compact at start", PROVISION, || {
        let server = server.clone();
        let name = name.clone();
        async move {
            let history = history(&server, &name).await?;
            history.compacted.is_some().then_some(history)
        }
    })
    .await;
    let checkpoint = compacted.compacted.clone().expect("checkpoint");
    assert_eq!(checkpoint.through, 2);
    assert_eq!(checkpoint.hash, before.records[1].hash);
    assert_eq!(
        compacted.records,
        before.records[2..],
        "the newest two, unchanged"
    );
    assert_eq!(
        operator
            .counter("neurallog_journal_compacted_records_total")
            .await,
        2.0
    );
    let uid = before.uid.clone();
    let archived = std::fs::read_to_string(archive.path().join(format!("{name}_{uid}.jsonl")))
        .expect("the archive file");
    let archived: Vec<Record> = archived
        .lines()
        .map(|line| serde_json::from_str(line).expect("an export line"))
        .collect();
    assert_eq!(archived, before.records[..2], "archived as they were");

    // The chain continues from the checkpoint: an update appends seq 5 and 6.
    tenant.spec.server.replicas += 1;
    apply_tenant(&client, &tenant).await;
    let after = wait_for("the update to be journaled", PROVISION, || {
        let server = server.clone();
        let name = name.clone();
        async move {
            let history = history(&server, &name).await?;
            (history.records.last()?.seq >= 6).then_some(history)
        }
    })
    .await;
    assert_eq!(after.records[2].prev_hash, before.records[3].hash);
    let verify: serde_json::Value = reqwest::get(format!("{server}/journal/verify"))
        .await
        .expect("verify answers")
        .json()
        .await
        .expect("verify JSON");
    assert_eq!(verify["problems"], 0, "{verify}");
}
