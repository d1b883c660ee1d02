//! Past one machine, on the real binaries and servers: two sites, two
//! cloud nodes, a three-primary Redis Cluster, with node and shard faults.
//!
//! Goal: each site's edge consumes its own topic and ships to both cloud
//! nodes; killing one cloud node mid-run and restarting it, then killing
//! one Redis primary and restarting it empty, loses nothing and duplicates
//! nothing. At the end each edge's database equals the oracle of its own
//! households, the cluster holds every tuple exactly once (walked shard by
//! shard: SCAN is per node), and `GET /api/states` on either node counts
//! each tuple once.
//!
//! Method: tansu with one topic per site; the shipped households split in
//! two halves by file name, each half replayed by its own `households`
//! into its site's topic; `edge --topic SITE --cloud NODE1,NODE2` per site,
//! each with its own key, id and database; two `cloud --redis-cluster`
//! nodes on a cluster made by `redis-cli --cluster create`. Faults are
//! triggered by progress (tuples acknowledged), never by the clock.

mod common;

use common::cluster::DURATION_MS;
use common::{data_dir, edgemeter_process, states_tuples, wait_until, CloudPorts, Process, Tansu};
use edgemeter_checker::{oracle_windows, OracleWindow};
use edgemeter_cloud::CloudTuple;
use edgemeter_data::load_dir;
use edgemeter_edge::Outbox;
use edgemeter_redis::layout::{tuple_key_of, TUPLE_PATTERN};
use edgemeter_store::SqliteOutbox;
use edgemeter_testkit::{RedisCluster, PRIMARIES};
use redis::Commands;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The replayed span of each household.
const DURATION: &str = "10m";

/// Pacing of the replay: slow enough that both faults land mid-stream
/// (10 minutes of readings take about a minute), fast enough for CI.
const SPEED: &str = "10";

/// How long the end state may take to settle after the replay ended: the
/// idle flush (10 s), then a refill of the lost shard's buckets.
const SETTLE_WITHIN: Duration = Duration::from_secs(180);

struct Site {
    id: &'static str,
    topic: &'static str,
    data: PathBuf,
    db: PathBuf,
    key: PathBuf,
    oracle: BTreeMap<(String, i64), OracleWindow>,
}

/// The shipped households, split in two halves by file name into two data
/// directories (symbolic links), with each half's oracle.
fn split_sites(dir: &Path) -> [Site; 2] {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("the shipped data")
        .map(|entry| entry.expect("a data file").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "csv" || ext == "gz")
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 50, "the shipped 50 households");
    let halves = files.split_at(files.len() / 2);
    let make = |id: &'static str, topic: &'static str, part: &[PathBuf]| {
        let data = dir.join(format!("data-{id}"));
        std::fs::create_dir_all(&data).expect("site data dir");
        for file in part {
            std::os::unix::fs::symlink(file, data.join(file.file_name().expect("a name")))
                .expect("link a household");
        }
        let (households, _) = load_dir(&data, Some(DURATION_MS)).expect("the half loads");
        assert_eq!(households.len(), part.len());
        let key = dir.join(format!("{id}.key"));
        let hex = if id == "site-a" { "a1" } else { "b2" };
        std::fs::write(&key, hex.repeat(32)).expect("write the site's key");
        Site {
            id,
            topic,
            data,
            db: dir.join(format!("{id}.db")),
            key,
            oracle: oracle_windows(&households),
        }
    };
    [
        make("site-a", "site-a-power", halves.0),
        make("site-b", "site-b-power", halves.1),
    ]
}

/// A cloud node of the test: its ports, on the test's cluster and keys.
struct Node(CloudPorts);

impl Node {
    fn start(&self, name: &str, cluster: &RedisCluster, dir: &Path) -> Process {
        let keys = dir.join("cloud.keys");
        self.0.start(
            name,
            ["--redis-cluster", &cluster.seeds()],
            &["--keys", keys.to_str().expect("UTF-8 path")],
            dir,
        )
    }

    fn address(&self) -> String {
        self.0.address()
    }
}

fn start_edge(site: &Site, tansu: &Tansu, nodes: &[Node], dir: &Path) -> Process {
    let cloud = nodes
        .iter()
        .map(Node::address)
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "edge",
        "--kafka",
        &tansu.address(),
        "--topic",
        site.topic,
        "--cloud",
        &cloud,
        "--db",
        site.db.to_str().expect("UTF-8 path"),
        "--edge-id",
        site.id,
        "--key-file",
        site.key.to_str().expect("UTF-8 path"),
        "--idle-flush",
        "10s",
    ];
    edgemeter_process(&format!("edge-{}", site.id), &args, dir)
}

fn start_households(site: &Site, tansu: &Tansu, dir: &Path) -> Process {
    let args = [
        "households",
        "--kafka",
        &tansu.address(),
        "--topic",
        site.topic,
        "--data",
        site.data.to_str().expect("UTF-8 path"),
        "--speed",
        SPEED,
        "--duration",
        DURATION,
    ];
    edgemeter_process(&format!("households-{}", site.id), &args, dir)
}

fn acked(db: &Path) -> u64 {
    if !db.exists() {
        return 0;
    }
    SqliteOutbox::open_read_only(db)
        .and_then(|mut outbox| outbox.status())
        .map(|counts| counts.acked)
        .unwrap_or(0)
}

/// Waits until every site has acknowledged `more` tuples beyond `from`.
fn wait_for_progress(what: &str, sites: &[Site], from: &[u64], more: u64) {
    wait_until(what, Duration::from_secs(120), || {
        sites
            .iter()
            .zip(from)
            .all(|(site, before)| acked(&site.db) >= before + more)
    });
}

/// Every row of the site's outbox at flag 2 with the oracle's average and
/// its household's postal code; one row per oracle window.
fn assert_outbox_matches(site: &Site) {
    let stored = SqliteOutbox::open_read_only(&site.db)
        .and_then(|outbox| outbox.all_tuples())
        .expect("read the edge db");
    assert_eq!(
        stored.len(),
        site.oracle.len(),
        "{}: one row per window",
        site.id
    );
    for tuple in &stored {
        let key = (tuple.node_id.clone(), tuple.window_start_ms);
        let expected = site
            .oracle
            .get(&key)
            .unwrap_or_else(|| panic!("{}: a tuple the oracle does not have: {key:?}", site.id));
        assert_eq!(tuple.average_w, expected.average_w, "average of {key:?}");
        assert_eq!(tuple.samples, expected.samples, "samples of {key:?}");
        assert_eq!(tuple.sent, 2, "{key:?} is not acknowledged");
        assert_eq!(
            tuple.postal_code.as_deref(),
            Some(edgemeter_cloud::postal_code_for(&tuple.node_id).as_str()),
            "postal code of {key:?}"
        );
    }
}

/// Waits until every edge's log has a line with `what` that names `node`.
fn wait_for_log_lines(edges: &[Process], what: &str, node: &str) {
    wait_until(
        &format!("every edge to log {what} for {node}"),
        Duration::from_secs(60),
        || {
            edges.iter().all(|edge| {
                std::fs::read_to_string(&edge.log).is_ok_and(|log| {
                    log.lines()
                        .any(|line| line.contains(what) && line.contains(node))
                })
            })
        },
    );
}

/// The tuples one cluster node holds, walked with SCAN (per node).
fn node_tuples(cluster: &RedisCluster, node: usize) -> Vec<CloudTuple> {
    let mut connection = cluster.connection(node);
    let keys: Vec<String> = connection
        .scan_match::<_, String>(TUPLE_PATTERN)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan keys");
    keys.iter()
        .map(|key| {
            let value: Vec<u8> = connection.get(key).expect("get a tuple");
            let tuple_key = tuple_key_of(key).expect("a tuple key");
            CloudTuple::from_stored_value(tuple_key.to_owned(), &value)
                .unwrap_or_else(|| panic!("{key} holds a tuple"))
        })
        .collect()
}

/// Every tuple of every primary.
fn cluster_tuples(cluster: &RedisCluster) -> Vec<CloudTuple> {
    (0..PRIMARIES)
        .flat_map(|node| node_tuples(cluster, node))
        .collect()
}

#[test]
fn two_sites_two_nodes_three_shards_survive_a_node_and_a_shard_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sites = split_sites(dir.path());
    std::fs::write(
        dir.path().join("cloud.keys"),
        format!("site-a {}\nsite-b {}\n", "a1".repeat(32), "b2".repeat(32)),
    )
    .expect("write the cloud's keys");
    let expected_total: usize = sites.iter().map(|site| site.oracle.len()).sum();

    // Partial coverage, as the deployment guide configures a cluster: while
    // a primary is down the others keep serving their slots.
    let mut redis = RedisCluster::start_partial_coverage();
    let tansu = Tansu::start(dir.path());
    for site in &sites {
        tansu.create_topic(site.topic, 3);
    }
    let nodes = [Node(CloudPorts::free()), Node(CloudPorts::free())];
    let mut node_one = nodes[0].start("cloud-1", &redis, dir.path());
    let _node_two = nodes[1].start("cloud-2", &redis, dir.path());
    let edges: Vec<Process> = sites
        .iter()
        .map(|site| start_edge(site, &tansu, &nodes, dir.path()))
        .collect();
    let mut households: Vec<Process> = sites
        .iter()
        .map(|site| start_households(site, &tansu, dir.path()))
        .collect();

    // Node fault: kill node 1 once both sites ship, go on on node 2 alone,
    // then bring node 1 back on its ports.
    wait_for_progress("both sites to ship", &sites, &[0, 0], 100);
    node_one.kill();
    let at_kill: Vec<u64> = sites.iter().map(|site| acked(&site.db)).collect();
    wait_for_log_lines(&edges, "cloud node went away", &nodes[0].address());
    wait_for_progress("shipping through node 2 alone", &sites, &at_kill, 200);
    let _node_one = nodes[0].start("cloud-1-again", &redis, dir.path());
    wait_for_log_lines(&edges, "cloud node came back", &nodes[0].address());

    // Shard fault: one primary killed and restarted empty, its buckets'
    // tuples gone; the edges must refill exactly those.
    let at_restart: Vec<u64> = sites.iter().map(|site| acked(&site.db)).collect();
    wait_for_progress(
        "shipping through both nodes again",
        &sites,
        &at_restart,
        100,
    );
    let lost = node_tuples(&redis, 1).len();
    redis.restart_empty(1);
    println!("primary 1 restarted empty; it held {lost} tuples");
    assert!(lost > 0, "the restarted primary held some of the tuples");
    // (`restart_empty` checked it came back empty; new writes land on it
    // at once, so its count now proves nothing.)

    for process in &mut households {
        let status = process.wait_exit(Duration::from_secs(240));
        assert!(
            status.success(),
            "households failed: {status}\n{}",
            process.log_tail()
        );
    }
    wait_until(
        "every site acknowledged and the cluster refilled",
        SETTLE_WITHIN,
        || {
            sites
                .iter()
                .all(|site| acked(&site.db) == site.oracle.len() as u64)
                && cluster_tuples(&redis).len() == expected_total
                && nodes
                    .iter()
                    .all(|node| states_tuples(node.0.http) == Ok(expected_total as u64))
        },
    );

    for site in &sites {
        assert_outbox_matches(site);
    }
    // Exactly once in the cluster: every tuple key of every shard, each
    // holding the oracle's average, none twice, none missing.
    let stored = cluster_tuples(&redis);
    assert_eq!(
        stored.len(),
        expected_total,
        "one entry per tuple in the cluster"
    );
    let mut seen = std::collections::BTreeSet::new();
    for tuple in &stored {
        let window = tuple.window_start_ms.expect("the Rust edge sends windows");
        let site = sites
            .iter()
            .find(|site| site.id == tuple.edge_id)
            .unwrap_or_else(|| panic!("a tuple of an unknown edge: {}", tuple.edge_id));
        let expected = &site.oracle[&(tuple.node_id.clone(), window)];
        assert_eq!(tuple.average_w, expected.average_w);
        assert!(
            seen.insert((tuple.edge_id.clone(), tuple.node_id.clone(), window)),
            "stored twice: {} {} {window}",
            tuple.edge_id,
            tuple.node_id
        );
    }
    for node in &nodes {
        assert_eq!(states_tuples(node.0.http), Ok(expected_total as u64));
    }
    // Each edge saw node 1 go and come back (waited for above) while it
    // stayed connected through node 2, and refilled what the shard lost.
    for edge in &edges {
        let log = std::fs::read_to_string(&edge.log).expect("the edge's log");
        assert!(
            !log.contains("cloud disconnected"),
            "{}: the edge lost the cloud while node 2 was up",
            edge.name
        );
        assert!(
            log.contains("tuples shipped again"),
            "{}: no reship after the shard's loss",
            edge.name
        );
    }
}
