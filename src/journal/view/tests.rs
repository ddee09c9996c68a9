use super::*;
use crate::journal::testing::{TO_RUNNING, lifecycle, open_temp, t0};
use crate::journal::{NewRecord, spec_digest};
use chrono::Duration;
use neurallog_machines::{Phase, Readiness, Trigger, step};
use std::path::{Path, PathBuf};

const ALPHA_1: &str = "11111111-1111-4111-8111-111111111111";
const BETA: &str = "22222222-2222-4222-8222-222222222222";
const ALPHA_2: &str = "33333333-3333-4333-8333-333333333333";
const GAMMA: &str = "44444444-4444-4444-8444-444444444444";
const REASON: &str = "spec.redis.config.maxmemory: \"256Mi\" is a Kubernetes quantity";
/// The widest INPUT cell of gamma's history: the invalid spec's.
const INPUT_WIDTH: usize = "SpecInvalid(gen=2,redis=0/1,server=0/2,reason=)".len() + REASON.len();

/// `alpha` provisioned and deleted then re-created, `beta` running, `gamma` failed on an
/// invalid spec (an input with readiness and a reason).
fn fixture_journal() -> (tempfile::TempDir, Journal) {
    let (dir, journal) = open_temp();
    let mut deleted = TO_RUNNING.to_vec();
    deleted.extend([Trigger::DeletionRequested, Trigger::CleanupDone]);
    let mut entries = lifecycle("alpha", ALPHA_1, t0(), &deleted);
    entries.extend(lifecycle(
        "beta",
        BETA,
        t0() + Duration::minutes(10),
        &TO_RUNNING,
    ));
    entries.extend(lifecycle(
        "alpha",
        ALPHA_2,
        t0() + Duration::hours(1),
        &TO_RUNNING[..2],
    ));
    entries.extend(failed_chain());
    for entry in entries {
        journal.append(entry).unwrap();
    }
    (dir, journal)
}

fn failed_chain() -> Vec<NewRecord> {
    let start = t0() + Duration::hours(2);
    let first = Input::new(Trigger::Observed, 1);
    let invalid = Input::new(Trigger::SpecInvalid, 2)
        .with_readiness(Readiness::new(0, 1), Readiness::new(0, 2))
        .with_reason(REASON);
    let to_pending = step(Phase::New, &first).unwrap();
    let to_failed = step(Phase::Pending, &invalid).unwrap();
    let digest = spec_digest(&serde_json::json!({"tenant": "gamma"}));
    vec![
        NewRecord::from_transition("gamma", GAMMA, 1, start, 1, first, to_pending, &digest),
        NewRecord::from_transition(
            "gamma",
            GAMMA,
            2,
            start + Duration::seconds(1),
            2,
            invalid,
            to_failed,
            &digest,
        ),
    ]
}

fn export_all(journal: &Journal, filter: &ExportFilter) -> String {
    export_records(journal, filter)
        .unwrap()
        .map(|r| export_line(&r.unwrap()))
        .collect()
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-export.jsonl")
}

/// Set `NEURALLOG_UPDATE_FIXTURES=1` to rewrite the committed file after an intended change
/// of the export schema (then update docs/journal-export.md too).
#[test]
fn export_of_the_fixture_journal_matches_the_committed_file() {
    let (_dir, journal) = fixture_journal();
    let exported = export_all(&journal, &ExportFilter::default());
    if std::env::var_os("NEURALLOG_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(fixture_path().parent().unwrap()).unwrap();
        std::fs::write(fixture_path(), &exported).unwrap();
    }
    let expected = std::fs::read_to_string(fixture_path()).unwrap();
    assert_eq!(exported, expected);
}

#[test]
fn exported_lines_parse_back_to_records_whose_hashes_recompute() {
    let (_dir, journal) = fixture_journal();
    let exported = export_all(&journal, &ExportFilter::default());
    assert_eq!(exported.lines().count(), 6 + 4 + 2 + 2);
    for line in exported.lines() {
        let record: Record = serde_json::from_str(line).unwrap();
        assert_eq!(record.recompute_hash(), record.hash);
    }
}

#[test]
fn export_filters_by_tenant_and_time() {
    let (_dir, journal) = fixture_journal();
    let alpha = ExportFilter {
        tenant: Some("alpha".into()),
        since: None,
    };
    let lines = export_all(&journal, &alpha);
    assert_eq!(lines.lines().count(), 8);
    assert!(lines.lines().all(|l| l.contains("\"tenant\":\"alpha\"")));

    let recent = ExportFilter {
        tenant: None,
        since: Some(t0() + Duration::hours(1)),
    };
    let lines = export_all(&journal, &recent);
    assert_eq!(lines.lines().count(), 4);
    let nobody = ExportFilter {
        tenant: Some("nobody".into()),
        since: None,
    };
    assert_eq!(export_all(&journal, &nobody), "");
}

#[test]
fn history_defaults_to_the_newest_chain_and_accepts_an_older_uid() {
    let (_dir, journal) = fixture_journal();
    let newest = read_history(&journal, "alpha", None).unwrap().unwrap();
    assert_eq!(newest.uid, ALPHA_2);
    assert_eq!(newest.other_uids, vec![ALPHA_1.to_owned()]);
    assert_eq!(newest.records.len(), 2);
    let older = read_history(&journal, "alpha", Some(ALPHA_1))
        .unwrap()
        .unwrap();
    assert_eq!(older.records.len(), 6);
    assert!(
        read_history(&journal, "alpha", Some(BETA))
            .unwrap()
            .is_none()
    );
    assert!(read_history(&journal, "nobody", None).unwrap().is_none());
}

#[test]
fn show_prints_one_row_per_transition() {
    let (_dir, journal) = fixture_journal();
    let history = read_history(&journal, "gamma", None).unwrap().unwrap();
    let mut out = Vec::new();
    write_history(&mut out, &history).unwrap();
    let text = String::from_utf8(out).unwrap();
    let invalid = format!("SpecInvalid(gen=2,redis=0/1,server=0/2,reason={REASON})");
    let expected = format!(
        "tenant gamma uid {GAMMA}\n\
         SEQ  TIME                  FROM -> TO         INPUT{pad}MESSAGE\n\
         1    2025-01-02T05:04:05Z  New -> Pending     Observed(gen=1){pad_1}Tenant accepted; creating its namespace\n\
         2    2025-01-02T05:04:06Z  Pending -> Failed  {invalid}  Tenant cannot be provisioned: {REASON}\n",
        pad = " ".repeat(INPUT_WIDTH - "INPUT".len() + 2),
        pad_1 = " ".repeat(INPUT_WIDTH - "Observed(gen=1)".len() + 2),
    );
    assert_eq!(text, expected);
}

#[test]
fn list_prints_every_chain() {
    let (_dir, journal) = fixture_journal();
    let mut out = Vec::new();
    write_list(&mut out, &journal.tenants().unwrap()).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0].starts_with("NAME   UID"));
    assert!(lines[1].starts_with(&format!("alpha  {ALPHA_1}  Deleted")));
    assert!(lines[1].ends_with("yes"));
    assert!(lines[4].starts_with(&format!("gamma  {GAMMA}  Failed")));
    assert!(lines[4].ends_with("no"));
}

#[test]
fn verify_names_the_tenant_of_the_first_bad_record() {
    let (_dir, journal) = fixture_journal();
    assert!(verify_journal(&journal, |_| {}).unwrap().is_ok());
    journal.corrupt_for_test(BETA, 3);
    let outcome = verify_journal(&journal, |_| {}).unwrap();
    let first = outcome.first_problem.clone().unwrap();
    assert_eq!(
        (first.tenant.as_deref(), first.uid.as_str(), first.seq),
        (Some("beta"), BETA, Some(3))
    );
    let mut out = Vec::new();
    write_verify(&mut out, &outcome).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!(
            "first bad record: tenant beta uid {BETA} seq 3: stored hash"
        )),
        "{text}"
    );
}

#[test]
fn bad_times_are_refused_with_an_example() {
    assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    assert_eq!(
        parse_time("2025-01-02T04:04:05+01:00").unwrap(),
        t0() - chrono::Duration::nanoseconds(6)
    );
}

#[test]
fn show_says_where_retention_compacted_a_chain() {
    let (_dir, journal) = fixture_journal();
    let retention = crate::journal::Retention {
        keep_records: 2,
        keep_for: Duration::days(3650),
        archive: None,
    };
    journal
        .compact(retention, t0() + Duration::days(1))
        .unwrap();
    let history = read_history(&journal, "beta", None).unwrap().unwrap();
    assert_eq!(history.records.first().map(|r| r.seq), Some(3));
    let mut out = Vec::new();
    write_history(&mut out, &history).unwrap();
    let text = String::from_utf8(out).unwrap();
    let second = text.lines().nth(1).unwrap_or_default();
    assert!(
        second.starts_with(
            "records 1-2 (from 2025-01-02T03:14:05Z, up to phase ProvisioningRedis at 2025-01-02T03:14:06Z) were compacted by retention on 2025-01-03T03:04:05Z; the chain continues from checkpoint hash "
        ),
        "{text}"
    );
    // The API's JSON carries it to remote tools.
    let json = serde_json::to_string(&history).unwrap();
    let back: History = serde_json::from_str(&json).unwrap();
    assert_eq!(back, history);
}
