//! `kubectl tenant`: the journal of a Tenant through the Kubernetes API server, as a
//! kubectl plugin (install this binary on $PATH as `kubectl-tenant`).
//!
//! It reads the operator's journal API through the API server's service proxy: the
//! kubeconfig's user needs `get` on `services/proxy` of the operator's Service (the Role
//! neurallog-journal-reader), and a bearer token (the kubeconfig's, or --token-file) whose
//! user the operator lets read `/journal/*` (the ClusterRole neurallog-journal-auditor).
//! The API server does not pass the caller's credentials on to a proxied Service, so the
//! token travels in a header of its own (see `neurallog_operator::http::access`).

use clap::{Parser, Subcommand};
use neurallog_operator::cli::journal::{SourceArgs, export, ignore_closed_pipe, show};
use neurallog_operator::cli::replay;
use neurallog_operator::journal::client::{DEFAULT_SERVICE, ServiceRef};
use neurallog_operator::journal::view::{ExportFilter, parse_time};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "kubectl tenant",
    bin_name = "kubectl tenant",
    version,
    about = "Read a NeuralLog Tenant's journal through the Kubernetes API server"
)]
struct Cli {
    /// The operator's Service (the journal API is served on its https port).
    #[arg(long, global = true, value_name = "NAMESPACE/[https:]NAME[:PORT]", default_value = DEFAULT_SERVICE)]
    service: ServiceRef,
    /// Kubeconfig; $KUBECONFIG or ~/.kube/config when unset.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Read a reachable operator directly instead (its HTTP base URL).
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// File holding the bearer token the operator checks (a user with the ClusterRole
    /// neurallog-journal-auditor); default: the kubeconfig user's token, if any. A
    /// kubeconfig that logs in with a client certificate has none: use e.g.
    /// `kubectl create token` of a ServiceAccount bound to the role.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Accept any certificate of an https --server (a self-signed one).
    #[arg(long, global = true, requires = "server")]
    insecure_skip_tls_verify: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every journal record of the Tenant (all its chains) as JSON Lines.
    Journal {
        name: String,
        /// Only records at or after this RFC 3339 time.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// The Tenant's transitions as a table (its newest chain unless --uid).
    History {
        name: String,
        #[arg(long)]
        uid: Option<String>,
    },
    /// Replays the Tenant's journal through this build's phase machine; exits non-zero at
    /// the first divergence.
    Replay {
        name: String,
        #[arg(long)]
        uid: Option<String>,
        /// Replay up to and including this seq.
        #[arg(long, conflicts_with = "at")]
        to: Option<u64>,
        /// Print the phase in force at this RFC 3339 time instead.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        at: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let source_args = SourceArgs {
        journal: None,
        kube_service: cli.server.is_none().then_some(cli.service),
        kubeconfig: cli.kubeconfig,
        server: cli.server,
        token_file: cli.token_file,
        certificate_authority: None,
        insecure_skip_tls_verify: cli.insecure_skip_tls_verify,
    };
    let source = source_args.open().await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = match cli.command {
        Command::Journal { name, since } => {
            let filter = ExportFilter {
                tenant: Some(name),
                since,
            };
            export(&source, &filter, &mut out).await
        }
        Command::History { name, uid } => show(&source, &name, uid.as_deref(), &mut out).await,
        Command::Replay { name, uid, to, at } => {
            replay::run(&source, &name, uid.as_deref(), to, at, &mut out).await
        }
    };
    ignore_closed_pipe(result.and_then(|()| Ok(out.flush()?)))
}
