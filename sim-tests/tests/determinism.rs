//! Goal: the same seed gives the same run, byte for byte, so that a failing
//! seed can be replayed and read. Method: run a sample of seeds twice (the
//! second time on another thread, as `run` would) and compare whole traces;
//! replay one seed in two separate processes of the real binary and compare
//! their output; and check that different seeds do differ, so the
//! comparison can fail.

mod common;

use common::{data, default_shape, small_shape};
use sim_tests::faults::{DrawOptions, Scenario, Topology};
use sim_tests::runner::{run_one, Tracing};

fn trace_of(seed: u64, shape: &DrawOptions) -> String {
    run_one(&Scenario::draw(seed, shape), data(), Tracing::Memory).trace
}

fn assert_identical(seed: u64, shape: &DrawOptions) -> String {
    let first = trace_of(seed, shape);
    let shape_on_thread = shape.clone();
    let second = std::thread::spawn(move || trace_of(seed, &shape_on_thread))
        .join()
        .expect("the second run does not panic");
    assert!(
        first.lines().count() > 20,
        "seed {seed}: the trace is too short to mean anything"
    );
    if first != second {
        let line = first
            .lines()
            .zip(second.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "seed {seed} diverged at trace line {}:\n  first:  {}\n  second: {}",
            line + 1,
            first.lines().nth(line).unwrap_or("<end>"),
            second.lines().nth(line).unwrap_or("<end>")
        );
    }
    first
}

#[test]
fn a_seed_replays_byte_for_byte_small() {
    let shape = small_shape(None);
    let traces: Vec<String> = [3, 11]
        .iter()
        .map(|seed| assert_identical(*seed, &shape))
        .collect();
    assert_ne!(
        traces[0], traces[1],
        "two seeds gave the same trace: the seed is not used"
    );
}

/// Three edges, three cloud nodes and three shards: the most hosts, and
/// the most places where an unseeded order could creep in.
#[test]
fn a_seed_of_the_widest_topology_replays_byte_for_byte() {
    let shape = DrawOptions {
        households: 3,
        topology: Some(Topology {
            edges: 3,
            nodes: 3,
            shards: 3,
        }),
        ..small_shape(None)
    };
    let trace = assert_identical(6, &shape);
    for host in ["edge-3", "cloud-3"] {
        assert!(trace.contains(host), "no line of {host} in the trace");
    }
}

#[test]
#[cfg_attr(not(sim_optimized), ignore = "long: run with --profile sim")]
fn a_sample_of_seeds_replays_byte_for_byte() {
    let shape = default_shape(None);
    for seed in [0, 1, 2, 5, 8, 13, 21, 34] {
        assert_identical(seed, &shape);
    }
    let mutated = default_shape(Some("no-deduplication"));
    assert_identical(10, &mutated);
}

#[test]
#[cfg_attr(not(sim_optimized), ignore = "long: run with --profile sim")]
fn two_processes_print_the_same_replay() {
    let replay = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_edgemeter-sim"))
            .args(["replay", "--seed", "4"])
            .output()
            .expect("the binary runs");
        assert!(output.status.success() || output.status.code() == Some(1));
        output.stdout
    };
    let first = replay();
    assert!(first.len() > 10_000, "the replay printed too little");
    assert!(
        first == replay(),
        "two processes printed different traces for seed 4"
    );
}
