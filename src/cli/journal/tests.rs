//! `journal verify` on damaged copies of a journal, read as an auditor would: the copy
//! opened read-only, the command failing and naming the first bad record.

use super::*;
use crate::journal::Journal;
use crate::journal::testing::{Damage, TO_RUNNING, lifecycle, t0};
use std::path::Path;

const UID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

fn write_journal(path: &Path) {
    let journal = Journal::open(path).unwrap();
    for entry in lifecycle("acme", UID, t0(), &TO_RUNNING) {
        journal.append(entry).unwrap();
    }
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

/// `journal verify --journal COPY` after `damage` to record `seq` of the copy.
async fn verify_damaged_copy(original: &Path, damage: Damage, seq: u64) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    copy_dir(original, &copy);
    Journal::open(&copy)
        .unwrap()
        .damage_for_test(UID, seq, damage);
    let source = Source::file(&copy).unwrap();
    let mut out = Vec::new();
    let error = verify(&source, &mut out).await.unwrap_err();
    (String::from_utf8(out).unwrap(), error.to_string())
}

#[tokio::test]
async fn verify_fails_on_damaged_copies_naming_the_first_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("journal");
    write_journal(&original);

    let cases = [
        (Damage::FlipByte, 2, "seq 2: stored hash"),
        (Damage::Truncate, 2, "seq 2: record is truncated"),
        (Damage::Remove, 2, "seq 3: seq gap: expected seq 2"),
        (
            Damage::SwapWithNext,
            2,
            "seq 2: record stored under this key is",
        ),
    ];
    for (damage, seq, expected) in cases {
        let (stdout, error) = verify_damaged_copy(&original, damage, seq).await;
        let named = format!("first bad record: tenant acme uid {UID} {expected}");
        assert!(stdout.contains(&named), "{damage:?}: {stdout}");
        assert!(error.contains(&named), "{damage:?}: {error}");
    }

    let source = Source::file(&original).unwrap();
    let mut out = Vec::new();
    verify(&source, &mut out).await.unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "journal intact: 1 chains, 4 records\n"
    );
}
