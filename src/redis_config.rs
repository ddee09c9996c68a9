//! What the operator knows about the redis.conf directives users may set through
//! `spec.redis.config`: an allowlist for Redis 7, the value each directive takes, and how
//! to write a directive as a redis.conf line.
//!
//! Redis refuses to start on a bad config line, so a value Redis would reject must be a
//! spec problem reported on the Tenant, not a crash-looping pod.

use crate::crd::RESERVED_REDIS_KEYS;
use crate::quantity::Quantity;
use std::fmt;

/// The kind of value a directive takes, with Redis 7's own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `yes` or `no`.
    YesNo,
    /// A decimal integer in `min..=max`.
    Integer { min: i64, max: i64 },
    /// A size in Redis units: `1048576`, `100k`, `256mb`, `1gb` (not `256Mi`).
    MemorySize { min: u64, max: u64 },
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
    /// `save`: empty, or `<seconds> <changes>` pairs.
    SavePoints,
    /// `notify-keyspace-events`: empty, or event class letters.
    KeyspaceEvents,
}

/// A redis.conf directive users may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: &'static str,
    pub kind: ValueKind,
}

/// Why `spec.redis.config.<key>` is refused. Display reads `spec.redis.config.<key>: why`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", config_field(.key))]
pub struct RedisConfigError {
    pub key: String,
    pub problem: RedisConfigProblem,
}

impl RedisConfigError {
    /// The spec field at fault, such as `spec.redis.config.maxmemory`.
    pub fn field(&self) -> String {
        config_field(&self.key)
    }
}

/// What is wrong with one `spec.redis.config` entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigProblem {
    #[error("{key} is set by the operator and cannot be changed: {reason}")]
    Reserved { key: String, reason: &'static str },
    #[error("{key} is not allowed: {reason}")]
    Refused { key: String, reason: &'static str },
    #[error("{} is not allowed: {reason}", quoted(.value))]
    RefusedValue { value: String, reason: &'static str },
    #[error("{old} was renamed to {new} in Redis 7; use {new}")]
    Renamed { old: String, new: &'static str },
    #[error("{} is not a supported redis.conf directive; {}", quoted(.key), unknown_hint(.suggestions))]
    Unknown {
        key: String,
        suggestions: Vec<&'static str>,
    },
    #[error("values must be a single line")]
    MultiLine,
    #[error(
        "{} contains a quote or backslash; write the bare value: the operator adds the quoting redis.conf needs (an empty value is written as \"\")",
        quoted(.value)
    )]
    Quoted { value: String },
    #[error("{} is a Kubernetes quantity; Redis expects units like 256mb or 1gb", quoted(.value))]
    KubernetesQuantity { value: String },
    #[error("{} is not valid; expected {expected}", quoted(.value))]
    Invalid { value: String, expected: String },
}

const INT_MAX: i64 = i32::MAX as i64;
const INT_MIN: i64 = i32::MIN as i64;
const LONG_MAX: i64 = i64::MAX;
const MAX_SIZE: u64 = i64::MAX as u64;
/// Redis allocates every database when it starts (about 450 bytes each): 2^31 of them
/// need a terabyte and Redis aborts. 10000 cost about 5 MB.
const MAX_DATABASES: i64 = 10_000;
/// Linux caps a process's open files at `fs.nr_open` (1048576 by default) and Redis keeps
/// 32 of them for itself, so more clients can never be served. Redis lowers a larger
/// maxclients to its file limit 16 at a time before it listens: from 2^32 that takes
/// minutes, and the liveness probe restarts the pod first.
const MAX_CLIENTS: i64 = 1_048_576 - 32;
/// `memtoull` copies the digits of a size into a 128-byte buffer and refuses longer ones.
const MAX_SIZE_DIGITS: usize = 127;

const MAXMEMORY_POLICIES: &[&str] = &[
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
];
const APPENDFSYNC_MODES: &[&str] = &["always", "everysec", "no"];
const LOG_LEVELS: &[&str] = &["debug", "verbose", "notice", "warning"];

const fn yes_no(name: &'static str) -> Directive {
    Directive {
        name,
        kind: ValueKind::YesNo,
    }
}

const fn integer(name: &'static str, min: i64, max: i64) -> Directive {
    Directive {
        name,
        kind: ValueKind::Integer { min, max },
    }
}

const fn memory(name: &'static str, min: u64, max: u64) -> Directive {
    Directive {
        name,
        kind: ValueKind::MemorySize { min, max },
    }
}

const fn one_of(name: &'static str, values: &'static [&'static str]) -> Directive {
    Directive {
        name,
        kind: ValueKind::OneOf(values),
    }
}

/// The directives users may set, sorted by name. Names and limits are those of Redis 7.0
/// (`src/config.c`), narrowed where Redis would take a value but then not start, or not in
/// time for the liveness probe, so that any Redis 7 image starts on them.
/// tests/redis_real.rs checks them against a real redis-server.
pub const SUPPORTED_DIRECTIVES: &[Directive] = &[
    integer("active-defrag-cycle-max", 1, 99),
    integer("active-defrag-cycle-min", 1, 99),
    memory("active-defrag-ignore-bytes", 1, MAX_SIZE),
    integer("active-defrag-max-scan-fields", 1, LONG_MAX),
    integer("active-defrag-threshold-lower", 0, 1000),
    integer("active-defrag-threshold-upper", 0, 1000),
    integer("active-expire-effort", 1, 10),
    yes_no("activedefrag"),
    yes_no("activerehashing"),
    yes_no("aof-load-truncated"),
    yes_no("aof-rewrite-incremental-fsync"),
    yes_no("aof-timestamp-enabled"),
    yes_no("aof-use-rdb-preamble"),
    one_of("appendfsync", APPENDFSYNC_MODES),
    yes_no("appendonly"),
    memory("auto-aof-rewrite-min-size", 0, MAX_SIZE),
    integer("auto-aof-rewrite-percentage", 0, INT_MAX),
    integer("busy-reply-threshold", 0, LONG_MAX),
    integer("databases", 1, MAX_DATABASES),
    yes_no("dynamic-hz"),
    integer("hash-max-listpack-entries", 0, LONG_MAX),
    memory("hash-max-listpack-value", 0, MAX_SIZE),
    memory("hll-sparse-max-bytes", 0, MAX_SIZE),
    // Redis accepts any value but clamps hz to 1..500.
    integer("hz", 1, 500),
    integer("io-threads", 1, 128),
    yes_no("io-threads-do-reads"),
    yes_no("jemalloc-bg-thread"),
    integer("latency-monitor-threshold", 0, LONG_MAX),
    yes_no("latency-tracking"),
    yes_no("lazyfree-lazy-eviction"),
    yes_no("lazyfree-lazy-expire"),
    yes_no("lazyfree-lazy-server-del"),
    yes_no("lazyfree-lazy-user-del"),
    yes_no("lazyfree-lazy-user-flush"),
    integer("lfu-decay-time", 0, INT_MAX),
    integer("lfu-log-factor", 0, INT_MAX),
    integer("list-compress-depth", 0, INT_MAX),
    integer("list-max-listpack-size", INT_MIN, INT_MAX),
    one_of("loglevel", LOG_LEVELS),
    integer("maxclients", 1, MAX_CLIENTS),
    memory("maxmemory", 0, u64::MAX),
    integer("maxmemory-eviction-tenacity", 0, 100),
    one_of("maxmemory-policy", MAXMEMORY_POLICIES),
    integer("maxmemory-samples", 1, INT_MAX),
    yes_no("no-appendfsync-on-rewrite"),
    Directive {
        name: "notify-keyspace-events",
        kind: ValueKind::KeyspaceEvents,
    },
    yes_no("rdb-save-incremental-fsync"),
    yes_no("rdbchecksum"),
    yes_no("rdbcompression"),
    Directive {
        name: "save",
        kind: ValueKind::SavePoints,
    },
    integer("set-max-intset-entries", 0, LONG_MAX),
    integer("shutdown-timeout", 0, INT_MAX),
    integer("slowlog-log-slower-than", -1, LONG_MAX),
    integer("slowlog-max-len", 0, LONG_MAX),
    yes_no("stop-writes-on-bgsave-error"),
    memory("stream-node-max-bytes", 0, MAX_SIZE),
    integer("stream-node-max-entries", 0, LONG_MAX),
    integer("tcp-keepalive", 0, INT_MAX),
    integer("timeout", 0, INT_MAX),
    integer("tracking-table-max-keys", 0, LONG_MAX),
    integer("zset-max-listpack-entries", 0, LONG_MAX),
    memory("zset-max-listpack-value", 0, MAX_SIZE),
];

/// Shown when an unknown key has no close match.
const COMMON_DIRECTIVES: [&str; 8] = [
    "maxmemory",
    "maxmemory-policy",
    "appendonly",
    "appendfsync",
    "save",
    "timeout",
    "loglevel",
    "notify-keyspace-events",
];

const SECRET_REASON: &str = "secrets do not belong in a ConfigMap, and a password would fail the readiness probe (redis-cli ping); the tenant's NetworkPolicies keep other namespaces away from Redis";
const REPLICATION_REASON: &str =
    "the operator runs a single Redis without replication or cluster mode";
const MODULE_REASON: &str = "modules would load code that is not in the image the tenant chose";
const PROTECTED_REASON: &str = "it would let clients reconfigure Redis or load code at run time";

/// Directives outside [`RESERVED_REDIS_KEYS`] that are refused for a stated reason.
const REFUSED_DIRECTIVES: [(&str, &str); 14] = [
    ("aclfile", SECRET_REASON),
    ("masterauth", SECRET_REASON),
    ("masteruser", SECRET_REASON),
    ("requirepass", SECRET_REASON),
    ("user", SECRET_REASON),
    ("replicaof", REPLICATION_REASON),
    ("slaveof", REPLICATION_REASON),
    ("cluster-enabled", REPLICATION_REASON),
    ("cluster-config-file", REPLICATION_REASON),
    ("loadmodule", MODULE_REASON),
    ("enable-protected-configs", PROTECTED_REASON),
    ("enable-debug-command", PROTECTED_REASON),
    ("enable-module-command", PROTECTED_REASON),
    ("sentinel", REPLICATION_REASON),
];

/// Values that some Redis 7 builds accept and others refuse to start on, as (directive,
/// value, reason); the directive's other values are allowed.
const REFUSED_VALUES: [(&str, &str, &str); 1] = [(
    "activedefrag",
    "yes",
    "active defragmentation needs a Redis built with its bundled jemalloc, and other builds (such as Debian's redis-server) refuse to start with it: \"Active defragmentation cannot be enabled: it requires a Redis server compiled with a modified Jemalloc\"",
)];

/// Redis 6 names that Redis 7 still reads as aliases; we ask for the current name so that
/// one setting cannot be given twice under two names.
const RENAMED_DIRECTIVES: [(&str, &str); 6] = [
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
    ("lua-time-limit", "busy-reply-threshold"),
];

/// Event class letters of `notify-keyspace-events` in Redis 7.
const KEYSPACE_EVENT_CLASSES: &str = "KEAg$lshzxetmdn";

/// The supported directive called `name`, if any.
pub fn directive(name: &str) -> Option<&'static Directive> {
    SUPPORTED_DIRECTIVES.iter().find(|d| d.name == name)
}

/// Checks one `spec.redis.config` entry: the key must be a supported directive and the
/// value one Redis 7 accepts for it.
pub fn validate_entry(key: &str, value: &str) -> Result<(), RedisConfigError> {
    let fail = |problem| RedisConfigError {
        key: key.to_string(),
        problem,
    };
    let directive = supported(key).map_err(fail)?;
    check_value_text(value).map_err(fail)?;
    check_value(directive.kind, value).map_err(fail)?;
    check_not_refused_value(key, value).map_err(fail)
}

/// One redis.conf line, `key value`, quoted where redis.conf needs it: an empty value is
/// `""`, and a value with spaces, quotes or control characters is double-quoted with
/// escapes, so that no value can end the line or add arguments. `save` keeps its pairs as
/// separate arguments.
pub fn render_line(key: &str, value: &str) -> String {
    let rendered_value = match directive(key).map(|d| d.kind) {
        Some(ValueKind::SavePoints) if is_plain_argument_list(value) => {
            value.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        _ => redis_argument(value),
    };
    format!("{} {rendered_value}", redis_argument(key))
}

fn supported(key: &str) -> Result<&'static Directive, RedisConfigProblem> {
    // Refused first: their reasons stay specific if crd::RESERVED_REDIS_KEYS grows.
    if let Some((_, reason)) = REFUSED_DIRECTIVES.iter().find(|(name, _)| *name == key) {
        return Err(RedisConfigProblem::Refused {
            key: key.to_string(),
            reason,
        });
    }
    if RESERVED_REDIS_KEYS.contains(&key) {
        return Err(RedisConfigProblem::Reserved {
            key: key.to_string(),
            reason: reserved_reason(key),
        });
    }
    if let Some((_, new)) = RENAMED_DIRECTIVES.iter().find(|(old, _)| *old == key) {
        return Err(RedisConfigProblem::Renamed {
            old: key.to_string(),
            new,
        });
    }
    directive(key).ok_or_else(|| RedisConfigProblem::Unknown {
        key: key.to_string(),
        suggestions: suggestions::closest(key),
    })
}

fn reserved_reason(key: &str) -> &'static str {
    match key {
        "bind" | "port" | "unixsocket" | "protected-mode" => {
            "the Service, the probes and the NetworkPolicies depend on Redis listening on 0.0.0.0:6379"
        }
        "dir" | "dbfilename" | "appendfilename" | "appenddirname" => {
            "data must stay on the persistent volume mounted at /data"
        }
        "include" | "rename-command" => {
            "it could read files outside redis.conf or rename commands the probes use"
        }
        "daemonize" | "supervised" | "pidfile" | "logfile" => {
            "in a container Redis must run in the foreground and log to stdout"
        }
        _ => "the operator manages it",
    }
}

fn check_not_refused_value(key: &str, value: &str) -> Result<(), RedisConfigProblem> {
    match REFUSED_VALUES
        .iter()
        .find(|(name, refused, _)| *name == key && refused.eq_ignore_ascii_case(value))
    {
        Some((_, _, reason)) => Err(RedisConfigProblem::RefusedValue {
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Rules every value follows, whatever its directive.
fn check_value_text(value: &str) -> Result<(), RedisConfigProblem> {
    if value.contains(['\n', '\r']) {
        return Err(RedisConfigProblem::MultiLine);
    }
    if value.contains(['"', '\'', '\\']) {
        return Err(RedisConfigProblem::Quoted {
            value: value.to_string(),
        });
    }
    Ok(())
}

fn check_value(kind: ValueKind, value: &str) -> Result<(), RedisConfigProblem> {
    let valid = match kind {
        ValueKind::YesNo => value.eq_ignore_ascii_case("yes") || value.eq_ignore_ascii_case("no"),
        ValueKind::Integer { min, max } => {
            parse_redis_integer(value).is_some_and(|n| (min..=max).contains(&n))
        }
        ValueKind::MemorySize { min, max } => {
            if is_kubernetes_only_quantity(value) {
                return Err(RedisConfigProblem::KubernetesQuantity {
                    value: value.to_string(),
                });
            }
            memory_size_bytes(value).is_some_and(|n| (min..=max).contains(&n))
        }
        ValueKind::OneOf(words) => words.iter().any(|w| w.eq_ignore_ascii_case(value)),
        ValueKind::SavePoints => is_valid_save(value),
        ValueKind::KeyspaceEvents => is_valid_keyspace_events(value),
    };
    if valid {
        Ok(())
    } else {
        Err(RedisConfigProblem::Invalid {
            value: value.to_string(),
            expected: Expected(kind).to_string(),
        })
    }
}

/// An integer as Redis's `string2ll` reads it: optional `-`, no `+`, no leading zeros.
fn parse_redis_integer(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let canonical = value == "0"
        || (digits.starts_with(|c: char| matches!(c, '1'..='9'))
            && digits.bytes().all(|b| b.is_ascii_digit()));
    if canonical { value.parse().ok() } else { None }
}

/// The bytes of a Redis memory size, as Redis's `memtoull` reads it: up to 127 digits,
/// then nothing, `b`, `k` (1000), `kb` (1024), `m`, `mb`, `g` or `gb`, in any case.
pub fn memory_size_bytes(value: &str) -> Option<u64> {
    let digits_len = value.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len > MAX_SIZE_DIGITS {
        return None;
    }
    let (digits, unit) = value.split_at(digits_len);
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    if digits.is_empty() {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(multiplier)
}

/// A valid Kubernetes quantity that Redis would not read, such as `256Mi` or `1.5G`.
fn is_kubernetes_only_quantity(value: &str) -> bool {
    memory_size_bytes(value).is_none() && Quantity::parse(value).is_ok()
}

/// Whether `value` is made of arguments that redis.conf reads as they are written.
fn is_plain_argument_list(value: &str) -> bool {
    let mut arguments = value.split_whitespace().peekable();
    arguments.peek().is_some() && arguments.all(is_plain_argument)
}

fn is_plain_argument(argument: &str) -> bool {
    !argument.is_empty()
        && argument
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'))
}

fn is_valid_save(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let numbers: Vec<&str> = value.split_whitespace().collect();
    !numbers.is_empty()
        && numbers.len().is_multiple_of(2)
        && numbers.chunks(2).all(|pair| match pair {
            [seconds, changes] => {
                seconds.parse::<i64>().is_ok_and(|s| s >= 1)
                    && changes.parse::<i32>().is_ok_and(|c| c >= 0)
            }
            _ => false,
        })
}

/// Empty turns notifications off; otherwise the letters must name at least one channel
/// (K or E), or Redis accepts the setting and silently delivers nothing.
fn is_valid_keyspace_events(value: &str) -> bool {
    value.is_empty()
        || value.chars().all(|c| KEYSPACE_EVENT_CLASSES.contains(c))
            && value.contains(['K', 'E'])
            && value.contains(|c| !matches!(c, 'K' | 'E'))
}

/// `value` as one redis.conf argument: bare when safe, else double-quoted with escapes.
fn redis_argument(value: &str) -> String {
    if is_plain_argument(value) {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for byte in value.bytes() {
        match byte {
            b'"' => quoted.push_str("\\\""),
            b'\\' => quoted.push_str("\\\\"),
            b'\n' => quoted.push_str("\\n"),
            b'\r' => quoted.push_str("\\r"),
            b'\t' => quoted.push_str("\\t"),
            b' '..=b'~' => quoted.push(char::from(byte)),
            _ => quoted.push_str(&format!("\\x{byte:02x}")),
        }
    }
    quoted.push('"');
    quoted
}

/// `spec.redis.config.<key>`, or `spec.redis.config["<key>"]` for a key that is not a
/// plain directive name and would make the path ambiguous.
fn config_field(key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if plain {
        format!("spec.redis.config.{key}")
    } else {
        format!("spec.redis.config[{}]", quoted(key))
    }
}

/// Quoted and escaped for a message, and cut short if very long.
pub(crate) fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    }
}

fn unknown_hint(suggestions: &[&str]) -> String {
    if suggestions.is_empty() {
        format!(
            "supported directives include {} ({} in all)",
            COMMON_DIRECTIVES.join(", "),
            SUPPORTED_DIRECTIVES.len()
        )
    } else {
        format!("did you mean {}?", suggestions.join(" or "))
    }
}

/// What a value kind expects, for error messages.
struct Expected(ValueKind);

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ValueKind::YesNo => f.write_str("yes or no (not true/false)"),
            ValueKind::Integer { min, max } => {
                write!(f, "a whole number from {min} to {max}, without units")
            }
            ValueKind::MemorySize { min, max } => write!(
                f,
                "a size in Redis units from {min} to {max} bytes: a number of bytes, or a whole number followed by k, kb, m, mb, g or gb (like 256mb or 1gb)"
            ),
            ValueKind::OneOf(words) => write!(f, "one of {}", words.join(", ")),
            ValueKind::SavePoints => f.write_str(
                "\"\" to turn snapshots off, or pairs of <seconds> <changes> such as \"3600 1 300 100\" (seconds at least 1)",
            ),
            ValueKind::KeyspaceEvents => write!(
                f,
                "\"\" to turn notifications off, or letters from {KEYSPACE_EVENT_CLASSES} with K and/or E plus at least one event class, such as \"Ex\""
            ),
        }
    }
}

mod suggestions {
    //! Close matches for a mistyped directive name.

    use super::SUPPORTED_DIRECTIVES;

    const MAX_SUGGESTIONS: usize = 3;

    /// Supported names within a few edits of `key`, closest first.
    pub(super) fn closest(key: &str) -> Vec<&'static str> {
        let tolerance = (key.chars().count() / 4).clamp(1, 3);
        let mut candidates: Vec<(usize, &'static str)> = SUPPORTED_DIRECTIVES
            .iter()
            .map(|d| (edit_distance(key, d.name), d.name))
            .filter(|(distance, _)| *distance <= tolerance)
            .collect();
        candidates.sort();
        candidates
            .into_iter()
            .take(MAX_SUGGESTIONS)
            .map(|(_, name)| name)
            .collect()
    }

    /// Levenshtein distance, counting characters.
    fn edit_distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut previous: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut current = Vec::with_capacity(b.len() + 1);
            current.push(i + 1);
            for (j, cb) in b.iter().enumerate() {
                let substitution = previous[j] + usize::from(ca != *cb);
                let insertion = current[j] + 1;
                let deletion = previous[j + 1] + 1;
                current.push(substitution.min(insertion).min(deletion));
            }
            previous = current;
        }
        previous[b.len()]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn distance() {
            assert_eq!(edit_distance("", "abc"), 3);
            assert_eq!(edit_distance("kitten", "sitting"), 3);
            assert_eq!(edit_distance("same", "same"), 0);
        }

        #[test]
        fn typos_find_their_directive() {
            assert_eq!(closest("maxmemory-polcy"), vec!["maxmemory-policy"]);
            assert_eq!(closest("apendonly"), vec!["appendonly"]);
            assert!(closest("completely-unrelated-thing").is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn problem(key: &str, value: &str) -> RedisConfigProblem {
        validate_entry(key, value)
            .expect_err(&format!("{key}={value} should be refused"))
            .problem
    }

    fn message(key: &str, value: &str) -> String {
        validate_entry(key, value)
            .expect_err(&format!("{key}={value} should be refused"))
            .to_string()
    }

    fn accepts(key: &str, value: &str) {
        if let Err(e) = validate_entry(key, value) {
            panic!("{key}={value:?} should be accepted: {e}");
        }
    }

    #[test]
    fn the_directive_list_is_sorted_unique_and_disjoint_from_refused_keys() {
        let names: Vec<&str> = SUPPORTED_DIRECTIVES.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        for name in names {
            assert!(!RESERVED_REDIS_KEYS.contains(&name), "{name}");
            assert!(
                !REFUSED_DIRECTIVES.iter().any(|(n, _)| *n == name),
                "{name}"
            );
            assert!(
                !RENAMED_DIRECTIVES.iter().any(|(n, _)| *n == name),
                "{name}"
            );
        }
        for name in COMMON_DIRECTIVES {
            assert!(directive(name).is_some(), "{name}");
        }
    }

    #[test]
    fn yes_no_values() {
        accepts("appendonly", "yes");
        accepts("appendonly", "no");
        accepts("appendonly", "YES");
        let msg = message("appendonly", "true");
        assert!(
            msg.starts_with("spec.redis.config.appendonly: \"true\""),
            "{msg}"
        );
        assert!(msg.contains("yes or no"), "{msg}");
        assert!(matches!(
            problem("rdbcompression", ""),
            RedisConfigProblem::Invalid { .. }
        ));
    }

    #[test]
    fn integer_values_and_ranges() {
        accepts("timeout", "0");
        accepts("timeout", "300");
        accepts("slowlog-log-slower-than", "-1");
        accepts("list-max-listpack-size", "-2");
        for bad in ["-5", "007", "+3", "3s", "", " 3", "1e3", "2147483648", "-0"] {
            assert!(
                matches!(problem("timeout", bad), RedisConfigProblem::Invalid { .. }),
                "{bad}"
            );
        }
        let msg = message("io-threads", "129");
        assert!(msg.contains("from 1 to 128"), "{msg}");
        assert!(validate_entry("maxclients", "4294967296").is_err());
        assert!(validate_entry("slowlog-log-slower-than", "-2").is_err());
    }

    #[test]
    fn memory_sizes_use_redis_units() {
        for good in [
            "0", "1048576", "100k", "256mb", "1gb", "1GB", "2G", "64b", "512KB",
        ] {
            accepts("maxmemory", good);
        }
        for bad in [
            "1.5gb",
            "mb",
            "-1mb",
            "1tb",
            "1 gb",
            "1mib",
            "18446744073709551616",
        ] {
            assert!(
                matches!(
                    problem("maxmemory", bad),
                    RedisConfigProblem::Invalid { .. }
                ),
                "{bad}"
            );
        }
        assert!(validate_entry("maxmemory", "17179869184gb").is_err());
        assert!(validate_entry("active-defrag-ignore-bytes", "0").is_err());
    }

    #[test]
    fn sizes_longer_than_redis_reads_are_refused() {
        let padded = |zeros: usize| format!("{}1mb", "0".repeat(zeros));
        assert_eq!(memory_size_bytes(&padded(126)), Some(1 << 20));
        accepts("maxmemory", &padded(126));
        assert_eq!(memory_size_bytes(&padded(127)), None);
        assert!(validate_entry("maxmemory", &padded(127)).is_err());
    }

    #[test]
    fn databases_and_maxclients_stop_where_redis_still_starts_promptly() {
        accepts("databases", "10000");
        assert!(validate_entry("databases", "10001").is_err());
        assert!(validate_entry("databases", "2147483647").is_err());
        accepts("maxclients", "1048544");
        assert!(validate_entry("maxclients", "1048545").is_err());
        assert!(validate_entry("maxclients", "4294967263").is_err());
    }

    #[test]
    fn active_defragmentation_is_refused_because_some_builds_cannot_start_with_it() {
        accepts("activedefrag", "no");
        accepts("active-defrag-cycle-max", "50");
        for yes in ["yes", "YES"] {
            assert!(matches!(
                problem("activedefrag", yes),
                RedisConfigProblem::RefusedValue { .. }
            ));
        }
        let msg = message("activedefrag", "yes");
        assert!(
            msg.starts_with("spec.redis.config.activedefrag: \"yes\" is not allowed: "),
            "{msg}"
        );
        assert!(msg.contains("modified Jemalloc"), "{msg}");
    }

    #[test]
    fn a_kubernetes_quantity_for_a_size_gets_a_specific_message() {
        assert_eq!(
            message("maxmemory", "256Mi"),
            "spec.redis.config.maxmemory: \"256Mi\" is a Kubernetes quantity; Redis expects units like 256mb or 1gb"
        );
        for quantity in ["1Gi", "1.5G", "500Ki", "1e9"] {
            assert!(
                matches!(
                    problem("maxmemory", quantity),
                    RedisConfigProblem::KubernetesQuantity { .. }
                ),
                "{quantity}"
            );
        }
    }

    #[test]
    fn enum_values() {
        for policy in MAXMEMORY_POLICIES {
            accepts("maxmemory-policy", policy);
        }
        accepts("maxmemory-policy", "ALLKEYS-LRU");
        accepts("appendfsync", "everysec");
        accepts("loglevel", "warning");
        let msg = message("maxmemory-policy", "lru");
        assert!(msg.contains("one of volatile-lru,"), "{msg}");
        assert!(msg.contains("noeviction"), "{msg}");
        assert!(validate_entry("appendfsync", "sometimes").is_err());
        assert!(validate_entry("loglevel", "trace").is_err());
    }

    #[test]
    fn save_points() {
        accepts("save", "");
        accepts("save", "3600 1");
        accepts("save", "3600 1 300 100 60 10000");
        accepts("save", "900  1");
        for bad in ["3600", "0 1", "3600 -1", "3600 1 300", "x y", " ", "60 1e3"] {
            let msg = message("save", bad);
            assert!(msg.contains("<seconds> <changes>"), "{bad}: {msg}");
        }
    }

    #[test]
    fn keyspace_events() {
        accepts("notify-keyspace-events", "");
        accepts("notify-keyspace-events", "Ex");
        accepts("notify-keyspace-events", "KEA");
        accepts("notify-keyspace-events", "Kg$lshzxetmdn");
        for bad in ["x", "K", "KE", "Exq", "E x"] {
            assert!(
                validate_entry("notify-keyspace-events", bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn reserved_keys_are_refused_with_a_reason() {
        for key in RESERVED_REDIS_KEYS {
            assert!(
                matches!(
                    problem(key, "x"),
                    RedisConfigProblem::Reserved { .. } | RedisConfigProblem::Refused { .. }
                ),
                "{key}"
            );
            if matches!(problem(key, "x"), RedisConfigProblem::Reserved { .. }) {
                assert_ne!(reserved_reason(key), "the operator manages it", "{key}");
            }
        }
        let msg = message("dir", "/tmp");
        assert!(
            msg.starts_with("spec.redis.config.dir: dir is set by the operator"),
            "{msg}"
        );
        assert!(msg.contains("/data"), "{msg}");
    }

    #[test]
    fn secrets_and_replication_are_refused_with_a_reason() {
        let msg = message("requirepass", "hunter2");
        assert!(
            msg.contains("ConfigMap") && msg.contains("readiness probe"),
            "{msg}"
        );
        assert!(
            !msg.contains("hunter2"),
            "the secret must not be echoed: {msg}"
        );
        assert!(matches!(
            problem("replicaof", "x 6379"),
            RedisConfigProblem::Refused { .. }
        ));
    }

    #[test]
    fn old_names_point_to_new_ones() {
        assert_eq!(
            message("hash-max-ziplist-entries", "512"),
            "spec.redis.config.hash-max-ziplist-entries: hash-max-ziplist-entries was renamed to hash-max-listpack-entries in Redis 7; use hash-max-listpack-entries"
        );
    }

    #[test]
    fn unknown_keys_suggest_or_list_directives() {
        let msg = message("maxmemory-polcy", "allkeys-lru");
        assert_eq!(
            msg,
            "spec.redis.config.maxmemory-polcy: \"maxmemory-polcy\" is not a supported redis.conf directive; did you mean maxmemory-policy?"
        );
        let msg = message("frobnicate", "1");
        assert!(
            msg.contains("supported directives include maxmemory,"),
            "{msg}"
        );
        let msg = message("Weird Key", "1");
        assert!(
            msg.starts_with("spec.redis.config[\"Weird Key\"]:"),
            "{msg}"
        );
    }

    #[test]
    fn values_must_be_one_line_without_quotes() {
        assert_eq!(
            problem("maxmemory", "1mb\nport 1"),
            RedisConfigProblem::MultiLine
        );
        assert_eq!(problem("maxmemory", "1mb\r"), RedisConfigProblem::MultiLine);
        assert!(matches!(
            problem("save", "\"\""),
            RedisConfigProblem::Quoted { .. }
        ));
        assert!(matches!(
            problem("loglevel", "'debug'"),
            RedisConfigProblem::Quoted { .. }
        ));
        let msg = message("save", "\"\"");
        assert!(msg.contains("an empty value is written as \"\""), "{msg}");
    }

    #[test]
    fn rendering() {
        assert_eq!(render_line("maxmemory", "256mb"), "maxmemory 256mb");
        assert_eq!(render_line("save", ""), "save \"\"");
        assert_eq!(
            render_line("save", "3600 1  300 100"),
            "save 3600 1 300 100"
        );
        assert_eq!(
            render_line("notify-keyspace-events", ""),
            "notify-keyspace-events \"\""
        );
        assert_eq!(
            render_line("notify-keyspace-events", "Ex$"),
            "notify-keyspace-events Ex$"
        );
        assert_eq!(render_line("bind", "0.0.0.0"), "bind 0.0.0.0");
        assert_eq!(render_line("dir", "/data"), "dir /data");
        assert_eq!(render_line("x", "a b"), "x \"a b\"");
        assert_eq!(render_line("x", "1\nport 1"), "x \"1\\nport 1\"");
        assert_eq!(render_line("x", "say \"hi\""), "x \"say \\\"hi\\\"\"");
        assert_eq!(render_line("x", "é"), "x \"\\xc3\\xa9\"");
    }

    /// redis.conf's argument splitting (`sdssplitargs`), enough to check rendered lines.
    fn split_args(line: &str) -> Option<Vec<Vec<u8>>> {
        let bytes = line.as_bytes();
        let mut args = Vec::new();
        let mut i = 0;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == bytes.len() {
                return Some(args);
            }
            let mut arg = Vec::new();
            if bytes[i] == b'"' {
                i += 1;
                loop {
                    match *bytes.get(i)? {
                        b'\\' => {
                            let escaped = *bytes.get(i + 1)?;
                            if escaped == b'x' {
                                let hex = std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok()?;
                                arg.push(u8::from_str_radix(hex, 16).ok()?);
                                i += 4;
                                continue;
                            }
                            arg.push(match escaped {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            if i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                                return None;
                            }
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
            } else {
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    if matches!(bytes[i], b'"' | b'\'') {
                        return None;
                    }
                    arg.push(bytes[i]);
                    i += 1;
                }
            }
            args.push(arg);
        }
    }

    proptest! {
        #[test]
        fn validation_never_panics(key in any::<String>(), value in any::<String>()) {
            let _ = validate_entry(&key, &value);
        }

        #[test]
        fn valid_looking_values_never_panic(
            index in 0..SUPPORTED_DIRECTIVES.len(),
            value in "[-+ 0-9a-zA-Z$.]{0,24}",
        ) {
            let _ = validate_entry(SUPPORTED_DIRECTIVES[index].name, &value);
        }

        #[test]
        fn any_value_renders_as_exactly_one_argument(value in any::<String>()) {
            let line = render_line("maxmemory-policy", &value);
            prop_assert!(!line.contains(['\n', '\r']));
            let args = split_args(&line);
            prop_assert_eq!(
                args,
                Some(vec![b"maxmemory-policy".to_vec(), value.as_bytes().to_vec()])
            );
        }

        #[test]
        fn accepted_save_values_render_as_their_pairs(
            pairs in proptest::collection::vec((1i64..100_000, 0i32..100_000), 0..4)
        ) {
            let value = pairs.iter().map(|(s, c)| format!("{s} {c}")).collect::<Vec<_>>().join(" ");
            prop_assert!(validate_entry("save", &value).is_ok());
            let args = split_args(&render_line("save", &value)).unwrap_or_default();
            let expected_len = if pairs.is_empty() { 2 } else { 1 + 2 * pairs.len() };
            prop_assert_eq!(args.len(), expected_len);
        }
    }
}
