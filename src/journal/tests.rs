use super::testing::{TO_RUNNING, lifecycle, open_temp, sample_entry, t0};
use super::*;
use chrono::Duration;
use neurallog_machines::{Phase, Trigger};
use neurallog_migrations::layout::record_key;

const UID_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const UID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

fn append_all(journal: &Journal, entries: Vec<NewRecord>) -> Vec<Record> {
    entries
        .into_iter()
        .map(|entry| journal.append(entry).unwrap())
        .collect()
}

fn history(journal: &Journal, uid: &str) -> Vec<Record> {
    journal.history(uid).collect::<Result<_, _>>().unwrap()
}

#[test]
fn appended_records_read_back_in_seq_order_with_linked_hashes() {
    let (_dir, journal) = open_temp();
    let appended = append_all(&journal, lifecycle("acme", UID_A, t0(), &TO_RUNNING));

    assert_eq!(history(&journal, UID_A), appended);
    let seqs: Vec<u64> = appended.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(appended[0].prev_hash, Digest::ZERO);
    for pair in appended.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for record in &appended {
        assert_eq!(record.recompute_hash(), record.hash);
    }
    assert_eq!(journal.last(UID_A).unwrap().as_ref(), appended.last());
    assert_eq!(journal.last(UID_B).unwrap(), None);
    assert!(history(&journal, "no-such-uid").is_empty());
    assert!(history(&journal, "bad\0uid").is_empty());
}

#[test]
fn summaries_track_each_chain_head() {
    let (_dir, journal) = open_temp();
    let a = append_all(&journal, lifecycle("acme", UID_A, t0(), &TO_RUNNING));
    append_all(&journal, lifecycle("beta", UID_B, t0(), &TO_RUNNING[..2]));

    let summaries = journal.tenants().unwrap();
    assert_eq!(summaries.len(), 2);
    let acme = &summaries[0];
    assert_eq!(
        (acme.tenant.as_str(), acme.uid.as_str(), acme.last_seq),
        ("acme", UID_A, 4)
    );
    assert_eq!(acme.last_phase, Phase::Running);
    assert_eq!(acme.last_hash, a[3].hash);
    assert_eq!(acme.first_time, a[0].time);
    assert_eq!(acme.last_time, a[3].time);
    assert!(!acme.deleted);
    assert_eq!(summaries[1].last_phase, Phase::ProvisioningRedis);
    assert_eq!(journal.tenant(UID_B).unwrap().as_ref(), Some(&summaries[1]));
}

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let appended = {
        let journal = Journal::open(&path).unwrap();
        append_all(&journal, lifecycle("acme", UID_A, t0(), &TO_RUNNING))
    };
    let journal = Journal::open(&path).unwrap();
    assert_eq!(history(&journal, UID_A), appended);
    assert!(journal.verify().unwrap().is_ok());
}

#[test]
fn retrying_a_stored_record_returns_it_unchanged() {
    let (_dir, journal) = open_temp();
    let entries = lifecycle("acme", UID_A, t0(), &TO_RUNNING);
    let appended = append_all(&journal, entries.clone());

    assert_eq!(journal.append(entries[3].clone()).unwrap(), appended[3]);
    assert_eq!(journal.append(entries[1].clone()).unwrap(), appended[1]);
    assert_eq!(history(&journal, UID_A), appended);
    assert_eq!(journal.tenant(UID_A).unwrap().unwrap().last_seq, 4);
}

#[test]
fn a_different_record_at_a_stored_seq_is_a_conflict() {
    let (_dir, journal) = open_temp();
    let entries = lifecycle("acme", UID_A, t0(), &TO_RUNNING);
    append_all(&journal, entries.clone());

    let mut different = entries[2].clone();
    different.message = "something else".into();
    let err = journal.append(different).unwrap_err();
    assert!(
        matches!(err, JournalError::Conflict { seq: 3, .. }),
        "{err}"
    );
    let message = err.to_string();
    for part in ["acme", UID_A, "seq 3"] {
        assert!(message.contains(part), "{message}");
    }
}

#[test]
fn a_seq_that_skips_ahead_is_a_conflict() {
    let (_dir, journal) = open_temp();
    journal.append(sample_entry("acme", UID_A, 1)).unwrap();
    let err = journal.append(sample_entry("acme", UID_A, 3)).unwrap_err();
    assert!(err.to_string().contains("next seq is 2"), "{err}");
    let err = journal.append(sample_entry("beta", UID_B, 2)).unwrap_err();
    assert!(matches!(err, JournalError::Conflict { seq: 2, .. }));
    assert_eq!(journal.records().count(), 1);
}

#[test]
fn invalid_records_are_refused() {
    let (_dir, journal) = open_temp();
    journal.append(sample_entry("acme", UID_A, 1)).unwrap();

    let mut earlier = sample_entry("acme", UID_A, 2);
    earlier.time = t0() - Duration::seconds(1);
    let mut renamed = sample_entry("other", UID_A, 2);
    renamed.time = t0();
    for entry in [
        earlier,
        renamed,
        sample_entry("acme", "", 1),
        sample_entry("acme", "nul\0uid", 1),
        sample_entry("acme", UID_B, 0),
    ] {
        let err = journal.append(entry).unwrap_err();
        assert!(matches!(err, JournalError::Invalid { .. }), "{err}");
    }
    assert_eq!(journal.records().count(), 1);
}

#[test]
fn a_recreated_tenant_gets_its_own_chain() {
    let (_dir, journal) = open_temp();
    let mut gone = TO_RUNNING.to_vec();
    gone.extend([Trigger::DeletionRequested, Trigger::CleanupDone]);
    let first = append_all(&journal, lifecycle("acme", UID_A, t0(), &gone));
    let later = t0() + Duration::hours(1);
    let second = append_all(&journal, lifecycle("acme", UID_B, later, &TO_RUNNING[..1]));

    assert_eq!(second[0].seq, 1);
    assert_eq!(second[0].prev_hash, Digest::ZERO);
    assert_eq!(journal.find_uids("acme").unwrap(), vec![UID_A, UID_B]);
    assert!(journal.find_uids("nobody").unwrap().is_empty());
    let summaries = journal.tenants().unwrap();
    assert!(summaries[0].deleted && !summaries[1].deleted);
    assert_eq!(history(&journal, UID_A), first);
    assert!(journal.verify().unwrap().is_ok());
}

#[test]
fn concurrent_appenders_cannot_create_gaps_or_duplicates() {
    let (_dir, journal) = open_temp();
    const SEQS: u64 = 30;
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let journal = &journal;
            scope.spawn(move || {
                for seq in 1..=SEQS {
                    let mut entry = sample_entry("acme", UID_A, seq);
                    entry.message = format!("writer {writer}");
                    match journal.append(entry) {
                        Ok(_) | Err(JournalError::Conflict { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
            });
        }
    });
    let seqs: Vec<u64> = history(&journal, UID_A).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=SEQS).collect::<Vec<_>>());
    assert!(journal.verify().unwrap().is_ok());
}

#[test]
fn bulk_append_builds_the_same_chain_as_append() {
    let (_dir, bulk) = open_temp();
    let (_dir2, single) = open_temp();
    let entries = lifecycle("acme", UID_A, t0(), &TO_RUNNING);
    assert_eq!(bulk.bulk_append_unflushed(entries.clone()).unwrap(), 4);
    bulk.flush().unwrap();
    append_all(&single, entries.clone());

    assert_eq!(history(&bulk, UID_A), history(&single, UID_A));
    assert_eq!(bulk.tenants().unwrap(), single.tenants().unwrap());
    assert!(bulk.bulk_append_unflushed(entries).is_err(), "stored seqs");
}

#[test]
fn corrupt_bytes_on_disk_are_errors_naming_the_key() {
    let (_dir, journal) = open_temp();
    append_all(&journal, lifecycle("acme", UID_A, t0(), &TO_RUNNING));
    journal.settled().unwrap();
    journal
        .records
        .insert(record_key(UID_A, 2), &b"\x01garbage"[..])
        .unwrap();
    journal.tenants.insert(UID_B, &b"\x09"[..]).unwrap();

    let results: Vec<_> = journal.history(UID_A).collect();
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains(&format!("{UID_A}/2")), "{err}");
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = journal.tenants().unwrap_err().to_string();
    assert!(err.contains(UID_B), "{err}");
}

#[test]
fn a_newer_schema_is_refused_with_an_upgrade_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    {
        let db = sled::open(&path).unwrap();
        neurallog_migrations::stamp_version(&db, 99).unwrap();
    }
    let err = Journal::open(&path).err().unwrap();
    assert!(matches!(err, JournalError::SchemaTooNew { found: 99, .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "journal schema version 99 is newer than this operator supports ({SCHEMA_VERSION}); upgrade the operator"
        )
    );
}

/// The environment variable telling [`open_from_a_child_process`] which journal to open.
const CHILD_JOURNAL_ENV: &str = "NEURALLOG_JOURNAL_LOCK_TEST_PATH";

#[test]
fn another_process_gets_one_clear_line_while_the_journal_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let _journal = Journal::open(&path).unwrap();

    let test_name = format!(
        "{}::open_from_a_child_process",
        module_path!().split_once("::").map_or("", |(_, rest)| rest)
    );
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test_name.as_str(), "--exact", "--ignored", "--nocapture"])
        .env(CHILD_JOURNAL_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!(
        "child: journal at {} is in use by another process (sled allows one process at a time); \
         stop it or read through the operator's --server API\n",
        path.display()
    );
    assert!(stdout.contains(&expected), "child said:\n{stdout}");
}

#[test]
#[ignore = "run as a child process by another_process_gets_one_clear_line_while_the_journal_is_open"]
fn open_from_a_child_process() {
    let Some(path) = std::env::var_os(CHILD_JOURNAL_ENV) else {
        return;
    };
    match Journal::open(std::path::Path::new(&path)) {
        Ok(_) => println!("child: opened"),
        Err(e) => println!("child: {e}"),
    }
}

#[test]
fn a_second_open_in_the_same_process_is_refused_too() {
    let (dir, _journal) = open_temp();
    let err = Journal::open(&dir.path().join("journal")).err().unwrap();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
}

mod property {
    use super::*;
    use neurallog_machines::{Input, step};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// One tenant as the test drives it: its current chain and phase.
    struct Tenant {
        name: String,
        uid: String,
        chains: u32,
        phase: Phase,
        seq: u64,
        last: Option<NewRecord>,
    }

    impl Tenant {
        fn new(index: usize) -> Self {
            Tenant {
                name: format!("tenant-{index}"),
                uid: format!("uid-{index}-0"),
                chains: 1,
                phase: Phase::New,
                seq: 0,
                last: None,
            }
        }

        /// A deleted tenant comes back under a new uid.
        fn recreate_if_deleted(&mut self) {
            if self.phase == Phase::Deleted {
                self.uid = format!("{}-{}", self.uid, self.chains);
                self.chains += 1;
                self.phase = Phase::New;
                self.seq = 0;
                self.last = None;
            }
        }
    }

    fn trigger() -> impl Strategy<Value = Trigger> {
        proptest::sample::select(Trigger::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn random_appends_across_tenants_verify_with_gapless_seqs(
            ops in proptest::collection::vec((0usize..4, trigger(), any::<bool>()), 1..60)
        ) {
            let (_dir, journal) = open_temp();
            let mut tenants: Vec<Tenant> = (0..4).map(Tenant::new).collect();
            let mut appended = 0u64;
            for (i, (index, trigger, retry)) in ops.into_iter().enumerate() {
                let tenant = &mut tenants[index];
                if retry && let Some(last) = tenant.last.clone() {
                    let again = journal.append(last.clone()).unwrap();
                    prop_assert!(again.matches(&last));
                }
                tenant.recreate_if_deleted();
                let input = Input::new(trigger, 1 + i as i64 / 8);
                let Some(transition) = step(tenant.phase, &input) else { continue };
                let entry = NewRecord::from_transition(
                    tenant.name.clone(),
                    tenant.uid.clone(),
                    tenant.seq + 1,
                    t0() + Duration::seconds(i as i64),
                    input.generation,
                    input,
                    transition,
                    "digest",
                );
                let record = journal.append(entry.clone()).unwrap();
                tenant.phase = record.to;
                tenant.seq = record.seq;
                tenant.last = Some(entry);
                appended += 1;
            }

            let report = journal.verify().unwrap();
            prop_assert!(report.is_ok(), "{:?}", report.first_problem);
            prop_assert_eq!(report.records, appended);
            let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for record in journal.records() {
                let record = record.unwrap();
                seqs.entry(record.uid).or_default().push(record.seq);
            }
            for (uid, seqs) in &seqs {
                let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
                prop_assert_eq!(seqs, &expected, "uid {}", uid);
            }
            prop_assert_eq!(journal.tenants().unwrap().len(), seqs.len());
        }
    }
}

#[test]
fn one_batch_refuses_an_entry_without_failing_the_others() {
    let (_dir, journal) = open_temp();
    let journal = std::sync::Arc::new(journal);
    // An exclusive job holds the writer thread while the batch is queued behind it, so
    // the thread takes the whole batch at once when it lets go.
    let (started, running) = std::sync::mpsc::channel();
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let holder = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            journal.writer.exclusive(move |_| {
                started.send(()).unwrap();
                hold.recv().unwrap();
                Ok(())
            })
        })
    };
    running.recv().unwrap();
    let batch = vec![
        sample_entry("acme", UID_A, 1),
        sample_entry("acme", UID_A, 3),
        sample_entry("acme", UID_A, 2),
        sample_entry("other", UID_B, 1),
        sample_entry("acme", UID_A, 1),
    ];
    let answers = journal.writer.queue_appends(batch).unwrap();
    release.send(()).unwrap();
    holder.join().unwrap().unwrap();
    let outcomes: Vec<_> = answers.iter().map(|a| a.recv().unwrap()).collect();
    let seqs: Vec<_> = outcomes
        .iter()
        .map(|o| o.as_ref().map(|r| r.seq).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(seqs[0], Ok(1));
    assert!(
        seqs[1].as_ref().is_err_and(|e| e.contains("skips ahead")),
        "{seqs:?}"
    );
    assert_eq!(
        seqs[2..],
        [Ok(2), Ok(1), Ok(1)],
        "the retry of seq 1 returns it"
    );
    let chain: Vec<u64> = history(&journal, UID_A).iter().map(|r| r.seq).collect();
    assert_eq!(chain, [1, 2]);
    assert_eq!(history(&journal, UID_B).len(), 1);
    assert!(journal.verify().unwrap().is_ok());
}

#[test]
fn a_clock_stepped_back_does_not_stop_transitions() {
    let (_dir, journal) = open_temp();
    let second = Duration::seconds(1);
    // An injected clock: it steps back an hour after the second transition.
    let clock = [
        t0(),
        t0() + second,
        t0() - Duration::hours(1),
        t0() - Duration::hours(1) + second,
        t0() + second * 2,
    ];
    let mut raw = sample_entry("acme", UID_A, 3);
    let mut last: Option<Record> = None;
    for (i, now) in clock.into_iter().enumerate() {
        let mut entry = sample_entry("acme", UID_A, i as u64 + 1);
        if i == 2 {
            raw = entry.clone();
            raw.time = now;
        }
        entry.time = record_time(now, last.as_ref());
        last = Some(journal.append(entry).unwrap());
    }
    let times: Vec<_> = history(&journal, UID_A).iter().map(|r| r.time).collect();
    assert_eq!(
        times,
        [
            t0(),
            t0() + second,
            t0() + second,
            t0() + second,
            t0() + second * 2
        ]
    );
    assert!(journal.verify().unwrap().is_ok());
    // What record_time prevents: the clock's own time is refused after a later record.
    let (_dir2, other) = open_temp();
    other.append(sample_entry("acme", UID_A, 1)).unwrap();
    other.append(sample_entry("acme", UID_A, 2)).unwrap();
    raw.time = t0() - Duration::hours(1);
    assert!(matches!(
        other.append(raw),
        Err(JournalError::Invalid { .. })
    ));
}

#[test]
fn a_chains_tail_is_read_from_memory_once_seen_and_never_moves_back() {
    let (_dir, journal) = open_temp();
    assert_eq!(journal.cached_last(UID_A), None, "not read yet");
    assert_eq!(journal.last(UID_A).unwrap(), None);
    assert_eq!(journal.cached_last(UID_A), Some(None), "no record, known");
    let first = journal.append(sample_entry("acme", UID_A, 1)).unwrap();
    let second = journal.append(sample_entry("acme", UID_A, 2)).unwrap();
    assert_eq!(journal.cached_last(UID_A), Some(Some(second.clone())));
    // A stale read offered late does not move the tail back.
    journal.tails.offer(UID_A, Some(&first));
    assert_eq!(journal.last(UID_A).unwrap(), Some(second.clone()));
    assert_eq!(journal.acknowledged(), [(UID_A.to_owned(), 2, second.hash)]);
    assert_eq!(
        journal.lost_acknowledged(&journal.acknowledged()).unwrap(),
        None
    );
}

#[test]
fn an_awaited_append_is_the_same_append() {
    let (_dir, journal) = open_temp();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let first = runtime
        .block_on(journal.append_async(sample_entry("acme", UID_A, 1)))
        .unwrap();
    assert_eq!(journal.cached_last(UID_A), Some(Some(first.clone())));
    let retried = runtime
        .block_on(journal.append_async(sample_entry("acme", UID_A, 1)))
        .unwrap();
    assert_eq!(retried, first);
    let skipped = runtime.block_on(journal.append_async(sample_entry("acme", UID_A, 3)));
    assert!(matches!(skipped, Err(JournalError::Conflict { .. })));
    assert_eq!(history(&journal, UID_A), vec![first]);
}

#[test]
fn an_append_whose_caller_stopped_waiting_still_moves_the_tail() {
    use std::future::Future;
    let (_dir, journal) = open_temp();
    let mut append = Box::pin(journal.append_async(sample_entry("acme", UID_A, 1)));
    // The first poll queues the append; then the caller goes away.
    let mut waiting = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = append.as_mut().poll(&mut waiting);
    drop(append);
    // The writer answers appends in order: once another chain's append is answered, the
    // abandoned one was written, and its chain's tail (which every pass reads) moved.
    journal.append(sample_entry("beta", UID_B, 1)).unwrap();
    let written = history(&journal, UID_A);
    assert_eq!(written.len(), 1);
    assert_eq!(journal.cached_last(UID_A), Some(written.into_iter().next()));
}
