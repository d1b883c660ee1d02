//! The checker's walk of a real Redis (a redis-server of the test's own from
//! `edgemeter-testkit`, on a free loopback port, never 6379): it reads every
//! tuple key within its limits, and refuses a Redis with more keys, or
//! needing more SCAN rounds, than those limits rather than reading on.

use edgemeter_chaos::evidence::{cloud_tuples, ScanLimits, SCAN_COUNT, TUPLE_PATTERN};
use edgemeter_testkit::RedisServer;

/// Stores `count` keys under the tuple pattern, and one key outside it
/// that the walk must not count.
fn fill(redis: &RedisServer, count: usize) {
    let prefix = TUPLE_PATTERN.trim_end_matches('*');
    let mut command = redis::cmd("MSET");
    for number in 0..count {
        command.arg(format!("{prefix}{number}")).arg("not a tuple");
    }
    command.arg("em:edges").arg("not a tuple key");
    command.query::<()>(&mut redis.connection()).unwrap();
}

/// Goal: the walk reads up to its key limit and refuses one key more,
/// with an error naming the limit. Method: 20 tuple keys, walked with a
/// limit of 20 and of 19.
#[test]
fn the_walk_refuses_more_tuple_keys_than_its_limit() {
    let redis = RedisServer::start();
    fill(&redis, 20);
    let limits = |keys_max| ScanLimits {
        keys_max,
        ..ScanLimits::default()
    };
    let (tuples, malformed) = cloud_tuples(&redis.url(), limits(20)).unwrap();
    assert_eq!(
        (tuples.len(), malformed.len()),
        (0, 20),
        "every key under the pattern, none outside it"
    );
    let error = cloud_tuples(&redis.url(), limits(19)).unwrap_err();
    assert!(error.contains("more tuple keys than 19"), "{error}");
}

/// Goal: the walk stops after its SCAN round limit instead of following
/// the cursor on. Method: keys enough for several rounds of `SCAN_COUNT`,
/// walked with a limit of two rounds, then with the checker's limits.
#[test]
fn the_walk_refuses_more_scan_rounds_than_its_limit() {
    let redis = RedisServer::start();
    let keys = 5 * SCAN_COUNT;
    fill(&redis, keys);
    let two_rounds = ScanLimits {
        rounds_max: 2,
        ..ScanLimits::default()
    };
    let error = cloud_tuples(&redis.url(), two_rounds).unwrap_err();
    assert!(error.contains("within 2 rounds"), "{error}");
    let (_, malformed) = cloud_tuples(&redis.url(), ScanLimits::default()).unwrap();
    assert_eq!(malformed.len(), keys);
}
