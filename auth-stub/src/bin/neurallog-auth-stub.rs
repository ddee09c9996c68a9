//! A stand-in NeuralLog Auth service for local runs: the tenant API from memory, with fault
//! switches under `/_stub` (see the `neurallog_auth_stub` library). Logs to stderr; stops on
//! SIGTERM or Ctrl-C.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Parser;
use neurallog_auth_stub::{AuthStub, AuthStubOptions};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "neurallog-auth-stub", version, about)]
struct Args {
    /// Address of the tenant API (and of the `/_stub` control routes).
    #[arg(long, env = "AUTH_STUB_LISTEN", default_value = "127.0.0.1:3040")]
    listen: SocketAddr,

    /// Optional address serving only the `/_stub` control routes; it stays up while the API
    /// is `down`, so the API can be brought back over HTTP.
    #[arg(long, env = "AUTH_STUB_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,

    /// File holding the bearer token the API requires; without it every call is accepted.
    #[arg(long, env = "AUTH_STUB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            tracing::error!("{problem:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    warn_if_not_loopback(args.listen);
    if let Some(admin) = args.admin_listen {
        warn_if_not_loopback(admin);
    }
    let token = args.token_file.as_deref().map(required_token).transpose()?;
    let stub = AuthStub::start_with(AuthStubOptions {
        addr: args.listen,
        token,
        admin_addr: args.admin_listen,
    })
    .await
    .context("cannot start the auth stub")?;
    tracing::info!(url = %stub.url(), admin = ?stub.admin_addr(), "auth stub ready");
    wait_for_termination().await?;
    stub.shutdown().await;
    Ok(())
}

/// The bearer token in `path`, without surrounding whitespace; an empty file is a mistake.
fn required_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    match text.trim() {
        "" => bail!("the token file {} holds no token", path.display()),
        token => Ok(token.to_owned()),
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn warn_if_not_loopback(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the auth stub is a test server; it is listening beyond loopback");
    }
}

#[cfg(unix)]
async fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received, stopping"),
        interrupted = tokio::signal::ctrl_c() => {
            interrupted.context("cannot watch for Ctrl-C")?;
            tracing::info!("Ctrl-C received, stopping");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_termination() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch for Ctrl-C")?;
    tracing::info!("Ctrl-C received, stopping");
    Ok(())
}
