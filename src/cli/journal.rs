//! `neurallog-operator journal list|show|export|verify`, and the source flags shared with
//! `replay` and the kubectl plugin.

use super::progress::Progress;
use crate::journal::client::{ServerTls, ServiceRef, Source};
use crate::journal::view::{ExportFilter, parse_time, write_history, write_list, write_verify};
use anyhow::bail;
use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::PathBuf;

/// Where the operator keeps its journal by default (see `run --journal`).
const DEFAULT_JOURNAL: &str = "/var/lib/neurallog-operator/journal";

/// Where to read the journal from: the directory (default), the operator's HTTP API, or
/// that API through the Kubernetes API server.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// Journal directory, opened read-only; only while no operator process holds it.
    /// Default: /var/lib/neurallog-operator/journal.
    #[arg(long, global = true, conflicts_with_all = ["server", "kube_service"])]
    pub journal: Option<PathBuf>,
    /// Base URL of a running operator's HTTP API (its --metrics-addr), like
    /// http://127.0.0.1:8080, or https://... when its endpoints are secure.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        conflicts_with = "kube_service"
    )]
    pub server: Option<String>,
    /// The operator's Service, reached through the Kubernetes API server's service proxy
    /// (needs RBAC `services/proxy`), like neurallog-system/https:neurallog-operator:8080.
    #[arg(long, global = true, value_name = "NAMESPACE/[https:]NAME[:PORT]")]
    pub kube_service: Option<ServiceRef>,
    /// Kubeconfig for --kube-service; $KUBECONFIG or in-cluster when unset.
    #[arg(long, global = true, requires = "kube_service")]
    pub kubeconfig: Option<PathBuf>,
    /// File holding the bearer token the operator checks (its user needs the ClusterRole
    /// neurallog-journal-auditor). Default with --kube-service: the kubeconfig user's
    /// token, when it has one.
    #[arg(long, global = true, conflicts_with = "journal")]
    pub token_file: Option<PathBuf>,
    /// PEM certificates to trust for an https --server.
    #[arg(long, global = true, requires = "server")]
    pub certificate_authority: Option<PathBuf>,
    /// Accept any certificate of an https --server (a self-signed one the operator made at
    /// start), as for a loopback or port-forwarded operator.
    #[arg(long, global = true, requires = "server")]
    pub insecure_skip_tls_verify: bool,
}

impl SourceArgs {
    pub async fn open(&self) -> anyhow::Result<Source> {
        let token = match &self.token_file {
            Some(file) => Some(read_token(file)?),
            None => None,
        };
        if let Some(url) = &self.server {
            let tls = ServerTls {
                ca_file: self.certificate_authority.clone(),
                insecure_skip_verify: self.insecure_skip_tls_verify,
            };
            return Source::server_with(url, token, &tls);
        }
        if let Some(service) = &self.kube_service {
            let config = super::run::kube_config(self.kubeconfig.as_ref()).await?;
            let token = match token {
                Some(token) => Some(token),
                None => kubeconfig_token(&config)?,
            };
            let client = super::api_client::client(config)?;
            return Ok(Source::kube(client, service, token));
        }
        let path = self
            .journal
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_JOURNAL));
        Source::file(&path)
    }
}

/// A token file's content, trimmed.
fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", file.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", file.display());
    }
    Ok(token.to_owned())
}

/// The kubeconfig user's bearer token (`token`, else `tokenFile`), if it has one.
fn kubeconfig_token(config: &kube::Config) -> anyhow::Result<Option<String>> {
    use secrecy::ExposeSecret as _;
    if let Some(token) = &config.auth_info.token {
        return Ok(Some(token.expose_secret().to_owned()));
    }
    match &config.auth_info.token_file {
        Some(file) => Ok(Some(read_token(std::path::Path::new(file))?)),
        None => Ok(None),
    }
}

#[derive(clap::Args)]
pub struct JournalArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(subcommand)]
    command: JournalCommand,
}

#[derive(clap::Subcommand)]
enum JournalCommand {
    /// Every tenant chain: name, uid, last phase, last seq, last time, deleted or not.
    List,
    /// A tenant's transitions (its newest chain unless --uid).
    Show {
        tenant: String,
        /// One chain of the tenant (a Tenant deleted and re-created has several).
        #[arg(long)]
        uid: Option<String>,
    },
    /// Every record as one JSON object per line (schema: docs/journal-export.md).
    Export {
        /// Only this tenant's records (every chain of it).
        #[arg(long)]
        tenant: Option<String>,
        /// Only records at or after this RFC 3339 time.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Checks every chain (hashes, links, gapless seqs, monotonic times, summaries); exits
    /// non-zero naming the first bad record.
    Verify,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
}

impl JournalArgs {
    pub async fn execute(self) -> anyhow::Result<()> {
        let source = self.source.open().await?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let result = match self.command {
            JournalCommand::List => list(&source, &mut out).await,
            JournalCommand::Show { tenant, uid } => {
                show(&source, &tenant, uid.as_deref(), &mut out).await
            }
            JournalCommand::Export {
                tenant,
                since,
                format: ExportFormat::Jsonl,
            } => export(&source, &ExportFilter { tenant, since }, &mut out).await,
            JournalCommand::Verify => verify(&source, &mut out).await,
        };
        ignore_closed_pipe(result.and_then(|()| Ok(out.flush()?)))
    }
}

/// `| head` closing stdout early is not an error.
pub fn ignore_closed_pipe(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

pub async fn list(source: &Source, out: &mut impl Write) -> anyhow::Result<()> {
    write_list(out, &source.tenants().await?)?;
    Ok(())
}

pub async fn show(
    source: &Source,
    tenant: &str,
    uid: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    write_history(out, &source.history(tenant, uid).await?)?;
    Ok(())
}

pub async fn export(
    source: &Source,
    filter: &ExportFilter,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut progress = Progress::on_terminal();
    source
        .export(filter, out, |lines| {
            progress.show(|| format!("exported {lines} records"))
        })
        .await?;
    progress.finish();
    Ok(())
}

pub async fn verify(source: &Source, out: &mut impl Write) -> anyhow::Result<()> {
    let mut progress = Progress::on_terminal();
    let outcome = source
        .verify(|p| {
            progress.show(|| {
                format!(
                    "verified {}/{} records, {} chains",
                    p.records, p.expected_records, p.chains
                )
            })
        })
        .await?;
    progress.finish();
    write_verify(out, &outcome)?;
    out.flush()?;
    match outcome.first_problem {
        None => Ok(()),
        Some(first) => bail!("the journal is damaged; first bad record: {first}"),
    }
}

#[cfg(test)]
mod tests;
