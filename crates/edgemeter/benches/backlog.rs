//! The backlog bench: how fast the edge drains a backlog to a real cloud
//! and Redis, against how fast NATS JetStream acknowledges as many
//! messages, in one run on one machine. Printed, never asserted (timings
//! depend on the machine).
//!
//! - **EdgeMeter**: an outbox (`SqliteOutbox`) is filled with
//!   `BACKLOG_TUPLES` queued tuples, 50 households' consecutive windows (not
//!   timed); then the production edge (`run_edge` over the real `NngLink`)
//!   ships them to the production cloud (`Cloud` over `NngServer`, with a
//!   `RedisCache` on a private `redis-server`), authenticated with an edge
//!   key as `edgemeter cloud --keys` runs, and the time from the edge's
//!   start until no tuple is below flag 2 is taken.
//! - **JetStream**: a private `nats-server -js` (file storage, in a temporary
//!   directory, on a free loopback port; never the machine's own NATS) gets
//!   as many messages of one tuple's wire size, published with acks, at
//!   most [`PUBLISH_INFLIGHT_MAX`] unacknowledged, into a stream with file
//!   storage; once with a unique `Nats-Msg-Id` header each (the server
//!   deduplicates by it, as the cloud does by tuple identity), once
//!   without. The time from the first publish until the last ack is taken.
//!
//! Each of the three is measured `BACKLOG_RUNS` times, interleaved (one of
//! each per round, the order rotated every round) so that machine noise
//! falls on all alike; each gets a fresh Redis, outbox or stream. The
//! summary gives min, median and max.
//!
//! Run with `cargo bench -p edgemeter --bench backlog`. Needs
//! `redis-server` on PATH and `nats-server` on PATH (or at `NATS_SERVER`).
//! `BACKLOG_ONLY=edgemeter` (or `dedupe`, `plain`, comma-separated) runs
//! only those, e.g. under `perf record`.

mod support;

use edgemeter_cloud::{Cloud, CloudAuth, CloudConfig};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeMonitor, Outbox};
use edgemeter_env::SystemClock;
use edgemeter_memlog::{MemLog, SharedLog};
use edgemeter_nng::link::NngLink;
use edgemeter_nng::server::NngServer;
use edgemeter_redis::cache::RedisCache;
use edgemeter_store::SqliteOutbox;
use edgemeter_testkit::{free_port, RedisServer};
use edgemeter_wire::{BatchRequest, EdgeKey, TupleOut};
use futures::stream::{FuturesUnordered, StreamExt};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{backlog_tuple, env_count, fill_outbox};

/// Tuples in the backlog, and messages per JetStream run: the 1M.
const BACKLOG_TUPLES_DEFAULT: usize = 1_000_000;

/// Measurements of each kind; `BACKLOG_RUNS` changes it.
const RUNS_DEFAULT: usize = 3;

/// Unacknowledged JetStream publishes at most, the 1,024: as many
/// tuples as the edge has in one batch.
const PUBLISH_INFLIGHT_MAX: usize = 1_024;

/// One measurement gives up after this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// How long `nats-server` may take to accept connections.
const NATS_START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    EdgeMeter,
    JetStreamDedupe,
    JetStreamPlain,
}

impl Measure {
    const ALL: [Measure; 3] = [
        Measure::EdgeMeter,
        Measure::JetStreamDedupe,
        Measure::JetStreamPlain,
    ];

    fn label(self) -> &'static str {
        match self {
            Measure::EdgeMeter => "edgemeter drain (SQLite outbox -> NNG -> cloud -> Redis)",
            Measure::JetStreamDedupe => "jetstream publish, file storage, Nats-Msg-Id dedupe",
            Measure::JetStreamPlain => "jetstream publish, file storage, no dedupe header",
        }
    }
}

fn main() {
    let tuples = env_count("BACKLOG_TUPLES", BACKLOG_TUPLES_DEFAULT);
    let runs = env_count("BACKLOG_RUNS", RUNS_DEFAULT);
    let wanted = wanted_measures();
    let message_bytes = tuple_wire_bytes();
    let nats = NatsServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "backlog: {tuples} tuples / messages of {message_bytes} bytes, {runs} runs of each, \
         {PUBLISH_INFLIGHT_MAX} JetStream publishes in flight; {}",
        nats.version
    );
    let mut rates: Vec<(Measure, Vec<f64>)> = Measure::ALL
        .iter()
        .map(|measure| (*measure, Vec::new()))
        .collect();
    for round in 0..runs {
        for offset in 0..Measure::ALL.len() {
            let index = (round + offset) % Measure::ALL.len();
            let measure = Measure::ALL[index];
            if !wanted.contains(&measure) {
                continue;
            }
            let elapsed = match measure {
                Measure::EdgeMeter => drain_backlog(&runtime, tuples),
                Measure::JetStreamDedupe | Measure::JetStreamPlain => {
                    let dedupe = measure == Measure::JetStreamDedupe;
                    let name = format!("BACKLOG_{round}_{index}");
                    runtime.block_on(publish_all(&nats.url, &name, tuples, message_bytes, dedupe))
                }
            };
            let rate = tuples as f64 / elapsed.as_secs_f64();
            println!(
                "backlog: run {}: {}: {:.2} s = {rate:.0}/s",
                round + 1,
                measure.label(),
                elapsed.as_secs_f64()
            );
            rates[index].1.push(rate);
        }
    }
    for (measure, mut measured) in rates {
        if measured.is_empty() {
            continue;
        }
        measured.sort_by(f64::total_cmp);
        println!(
            "backlog summary: {}: min {:.0}/s, median {:.0}/s, max {:.0}/s over {} runs",
            measure.label(),
            measured[0],
            measured[measured.len() / 2],
            measured[measured.len() - 1],
            measured.len()
        );
    }
}

/// The measures `BACKLOG_ONLY` names (`edgemeter`, `dedupe`, `plain`,
/// comma-separated), for profiling one of them; all three by default.
fn wanted_measures() -> Vec<Measure> {
    let Ok(names) = std::env::var("BACKLOG_ONLY") else {
        return Measure::ALL.to_vec();
    };
    names
        .split(',')
        .map(|name| match name.trim() {
            "edgemeter" => Measure::EdgeMeter,
            "dedupe" => Measure::JetStreamDedupe,
            "plain" => Measure::JetStreamPlain,
            other => panic!("BACKLOG_ONLY: unknown measure `{other}` (edgemeter, dedupe, plain)"),
        })
        .collect()
}

/// What one tuple costs on the edge's data wire: a full batch of backlog
/// tuples, encoded, divided by its tuples (rounded up).
fn tuple_wire_bytes() -> usize {
    let tuples: Vec<TupleOut> = (0..PUBLISH_INFLIGHT_MAX)
        .map(|index| {
            let tuple = backlog_tuple(0, index);
            TupleOut {
                tuple_id: index as i64 + 1,
                node_id: tuple.node_id,
                window_start_ms: tuple.window_start_ms,
                average_w: tuple.average_w,
                samples: tuple.samples,
            }
        })
        .collect();
    let batch = BatchRequest {
        version: edgemeter_wire::batch::WireVersion::V2,
        edge_id: "bench-edge".to_owned(),
        instance: 0,
        request_id: 1,
        tuples,
    };
    batch.encode().len().div_ceil(PUBLISH_INFLIGHT_MAX)
}

/// Fills a fresh outbox with `tuples` queued tuples, then times the
/// production edge shipping them to the production cloud on a fresh Redis.
fn drain_backlog(runtime: &tokio::runtime::Runtime, tuples: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("edge.db");
    fill_outbox(&db, 0, tuples);
    let redis = RedisServer::start();
    let elapsed = runtime.block_on(async {
        let cache = RedisCache::connect(&redis.url()).await.expect("redis");
        ship(&db, tuples, cache).await
    });
    elapsed.unwrap_or_else(|| panic!("not all tuples acknowledged within {RUN_TIMEOUT:?}"))
}

/// Runs cloud and edge until every tuple is acknowledged; the time from
/// the edge's start, or `None` past [`RUN_TIMEOUT`].
async fn ship(db: &Path, tuples: usize, cache: RedisCache) -> Option<Duration> {
    let key = EdgeKey::from_bytes([7u8; 32]);
    let auth = CloudAuth {
        allow_unauthenticated: false,
        ..CloudAuth::open().with_key("bench-edge", key.clone())
    };
    let config = CloudConfig {
        auth,
        ..CloudConfig::default()
    };
    let cloud = Arc::new(Cloud::new(config, cache, SystemClock));
    let server = NngServer::start(cloud, "127.0.0.1", 0, 0).expect("server");
    let ports = server.ports();
    let link = Arc::new(NngLink::dial("127.0.0.1", ports.heartbeat, ports.data).expect("link"));
    let outbox = SqliteOutbox::open(db).expect("outbox");
    // Read once, at the end: counting the backlog while it drains (20
    // times a second through the pending index, a million entries at the
    // start) took most of a core from the run it measured.
    let mut status = SqliteOutbox::open_read_only(db).expect("status reader");
    // An empty bus: the edge only ships its backlog.
    let bus = SharedLog::new(MemLog::new(1, 1)).consumer("bench");
    let mut config = EdgeConfig::new("bench-edge");
    config.key = Some(key);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let monitor = Arc::new(EdgeMonitor::new());
    let edge = tokio::spawn(run_edge(
        config,
        bus,
        link,
        outbox,
        SystemClock,
        monitor.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut outcome = None;
    while started.elapsed() < RUN_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The edge's own count of tuples it moved to flag 2, an atomic.
        if monitor.tuples_acked.load(Ordering::Relaxed) >= tuples as u64 {
            outcome = Some(started.elapsed());
            break;
        }
    }
    let _ = stop.send(());
    let _ = edge.await;
    let acked = status.status().expect("status").acked;
    assert!(
        outcome.is_none() || acked == tuples as u64,
        "{acked} of {tuples} tuples acknowledged"
    );
    outcome
}

/// Publishes `count` messages of `message_bytes` to a new file-storage
/// stream `name`, keeping at most [`PUBLISH_INFLIGHT_MAX`] unacknowledged,
/// and returns the time until the last ack. With `dedupe`, each message
/// carries a unique `Nats-Msg-Id`. The stream is checked to hold every
/// message once, then deleted.
async fn publish_all(
    url: &str,
    name: &str,
    count: usize,
    message_bytes: usize,
    dedupe: bool,
) -> Duration {
    use async_nats::jetstream::{self, stream};
    let client = async_nats::connect(url)
        .await
        .expect("connect to nats-server");
    let context = jetstream::context::ContextBuilder::new()
        .max_ack_inflight(PUBLISH_INFLIGHT_MAX)
        .backpressure_on_inflight(true)
        .build(client);
    let subject = format!("backlog.{name}");
    let mut stream = context
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the stream");
    let payload = bytes::Bytes::from(vec![b'x'; message_bytes]);
    let mut pending = FuturesUnordered::new();
    let mut duplicates = 0u64;
    let started = Instant::now();
    for index in 0..count {
        let ack = if dedupe {
            let tuple = backlog_tuple(0, index);
            let id = format!("bench-edge:{}:{}", tuple.node_id, tuple.window_start_ms);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            context
                .publish_with_headers(subject.clone(), headers, payload.clone())
                .await
        } else {
            context.publish(subject.clone(), payload.clone()).await
        };
        pending.push(std::future::IntoFuture::into_future(ack.expect("publish")));
        if pending.len() >= PUBLISH_INFLIGHT_MAX {
            let ack = pending.next().await.expect("pending").expect("ack");
            duplicates += u64::from(ack.duplicate);
        }
        assert!(started.elapsed() < RUN_TIMEOUT, "JetStream run timed out");
    }
    while let Some(ack) = pending.next().await {
        duplicates += u64::from(ack.expect("ack").duplicate);
    }
    let elapsed = started.elapsed();
    let held = stream.info().await.expect("stream info").state.messages;
    assert_eq!(
        (held, duplicates),
        (count as u64, 0),
        "every message stored once"
    );
    context
        .delete_stream(name)
        .await
        .expect("delete the stream");
    elapsed
}

/// A `nats-server` with JetStream of the bench's own: a free loopback
/// port, its store in a temporary directory, killed when dropped.
struct NatsServer {
    child: Child,
    url: String,
    version: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|error| panic!("{binary} --version: {error}"));
        let store = tempfile::tempdir().expect("a directory for JetStream");
        let port = free_port();
        assert_ne!(port, 4222, "never the machine's own NATS");
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {binary}: {error}"));
        let server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            version,
            _store: store,
        };
        let deadline = Instant::now() + NATS_START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
