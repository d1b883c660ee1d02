//! Windows that survive stalls: the closing rule of `edge.rs` against a
//! producer that pauses, a broker that cannot confirm the end of the
//! stream, and a reading that arrives after its window was stored.
//!
//! The edge runs over the in-process bus (`MemBus`), real SQLite and a link
//! that calls an in-process cloud; time is tokio's paused clock, so minutes
//! of stall take milliseconds and the runs are the same each time.

use edgemeter_cloud::{Cloud, CloudConfig, MemoryCache};
mod common;

use common::data_slice;
use edgemeter_checker::OracleWindow;
use edgemeter_edge::{
    run_edge, BusError, BusRecord, Channel, CloudLink, EdgeConfig, EdgeMonitor, LinkError, Outbox,
    ReadingsBus, DEFAULT_IDLE_FLUSH,
};
use edgemeter_env::SystemClock;
use edgemeter_memlog::{MemBus, MemLog, SharedLog};
use edgemeter_store::SqliteOutbox;
use edgemeter_wire::Reading;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, sleep_until, Instant};

type TestCloud = Cloud<MemoryCache, SystemClock>;

/// Calls the cloud directly.
struct DirectLink {
    cloud: Arc<TestCloud>,
}

impl CloudLink for DirectLink {
    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        Ok(match channel {
            Channel::Heartbeat(_) => self.cloud.handle_heartbeat(&body).await,
            Channel::Data => self.cloud.handle_data(&body).await,
        })
    }
}

fn link() -> Arc<DirectLink> {
    Arc::new(DirectLink {
        cloud: Arc::new(Cloud::new(
            CloudConfig::default(),
            MemoryCache::new(),
            SystemClock,
        )),
    })
}

/// The production settings, with the idle flush the test names.
fn config(idle_flush: Duration) -> EdgeConfig {
    let mut config = EdgeConfig::new("edge-stall");
    config.idle_flush = idle_flush;
    config.heartbeat_interval = Duration::from_millis(200);
    config
}

/// Publishes the readings at real time, as `edgemeter households --speed 1`
/// does, but frozen from `stall_at` for `stall`: what is due meanwhile goes
/// out at once when the producer resumes, as after SIGSTOP and SIGCONT.
async fn publish_with_stall(
    log: SharedLog,
    readings: Vec<Reading>,
    stall_at: Duration,
    stall: Duration,
) {
    let start = Instant::now();
    let first_ms = readings[0].ts_ms;
    for reading in readings {
        let due = Duration::from_millis((reading.ts_ms - first_ms) as u64);
        let at = if due >= stall_at {
            due.max(stall_at + stall)
        } else {
            due
        };
        sleep_until(start + at).await;
        log.append(reading.node_id.as_bytes(), reading.encode())
            .unwrap();
    }
}

/// Waits (paused time) until `expected` tuples are acknowledged; fails
/// after `limit`.
async fn wait_acked(db: &Path, expected: usize, limit: Duration) {
    let reader = SqliteOutbox::open_read_only(db).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let acked = reader
            .all_tuples()
            .unwrap()
            .iter()
            .filter(|t| t.sent == 2)
            .count();
        if acked == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{acked} of {expected} tuples acked"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

fn assert_equal_to_oracle(db: &Path, oracle: &BTreeMap<(String, i64), OracleWindow>) {
    let stored = SqliteOutbox::open_read_only(db)
        .unwrap()
        .all_tuples()
        .unwrap();
    assert_eq!(stored.len(), oracle.len(), "a window was lost or doubled");
    for tuple in &stored {
        let expected = &oracle[&(tuple.node_id.clone(), tuple.window_start_ms)];
        assert_eq!(
            (tuple.average_w.to_bits(), tuple.samples),
            (expected.average_w.to_bits(), expected.samples),
            "window {} of {} changed",
            tuple.window_start_ms,
            tuple.node_id
        );
    }
}

/// Goal: a producer that pauses for less than `idle_flush` changes no
/// average and loses no reading. Method: five households replayed at real
/// time for 3 minutes, the producer frozen 12 s in for 50 s (the old 10 s
/// idle flush closed windows then); every tuple must equal the oracle's and
/// nothing may be late.
#[tokio::test(start_paused = true)]
async fn a_producer_stall_shorter_than_the_idle_flush_changes_no_average() {
    let (households, oracle) = data_slice(3, 5);
    let readings = edgemeter_data::csv::merged_readings(&households);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let monitor = Arc::new(EdgeMonitor::new());
    let stall = DEFAULT_IDLE_FLUSH - Duration::from_secs(10);
    let publisher = tokio::spawn(publish_with_stall(
        log.clone(),
        readings,
        Duration::from_secs(12),
        stall,
    ));
    let edge = tokio::spawn(run_edge(
        config(DEFAULT_IDLE_FLUSH),
        log.consumer("edge-stall"),
        link(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    publisher.await.unwrap();
    wait_acked(&db, oracle.len(), Duration::from_secs(600)).await;
    edge.abort();
    assert_equal_to_oracle(&db, &oracle);
    assert_eq!(monitor.snapshot().late, 0);
    let status = SqliteOutbox::open_read_only(&db).unwrap().status().unwrap();
    assert_eq!((status.rejected, status.late), (0, 0));
}

/// A [`MemBus`] whose broker answers polls but not, while `silent` is set,
/// the question whether the consumer is at the end: a broker or link that
/// stalls on the watermark query.
struct UnconfirmedEnd {
    inner: MemBus,
    silent: Arc<AtomicBool>,
}

impl ReadingsBus for UnconfirmedEnd {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        self.inner.poll(records_max).await
    }

    async fn commit(&mut self, offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        self.inner.commit(offsets).await
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        if self.silent.load(Ordering::Relaxed) {
            // Hangs past the edge's own limit on the query.
            sleep(Duration::from_secs(30)).await;
            return Err(BusError::Unavailable("watermark query timed out".into()));
        }
        self.inner.at_end().await
    }
}

/// Goal: an end of stream the broker cannot confirm never flushes, however
/// long the silence, and the flush follows once it can. Method: one minute
/// of three households, all read; the end query hangs for ten minutes of
/// quiet (ten idle flushes), during which the last windows must stay open;
/// then it answers and every window closes equal to the oracle.
#[tokio::test(start_paused = true)]
async fn an_end_the_broker_does_not_confirm_never_flushes() {
    let (households, oracle) = data_slice(1, 3);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    for reading in edgemeter_data::csv::merged_readings(&households) {
        log.append(reading.node_id.as_bytes(), reading.encode())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let silent = Arc::new(AtomicBool::new(true));
    let edge = tokio::spawn(run_edge(
        config(DEFAULT_IDLE_FLUSH),
        UnconfirmedEnd {
            inner: log.consumer("edge-stall"),
            silent: silent.clone(),
        },
        link(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    sleep(DEFAULT_IDLE_FLUSH * 10).await;
    let stored = SqliteOutbox::open_read_only(&db)
        .unwrap()
        .all_tuples()
        .unwrap();
    assert!(
        !stored.is_empty(),
        "windows closed by event time are stored"
    );
    assert!(
        stored.len() + households.len() <= oracle.len(),
        "each household's last window stays open: {} of {} stored",
        stored.len(),
        oracle.len()
    );
    silent.store(false, Ordering::Relaxed);
    wait_acked(&db, oracle.len(), DEFAULT_IDLE_FLUSH * 3).await;
    edge.abort();
    assert_equal_to_oracle(&db, &oracle);
}

/// Goal: a reading whose window is already stored is kept in `rejected`
/// as `late` (raw bytes, partition, offset, a reason naming the window),
/// counted, and the stored average stays. Method: one household's window
/// closed by its next reading, then a reading for the closed window.
#[tokio::test(start_paused = true)]
async fn a_late_reading_is_kept_in_rejected_and_counted() {
    const T0: i64 = 1_577_145_600_000;
    let log = SharedLog::new(MemLog::new(1, 1_000));
    let reading = |ts_ms: i64, power_w: f64| Reading {
        node_id: "house-1".into(),
        power_w,
        ts_ms,
    };
    for (ts_ms, power_w) in [(T0 + 1_000, 100.0), (T0 + 8_000, 50.0)] {
        log.append(b"house-1", reading(ts_ms, power_w).encode())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        config(DEFAULT_IDLE_FLUSH),
        log.consumer("edge-stall"),
        link(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    wait_acked(&db, 1, Duration::from_secs(30)).await;
    let late = reading(T0 + 2_000, 900.0).encode();
    let (_, offset) = log.append(b"house-1", late.clone()).unwrap();
    wait_acked(&db, 2, DEFAULT_IDLE_FLUSH * 3).await;
    edge.abort();

    let stored = SqliteOutbox::open_read_only(&db)
        .unwrap()
        .all_tuples()
        .unwrap();
    assert_eq!(stored[0].window_start_ms, T0);
    assert_eq!(
        stored[0].average_w, 100.0,
        "the late reading changed nothing"
    );
    assert_eq!(monitor.snapshot().late, 1);
    let status = SqliteOutbox::open_read_only(&db).unwrap().status().unwrap();
    assert_eq!((status.rejected, status.late), (1, 1));
    let connection = rusqlite::Connection::open(&db).unwrap();
    let (partition, kept_offset, raw, kind, reason): (i32, i64, Vec<u8>, String, String) =
        connection
            .query_row(
                "SELECT partition, offset, raw, kind, reason FROM rejected",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .unwrap();
    assert_eq!((partition, kept_offset), (0, offset));
    assert_eq!(raw, late);
    assert_eq!(kind, "late");
    assert!(
        reason.contains(&format!("window {T0}")) && reason.contains("house-1"),
        "{reason}"
    );
}

/// A [`MemBus`] whose end query never answers.
struct HangingEnd {
    inner: MemBus,
}

impl ReadingsBus for HangingEnd {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        self.inner.poll(records_max).await
    }

    async fn commit(&mut self, offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        self.inner.commit(offsets).await
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        std::future::pending().await
    }
}

/// Goal: an end query that never returns holds the bus task up for at
/// most `END_QUERY_TIMEOUT`: readings published later are still read and
/// their windows stored, and nothing is flushed. Method: one household's
/// first window, quiet past the idle flush (so the edge asks, and the
/// query hangs), then readings that close that window by event time; the
/// window must be stored well within two more idle flushes.
#[tokio::test(start_paused = true)]
async fn a_hanging_end_query_does_not_stop_the_bus() {
    const T0: i64 = 1_577_145_600_000;
    let log = SharedLog::new(MemLog::new(1, 1_000));
    let reading = |ts_ms: i64| Reading {
        node_id: "house-1".into(),
        power_w: 10.0,
        ts_ms,
    };
    log.append(b"house-1", reading(T0).encode()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let edge = tokio::spawn(run_edge(
        config(DEFAULT_IDLE_FLUSH),
        HangingEnd {
            inner: log.consumer("edge-stall"),
        },
        link(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    sleep(DEFAULT_IDLE_FLUSH * 3).await;
    let stored = || {
        SqliteOutbox::open_read_only(&db)
            .unwrap()
            .all_tuples()
            .unwrap()
            .len()
    };
    assert_eq!(stored(), 0, "an unanswered end query flushes nothing");
    log.append(b"house-1", reading(T0 + 9_000).encode())
        .unwrap();
    wait_acked(&db, 1, DEFAULT_IDLE_FLUSH * 2).await;
    edge.abort();
}

/// A [`MemBus`] whose offset commits fail while `failing` is set: a broker
/// link that drops the commit request at the wrong moment.
struct FailingCommits {
    inner: MemBus,
    failing: Arc<AtomicBool>,
}

impl ReadingsBus for FailingCommits {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        self.inner.poll(records_max).await
    }

    async fn commit(&mut self, offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(BusError::Unavailable("commit: no answer in time".into()));
        }
        self.inner.commit(offsets).await
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        self.inner.at_end().await
    }
}

/// Goal: an offset commit that fails after the stream's last records is
/// tried again until it succeeds, though no record ever comes to carry a
/// "next commit". (Found by the simulation's faults still on at the end of
/// the replay, seed 408: the end-of-stream flush committed, the commit was
/// lost, and the group's offsets stayed behind for good: lag that never
/// clears, and records read again at every restart.) Method: a minute of
/// three households, every commit failing until the end-of-stream flush has
/// stored every window; then commits work again, and within a minute the
/// group must have committed every partition to its end.
#[tokio::test(start_paused = true)]
async fn a_failed_commit_after_the_last_records_is_retried() {
    let (households, oracle) = data_slice(1, 3);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    for reading in edgemeter_data::csv::merged_readings(&households) {
        log.append(reading.node_id.as_bytes(), reading.encode())
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let failing = Arc::new(AtomicBool::new(true));
    let edge = tokio::spawn(run_edge(
        config(DEFAULT_IDLE_FLUSH),
        FailingCommits {
            inner: log.consumer("edge-commits"),
            failing: failing.clone(),
        },
        link(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    wait_acked(&db, oracle.len(), Duration::from_secs(600)).await;
    let all_committed = || {
        log.with(|log| {
            (0..log.partition_count() as i32).all(|partition| {
                log.committed("edge-commits", partition) == log.end_offset(partition)
            })
        })
    };
    assert!(!all_committed(), "every commit failed so far");
    failing.store(false, Ordering::Relaxed);
    sleep(Duration::from_secs(60)).await;
    edge.abort();
    assert!(all_committed(), "the failed commit was tried again");
    assert_equal_to_oracle(&db, &oracle);
}
