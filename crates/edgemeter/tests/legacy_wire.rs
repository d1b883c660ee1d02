//! Goal: an edge written for the original cloud can talk to ours unchanged.
//! Method: start the real `edgemeter cloud` on a real redis-server, and
//! speak the original's wire form to it with a plain NNG REQ socket.

mod common;

use common::{ask, start_cloud, RedisServer};
use edgemeter_redis::layout::{tuple_key_of, TUPLE_PATTERN};
use std::time::Duration;

fn postal_code_in(reply: &[u8], id: i64) -> String {
    let text = String::from_utf8(reply.to_vec()).expect("a text reply");
    let prefix = format!("PLZ for id: {id} - PLZ: ");
    let code = text
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected reply {text:?}"));
    assert_eq!(code.len(), 5, "{text:?}");
    assert!(code.bytes().all(|byte| byte.is_ascii_digit()), "{text:?}");
    code.to_owned()
}

/// The Redis keys of the tuples whose cloud key starts with `prefix`,
/// walked with SCAN over every bucket (never KEYS).
fn tuple_keys_with(connection: &mut redis::Connection, prefix: &str) -> Vec<String> {
    let keys: Vec<String> = redis::Commands::scan_match::<_, String>(connection, TUPLE_PATTERN)
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan keys");
    keys.into_iter()
        .filter(|key| tuple_key_of(key).is_some_and(|tuple| tuple.starts_with(prefix)))
        .collect()
}

#[test]
fn the_cloud_answers_the_original_wire_form() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let (_cloud, heartbeat_port, data_port) = start_cloud(
        &redis,
        dir.path(),
        // The original's form is unauthenticated: the operator's switch.
        &["--allow-unauthenticated"],
    );

    assert_eq!(ask(heartbeat_port, b"heartbeat"), b"ack");

    let request = br#"{"id": 5, "node_id": "abc", "average": 1.5}"#;
    let code = postal_code_in(&ask(data_port, request), 5);
    // A resend gets the same code: the household's code is fixed.
    assert_eq!(postal_code_in(&ask(data_port, request), 5), code);
    assert_eq!(code, edgemeter_cloud::postal_code_for("abc").as_str());

    // Malformed requests get an error reply, not silence.
    for malformed in [
        &br#"{"id": 6, "node_id": "abc"}"#[..],
        b"not json at all",
        br#"{"id": "x", "node_id": "abc", "average": 1}"#,
        b"",
    ] {
        let reply = ask(data_port, malformed);
        assert!(
            reply.starts_with(b"ERROR"),
            "{:?} got {:?}",
            String::from_utf8_lossy(malformed),
            String::from_utf8_lossy(&reply)
        );
    }
    // Just over the frame limit: refused with an error reply as well.
    let oversized = vec![b' '; edgemeter_wire::FRAME_BYTES_MAX + 1];
    assert!(ask(data_port, &oversized).starts_with(b"ERROR"));
    assert!(ask(heartbeat_port, b"not a heartbeat").starts_with(b"ERROR"));

    // The legacy tuple is in Redis exactly once, with its average.
    let mut connection = redis.connection();
    let keys = tuple_keys_with(&mut connection, "tuple:legacy:");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut connection)
        .unwrap();
    let stored = edgemeter_cloud::CloudTuple::from_stored_value(keys[0].clone(), &value).unwrap();
    assert_eq!((stored.average_w, stored.window_start_ms), (1.5, None));
    // And the cloud still serves after all that.
    assert_eq!(ask(heartbeat_port, b"heartbeat"), b"ack");
}

/// Goal: with Redis down the cloud answers with an error, never with a
/// postal code it has not stored, and never with silence; once Redis is
/// back the same request is stored and answered.
#[test]
fn with_redis_down_the_cloud_answers_an_error_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let (_cloud, heartbeat_port, data_port) = start_cloud(
        &redis,
        dir.path(),
        // The original's form is unauthenticated: the operator's switch.
        &["--allow-unauthenticated"],
    );
    let request = br#"{"id": 7, "node_id": "def", "average": 2.5}"#;
    postal_code_in(&ask(data_port, request), 7);

    redis.stop();
    // `ask` gives up after 10 s: an error reply, not silence, is the point.
    let reply = ask(data_port, br#"{"id": 8, "node_id": "def", "average": 3.5}"#);
    assert!(
        reply.starts_with(b"ERROR"),
        "{:?}",
        String::from_utf8_lossy(&reply)
    );
    // The cloud process itself is alive: heartbeats are still answered.
    assert_eq!(ask(heartbeat_port, b"heartbeat"), b"ack");

    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = ask(data_port, br#"{"id": 8, "node_id": "def", "average": 3.5}"#);
        if reply.starts_with(b"PLZ") {
            postal_code_in(&reply, 8);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cloud did not recover: {:?}",
            String::from_utf8_lossy(&reply)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut connection = redis.connection();
    let keys: Vec<String> = tuple_keys_with(&mut connection, "tuple:legacy:def:")
        .iter()
        .filter_map(|key| tuple_key_of(key).map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        vec!["tuple:legacy:def:id8".to_owned()],
        "only what was stored after the restart"
    );
}
