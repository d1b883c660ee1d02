//! One module per subcommand; each `run` wires the real IO to the logic
//! crates and returns when its work is done or the shutdown fires.

pub mod cloud;
pub mod config;
pub mod demo;
pub mod edge;
pub mod households;
pub mod keygen;
pub mod status;

use crate::cli::Command;
use crate::command_error::CommandError;
use crate::shutdown;

/// Runs one subcommand until it finishes or ctrl-c / SIGTERM.
pub async fn run(command: Command) -> Result<(), CommandError> {
    let (trigger, shutdown) = shutdown::channel();
    trigger.fire_on_signals();
    match command {
        Command::Households(args) => households::run(args, shutdown).await,
        Command::Edge(args) => edge::run(args, shutdown).await,
        Command::Cloud(args) => cloud::run(args, shutdown).await,
        Command::Demo(args) => demo::run(args, shutdown).await,
        Command::Status(args) => status::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Config(args) => config::run(args),
    }
}
