//! `neurallog-operator`: run the operator, print its CRD, inspect and replay the journal.

use clap::Parser;

/// jemalloc: fewer, less fragmented arenas than glibc malloc under the watch caches' churn.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    neurallog_operator::cli::Cli::parse().execute().await
}
