//! `edgemeter config check`: validates a config file and prints the
//! effective settings, secrets masked (see [`crate::settings::check`]).

use crate::cli::{ConfigAction, ConfigArgs};
use crate::command_error::CommandError;
use crate::settings::{self, SettingsError};

pub fn run(args: ConfigArgs) -> Result<(), CommandError> {
    match args.action {
        ConfigAction::Check(check) => {
            match settings::check(check.file.as_deref(), check.section.as_deref()) {
                Ok(report) => {
                    print!("{report}");
                    Ok(())
                }
                Err(SettingsError::Invalid(problems)) => Err(CommandError::config(format!(
                    "the config is not valid:\n  {}",
                    problems.join("\n  ")
                ))),
                Err(SettingsError::Clap(error)) => Err(CommandError::config(error.to_string())),
            }
        }
    }
}
