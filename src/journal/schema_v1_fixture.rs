//! The committed schema-1 journal (`migrations/fixtures/schema-v1`): its generator and the
//! test that the current operator opens, migrates and verifies it.

use super::codec;
use super::testing::{TO_RUNNING, lifecycle, t0};
use super::{Digest, Journal, NewRecord, SCHEMA_VERSION};
use chrono::Duration;
use neurallog_machines::{Input, Phase, Trigger, step};
use neurallog_migrations::layout::{RECORDS_TREE, record_key};
use std::path::{Path, PathBuf};

const ALPHA_1: &str = "11111111-1111-4111-8111-111111111111";
const BETA: &str = "22222222-2222-4222-8222-222222222222";
const ALPHA_2: &str = "33333333-3333-4333-8333-333333333333";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures/schema-v1")
}

/// `alpha` provisioned and deleted, `beta` running, `alpha` re-created (a second chain).
fn fixture_chains() -> Vec<Vec<NewRecord>> {
    let mut deleted = TO_RUNNING.to_vec();
    deleted.extend([Trigger::DeletionRequested, Trigger::CleanupDone]);
    vec![
        lifecycle("alpha", ALPHA_1, t0(), &deleted),
        lifecycle("beta", BETA, t0() + Duration::minutes(10), &TO_RUNNING),
        lifecycle(
            "alpha",
            ALPHA_2,
            t0() + Duration::hours(1),
            &TO_RUNNING[..2],
        ),
    ]
}

/// Writes a journal as schema 1 did: the `records` tree and the version, no summaries.
#[test]
#[ignore = "regenerates migrations/fixtures/schema-v1; run by hand, then commit the result"]
fn generate_schema_v1_fixture() {
    let out = fixture_dir();
    let _ = std::fs::remove_dir_all(&out);
    let db = sled::open(&out).unwrap();
    neurallog_migrations::stamp_version(&db, 1).unwrap();
    let records = db.open_tree(RECORDS_TREE).unwrap();
    for chain in fixture_chains() {
        let mut prev_hash = Digest::ZERO;
        for entry in chain {
            let (value, record) = codec::encode_new(&entry, prev_hash);
            records
                .insert(record_key(&entry.uid, entry.seq), value)
                .unwrap();
            prev_hash = record.hash;
        }
    }
    db.flush().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn schema_v1_journal_is_migrated_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    copy_dir(&fixture_dir(), &path);

    let journal = Journal::open(&path).unwrap();

    assert_eq!(
        neurallog_migrations::schema_version(&journal.db).unwrap(),
        Some(SCHEMA_VERSION)
    );
    let heads: Vec<_> = journal
        .tenants()
        .unwrap()
        .into_iter()
        .map(|s| (s.tenant, s.uid, s.last_seq, s.last_phase, s.deleted))
        .collect();
    assert_eq!(
        heads,
        vec![
            ("alpha".into(), ALPHA_1.into(), 6, Phase::Deleted, true),
            (
                "alpha".into(),
                ALPHA_2.into(),
                2,
                Phase::ProvisioningRedis,
                false
            ),
            ("beta".into(), BETA.into(), 4, Phase::Running, false),
        ]
    );
    assert_eq!(journal.find_uids("alpha").unwrap(), vec![ALPHA_1, ALPHA_2]);

    let report = journal.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!((report.chains, report.records), (3, 12));

    // The fixture holds exactly what the generator writes today: the format has not drifted.
    for chain in fixture_chains() {
        let uid = chain[0].uid.clone();
        let stored: Vec<_> = journal.history(&uid).map(Result::unwrap).collect();
        assert_eq!(stored.len(), chain.len());
        for (record, entry) in stored.iter().zip(&chain) {
            assert!(record.matches(entry), "{uid} seq {}", entry.seq);
        }
    }

    // And the migrated chain takes new records.
    let input = Input::new(Trigger::SpecChanged, 2);
    let transition = step(Phase::Running, &input).unwrap();
    let time = t0() + Duration::hours(2);
    let next = NewRecord::from_transition("beta", BETA, 5, time, 2, input, transition, "d");
    assert_eq!(journal.append(next).unwrap().seq, 5);
    assert!(journal.verify().unwrap().is_ok());
}
