//! `neurallog-operator replay TENANT`: the tenant's journal through the current phase
//! machine, or (`--at`) its phase at a moment.

use super::journal::SourceArgs;
use crate::journal::client::{Source, chain_records};
use crate::journal::replay::{replay, write_at, write_replay};
use crate::journal::view::parse_time;
use anyhow::bail;
use chrono::{DateTime, Utc};
use std::io::Write;

#[derive(clap::Args)]
pub struct ReplayArgs {
    tenant: String,
    /// One chain of the tenant; its newest by default.
    #[arg(long)]
    uid: Option<String>,
    /// Replay up to and including this seq.
    #[arg(long, conflicts_with = "at")]
    to: Option<u64>,
    /// Print the phase and message in force at this RFC 3339 time instead.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
    #[command(flatten)]
    source: SourceArgs,
}

impl ReplayArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let source = self.source.open().await?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let result = run(
            &source,
            &self.tenant,
            self.uid.as_deref(),
            self.to,
            self.at,
            &mut out,
        )
        .await;
        super::journal::ignore_closed_pipe(result.and_then(|()| Ok(out.flush()?)))
    }
}

/// Replays (or with `at`, looks up) the chain; an error when the machine diverges.
pub async fn run(
    source: &Source,
    tenant: &str,
    uid: Option<&str>,
    to: Option<u64>,
    at: Option<DateTime<Utc>>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (history, records) = chain_records(source, tenant, uid).await?;
    writeln!(out, "tenant {} uid {}", history.tenant, history.uid)?;
    if let Some(at) = at {
        write_at(out, tenant, &records, at)?;
        return Ok(());
    }
    let replayed = replay(&records, to, neurallog_machines::step);
    write_replay(out, &replayed)?;
    out.flush()?;
    if let Some(step) = replayed.divergence() {
        bail!(
            "the current phase machine diverges from the journal of tenant {tenant} (uid {}) at seq {}",
            history.uid,
            step.seq
        );
    }
    Ok(())
}
