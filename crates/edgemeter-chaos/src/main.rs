//! The `edgemeter-chaos` binary: `proxy` (a fault-injecting TCP proxy) and
//! `check` (the simulation's checker over the real edge database and
//! Redis). `ci/chaos.sh` drives both.

use clap::{Parser, Subcommand};
use edgemeter_chaos::evidence::{gather, Sources};
use edgemeter_chaos::report::{findings, passed, verdict_line};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "edgemeter-chaos",
    about = "Fault injection and the end check for ci/chaos.sh."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Forward one TCP port; obey `cut`, `stall MS`, `reset`, `heal` lines on the control socket.
    Proxy {
        /// Where the clients connect (the edge, or every Kafka client).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Where the server listens (the cloud, or the broker).
        #[arg(long, value_name = "ADDR")]
        target: SocketAddr,
        /// The control socket: one command per line, one reply line each.
        #[arg(long, value_name = "ADDR")]
        control: SocketAddr,
    },
    /// Print how many 5-second windows with readings the replay holds: the
    /// tuples a converged edge has acknowledged.
    Windows {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long, value_name = "D", value_parser = parse_duration_ms)]
        duration: i64,
    },
    /// Check the real run: lost, unexpected, duplicated, changed, with no
    /// cache loss excused and the cloud's totals compared with its tuples.
    /// Exits 0 only when all four are 0.
    Check {
        /// The household CSVs the run replayed.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The `--duration` the households replayed, e.g. `90s` or `3m`.
        #[arg(long, value_name = "D", value_parser = parse_duration_ms)]
        duration: i64,
        /// The edge's SQLite database.
        #[arg(long, value_name = "PATH")]
        db: PathBuf,
        /// The cloud's Redis.
        #[arg(long, value_name = "URL")]
        redis: String,
        #[arg(long, value_name = "ID", default_value = "edge-1")]
        edge_id: String,
        /// Fault cycles the run went through; only printed.
        #[arg(long, value_name = "N", default_value_t = 0)]
        cycles: u32,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Proxy {
            listen,
            target,
            control,
        } => run_proxy(listen, target, control),
        Command::Windows { data, duration } => {
            match edgemeter_data::load_dir(&data, Some(duration)) {
                Ok((households, _)) => {
                    println!("{}", edgemeter_checker::oracle_windows(&households).len());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("edgemeter-chaos windows: {}: {error}", data.display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            data,
            duration,
            db,
            redis,
            edge_id,
            cycles,
        } => {
            let sources = Sources {
                data_dir: &data,
                duration_ms: duration,
                db: &db,
                redis_url: &redis,
                edge_id: &edge_id,
            };
            run_check(&sources, cycles)
        }
    }
}

fn run_proxy(listen: SocketAddr, target: SocketAddr, control: SocketAddr) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("edgemeter-chaos: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let bound = async {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let control = tokio::net::TcpListener::bind(control).await?;
            Ok::<_, std::io::Error>((listener, control))
        };
        match bound.await {
            Ok((listener, control)) => {
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                edgemeter_chaos::proxy::run(listener, target, control, shutdown).await;
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("edgemeter-chaos proxy: cannot bind {listen} or {control}: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn run_check(sources: &Sources<'_>, cycles: u32) -> ExitCode {
    let gathered = match gather(sources) {
        Ok(gathered) => gathered,
        Err(error) => {
            eprintln!("edgemeter-chaos check: {error}");
            return ExitCode::FAILURE;
        }
    };
    let findings = findings(&gathered, sources.edge_id);
    for (kind, (count, examples)) in &findings.by_kind {
        eprintln!("{kind}: {count}");
        for example in examples {
            eprintln!("  {example}");
        }
    }
    eprintln!(
        "checked {} oracle windows, {} edge tuples, {} cloud tuples, totals of {} states and {} edges",
        gathered.oracle.len(),
        gathered.edge_rows.len(),
        gathered.cloud.len(),
        gathered.totals.states.len(),
        gathered.totals.edges.len()
    );
    println!(
        "{}",
        verdict_line(cycles, gathered.edge_rows.len(), &findings)
    );
    if passed(&findings) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `90s`, `3m`, `1h`, `250ms` (humantime's forms) as milliseconds, above 0.
fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))?;
    i64::try_from(duration.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("duration {text:?} out of range"))
}
