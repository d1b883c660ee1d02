//! Key rotation without a restart, on the real binaries.
//!
//! Cloud. Goal: after SIGHUP the cloud serves what its keys file holds now:
//! a request sealed with an edge's new key is served and one with its old
//! key refused; a bad file is refused whole and the keys in force stay.
//! Method: `edgemeter cloud` on a real redis-server with a keys file holding
//! edge A's first key; sealed batches over a plain NNG REQ socket before
//! and after each SIGHUP, waiting for the cloud's log line of each reload.
//!
//! Edge. Goal: after SIGHUP a running edge seals its requests with its key
//! file's new key. Method: tansu, redis-server, the binary's cloud, edge and
//! households; the cloud holds only the new key, so the edge, started with
//! the old one, ships nothing until its key file is changed and SIGHUP
//! sent; then every tuple is acknowledged and the end state is the oracle's.

mod common;

use common::cluster::{assert_end_state, oracle, Cluster, EDGE_ID};
use common::{ask, start_cloud, wait_until, Process, RedisServer};
use edgemeter_edge::Outbox;
use edgemeter_store::SqliteOutbox;
use edgemeter_wire::sealed::{open_reply, seal_request};
use edgemeter_wire::{BatchReply, BatchRequest, EdgeKey, ReplyOutcome, TupleOut, WireVersion};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a process may take to log that it read its key file again.
const RELOAD_WITHIN: Duration = Duration::from_secs(30);

fn sighup(process: &Process) {
    let pid = process.pid().expect("the process runs") as libc::pid_t;
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(sent, 0, "kill -HUP {pid}");
}

/// Waits until `text` appears in the process's log `count` times.
fn wait_for_log(process: &Process, text: &str, count: usize) {
    wait_until(
        &format!("{count} × `{text}` in the log"),
        RELOAD_WITHIN,
        || {
            std::fs::read_to_string(&process.log)
                .unwrap_or_default()
                .matches(text)
                .count()
                >= count
        },
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// Whether the cloud stores a batch from `edge_id` sealed with `key`: a
/// sealed `Stored` reply is yes, the refusal of an unknown key no.
fn served(data_port: u16, edge_id: &str, key: &EdgeKey, request_id: u64) -> bool {
    let body = BatchRequest {
        version: WireVersion::V2,
        edge_id: edge_id.to_owned(),
        instance: 0,
        request_id,
        tuples: vec![TupleOut {
            tuple_id: request_id as i64,
            node_id: "8c345400feac9da8".to_owned(),
            window_start_ms: 1_577_145_600_000 + request_id as i64 * 5_000,
            average_w: 1.0,
            samples: 1,
        }],
    }
    .encode();
    let (sealed, tag) = seal_request(edge_id, key, now_ms(), &body);
    let reply = ask(data_port, &sealed);
    if reply.starts_with(b"ERROR: unauthenticated") {
        return false;
    }
    let opened = open_reply(&reply, key, &tag).expect("a served reply is sealed with the key");
    let reply = BatchReply::decode(&opened).expect("a batch reply");
    assert!(
        matches!(
            reply.outcome,
            ReplyOutcome::Stored(_) | ReplyOutcome::StoredUnder { .. }
        ),
        "{reply:?}"
    );
    true
}

#[test]
fn the_cloud_reloads_its_keys_file_on_sighup_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let (first, second, other) = (
        EdgeKey::from_bytes([0x11; 32]),
        EdgeKey::from_bytes([0x22; 32]),
        EdgeKey::from_bytes([0x33; 32]),
    );
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("edge-a {}\n", first.to_hex())).unwrap();
    let (cloud, _, data_port) =
        start_cloud(&redis, dir.path(), &["--keys", keys.to_str().unwrap()]);
    assert!(served(data_port, "edge-a", &first, 1));
    assert!(!served(data_port, "edge-a", &second, 2), "not yet A's key");

    // Rotation: A's new key, and a new edge B.
    std::fs::write(
        &keys,
        format!("edge-a {}\nedge-b {}\n", second.to_hex(), other.to_hex()),
    )
    .unwrap();
    sighup(&cloud);
    wait_for_log(&cloud, "SIGHUP: keys reloaded", 1);
    assert!(
        served(data_port, "edge-a", &second, 3),
        "the new key is served"
    );
    assert!(
        served(data_port, "edge-b", &other, 4),
        "the added edge is served"
    );
    assert!(
        !served(data_port, "edge-a", &first, 5),
        "the old key is refused"
    );
    let log = std::fs::read_to_string(&cloud.log).unwrap();
    assert!(
        log.contains("edges=2"),
        "the reload counts the edges: {log}"
    );

    // A bad file (a line that is no key): refused, the keys in force stay.
    std::fs::write(&keys, format!("edge-a {}\nedge-b nothex\n", first.to_hex())).unwrap();
    sighup(&cloud);
    wait_for_log(&cloud, "SIGHUP: keys file refused", 1);
    assert!(
        served(data_port, "edge-a", &second, 6),
        "the previous keys still work"
    );
    assert!(served(data_port, "edge-b", &other, 7));
    assert!(
        !served(data_port, "edge-a", &first, 8),
        "the bad file's key is not taken"
    );
    let log = std::fs::read_to_string(&cloud.log).unwrap();
    assert!(log.contains("keys:2:"), "the error names the line: {log}");
    for key in [&first, &second, &other] {
        assert!(!log.contains(&key.to_hex()), "a key in the log");
    }
    assert_eq!(
        log.matches("SIGHUP: keys reloaded").count(),
        1,
        "the bad file was not taken"
    );
}

/// Tuples in the edge's database at any flag, and those acknowledged.
fn tuples(cluster: &Cluster) -> (u64, u64) {
    if !cluster.db.exists() {
        return (0, 0);
    }
    SqliteOutbox::open_read_only(&cluster.db)
        .and_then(|mut outbox| outbox.status())
        .map(|counts| (counts.queued + counts.sent + counts.acked, counts.acked))
        .unwrap_or((0, 0))
}

#[test]
fn the_edge_reloads_its_key_file_on_sighup() {
    let cluster = Cluster::start();
    let oracle = oracle();
    // The cloud knows only the new key; the edge starts with the old one
    // (Cluster wrote it to edge.key).
    let new = EdgeKey::from_bytes([0x77; 32]);
    std::fs::write(
        cluster.dir.path().join("cloud.keys"),
        format!("{EDGE_ID} {}\n", new.to_hex()),
    )
    .unwrap();
    let _cloud = cluster.cloud();
    let edge = cluster.edge();
    let mut households = cluster.households("max");
    assert!(households.wait_exit(Duration::from_secs(120)).success());
    let expected = oracle.len() as u64;
    wait_until(
        "every window stored by the edge",
        Duration::from_secs(120),
        || tuples(&cluster).0 == expected,
    );
    assert_eq!(
        tuples(&cluster).1,
        0,
        "a cloud that holds another key acknowledges nothing"
    );

    std::fs::write(cluster.dir.path().join("edge.key"), new.to_hex()).unwrap();
    sighup(&edge);
    wait_for_log(&edge, "SIGHUP: key file reloaded; the edge key changed", 1);
    cluster.wait_for_acked(expected, Duration::from_secs(120));
    assert_end_state(&cluster, &oracle);
    let log = std::fs::read_to_string(&edge.log).unwrap();
    assert!(!log.contains(&new.to_hex()), "the key is not logged");
}
