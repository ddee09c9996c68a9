use super::*;
use crate::journal::testing::{TO_RUNNING, lifecycle, t0};

const UID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// A journal at `<dir>/journal` holding one tenant's lifecycle; returns its records' hashes.
fn journal_with_history(dir: &Path) -> Vec<String> {
    let journal = Journal::open(&dir.join("journal")).unwrap();
    lifecycle("acme", UID, t0(), &TO_RUNNING)
        .into_iter()
        .map(|e| journal.append(e).unwrap().hash.to_hex())
        .collect()
}

fn status(sequence: u64, hash: &str) -> StatusPosition {
    StatusPosition {
        tenant: "acme".into(),
        uid: UID.into(),
        sequence,
        hash: hash.into(),
        chain: None,
    }
}

fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .collect()
}

#[test]
fn an_intact_journal_that_matches_the_cluster_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = journal_with_history(dir.path());
    let journal =
        open_or_replace(&dir.path().join("journal"), &[status(4, &hashes[3])], t0()).unwrap();
    assert_eq!(journal.recovery().unwrap(), None);
    assert_eq!(journal.last(UID).unwrap().unwrap().seq, 4);
    assert!(moved_aside(dir.path()).is_empty());
}

#[test]
fn a_broken_chain_is_moved_aside_and_a_marked_journal_starts() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_history(dir.path());
    Journal::open(&dir.path().join("journal"))
        .unwrap()
        .corrupt_for_test(UID, 2);
    let journal = open_or_replace(&dir.path().join("journal"), &[], t0()).unwrap();
    let mark = journal.recovery().unwrap().expect("recovery mark");
    assert!(mark.reason.starts_with("verify: "), "{}", mark.reason);
    assert_eq!(journal.last(UID).unwrap(), None, "a new chain");
    let aside = moved_aside(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(mark.moved_to, aside[0].display().to_string());
    let kept = Journal::open(&aside[0]).unwrap();
    assert_eq!(
        kept.last(UID).unwrap().unwrap().seq,
        4,
        "the damaged journal is kept"
    );
}

#[test]
fn a_lost_tail_shown_by_a_tenant_status_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = journal_with_history(dir.path());
    // The status shows a seq 5 the journal lost.
    let journal = open_or_replace(&dir.path().join("journal"), &[status(5, "feed")], t0()).unwrap();
    let mark = journal.recovery().unwrap().expect("recovery mark");
    assert!(mark.reason.contains("tail was lost"), "{}", mark.reason);
    drop(journal);

    // A status whose record differs is damage too.
    let dir = tempfile::tempdir().unwrap();
    journal_with_history(dir.path());
    let journal =
        open_or_replace(&dir.path().join("journal"), &[status(2, &hashes[3])], t0()).unwrap();
    assert!(journal.recovery().unwrap().is_some());
}

#[test]
fn a_status_of_a_chain_the_journal_never_held_is_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = journal_with_history(dir.path());
    let other_chain = StatusPosition {
        chain: Some("r20250101000000".into()),
        ..status(9, "feed")
    };
    let path = dir.path().join("journal");
    let journal =
        open_or_replace(&path, &[status(4, &hashes[3]), other_chain.clone()], t0()).unwrap();
    let mark = journal.recovery().unwrap().expect("recovery mark");
    assert!(
        mark.reason.contains(
            "chain \"r20250101000000\", which this journal (original) neither holds nor replaced"
        ),
        "{}",
        mark.reason
    );
    assert_eq!(
        mark.earlier_chains,
        [None, Some("r20250101000000".to_owned())],
        "the replaced chain and the one the statuses named"
    );
    drop(journal);
    // Restarting before the statuses moved to the new chain is not damage again.
    let journal = open_or_replace(&path, &[status(4, &hashes[3]), other_chain], t0()).unwrap();
    assert_eq!(journal.recovery().unwrap(), Some(mark));
    assert_eq!(moved_aside(dir.path()).len(), 1);
}

#[test]
fn two_recoveries_in_one_second_get_their_own_names_and_chains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    journal_with_history(dir.path());
    Journal::open(&path).unwrap().corrupt_for_test(UID, 2);
    let first = open_or_replace(&path, &[], t0()).unwrap();
    let first_mark = first.recovery().unwrap().expect("first recovery");
    for entry in lifecycle("acme", UID, t0(), &TO_RUNNING) {
        first.append(entry).unwrap();
    }
    drop(first);
    Journal::open(&path).unwrap().corrupt_for_test(UID, 2);
    let second = open_or_replace(&path, &[], t0()).unwrap();
    let second_mark = second.recovery().unwrap().expect("second recovery");
    assert_eq!(
        moved_aside(dir.path()).len(),
        2,
        "both damaged journals kept"
    );
    assert_ne!(first_mark.moved_to, second_mark.moved_to);
    assert!(
        second_mark.moved_to.ends_with("-2"),
        "{}",
        second_mark.moved_to
    );
    assert_eq!(first_mark.chain_label(), "r20250102030405");
    assert_eq!(second_mark.chain_label(), "r20250102030405-2");
    assert_eq!(
        second_mark.earlier_chains,
        [None, Some(first_mark.chain_label())]
    );
}

#[test]
fn an_emptied_journal_is_damage_when_tenants_show_records() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open_or_replace(&dir.path().join("journal"), &[status(3, "feed")], t0()).unwrap();
    let mark = journal.recovery().unwrap().expect("recovery mark");
    assert!(mark.reason.contains("ends at 0"), "{}", mark.reason);
}

#[test]
fn a_busy_journal_is_an_error_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    journal_with_history(dir.path());
    let _held = Journal::open(&dir.path().join("journal")).unwrap();
    let Err(error) = open_or_replace(&dir.path().join("journal"), &[], t0()) else {
        panic!("opened a journal another handle holds");
    };
    assert!(
        matches!(error, RecoveryError::Journal(JournalError::Locked { .. })),
        "{error}"
    );
    assert!(moved_aside(dir.path()).is_empty());
}
