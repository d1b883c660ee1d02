//! Goal: an unintended change of behaviour shows as a diff. Method: the
//! summaries (counts of tuples, acks, crashes, resends, convergence time,
//! findings) of a few fixed seeds are kept as insta snapshots; a change in
//! the edge, the cloud or the harness that alters any of them fails here
//! until the new summaries are reviewed and accepted
//! (`INSTA_UPDATE=always cargo test -p sim-tests --test snapshots`).

mod common;

use common::{data, small_shape};
use sim_tests::faults::Scenario;
use sim_tests::runner::{run_one, Tracing};

fn summary(seed: u64) -> sim_tests::world::Summary {
    let run = run_one(
        &Scenario::draw(seed, &small_shape(None)),
        data(),
        Tracing::Off,
    );
    run.summary.expect("the run ends")
}

#[test]
fn seed_1_summary() {
    insta::assert_json_snapshot!(summary(1));
}

#[test]
fn seed_2_summary() {
    insta::assert_json_snapshot!(summary(2));
}

#[test]
fn seed_3_summary() {
    insta::assert_json_snapshot!(summary(3));
}

/// The widest shapes at once: three edges, two nodes, three shards, so
/// that a change in how they share the cloud or the cache shows here.
#[test]
fn seed_4_summary_scale_out() {
    let shape = sim_tests::faults::DrawOptions {
        households: 3,
        topology: Some(sim_tests::faults::Topology {
            edges: 3,
            nodes: 2,
            shards: 3,
        }),
        ..small_shape(None)
    };
    let run = run_one(&Scenario::draw(4, &shape), data(), Tracing::Off);
    insta::assert_json_snapshot!(run.summary.expect("the run ends"));
}
