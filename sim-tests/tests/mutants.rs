//! Goal: the simulation as the test of a mutated build. `cargo mutants`
//! only runs `cargo test`, so this target is what it runs in each mutant
//! of edge, store, cloud and wire (the command is in `sim-tests/README.md`):
//! a calm seed and a block of faulty seeds of the default shape, and the
//! mutant survives only if every one of them passes the checker.
//!
//! `EDGEMETER_MUTANTS_SEEDS` sets how many faulty seeds (default
//! [`SEEDS_DEFAULT`]). The seeds start at [`FIRST_SEED`], apart from the
//! ones CI's `run` and the other tests cover, so in an ordinary test run
//! this target adds seeds of its own rather than repeating them.

mod common;

use common::{data, default_shape, small_shape, WORKERS};
use sim_tests::faults::Scenario;
use sim_tests::runner::{run_many, run_one, Tracing};

/// Faulty seeds per run unless `EDGEMETER_MUTANTS_SEEDS` says otherwise:
/// about five seconds on two cores with `--profile sim`.
const SEEDS_DEFAULT: u64 = 40;

const FIRST_SEED: u64 = 20_000;

fn seeds() -> u64 {
    match std::env::var("EDGEMETER_MUTANTS_SEEDS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("EDGEMETER_MUTANTS_SEEDS={text:?} is not a count")),
        Err(_) => SEEDS_DEFAULT,
    }
}

#[test]
#[cfg_attr(not(sim_optimized), ignore = "long: run with --profile sim")]
fn the_promise_holds_on_calm_and_faulty_seeds() {
    let mut calm = small_shape(None);
    calm.faults = false;
    let run = run_one(&Scenario::draw(FIRST_SEED, &calm), data(), Tracing::Off);
    assert!(run.findings.is_clean(), "calm seed: {:?}", run.findings);
    let summary = run.summary.as_ref().expect("the calm run ends");
    assert_eq!(
        summary.acked, summary.windows,
        "calm seed: not all acknowledged"
    );

    let count = seeds();
    let runs = run_many(
        FIRST_SEED..FIRST_SEED + count,
        &default_shape(None),
        data(),
        WORKERS,
        &|_| {},
    );
    assert_eq!(runs.len() as u64, count);
    let failing: Vec<String> = runs
        .iter()
        .filter(|run| run.failed())
        .map(|run| format!("seed {}: {:?}", run.scenario.seed, run.findings.counts()))
        .collect();
    assert!(failing.is_empty(), "failing seeds:\n{}", failing.join("\n"));
}
