//! The `edgemeter` binary: parses the command line, sets up logging (to
//! stderr, or to the journal under systemd), and runs one subcommand on a
//! tokio runtime. Everything else is in the library (`src/lib.rs`).

use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// How long the runtime waits for blocking tasks (a metadata fetch, say)
/// when the command is over, before the process exits anyway.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    // The command line over the environment over the config file.
    let cli = edgemeter::settings::load_or_exit();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|error| {
        eprintln!(
            "edgemeter: bad --log filter `{}` ({error}); using `info`",
            cli.log
        );
        EnvFilter::new("info")
    });
    // The journal under systemd, stderr otherwise (see `log_output`).
    edgemeter::log_output::init(filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("edgemeter: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(edgemeter::commands::run(cli.command));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edgemeter: error: {error}");
            ExitCode::FAILURE
        }
    }
}
