//! The edge with a link to two cloud nodes in one process: one heartbeat
//! per node, data to whichever node is up.
//!
//! Goal: while one node is down the edge stays connected through the other
//! and keeps shipping; the monitor shows which node answers; once both are
//! down the edge is disconnected and ships nothing; and every tuple is
//! acknowledged exactly once in the end. Method: the in-memory bus, real
//! SQLite, the cloud's in-memory cache behind a link whose nodes can be
//! switched off (a node that is off answers neither its heartbeats nor
//! data; data goes to the other node, as NNG's data socket resends it),
//! with tokio's paused clock and readings published at 10x.

mod common;

use common::data_slice;
use edgemeter_cloud::{Cloud, CloudConfig, MemoryCache};
use edgemeter_edge::{run_edge, Channel, CloudLink, EdgeConfig, EdgeMonitor, LinkError, Outbox};
use edgemeter_env::SystemClock;
use edgemeter_memlog::{MemLog, SharedLog};
use edgemeter_store::SqliteOutbox;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

type TestCloud = Cloud<MemoryCache, SystemClock>;

const NODES: usize = 2;

/// Two nodes in front of one cloud (one shared store).
struct TwoNodes {
    cloud: Arc<TestCloud>,
    up: [AtomicBool; NODES],
    /// Heartbeats each node answered.
    heartbeats: [AtomicU64; NODES],
    /// Data requests each node answered.
    batches: [AtomicU64; NODES],
    /// Alternates data between the nodes that are up.
    next: AtomicU64,
}

impl TwoNodes {
    fn is_up(&self, node: usize) -> bool {
        self.up[node].load(Ordering::SeqCst)
    }

    fn set_up(&self, node: usize, up: bool) {
        self.up[node].store(up, Ordering::SeqCst);
    }
}

impl CloudLink for TwoNodes {
    fn nodes(&self) -> usize {
        NODES
    }

    fn node_name(&self, node: usize) -> String {
        format!("node-{node}")
    }

    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let down = || Err(LinkError::Unreachable("node down".into()));
        match channel {
            Channel::Heartbeat(node) => {
                if !self.is_up(node) {
                    return down();
                }
                self.heartbeats[node].fetch_add(1, Ordering::SeqCst);
                Ok(self.cloud.handle_heartbeat(&body).await)
            }
            Channel::Data => {
                let first = self.next.fetch_add(1, Ordering::SeqCst) as usize % NODES;
                let Some(node) = (0..NODES)
                    .map(|step| (first + step) % NODES)
                    .find(|&node| self.is_up(node))
                else {
                    return down();
                };
                self.batches[node].fetch_add(1, Ordering::SeqCst);
                Ok(self.cloud.handle_data(&body).await)
            }
        }
    }
}

fn config() -> EdgeConfig {
    let mut config = EdgeConfig::new("edge-nodes");
    config.heartbeat_interval = Duration::from_millis(100);
    config.heartbeat_timeout = Duration::from_millis(100);
    config.idle_flush = Duration::from_millis(500);
    config.batch_tuples_max = 16;
    config.inflight_batches_max = 2;
    config
}

/// Sleeps in paused time until `condition` holds; fails after `limit`.
async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while !condition() {
        assert!(waited < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(step).await;
        waited += step;
    }
}

#[tokio::test(start_paused = true)]
async fn one_node_down_keeps_the_edge_connected_and_shipping() {
    let (households, oracle) = data_slice(10, 6);
    let log = SharedLog::new(MemLog::new(3, 1_000_000));
    // Ten minutes of readings in a minute of (paused) time: the faults
    // fall in the middle of the stream.
    let publisher = common::spawn_paced_publisher(&log, &households, 10);
    let cloud = Arc::new(Cloud::new(
        CloudConfig::default(),
        MemoryCache::new(),
        SystemClock,
    ));
    let link = Arc::new(TwoNodes {
        cloud: cloud.clone(),
        up: [AtomicBool::new(true), AtomicBool::new(true)],
        heartbeats: Default::default(),
        batches: Default::default(),
        next: AtomicU64::new(0),
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    let monitor = Arc::new(EdgeMonitor::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let edge = tokio::spawn(run_edge(
        config(),
        log.consumer("edge-nodes"),
        link.clone(),
        SqliteOutbox::open(&db).unwrap(),
        SystemClock,
        monitor.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let limit = Duration::from_secs(60);
    let node_connected = |node: usize| {
        // Empty until the edge task has started.
        monitor
            .cloud_nodes()
            .get(node)
            .is_some_and(|state| state.connected)
    };
    wait_for("both nodes answer", limit, || {
        node_connected(0) && node_connected(1)
    })
    .await;
    let names: Vec<String> = monitor
        .cloud_nodes()
        .into_iter()
        .map(|node| node.name)
        .collect();
    assert_eq!(names, ["node-0", "node-1"]);
    wait_for("some tuples acknowledged", limit, || {
        monitor.snapshot().tuples_acked >= 40
    })
    .await;
    assert!(link.batches[0].load(Ordering::SeqCst) > 0);
    assert!(link.batches[1].load(Ordering::SeqCst) > 0);

    // Node 1 goes down: the edge notices, stays connected, keeps shipping.
    link.set_up(1, false);
    wait_for("node 1 marked down", limit, || !node_connected(1)).await;
    assert!(monitor.connected(), "node 0 still answers");
    let acked = monitor.snapshot().tuples_acked;
    assert!(
        acked < oracle.len() as u64,
        "the outage came too late to test anything"
    );
    wait_for("shipping goes on through node 0", limit, || {
        monitor.snapshot().tuples_acked >= acked + 40
    })
    .await;
    assert!(monitor.connected());

    // Both down: disconnected, and nothing more is sent.
    link.set_up(0, false);
    wait_for("the edge disconnected", limit, || !monitor.connected()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = monitor.snapshot().batches_sent;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        monitor.snapshot().batches_sent,
        sent,
        "no batch while no node answers"
    );

    // Node 1 returns alone: connected again, and it carries the rest.
    link.set_up(1, true);
    wait_for("node 1 back", limit, || {
        node_connected(1) && monitor.connected()
    })
    .await;
    assert!(!node_connected(0));
    let mut reader = SqliteOutbox::open(&db).unwrap();
    wait_for("every tuple acknowledged", Duration::from_secs(600), || {
        let status = reader.status().unwrap();
        status.acked as usize == oracle.len() && status.queued + status.sent == 0
    })
    .await;
    stop.send(()).unwrap();
    edge.await.unwrap().unwrap();
    publisher.await.unwrap();

    assert_eq!(reader.all_tuples().unwrap().len(), oracle.len());
    assert_eq!(
        cloud.cache().snapshot().len(),
        oracle.len(),
        "the shared store holds each tuple exactly once"
    );
    assert!(link.heartbeats[0].load(Ordering::SeqCst) > 0);
}
