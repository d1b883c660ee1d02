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

/// Goal: the original system's `local.db` given as `--db` is refused at
/// start, by `edge` and by `status`, in one line that names it and the
/// fix, and is left byte for byte as it was (issue 15: the edge used to add
/// its tables, switch it to WAL and fail every store). Method: the
/// original's table written with rusqlite, then both commands.
#[test]
fn a_foreign_database_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("local.db");
    rusqlite::Connection::open(&db)
        .and_then(|original| {
            original.execute_batch(
                "CREATE TABLE power_averages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                 node_id TEXT, average REAL, sent INTEGER DEFAULT 0)",
            )
        })
        .expect("the original's schema");
    let before = std::fs::read(&db).expect("reads");
    let db_arg = db.to_str().expect("a UTF-8 path");
    let broker = format!("127.0.0.1:{}", common::free_port());
    let edge = [
        "edge",
        "--kafka",
        &broker,
        "--cloud",
        "127.0.0.1",
        "--db",
        db_arg,
    ];
    for args in [&edge[..], &["status", "--db", db_arg][..]] {
        let (success, line, took) = run(args);
        assert!(!success, "{args:?}");
        assert!(
            line.contains(db_arg)
                && line.contains("not an EdgeMeter outbox (the original's schema?")
                && line.ends_with("pass a new --db"),
            "{line}"
        );
        assert!(took < Duration::from_secs(30), "took {took:?}");
    }
    assert_eq!(std::fs::read(&db).expect("reads"), before);
}

/// Goal: a `--cloud` list the edge cannot use is refused at once, naming
/// the entry: a malformed one as a usage error, one node named twice (here
/// once bare, on the default ports, and once spelled out) at start.
#[test]
fn a_bad_cloud_list_is_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let db = db.to_str().unwrap();
    let edge = |cloud: &str| {
        let args = [
            "edge",
            "--kafka",
            "127.0.0.1:1",
            "--db",
            db,
            "--cloud",
            cloud,
        ];
        let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
            .args(args)
            .stdin(Stdio::null())
            .env("EDGEMETER_LOG", "error")
            .output()
            .expect("run edgemeter");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (success, stderr) = edge("c1,c2:7000");
    assert!(!success);
    assert!(
        stderr.contains("--cloud") && stderr.contains("`c2:7000`"),
        "{stderr}"
    );
    let (success, stderr) = edge("c1,c1:63270:63271");
    assert!(!success);
    assert!(stderr.contains("c1:63270:63271 twice"), "{stderr}");
}
