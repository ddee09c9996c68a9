//! What the journal tools show, whatever the source (the journal file, the operator's
//! HTTP API, or that API through the Kubernetes API server): the shapes exchanged over
//! HTTP and the one place that renders them as text.
//!
//! The export line format is documented in `docs/journal-export.md`; it is the
//! serialization of [`Record`], and the fixture test below pins it.

use crate::journal::{Checkpoint, Journal, JournalError, Record, TenantSummary, VerifyProgress};
use chrono::{DateTime, SecondsFormat, Utc};
use neurallog_machines::Input;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// One chain of one tenant, in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub tenant: String,
    pub uid: String,
    /// The tenant's other chains (other Tenants of the same name, deleted and re-created),
    /// oldest first.
    pub other_uids: Vec<String>,
    /// Where retention compacted the chain's oldest records: it starts after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<Checkpoint>,
    pub records: Vec<Record>,
}

/// The result of `verify`, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyOutcome {
    pub chains: u64,
    pub records: u64,
    pub problems: u64,
    pub first_problem: Option<BadRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadRecord {
    /// The tenant's name, when the journal still tells it.
    pub tenant: Option<String>,
    pub uid: String,
    /// `None` for a problem of a whole chain or of a key.
    pub seq: Option<u64>,
    pub problem: String,
}

impl VerifyOutcome {
    pub fn is_ok(&self) -> bool {
        self.problems == 0
    }
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenant = self.tenant.as_deref().unwrap_or("?");
        match self.seq {
            Some(seq) => write!(
                f,
                "tenant {tenant} uid {} seq {seq}: {}",
                self.uid, self.problem
            ),
            None => write!(f, "tenant {tenant} uid {}: {}", self.uid, self.problem),
        }
    }
}

/// Which records `export` streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    pub tenant: Option<String>,
    /// Records at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl ExportFilter {
    pub fn matches(&self, record: &Record) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == record.tenant)
            && self.since.is_none_or(|since| record.time >= since)
    }
}

/// Parses an RFC 3339 time given on the command line or in a query.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (like 2025-01-02T03:04:05Z): {e}"))
}

/// A tenant's chain: `uid` if given (it must be one of the tenant's), else its newest.
/// `Ok(None)` when the journal has no such tenant or chain.
pub fn read_history(
    journal: &Journal,
    name: &str,
    uid: Option<&str>,
) -> Result<Option<History>, JournalError> {
    let uids = journal.find_uids(name)?;
    let chosen = match uid {
        Some(uid) => uids.iter().find(|u| *u == uid).cloned(),
        None => uids.last().cloned(),
    };
    let Some(chosen) = chosen else {
        return Ok(None);
    };
    let records = journal.history(&chosen).collect::<Result<Vec<_>, _>>()?;
    let compacted = journal.checkpoint(&chosen)?;
    Ok(Some(History {
        tenant: name.to_owned(),
        compacted,
        other_uids: uids.into_iter().filter(|u| *u != chosen).collect(),
        uid: chosen,
        records,
    }))
}

/// The records `filter` selects, streamed: one tenant's chains only when it names one.
pub fn export_records<'a>(
    journal: &'a Journal,
    filter: &'a ExportFilter,
) -> Result<Box<dyn Iterator<Item = Result<Record, JournalError>> + 'a>, JournalError> {
    let records: Box<dyn Iterator<Item = _>> = match &filter.tenant {
        None => Box::new(journal.records()),
        Some(name) => {
            let uids = journal.find_uids(name)?;
            Box::new(uids.into_iter().flat_map(|uid| journal.history(&uid)))
        }
    };
    Ok(Box::new(records.filter(move |item| {
        item.as_ref().map_or(true, |record| filter.matches(record))
    })))
}

/// One export line: the record as JSON and a newline.
pub fn export_line(record: &Record) -> String {
    let mut line = serde_json::to_string(record).unwrap_or_else(|e| {
        // Serializing plain data cannot fail; keep the stream line-per-record anyway.
        serde_json::json!({ "error": e.to_string() }).to_string()
    });
    line.push('\n');
    line
}

/// Verifies every chain and names the first bad record's tenant.
pub fn verify_journal(
    journal: &Journal,
    on_progress: impl FnMut(&VerifyProgress),
) -> Result<VerifyOutcome, JournalError> {
    let report = journal.verify_with(&crate::journal::VerifyScope::All, on_progress)?;
    let first_problem = match report.first_problem {
        None => None,
        Some(problem) => Some(BadRecord {
            tenant: tenant_of(journal, &problem.uid),
            problem: problem.kind.to_string(),
            uid: problem.uid,
            seq: problem.seq,
        }),
    };
    Ok(VerifyOutcome {
        chains: report.chains,
        records: report.records,
        problems: report.problems,
        first_problem,
    })
}

/// The tenant name of chain `uid`, from its summary or else its first readable record.
fn tenant_of(journal: &Journal, uid: &str) -> Option<String> {
    if let Ok(Some(summary)) = journal.tenant(uid) {
        return Some(summary.tenant);
    }
    journal
        .history(uid)
        .find_map(Result::ok)
        .map(|record| record.tenant)
}

pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The input as one cell: trigger, generation, readiness and reason.
pub fn describe_input(input: &Input) -> String {
    let mut parts = vec![format!("gen={}", input.generation)];
    if let Some(redis) = input.redis {
        parts.push(format!("redis={}/{}", redis.ready, redis.desired));
    }
    if let Some(server) = input.server {
        parts.push(format!("server={}/{}", server.ready, server.desired));
    }
    if let Some(reason) = &input.reason {
        parts.push(format!("reason={reason}"));
    }
    format!("{}({})", input.trigger, parts.join(","))
}

/// `journal list`.
pub fn write_list(out: &mut impl Write, tenants: &[TenantSummary]) -> io::Result<()> {
    let rows = tenants.iter().map(|t| {
        vec![
            t.tenant.clone(),
            t.uid.clone(),
            t.last_phase.to_string(),
            t.last_seq.to_string(),
            format_time(&t.last_time),
            if t.deleted { "yes" } else { "no" }.to_owned(),
        ]
    });
    let header = [
        "NAME",
        "UID",
        "LAST PHASE",
        "LAST SEQ",
        "LAST TIME",
        "DELETED",
    ];
    write_table(out, &header, rows.collect())
}

/// `journal show`: one row per transition, the message last so it may hold spaces.
pub fn write_history(out: &mut impl Write, history: &History) -> io::Result<()> {
    writeln!(out, "tenant {} uid {}", history.tenant, history.uid)?;
    if let Some(checkpoint) = &history.compacted {
        writeln!(
            out,
            "records 1-{} (from {}, up to phase {} at {}) were compacted by retention on {}; the chain continues from checkpoint hash {}",
            checkpoint.through,
            format_time(&checkpoint.first_time),
            checkpoint.phase,
            format_time(&checkpoint.time),
            format_time(&checkpoint.compacted_at),
            checkpoint.hash,
        )?;
    }
    let rows = history.records.iter().map(|r| {
        vec![
            r.seq.to_string(),
            format_time(&r.time),
            format!("{} -> {}", r.from, r.to),
            describe_input(&r.input),
            r.message.clone(),
        ]
    });
    write_table(
        out,
        &["SEQ", "TIME", "FROM -> TO", "INPUT", "MESSAGE"],
        rows.collect(),
    )?;
    if !history.other_uids.is_empty() {
        writeln!(
            out,
            "other chains of {} (show them with --uid): {}",
            history.tenant,
            history.other_uids.join(", ")
        )?;
    }
    Ok(())
}

/// `journal verify`'s summary line.
pub fn write_verify(out: &mut impl Write, outcome: &VerifyOutcome) -> io::Result<()> {
    match &outcome.first_problem {
        None => writeln!(
            out,
            "journal intact: {} chains, {} records",
            outcome.chains, outcome.records
        ),
        Some(first) => writeln!(
            out,
            "journal damaged: {} problem(s) in {} chains, {} records; first bad record: {first}",
            outcome.problems, outcome.chains, outcome.records
        ),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn write_table(
    out: &mut impl Write,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
