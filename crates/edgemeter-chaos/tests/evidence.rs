//! The checker's walk of a real Redis (a redis-server of the test's own from
//! `edgemeter-testkit`, on a free loopback port, never 6379): it reads every
//! tuple key within its limits, and refuses a Redis with more keys, or
//! needing more SCAN rounds, than those limits rather than reading on; and
//! it reads the cloud's totals as the cloud lays them out.

use edgemeter_chaos::evidence::{
    cloud_totals, cloud_tuples, ScanLimits, SCAN_COUNT, TUPLE_PATTERN,
};
use edgemeter_cloud::GermanState;
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

/// Goal: the cloud's totals read back as stored, states and edges the
/// cloud never counted stay absent, and an edge named by the caller but
/// missing from `em:edges` is read too. Method: the cloud's layout written
/// by hand (two states, one edge in the set, one only in its hash).
#[test]
fn the_totals_read_back_as_the_cloud_keeps_them() {
    let redis = RedisServer::start();
    let mut connection = redis.connection();
    redis::pipe()
        .hset_multiple(
            "em:state:Sachsen",
            &[("tuples", "2"), ("average_sum_w", "300.5")],
        )
        .sadd("em:state:Sachsen:households", &["a", "b"])
        .hset("em:state:Bayern", "tuples", "1")
        .sadd("em:edges", "edge-1")
        .hset("em:edge:edge-1", "tuples", "2")
        .hset("em:edge:edge-2", "tuples", "1")
        .query::<()>(&mut connection)
        .unwrap();
    let totals = cloud_totals(&redis.url(), &["edge-2", "edge-3"], ScanLimits::default()).unwrap();
    let sachsen = &totals.states[&GermanState::from_name("Sachsen").unwrap()];
    assert_eq!(
        (sachsen.tuples, sachsen.average_sum_w),
        (2, 300.5),
        "the hash"
    );
    assert_eq!(
        sachsen.households.iter().collect::<Vec<_>>(),
        ["a", "b"],
        "the set"
    );
    let bayern = &totals.states[&GermanState::from_name("Bayern").unwrap()];
    assert_eq!((bayern.tuples, bayern.average_sum_w), (1, 0.0));
    assert!(bayern.households.is_empty());
    assert_eq!(totals.states.len(), 2, "uncounted states are absent");
    let edges: Vec<(&str, u64)> = totals
        .edges
        .iter()
        .map(|(edge, tuples)| (edge.as_str(), *tuples))
        .collect();
    assert_eq!(edges, [("edge-1", 2), ("edge-2", 1), ("edge-3", 0)]);
}

/// Goal: a totals set larger than the walk's key limit is refused with an
/// error naming it, not read. Method: a households set of three members,
/// read with a limit of three and of two.
#[test]
fn the_totals_refuse_a_set_larger_than_the_limit() {
    let redis = RedisServer::start();
    redis::cmd("SADD")
        .arg("em:state:Berlin:households")
        .arg(&["a", "b", "c"])
        .query::<()>(&mut redis.connection())
        .unwrap();
    let limits = |keys_max| ScanLimits {
        keys_max,
        ..ScanLimits::default()
    };
    let totals = cloud_totals(&redis.url(), &[], limits(3)).unwrap();
    assert_eq!(totals.states.len(), 1);
    let error = cloud_totals(&redis.url(), &[], limits(2)).unwrap_err();
    assert!(
        error.contains("em:state:Berlin:households has 3 members, more than the checker's limit 2"),
        "{error}"
    );
}
