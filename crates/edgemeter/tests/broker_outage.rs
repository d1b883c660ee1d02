//! Goal: with the broker down, the edge keeps shipping what it has stored,
//! and when the broker returns it resumes consuming where it committed; the
//! run still ends with every window once, with the oracle's average.
//!
//! Method: the whole deployment as processes on loopback. The households
//! replay at 20x while the cloud is not running yet, so the edge builds a
//! backlog of queued (flag 0) tuples. Then tansu is SIGKILLed and only then
//! the cloud starts: every acknowledgement that follows is shipping during
//! the outage. The outage outlasts the edge's idle flush (10 s in these
//! tests, `cluster::TEST_IDLE_FLUSH`), so an edge that mistook the dead
//! broker for a quiet stream would close windows early, and their late
//! readings would change averages, which the end check would catch. Tansu
//! restarts on the same port and storage.

mod common;

use common::cluster::{self, assert_end_state, Cluster};
use common::{edge_status, try_edge_status, tuples_in, wait_until};
use std::time::{Duration, Instant};

/// Queued tuples to wait for before the broker goes down: about 2.5 s of
/// the replay at 20x, a tenth of the run.
const BACKLOG_TUPLES: u64 = 500;

/// How long the broker stays down at least: longer than the edge's idle
/// flush (`cluster::TEST_IDLE_FLUSH`, 10 s).
const OUTAGE_MIN: Duration = Duration::from_secs(15);

#[test]
fn the_edge_ships_through_a_broker_outage_and_resumes_consuming() {
    let oracle = cluster::oracle();
    let mut cluster = Cluster::start();
    let edge = cluster.edge();
    let mut households = cluster.households("20");
    wait_until(
        "a backlog of queued tuples",
        Duration::from_secs(120),
        || {
            try_edge_status(&cluster.db)
                .is_ok_and(|status| status["queued"].as_u64() >= Some(BACKLOG_TUPLES))
        },
    );

    cluster.tansu.kill();
    let outage = Instant::now();
    assert!(
        households.try_status().is_none(),
        "the replay must still be publishing when the broker goes down"
    );
    let at_kill = edge_status(&cluster.db);
    assert_eq!(at_kill["acked"], 0, "no cloud ran yet: {at_kill}");
    wait_until(
        "the edge to notice the broker is gone",
        Duration::from_secs(60),
        || std::fs::read_to_string(&edge.log).is_ok_and(|log| log.contains("broker unavailable")),
    );

    let _cloud = cluster.cloud();
    let backlog = at_kill["queued"].as_u64().expect("a count");
    wait_until(
        "the backlog acknowledged while the broker is down",
        Duration::from_secs(120),
        || edge_status(&cluster.db)["acked"].as_u64() >= Some(backlog),
    );
    if let Some(rest) = OUTAGE_MIN.checked_sub(outage.elapsed()) {
        std::thread::sleep(rest);
    }
    let before_restart = edge_status(&cluster.db);
    assert!(
        tuples_in(&before_restart) < oracle.len() as u64,
        "readings must still be waiting for the broker: {before_restart}"
    );
    assert_eq!(before_restart["edge"]["running"], true, "{before_restart}");
    assert_eq!(
        before_restart["edge"]["consuming"], true,
        "a broker outage is not a store failure: {before_restart}"
    );

    cluster.tansu.restart();
    let readings_before = before_restart["edge"]["readings"]
        .as_u64()
        .expect("a count");
    wait_until(
        "the edge to consume again",
        Duration::from_secs(120),
        || edge_status(&cluster.db)["edge"]["readings"].as_u64() > Some(readings_before),
    );
    // assert_end_state then checks every row is at flag 2, none left over.
    cluster.wait_for_acked(oracle.len() as u64, Duration::from_secs(300));
    assert!(households.wait_exit(Duration::from_secs(120)).success());
    assert_end_state(&cluster, &oracle);
}
