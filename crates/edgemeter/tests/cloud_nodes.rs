//! Goal: an edge given two cloud nodes (`--cloud A,B`) loses nothing and
//! doubles nothing when one node is killed mid-run and later restarted,
//! stays connected throughout (the other node answers), and says in its
//! log which node went away and that it came back.
//!
//! Method: the real binaries on real servers: tansu, one redis-server
//! shared by two `edgemeter cloud` processes (any node answers any batch,
//! since deduplication lives in the shared store), one edge dialing both
//! and the households replaying at 10x. Both nodes must store tuples
//! before the fault (NNG spreads the data socket's requests over both
//! pipes); node B is SIGKILLed with batches in flight on its pipe, which
//! NNG resends on A's; the edge keeps acknowledging; B is restarted on the
//! same ports and stores again. The end state is the oracle's, every tuple
//! once in Redis, and the edge never logged "cloud disconnected".

mod common;

use common::cluster::{assert_end_state, oracle, Cluster};
use common::{edgemeter_process, http_get, wait_until, CloudPorts, Process};
use std::time::Duration;

/// Ten minutes of readings at 10x: a minute of replay, long enough to kill
/// and restart a node in the middle of it.
const SPEED: &str = "10";

/// Acknowledged tuples between the steps of the run: a sixth of it.
const PROGRESS_BETWEEN_STEPS: u64 = 1_000;

/// How long the edge may take to notice a node's death or return: three
/// missed 1 s heartbeats plus NNG's redial (at most 2 s), with a margin
/// for a loaded machine.
const NODE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the edge's log says a node changed (see `edge.rs`).
const WENT_AWAY: &str = "cloud node went away";
const CAME_BACK: &str = "cloud node came back";

/// One cloud node of the cluster: its own ports, the cluster's Redis and keys.
struct Node {
    ports: CloudPorts,
    name: &'static str,
}

impl Node {
    /// `HOST:HEARTBEAT_PORT:DATA_PORT`: how `--cloud` names it, and the log.
    fn address(&self) -> String {
        self.ports.address()
    }

    fn start(&self, cluster: &Cluster) -> Process {
        let keys = cluster.dir.path().join("cloud.keys");
        self.ports.start(
            self.name,
            ["--redis", &cluster.redis.url()],
            &["--keys", keys.to_str().expect("UTF-8 path")],
            cluster.dir.path(),
        )
    }

    /// Tuples this node's process stored since it started, from its
    /// `/metrics`; 0 while it does not answer.
    fn tuples_stored(&self) -> f64 {
        let Ok((_, body)) = http_get(self.ports.http, "/metrics") else {
            return 0.0;
        };
        body.lines()
            .find_map(|line| line.strip_prefix("edgemeter_cloud_tuples_stored_total "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The edge's log lines that contain `text` and name `node`.
fn log_lines(edge: &Process, text: &str, node: &Node) -> usize {
    let log = std::fs::read_to_string(&edge.log).unwrap_or_default();
    let address = node.address();
    log.lines()
        .filter(|line| line.contains(text) && line.contains(&address))
        .count()
}

#[test]
fn a_killed_cloud_node_loses_nothing_and_the_edge_stays_connected() {
    let expected = oracle();
    let total = expected.len() as u64;
    assert!(total > 4 * PROGRESS_BETWEEN_STEPS);
    let cluster = Cluster::start();
    let node_a = Node {
        ports: cluster.cloud_ports(),
        name: "cloud-a",
    };
    let node_b = Node {
        ports: CloudPorts::free(),
        name: "cloud-b",
    };
    let _cloud_a = node_a.start(&cluster);
    let mut cloud_b = node_b.start(&cluster);
    let mut args = cluster.edge_args();
    let cloud_flag = args
        .iter()
        .position(|arg| arg == "--cloud")
        .expect("the edge has --cloud");
    args[cloud_flag + 1] = format!("{},{}", node_a.address(), node_b.address());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let edge = edgemeter_process("edge", &args, cluster.dir.path());
    let mut households = cluster.households(SPEED);

    cluster.wait_for_acked(PROGRESS_BETWEEN_STEPS, Duration::from_secs(120));
    assert!(
        node_a.tuples_stored() > 0.0 && node_b.tuples_stored() > 0.0,
        "the data socket spreads batches over both nodes: a stored {}, b stored {}",
        node_a.tuples_stored(),
        node_b.tuples_stored()
    );
    assert_eq!(log_lines(&edge, WENT_AWAY, &node_b), 0);

    // Node B dies with batches in flight; A takes them and all that follow.
    cloud_b.kill();
    let acked_at_kill = cluster.acked();
    assert!(
        households.try_status().is_none() && acked_at_kill < total,
        "the replay must still be running when node B is killed"
    );
    wait_until(
        "the edge to log that node B went away",
        NODE_CHANGE_TIMEOUT,
        || log_lines(&edge, WENT_AWAY, &node_b) == 1,
    );
    assert_eq!(
        log_lines(&edge, WENT_AWAY, &node_a),
        0,
        "node A never went away"
    );
    cluster.wait_for_acked(
        acked_at_kill + PROGRESS_BETWEEN_STEPS,
        Duration::from_secs(120),
    );

    // Node B comes back on the same ports and takes batches again.
    let acked_at_restart = cluster.acked();
    assert!(
        acked_at_restart < total,
        "node B must be back before the end"
    );
    let _cloud_b_again = node_b.start(&cluster);
    wait_until(
        "the edge to log that node B came back",
        NODE_CHANGE_TIMEOUT,
        || log_lines(&edge, CAME_BACK, &node_b) == 1,
    );

    let status = households.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "households failed: {status}");
    cluster.wait_for_acked(total, Duration::from_secs(180));
    assert_end_state(&cluster, &expected);
    assert!(
        node_b.tuples_stored() > 0.0,
        "the restarted node B takes batches again"
    );

    let log = std::fs::read_to_string(&edge.log).expect("the edge's log");
    assert!(
        !log.contains("cloud disconnected"),
        "the edge stayed connected through node A:\n{}",
        edge.log_tail()
    );
    assert_eq!(
        log_lines(&edge, WENT_AWAY, &node_b),
        1,
        "one line per change"
    );
    assert_eq!(log_lines(&edge, CAME_BACK, &node_b), 1);
    assert_eq!(
        log.matches("cloud connected").count(),
        1,
        "connected once, at start"
    );
}
