//! Goal: crashes lose nothing and double nothing. Method: the same
//! deployment as the end-to-end test, replaying slowly enough to crash
//! things mid-run: the edge is killed with SIGKILL and restarted from its
//! database, then the cloud is killed and restarted. The end state must be
//! the one an undisturbed run gives.

mod common;

use common::cluster::{assert_end_state, oracle, Cluster};
use std::time::Duration;

/// Ten minutes of readings at 10x: a minute of replay, long enough to
/// crash two processes in the middle of it.
const SPEED: &str = "10";

/// Acknowledged tuples between two crashes: a sixth of the run.
const PROGRESS_BETWEEN_CRASHES: u64 = 1_000;

#[test]
fn killed_edge_and_cloud_lose_and_double_nothing() {
    let expected = oracle();
    let total = expected.len() as u64;
    assert!(total > 3 * PROGRESS_BETWEEN_CRASHES);
    let cluster = Cluster::start();
    let mut cloud = cluster.cloud();
    let mut edge = cluster.edge();
    let mut households = cluster.households(SPEED);

    cluster.wait_for_acked(PROGRESS_BETWEEN_CRASHES, Duration::from_secs(120));
    assert!(
        households.try_status().is_none(),
        "the replay must still be running when the edge is killed"
    );
    edge.kill();
    let acked_at_edge_crash = cluster.acked();
    assert!(acked_at_edge_crash < total);
    std::thread::sleep(Duration::from_millis(500));
    let _edge_again = cluster.edge();

    cluster.wait_for_acked(
        acked_at_edge_crash + PROGRESS_BETWEEN_CRASHES,
        Duration::from_secs(120),
    );
    cloud.kill();
    let acked_at_cloud_crash = cluster.acked();
    assert!(
        acked_at_cloud_crash < total,
        "the cloud must be killed before the end"
    );
    std::thread::sleep(Duration::from_secs(1));
    let _cloud_again = cluster.cloud();

    let status = households.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "households failed: {status}");
    cluster.wait_for_acked(total, Duration::from_secs(180));
    assert_end_state(&cluster, &expected);
}
