use super::*;
use crate::journal::api::{SharedJournal, router};
use crate::journal::slot::JournalSlot;
use crate::journal::testing::{TO_RUNNING, lifecycle, next_after, open_temp, t0};
use std::time::Instant;

const UID_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const UID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

/// A leader's journal (chains A, 4 records, and B, 2), served by its journal API.
struct Leader {
    _dir: tempfile::TempDir,
    journal: Arc<JournalSlot>,
    url: String,
}

impl Leader {
    async fn start(mark: Option<RecoveryMark>) -> Leader {
        let (dir, journal) = open_temp();
        let mut entries = lifecycle("acme", UID_A, t0(), &TO_RUNNING);
        entries.extend(lifecycle("beta", UID_B, t0(), &TO_RUNNING[..2]));
        for entry in entries {
            journal.append(entry).unwrap();
        }
        if let Some(mark) = &mark {
            journal.mark_recovery(mark).unwrap();
        }
        let journal = Arc::new(JournalSlot::new(journal));
        let shared = SharedJournal::default();
        let _ = shared.set(journal.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(shared)).await });
        Leader {
            _dir: dir,
            journal,
            url,
        }
    }

    /// Appends the next record of chain `uid`.
    fn append_next(&self, uid: &str) {
        self.journal
            .with(|j| {
                let last = j.last(uid)?.expect("a chain");
                j.append(next_after(&last))
            })
            .unwrap();
    }

    fn chain(&self, uid: &str) -> Vec<Record> {
        self.journal
            .with(|j| j.history(uid).collect::<Result<Vec<_>, _>>())
            .unwrap()
    }
}

fn chain(journal: &Journal, uid: &str) -> Vec<Record> {
    journal.history(uid).collect::<Result<_, _>>().unwrap()
}

/// Follows `leader` into `journal` every 10 ms.
fn follow(journal: &Arc<Journal>, leader: &Leader) -> (Follower, FollowMetrics) {
    let metrics = FollowMetrics::default();
    let (_, url) = watch::channel(Some(leader.url.clone()));
    let follower = Follower::start(
        journal.clone(),
        url,
        Duration::from_millis(10),
        metrics.clone(),
    );
    (follower, metrics)
}

/// Waits (at most 20 s) until `done`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_copies_the_leaders_chains_and_recovery_mark_and_keeps_up() {
    let mark = RecoveryMark {
        moved_to: "/j.damaged".into(),
        reason: "lost tail".into(),
        at: t0(),
        chain: Some("r20250102030405".into()),
        earlier_chains: vec![None],
    };
    let leader = Leader::start(Some(mark.clone())).await;
    let (_dir, journal) = open_temp();
    let journal = Arc::new(journal);
    let (follower, metrics) = follow(&journal, &leader);

    wait_until("both chains copied", || metrics.records.get() == 6).await;
    assert_eq!(chain(&journal, UID_A), leader.chain(UID_A));
    assert_eq!(chain(&journal, UID_B), leader.chain(UID_B));
    assert_eq!(journal.recovery().unwrap(), Some(mark));
    assert!(journal.verify().unwrap().is_ok());

    leader.append_next(UID_B);
    wait_until("the new record copied", || metrics.records.get() == 7).await;
    assert_eq!(chain(&journal, UID_B), leader.chain(UID_B));
    assert_eq!(metrics.refused.get(), 0);

    follower.stop().await;
    assert_eq!(
        Arc::strong_count(&journal),
        1,
        "a stopped follower holds the journal no longer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_forked_is_no_longer_followed_and_nothing_of_it_is_imported() {
    let leader = Leader::start(None).await;
    leader.append_next(UID_A);
    // This replica's chain A is another history: same uid, other times.
    let (_dir, journal) = open_temp();
    for entry in lifecycle(
        "acme",
        UID_A,
        t0() + chrono::Duration::hours(1),
        &TO_RUNNING,
    ) {
        journal.append(entry).unwrap();
    }
    let ours = chain(&journal, UID_A);
    let journal = Arc::new(journal);
    let (follower, metrics) = follow(&journal, &leader);

    wait_until("the fork refused", || metrics.refused.get() == 1).await;
    wait_until("chain B copied", || metrics.records.get() == 2).await;
    // A poll after the refusal: it still imports nothing of chain A.
    leader.append_next(UID_A);
    leader.append_next(UID_B);
    wait_until("chain B's new record copied", || metrics.records.get() == 3).await;
    assert_eq!(chain(&journal, UID_A), ours);
    assert_eq!(chain(&journal, UID_B), leader.chain(UID_B));
    assert_eq!(metrics.refused.get(), 1, "refused once, not at every poll");
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_journal_of_another_lineage_is_not_followed() {
    let mark = RecoveryMark {
        moved_to: "/j.damaged".into(),
        reason: "lost tail".into(),
        at: t0(),
        chain: None,
        earlier_chains: Vec::new(),
    };
    let leader = Leader::start(Some(mark)).await;
    // This replica holds records of the original chain the leader's journal replaced.
    let (_dir, journal) = open_temp();
    journal
        .append(lifecycle("acme", UID_A, t0(), &TO_RUNNING[..1])[0].clone())
        .unwrap();
    let journal = Arc::new(journal);
    let (follower, metrics) = follow(&journal, &leader);

    wait_until("the leader's journal refused", || {
        metrics.refused.get() == 1
    })
    .await;
    follower.stop().await;
    assert_eq!(metrics.records.get(), 0);
    assert_eq!(journal.tenant(UID_B).unwrap(), None);
    assert_eq!(journal.recovery().unwrap(), None);
}
