//! The journal's disk fills up under a running operator: it holds every phase change
//! (nothing un-journaled reaches a status or an Event), says so on /readyz and in a Warning
//! Event, and resumes on its own when space returns. The disk is a real 4 MiB tmpfs.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use neurallog_operator::crd::Tenant;
use neurallog_operator::journal::Journal;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const LONG: Duration = Duration::from_secs(120);

/// A small tmpfs, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(run: &str) -> SmallDisk {
        let dir = repo_root().join(format!("target/e2e-disks/{run}"));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "this test mounts a 4 MiB tmpfs to fill a real disk: it needs root (CAP_SYS_ADMIN)"
        );
        SmallDisk { dir }
    }

    /// Writes a filler file until the disk refuses more.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.filler()).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.sync_all();
    }

    fn make_room(&self) {
        std::fs::remove_file(self.filler()).expect("filler removed");
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The tenant's transition Events as (name, reason), sorted by name.
async fn transition_events(client: &kube::Client, uid: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut found: Vec<(String, String)> = events
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| is_transition_event_name(&e.name_any()))
        .map(|e| (e.name_any(), e.reason.unwrap_or_default()))
        .collect();
    found.sort();
    found
}

async fn warned(client: &kube::Client, uids: &[String], reason: &str) -> bool {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let Ok(list) = events.list(&ListParams::default()).await else {
        return false;
    };
    list.items.iter().any(|e| {
        e.reason.as_deref() == Some(reason)
            && e.type_.as_deref() == Some("Warning")
            && uids.contains(&e.involved_object.uid.clone().unwrap_or_default())
    })
}

/// What Kubernetes showed of one tenant while its journal could not be written.
struct Shown {
    name: String,
    uid: String,
    phase: Option<String>,
    sequence: Option<u64>,
    events: Vec<(String, String)>,
}

async fn shown(client: &kube::Client, name: &str) -> Shown {
    let tenant = Api::<Tenant>::all(client.clone())
        .get(name)
        .await
        .expect("tenant");
    let uid = tenant.uid().expect("uid");
    let status = tenant.status.unwrap_or_default();
    Shown {
        name: name.to_string(),
        events: transition_events(client, &uid).await,
        uid,
        phase: status.phase,
        sequence: status.journal.map(|j| j.sequence),
    }
}

async fn journal_unwritable(operator: &Operator) -> bool {
    operator
        .readiness()
        .await
        .is_some_and(|(code, body)| code == 503 && body.contains("journal unwritable"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_phase_changes_and_they_resume_when_space_returns() {
    let client = client().await;
    install_crd(&client).await;
    let run = unique("diskfull");
    let disk = SmallDisk::mount(&run);
    let auth = auth_stub().await;
    let mut operator = Operator::start_with_journal(&run, &auth.url(), disk.dir.join("journal"));
    operator.wait_ready().await;

    // sled may still fit a few records into the last page it owns: add tenants until a
    // write needs a page the disk no longer has.
    disk.fill();
    let mut names = Vec::new();
    for i in 0..10 {
        let name = format!("{run}-{i}");
        apply_tenant(&client, &tenant_from_yaml(BASIC, &name, &run)).await;
        names.push(name.clone());
        let full = wait_for("the tenant to be Running or held", LONG, || {
            let (client, name) = (client.clone(), name.clone());
            let operator = &operator;
            async move {
                if journal_unwritable(operator).await {
                    return Some(true);
                }
                let t = Api::<Tenant>::all(client).get(&name).await.ok()?;
                (t.status?.phase.as_deref() == Some("Running")).then_some(false)
            }
        })
        .await;
        if full {
            break;
        }
    }
    assert!(
        journal_unwritable(&operator).await,
        "the journal never hit the full disk"
    );
    let mut held = Vec::new();
    for name in &names {
        held.push(shown(&client, name).await);
    }
    let uids: Vec<String> = held.iter().map(|s| s.uid.clone()).collect();
    wait_for("a JournalUnwritable Warning Event", LONG, || {
        let (client, uids) = (client.clone(), uids.clone());
        async move {
            warned(&client, &uids, "JournalUnwritable")
                .await
                .then_some(())
        }
    })
    .await;
    assert!(operator.is_alive(), "the operator exited on a full disk");

    disk.make_room();
    for name in &names {
        wait_for_phase(&client, name, "Running", LONG).await;
    }
    operator.wait_ready().await;
    for name in &names {
        kubectl(&["delete", "tenant", name, "--timeout=120s"]);
    }
    operator.kill();

    let journal = Journal::open(&operator.journal).expect("the journal opens");
    let report = journal.verify().expect("verify runs");
    assert!(report.is_ok(), "journal damaged: {report:?}");
    let mut transitions = 0;
    for tenant in &held {
        let records: Vec<_> = journal
            .history(&tenant.uid)
            .collect::<Result<_, _>>()
            .expect("history");
        let phase_at = |seq: u64| {
            records
                .iter()
                .find(|r| r.seq == seq)
                .map(|r| r.to.as_str().to_string())
        };
        // Everything shown while the disk was full had been journaled.
        if let (Some(phase), Some(seq)) = (&tenant.phase, tenant.sequence) {
            assert_eq!(
                phase_at(seq).as_ref(),
                Some(phase),
                "{}: status",
                tenant.name
            );
        }
        for (event, reason) in &tenant.events {
            let seq: u64 = event
                .rsplit(".t")
                .next()
                .and_then(|s| s.parse().ok())
                .expect("transition Event name");
            assert_eq!(
                phase_at(seq).as_ref(),
                Some(reason),
                "{}: {event}",
                tenant.name
            );
        }
        // And in the end, one Event per journaled transition.
        let expected: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                let name = format!("{}.{}.t{:06}", tenant.name, &tenant.uid[..8], r.seq);
                (name, r.to.as_str().to_string())
            })
            .collect();
        assert_eq!(
            transition_events(&client, &tenant.uid).await,
            expected,
            "{}: one Event per journaled transition",
            tenant.name
        );
        transitions += records.len();
    }
    println!(
        "disk full: {} tenants, {} held at the full disk, {transitions} transitions journaled \
         and mirrored one to one after space returned; verify passed",
        held.len(),
        held.iter()
            .filter(|t| t.phase.as_deref() != Some("Running"))
            .count(),
    );
    drop(journal);
    drop(disk);
}
