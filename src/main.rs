//! `neurallog-operator`: run the operator, print its CRD, inspect and replay the journal.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    neurallog_operator::cli::Cli::parse().execute().await
}
