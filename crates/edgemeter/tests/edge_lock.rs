//! One edge per database, on the real binary.
//!
//! Goal: a second `edgemeter edge` on the `--db` of a running one is
//! refused at start, in one line that names the first one's pid and the
//! lock file, and exits non-zero without touching the database, while the
//! first runs on; once the first is killed (SIGKILL: the kernel drops its
//! flock), the next edge gets past the lock. Method: the first edge dials
//! a "broker" that accepts connections and never answers, so it holds its
//! lock while it waits for the broker's metadata (up to 10 s); the second
//! starts meanwhile.

mod common;

use common::{edgemeter_process, wait_until};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn edge_args<'a>(broker: &'a str, db: &'a str) -> Vec<&'a str> {
    vec![
        "edge",
        "--kafka",
        broker,
        "--cloud",
        "127.0.0.1",
        "--db",
        db,
        "--edge-id",
        "edge-lock",
    ]
}

#[test]
fn a_second_edge_on_one_database_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Accepts and never answers: the edge waits in its metadata request.
    let silent_broker = TcpListener::bind("127.0.0.1:0").expect("bind");
    let broker = silent_broker.local_addr().expect("address").to_string();
    let db = dir.path().join("edge.db");
    let db_text = db.to_str().expect("UTF-8 path");
    let lock = dir.path().join("edge.db.lock");
    let mut first = edgemeter_process("first", &edge_args(&broker, db_text), dir.path());
    let first_pid = first.pid().expect("running");
    // Past the lock, the outbox and the status socket: waiting for Kafka.
    wait_until(
        "the first edge to hold its lock",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&lock).is_ok_and(|text| text.trim() == first_pid.to_string())
                && dir.path().join("edge.db.status.sock").exists()
        },
    );

    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(edge_args(&broker, db_text))
        .stdin(Stdio::null())
        .env("EDGEMETER_LOG", "error")
        .output()
        .expect("run the second edge");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the second edge ran: {stderr}");
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("another edge"))
        .collect();
    assert_eq!(refusals.len(), 1, "one line: {stderr}");
    assert!(
        refusals[0].contains(&format!("pid {first_pid}")) && refusals[0].contains("edge.db.lock"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    assert!(first.try_status().is_none(), "the first edge runs on");
    assert_eq!(
        std::fs::read_to_string(&lock)
            .expect("the lock file")
            .trim(),
        first_pid.to_string(),
        "the refused edge left the lock file as it was"
    );

    first.kill();
    let mut third = edgemeter_process("third", &edge_args(&broker, db_text), dir.path());
    let third_pid = third.pid().expect("running");
    wait_until(
        "the next edge to take the lock",
        Duration::from_secs(20),
        || std::fs::read_to_string(&lock).is_ok_and(|text| text.trim() == third_pid.to_string()),
    );
    let log = std::fs::read_to_string(&third.log).unwrap_or_default();
    assert!(!log.contains("another edge"), "{log}");
    third.kill();
    drop(silent_broker);
}
