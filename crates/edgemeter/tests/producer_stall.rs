//! Goal: a producer that pauses for less than the edge's idle flush
//! changes no average (issue 12: a 20 s SIGSTOP of `edgemeter households`
//! once changed 15 of 1,802 tuples, because the edge flushed its open
//! windows after 10 s of silence and dropped the readings that followed).
//! Method: the built binary's `cloud`, `edge` and `households` as separate
//! processes on real tansu and redis-server; `households` is stopped with
//! SIGSTOP while windows are open and continued later; at the end every
//! tuple must equal the oracle's, exactly once, at flag 2, and nothing may
//! be late.
//!
//! The test CI runs is a shortened form (1 minute of data at speed 5,
//! frozen 4 s in for 12 s, an idle flush of 20 s: the stop is longer than
//! the old 10 s, so the old edge fails it), so that it takes well under a minute of
//! waiting. The issue's exact scenario (3 minutes at speed 5, frozen 12 s
//! in for 20 s, the default 60 s idle flush) is the ignored test below:
//! `cargo test -p edgemeter --test producer_stall -- --ignored`.

mod common;

use common::cluster::{assert_end_state, Cluster};
use common::{edgemeter_process, wait_until, Process};
use edgemeter_checker::oracle_windows;
use edgemeter_data::load_dir;
use edgemeter_edge::Outbox;
use edgemeter_store::SqliteOutbox;
use std::process::Command;
use std::time::{Duration, Instant};

/// One run of the scenario.
struct Scenario {
    duration: &'static str,
    duration_ms: i64,
    speed: &'static str,
    /// When `households` is stopped, after it started.
    stop_after: Duration,
    /// How long it stays stopped.
    stopped_for: Duration,
    /// The edge's `--idle-flush`.
    idle_flush: &'static str,
}

fn signal(process: &Process, name: &str) {
    let pid = process.pid().expect("households is running").to_string();
    let status = Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {name} {pid} failed");
}

fn run(scenario: &Scenario) {
    let (households, _) =
        load_dir(&common::data_dir(), Some(scenario.duration_ms)).expect("the shipped data loads");
    let oracle = oracle_windows(&households);
    let cluster = Cluster::start();
    let _cloud = cluster.cloud();
    let mut edge_args = cluster.edge_args();
    let flag = edge_args
        .iter()
        .position(|arg| arg == "--idle-flush")
        .expect("the cluster sets an idle flush");
    edge_args[flag + 1] = scenario.idle_flush.to_owned();
    let edge_args: Vec<&str> = edge_args.iter().map(String::as_str).collect();
    let _edge = edgemeter_process("edge", &edge_args, cluster.dir.path());
    let data = common::data_dir();
    let households_args = [
        "households",
        "--kafka",
        &cluster.tansu.address(),
        "--data",
        data.to_str().expect("UTF-8 path"),
        "--speed",
        scenario.speed,
        "--duration",
        scenario.duration,
    ];
    let mut producer = edgemeter_process("households", &households_args, cluster.dir.path());
    let started = Instant::now();
    // The stop must find the edge running with windows open: after its
    // first tuples are stored, and not before `stop_after`.
    wait_until("the first stored tuples", Duration::from_secs(60), || {
        stored(&cluster) > 0
    });
    std::thread::sleep(scenario.stop_after.saturating_sub(started.elapsed()));
    signal(&producer, "-STOP");
    let stored_at_stop = stored(&cluster);
    std::thread::sleep(scenario.stopped_for);
    signal(&producer, "-CONT");
    assert!(
        stored_at_stop > 0 && stored_at_stop < oracle.len(),
        "the stop came while windows were open ({stored_at_stop} of {} stored)",
        oracle.len()
    );
    let status = producer.wait_exit(Duration::from_secs(600));
    assert!(
        status.success(),
        "households failed: {status}\n{}",
        producer.log_tail()
    );
    eprintln!("replay done after {:?}", started.elapsed());
    cluster.wait_for_acked(oracle.len() as u64, Duration::from_secs(300));
    assert_end_state(&cluster, &oracle);
    let counts = SqliteOutbox::open_read_only(&cluster.db)
        .and_then(|mut outbox| outbox.status())
        .expect("read the edge's status");
    assert_eq!(
        (counts.rejected, counts.late),
        (0, 0),
        "no reading was late or rejected"
    );
}

/// Tuples in the edge's database so far.
fn stored(cluster: &Cluster) -> usize {
    if !cluster.db.exists() {
        return 0;
    }
    SqliteOutbox::open_read_only(&cluster.db)
        .and_then(|outbox| outbox.all_tuples())
        .map(|tuples| tuples.len())
        .unwrap_or(0)
}

#[test]
fn a_paused_producer_changes_no_average() {
    run(&Scenario {
        duration: "1m",
        duration_ms: 60_000,
        speed: "5",
        stop_after: Duration::from_secs(4),
        stopped_for: Duration::from_secs(12),
        idle_flush: "20s",
    });
}

#[test]
#[ignore = "long (about 3 minutes): the issue's exact scenario, run by hand"]
fn the_issue_scenario_a_20_s_pause_in_3_minutes_at_speed_5() {
    run(&Scenario {
        duration: "3m",
        duration_ms: 180_000,
        speed: "5",
        stop_after: Duration::from_secs(12),
        stopped_for: Duration::from_secs(20),
        // The deployment's default.
        idle_flush: "60s",
    });
}
