//! Goal: when the edge's disk is full, the real `edgemeter edge` stops
//! consuming without dying, `edgemeter status` says so, and once space
//! returns it consumes again and every window still arrives exactly once.
//!
//! Method: the whole deployment as processes (tansu, redis-server, cloud,
//! edge, households). Once the edge runs, its file-size limit
//! (`RLIMIT_FSIZE`, set from outside with prlimit(2)) drops to 0 bytes: from
//! then on every write to a regular file fails, its database's and its
//! log's alike, as on a full disk, while its sockets keep working. The edge
//! ignores SIGXFSZ, set up before it starts, so a refused write is an error
//! it sees, not a signal that kills it (a full disk sends no signal either).
//! After `status` reported the pause, the limit is lifted again.

mod common;

use common::cluster::{self, assert_end_state, Cluster};
use common::{
    edge_status, edge_that_survives_file_limits, limit_file_size, try_edge_status, tuples_in,
    wait_until,
};
use std::process::Command;
use std::time::Duration;

fn status_text(db: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["status", "--db"])
        .arg(db)
        .output()
        .expect("run edgemeter status");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn a_full_disk_pauses_consumption_status_says_so_and_nothing_is_lost() {
    let oracle = cluster::oracle();
    let cluster = Cluster::start();
    let _cloud = cluster.cloud();
    let mut edge = edge_that_survives_file_limits(&cluster, &[]);
    wait_until(
        "the edge to report itself consuming",
        Duration::from_secs(60),
        || try_edge_status(&cluster.db).is_ok_and(|status| status["edge"]["consuming"] == true),
    );

    // The disk is full before the first reading arrives.
    limit_file_size(edge.pid().expect("the edge runs"), Some(0));
    let mut households = cluster.households("max");
    wait_until(
        "status to report consumption paused",
        Duration::from_secs(120),
        || {
            let status = edge_status(&cluster.db);
            status["edge"]["consuming"] == false
                && status["edge"]["store_errors"].as_u64() > Some(0)
        },
    );
    let paused = edge_status(&cluster.db);
    assert_eq!(paused["edge"]["running"], true, "{paused}");
    assert_eq!(tuples_in(&paused), 0, "nothing can be stored: {paused}");
    assert!(
        status_text(&cluster.db)
            .contains("consumption:           paused (SQLite refused a write; see the edge's log)"),
        "{}",
        status_text(&cluster.db)
    );
    assert!(edge.try_status().is_none(), "a full disk stopped the edge");

    // Space returns: the same process consumes again, and delivers all.
    limit_file_size(edge.pid().expect("the edge runs"), None);
    wait_until(
        "status to report consumption resumed",
        Duration::from_secs(60),
        || edge_status(&cluster.db)["edge"]["consuming"] == true,
    );
    // assert_end_state then checks every row is at flag 2, none left over.
    cluster.wait_for_acked(oracle.len() as u64, Duration::from_secs(300));
    assert!(households.wait_exit(Duration::from_secs(120)).success());
    assert_end_state(&cluster, &oracle);
    let log = std::fs::read_to_string(&edge.log).expect("the edge's log");
    assert!(
        log.contains("store writable again; consuming resumes"),
        "{}",
        edge.log_tail()
    );
    assert_eq!(edge_status(&cluster.db)["edge"]["pid"], edge.pid().unwrap());
}
