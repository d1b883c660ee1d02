//! Goal: the real edge and cloud pass the checker under every fault the
//! harness draws. Method: a batch of seeds (apart from the ones CI's `run`
//! covers) with no planted bug must all pass; and a calm run (no faults)
//! must pass with every window delivered, as a baseline that fails loudly
//! if the harness itself loses data.

mod common;

use common::{data, default_shape, small_shape, WORKERS};
use sim_tests::faults::Scenario;
use sim_tests::runner::{run_many, run_one, Tracing};

#[test]
fn a_calm_run_delivers_every_window_exactly_once() {
    let mut shape = small_shape(None);
    shape.faults = false;
    let run = run_one(&Scenario::draw(7, &shape), data(), Tracing::Off);
    let summary = run.summary.as_ref().expect("the run ends");
    assert!(run.findings.is_clean(), "{:?}", run.findings);
    assert!(summary.windows > 10);
    assert_eq!(summary.edge_tuples, summary.windows);
    assert_eq!(summary.acked, summary.windows);
    assert_eq!(summary.cloud_tuples, summary.windows);
    assert!(summary.converged_after_heal_ms.is_some());
}

#[test]
#[cfg_attr(not(sim_optimized), ignore = "long: run with --profile sim")]
fn a_batch_of_faulty_seeds_passes() {
    let runs = run_many(
        10_000..10_060,
        &default_shape(None),
        data(),
        WORKERS,
        &|_| {},
    );
    let failing: Vec<String> = runs
        .iter()
        .filter(|run| run.failed())
        .map(|run| format!("seed {}: {:?}", run.scenario.seed, run.findings.counts()))
        .collect();
    let faults: usize = runs.iter().map(|run| run.scenario.faults.len()).sum();
    assert!(faults > 100, "the batch drew only {faults} faults");
    assert!(failing.is_empty(), "failing seeds:\n{}", failing.join("\n"));
}
