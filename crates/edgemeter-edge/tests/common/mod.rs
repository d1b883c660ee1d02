//! Helpers shared by the edge's integration tests.

// Each test file uses some of these helpers, never all.
#![allow(dead_code)]

use edgemeter_checker::{oracle_windows, OracleWindow};
use edgemeter_data::Household;
use edgemeter_memlog::SharedLog;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Publishes every reading of `households` into `log` at its own time,
/// `speedup` times faster than real time (in tokio time, so paused tests
/// run it at once), so that windows close a few at a time as in a live
/// stream. The task ends after the last reading.
pub fn spawn_paced_publisher(
    log: &SharedLog,
    households: &[Household],
    speedup: u64,
) -> JoinHandle<()> {
    assert!(speedup > 0);
    let log = log.clone();
    let readings = edgemeter_data::csv::merged_readings(households);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let first_ms = readings[0].ts_ms;
        for reading in readings {
            let due = Duration::from_millis((reading.ts_ms - first_ms) as u64 / speedup);
            tokio::time::sleep_until(start + due).await;
            log.append(reading.node_id.as_bytes(), reading.encode())
                .unwrap();
        }
    })
}

/// The first `minutes` of the first `count` households of the shipped data,
/// and the oracle's windows for them.
pub fn data_slice(
    minutes: i64,
    count: usize,
) -> (Vec<Household>, BTreeMap<(String, i64), OracleWindow>) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gem-house-1h");
    let (mut households, _) = edgemeter_data::load_dir(&data, Some(minutes * 60 * 1000)).unwrap();
    households.truncate(count);
    let oracle = oracle_windows(&households);
    (households, oracle)
}
