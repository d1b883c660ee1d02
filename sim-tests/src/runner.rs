//! Running seeds: one seed with its trace captured ([`run_one`]), and many
//! seeds on several cores ([`run_many`]), each worker a plain std thread
//! with its own simulation, taking the next seed from a shared counter.
//! Nothing inside a simulation touches another thread; threads only run
//! independent seeds side by side.

use crate::checker::Findings;
use crate::dataset::DataSet;
use crate::faults::{DrawOptions, Scenario};
use crate::panics;
use crate::trace::{self, TraceBuffer};
use crate::world::{Summary, World};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The most worker threads `run` starts. The project's machines have two
/// cores; more threads than cores only slows each seed.
pub const WORKERS_MAX: usize = 64;

/// One finished seed.
#[derive(Debug, Clone)]
pub struct SeedRun {
    pub scenario: Scenario,
    pub summary: Option<Summary>,
    pub findings: Findings,
    pub panics: Vec<String>,
    pub trace: String,
}

impl SeedRun {
    pub fn failed(&self) -> bool {
        !self.findings.is_clean() || !self.panics.is_empty() || self.summary.is_none()
    }
}

/// Whether a run keeps its trace. Logging never changes what a run does,
/// so a seed run without its trace and replayed with it behaves the same;
/// `run` keeps none (formatting is a large share of a seed's cost) and
/// prints the command that replays a failing seed with its trace.
#[derive(Debug, Clone, Copy)]
pub enum Tracing<'a> {
    Off,
    Memory,
    /// In memory, and as JSON lines in this file.
    Json(&'a Path),
}

/// Runs one scenario, keeping its trace as `tracing` says.
pub fn run_one(scenario: &Scenario, data: &DataSet, tracing: Tracing<'_>) -> SeedRun {
    let buffer = TraceBuffer::default();
    let dispatch = match tracing {
        Tracing::Off => tracing::Dispatch::none(),
        Tracing::Memory => trace::dispatch(&buffer, None).expect("an in-memory trace"),
        Tracing::Json(path) => {
            trace::dispatch(&buffer, Some(path)).expect("the JSON trace file can be created")
        }
    };
    let (result, panics) = tracing::dispatcher::with_default(&dispatch, || {
        panics::capture(|| World::new(scenario, data).run())
    });
    let (summary, mut findings) = match result {
        Some((summary, findings)) => (Some(summary), findings),
        None => (None, Findings::default()),
    };
    for message in &panics {
        findings.add(crate::checker::Kind::Crashed, || {
            format!("panic: {message}")
        });
    }
    SeedRun {
        scenario: scenario.clone(),
        summary,
        findings,
        panics,
        trace: buffer.text(),
    }
}

/// Runs every seed of `seeds` on `workers` threads; calls `progress` after
/// each seed (from the worker's thread). Results come back in seed order.
pub fn run_many(
    seeds: Range<u64>,
    options: &DrawOptions,
    data: &DataSet,
    workers: usize,
    progress: &(dyn Fn(&SeedRun) + Sync),
) -> Vec<SeedRun> {
    let workers = workers.clamp(1, WORKERS_MAX);
    let next = AtomicU64::new(seeds.start);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let scenario = Scenario::draw(seed, options);
                let run = run_one(&scenario, data, Tracing::Off);
                progress(&run);
                results.lock().expect("results lock").push(run);
            });
        }
    });
    let mut results = results.into_inner().expect("results lock");
    results.sort_by_key(|run| run.scenario.seed);
    results
}
