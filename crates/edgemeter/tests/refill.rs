//! A cloud that forgets is refilled from the edges, and mixed mode is not a
//! back door, on the real binaries and servers.
//!
//! Refill. Goal: after every tuple is acknowledged, a Redis FLUSHALL (what
//! a restart without persistence or a failover to an empty replica does)
//! is refilled by the edge within 90 s, each tuple stored once and counted
//! once in the totals the dashboard's `GET /api/states` serves. Method:
//! tansu, redis-server and the binary's `cloud`, `edge` and `households` as
//! separate processes; the replay runs to the end, FLUSHALL, then Redis is
//! walked with SCAN (never KEYS) and the REST API asked until both count
//! every tuple, and the whole end state is compared with the oracle.
//!
//! Mixed mode. Goal: a cloud started with both `--keys` and
//! `--allow-unauthenticated` refuses an unsealed request naming its keyed
//! edge, in both wire versions and on both sockets, and nothing of it
//! reaches Redis, while an edge without a key is still served. Method: the
//! issue's forgery over a plain NNG REQ socket, then Redis's key count.

mod common;

use common::cluster::{assert_end_state, oracle, Cluster};
use common::{ask, start_cloud, states_tuples, wait_until, RedisServer};
use edgemeter_redis::layout::{tuple_key_of, BucketKeys, TUPLE_PATTERN};
use edgemeter_wire::{
    BatchReply, BatchRequest, HeartbeatRequest, ReplyOutcome, TupleOut, WireVersion,
};
use redis::Commands;
use std::time::{Duration, Instant};

/// The bound on the refill after a FLUSHALL.
const REFILL_WITHIN: Duration = Duration::from_secs(90);

/// Tuples under the edge's keys in Redis.
fn tuple_keys(cluster: &Cluster) -> usize {
    cluster.tuple_keys().len()
}

/// Every bucket's store epoch, in bucket order; `None` where a bucket has
/// none.
fn bucket_epochs(connection: &mut redis::Connection) -> Vec<Option<String>> {
    BucketKeys::all()
        .map(|keys| connection.get(keys.epoch()).expect("read an epoch"))
        .collect()
}

#[test]
fn a_flushed_redis_is_refilled_from_the_edge_within_90_s() {
    let expected = oracle();
    let cluster = Cluster::start();
    let _cloud = cluster.cloud();
    let edge = cluster.edge();
    cluster.replay_until_acked("max", expected.len() as u64);
    assert_eq!(tuple_keys(&cluster), expected.len());
    assert_eq!(states_tuples(cluster.http_port), Ok(expected.len() as u64));

    let mut connection = cluster.redis.connection();
    let epoch_before = bucket_epochs(&mut connection);
    assert!(
        epoch_before.iter().all(Option::is_some),
        "every bucket has an epoch"
    );
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut connection)
        .expect("FLUSHALL");
    assert_eq!(tuple_keys(&cluster), 0, "the cloud forgot everything");
    let flushed = Instant::now();
    wait_until("the refill", REFILL_WITHIN, || {
        tuple_keys(&cluster) == expected.len()
            && states_tuples(cluster.http_port) == Ok(expected.len() as u64)
    });
    println!(
        "refilled {} tuples in {:?}",
        expected.len(),
        flushed.elapsed()
    );
    let epoch_after = bucket_epochs(&mut connection);
    assert!(
        epoch_after.iter().all(Option::is_some),
        "every bucket has a new epoch"
    );
    assert_ne!(epoch_after, epoch_before, "a flushed store has a new epoch");
    assert_end_state(&cluster, &expected);
    // The edge's stderr is a file: the reship shows as progress lines, the
    // last once the pass has scanned to its end and the count stands still.
    let mut reshipped = None;
    wait_until("the reship's last progress line", REFILL_WITHIN, || {
        let log = std::fs::read_to_string(&edge.log).unwrap_or_default();
        reshipped = log
            .lines()
            .filter(|line| line.trim_end().ends_with(", done"))
            .find_map(|line| line.split_once("tuples shipped again: "))
            .and_then(|(_, rest)| rest.split_once(',')?.0.parse::<u64>().ok());
        reshipped.is_some()
    });
    assert!(
        reshipped >= Some(expected.len() as u64),
        "the reship's progress shows {reshipped:?} tuples, fewer than the {} refilled",
        expected.len()
    );
    let rows = edgemeter_store::SqliteOutbox::open_read_only(&cluster.db)
        .and_then(|outbox| outbox.all_tuples())
        .expect("read the edge db");
    // Each tuple under its own bucket's new epoch.
    let epochs: Vec<u64> = epoch_after
        .iter()
        .map(|held| {
            // `<epoch>:<run id of the server that set it>`
            let held = held.as_deref().expect("read above");
            let (epoch, _run) = held.split_once(':').expect("epoch:run id");
            epoch.parse().expect("a decimal epoch")
        })
        .collect();
    assert!(
        rows.iter().all(|row| {
            let bucket = usize::from(edgemeter_wire::store_bucket(&row.node_id));
            row.acked_epoch == Some(epochs[bucket]) && !row.conflict
        }),
        "every tuple acknowledged again under its bucket's new epoch, none in conflict"
    );
}

fn forged_batch(version: WireVersion, edge_id: &str) -> Vec<u8> {
    BatchRequest {
        version,
        edge_id: edge_id.to_owned(),
        instance: 0,
        request_id: 1,
        tuples: (0..2)
            .map(|index| TupleOut {
                tuple_id: index + 1,
                node_id: "8c345400feac9da8".to_owned(),
                window_start_ms: 1_577_145_600_000 + index * 5_000,
                average_w: 1.0,
                samples: 1,
            })
            .collect(),
    }
    .encode()
}

#[test]
fn mixed_mode_refuses_an_unsealed_request_for_a_keyed_edge() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let keys = dir.path().join("cloud.keys");
    std::fs::write(&keys, format!("edge-1 {}\n", "5a".repeat(32))).unwrap();
    let keys = keys.to_str().unwrap();
    let (_cloud, heartbeat_port, data_port) = start_cloud(
        &redis,
        dir.path(),
        &["--keys", keys, "--allow-unauthenticated"],
    );
    for version in [WireVersion::V1, WireVersion::V2] {
        let reply = ask(data_port, &forged_batch(version, "edge-1"));
        assert!(
            reply.starts_with(b"ERROR: unauthenticated"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    for heartbeat in [
        HeartbeatRequest::Edge {
            edge_id: "edge-1".into(),
        },
        HeartbeatRequest::EdgeV2 {
            edge_id: "edge-1".into(),
        },
    ] {
        assert!(ask(heartbeat_port, &heartbeat.encode()).starts_with(b"ERROR: unauthenticated"));
    }
    let mut connection = redis.connection();
    let size: u64 = redis::cmd("DBSIZE").query(&mut connection).unwrap();
    assert_eq!(size, 0, "nothing of the forgery reached Redis");
    // The switch still serves an edge without a key.
    let reply =
        BatchReply::decode(&ask(data_port, &forged_batch(WireVersion::V1, "edge-2"))).unwrap();
    assert!(
        matches!(reply.outcome, ReplyOutcome::Stored(_)),
        "{reply:?}"
    );
    let held: Vec<String> = connection
        .scan_match::<_, String>(TUPLE_PATTERN)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter()
            .all(|key| tuple_key_of(key).is_some_and(|tuple| tuple.starts_with("tuple:edge-2:"))),
        "{held:?}"
    );
}
