//! The scale-out bench: the aggregate acknowledged tuples per second of
//! one edge through one cloud node into one Redis, against two edges
//! through two cloud nodes into a three-primary Redis Cluster, in one run
//! on one machine; and what each process costs per tuple, the figures the
//! README's sizing model is built from. Printed, never asserted.
//!
//! Every process is the real one: `edgemeter edge` and `edgemeter cloud`
//! from this build, and `redis-server` (alone, or three with
//! `--cluster-enabled yes`). Each edge starts on an outbox filled with
//! `SCALE_TUPLES` queued tuples of its own 50 households (not timed), with
//! its Kafka broker unreachable on purpose: the drain is what is measured,
//! and a broker that is down is an operating condition the edge ships
//! through. Each edge names every node in `--cloud`, and every request is
//! sealed with the edge's key, as deployed.
//!
//! Measured per run: the time from the edges' start until every outbox
//! has all its tuples at flag 2, and the CPU time (user + system, from
//! `/proc/PID/stat`) each process spent meanwhile, divided by the tuples
//! it handled: an edge's own, a node's share (all tuples over the nodes),
//! a shard's share (all tuples over the shards).
//!
//! The bound, stated plainly: this machine has two cores, and every
//! process of a run shares them. Two edges, two nodes and three shards
//! cannot run twice as fast as one of each on two cores; what the second
//! shape shows is that the spread costs little, and its per-process costs
//! say what each process would carry on a machine of its own.
//!
//! Runs: `SCALE_RUNS` of each shape (default 3), interleaved. Run with
//! `cargo bench -p edgemeter --bench scale`; needs `redis-server` and
//! `redis-cli` on PATH.

mod support;

use edgemeter_edge::Outbox;
use edgemeter_store::SqliteOutbox;
use edgemeter_testkit::{free_port, RedisCluster, RedisServer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tuples in each edge's backlog.
const TUPLES_DEFAULT: usize = 200_000;

/// Measurements of each shape; `SCALE_RUNS` changes it.
const RUNS_DEFAULT: usize = 3;

/// One measurement gives up after this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the outboxes are read while a drain runs: their counts are
/// one small table (`outbox_counts`), so reading costs nothing measurable.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Shape {
    edges: usize,
    nodes: usize,
    shards: usize,
}

impl Shape {
    fn label(&self) -> String {
        let store = if self.shards == 1 {
            "1 Redis".to_owned()
        } else {
            format!("a {}-shard cluster", self.shards)
        };
        format!(
            "{} edge(s) -> {} node(s) -> {store}",
            self.edges, self.nodes
        )
    }
}

const SHAPES: [Shape; 2] = [
    Shape {
        edges: 1,
        nodes: 1,
        shards: 1,
    },
    Shape {
        edges: 2,
        nodes: 2,
        shards: 3,
    },
];

/// One run's figures.
struct Measured {
    tuples: usize,
    elapsed: Duration,
    edge_cpu: Vec<Duration>,
    node_cpu: Vec<Duration>,
    shard_cpu: Vec<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.tuples as f64 / self.elapsed.as_secs_f64()
    }

    /// Microseconds of CPU per tuple handled, by process kind.
    fn per_tuple_us(cpu: &[Duration], tuples: usize) -> f64 {
        let total: Duration = cpu.iter().sum();
        total.as_secs_f64() * 1e6 / tuples as f64
    }
}

fn main() {
    let tuples = env_count("SCALE_TUPLES", TUPLES_DEFAULT);
    let runs = env_count("SCALE_RUNS", RUNS_DEFAULT);
    println!("scale: {tuples} tuples per edge, {runs} runs of each shape, interleaved");
    let mut results: Vec<Vec<Measured>> = SHAPES.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        for offset in 0..SHAPES.len() {
            let index = (round + offset) % SHAPES.len();
            let shape = SHAPES[index];
            let measured = drain(shape, tuples);
            println!(
                "scale: run {}: {}: {} tuples in {:.2} s = {:.0}/s; CPU per tuple: \
                 edge {:.1} us, node {:.1} us, shard {:.1} us",
                round + 1,
                shape.label(),
                measured.tuples,
                measured.elapsed.as_secs_f64(),
                measured.rate(),
                Measured::per_tuple_us(&measured.edge_cpu, measured.tuples),
                Measured::per_tuple_us(&measured.node_cpu, measured.tuples),
                Measured::per_tuple_us(&measured.shard_cpu, measured.tuples),
            );
            results[index].push(measured);
        }
    }
    for (shape, measured) in SHAPES.iter().zip(&results) {
        let mut rates: Vec<f64> = measured.iter().map(Measured::rate).collect();
        rates.sort_by(f64::total_cmp);
        let median_of = |pick: &dyn Fn(&Measured) -> f64| {
            let mut values: Vec<f64> = measured.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        println!(
            "scale summary: {}: min {:.0}/s, median {:.0}/s, max {:.0}/s over {} runs; \
             median CPU per tuple: edge {:.1} us, node {:.1} us, shard {:.1} us",
            shape.label(),
            rates[0],
            rates[rates.len() / 2],
            rates[rates.len() - 1],
            rates.len(),
            median_of(&|m| Measured::per_tuple_us(&m.edge_cpu, m.tuples)),
            median_of(&|m| Measured::per_tuple_us(&m.node_cpu, m.tuples)),
            median_of(&|m| Measured::per_tuple_us(&m.shard_cpu, m.tuples)),
        );
    }
}

fn env_count(name: &str, default: usize) -> usize {
    let count = std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    assert!(count > 0, "{name} must be at least 1");
    count
}

/// The store of one run: a lone Redis, or a cluster.
enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    fn start(shards: usize) -> Store {
        if shards == 1 {
            Store::Single(RedisServer::start())
        } else {
            {
                assert_eq!(
                    shards,
                    edgemeter_testkit::PRIMARIES,
                    "the testkit's cluster size"
                );
                Store::Cluster(RedisCluster::start_partial_coverage())
            }
        }
    }

    /// The flags that point `edgemeter cloud` at it.
    fn cloud_args(&self) -> [String; 2] {
        match self {
            Store::Single(redis) => ["--redis".to_owned(), redis.url()],
            Store::Cluster(cluster) => ["--redis-cluster".to_owned(), cluster.seeds()],
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Store::Single(redis) => vec![redis.pid().expect("redis runs")],
            Store::Cluster(cluster) => cluster.pids(),
        }
    }
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn edgemeter(args: &[String], log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start edgemeter");
    Running(child)
}

/// User plus system CPU time of a process so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are fields 14 and 15, 12 and 13 after it.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

fn acked(db: &Path) -> u64 {
    SqliteOutbox::open_read_only(db)
        .and_then(|mut outbox| outbox.status())
        .map(|counts| counts.acked)
        .unwrap_or(0)
}

fn drain(shape: Shape, tuples: usize) -> Measured {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::start(shape.shards);
    let ids: Vec<String> = (0..shape.edges)
        .map(|site| format!("site-{site}"))
        .collect();
    let key = |site: usize| format!("{:02x}", 0x10 + site).repeat(32);
    let keys_file = dir.path().join("cloud.keys");
    let keys: String = ids
        .iter()
        .enumerate()
        .map(|(site, id)| format!("{id} {}\n", key(site)))
        .collect();
    std::fs::write(&keys_file, keys).expect("keys file");
    let dbs: Vec<PathBuf> = (0..shape.edges)
        .map(|site| {
            let db = dir.path().join(format!("site-{site}.db"));
            support::fill_outbox(&db, site, tuples);
            db
        })
        .collect();

    let ports: Vec<(u16, u16)> = (0..shape.nodes)
        .map(|_| (free_port(), free_port()))
        .collect();
    let nodes: Vec<Running> = ports
        .iter()
        .enumerate()
        .map(|(index, (heartbeat, data))| {
            let [flag, url] = store.cloud_args();
            let args = [
                "cloud".to_owned(),
                flag,
                url,
                "--listen".to_owned(),
                "127.0.0.1".to_owned(),
                "--heartbeat-port".to_owned(),
                heartbeat.to_string(),
                "--data-port".to_owned(),
                data.to_string(),
                "--keys".to_owned(),
                keys_file.to_str().expect("UTF-8 path").to_owned(),
                "--http".to_owned(),
                format!("127.0.0.1:{}", free_port()),
            ];
            edgemeter(&args, &dir.path().join(format!("cloud-{index}.log")))
        })
        .collect();
    for (_, data) in &ports {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", *data)).is_err() {
            assert!(Instant::now() < deadline, "a cloud node did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let cloud: String = ports
        .iter()
        .map(|(heartbeat, data)| format!("127.0.0.1:{heartbeat}:{data}"))
        .collect::<Vec<_>>()
        .join(",");
    // Nothing listens here: the edges ship their backlog with the broker down.
    let dead_broker = format!("127.0.0.1:{}", free_port());

    let node_pids: Vec<u32> = nodes.iter().map(|node| node.0.id()).collect();
    let shard_pids = store.pids();
    let nodes_before: Vec<Duration> = node_pids.iter().map(|pid| cpu_time(*pid)).collect();
    let shards_before: Vec<Duration> = shard_pids.iter().map(|pid| cpu_time(*pid)).collect();
    let started = Instant::now();
    let edges: Vec<Running> = ids
        .iter()
        .enumerate()
        .map(|(site, id)| {
            let key_file = dir.path().join(format!("{id}.key"));
            std::fs::write(&key_file, key(site)).expect("edge key");
            let args = [
                "edge",
                "--kafka",
                &dead_broker,
                "--cloud",
                &cloud,
                "--db",
                dbs[site].to_str().expect("UTF-8 path"),
                "--edge-id",
                id,
                "--key-file",
                key_file.to_str().expect("UTF-8 path"),
            ]
            .map(str::to_owned);
            edgemeter(&args, &dir.path().join(format!("edge-{site}.log")))
        })
        .collect();
    let edge_pids: Vec<u32> = edges.iter().map(|edge| edge.0.id()).collect();
    let mut edge_cpu = vec![Duration::ZERO; edges.len()];
    let mut pending: Vec<usize> = (0..edges.len()).collect();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "{}: not drained within {RUN_TIMEOUT:?}; logs in {}",
            shape.label(),
            dir.keep().display()
        );
        std::thread::sleep(POLL_INTERVAL);
        pending.retain(|&site| {
            if acked(&dbs[site]) < tuples as u64 {
                return true;
            }
            edge_cpu[site] = cpu_time(edge_pids[site]);
            false
        });
    }
    let elapsed = started.elapsed();
    let node_cpu = node_pids
        .iter()
        .zip(&nodes_before)
        .map(|(pid, before)| cpu_time(*pid) - *before)
        .collect();
    let shard_cpu = shard_pids
        .iter()
        .zip(&shards_before)
        .map(|(pid, before)| cpu_time(*pid) - *before)
        .collect();
    drop(edges);
    drop(nodes);
    Measured {
        tuples: tuples * shape.edges,
        elapsed,
        edge_cpu,
        node_cpu,
        shard_cpu,
    }
}
