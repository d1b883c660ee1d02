//! The speed figures: simulated seconds per wall second for the full data
//! (50 households × 1 hour, with faults), and seeds per minute at the
//! default per-seed shape on two workers. Measured, never asserted.

use crate::dataset::DataSet;
use crate::faults::{DrawOptions, Scenario};
use crate::runner::{run_many, run_one, Tracing};
use std::fmt;
use std::time::Instant;

/// The seed the full-data run uses (any seed with faults on would do).
pub const BENCH_SEED: u64 = 1;

/// The full-data run's step. Each network hop takes at least one step;
/// at 100 ms a round trip is 200 ms, still well inside every timeout of the
/// edge (heartbeat 1 s, bus call 0.8 s, request 5 s), and an hour takes
/// ten times fewer steps than at the 10 ms the seeds use (each step ticks
/// all five hosts, about 2.5 µs each, whether they have work or not).
pub const BENCH_TICK_MS: u64 = 100;

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub full_households: usize,
    pub full_tick_ms: u64,
    pub full_sim_s: f64,
    pub full_wall_s: f64,
    pub full_faults: usize,
    pub full_clean: bool,
    pub seeds: u64,
    pub seeds_wall_s: f64,
    pub seeds_failing: usize,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "full data: {} households, {:.0} simulated s with {} faults ({} ms steps) in {:.2} wall s: {:.0} simulated s per wall s ({})",
            self.full_households,
            self.full_sim_s,
            self.full_faults,
            self.full_tick_ms,
            self.full_wall_s,
            self.full_sim_s / self.full_wall_s.max(1e-9),
            if self.full_clean { "no violation" } else { "VIOLATIONS" }
        )?;
        write!(
            f,
            "default shape: {} seeds in {:.1} wall s on 2 workers: {:.0} seeds per minute ({} failing)",
            self.seeds,
            self.seeds_wall_s,
            self.seeds as f64 * 60.0 / self.seeds_wall_s.max(1e-9),
            self.seeds_failing
        )
    }
}

pub fn measure(data: &DataSet, seeds: u64, tick_ms: u64) -> BenchReport {
    let full = DrawOptions {
        mutation: None,
        households: data.households.len(),
        duration_ms: 3_600_000,
        tick_ms,
        edge_idle_flush_ms: crate::DEFAULT_EDGE_IDLE_FLUSH_MS,
        households_available: data.households.len(),
        data_span_ms: data.span_ms,
        faults: true,
        topology: None,
    };
    let scenario = Scenario::draw(BENCH_SEED, &full);
    let started = Instant::now();
    let run = run_one(&scenario, data, Tracing::Off);
    let full_wall_s = started.elapsed().as_secs_f64();
    let shape = crate::default_options(data);
    let started = Instant::now();
    let runs = run_many(0..seeds, &shape, data, 2, &|_| {});
    BenchReport {
        full_households: data.households.len(),
        full_tick_ms: tick_ms,
        full_sim_s: run
            .summary
            .as_ref()
            .map_or(0.0, |s| s.sim_ms as f64 / 1000.0),
        full_wall_s,
        full_faults: scenario.faults.len(),
        full_clean: !run.failed(),
        seeds,
        seeds_wall_s: started.elapsed().as_secs_f64(),
        seeds_failing: runs.iter().filter(|run| run.failed()).count(),
    }
}
