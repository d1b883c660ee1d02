//! Goal: `edgemeter demo --exit-when-done` runs the whole pipeline in one
//! process and exits 0 with every tuple acknowledged, its summary last on
//! stdout, and the database agreeing with the oracle.

mod common;

use edgemeter_checker::oracle_windows;
use edgemeter_data::load_dir;
use std::process::{Command, Stdio};

#[test]
fn the_demo_acknowledges_every_window_and_prints_its_summary_last() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args([
            "demo",
            "--speed",
            "max",
            "--duration",
            "2m",
            "--exit-when-done",
            "--http",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(&db)
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap();

    let (households, _) = load_dir(&common::data_dir(), Some(120_000)).unwrap();
    let oracle = oracle_windows(&households);
    assert_eq!(summary["households"], 50);
    assert_eq!(summary["tuples"], oracle.len() as u64);
    assert_eq!(summary["acked"], oracle.len() as u64);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);

    let stored = edgemeter_store::SqliteOutbox::open_read_only(&db)
        .unwrap()
        .all_tuples()
        .unwrap();
    assert_eq!(stored.len(), oracle.len());
    for tuple in stored {
        let expected = oracle[&(tuple.node_id.clone(), tuple.window_start_ms)];
        assert_eq!(tuple.average_w, expected.average_w);
        assert_eq!(tuple.sent, 2);
        assert!(tuple.postal_code.is_some());
    }
}
