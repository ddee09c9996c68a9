//! A real redis-server for the tests of what the operator renders: started on a config
//! file in a temp dir and killed on drop, with just enough RESP to talk to it.
//!
//! The binaries come from `NEURALLOG_REDIS_SERVER` / `NEURALLOG_REDIS_CLI`, else from
//! PATH; scripts/install-redis.sh installs Debian's.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub fn redis_server_path() -> PathBuf {
    tool("NEURALLOG_REDIS_SERVER", "redis-server")
}

/// The readiness probe runs `redis-cli` by name, so an override must keep that name.
pub fn redis_cli_path() -> PathBuf {
    let path = tool("NEURALLOG_REDIS_CLI", "redis-cli");
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some("redis-cli"),
        "NEURALLOG_REDIS_CLI must name a file called redis-cli: the rendered probe runs it by name"
    );
    path
}

fn tool(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).map(PathBuf::from) {
        assert!(path.is_file(), "{env}={} is not a file", path.display());
        return path;
    }
    find_in_path(name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed: run scripts/install-redis.sh (it installs Debian's \
             redis-server and redis-cli), or set {env} to the binary"
        )
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A port nobody listens on right now. Another process may take it before Redis binds it,
/// which [`StartFailure::port_was_taken`] lets the caller detect and retry.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// One test's files: the redis.conf it runs, Redis's log and the data directory, which
/// outlives restarts of Redis.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("neurallog-redis-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        Sandbox { dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

/// Why Redis did not become ready, with what it logged.
#[derive(Debug)]
pub struct StartFailure {
    pub reason: String,
    pub log: String,
}

impl StartFailure {
    pub fn port_was_taken(&self) -> bool {
        self.log.contains("Address already in use")
    }
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; redis-server's log:\n{}", self.reason, self.log)
    }
}

/// A running redis-server, killed (SIGKILL) when dropped.
pub struct RedisProcess {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl RedisProcess {
    /// Runs `argv` with its output in `log` (a file, so that a chatty Redis cannot block
    /// on a full pipe) and waits until Redis answers PING on `port`.
    pub fn start(argv: &[String], port: u16, log: &Path) -> Result<RedisProcess, StartFailure> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv[0]));
        let mut redis = RedisProcess {
            child,
            port,
            log: log.to_path_buf(),
        };
        redis.wait_until_ready()?;
        Ok(redis)
    }

    /// Polls until our Redis answers on the port; fails as soon as it exits, or at the
    /// deadline. Another test's Redis may hold the same port (both picked it while it was
    /// free), so a PONG alone does not say it is ours: the answering server's process id
    /// must be our child's. Ours then exits on "Address already in use" and the caller
    /// retries on another port.
    fn wait_until_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(format!("redis-server exited with {status}")));
            }
            if self.answers_as_our_process() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failure(format!(
                    "redis-server did not answer PING within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn answers_as_our_process(&self) -> bool {
        let Ok(mut connection) = Connection::open(self.port) else {
            return false;
        };
        let pong = connection.command(&["PING"]);
        if !pong.is_ok_and(|reply| reply == Reply::Status("PONG".into())) {
            return false;
        }
        let ours = format!("process_id:{}", self.pid());
        match connection.command(&["INFO", "server"]) {
            Ok(Reply::Bulk(Some(info))) => String::from_utf8_lossy(&info)
                .lines()
                .any(|line| line.trim_end() == ours),
            _ => false,
        }
    }

    fn failure(&mut self, reason: String) -> StartFailure {
        let _ = self.child.kill();
        let _ = self.child.wait();
        StartFailure {
            reason,
            log: self.log(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A connection that Redis has accepted (answered PING). Polls: with a small
    /// maxclients, Redis may not yet have released the slot of a connection just closed.
    pub fn connect(&self) -> Connection {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let attempt = Connection::open(self.port).and_then(|mut c| {
                let reply = c.command(&["PING"])?;
                Ok((c, reply))
            });
            match attempt {
                Ok((connection, Reply::Status(pong))) if pong == "PONG" => return connection,
                other => assert!(
                    Instant::now() < deadline,
                    "no connection to Redis within {START_TIMEOUT:?}: {:?}; its log:\n{}",
                    other.map(|(_, reply)| reply),
                    self.log()
                ),
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kills Redis with SIGKILL, as a crash or an OOM kill would.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL redis-server");
        self.child.wait().expect("redis-server is reaped");
    }

    /// Sends SIGTERM, as the kubelet does to stop a pod, and waits for Redis to exit.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", self.pid());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for redis-server") {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A client connection speaking RESP2.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    pub fn open(port: u16) -> io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    pub fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&request)?;
        self.read_reply()
    }

    /// A command that must succeed; panics with Redis's error otherwise.
    pub fn expect(&mut self, args: &[&str]) -> Reply {
        match self.command(args) {
            Ok(Reply::Error(e)) => panic!("{args:?} failed: {e}"),
            Ok(reply) => reply,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    /// `CONFIG GET key`: the value, if Redis knows the directive.
    pub fn config_get(&mut self, key: &str) -> Option<String> {
        match self.expect(&["CONFIG", "GET", key]) {
            Reply::Array(Some(items)) => match items.as_slice() {
                [_, Reply::Bulk(Some(value))] => Some(String::from_utf8_lossy(value).into()),
                _ => None,
            },
            other => panic!("CONFIG GET {key}: unexpected reply {other:?}"),
        }
    }

    pub fn get(&mut self, key: &str) -> Option<String> {
        match self.expect(&["GET", key]) {
            Reply::Bulk(value) => value.map(|v| String::from_utf8_lossy(&v).into()),
            other => panic!("GET {key}: unexpected reply {other:?}"),
        }
    }

    /// The fields of `INFO section`.
    pub fn info(&mut self, section: &str) -> BTreeMap<String, String> {
        let Reply::Bulk(Some(text)) = self.expect(&["INFO", section]) else {
            panic!("INFO {section}: not a bulk string");
        };
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    pub fn close(self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, line.clone());
        let (kind, rest) = line.split_at_checked(1).ok_or_else(invalid)?;
        let number = || rest.parse::<i64>().map_err(|_| invalid());
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Integer(number()?),
            "$" => Reply::Bulk(match usize::try_from(number()?) {
                Ok(len) => Some(self.read_bulk(len)?),
                Err(_) => None,
            }),
            "*" => Reply::Array(match usize::try_from(number()?) {
                Ok(len) => Some(
                    (0..len)
                        .map(|_| self.read_reply())
                        .collect::<Result<_, _>>()?,
                ),
                Err(_) => None,
            }),
            _ => return Err(invalid()),
        })
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        match line.strip_suffix("\r\n") {
            Some(content) if !content.is_empty() => Ok(content.to_string()),
            _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, line)),
        }
    }

    fn read_bulk(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data)?;
        data.truncate(len);
        Ok(data)
    }
}

/// Polls `check` every few milliseconds until it returns `Some`, or panics after
/// `timeout` naming `what` (and showing `context()`).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; {}",
            context()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The soft limit on open files of process `pid`, from /proc.
pub fn open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
        .expect("a numeric open-files limit")
}
