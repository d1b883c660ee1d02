//! A whole deployment for the end-to-end tests: tansu, redis-server, and
//! the `edgemeter` binary's `cloud`, `edge` and `households` as separate
//! processes, on free loopback ports; plus the end-state check every
//! end-to-end test ends with.

use super::{edgemeter_process, free_port, wait_until, CloudPorts, Process, RedisServer, Tansu};
use edgemeter_checker::{oracle_windows, OracleWindow};
use edgemeter_data::load_dir;
use edgemeter_edge::Outbox;
use edgemeter_redis::layout::{tuple_key_of, BucketKeys, TUPLE_PATTERN};
use edgemeter_store::SqliteOutbox;
use redis::Commands;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

pub const EDGE_ID: &str = "it-edge";

/// The replayed span: the first ten minutes of every household.
pub const DURATION: &str = "10m";
pub const DURATION_MS: i64 = 600_000;

/// The edge's `--idle-flush` in these tests (see [`Cluster::edge_args`]).
pub const TEST_IDLE_FLUSH: &str = "10s";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub tansu: Tansu,
    pub redis: RedisServer,
    pub heartbeat_port: u16,
    pub data_port: u16,
    /// The cloud's dashboard and REST API (`--http`).
    pub http_port: u16,
    pub db: PathBuf,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // The deployment is authenticated: the edge seals every request with
        // its key, and the cloud knows that key and no unauthenticated peer.
        let key = "5a".repeat(32);
        std::fs::write(dir.path().join("edge.key"), &key).expect("write the edge key");
        std::fs::write(dir.path().join("cloud.keys"), format!("{EDGE_ID} {key}\n"))
            .expect("write the cloud's keys");
        let tansu = Tansu::start(dir.path());
        let redis = RedisServer::start();
        let db = dir.path().join("edge.db");
        Cluster {
            tansu,
            redis,
            heartbeat_port: free_port(),
            data_port: free_port(),
            http_port: free_port(),
            db,
            dir,
        }
    }

    pub fn cloud(&self) -> Process {
        let keys = self.dir.path().join("cloud.keys");
        self.cloud_ports().start(
            "cloud",
            ["--redis", &self.redis.url()],
            &["--keys", keys.to_str().expect("UTF-8 path")],
            self.dir.path(),
        )
    }

    /// The ports of this cluster's one cloud.
    pub fn cloud_ports(&self) -> CloudPorts {
        CloudPorts {
            heartbeat: self.heartbeat_port,
            data: self.data_port,
            http: self.http_port,
        }
    }

    pub fn edge(&self) -> Process {
        let args = self.edge_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        edgemeter_process("edge", &args, self.dir.path())
    }

    /// The arguments of `edgemeter edge` for this cluster.
    pub fn edge_args(&self) -> Vec<String> {
        let key = self.dir.path().join("edge.key");
        [
            "edge",
            "--kafka",
            &self.tansu.address(),
            "--cloud",
            "127.0.0.1",
            "--heartbeat-port",
            &self.heartbeat_port.to_string(),
            "--data-port",
            &self.data_port.to_string(),
            "--db",
            self.db.to_str().expect("UTF-8 path"),
            "--edge-id",
            EDGE_ID,
            "--key-file",
            key.to_str().expect("UTF-8 path"),
            // The tests' streams end for good, and the wait at their end is
            // the idle flush: the old 10 s keeps them fast. The edge still
            // flushes only once the broker confirms the end, which is what
            // `broker_outage` relies on; `producer_stall` sets its own.
            "--idle-flush",
            TEST_IDLE_FLUSH,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn households(&self, speed: &str) -> Process {
        let data = super::data_dir();
        let args = [
            "households",
            "--kafka",
            &self.tansu.address(),
            "--data",
            data.to_str().expect("UTF-8 path"),
            "--speed",
            speed,
            "--duration",
            DURATION,
        ];
        edgemeter_process("households", &args, self.dir.path())
    }

    /// Tuples acknowledged so far; 0 before the edge created its database.
    pub fn acked(&self) -> u64 {
        if !self.db.exists() {
            return 0;
        }
        SqliteOutbox::open_read_only(&self.db)
            .and_then(|mut outbox| outbox.status())
            .map(|counts| counts.acked)
            .unwrap_or(0)
    }

    pub fn wait_for_acked(&self, count: u64, timeout: Duration) {
        wait_until(&format!("{count} acknowledged tuples"), timeout, || {
            self.acked() >= count
        });
    }

    /// Replays the households at `speed` to their end, then waits until
    /// the edge has acknowledged `count` tuples.
    pub fn replay_until_acked(&self, speed: &str, count: u64) {
        let mut households = self.households(speed);
        let status = households.wait_exit(Duration::from_secs(180));
        assert!(
            status.success(),
            "households failed: {status}\n{}",
            households.log_tail()
        );
        self.wait_for_acked(count, Duration::from_secs(180));
    }

    /// The keys of this edge's tuples in Redis, walked with SCAN over
    /// every bucket.
    pub fn tuple_keys(&self) -> Vec<String> {
        let mut connection = self.redis.connection();
        let ours = format!("tuple:{EDGE_ID}:");
        let keys: Vec<String> = connection
            .scan_match::<_, String>(TUPLE_PATTERN)
            .expect("scan")
            .collect::<Result<_, _>>()
            .expect("scan keys");
        keys.into_iter()
            .filter(|key| tuple_key_of(key).is_some_and(|tuple| tuple.starts_with(&ours)))
            .collect()
    }
}

/// The averages the pipeline must produce, computed from the CSV directly.
pub fn oracle() -> BTreeMap<(String, i64), OracleWindow> {
    let (households, _) =
        load_dir(&super::data_dir(), Some(DURATION_MS)).expect("the shipped data loads");
    assert_eq!(households.len(), 50);
    oracle_windows(&households)
}

/// Every tuple at flag 2 with its household's postal code and the oracle's
/// average; Redis holds exactly one entry per tuple with the same average;
/// the incremental totals count each tuple once.
pub fn assert_end_state(cluster: &Cluster, oracle: &BTreeMap<(String, i64), OracleWindow>) {
    let stored = SqliteOutbox::open_read_only(&cluster.db)
        .and_then(|outbox| outbox.all_tuples())
        .expect("read the edge db");
    assert_eq!(
        stored.len(),
        oracle.len(),
        "one SQLite row per oracle window, no more, no less"
    );
    let mut codes = HashMap::new();
    for tuple in &stored {
        let key = (tuple.node_id.clone(), tuple.window_start_ms);
        let expected = oracle
            .get(&key)
            .unwrap_or_else(|| panic!("a tuple the oracle does not have: {key:?}"));
        assert_eq!(tuple.average_w, expected.average_w, "average of {key:?}");
        assert_eq!(tuple.samples, expected.samples, "samples of {key:?}");
        assert_eq!(tuple.sent, 2, "{key:?} is not acknowledged");
        let code = tuple
            .postal_code
            .clone()
            .unwrap_or_else(|| panic!("{key:?} has no postal code"));
        assert_eq!(
            code,
            edgemeter_cloud::postal_code_for(&tuple.node_id).as_str()
        );
        codes.insert(key, code);
    }

    let keys = cluster.tuple_keys();
    assert_eq!(keys.len(), oracle.len(), "one Redis entry per tuple");
    let mut connection = cluster.redis.connection();
    for key in &keys {
        let value: Vec<u8> = redis::cmd("GET")
            .arg(key)
            .query(&mut connection)
            .expect("get");
        let cached = edgemeter_cloud::CloudTuple::from_stored_value(key.clone(), &value)
            .unwrap_or_else(|| panic!("{key} holds a tuple"));
        let window = cached.window_start_ms.expect("the Rust edge sends windows");
        let tuple_key = (cached.node_id.clone(), window);
        let expected = &oracle[&tuple_key];
        assert_eq!(
            cached.average_w, expected.average_w,
            "Redis average of {tuple_key:?}"
        );
        assert_eq!(
            cached.postal_code.as_str(),
            codes[&tuple_key],
            "the code Redis holds is the one the edge got"
        );
    }
    // Every bucket holds its part of the totals; their sums count each
    // tuple once.
    let edge_tuples: u64 = BucketKeys::all()
        .map(|keys| {
            redis::cmd("HGET")
                .arg(keys.edge(EDGE_ID))
                .arg("tuples")
                .query::<Option<u64>>(&mut connection)
                .expect("edge totals")
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        edge_tuples,
        oracle.len() as u64,
        "the edge's total counts each tuple once"
    );
    let mut state_tuples = 0u64;
    for keys in BucketKeys::all() {
        for state in edgemeter_cloud::GermanState::ALL {
            let tuples: Option<u64> = redis::cmd("HGET")
                .arg(keys.state(state))
                .arg("tuples")
                .query(&mut connection)
                .expect("state totals");
            state_tuples += tuples.unwrap_or(0);
        }
    }
    assert_eq!(
        state_tuples,
        oracle.len() as u64,
        "the state totals count each tuple once"
    );
}
