use super::*;
use crate::layout::{CHECKPOINTS_TREE, TENANTS_TREE, record_key};
use crate::summary::TenantSummaryRow;
use std::path::{Path, PathBuf};

/// Phase codes as the record format stores them (`Running` = 4, `Deleted` = 9, ...).
const PROVISIONING_REDIS: u8 = 2;
const RUNNING: u8 = 4;
const DELETED: u8 = 9;

const ALPHA_1: &str = "11111111-1111-4111-8111-111111111111";
const BETA: &str = "22222222-2222-4222-8222-222222222222";
const ALPHA_2: &str = "33333333-3333-4333-8333-333333333333";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/schema-v1")
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

fn open_fixture_copy() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    copy_dir(&fixture_dir(), &path);
    let db = sled::open(&path).unwrap();
    (dir, db)
}

fn summaries(db: &sled::Db) -> Vec<TenantSummaryRow> {
    db.open_tree(TENANTS_TREE)
        .unwrap()
        .iter()
        .values()
        .map(|v| TenantSummaryRow::decode(&v.unwrap()).unwrap())
        .collect()
}

fn last_hash_of(db: &sled::Db, uid: &str, seq: u64) -> [u8; 32] {
    let value = db
        .open_tree(RECORDS_TREE)
        .unwrap()
        .get(record_key(uid, seq))
        .unwrap()
        .unwrap();
    value[value.len() - 32..].try_into().unwrap()
}

#[test]
fn fresh_database_is_stamped_with_the_current_version() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    assert_eq!(migrate(&db).unwrap(), CURRENT_VERSION);
    assert_eq!(schema_version(&db).unwrap(), Some(CURRENT_VERSION));
    assert_eq!(migrate(&db).unwrap(), CURRENT_VERSION);
}

#[test]
fn newer_schema_is_refused_with_an_upgrade_hint() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    stamp_version(&db, 99).unwrap();
    let err = migrate(&db).unwrap_err();
    assert!(matches!(
        err,
        MigrationError::NewerThanSupported {
            found: 99,
            supported: CURRENT_VERSION
        }
    ));
    assert_eq!(
        err.to_string(),
        "journal schema version 99 is newer than this operator supports (3); upgrade the operator"
    );
    assert_eq!(schema_version(&db).unwrap(), Some(99), "left untouched");
}

#[test]
fn records_without_a_version_are_refused() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    db.open_tree(RECORDS_TREE)
        .unwrap()
        .insert(record_key("u", 1), &b"x"[..])
        .unwrap();
    assert!(matches!(migrate(&db), Err(MigrationError::Unversioned)));
}

#[test]
fn corrupt_version_is_an_error_not_a_panic() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    db.open_tree(META_TREE)
        .unwrap()
        .insert(SCHEMA_VERSION_KEY, &b"\x01\x02"[..])
        .unwrap();
    assert!(matches!(
        migrate(&db),
        Err(MigrationError::CorruptVersion { .. })
    ));
}

#[test]
fn schema_v1_fixture_migrates_to_summaries() {
    let (_dir, db) = open_fixture_copy();
    assert_eq!(schema_version(&db).unwrap(), Some(1));
    assert!(db.open_tree(TENANTS_TREE).unwrap().is_empty());

    assert_eq!(migrate(&db).unwrap(), CURRENT_VERSION);

    assert_eq!(schema_version(&db).unwrap(), Some(CURRENT_VERSION));
    assert!(
        db.open_tree(CHECKPOINTS_TREE).unwrap().is_empty(),
        "schema 3"
    );
    let rows = summaries(&db);
    let heads: Vec<_> = rows
        .iter()
        .map(|r| (r.uid.as_str(), r.tenant.as_str(), r.last_seq, r.last_phase))
        .collect();
    assert_eq!(
        heads,
        vec![
            (ALPHA_1, "alpha", 6, DELETED),
            (BETA, "beta", 4, RUNNING),
            (ALPHA_2, "alpha", 2, PROVISIONING_REDIS),
        ]
    );
    for row in &rows {
        assert_eq!(row.last_hash, last_hash_of(&db, &row.uid, row.last_seq));
        assert!(row.first_time <= row.last_time);
    }
}

#[test]
fn summaries_step_is_idempotent_when_rerun_after_an_interruption() {
    let (_dir, db) = open_fixture_copy();
    migrate(&db).unwrap();
    let expected = summaries(&db);

    // As if a run had written a partial, stale tree and died before the version bump.
    let tenants = db.open_tree(TENANTS_TREE).unwrap();
    tenants.remove(BETA.as_bytes()).unwrap();
    tenants.insert("stale-uid", &b"garbage"[..]).unwrap();
    stamp_version(&db, 1).unwrap();

    assert_eq!(migrate(&db).unwrap(), CURRENT_VERSION);
    assert_eq!(summaries(&db), expected);
}

#[test]
fn corrupt_record_fails_the_migration_naming_its_key() {
    let (_dir, db) = open_fixture_copy();
    db.open_tree(RECORDS_TREE)
        .unwrap()
        .insert(record_key(BETA, 2), &b"\x01short"[..])
        .unwrap();
    let err = migrate(&db).unwrap_err().to_string();
    assert!(err.contains(&format!("{BETA}/2")), "{err}");
    assert_eq!(schema_version(&db).unwrap(), Some(1), "not bumped");
}
