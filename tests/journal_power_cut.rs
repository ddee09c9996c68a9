//! The journal keeps its promise across power loss: a record [`Journal::append`]
//! acknowledged (and so possibly mirrored to a Kubernetes Event or status) is there after
//! the power is cut, with the same hash, and the journal verifies.
//!
//! The journal lives on a [`LazyFs`] mount, which keeps every write that was not fsynced in
//! memory and drops it at [`LazyFs::cut_power`]. A child process (this test binary, running
//! the ignored test `power_cut_child`) appends to a few chains and prints one line per
//! acknowledged append; the parent cuts the power at a random moment, kills the child,
//! "reboots" (unmounts, mounts a fresh LazyFs over the same backing directory) and checks
//! every acknowledged record, round after round on the same growing journal.
//!
//! `NEURALLOG_POWER_CUT_SEED` replays a run; `NEURALLOG_POWER_CUT_ROUNDS` changes how many
//! power cuts there are. Without FUSE the tests say so and pass, unless
//! `NEURALLOG_REQUIRE_FUSE=1`.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use neurallog_lazyfs::{LazyFs, mount_or_skip};
use neurallog_machines::{Input, Phase, Trigger, step};
use neurallog_operator::journal::{Journal, NewRecord, Options, spec_digest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Where the child's journal is; the child does nothing without it.
const CHILD_JOURNAL_ENV: &str = "NEURALLOG_POWER_CUT_JOURNAL";
/// What starts each acknowledgement line the child prints.
const ACK: &str = "POWER-CUT-ACK";
/// What starts the line of a child whose append failed (as all do after the power cut).
const FAILED: &str = "POWER-CUT-APPEND-FAILED";
/// The chains the child appends to: (tenant, uid).
const CHAINS: [(&str, &str); 3] = [
    ("alpha", "uid-alpha"),
    ("bravo", "uid-bravo"),
    ("charlie", "uid-charlie"),
];
/// Power cuts per run, each during an append.
const DEFAULT_ROUNDS: u32 = 100;
/// The child stops by itself after this many appends, should its parent be gone.
const CHILD_MAX_APPENDS: u64 = 100_000;
/// How long the parent waits for one acknowledgement, or for the killed child's output.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Acknowledged appends: (uid, seq) to the hash the child was told.
type Acked = BTreeMap<(String, u64), String>;
/// One acknowledgement: (uid, seq) and hash.
type Ack = ((String, u64), String);

#[test]
fn acknowledged_appends_survive_power_cuts() {
    let dirs = Dirs::new();
    let seed = seed();
    let rounds = std::env::var("NEURALLOG_POWER_CUT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    println!(
        "power cut: seed {seed} (NEURALLOG_POWER_CUT_SEED={seed} replays it), {rounds} rounds"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut acked = Acked::new();
    let mut unacked_kept = 0u64;

    for round in 1..=rounds {
        let Some(fs) = mount_or_skip(
            "acknowledged_appends_survive_power_cuts",
            &dirs.backing,
            &dirs.mnt,
        ) else {
            return;
        };
        let journal = dirs.mnt.join("journal");
        if round > 1 {
            let stored = check(&journal, &acked).unwrap_or_else(|problems| {
                panic!(
                    "after power cut {} (seed {seed}): {} acknowledged records: {problems}",
                    round - 1,
                    acked.len()
                )
            });
            unacked_kept += stored;
        }
        let wait_for = rng.random_range(1..=6);
        let jitter = Duration::from_micros(rng.random_range(0..3_000));
        let outcome = run_and_cut(&fs, &journal, wait_for, jitter);
        fs.unmount().expect("unmounting after the power cut");
        let acks = outcome.unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        for (key, hash) in acks {
            if let Some(old) = acked.insert(key.clone(), hash.clone())
                && old != hash
            {
                panic!(
                    "round {round} (seed {seed}): {} seq {} was acknowledged twice, as {old} and as {hash}",
                    key.0, key.1
                );
            }
        }
    }

    let Some(fs) = mount_or_skip(
        "acknowledged_appends_survive_power_cuts",
        &dirs.backing,
        &dirs.mnt,
    ) else {
        return;
    };
    check(&dirs.mnt.join("journal"), &acked)
        .unwrap_or_else(|problems| panic!("after the last power cut (seed {seed}): {problems}"));
    wait_until_this_process_closed_files_under(&dirs.mnt);
    fs.unmount().expect("unmounting");
    println!(
        "power cut: {rounds} power cuts during appends, {} acknowledged records all kept \
         ({unacked_kept} appends found stored without an acknowledgement), {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked.len() as u64 >= u64::from(rounds),
        "every round waits for at least one acknowledgement"
    );
}

/// Runs a child appending to `journal` until it has acknowledged `wait_for` appends, then
/// `jitter` later cuts the power and kills it. Returns every acknowledgement it printed.
fn run_and_cut(
    fs: &LazyFs,
    journal: &Path,
    wait_for: u32,
    jitter: Duration,
) -> Result<Vec<Ack>, String> {
    let mut child = ChildGuard(Some(spawn_child("power_cut_child", journal)?));
    let lines = child.lines()?;
    let mut acks = Vec::new();
    while acks.len() < wait_for as usize {
        match lines.recv_timeout(ACK_TIMEOUT) {
            Ok(line) if line.contains(FAILED) => {
                return Err(format!("before the power cut, {line}"));
            }
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no acknowledgement within {ACK_TIMEOUT:?}"));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "the child stopped after {} acknowledgements: {}",
                    acks.len(),
                    child.finish()
                ));
            }
        }
    }
    std::thread::sleep(jitter);
    fs.cut_power();
    child.finish();
    // What the child printed before it died counts too.
    loop {
        match lines.recv_timeout(ACK_TIMEOUT) {
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(RecvTimeoutError::Disconnected) => return Ok(acks),
            Err(RecvTimeoutError::Timeout) => {
                return Err("the killed child's output did not end".into());
            }
        }
    }
}

/// Runs the ignored test `test` of this binary in a child process, on `journal`.
fn spawn_child(test: &str, journal: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the test binary: {e}"))?;
    Command::new(exe)
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_JOURNAL_ENV, journal)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the child: {e}"))
}

/// Kills and reaps the child however the parent leaves (a failed assertion included),
/// before the mount it uses goes.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// The child's stdout, line by line, from a thread: ends when the child is gone.
    fn lines(&mut self) -> Result<Receiver<String>, String> {
        let stdout = self
            .0
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or("the child has no stdout")?;
        let (send, receive) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(receive)
    }

    /// Kills the child (SIGKILL) if it still runs; says how it ended.
    fn finish(&mut self) -> String {
        let Some(mut child) = self.0.take() else {
            return "already reaped".into();
        };
        let _ = child.kill();
        match child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("waiting for it failed: {e}"),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

fn parse_ack(line: &str) -> Option<Ack> {
    // libtest may put "test power_cut_child ... " before the first line.
    let at = line.find(ACK)?;
    let mut fields = line[at + ACK.len()..].split_whitespace();
    let uid = fields.next()?.to_owned();
    let seq = fields.next()?.parse().ok()?;
    let hash = fields.next()?.to_owned();
    Some(((uid, seq), hash))
}

/// The journal with the smallest write-ahead log (two pages: two appends), so that the
/// appends between two cuts fill it again and again and cuts also land during and around
/// checkpoints.
fn open_journal(path: &Path) -> Result<Journal, neurallog_operator::journal::JournalError> {
    let options = Options {
        log_bytes: 2 * 4096,
        ..Default::default()
    };
    Journal::open_with(path, options)
}

/// Opens the journal at `path` (after a reboot) and checks that every acknowledged record
/// is there with its hash and that the journal verifies. Returns how many records it holds
/// beyond the acknowledged ones (appended, not yet acknowledged at the cut).
fn check(path: &Path, acked: &Acked) -> Result<u64, String> {
    let journal = open_journal(path).map_err(|e| format!("the journal does not open: {e}"))?;
    let mut problems = Vec::new();
    for ((uid, seq), hash) in acked {
        match journal.record(uid, *seq) {
            Ok(Some(record)) if record.hash.to_hex() == *hash => {}
            Ok(Some(record)) => problems.push(format!(
                "{uid} seq {seq} has hash {}, acknowledged as {hash}",
                record.hash.to_hex()
            )),
            Ok(None) => problems.push(format!("{uid} seq {seq} (hash {hash}) is lost")),
            Err(e) => problems.push(format!("{uid} seq {seq} does not read: {e}")),
        }
    }
    match journal.verify() {
        Ok(report) if report.is_ok() => {}
        Ok(report) => problems.push(format!("verify: {report:?}")),
        Err(e) => problems.push(format!("verify failed: {e}")),
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let mut stored = 0u64;
    for (_, uid) in CHAINS {
        let last = journal
            .tenant(uid)
            .map_err(|e| format!("reading {uid}'s summary: {e}"))?
            .map_or(0, |s| s.last_seq);
        let acked_last = acked
            .range((uid.to_owned(), 0)..=(uid.to_owned(), u64::MAX))
            .next_back()
            .map_or(0, |((_, seq), _)| *seq);
        stored += last.saturating_sub(acked_last);
    }
    Ok(stored)
}

/// The child: appends to [`CHAINS`] in turn, continuing whatever the journal holds, and
/// prints an acknowledgement line per append (flushed) until killed.
#[test]
#[ignore = "the child process of acknowledged_appends_survive_power_cuts"]
fn power_cut_child() {
    let Some(path) = std::env::var_os(CHILD_JOURNAL_ENV) else {
        println!("power_cut_child: run by acknowledged_appends_survive_power_cuts only");
        return;
    };
    let journal = open_journal(Path::new(&path)).expect("opening the journal");
    let mut heads: Vec<(u64, Phase)> = CHAINS
        .iter()
        .map(|(_, uid)| {
            journal
                .tenant(uid)
                .expect("reading a chain's summary")
                .map_or((0, Phase::New), |s| (s.last_seq, s.last_phase))
        })
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for n in 0..CHILD_MAX_APPENDS {
        let i = n as usize % CHAINS.len();
        let (tenant, uid) = CHAINS[i];
        let (last_seq, phase) = heads[i];
        let entry = next_record(tenant, uid, last_seq + 1, phase);
        let record = match journal.append(entry) {
            Ok(record) => record,
            Err(e) => {
                // After the power cut every append fails: say why and stop, quietly.
                let _ = writeln!(out, "{FAILED} {e}").and_then(|()| out.flush());
                return;
            }
        };
        writeln!(
            out,
            "{ACK} {} {} {}",
            record.uid,
            record.seq,
            record.hash.to_hex()
        )
        .and_then(|()| out.flush())
        .expect("writing an acknowledgement");
        heads[i] = (record.seq, record.to);
    }
}

/// Triggers the child feeds the machine, first one that moves it from the current phase.
const TRIGGERS: [Trigger; 8] = [
    Trigger::Observed,
    Trigger::NamespaceReady,
    Trigger::RedisReady,
    Trigger::AllReady,
    Trigger::SpecChanged,
    Trigger::ComponentLost,
    Trigger::ProgressStalled,
    Trigger::ProgressResumed,
];

/// A plausible next transition of a chain at `phase`; the same for the same chain state.
fn next_record(tenant: &str, uid: &str, seq: u64, phase: Phase) -> NewRecord {
    let generation = 1 + (seq as i64 - 1) / 4;
    let (input, transition) = (0..TRIGGERS.len())
        .map(|k| Input::new(TRIGGERS[(seq as usize + k) % TRIGGERS.len()], generation))
        .find_map(|input| step(phase, &input).map(|t| (input, t)))
        .unwrap_or_else(|| panic!("no trigger moves a tenant out of {phase:?}"));
    NewRecord::from_transition(
        tenant,
        uid,
        seq,
        t0() + ChronoDuration::seconds(seq as i64),
        generation,
        input,
        transition,
        spec_digest(&serde_json::json!({"tenant": tenant, "generation": generation})),
    )
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
}

fn seed() -> u64 {
    std::env::var("NEURALLOG_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// A backing directory and a mountpoint, removed at the end.
struct Dirs {
    _root: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().expect("a temporary directory");
        let backing = root.path().join("backing");
        let mnt = root.path().join("mnt");
        std::fs::create_dir(&backing).expect("creating the backing directory");
        std::fs::create_dir(&mnt).expect("creating the mountpoint");
        Dirs {
            _root: root,
            backing,
            mnt,
        }
    }
}

/// The negative control: LazyFs really loses what was not fsynced. A sled write that
/// `flush` acknowledged (sled's flush is `sync_file_range`, not an fsync) is gone after the
/// power cut, while one whose file was fsynced survives, so the test above can fail.
#[test]
fn lazyfs_loses_what_sled_flushed_without_fsync() {
    let dirs = Dirs::new();
    let Some(fs) = mount_or_skip(
        "lazyfs_loses_what_sled_flushed_without_fsync",
        &dirs.backing,
        &dirs.mnt,
    ) else {
        return;
    };
    let path = dirs.mnt.join("db");
    let mut child = ChildGuard(Some(
        spawn_child("sled_flush_child", &path).expect("starting the child"),
    ));
    let lines = child.lines().expect("the child's output");
    loop {
        let line = lines
            .recv_timeout(ACK_TIMEOUT)
            .unwrap_or_else(|e| panic!("the child did not acknowledge its flush: {e}"));
        if line.contains(ACK) {
            break;
        }
    }
    fs.cut_power();
    child.finish();
    fs.unmount().expect("unmounting");

    let Some(fs) = mount_or_skip(
        "lazyfs_loses_what_sled_flushed_without_fsync",
        &dirs.backing,
        &dirs.mnt,
    ) else {
        return;
    };
    let db = sled_config(&path)
        .open()
        .expect("reopening sled after the power cut");
    assert_eq!(
        db.get("synced").expect("reading").as_deref(),
        Some(&b"yes"[..]),
        "what was fsynced survives"
    );
    assert_eq!(
        db.get("flushed").expect("reading"),
        None,
        "what sled only flushed is gone"
    );
    drop(db);
    wait_until_this_process_closed_files_under(&dirs.mnt);
    fs.unmount().expect("unmounting");
}

/// sled's background threads close its files a moment after the last handle is dropped;
/// unmounting before then fails with EBUSY. Waits (bounded) until this process holds no
/// file under `mountpoint`.
fn wait_until_this_process_closed_files_under(mountpoint: &Path) {
    let open_under = || -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|fds| {
                fds.filter_map(Result::ok)
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|target| target.starts_with(mountpoint))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_under() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} files under {} still open after 10 s",
            open_under(),
            mountpoint.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// No periodic flusher: its fsync every 500 ms would race the power cut.
fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new().path(path).flush_every_ms(None)
}

/// The child of the negative control: writes one key and fsyncs sled's files, writes
/// another and only flushes, acknowledges, and waits to be killed.
#[test]
#[ignore = "the child process of lazyfs_loses_what_sled_flushed_without_fsync"]
fn sled_flush_child() {
    let Some(path) = std::env::var_os(CHILD_JOURNAL_ENV) else {
        println!("sled_flush_child: run by lazyfs_loses_what_sled_flushed_without_fsync only");
        return;
    };
    let path = PathBuf::from(path);
    let db = sled_config(&path).open().expect("opening sled");
    db.insert("synced", "yes").expect("inserting");
    db.flush().expect("flushing");
    for file in ["db", "conf"] {
        std::fs::File::open(path.join(file))
            .and_then(|f| f.sync_all())
            .expect("fsyncing sled's file");
    }
    db.insert("flushed", "only").expect("inserting");
    db.flush().expect("flushing");
    println!("{ACK} flushed");
    // Blocks until the parent kills this process (it never writes to our stdin).
    let _ = std::io::stdin().read_line(&mut String::new());
}
