//! The scale-out bench: the aggregate acknowledged tuples per second of
//! one edge through one cloud node into one Redis, against two edges
//! through two cloud nodes into a three-primary Redis Cluster, in one run
//! on one machine; and what each process costs per tuple, the figures the
//! README's sizing model is built from. Printed, never asserted.
//!
//! Every process is the real one: `edgemeter edge` and `edgemeter cloud`
//! from this build, and `redis-server` (alone, or three with
//! `--cluster-enabled yes`). Each edge starts on an outbox filled with
//! `SCALE_TUPLES` queued tuples of its own 50 households (not timed), and
//! an empty topic on a tansu broker of the bench's own: the drain is what
//! is measured. Each edge names every node in `--cloud`, and every request
//! is sealed with the edge's key, as deployed.
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
//! Then one live site, for the sizing model's per-site figures: the shipped
//! 50 households replayed in real time (`edgemeter households --speed 1`)
//! into the site's topic, its edge, one node, one Redis; after
//! [`LIVE_WARMUP`], for `SCALE_LIVE_SECONDS` (default 60) the CPU each
//! process spends per second of the site's life, and the tuples acked
//! meanwhile. In steady state a batch holds the second's few closed
//! windows, so per-request costs (sealing, a round trip, a script call per
//! bucket touched, heartbeats) weigh far more than in a drain.
//!
//! Runs: `SCALE_RUNS` of each shape (default 3), interleaved. Run with
//! `cargo bench -p edgemeter --bench scale`; needs `redis-server`,
//! `redis-cli` and tansu (as `bash ci/test.sh` installs them).

mod support;

use edgemeter_edge::Outbox;
use edgemeter_store::SqliteOutbox;
use edgemeter_testkit::{
    free_port, tansu_binary, tansu_broker_args, tansu_topic_args, RedisCluster, RedisServer,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::env_count;

/// Tuples in each edge's backlog.
const TUPLES_DEFAULT: usize = 200_000;

/// Measurements of each shape; `SCALE_RUNS` changes it.
const RUNS_DEFAULT: usize = 3;

/// One measurement gives up after this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the live site runs before its costs are measured: the edge's
/// start, its first heartbeats and the first windows' close.
const LIVE_WARMUP: Duration = Duration::from_secs(15);

/// The measured span of the live site, by default; `SCALE_LIVE_SECONDS`.
const LIVE_SECONDS_DEFAULT: usize = 60;

/// How long a server (tansu, a cloud node) may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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
    let broker = Broker::start();
    println!("scale: {tuples} tuples per edge, {runs} runs of each shape, interleaved");
    let mut results: Vec<Vec<Measured>> = SHAPES.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        for offset in 0..SHAPES.len() {
            let index = (round + offset) % SHAPES.len();
            let shape = SHAPES[index];
            let measured = drain(shape, tuples, &broker.address);
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
    let seconds = env_count("SCALE_LIVE_SECONDS", LIVE_SECONDS_DEFAULT);
    live_site(&broker, Duration::from_secs(seconds as u64));
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

/// The bench's tansu, with `power_topic`, idle during every drain (the
/// outboxes are filled beforehand), in a directory of its own.
struct Broker {
    url: String,
    address: String,
    _process: Running,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("a directory for tansu");
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("tansu log");
        let child = Command::new(tansu_binary())
            .args(tansu_broker_args(&url))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let broker = Broker {
            url,
            address: format!("127.0.0.1:{port}"),
            _process: Running(child),
            _dir: dir,
        };
        broker.create_topic("power_topic");
        broker
    }

    /// Creates `topic` with 3 partitions, retrying while tansu starts.
    fn create_topic(&self, topic: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let created = Command::new(tansu_binary())
                .args(tansu_topic_args(&self.url, topic, 3))
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|output| output.status.success());
            if created {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not take topic {topic}"
            );
            std::thread::sleep(Duration::from_millis(200));
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

/// One run's servers: the store, the cloud nodes on it, and the keys of
/// `edges` sites (`site-0`, ...), in a directory of the run's own.
struct Deployment {
    dir: tempfile::TempDir,
    store: Store,
    nodes: Vec<Running>,
    /// The nodes as `--cloud` names them.
    cloud: String,
}

impl Deployment {
    fn start(edges: usize, nodes: usize, shards: usize) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::start(shards);
        let keys_file = dir.path().join("cloud.keys");
        let keys: String = (0..edges)
            .map(|site| format!("{} {}\n", site_id(site), site_key(site)))
            .collect();
        std::fs::write(&keys_file, keys).expect("keys file");
        let ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();
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
            let deadline = Instant::now() + START_TIMEOUT;
            while std::net::TcpStream::connect(("127.0.0.1", *data)).is_err() {
                assert!(Instant::now() < deadline, "a cloud node did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let cloud = ports
            .iter()
            .map(|(heartbeat, data)| format!("127.0.0.1:{heartbeat}:{data}"))
            .collect::<Vec<_>>()
            .join(",");
        Deployment {
            dir,
            store,
            nodes,
            cloud,
        }
    }

    fn db(&self, site: usize) -> PathBuf {
        self.dir.path().join(format!("site-{site}.db"))
    }

    /// Starts site `site`'s edge on its database, reading `topic`.
    fn start_edge(&self, site: usize, broker: &str, topic: &str) -> Running {
        let key_file = self.dir.path().join(format!("site-{site}.key"));
        std::fs::write(&key_file, site_key(site)).expect("edge key");
        let args = [
            "edge",
            "--kafka",
            broker,
            "--topic",
            topic,
            "--cloud",
            &self.cloud,
            "--db",
            self.db(site).to_str().expect("UTF-8 path"),
            "--edge-id",
            &site_id(site),
            "--key-file",
            key_file.to_str().expect("UTF-8 path"),
        ]
        .map(str::to_owned);
        edgemeter(&args, &self.dir.path().join(format!("edge-{site}.log")))
    }

    /// The CPU time of every node and every shard so far.
    fn server_cpu(&self) -> (Vec<Duration>, Vec<Duration>) {
        let nodes = self
            .nodes
            .iter()
            .map(|node| cpu_time(node.0.id()))
            .collect();
        let shards = self.store.pids().into_iter().map(cpu_time).collect();
        (nodes, shards)
    }
}

fn site_id(site: usize) -> String {
    format!("site-{site}")
}

fn site_key(site: usize) -> String {
    format!("{:02x}", 0x10 + site).repeat(32)
}

fn minus(after: Vec<Duration>, before: &[Duration]) -> Vec<Duration> {
    after.into_iter().zip(before).map(|(a, b)| a - *b).collect()
}

fn drain(shape: Shape, tuples: usize, broker: &str) -> Measured {
    let deployment = Deployment::start(shape.edges, shape.nodes, shape.shards);
    let dbs: Vec<PathBuf> = (0..shape.edges)
        .map(|site| {
            let db = deployment.db(site);
            support::fill_outbox(&db, site, tuples);
            db
        })
        .collect();
    let (nodes_before, shards_before) = deployment.server_cpu();
    let started = Instant::now();
    let edges: Vec<Running> = (0..shape.edges)
        .map(|site| deployment.start_edge(site, broker, "power_topic"))
        .collect();
    let edge_pids: Vec<u32> = edges.iter().map(|edge| edge.0.id()).collect();
    let mut edge_cpu = vec![Duration::ZERO; edges.len()];
    let mut pending: Vec<usize> = (0..edges.len()).collect();
    let mut edges = edges;
    while !pending.is_empty() {
        for (site, edge) in edges.iter_mut().enumerate() {
            if let Ok(Some(status)) = edge.0.try_wait() {
                let log =
                    std::fs::read_to_string(deployment.dir.path().join(format!("edge-{site}.log")))
                        .unwrap_or_default();
                panic!("edge {site} exited ({status}) before its drain ended:\n{log}");
            }
        }
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "{}: not drained within {RUN_TIMEOUT:?}; logs in {}",
            shape.label(),
            deployment.dir.path().display()
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
    let (nodes_after, shards_after) = deployment.server_cpu();
    let node_cpu = minus(nodes_after, &nodes_before);
    let shard_cpu = minus(shards_after, &shards_before);
    drop(edges);
    Measured {
        tuples: tuples * shape.edges,
        elapsed,
        edge_cpu,
        node_cpu,
        shard_cpu,
    }
}

/// One live site of the shipped 50 households in real time; prints what
/// each process costs per second of it.
fn live_site(broker: &Broker, span: Duration) {
    let deployment = Deployment::start(1, 1, 1);
    let topic = "live_topic";
    broker.create_topic(topic);
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/gem-house-1h");
    let households = edgemeter(
        &[
            "households",
            "--kafka",
            &broker.address,
            "--topic",
            topic,
            "--data",
            data,
            "--speed",
            "1",
        ]
        .map(str::to_owned),
        &deployment.dir.path().join("households.log"),
    );
    let edge = deployment.start_edge(0, &broker.address, topic);
    std::thread::sleep(LIVE_WARMUP);
    let (nodes_before, shards_before) = deployment.server_cpu();
    let edge_before = cpu_time(edge.0.id());
    let acked_before = acked(&deployment.db(0));
    std::thread::sleep(span);
    let (nodes_after, shards_after) = deployment.server_cpu();
    let edge_spent = cpu_time(edge.0.id()) - edge_before;
    let acked_in_span = acked(&deployment.db(0)) - acked_before;
    let per_second = |cpu: Duration| cpu.as_secs_f64() * 1e3 / span.as_secs_f64();
    let node_spent: Duration = minus(nodes_after, &nodes_before).iter().sum();
    let shard_spent: Duration = minus(shards_after, &shards_before).iter().sum();
    println!(
        "scale live site: 50 households in real time, {:.0} s measured: {:.1} tuples/s acked; \
         CPU per second of the site: edge {:.2} ms, node {:.2} ms, shard {:.2} ms",
        span.as_secs_f64(),
        acked_in_span as f64 / span.as_secs_f64(),
        per_second(edge_spent),
        per_second(node_spent),
        per_second(shard_spent),
    );
    drop(edge);
    drop(households);
}
