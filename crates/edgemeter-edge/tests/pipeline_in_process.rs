//! The edge and the cloud wired together in one process (in-memory bus,
//! real SQLite, the cloud's in-memory cache, a link that calls the cloud
//! directly and loses some replies), with the edge crashed mid-run and
//! restarted from its database. Checks exactly-once against the oracle.
//!
//! Time is tokio's paused clock, so the run is fast and the same each time.

mod common;

use common::data_slice;
use edgemeter_cloud::{Cloud, CloudConfig, MemoryCache};
use edgemeter_data::Household;
use edgemeter_edge::{run_edge, Channel, CloudLink, EdgeConfig, EdgeMonitor, LinkError, Outbox};
use edgemeter_env::SystemClock;
use edgemeter_memlog::{MemLog, SharedLog};
use edgemeter_store::SqliteOutbox;
use edgemeter_wire::store_bucket;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

type TestCloud = Cloud<MemoryCache, SystemClock>;

/// Calls the cloud directly; every `lose_every`-th data reply is lost after
/// the cloud handled the request, as when a connection breaks mid-reply.
struct LossyLink {
    cloud: Arc<TestCloud>,
    lose_every: u64,
    requests: AtomicU64,
}

impl CloudLink for LossyLink {
    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let reply = match channel {
            Channel::Heartbeat(_) => return Ok(self.cloud.handle_heartbeat(&body).await),
            Channel::Data => self.cloud.handle_data(&body).await,
        };
        let count = self.requests.fetch_add(1, Ordering::Relaxed);
        if self.lose_every > 0 && count % self.lose_every == self.lose_every - 1 {
            return Err(LinkError::Unreachable("reply lost".into()));
        }
        Ok(reply)
    }
}

/// Publishes every reading in time order, keyed by household.
fn publish(log: &SharedLog, households: &[Household]) {
    for reading in edgemeter_data::csv::merged_readings(households) {
        log.append(reading.node_id.as_bytes(), reading.encode())
            .unwrap();
    }
}

/// A cloud that serves only `edge-test`, sealed with `key`.
fn strict_cloud(key: edgemeter_wire::EdgeKey) -> Arc<TestCloud> {
    let auth = edgemeter_cloud::CloudAuth {
        allow_unauthenticated: false,
        ..edgemeter_cloud::CloudAuth::open().with_key("edge-test", key)
    };
    Arc::new(Cloud::new(
        CloudConfig {
            auth,
            ..CloudConfig::default()
        },
        MemoryCache::new(),
        SystemClock,
    ))
}

fn lossy_link(cloud: &Arc<TestCloud>, lose_every: u64) -> Arc<LossyLink> {
    Arc::new(LossyLink {
        cloud: cloud.clone(),
        lose_every,
        requests: AtomicU64::new(0),
    })
}

/// Polls the edge's database until every expected tuple is acknowledged and
/// none is queued or sent; fails after ten minutes of (paused) time.
async fn wait_until_all_acked(reader: &mut SqliteOutbox, expected: usize) {
    let mut waited = Duration::ZERO;
    loop {
        let status = reader.status().unwrap();
        if status.acked as usize == expected && status.queued + status.sent == 0 {
            return;
        }
        assert!(
            waited < Duration::from_secs(600),
            "not converged: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}

fn config() -> EdgeConfig {
    let mut config = EdgeConfig::new("edge-test");
    config.heartbeat_interval = Duration::from_millis(100);
    config.idle_flush = Duration::from_millis(500);
    config.batch_tuples_max = 64;
    config.inflight_batches_max = 4;
    config.poll_records_max = 256;
    // Small stores, so that a crash falls between many of them.
    config.store_interval = Duration::from_millis(100);
    config.store_pending_max = 64;
    config
}

#[tokio::test(start_paused = true)]
async fn exactly_once_through_lost_replies_and_an_edge_crash() {
    let (households, oracle) = data_slice(10, 6);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let cloud = Arc::new(Cloud::new(
        CloudConfig::default(),
        MemoryCache::new(),
        SystemClock,
    ));
    let link = lossy_link(&cloud, 5);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");

    // First life: crash (drop the task mid-await) once some tuples are acked.
    let monitor = Arc::new(EdgeMonitor::new());
    let outbox = SqliteOutbox::open(&db).unwrap();
    let first = run_edge(
        config(),
        log.consumer("edge-test"),
        link.clone(),
        outbox,
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    );
    let crash_when_acked = async {
        while monitor.snapshot().tuples_acked < 150 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        result = first => panic!("the edge stopped on its own: {result:?}"),
        _ = crash_when_acked => {}
    }
    let acked_before_crash = monitor.snapshot().tuples_acked;
    assert!(
        acked_before_crash < oracle.len() as u64,
        "the crash came too late to test anything"
    );

    // Second life: a new consumer from the committed offsets, the same database.
    let monitor = Arc::new(EdgeMonitor::new());
    let outbox = SqliteOutbox::open(&db).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-test"),
        link.clone(),
        outbox,
        SystemClock,
        monitor.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut reader = SqliteOutbox::open(&db).unwrap();
    wait_until_all_acked(&mut reader, oracle.len()).await;
    stop.send(()).unwrap();
    second.await.unwrap().unwrap();

    let stored = reader.all_tuples().unwrap();
    assert_eq!(stored.len(), oracle.len(), "a window was lost or doubled");
    let cached = cloud.cache().snapshot();
    assert_eq!(
        cached.len(),
        oracle.len(),
        "the cloud holds each tuple exactly once"
    );
    for tuple in &stored {
        let expected = &oracle[&(tuple.node_id.clone(), tuple.window_start_ms)];
        assert_eq!(tuple.average_w.to_bits(), expected.average_w.to_bits());
        assert_eq!(tuple.sent, 2);
        let key = format!(
            "tuple:edge-test:{}:{}",
            tuple.node_id, tuple.window_start_ms
        );
        let in_cloud = cached
            .get(&key)
            .unwrap_or_else(|| panic!("{key} missing in the cloud"));
        assert_eq!(in_cloud.average_w.to_bits(), tuple.average_w.to_bits());
        assert_eq!(
            Some(in_cloud.postal_code.as_str()),
            tuple.postal_code.as_deref()
        );
    }
    assert!(
        cloud.counters().tuples_repeated > 0,
        "lost replies must have caused resends"
    );
}

/// An outbox whose database is capped at a page limit that a switch can
/// lift, standing in for a disk that fills and then gets space again. It
/// also records how many windows and records each store carried.
struct CappedOutbox {
    inner: SqliteOutbox,
    full: Arc<std::sync::atomic::AtomicBool>,
    capped: bool,
    store_sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl CappedOutbox {
    fn open(db: &Path, full: bool) -> CappedOutbox {
        CappedOutbox {
            inner: SqliteOutbox::open(db).unwrap(),
            full: Arc::new(std::sync::atomic::AtomicBool::new(full)),
            capped: false,
            store_sizes: Arc::default(),
        }
    }
}

impl CappedOutbox {
    fn apply_cap(&mut self) {
        let full = self.full.load(Ordering::Relaxed);
        if full != self.capped {
            // The current size is the floor SQLite allows: no page more fits.
            self.inner
                .set_page_limit(if full { 1 } else { 1 << 30 })
                .unwrap();
            self.capped = full;
        }
    }
}

impl Outbox for CappedOutbox {
    fn store_closed(
        &mut self,
        tuples: &[edgemeter_edge::NewTuple],
        rejected: &[edgemeter_edge::RejectedRecord],
        now_ms: i64,
    ) -> Result<edgemeter_edge::StoreOutcome, edgemeter_edge::StoreError> {
        self.apply_cap();
        self.store_sizes
            .lock()
            .unwrap()
            .push(tuples.len() + rejected.len());
        self.inner.store_closed(tuples, rejected, now_ms)
    }
    fn unacked_after(
        &mut self,
        after_id: i64,
        limit: usize,
        include_sent: bool,
    ) -> Result<Vec<edgemeter_wire::TupleOut>, edgemeter_edge::StoreError> {
        self.inner.unacked_after(after_id, limit, include_sent)
    }
    fn mark_sent(&mut self, ids: &[i64], now_ms: i64) -> Result<(), edgemeter_edge::StoreError> {
        self.inner.mark_sent(ids, now_ms)
    }
    fn mark_acked(
        &mut self,
        acks: &[edgemeter_wire::TupleAck],
        epochs: &[Option<u64>],
        now_ms: i64,
    ) -> Result<edgemeter_edge::AckOutcome, edgemeter_edge::StoreError> {
        self.inner.mark_acked(acks, epochs, now_ms)
    }
    fn acked_not_under(
        &mut self,
        epochs: &[u64; edgemeter_wire::STORE_BUCKETS],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<edgemeter_wire::TupleOut>, edgemeter_edge::StoreError> {
        self.inner.acked_not_under(epochs, after_id, limit)
    }
    fn delete_acked_before(&mut self, cutoff_ms: i64) -> Result<usize, edgemeter_edge::StoreError> {
        self.inner.delete_acked_before(cutoff_ms)
    }
    fn status(&mut self) -> Result<edgemeter_edge::StatusCounts, edgemeter_edge::StoreError> {
        self.inner.status()
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_pauses_consumption_and_loses_nothing() {
    let (households, oracle) = data_slice(20, 4);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    let cloud = Arc::new(Cloud::new(
        CloudConfig::default(),
        MemoryCache::new(),
        SystemClock,
    ));
    let link = lossy_link(&cloud, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let outbox = CappedOutbox::open(&db, true);
    let full = outbox.full.clone();
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-test"),
        link,
        outbox,
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    publish(&log, &households);
    // The disk is full: writes fail, the edge stops consuming and says so.
    let mut waited = 0;
    while monitor.snapshot().store_errors == 0 || monitor.snapshot().consuming {
        assert!(waited < 6_000, "the edge never noticed the full disk");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let paused = monitor.snapshot();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!monitor.snapshot().consuming);
    assert!(
        monitor.snapshot().readings - paused.readings <= config().poll_records_max as u64 * 3,
        "a paused edge reads at most what was already polled"
    );
    assert_eq!(
        log.with(|log| log.committed("edge-test", 0)
            + log.committed("edge-test", 1)
            + log.committed("edge-test", 2)),
        0,
        "nothing is committed while nothing is stored"
    );
    // Space returns: the edge resumes and everything arrives exactly once.
    full.store(false, Ordering::Relaxed);
    let mut reader = SqliteOutbox::open(&db).unwrap();
    wait_until_all_acked(&mut reader, oracle.len()).await;
    assert!(monitor.snapshot().consuming);
    assert_eq!(cloud.cache().len(), oracle.len());
    edge.abort();
}

/// Goal: closed windows are stored many per transaction, and never more at
/// once than `store_pending_max` plus one poll. Method: ten households'
/// six minutes published at ten times real time, so windows close a few at
/// a time; the sizes of the stores the edge made are recorded.
#[tokio::test(start_paused = true)]
async fn closed_windows_are_stored_in_few_bounded_transactions() {
    let (households, oracle) = data_slice(10, 6);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    let publisher = common::spawn_paced_publisher(&log, &households, 10);
    let cloud = Arc::new(Cloud::new(
        CloudConfig::default(),
        MemoryCache::new(),
        SystemClock,
    ));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let outbox = CappedOutbox::open(&db, false);
    let store_sizes = outbox.store_sizes.clone();
    let mut config = config();
    config.store_interval = Duration::from_secs(1);
    config.store_pending_max = 100;
    let edge = tokio::spawn(run_edge(
        config.clone(),
        log.consumer("edge-test"),
        lossy_link(&cloud, 0),
        outbox,
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    publisher.await.unwrap();
    let mut reader = SqliteOutbox::open(&db).unwrap();
    wait_until_all_acked(&mut reader, oracle.len()).await;
    edge.abort();
    let sizes = store_sizes.lock().unwrap().clone();
    let bound = config.store_pending_max + config.poll_records_max;
    assert!(
        sizes.iter().all(|&size| size <= bound),
        "a store above {bound}: {sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), oracle.len());
    assert!(
        sizes.len() * 5 <= oracle.len(),
        "{} windows took {} stores",
        oracle.len(),
        sizes.len()
    );
}

#[tokio::test(start_paused = true)]
async fn an_authenticated_edge_ships_to_a_strict_cloud() {
    use edgemeter_wire::EdgeKey;
    let (households, oracle) = data_slice(2, 3);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let key = EdgeKey::from_bytes([42; 32]);
    let cloud = strict_cloud(key.clone());
    let link = lossy_link(&cloud, 0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let mut edge_config = config();
    edge_config.key = Some(key);
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        edge_config,
        log.consumer("edge-test"),
        link,
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    let mut reader = SqliteOutbox::open(&db).unwrap();
    wait_until_all_acked(&mut reader, oracle.len()).await;
    assert_eq!(cloud.cache().len(), oracle.len());
    assert_eq!(cloud.counters().unauthenticated, 0);
    edge.abort();
}

/// Goal: a key sent on `key_updates` replaces the edge's key without a
/// restart: an edge whose key the cloud does not know ships nothing, and
/// once it is handed the cloud's key every tuple is acknowledged. Method:
/// a strict cloud that holds only key B, an edge started with key A; wait
/// until every tuple is stored and none acknowledged (the cloud refusing
/// the edge), then send B on the channel.
#[tokio::test(start_paused = true)]
async fn a_replaced_key_is_used_from_the_next_request() {
    use edgemeter_wire::EdgeKey;
    let (households, oracle) = data_slice(2, 3);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let (old, new) = (EdgeKey::from_bytes([1; 32]), EdgeKey::from_bytes([2; 32]));
    let cloud = strict_cloud(new.clone());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let (updates, receiver) = tokio::sync::watch::channel(Some(old.clone()));
    let mut edge_config = config();
    edge_config.key = Some(old);
    edge_config.key_updates = Some(receiver);
    let edge = tokio::spawn(run_edge(
        edge_config,
        log.consumer("edge-test"),
        lossy_link(&cloud, 0),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    let mut reader = SqliteOutbox::open(&db).unwrap();
    let mut waited = Duration::ZERO;
    while reader.status().unwrap().queued as usize != oracle.len() {
        assert!(
            waited < Duration::from_secs(600),
            "the tuples are not stored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert_eq!(reader.status().unwrap().acked, 0);
    assert!(cloud.cache().is_empty());
    assert!(
        cloud.counters().unauthenticated > 0,
        "the old key's heartbeats were refused"
    );
    updates.send_replace(Some(new));
    wait_until_all_acked(&mut reader, oracle.len()).await;
    assert_eq!(cloud.cache().len(), oracle.len());
    edge.abort();
}

/// A cloud of a previous version, as far as the wire goes: it refuses the
/// heartbeat versions from `refused_from` up (4: the cloud before store
/// buckets; 3: the one before the backlog) as malformed, with the error
/// reply those clouds sent, and a version-3 batch with the version-1
/// rejection they sent; it answers everything else as this cloud does.
struct PreviousCloudLink {
    cloud: Arc<TestCloud>,
    refused_from: u8,
    refused: AtomicU64,
}

impl CloudLink for PreviousCloudLink {
    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let version = body.get(3).copied().unwrap_or(0);
        match channel {
            Channel::Heartbeat(_) if body.starts_with(b"EMH") && version >= self.refused_from => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Ok(edgemeter_wire::legacy::error_reply(
                    "invalid: not a heartbeat",
                ))
            }
            Channel::Heartbeat(_) => Ok(self.cloud.handle_heartbeat(&body).await),
            Channel::Data if body.starts_with(b"EMQ\x03") => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Ok(edgemeter_wire::BatchReply {
                    version: edgemeter_wire::WireVersion::V1,
                    request_id: 0,
                    outcome: edgemeter_wire::ReplyOutcome::Rejected(
                        "not a version-1 or version-2 batch request".into(),
                    ),
                }
                .encode())
            }
            Channel::Data => Ok(self.cloud.handle_data(&body).await),
        }
    }
}

/// Goal: an edge of this version reports its backlog in its heartbeats to
/// this cloud, and still delivers everything exactly once to clouds of the
/// previous versions, which refuse its newest heartbeats: it falls back one
/// version per refusal (4 to 3 for the cloud before store buckets, then 3
/// to 2 for the one before the backlog) instead of taking the cloud for
/// dead, and never sends such a cloud a version-3 batch. The monitor shows
/// the outbox drained and the round trips measured. Method: the same data
/// through the three clouds, then each cloud's view of the edge.
#[tokio::test(start_paused = true)]
async fn the_backlog_reaches_this_cloud_and_an_older_cloud_still_gets_everything() {
    let (households, oracle) = data_slice(5, 3);
    // 0: this cloud; 4 and 3: the versions a previous cloud refuses from.
    for refused_from in [0u8, 4, 3] {
        let previous = refused_from != 0;
        let log = SharedLog::new(MemLog::new(3, 1_000_000));
        publish(&log, &households);
        let cloud = Arc::new(Cloud::new(
            CloudConfig::default(),
            MemoryCache::new(),
            SystemClock,
        ));
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let monitor = Arc::new(EdgeMonitor::new());
        let older = Arc::new(PreviousCloudLink {
            cloud: cloud.clone(),
            refused_from,
            refused: AtomicU64::new(0),
        });
        let outbox = SqliteOutbox::open(&db).unwrap();
        let edge = if previous {
            tokio::spawn(run_edge(
                config(),
                log.consumer("edge-test"),
                older.clone(),
                outbox,
                SystemClock,
                monitor.clone(),
                std::future::pending(),
            ))
        } else {
            tokio::spawn(run_edge(
                config(),
                log.consumer("edge-test"),
                lossy_link(&cloud, 0),
                outbox,
                SystemClock,
                monitor.clone(),
                std::future::pending(),
            ))
        };
        let mut reader = SqliteOutbox::open(&db).unwrap();
        wait_until_all_acked(&mut reader, oracle.len()).await;
        // A few heartbeats more, so that one reads the drained outbox.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gauges = monitor.snapshot().outbox.expect("the outbox was read");
        assert_eq!(
            (gauges.queued, gauges.sent, gauges.acked),
            (0, 0, oracle.len() as u64)
        );
        assert_eq!(gauges.oldest_unacked_queued_ms, None);
        assert!(monitor.round_trips.snapshot().count > 0);
        assert_eq!(cloud.counters().tuples_stored, oracle.len() as u64);
        let views = cloud.edge_views();
        assert_eq!(views.len(), 1);
        assert!(views[0].alive);
        if refused_from == 3 {
            assert_eq!(views[0].backlog, None, "the oldest cloud hears no backlog");
            assert_eq!(
                older.refused.load(Ordering::Relaxed),
                2,
                "one refusal per version, then version 2 until the retry interval"
            );
        } else if previous {
            assert_eq!(views[0].backlog, Some(edgemeter_wire::Backlog::default()));
            assert_eq!(
                older.refused.load(Ordering::Relaxed),
                1,
                "one refusal of version 4, and no version-3 batch"
            );
        } else {
            assert_eq!(views[0].backlog, Some(edgemeter_wire::Backlog::default()));
        }
        edge.abort();
    }
}

/// A wall clock that follows tokio's (paused) time, so that the cloud's
/// instance lease expires as the test's time moves.
#[derive(Clone)]
struct TokioClock(tokio::time::Instant);

impl edgemeter_env::WallClock for TokioClock {
    fn now_ms(&self) -> i64 {
        1_700_000_000_000 + self.0.elapsed().as_millis() as i64
    }
}

type LeaseCloud = Cloud<MemoryCache, TokioClock>;

/// Every request straight to the cloud.
struct DirectLink(Arc<LeaseCloud>);

impl CloudLink for DirectLink {
    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        Ok(match channel {
            Channel::Heartbeat(_) => self.0.handle_heartbeat(&body).await,
            Channel::Data => self.0.handle_data(&body).await,
        })
    }
}

fn lease_cloud() -> Arc<LeaseCloud> {
    let clock = TokioClock(tokio::time::Instant::now());
    Arc::new(Cloud::new(
        CloudConfig::default(),
        MemoryCache::new(),
        clock,
    ))
}

/// Waits until every acknowledged tuple stands under one of the cloud's
/// current bucket epochs: the refill is done.
async fn wait_until_refilled(reader: &SqliteOutbox, cloud: &LeaseCloud) {
    let mut waited = Duration::ZERO;
    loop {
        let epochs = cloud.cache().epochs();
        let left = reader.acked_not_under_count(&epochs).unwrap();
        if !epochs.contains(&0) && left == 0 {
            return;
        }
        assert!(waited < Duration::from_secs(600), "{left} not refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
}

/// Goal: the loss of some store buckets (a shard restarted empty) makes
/// the edge ship again exactly the tuples of those buckets, and nothing of
/// the others; the cloud ends holding every tuple once. Method: drain a
/// slice through a cloud, lose the buckets of a third of the households,
/// wait for the refill, then count what was reshipped, what the cloud saw
/// again and what it holds.
#[tokio::test(start_paused = true)]
async fn losing_some_buckets_reships_exactly_their_tuples() {
    let (households, oracle) = data_slice(10, 3);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let cloud = lease_cloud();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-test"),
        Arc::new(DirectLink(cloud.clone())),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    let mut reader = SqliteOutbox::open(&db).unwrap();
    wait_until_all_acked(&mut reader, oracle.len()).await;
    wait_until_refilled(&reader, &cloud).await;
    let lost: BTreeSet<u16> = households
        .iter()
        .step_by(3)
        .map(|household| store_bucket(&household.node_id))
        .collect();
    let in_lost = |node_id: &str| lost.contains(&store_bucket(node_id));
    let lost_tuples = reader
        .all_tuples()
        .unwrap()
        .iter()
        .filter(|tuple| in_lost(&tuple.node_id))
        .count() as u64;
    assert!(
        lost_tuples > 0 && lost_tuples < oracle.len() as u64,
        "{lost_tuples}"
    );
    let (reshipped, counters) = (monitor.snapshot().tuples_reshipped, cloud.counters());
    cloud.cache().lose_buckets(&lost);
    assert_eq!(
        cloud.cache().len() as u64,
        oracle.len() as u64 - lost_tuples
    );
    // A heartbeat or two renews the lost buckets' epochs, then the refill runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_until_refilled(&reader, &cloud).await;
    assert_eq!(
        cloud.cache().len(),
        oracle.len(),
        "the cloud holds every tuple again"
    );
    assert_eq!(
        monitor.snapshot().tuples_reshipped - reshipped,
        lost_tuples,
        "exactly the lost buckets' tuples were shipped again"
    );
    let after = cloud.counters();
    assert_eq!(after.tuples_stored - counters.tuples_stored, lost_tuples);
    assert_eq!(
        after.tuples_repeated, counters.tuples_repeated,
        "no tuple of a kept bucket reached the cloud again"
    );
    for tuple in reader.all_tuples().unwrap() {
        let epoch = cloud.cache().epochs()[usize::from(store_bucket(&tuple.node_id))];
        assert_eq!(tuple.acked_epoch, Some(epoch), "{}", tuple.node_id);
    }
    edge.abort();
}

/// Goal: one edge id, one process: a second process with the id of a live
/// edge (its own database and consumer group) is refused by the cloud, and
/// while refused it ships nothing, commits no offset and says so in its
/// monitor, yet keeps heartbeating; once the first edge is gone for one
/// lease it is accepted, consumes, and the cloud still holds each tuple
/// once. Method: two edges on one cloud whose lease follows tokio's time.
#[tokio::test(start_paused = true)]
async fn a_second_process_with_a_live_edge_id_is_refused_until_the_lease_expires() {
    let (households, oracle) = data_slice(5, 3);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    publish(&log, &households);
    let cloud = lease_cloud();
    let dir = tempfile::tempdir().unwrap();
    let (first_db, second_db) = (dir.path().join("first.db"), dir.path().join("second.db"));
    let mut first_config = config();
    first_config.instance = 0x1111;
    let first = tokio::spawn(run_edge(
        first_config,
        log.consumer("edge-test"),
        Arc::new(DirectLink(cloud.clone())),
        SqliteOutbox::open(&first_db).unwrap(),
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        std::future::pending(),
    ));
    let mut first_reader = SqliteOutbox::open(&first_db).unwrap();
    wait_until_all_acked(&mut first_reader, oracle.len()).await;

    let mut second_config = config();
    second_config.instance = 0x2222;
    let monitor = Arc::new(EdgeMonitor::new());
    let second = tokio::spawn(run_edge(
        second_config,
        log.consumer("second-group"),
        Arc::new(DirectLink(cloud.clone())),
        SqliteOutbox::open(&second_db).unwrap(),
        SystemClock,
        monitor.clone(),
        std::future::pending(),
    ));
    let heartbeats = cloud.counters().heartbeats;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = monitor.snapshot();
    assert!(refused.refused, "{refused:?}");
    assert_eq!(refused.batches_sent, 0, "a refused edge ships nothing");
    assert!(
        cloud.counters().heartbeats > heartbeats + 20,
        "both keep heartbeating"
    );
    let committed: i64 = (0..3)
        .map(|partition| log.with(|log| log.committed("second-group", partition)))
        .sum();
    assert_eq!(committed, 0, "a refused edge commits no offset");
    assert!(cloud.counters().instances_refused > 0);

    first.abort();
    let _ = first.await;
    let mut second_reader = SqliteOutbox::open(&second_db).unwrap();
    wait_until_all_acked(&mut second_reader, oracle.len()).await;
    let accepted = monitor.snapshot();
    assert!(
        !accepted.refused && accepted.batches_sent > 0,
        "{accepted:?}"
    );
    let committed: i64 = (0..3)
        .map(|partition| log.with(|log| log.committed("second-group", partition)))
        .sum();
    assert!(committed > 0, "commits resume once accepted");
    assert_eq!(cloud.cache().len(), oracle.len(), "each tuple once");
    assert_eq!(cloud.counters().conflicts, 0);
    second.abort();
}
