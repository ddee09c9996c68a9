//! Journal benchmark: durable append latency and throughput at 1, 4 and 16 concurrent
//! writers next to the disk's own `fdatasync` latency and raw sled, measured in the same run,
//! and the time to read and verify a large journal. Prints figures; asserts nothing about speed.
//!
//! The disk's figure is a small `pwrite` then `fdatasync` over a file written and synced
//! beforehand (no size or block allocation to commit: one device round trip, the least a
//! durable write costs), measured right after the 1-writer run and right before each
//! concurrent one so that both see the same load; each run's ratio is to that measurement. Appending to a growing file (which also
//! commits its new size) is shown once for reference. Beside each concurrent run, a bare
//! group commit (one thread: `pwrite` + `fdatasync` per batch, nothing else) shows the
//! floor under the journal on this disk; the runs are repeated with tokio tasks awaiting
//! `Journal::append_async`, as the operator's reconciles append.
//!
//! ```text
//! cargo bench --bench journal
//! JOURNAL_BENCH_APPENDS=200 JOURNAL_BENCH_RECORDS=20000 cargo bench --bench journal
//! ```
//!
//! | variable | default | meaning |
//! |----------|---------|---------|
//! | `JOURNAL_BENCH_APPENDS` | 2000 | durable appends with 1 writer (and raw sled inserts, disk syncs) to time |
//! | `JOURNAL_BENCH_CONCURRENT_APPENDS` | 20000 | durable appends with 4 and with 16 writers |
//! | `JOURNAL_BENCH_TENANTS` | 16 | chains the timed appends rotate over |
//! | `JOURNAL_BENCH_RECORDS` | 1000000 | records in the journal that is verified |
//! | `JOURNAL_BENCH_CHAIN_LEN` | 100 | records per chain in that journal |
//! | `JOURNAL_BENCH_DIR` | system temp dir | where the databases are created |
//! | `JOURNAL_BENCH_LOG_BYTES` | the journal's default | the write-ahead log's size in the append runs |

// A benchmark may stop at the first failure: the workspace lints' unwrap/expect ban is for
// the product.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use neurallog_machines::{Input, Phase, Transition, Trigger, run};
use neurallog_operator::journal::{Journal, NewRecord, Options, spec_digest};
use std::path::Path;
use std::time::Instant;

/// The operator binary's allocator (`src/main.rs`), so that the journal is measured as it
/// runs there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Config {
    appends: u64,
    concurrent_appends: u64,
    tenants: u64,
    records: u64,
    chain_len: u64,
    dir: tempfile::TempDir,
}

impl Config {
    fn from_env() -> Self {
        let parent = std::env::var_os("JOURNAL_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Config {
            appends: env_u64("JOURNAL_BENCH_APPENDS", 2000),
            concurrent_appends: env_u64("JOURNAL_BENCH_CONCURRENT_APPENDS", 20_000),
            tenants: env_u64("JOURNAL_BENCH_TENANTS", 16).max(1),
            records: env_u64("JOURNAL_BENCH_RECORDS", 1_000_000),
            chain_len: env_u64("JOURNAL_BENCH_CHAIN_LEN", 100).max(1),
            dir: tempfile::tempdir_in(parent).expect("create the benchmark directory"),
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    }
}

/// Realistic records: every chain provisions to `Running`, then alternates between
/// `Updating` and `Running`.
struct Workload {
    provisioning: Vec<(Input, Transition)>,
    updates: Vec<(Input, Transition)>,
    start: DateTime<Utc>,
    digest: String,
}

impl Workload {
    fn new() -> Self {
        let provision = [
            Trigger::Observed,
            Trigger::NamespaceReady,
            Trigger::RedisReady,
            Trigger::AllReady,
        ];
        let update = [Trigger::SpecChanged, Trigger::AllReady];
        Workload {
            provisioning: transitions(Phase::New, &provision),
            updates: transitions(Phase::Running, &update),
            start: DateTime::from_timestamp(1_735_787_045, 0).unwrap_or_default(),
            digest: spec_digest(&serde_json::json!({"redis": {"replicas": 3}, "server": {}})),
        }
    }

    fn entry(&self, chain: u64, seq: u64) -> NewRecord {
        let index = (seq - 1) as usize;
        let (input, transition) = match self.provisioning.get(index) {
            Some(step) => step.clone(),
            None => self.updates[(index - self.provisioning.len()) % self.updates.len()].clone(),
        };
        NewRecord::from_transition(
            format!("tenant-{chain:06}"),
            format!("{chain:08x}-5b1e-4d7a-9c3f-6a2e8b4d0c1f"),
            seq,
            self.start + Duration::milliseconds(seq as i64),
            input.generation,
            input,
            transition,
            self.digest.clone(),
        )
    }
}

fn transitions(start: Phase, triggers: &[Trigger]) -> Vec<(Input, Transition)> {
    let inputs: Vec<Input> = triggers.iter().map(|t| Input::new(*t, 1)).collect();
    inputs.iter().cloned().zip(run(start, &inputs)).collect()
}

/// Latencies in microseconds, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    fn new(mut micros: Vec<f64>) -> Self {
        micros.sort_by(f64::total_cmp);
        Latencies(micros)
    }

    fn quantile(&self, q: f64) -> f64 {
        let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    fn per_second(&self) -> f64 {
        self.0.len() as f64 / (self.0.iter().sum::<f64>() / 1e6)
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<28} {:>9.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
            self.per_second(),
            self.quantile(0.50) / 1e3,
            self.quantile(0.99) / 1e3,
            self.quantile(1.0) / 1e3,
        );
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

/// Raw sled: insert a value of the journal's record size under a record-shaped key, flush.
fn raw_sled_appends(path: &Path, appends: u64, value_len: usize) -> Latencies {
    let db = sled::open(path).expect("open raw sled");
    let tree = db.open_tree("records").expect("open tree");
    let value = vec![0x5a_u8; value_len];
    let micros = (1..=appends)
        .map(|seq| {
            let mut key = b"aaaaaaaa-5b1e-4d7a-9c3f-6a2e8b4d0c1f\0".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            let start = Instant::now();
            tree.insert(key, value.as_slice()).expect("insert");
            db.flush().expect("flush");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    Latencies::new(micros)
}

/// The options of the journals the append runs open.
fn append_options() -> Options {
    Options {
        log_bytes: env_u64("JOURNAL_BENCH_LOG_BYTES", Options::default().log_bytes),
        ..Options::default()
    }
}

/// Runs `per_writer` calls on each of `writers` threads at once: `prepare(writer, i)`
/// untimed, then `call` on what it made, timed. Returns each call's latency and the calls
/// per second of the whole run.
fn timed_on_threads<T>(
    writers: u64,
    per_writer: u64,
    prepare: impl Fn(u64, u64) -> T + Sync,
    call: impl Fn(T) + Sync,
) -> (Latencies, f64) {
    let started = Instant::now();
    let micros: Vec<f64> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|writer| {
                let (prepare, call) = (&prepare, &call);
                scope.spawn(move || {
                    (0..per_writer)
                        .map(|i| {
                            let input = prepare(writer, i);
                            let start = Instant::now();
                            call(input);
                            start.elapsed().as_secs_f64() * 1e6
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("writer thread"))
            .collect()
    });
    let rate = micros.len() as f64 / started.elapsed().as_secs_f64();
    (Latencies::new(micros), rate)
}

/// Journal appends from `writers` threads at once, each on its own chains, as concurrent
/// reconciles append; returns each append's latency and the appends per second of the run.
fn concurrent_appends(
    path: &Path,
    workload: &Workload,
    appends: u64,
    writers: u64,
) -> (Latencies, f64) {
    let journal = Journal::open_with(path, append_options()).expect("open journal");
    timed_on_threads(
        writers,
        appends.div_ceil(writers),
        |writer, i| workload.entry(writer, i + 1),
        |entry| {
            journal.append(entry).expect("append");
        },
    )
}

/// [`concurrent_appends`] from `writers` tokio tasks on a multi-thread runtime with one
/// worker per core, each awaiting its appends: how the operator's reconciles append.
fn concurrent_task_appends(
    path: &Path,
    workload: &Workload,
    appends: u64,
    writers: u64,
) -> (Latencies, f64) {
    let journal =
        std::sync::Arc::new(Journal::open_with(path, append_options()).expect("open journal"));
    let per_writer = appends.div_ceil(writers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let micros: Vec<f64> = runtime.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|writer| {
                let journal = journal.clone();
                let entries: Vec<NewRecord> = (0..per_writer)
                    .map(|i| workload.entry(writer, i + 1))
                    .collect();
                tokio::spawn(async move {
                    let mut micros = Vec::with_capacity(entries.len());
                    for entry in entries {
                        let start = Instant::now();
                        journal.append_async(entry).await.expect("append");
                        micros.push(start.elapsed().as_secs_f64() * 1e6);
                    }
                    micros
                })
            })
            .collect();
        let mut micros = Vec::new();
        for task in tasks {
            micros.extend(task.await.expect("writer task"));
        }
        micros
    });
    let rate = micros.len() as f64 / started.elapsed().as_secs_f64();
    (Latencies::new(micros), rate)
}

/// The disk's own durable write: a small `pwrite` then `fdatasync`, one at a time, in the
/// directory the journal is on. `preallocated`: over a file written and synced first, so
/// the sync writes data only; otherwise appending, so each sync also commits the new size.
fn raw_fdatasync(dir: &Path, writes: u64, len: usize, preallocated: bool) -> Latencies {
    use std::os::unix::fs::FileExt;
    let path = dir.join("raw-fdatasync");
    let file = std::fs::File::create(&path).expect("create");
    let data = vec![0x5a_u8; len];
    if preallocated {
        let zeros = vec![0u8; 1 << 20];
        let total = writes * len as u64;
        let mut at = 0;
        while at < total {
            file.write_all_at(&zeros, at).expect("fill");
            at += zeros.len() as u64;
        }
        file.sync_all().expect("fsync");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
    }
    let micros = (0..writes)
        .map(|i| {
            let start = Instant::now();
            file.write_all_at(&data, i * len as u64).expect("pwrite");
            file.sync_data().expect("fdatasync");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    drop(file);
    std::fs::remove_file(&path).expect("remove");
    Latencies::new(micros)
}

/// The least a group commit can cost on this disk: `writers` threads send `len`-byte
/// records to one thread that takes everything queued, writes it with one `pwrite` in
/// place (over a file written and synced first) and one `fdatasync`, and answers each.
/// No encoding, no chains, no sled: the floor under the journal's figure.
fn bare_group_commit(dir: &Path, appends: u64, writers: u64, len: usize) -> (Latencies, f64) {
    use std::os::unix::fs::FileExt;
    use std::sync::mpsc;
    const SPAN: u64 = 8 << 20;
    let path = dir.join("bare-group-commit");
    let file = std::fs::File::create(&path).expect("create");
    let zeros = vec![0u8; 1 << 20];
    for at in (0..SPAN).step_by(zeros.len()) {
        file.write_all_at(&zeros, at).expect("fill");
    }
    file.sync_all().expect("fsync");
    let (requests, queue) = mpsc::channel::<(Vec<u8>, mpsc::SyncSender<()>)>();
    let committer = std::thread::spawn(move || {
        let mut at = 0u64;
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter().take(1023));
            let bytes: Vec<u8> = batch.iter().flat_map(|(r, _)| r.iter().copied()).collect();
            if at + bytes.len() as u64 > SPAN {
                at = 0;
            }
            file.write_all_at(&bytes, at).expect("pwrite");
            file.sync_data().expect("fdatasync");
            at += bytes.len() as u64;
            for (_, reply) in batch {
                let _ = reply.send(());
            }
        }
    });
    let (latencies, rate) = timed_on_threads(
        writers,
        appends.div_ceil(writers),
        |_, _| vec![0x5a; len],
        |record| {
            let (reply, answer) = mpsc::sync_channel(1);
            requests.send((record, reply)).expect("send");
            answer.recv().expect("answer");
        },
    );
    drop(requests);
    committer.join().expect("committer");
    std::fs::remove_file(&path).expect("remove");
    (latencies, rate)
}

/// The size of a stored record value, read back from the closed journal's database.
fn stored_value_len(path: &Path) -> usize {
    let db = sled::open(path).expect("open raw sled");
    let tree = db.open_tree("records").expect("open tree");
    let first = tree.first().expect("read").expect("at least one record");
    first.1.len()
}

fn build_large_journal(path: &Path, workload: &Workload, records: u64, chain_len: u64) -> f64 {
    let journal = Journal::open(path).expect("open journal");
    let entries = (0..records).map(|i| workload.entry(i / chain_len, i % chain_len + 1));
    let (written, seconds) = time(|| {
        let written = journal.bulk_append_unflushed(entries).expect("bulk append");
        journal.flush().expect("flush");
        written
    });
    assert_eq!(written, records);
    seconds
}

fn raw_scan(path: &Path) -> (u64, f64) {
    let db = sled::open(path).expect("open raw sled");
    let tree = db.open_tree("records").expect("open tree");
    time(|| {
        tree.iter()
            .map(|item| item.map(|(_, v)| v.len() as u64).expect("scan"))
            .sum::<u64>()
    })
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// An append's latency over the disk's round trip just measured.
fn ratios(appends: &Latencies, disk: &Latencies) {
    println!(
        "{:<28} journal/disk   p50 {:.2}x   p99 {:.2}x",
        "",
        appends.quantile(0.50) / disk.quantile(0.50),
        appends.quantile(0.99) / disk.quantile(0.99),
    );
}

fn main() {
    let config = Config::from_env();
    let workload = Workload::new();
    let root = config.dir.path();
    println!("journal benchmark in {}", root.display());
    println!(
        "appends: {} with 1 writer, {} with 4 and 16, over {} chains; verify: {} records in chains of {}",
        config.appends, config.concurrent_appends, config.tenants, config.records, config.chain_len
    );

    println!("\n== durable appends (each fdatasynced before it returns) ==");
    let (single, _) = concurrent_appends(&root.join("appends"), &workload, config.appends, 1);
    let value_len = stored_value_len(&root.join("appends"));
    let disk_after_single = raw_fdatasync(root, config.appends, value_len, true);
    let growing = raw_fdatasync(root, config.appends, value_len, false);
    let baseline = raw_sled_appends(&root.join("raw"), config.appends, value_len);
    println!("record value: {value_len} bytes (raw sled and raw fdatasync write the same size)");
    growing.print("disk: fdatasync, appending");
    baseline.print("raw sled insert+flush");
    disk_after_single.print("disk: fdatasync, in place");
    single.print("journal append, 1 writer");
    ratios(&single, &disk_after_single);
    for writers in [4, 16] {
        let disk = raw_fdatasync(root, config.appends, value_len, true);
        let path = root.join(format!("appends-{writers}"));
        let (latencies, rate) =
            concurrent_appends(&path, &workload, config.concurrent_appends, writers);
        disk.print("disk: fdatasync, in place");
        latencies.print(&format!("journal append, {writers} writers"));
        println!("{:<28} {rate:>9.0} appends/s", "");
        ratios(&latencies, &disk);
        let (bare, bare_rate) =
            bare_group_commit(root, config.concurrent_appends, writers, value_len);
        bare.print(&format!("bare group commit, {writers}"));
        println!("{:<28} {bare_rate:>9.0} appends/s", "");
        ratios(&bare, &disk);
    }

    println!("\n== the same from tokio tasks (as the operator's reconciles append) ==");
    for writers in [1, 4, 16] {
        let appends = if writers == 1 {
            config.appends
        } else {
            config.concurrent_appends
        };
        let disk = raw_fdatasync(root, config.appends, value_len, true);
        let path = root.join(format!("task-appends-{writers}"));
        let (latencies, rate) = concurrent_task_appends(&path, &workload, appends, writers);
        disk.print("disk: fdatasync, in place");
        latencies.print(&format!("journal append, {writers} tasks"));
        println!("{:<28} {rate:>9.0} appends/s", "");
        ratios(&latencies, &disk);
    }

    println!("\n== read + verify {} records ==", config.records);
    let path = root.join("large");
    let build = build_large_journal(&path, &workload, config.records, config.chain_len);
    println!(
        "bulk build (unflushed batches, one flush)  {build:>7.3} s   on disk {:.0} MiB",
        dir_size(&path) as f64 / (1 << 20) as f64
    );
    let (bytes, scan) = raw_scan(&path);
    println!(
        "raw sled scan (fresh open, no decode)      {scan:>7.3} s   {:.0} MiB of values",
        bytes as f64 / (1 << 20) as f64
    );
    let journal = Journal::open(&path).expect("reopen journal");
    for label in ["verify (fresh open)", "verify (warm cache)"] {
        let (report, seconds) = time(|| journal.verify().expect("verify"));
        assert!(report.is_ok(), "{:?}", report.first_problem);
        assert_eq!(report.records, config.records);
        println!(
            "{label:<42} {seconds:>7.3} s   {:.0} records/s   {} chains",
            report.records as f64 / seconds,
            report.chains
        );
    }
    let (count, seconds) = time(|| journal.records().filter(|r| r.is_ok()).count());
    println!("read all as Record (export path)           {seconds:>7.3} s   {count} records");
}
