//! Goal: what is missing at start is named in one line with its fix, and
//! the process exits non-zero, instead of hanging or crashing.
//! Method: run the built binary against ports where nothing listens and
//! paths that do not exist.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary to its end; returns (success, last stderr line, time).
fn run(args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(args)
        .stdin(Stdio::null())
        .env("EDGEMETER_LOG", "error")
        .output()
        .expect("run edgemeter");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or("").to_owned();
    (output.status.success(), last, started.elapsed())
}

#[test]
fn an_unreachable_broker_is_named_with_the_fix() {
    let broker = format!("127.0.0.1:{}", common::free_port());
    let (success, line, took) = run(&["households", "--kafka", &broker, "--duration", "1m"]);
    assert!(!success);
    assert!(line.contains(&broker) && line.contains("--kafka"), "{line}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn an_unreachable_redis_is_named_with_the_fix() {
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let (success, line, took) = run(&[
        "cloud",
        "--redis",
        &url,
        "--heartbeat-port",
        "0",
        "--data-port",
        "0",
        "--allow-unauthenticated",
        "--http",
        "127.0.0.1:0",
    ]);
    assert!(!success);
    assert!(line.contains(&url) && line.contains("--redis"), "{line}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn a_cloud_without_keys_says_how_to_provision_them() {
    let (success, line, _) = run(&[
        "cloud",
        "--redis",
        "redis://127.0.0.1:1",
        "--http",
        "127.0.0.1:0",
    ]);
    assert!(!success);
    assert!(
        line.contains("--keys") && line.contains("edgemeter keygen"),
        "{line}"
    );
    assert!(line.contains("--allow-unauthenticated"), "{line}");
}

#[test]
fn a_missing_data_directory_is_named_with_the_fix() {
    let (success, line, _) = run(&["demo", "--data", "/no/such/dir", "--exit-when-done"]);
    assert!(!success);
    assert!(
        line.contains("/no/such/dir") && line.contains("--data"),
        "{line}"
    );
}

#[test]
fn a_missing_database_is_named_with_the_fix() {
    let (success, line, _) = run(&["status", "--db", "/no/such/edge.db", "--json"]);
    assert!(!success);
    assert!(
        line.contains("/no/such/edge.db") && line.contains("--db"),
        "{line}"
    );
}

#[test]
fn status_prints_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    edgemeter_store::SqliteOutbox::open(&db).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["status", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "queued": 0, "sent": 0, "acked": 0, "rejected": 0, "late": 0, "conflicts": 0,
            "edge": {"running": false},
        })
    );
}
