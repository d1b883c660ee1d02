//! `RedisCluster`: a Redis Cluster of the test's own, [`PRIMARIES`]
//! primaries and no replicas, each a `redis-server --cluster-enabled yes`
//! on free loopback ports (client and cluster bus, both chosen here) in a
//! directory of its own, with persistence off, joined by
//! `redis-cli --cluster create`. Killed when its handle drops.
//!
//! A primary can be killed and restarted empty on the same port: its
//! `nodes.conf` (the node's id, epoch and slots) is kept and its data is
//! deleted, so it rejoins as the same node owning the same slots, with
//! none of their keys: what a shard's loss without persistence, or a
//! failover to an empty replica, looks like to the cloud.

use crate::{free_port, spawn_redis_server};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Primaries in the cluster: the fewest `redis-cli --cluster create`
/// accepts.
pub const PRIMARIES: usize = 3;

/// How long each node waits before it marks a silent peer failed. Short,
/// so that a killed primary is noticed within a test, and long enough
/// that a loaded two-core machine does not fail nodes that only paused.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(3_000);

/// How long the cluster may take to report `cluster_state:ok` on every
/// node after a create or a restart: covering a FAIL flag that has to
/// clear (twice the node timeout in Redis) with room for a slow machine.
pub const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between two probes of the cluster's state.
const PROBE_PAUSE: Duration = Duration::from_millis(100);

/// Ports are tried at most this many times to find a client port and a
/// bus port that are both free.
const PORT_ATTEMPTS_MAX: usize = 100;

/// One node: its ports, its process while it runs, and its directory
/// (its `nodes.conf`, kept across restarts).
struct Node {
    port: u16,
    bus_port: u16,
    /// `cluster-require-full-coverage`: whether the node refuses every
    /// command while some slot's primary is down (Redis's default) or
    /// keeps serving the slots that are up.
    full_coverage: bool,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(full_coverage: bool) -> Node {
        let (port, bus_port) = two_free_ports();
        Node {
            port,
            bus_port,
            full_coverage,
            child: None,
            dir: tempfile::tempdir().expect("a directory for a cluster node"),
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already runs", self.port);
        let (bus_port, timeout) = (
            self.bus_port.to_string(),
            NODE_TIMEOUT.as_millis().to_string(),
        );
        let coverage = if self.full_coverage { "yes" } else { "no" };
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus_port,
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout,
            "--cluster-require-full-coverage",
            coverage,
        ];
        self.child = Some(spawn_redis_server(
            self.port,
            self.dir.path(),
            &cluster_args,
            "cluster node",
        ));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deletes whatever data the node could load at start; `nodes.conf`
    /// stays. With persistence off there should be none: this makes sure.
    fn delete_data(&self) {
        for name in ["dump.rdb", "appendonly.aof", "appendonlydir"] {
            let path = self.dir.path().join(name);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir_all(&path);
        }
        assert!(
            self.dir.path().join("nodes.conf").exists(),
            "the node's cluster config is kept"
        );
    }
}

/// A running Redis Cluster of the test's own.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts [`PRIMARIES`] nodes, creates the cluster over them (slots
    /// split evenly, no replicas) and waits for `cluster_state:ok` on
    /// every node. With Redis's default, every node refuses commands once
    /// a primary is marked failed.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(true)
    }

    /// As [`RedisCluster::start`], with `cluster-require-full-coverage no`:
    /// while a primary is down the others keep serving their slots.
    pub fn start_partial_coverage() -> RedisCluster {
        RedisCluster::start_with(false)
    }

    fn start_with(full_coverage: bool) -> RedisCluster {
        let mut nodes: Vec<Node> = (0..PRIMARIES).map(|_| Node::new(full_coverage)).collect();
        for node in &mut nodes {
            node.spawn();
        }
        let cluster = RedisCluster { nodes };
        let addresses: Vec<String> = cluster
            .ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    /// The nodes' client ports, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// One URL per node, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The running nodes' process ids, in start order, for a bench to read
    /// their CPU time.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(Child::id))
            .collect()
    }

    /// The URLs joined by commas, as `--redis-cluster` takes them.
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    /// A synchronous connection to node `node` (not cluster-aware: for a
    /// test to look inside that node).
    pub fn connection(&self, node: usize) -> redis::Connection {
        redis::Client::open(self.urls()[node].as_str())
            .and_then(|client| client.get_connection())
            .expect("a connection to a cluster node")
    }

    /// The node (index in start order) whose slots hold `key`.
    pub fn node_of_key(&self, key: &str) -> usize {
        let mut connection = self.connection(0);
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .expect("CLUSTER KEYSLOT");
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut connection)
            .expect("CLUSTER NODES");
        let port = serving_port(&nodes, slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}:\n{nodes}"));
        self.ports()
            .iter()
            .position(|known| *known == port)
            .expect("the serving node is one of ours")
    }

    /// Kills node `node` (SIGKILL): its data is gone with it.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Kills node `node` if it runs, deletes its data but not its cluster
    /// config, starts it on the same port, and waits until every node
    /// reports `cluster_state:ok`: it is back as the same primary with the
    /// same slots, empty.
    pub fn restart_empty(&mut self, node: usize) {
        self.nodes[node].kill();
        self.nodes[node].delete_data();
        self.nodes[node].spawn();
        let mut connection = self.connection(node);
        let keys: u64 = redis::cmd("DBSIZE").query(&mut connection).expect("DBSIZE");
        assert_eq!(keys, 0, "a restarted node is empty");
        self.wait_ok();
    }

    /// Waits until every node reports `cluster_state:ok` and sees
    /// [`PRIMARIES`] connected primaries; panics after
    /// [`CLUSTER_OK_TIMEOUT`].
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_OK_TIMEOUT;
        for node in 0..self.nodes.len() {
            while !self.node_ok(node) {
                assert!(
                    Instant::now() < deadline,
                    "cluster node {} not ok within {CLUSTER_OK_TIMEOUT:?}",
                    self.nodes[node].port
                );
                std::thread::sleep(PROBE_PAUSE);
            }
        }
    }

    fn node_ok(&self, node: usize) -> bool {
        let Ok(client) = redis::Client::open(self.urls()[node].as_str()) else {
            return false;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return false;
        };
        let info: redis::RedisResult<String> =
            redis::cmd("CLUSTER").arg("INFO").query(&mut connection);
        let nodes: redis::RedisResult<String> =
            redis::cmd("CLUSTER").arg("NODES").query(&mut connection);
        match (info, nodes) {
            (Ok(info), Ok(nodes)) => {
                info.lines().any(|line| line.trim() == "cluster_state:ok")
                    && healthy_primaries(&nodes) == PRIMARIES
            }
            _ => false,
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// A client port and a cluster bus port, both free now and distinct.
fn two_free_ports() -> (u16, u16) {
    for _ in 0..PORT_ATTEMPTS_MAX {
        let (port, bus_port) = (free_port(), free_port());
        if port != bus_port && port != crate::REDIS_DEFAULT_PORT {
            return (port, bus_port);
        }
    }
    panic!("no two free loopback ports in {PORT_ATTEMPTS_MAX} attempts");
}

/// The primaries in a `CLUSTER NODES` listing that are connected and not
/// flagged failing.
fn healthy_primaries(nodes: &str) -> usize {
    nodes
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 8)
        .filter(|fields| {
            let flags = fields[2];
            flags.contains("master") && !flags.contains("fail") && fields[7] == "connected"
        })
        .count()
}

/// The client port of the primary serving `slot` in a `CLUSTER NODES`
/// listing (`<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch>
/// <link> <slot ranges...>`).
fn serving_port(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            return None;
        }
        let serves = fields[8..].iter().any(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            match (first.parse::<u16>(), last.parse::<u16>()) {
                (Ok(first), Ok(last)) => (first..=last).contains(&slot),
                // `[slot->-id]` entries: a slot in migration, not served.
                _ => false,
            }
        });
        let address = fields[1].split('@').next()?;
        serves.then(|| address.rsplit(':').next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_listing_names_the_primary_of_a_slot() {
        let nodes = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922 10924\n\
                     c 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923 10925-16383\n";
        assert_eq!(serving_port(nodes, 0), Some(7000));
        assert_eq!(serving_port(nodes, 10_924), Some(7001));
        assert_eq!(serving_port(nodes, 10_923), Some(7002));
        assert_eq!(healthy_primaries(nodes), 2);
    }

    /// Goal: the cluster comes up ok with its primaries; a key written to
    /// a primary is gone after that primary's empty restart, while a key
    /// on another primary stays, and the cluster is ok again.
    #[test]
    fn a_primary_restarts_empty_and_the_others_keep_their_keys() {
        let mut cluster = RedisCluster::start();
        assert_eq!(cluster.ports().len(), PRIMARIES);
        assert!(!cluster.ports().contains(&crate::REDIS_DEFAULT_PORT));
        let (lost, kept) = ("{a}", "{b}");
        let (lost_node, kept_node) = (cluster.node_of_key(lost), cluster.node_of_key(kept));
        assert_ne!(lost_node, kept_node, "the two tags are on different nodes");
        for (key, node) in [(lost, lost_node), (kept, kept_node)] {
            redis::cmd("SET")
                .arg(key)
                .arg("v")
                .query::<()>(&mut cluster.connection(node))
                .unwrap();
        }
        cluster.restart_empty(lost_node);
        assert!(cluster.nodes[lost_node]
            .dir
            .path()
            .join("nodes.conf")
            .exists());
        let get = |key: &str, node: usize| -> Option<String> {
            redis::cmd("GET")
                .arg(key)
                .query(&mut cluster.connection(node))
                .unwrap()
        };
        assert_eq!(get(lost, lost_node), None, "the restarted primary is empty");
        assert_eq!(get(kept, kept_node).as_deref(), Some("v"));
        assert_eq!(
            cluster.node_of_key(lost),
            lost_node,
            "it serves the same slots"
        );
    }
}
