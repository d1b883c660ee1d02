//! `edgemeter-sim`: runs seeds of the simulation, replays one with its
//! trace, lists the planted bugs, shrinks a failing schedule, and measures
//! the simulator's speed.

use clap::{Args, Parser, Subcommand};
use edgemeter_env::Bug;
use indicatif::{ProgressBar, ProgressStyle};
use sim_tests::dataset::{default_data_dir, DataSet};
use sim_tests::faults::{DrawOptions, Scenario, Topology};
use sim_tests::runner::{run_many, run_one, SeedRun, Tracing};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, by its place in `mi_option_e`
/// (mimalloc.h of the v3 sources that libmimalloc-sys builds; the crate
/// names no constant for it). A test checks it reads the default that
/// `options.c` gives it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets how the simulator takes memory from the OS. A simulation frees and
/// takes back memory all the time, and its page faults were a sixth of a
/// full-data run's time, most of its system time:
/// - freed memory stays in the process. By default mimalloc returns it a
///   second after it is freed, and every return was paid again as faults.
///   The process keeps its peak instead, under 150 MB for the full data;
/// - no transparent huge pages: mimalloc asks for them, and each first
///   touch of one zeroes 2 MiB at once. With ordinary pages the system
///   time was lower and, above all, steadier (0.13-0.19 s against
///   0.17-0.40 s for the full data).
fn tune_memory() {
    // SAFETY: the option is a plain integer that mimalloc reads on each
    // purge decision; it is set once, before any worker thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // Applies to every later page fault of the process, including in
    // mappings mimalloc already advised as huge. A refusal (an old
    // kernel) only costs speed.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(
    name = "edgemeter-sim",
    about = "EdgeMeter's deterministic simulation harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs many seeds on all workers and prints a summary; exits 1 on any violation.
    Run {
        /// Seeds as START..END (END excluded).
        #[arg(long, default_value = "0..100", value_parser = parse_seeds)]
        seeds: Range<u64>,
        #[command(flatten)]
        shape: Shape,
        /// Worker threads, each running its own simulations.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Exit 1, naming them, if any fault kind, crash point or rare path
        /// of the coverage was reached by no seed.
        #[arg(long)]
        require_coverage: bool,
    },
    /// Re-runs one seed (or a schedule file) and prints its trace.
    Replay {
        #[arg(long, required_unless_present = "schedule")]
        seed: Option<u64>,
        /// A scenario file written by `shrink` or the shrinking test.
        #[arg(long)]
        schedule: Option<PathBuf>,
        #[command(flatten)]
        shape: Shape,
        /// Also write the trace as JSON lines to this file.
        #[arg(long)]
        trace_out: Option<PathBuf>,
        /// Print only the schedule, the summary and the findings.
        #[arg(long)]
        quiet: bool,
    },
    /// Lists the planted bugs that `--mutation` accepts.
    Mutations,
    /// Shrinks one failing seed's schedule to a minimal one and writes it.
    Shrink {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        shape: Shape,
        #[arg(long, default_value = "shrunk-schedule.json")]
        out: PathBuf,
    },
    /// Measures simulated seconds per wall second and seeds per minute.
    Bench {
        /// Seeds of the default shape to time for seeds per minute.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Simulated time per step for the full-data run.
        #[arg(long, default_value_t = sim_tests::bench::BENCH_TICK_MS)]
        tick_ms: u64,
        /// The household CSV directory.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

/// What each seed replays, and with what.
#[derive(Args, Clone)]
struct Shape {
    /// A planted bug to switch on (see `mutations`).
    #[arg(long)]
    mutation: Option<String>,
    #[arg(long, default_value_t = sim_tests::DEFAULT_HOUSEHOLDS)]
    households: usize,
    /// How much data each seed replays, e.g. 90s, 3m, 1h.
    #[arg(long, default_value = sim_tests::DEFAULT_DURATION, value_parser = parse_duration_ms)]
    duration: i64,
    /// Simulated time per step, in milliseconds.
    #[arg(long, default_value_t = sim_tests::DEFAULT_TICK_MS)]
    tick_ms: u64,
    /// Run without faults (a calm network, no crashes).
    #[arg(long)]
    no_faults: bool,
    /// Edges for every seed (1-3); with any of --edges, --nodes, --shards
    /// the topology is fixed (the others 1), else drawn per seed.
    #[arg(long)]
    edges: Option<usize>,
    /// Cloud nodes for every seed (1-3).
    #[arg(long)]
    nodes: Option<usize>,
    /// Cache shards for every seed (1-3).
    #[arg(long)]
    shards: Option<usize>,
    /// The household CSV directory.
    #[arg(long)]
    data: Option<PathBuf>,
}

fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text.split_once("..").ok_or("seeds are START..END")?;
    let start: u64 = start.parse().map_err(|e| format!("start: {e}"))?;
    let end: u64 = end.parse().map_err(|e| format!("end: {e}"))?;
    if end <= start {
        return Err("END must be above START".to_owned());
    }
    Ok(start..end)
}

fn parse_duration_ms(text: &str) -> Result<i64, String> {
    sim_tests::parse_duration_ms(text)
}

impl Shape {
    fn options(&self, data: &DataSet) -> Result<DrawOptions, String> {
        if let Some(name) = &self.mutation {
            if Bug::from_name(name).is_none() {
                return Err(format!(
                    "no planted bug named {name}; see `edgemeter-sim mutations`"
                ));
            }
        }
        Ok(DrawOptions {
            mutation: self.mutation.clone(),
            households: self.households,
            duration_ms: self.duration,
            tick_ms: self.tick_ms,
            edge_idle_flush_ms: sim_tests::DEFAULT_EDGE_IDLE_FLUSH_MS,
            households_available: data.households.len(),
            data_span_ms: data.span_ms,
            faults: !self.no_faults,
            topology: self.topology(),
        })
    }

    /// The fixed topology the flags ask for, if any.
    fn topology(&self) -> Option<Topology> {
        if self.edges.is_none() && self.nodes.is_none() && self.shards.is_none() {
            return None;
        }
        Some(Topology {
            edges: self.edges.unwrap_or(1),
            nodes: self.nodes.unwrap_or(1),
            shards: self.shards.unwrap_or(1),
        })
    }

    fn load(&self) -> Result<(DataSet, DrawOptions), String> {
        let dir = self.data.clone().unwrap_or_else(default_data_dir);
        let data = DataSet::load(&dir).map_err(|error| error.to_string())?;
        let options = self.options(&data)?;
        Ok((data, options))
    }

    /// The flags that reproduce this shape on a command line.
    fn flags(&self) -> String {
        let mut flags = String::new();
        if let Some(name) = &self.mutation {
            flags.push_str(&format!(" --mutation {name}"));
        }
        if self.households != sim_tests::DEFAULT_HOUSEHOLDS {
            flags.push_str(&format!(" --households {}", self.households));
        }
        if self.duration
            != sim_tests::parse_duration_ms(sim_tests::DEFAULT_DURATION).expect("valid")
        {
            flags.push_str(&format!(" --duration {}ms", self.duration));
        }
        if self.tick_ms != sim_tests::DEFAULT_TICK_MS {
            flags.push_str(&format!(" --tick-ms {}", self.tick_ms));
        }
        if self.no_faults {
            flags.push_str(" --no-faults");
        }
        if let Some(topology) = self.topology() {
            flags.push_str(&format!(
                " --edges {} --nodes {} --shards {}",
                topology.edges, topology.nodes, topology.shards
            ));
        }
        if let Some(dir) = &self.data {
            flags.push_str(&format!(" --data {}", dir.display()));
        }
        flags
    }
}

fn main() -> ExitCode {
    tune_memory();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run {
            seeds,
            shape,
            workers,
            require_coverage,
        } => run(seeds, &shape, workers, require_coverage),
        Command::Replay {
            seed,
            schedule,
            shape,
            trace_out,
            quiet,
        } => replay(seed, schedule, &shape, trace_out, quiet),
        Command::Mutations => {
            for bug in Bug::ALL {
                println!("{}", bug.name());
            }
            Ok(true)
        }
        Command::Shrink { seed, shape, out } => shrink(seed, &shape, out),
        Command::Bench {
            seeds,
            tick_ms,
            data,
        } => bench(seeds, tick_ms, data),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("edgemeter-sim: {message}");
            ExitCode::from(2)
        }
    }
}

fn replay_command(seed: u64, shape: &Shape) -> String {
    format!(
        "cargo run --profile sim -p sim-tests --bin edgemeter-sim -- replay --seed {seed}{}",
        shape.flags()
    )
}

fn run(
    seeds: Range<u64>,
    shape: &Shape,
    workers: usize,
    require_coverage: bool,
) -> Result<bool, String> {
    let (data, options) = shape.load()?;
    let bar = ProgressBar::new(seeds.end - seeds.start);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds {elapsed_precise} eta {eta} {msg}",
        )
        .expect("a valid template"),
    );
    let failures = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    let results = run_many(seeds.clone(), &options, &data, workers, &|run: &SeedRun| {
        if run.failed() {
            let failed = failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            bar.set_message(format!("{failed} failing"));
        }
        bar.inc(1);
    });
    bar.finish();
    print_summary(&results, shape, started.elapsed().as_secs_f64());
    let unreached = print_coverage(&results);
    let mut passed = results.iter().all(|run| !run.failed());
    if require_coverage && !unreached.is_empty() {
        println!(
            "coverage required, never reached in {} seeds: {}",
            results.len(),
            unreached.join(", ")
        );
        passed = false;
    }
    Ok(passed)
}

/// Prints how many seeds reached each fault kind, crash point and rare
/// path (`sim_tests::coverage`), on one line, and returns those no seed
/// reached.
fn print_coverage(results: &[SeedRun]) -> Vec<String> {
    let rows = sim_tests::coverage::tally(
        results
            .iter()
            .filter_map(|run| run.summary.as_ref())
            .map(|summary| &summary.coverage),
    );
    let line: Vec<String> = rows
        .iter()
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    println!("  coverage (seeds): {}", line.join(" "));
    sim_tests::coverage::unreached(&rows)
}

fn print_summary(results: &[SeedRun], shape: &Shape, wall_s: f64) {
    let mut totals = std::collections::BTreeMap::<String, usize>::new();
    let mut sim_ms = 0u64;
    for run in results {
        for (kind, (count, _)) in &run.findings.by_kind {
            *totals.entry(kind.name().to_owned()).or_default() += count;
        }
        sim_ms += run.summary.as_ref().map_or(0, |summary| summary.sim_ms);
    }
    let failing: Vec<&SeedRun> = results.iter().filter(|run| run.failed()).collect();
    println!(
        "{} seeds, {} failing, {:.1} s wall, {:.0} simulated s ({:.0} simulated s per wall s)",
        results.len(),
        failing.len(),
        wall_s,
        sim_ms as f64 / 1000.0,
        sim_ms as f64 / 1000.0 / wall_s.max(1e-9)
    );
    print_scale_out(results);
    print_slowest_convergence(results);
    for (kind, count) in &totals {
        println!("  {kind}: {count}");
    }
    for run in failing {
        let kinds: Vec<String> = run
            .findings
            .by_kind
            .keys()
            .map(|kind| kind.name().to_owned())
            .collect();
        let first = run
            .findings
            .by_kind
            .values()
            .next()
            .and_then(|(_, examples)| examples.first());
        println!(
            "seed {} failed ({}): {}",
            run.scenario.seed,
            kinds.join(", "),
            first.map_or("", |s| s)
        );
        println!("  replay: {}", replay_command(run.scenario.seed, shape));
    }
}

/// The seed that converged slowest after its heal, against the liveness
/// bound (`world::heal_bound`): how much room the bound has left.
fn print_slowest_convergence(results: &[SeedRun]) {
    let slowest = results
        .iter()
        .filter_map(|run| run.summary.as_ref())
        .filter_map(|summary| Some((summary.converged_after_heal_ms?, summary.seed)))
        .max();
    if let Some((after_ms, seed)) = slowest {
        let bound = sim_tests::world::heal_bound(edgemeter_edge::DEFAULT_IDLE_FLUSH);
        println!(
            "  slowest convergence after the heal: {:.1} s (seed {seed}), bound {} s",
            after_ms as f64 / 1000.0,
            bound.as_secs()
        );
    }
}

/// How many seeds ran the scale-out shapes and faults, so that a sweep
/// says what it covered (a seed counts once per line).
fn print_scale_out(results: &[SeedRun]) {
    let count = |keep: &dyn Fn(&sim_tests::world::Summary) -> bool| {
        results
            .iter()
            .filter_map(|run| run.summary.as_ref())
            .filter(|summary| keep(summary))
            .count()
    };
    println!(
        "  seeds with several edges: {}, several cloud nodes: {}, several cache shards: {}",
        count(&|s| s.edges > 1),
        count(&|s| s.nodes > 1),
        count(&|s| s.shards > 1)
    );
    println!(
        "  seeds with a cloud node crashed with requests in flight: {}, with a shard loss: {}",
        count(&|s| s.inflight_crashes > 0),
        count(&|s| s.shard_losses > 0)
    );
}

fn replay(
    seed: Option<u64>,
    schedule: Option<PathBuf>,
    shape: &Shape,
    trace_out: Option<PathBuf>,
    quiet: bool,
) -> Result<bool, String> {
    let (data, options) = shape.load()?;
    let scenario = match schedule {
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Scenario::draw(seed.expect("clap requires a seed"), &options),
    };
    println!(
        "schedule:\n{}",
        serde_json::to_string_pretty(&scenario).expect("serializes")
    );
    let tracing = match &trace_out {
        Some(path) => Tracing::Json(path),
        None => Tracing::Memory,
    };
    let run = run_one(&scenario, &data, tracing);
    if !quiet {
        print!("{}", run.trace);
    }
    if let Some(summary) = &run.summary {
        println!(
            "summary: {}",
            serde_json::to_string(summary).expect("serializes")
        );
    }
    for (kind, (count, examples)) in &run.findings.by_kind {
        println!("{kind}: {count}");
        for example in examples {
            println!("  {example}");
        }
    }
    if run.findings.is_clean() {
        println!("no violation");
    }
    Ok(!run.failed())
}

fn shrink(seed: u64, shape: &Shape, out: PathBuf) -> Result<bool, String> {
    let (data, options) = shape.load()?;
    let scenario = Scenario::draw(seed, &options);
    let shrunk = sim_tests::shrink::shrink_greedy(&scenario, &data, |_| {})
        .ok_or_else(|| format!("seed {seed} passes: nothing to shrink"))?;
    let text = serde_json::to_string_pretty(&shrunk).expect("serializes");
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "shrunk {} faults to {}; written to {}\nreplay: cargo run --profile sim -p sim-tests --bin edgemeter-sim -- replay --schedule {}",
        scenario.faults.len(),
        shrunk.faults.len(),
        out.display(),
        out.display()
    );
    Ok(true)
}

fn bench(seeds: u64, tick_ms: u64, data_dir: Option<PathBuf>) -> Result<bool, String> {
    let dir = data_dir.unwrap_or_else(default_data_dir);
    let data = DataSet::load(&dir).map_err(|error| error.to_string())?;
    let report = sim_tests::bench::measure(&data, seeds, tick_ms);
    println!("{report}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the option number set in `tune_memory` is the purge
    /// delay. Its neighbours in `mi_option_e` default to 1 (eager commit
    /// delay) and 0 (NUMA nodes); the purge delay to 1000 (ms, in
    /// `options.c`; the header's comment still says 10).
    #[test]
    fn the_option_set_is_the_purge_delay() {
        // SAFETY: reads a plain integer option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "(unless MIMALLOC_PURGE_DELAY is set)");
    }
}
