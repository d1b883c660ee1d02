//! Goal: all 50 households x 10 minutes go households -> Kafka (tansu) ->
//! edge -> NNG -> cloud -> Redis, and arrive exactly once with the right
//! averages. Method: the built binary's three subcommands as separate
//! processes against real servers; the end state is compared with the
//! oracle computed from the CSV directly.

mod common;

use common::cluster::{assert_end_state, oracle, Cluster};
use std::time::Duration;

#[test]
fn every_window_arrives_once_with_the_oracle_average() {
    let expected = oracle();
    let cluster = Cluster::start();
    let _cloud = cluster.cloud();
    let _edge = cluster.edge();
    let mut households = cluster.households("max");
    let status = households.wait_exit(Duration::from_secs(180));
    assert!(
        status.success(),
        "households failed: {status}\n{}",
        households.log_tail()
    );
    cluster.wait_for_acked(expected.len() as u64, Duration::from_secs(180));
    assert_end_state(&cluster, &expected);
}
