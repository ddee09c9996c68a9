//! The command line of `neurallog-operator`.

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
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crd => {
                print!("{}", crate::crd::crd_yaml()?);
                Ok(())
            }
            Command::Run(args) => run::run(*args).await,
        }
    }
}
