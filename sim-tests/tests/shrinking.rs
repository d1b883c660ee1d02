//! Goal: a failing fault schedule shrinks to a minimal one that a developer
//! can replay from a file. Method: with a planted bug that only shows under
//! some faults (the edge forgets flag-1 tuples on restart), proptest
//! generates explicit schedules until one fails, then shrinks it; the
//! minimal schedule is written as a file, and `edgemeter-sim replay
//! --schedule FILE` (the real binary) must fail on it again.

mod common;

use common::{data, small_shape};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use sim_tests::faults::Scenario;
use sim_tests::runner::{run_one, Tracing};
use sim_tests::shrink::fault_events;

const MUTATION: &str = "forget-sent-on-restart";

#[test]
#[cfg_attr(not(sim_optimized), ignore = "long: run with --profile sim")]
fn a_failing_schedule_shrinks_to_a_replayable_file() {
    let base = Scenario::calm(5, &small_shape(Some(MUTATION)));
    let config = Config {
        cases: 64,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = fault_events(base.duration_ms as u64);
    let outcome = runner.run(&strategy, |faults| {
        let scenario = Scenario {
            faults,
            ..base.clone()
        };
        let run = run_one(&scenario, data(), Tracing::Off);
        if run.failed() {
            return Err(TestCaseError::fail(format!("{:?}", run.findings.counts())));
        }
        Ok(())
    });
    let minimal = match outcome {
        Err(TestError::Fail(_, faults)) => faults,
        other => panic!("no schedule made {MUTATION} fail: {other:?}"),
    };
    assert!(!minimal.is_empty(), "the bug fails without any fault");
    assert!(
        minimal.len() <= 2,
        "shrinking left {} events: {minimal:?}",
        minimal.len()
    );
    let scenario = Scenario {
        faults: minimal,
        ..base
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("minimal.json");
    std::fs::write(&file, serde_json::to_string_pretty(&scenario).unwrap()).unwrap();
    println!(
        "minimal schedule:\n{}",
        std::fs::read_to_string(&file).unwrap()
    );
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_edgemeter-sim"))
        .args(["replay", "--quiet", "--schedule"])
        .arg(&file)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "replay did not fail:\n{stdout}"
    );
    assert!(
        stdout.contains("lost") || stdout.contains("stuck"),
        "{stdout}"
    );
}
