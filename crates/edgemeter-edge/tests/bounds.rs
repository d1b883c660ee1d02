//! The edge's bounds, each shown enforced by the real driver (`run_edge`)
//! over an in-memory bus, real SQLite and an in-process cloud: the bytes
//! kept of a rejected record, the in-flight window, the request timeout and
//! the capped backoff against an unreachable broker, and slow commits.
//!
//! Time is tokio's paused clock: timers fire in order and at once, so the
//! runs are fast and their timings exact.

mod common;

use edgemeter_checker::oracle_windows;
use edgemeter_cloud::{Cloud, CloudConfig, MemoryCache};
use edgemeter_data::Household;
use edgemeter_edge::edge::REJECTED_BYTES_MAX;
use edgemeter_edge::{
    run_edge, BusError, BusRecord, Channel, CloudLink, EdgeConfig, EdgeMonitor, LinkError, Outbox,
    ReadingsBus,
};
use edgemeter_env::SystemClock;
use edgemeter_memlog::{MemLog, SharedLog};
use edgemeter_store::SqliteOutbox;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type TestCloud = Cloud<MemoryCache, SystemClock>;

fn households(minutes: i64, count: usize) -> Vec<Household> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gem-house-1h");
    let (mut households, _) = edgemeter_data::load_dir(&data, Some(minutes * 60 * 1000)).unwrap();
    households.truncate(count);
    households
}

fn publish(log: &SharedLog, households: &[Household]) {
    for reading in edgemeter_data::csv::merged_readings(households) {
        log.append(reading.node_id.as_bytes(), reading.encode())
            .unwrap();
    }
}

fn config() -> EdgeConfig {
    let mut config = EdgeConfig::new("edge-bounds");
    config.heartbeat_interval = Duration::from_millis(100);
    config.idle_flush = Duration::from_millis(500);
    config.batch_tuples_max = 16;
    config.inflight_batches_max = 4;
    config.poll_records_max = 256;
    config
}

fn cloud() -> Arc<TestCloud> {
    Arc::new(Cloud::new(
        CloudConfig::default(),
        MemoryCache::new(),
        SystemClock,
    ))
}

/// Waits (in paused time) until `expected` tuples are acknowledged and none
/// is left queued or sent.
async fn wait_until_all_acked(db: &Path, expected: usize) {
    let mut reader = SqliteOutbox::open(db).unwrap();
    for _ in 0..6_000 {
        let status = reader.status().unwrap();
        if status.acked as usize == expected && status.queued + status.sent == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not converged: {:?}", reader.status().unwrap());
}

/// Calls the cloud directly, holding every data request for `hold` and
/// never answering the first `unanswered` of them; records how many data
/// requests were in flight at once.
struct CountingLink {
    cloud: Arc<TestCloud>,
    hold: Duration,
    unanswered: u64,
    data_requests: AtomicU64,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

impl CountingLink {
    fn new(cloud: &Arc<TestCloud>, hold: Duration, unanswered: u64) -> Arc<CountingLink> {
        Arc::new(CountingLink {
            cloud: cloud.clone(),
            hold,
            unanswered,
            data_requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            in_flight_max: AtomicUsize::new(0),
        })
    }
}

/// Counts a request out of flight however its future ends (the edge drops
/// the ones it gave up on).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl CloudLink for CountingLink {
    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        if matches!(channel, Channel::Heartbeat(_)) {
            return Ok(self.cloud.handle_heartbeat(&body).await);
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _counted = InFlight(&self.in_flight);
        self.in_flight_max.fetch_max(now, Ordering::SeqCst);
        if self.data_requests.fetch_add(1, Ordering::SeqCst) < self.unanswered {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(self.hold).await;
        Ok(self.cloud.handle_data(&body).await)
    }
}

/// Goal: the edge never has more data requests in flight than its window,
/// however far the cloud falls behind. Method: a cloud that takes a second
/// per batch, and a backlog of many batches; the most requests seen at once
/// must be exactly the window: reached, and never passed.
#[tokio::test(start_paused = true)]
async fn the_edge_keeps_at_most_its_window_of_batches_in_flight() {
    let households = households(10, 6);
    let expected = oracle_windows(&households).len();
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let cloud = cloud();
    let link = CountingLink::new(&cloud, Duration::from_secs(1), 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let edge = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-bounds"),
        link.clone(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    wait_until_all_acked(&db, expected).await;
    edge.abort();
    assert!(
        expected > 10 * config().batch_tuples_max,
        "the backlog must span many batches"
    );
    assert_eq!(
        link.in_flight_max.load(Ordering::SeqCst),
        config().inflight_batches_max
    );
    assert_eq!(cloud.cache().len(), expected);
}

/// Goal: a request the cloud never answers costs the edge its request
/// timeout, not a batch: the batch is sent again, and every tuple arrives
/// once. Method: the first three data requests hang forever.
#[tokio::test(start_paused = true)]
async fn an_unanswered_request_times_out_and_is_sent_again() {
    let households = households(2, 3);
    let expected = oracle_windows(&households).len();
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let cloud = cloud();
    let link = CountingLink::new(&cloud, Duration::ZERO, 3);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-bounds"),
        link.clone(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    wait_until_all_acked(&db, expected).await;
    edge.abort();
    assert!(monitor.snapshot().batches_failed >= 3);
    assert_eq!(
        link.in_flight.load(Ordering::SeqCst),
        0,
        "timed-out requests were dropped, not left hanging"
    );
    assert_eq!(cloud.cache().len(), expected);
}

/// Goal: a record far over the wire's size limit is refused, counted and
/// kept for diagnosis, but only its first [`REJECTED_BYTES_MAX`] bytes.
#[tokio::test(start_paused = true)]
async fn a_rejected_record_keeps_at_most_its_first_bytes() {
    let log = SharedLog::new(MemLog::new(1, 100));
    let huge = vec![b'x'; 3 * REJECTED_BYTES_MAX];
    log.append(b"house", huge).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-bounds"),
        CountingLink::new(&cloud(), Duration::ZERO, 0),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    let mut reader = SqliteOutbox::open(&db).unwrap();
    for _ in 0..600 {
        if reader.status().unwrap().rejected == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.abort();
    assert_eq!(monitor.snapshot().rejected, 1);
    let sql = rusqlite::Connection::open(&db).unwrap();
    let (kind, kept): (String, usize) = sql
        .query_row("SELECT kind, length(raw) FROM rejected", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(kind, "too_large");
    assert_eq!(kept, REJECTED_BYTES_MAX);
}

/// A broker that never answers; records when each poll came.
struct DeadBus {
    polls: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl ReadingsBus for DeadBus {
    async fn poll(&mut self, _records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        self.polls.lock().unwrap().push(tokio::time::Instant::now());
        Err(BusError::Unavailable("connection refused".into()))
    }

    async fn commit(&mut self, _: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        Err(BusError::Unavailable("connection refused".into()))
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        Err(BusError::Unavailable("connection refused".into()))
    }
}

/// The longest pause between two polls of an unreachable broker
/// (`BUS_BACKOFF_MAX` in `edge.rs`).
const BUS_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Goal: an unreachable broker is polled with a backoff that grows, so the
/// edge does not spin, and is capped, so the edge notices a returning
/// broker within seconds. Method: a broker that never answers, two minutes
/// of paused time, and the pauses between its polls.
#[tokio::test(start_paused = true)]
async fn an_unreachable_broker_is_polled_with_a_capped_backoff() {
    let polls = Arc::new(Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let edge = tokio::spawn(run_edge(
        config(),
        DeadBus {
            polls: polls.clone(),
        },
        CountingLink::new(&cloud(), Duration::ZERO, 0),
        SqliteOutbox::open(&dir.path().join("edge.db")).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_secs(120)).await;
    edge.abort();
    let polls = polls.lock().unwrap().clone();
    let gaps: Vec<Duration> = polls.windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert!(gaps.len() > 20, "{gaps:?}");
    assert!(gaps[0] <= Duration::from_millis(200), "{gaps:?}");
    assert!(
        gaps.windows(2).all(|pair| pair[0] <= pair[1]),
        "the pause only grows while the broker stays away: {gaps:?}"
    );
    assert!(gaps.iter().all(|gap| *gap <= BUS_BACKOFF_MAX), "{gaps:?}");
    assert_eq!(gaps.last(), Some(&BUS_BACKOFF_MAX), "{gaps:?}");
}

/// A bus whose commits take `commit_takes` each, as a slow broker's.
struct SlowCommitBus {
    inner: edgemeter_memlog::MemBus,
    commit_takes: Duration,
}

impl ReadingsBus for SlowCommitBus {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        self.inner.poll(records_max).await
    }

    async fn commit(&mut self, offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        tokio::time::sleep(self.commit_takes).await;
        self.inner.commit(offsets).await
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        self.inner.at_end().await
    }
}

/// Goal: commits slower than the stream hold nothing up (at most one set of
/// offsets waits for the bus, the newest), and the last one lands: once the
/// stream is quiet, the group's offsets reach the end of the log. Method:
/// readings published at ten times real time, each commit taking 5 s.
#[tokio::test(start_paused = true)]
async fn slow_commits_hold_nothing_up_and_the_last_one_lands() {
    let households = households(6, 10);
    let expected = oracle_windows(&households).len();
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    let publisher = common::spawn_paced_publisher(&log, &households, 10);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let edge = tokio::spawn(run_edge(
        config(),
        SlowCommitBus {
            inner: log.consumer("edge-bounds"),
            commit_takes: Duration::from_secs(5),
        },
        CountingLink::new(&cloud(), Duration::ZERO, 0),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    publisher.await.unwrap();
    wait_until_all_acked(&db, expected).await;
    let offsets = |log: &MemLog| -> Vec<(i64, i64)> {
        (0..3)
            .map(|partition| {
                (
                    log.committed("edge-bounds", partition),
                    log.end_offset(partition),
                )
            })
            .collect()
    };
    for _ in 0..600 {
        if log.with(|log| offsets(log).iter().all(|(done, end)| done == end)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = log.with(|log| offsets(log));
    assert!(
        last.iter().all(|(done, end)| done == end),
        "the last commit never landed: (committed, end) per partition {last:?}"
    );
    edge.abort();
}
