//! Goal: all 50 households x 10 minutes go households -> Kafka (tansu) ->
//! edge -> NNG -> cloud -> Redis, and arrive exactly once with the right
//! averages. Method: the built binary's three subcommands as separate
//! processes against real servers; the end state is compared with the
//! oracle computed from the CSV directly.

mod common;

use common::cluster::{assert_end_state, oracle, Cluster};

#[test]
fn every_window_arrives_once_with_the_oracle_average() {
    let expected = oracle();
    let cluster = Cluster::start();
    let _cloud = cluster.cloud();
    let _edge = cluster.edge();
    cluster.replay_until_acked("max", expected.len() as u64);
    assert_end_state(&cluster, &expected);
}
