//! The command line of `neurallog-operator`.

mod api_client;
pub mod journal;
mod progress;
pub mod replay;
pub mod run;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "neurallog-operator",
    version,
    about = "The NeuralLog tenant operator"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<run::RunArgs>),
    /// Print the Tenant CustomResourceDefinition as YAML.
    Crd,
    /// Inspect the journal: list, show, export, verify.
    Journal(journal::JournalArgs),
    /// Feed a tenant's journaled inputs through the current phase machine.
    Replay(replay::ReplayArgs),
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crd => {
                print!("{}", crate::crd::crd_yaml()?);
                Ok(())
            }
            Command::Run(args) => run::run(*args).await,
            Command::Journal(args) => args.execute().await,
            Command::Replay(args) => args.execute().await,
        }
    }
}
