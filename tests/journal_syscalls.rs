//! The syscalls that make an append durable, read off the kernel with strace.
//!
//! A child process (this test binary, re-run as the ignored test `appender`) appends
//! records and writes one acknowledgement line to stdout after each append returns, as
//! the operator writes an Event or a status only after its append returns. strace records
//! every write and sync of the file the engine makes appends durable in (the journal's
//! write-ahead log `wal`, sled's log `db`) and those acknowledgements; the test requires,
//! for each acknowledgement, a write to that file since the previous one and an
//! `fdatasync` or `fsync` of it after its last write. The same check run on plain sled
//! (`flush()` only) must fail: that is the bug the journal works around, and it shows the
//! check can fail.
//!
//! Needs `strace` (`make test` installs it); skipped with one line without it unless
//! `NEURALLOG_REQUIRE_STRACE=1`.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use neurallog_machines::{Input, Phase, Trigger, step};
use neurallog_operator::journal::{Journal, NewRecord, Options, spec_digest};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const APPENDS: u64 = 24;
const ACK: &str = "journal-ack";
const CHILD_DIR: &str = "NEURALLOG_SYSCALLS_DIR";
const CHILD_ENGINE: &str = "NEURALLOG_SYSCALLS_ENGINE";

#[test]
fn each_append_is_fdatasynced_before_it_is_acknowledged() {
    let Some(trace) = trace_child("journal") else {
        return;
    };
    let appends = check(&trace).unwrap_or_else(|problem| panic!("{problem}\n\n{}", trace.text));
    assert_eq!(appends, APPENDS, "every append acknowledged and checked");
}

#[test]
fn plain_sled_flush_is_not_durable_and_the_check_says_so() {
    let Some(trace) = trace_child("sled") else {
        return;
    };
    let problem = check(&trace).expect_err("sled's flush alone must fail the check");
    assert!(
        problem.contains("no fdatasync or fsync"),
        "{problem}\n\n{}",
        trace.text
    );
    assert!(
        trace.text.contains("sync_file_range("),
        "sled flushes with sync_file_range: {}",
        trace.text
    );
}

/// The child: appends with the engine named in the environment, acknowledging each.
#[test]
#[ignore = "run by the tests above under strace"]
fn appender() {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("the journal's directory"));
    let engine = std::env::var(CHILD_ENGINE).expect("the engine");
    let mut out = std::io::stdout().lock();
    let mut acknowledge = |seq: u64| {
        writeln!(out, "{ACK} {seq}").expect("acknowledge");
        out.flush().expect("acknowledge");
    };
    match engine.as_str() {
        "journal" => {
            // A log of four pages: its halves fill every two appends, so the checkpoint
            // thread erases halves while appends go on.
            let options = Options {
                log_bytes: 4 * 4096,
                ..Options::default()
            };
            let journal = Journal::open_with(&dir, options).expect("open the journal");
            for seq in 1..=APPENDS {
                journal.append(entry(seq)).expect("append");
                acknowledge(seq);
            }
        }
        "sled" => {
            let db = sled::open(&dir).expect("open sled");
            for seq in 1..=APPENDS {
                db.insert(seq.to_be_bytes(), vec![7u8; 300])
                    .expect("insert");
                db.flush().expect("flush");
                acknowledge(seq);
            }
        }
        other => panic!("unknown engine {other}"),
    }
}

fn entry(seq: u64) -> NewRecord {
    let input = Input::new(Trigger::Observed, 1);
    let transition = step(Phase::New, &input).expect("a transition");
    let start = DateTime::<Utc>::from_timestamp(1_764_460_800, 0).unwrap_or_default();
    // Two chains, so appends alternate between them as concurrent tenants' do.
    let chain = seq % 2;
    NewRecord::from_transition(
        format!("tenant-{chain}"),
        format!("uid-{chain}"),
        seq.div_ceil(2),
        start + Duration::seconds(seq as i64),
        1,
        input,
        transition,
        spec_digest(&serde_json::json!({"seq": seq})),
    )
}

struct Trace {
    text: String,
    log_file: String,
}

/// Runs the child under strace; `None` (after saying why) if strace is missing.
fn trace_child(engine: &str) -> Option<Trace> {
    if Command::new("strace").arg("-V").output().is_err() {
        let required = std::env::var("NEURALLOG_REQUIRE_STRACE").as_deref() == Ok("1");
        assert!(!required, "strace is required (NEURALLOG_REQUIRE_STRACE=1)");
        eprintln!("skipped: strace is not installed (make test installs it)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("journal");
    let trace_file = dir.path().join("strace.out");
    let status = Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "48", "-o"])
        .arg(&trace_file)
        .args([
            "-e",
            "trace=write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range,sync,syncfs",
        ])
        .arg(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "appender", "--ignored", "--nocapture", "-q"])
        .env(CHILD_DIR, &journal)
        .env(CHILD_ENGINE, engine)
        .stdout(Stdio::null())
        .status()
        .expect("strace runs");
    assert!(status.success(), "the traced appender failed: {status}");
    let text = std::fs::read_to_string(&trace_file).expect("the trace");
    let durable_file = match engine {
        "journal" => "wal",
        _ => "db",
    };
    Some(Trace {
        text,
        log_file: log_file_path(&journal, durable_file),
    })
}

/// How strace names `file` of the journal (`-y` prints the canonical path).
fn log_file_path(journal: &Path, file: &str) -> String {
    let canonical = journal.canonicalize().expect("the journal exists");
    format!("{}>", canonical.join(file).display())
}

#[derive(Debug, PartialEq)]
enum Event {
    LogWrite,
    LogSync,
    Ack(u64),
}

/// Checks that every acknowledgement follows a sync of the log file that follows the last
/// write to it; returns how many appends were acknowledged.
fn check(trace: &Trace) -> Result<u64, String> {
    let events = events(&trace.text, &trace.log_file);
    let mut written_since_sync = false;
    let mut writes_since_ack = 0;
    let mut acks = 0;
    for event in events {
        match event {
            Event::LogWrite => {
                written_since_sync = true;
                writes_since_ack += 1;
            }
            Event::LogSync => written_since_sync = false,
            Event::Ack(seq) => {
                if writes_since_ack == 0 {
                    return Err(format!(
                        "append {seq} was acknowledged without writing the log file"
                    ));
                }
                if written_since_sync {
                    return Err(format!(
                        "append {seq} was acknowledged with no fdatasync or fsync of {} after its last write",
                        trace.log_file
                    ));
                }
                writes_since_ack = 0;
                acks += 1;
            }
        }
    }
    Ok(acks)
}

/// The trace's events in the order their syscalls completed (strace splits a syscall
/// interrupted by another thread's into `<unfinished ...>` and `<... resumed>` lines).
fn events(text: &str, log_file: &str) -> Vec<Event> {
    let mut unfinished: HashMap<&str, &str> = HashMap::new();
    let mut events = Vec::new();
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let complete = if call.starts_with("<...") {
            match (unfinished.remove(pid), call.split_once("resumed>")) {
                (Some(start), Some((_, rest))) => format!("{start}{rest}"),
                _ => continue,
            }
        } else if let Some(start) = call.strip_suffix(" <unfinished ...>") {
            unfinished.insert(pid, start);
            continue;
        } else {
            call.to_owned()
        };
        if let Some(event) = event(&complete, log_file) {
            events.push(event);
        }
    }
    events
}

fn event(call: &str, log_file: &str) -> Option<Event> {
    let name = call.split('(').next()?;
    let succeeded = !call.contains("= -1");
    let on_log = call.split_once('(').is_some_and(|(_, args)| {
        args.split([',', ')'])
            .next()
            .is_some_and(|fd| fd.ends_with(log_file))
    });
    match name {
        "fsync" | "fdatasync" if on_log && succeeded => Some(Event::LogSync),
        "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2"
            if on_log && carries_records(call, log_file) =>
        {
            Some(Event::LogWrite)
        }
        "write" if call.contains(ACK) => {
            let seq = call.split(ACK).nth(1)?.trim_start().split('\\').next()?;
            seq.parse().ok().map(Event::Ack)
        }
        _ => None,
    }
}

/// Whether a write to the log file can carry records: every write to sled's log; to the
/// write-ahead log, a frame (its magic first). The checkpoint thread's erasing of a half
/// (zeros over its first page, synced by that thread) carries none.
fn carries_records(call: &str, log_file: &str) -> bool {
    !log_file.ends_with("/wal>") || call.contains("\"NLW1")
}

#[test]
fn the_parser_joins_unfinished_calls_and_reads_acknowledgements() {
    let log = "/j/db>";
    let text = "\
7 pwrite64(5</j/db>, \"x\", 1, 0) = 1
7 fdatasync(5</j/db> <unfinished ...>
8 write(1<pipe:[9]>, \"noise\\n\", 6) = 6
7 <... fdatasync resumed>) = 0
8 write(1<pipe:[9]>, \"journal-ack 3\\n\", 14) = 14
7 pwrite64(5</j/db>, \"x\", 1, 1) = 1
8 write(1<pipe:[9]>, \"journal-ack 4\\n\", 14) = 14
";
    assert_eq!(
        events(text, log),
        [
            Event::LogWrite,
            Event::LogSync,
            Event::Ack(3),
            Event::LogWrite,
            Event::Ack(4)
        ]
    );
    let trace = Trace {
        text: text.into(),
        log_file: log.into(),
    };
    let problem = check(&trace).expect_err("append 4 was not synced");
    assert!(problem.starts_with("append 4 "), "{problem}");
}

#[test]
fn erasing_a_half_of_the_write_ahead_log_is_no_write_of_records() {
    let log = "/j/wal>";
    let text = "\
7 pwrite64(5</j/wal>, \"NLW1\\20\\0\\0\\0\"..., 4096, 0) = 4096
7 fdatasync(5</j/wal>) = 0
9 pwrite64(5</j/wal>, \"\\0\\0\\0\\0\"..., 4096, 8192) = 4096
8 write(1<pipe:[9]>, \"journal-ack 3\\n\", 14) = 14
";
    assert_eq!(
        events(text, log),
        [Event::LogWrite, Event::LogSync, Event::Ack(3)]
    );
}
