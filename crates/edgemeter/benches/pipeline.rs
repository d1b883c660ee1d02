//! Pipeline figures, printed, never asserted (timings depend on the machine):
//!
//! 1. Wall time of `edgemeter demo --speed max` for all 50 households x
//!    1 hour (the shipped data set), as a separate process of the binary.
//! 2. Acknowledged tuples per second from edge to cloud with a real
//!    redis-server: an outbox is pre-filled with `BENCH_TUPLES` tuples, then
//!    the real edge (NNG link, SQLite) ships them to the real cloud (NNG
//!    server, Redis cache), and the time until all are at flag 2 is taken.
//!
//! Run with `cargo bench -p edgemeter --bench pipeline`. Needs `redis-server`
//! on PATH; set `BENCH_TUPLES` to change the outbox size.

use edgemeter_cloud::{Cache, Cloud, CloudConfig, MemoryCache};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeMonitor, NewTuple, Outbox};
use edgemeter_env::SystemClock;
use edgemeter_memlog::{MemLog, SharedLog};
use edgemeter_nng::link::NngLink;
use edgemeter_nng::server::NngServer;
use edgemeter_redis::cache::RedisCache;
use edgemeter_store::SqliteOutbox;
use edgemeter_testkit::RedisServer;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tuples pre-filled into the outbox for the throughput figure.
const BENCH_TUPLES_DEFAULT: usize = 200_000;

/// Tuples per SQLite transaction while pre-filling.
const FILL_CHUNK_TUPLES: usize = 10_000;

/// The throughput run gives up after this long.
const SHIP_TIMEOUT: Duration = Duration::from_secs(600);

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one figure.
    let filter: Option<String> = std::env::args().skip(1).find(|arg| !arg.starts_with('-'));
    let selected = |name: &str| filter.as_deref().is_none_or(|filter| name.contains(filter));
    if selected("demo_wall_time") {
        demo_wall_time();
    }
    if selected("edge_to_cloud_throughput") {
        edge_to_cloud_throughput();
    }
    if selected("edge_to_cloud_memory_cache") {
        edge_to_cloud_memory_cache();
    }
}

fn demo_wall_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("demo.db");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["demo", "--speed", "max", "--exit-when-done", "--db"])
        .arg(&db)
        .env("EDGEMETER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap_or("");
    if !output.status.success() {
        println!(
            "demo_wall_time: FAILED ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    println!(
        "demo_wall_time: 50 households x 1 h at speed max: {:.2} s wall (process start to exit); summary {summary}",
        elapsed.as_secs_f64()
    );
}

fn edge_to_cloud_throughput() {
    let tuples = bench_tuples();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("edge.db");
    let fill_started = Instant::now();
    fill_outbox(&db, tuples);
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let shipped = runtime.block_on(async {
        let cache = RedisCache::connect(&redis.url()).await.expect("redis");
        ship(
            &db,
            tuples,
            Cloud::new(CloudConfig::default(), cache, SystemClock),
        )
        .await
    });
    let redis_busy = script_time(&redis);
    drop(redis);
    match shipped {
        Some(elapsed) => {
            println!(
                "edge_to_cloud_throughput: {tuples} tuples acknowledged in {:.2} s = {:.0} tuples/s \
                 (real NNG on loopback, real redis-server, SQLite WAL+NORMAL; outbox filled in {fill_seconds:.2} s)",
                elapsed.as_secs_f64(),
                tuples as f64 / elapsed.as_secs_f64()
            );
            println!("edge_to_cloud_throughput: redis time in the store script: {redis_busy}");
        }
        None => println!(
            "edge_to_cloud_throughput: FAILED: not all tuples acknowledged within {SHIP_TIMEOUT:?}"
        ),
    }
}

/// The same run with the cloud's in-memory cache instead of Redis: the
/// ceiling that edge, NNG and cloud logic set on their own.
fn edge_to_cloud_memory_cache() {
    let tuples = bench_tuples();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("edge.db");
    fill_outbox(&db, tuples);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cloud = Cloud::new(CloudConfig::default(), MemoryCache::new(), SystemClock);
    match runtime.block_on(ship(&db, tuples, cloud)) {
        Some(elapsed) => println!(
            "edge_to_cloud_memory_cache: {tuples} tuples acknowledged in {:.2} s = {:.0} tuples/s (in-memory cache instead of Redis)",
            elapsed.as_secs_f64(),
            tuples as f64 / elapsed.as_secs_f64()
        ),
        None => println!("edge_to_cloud_memory_cache: FAILED: not all tuples acknowledged within {SHIP_TIMEOUT:?}"),
    }
}

fn bench_tuples() -> usize {
    std::env::var("BENCH_TUPLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(BENCH_TUPLES_DEFAULT)
}

/// Writes `count` distinct tuples (100 households x consecutive windows).
fn fill_outbox(db: &std::path::Path, count: usize) {
    let mut outbox = SqliteOutbox::open(db).expect("open the outbox");
    let mut next = 0usize;
    while next < count {
        let chunk: Vec<NewTuple> = (next..count.min(next + FILL_CHUNK_TUPLES))
            .map(|index| NewTuple {
                node_id: format!("household-{:03}", index % 100),
                window_start_ms: 1_577_145_600_000 + (index / 100) as i64 * 5_000,
                average_w: 100.0 + (index % 1000) as f64 * 0.5,
                samples: 3,
            })
            .collect();
        next += chunk.len();
        outbox
            .store_closed(&chunk, &[], 0)
            .expect("fill the outbox");
    }
}

/// Runs cloud and edge until every tuple is acknowledged; returns the time.
async fn ship<C: Cache>(
    db: &std::path::Path,
    tuples: usize,
    cloud: Cloud<C, SystemClock>,
) -> Option<Duration> {
    let cloud = Arc::new(cloud);
    let server = NngServer::start(cloud, "127.0.0.1", 0, 0).expect("server");
    let ports = server.ports();
    let link = Arc::new(NngLink::dial("127.0.0.1", ports.heartbeat, ports.data).expect("link"));
    let outbox = SqliteOutbox::open(db).expect("outbox");
    // The wait below counts only the pending rows: `status` counts the
    // whole table, and doing that 20 times a second took a fifth of the
    // CPU the run is meant to measure.
    let mut status = SqliteOutbox::open_read_only(db).expect("status reader");
    // An empty bus: the edge only ships its backlog.
    let bus = SharedLog::new(MemLog::new(1, 1)).consumer("bench");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let edge = tokio::spawn(run_edge(
        EdgeConfig::new("bench-edge"),
        bus,
        link,
        outbox,
        SystemClock,
        Arc::new(EdgeMonitor::new()),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut outcome = None;
    while started.elapsed() < SHIP_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if status.unacked_count().expect("pending count") == 0 {
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

/// What Redis reports for the store script: calls, total and per-call time.
fn script_time(redis: &RedisServer) -> String {
    let Ok(mut connection) = redis.try_connection() else {
        return "unknown".into();
    };
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut connection)
        .unwrap_or_default();
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha") || line.starts_with("cmdstat_eval:"))
        .collect::<Vec<_>>()
        .join("; ")
}
