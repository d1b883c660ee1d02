//! The checker's walk of a real Redis (a redis-server of the test's own from
//! `edgemeter-testkit`, on a free loopback port, never 6379): it reads every
//! tuple key within its limits, and refuses a Redis with more keys, or
//! needing more SCAN rounds, than those limits rather than reading on; and
//! it reads the cloud's totals as the cloud lays them out, summed over the
//! store buckets. On a 3-primary Redis Cluster it walks every primary.

use edgemeter_chaos::evidence::{
    cloud_totals, cloud_tuples, ScanLimits, SCAN_COUNT, TUPLE_PATTERN,
};
use edgemeter_chaos::totals::{check_totals, totals_of};
use edgemeter_checker::checker::Findings;
use edgemeter_cloud::{postal_code_for, state_of, tuple_key, Cache, CloudTuple, GermanState};
use edgemeter_redis::cache::RedisCache;
use edgemeter_testkit::{RedisCluster, RedisServer};

/// Stores `count` keys under the tuple pattern (in bucket 3), and keys
/// outside it that the walk must not count: another key of the bucket and
/// a tuple key of the old, unbucketed layout.
fn fill(redis: &RedisServer, count: usize) {
    assert!(TUPLE_PATTERN.starts_with("em:{em-b"));
    let mut command = redis::cmd("MSET");
    for number in 0..count {
        command
            .arg(format!("em:{{em-b03}}:tuple:{number}"))
            .arg("not a tuple");
    }
    command.arg("em:{em-b03}:edges").arg("not a tuple key");
    command.arg("em:tuple:old").arg("an old layout's key");
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

/// Goal: the cloud's totals read back as the sums over the buckets,
/// states and edges the cloud never counted stay absent, and an edge named
/// by the caller but missing from every `edges` set is read too. Method:
/// the cloud's layout written by hand (two states, one of them in two
/// buckets; one edge in a set, one only in its hashes).
#[test]
fn the_totals_read_back_as_the_cloud_keeps_them() {
    let redis = RedisServer::start();
    let mut connection = redis.connection();
    redis::pipe()
        .hset_multiple(
            "em:{em-b00}:state:Sachsen",
            &[("tuples", "2"), ("average_sum_w", "300.5")],
        )
        .sadd("em:{em-b00}:state:Sachsen:households", &["a", "b"])
        .hset_multiple(
            "em:{em-b15}:state:Sachsen",
            &[("tuples", "1"), ("average_sum_w", "0.5")],
        )
        .sadd("em:{em-b15}:state:Sachsen:households", &["c"])
        .hset("em:{em-b04}:state:Bayern", "tuples", "1")
        .sadd("em:{em-b00}:edges", "edge-1")
        .hset("em:{em-b00}:edge:edge-1", "tuples", "2")
        .hset("em:{em-b15}:edge:edge-1", "tuples", "1")
        .hset("em:{em-b04}:edge:edge-2", "tuples", "1")
        .hset("em:state:Bayern", "tuples", "9")
        .query::<()>(&mut connection)
        .unwrap();
    let totals = cloud_totals(&redis.url(), &["edge-2", "edge-3"], ScanLimits::default()).unwrap();
    let sachsen = &totals.states[&GermanState::from_name("Sachsen").unwrap()];
    assert_eq!(
        (sachsen.tuples, sachsen.average_sum_w),
        (3, 301.0),
        "the hashes, summed"
    );
    assert_eq!(
        sachsen.households.iter().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "the sets, joined"
    );
    let bayern = &totals.states[&GermanState::from_name("Bayern").unwrap()];
    assert_eq!(
        (bayern.tuples, bayern.average_sum_w),
        (1, 0.0),
        "the old layout's key is not read"
    );
    assert!(bayern.households.is_empty());
    assert_eq!(totals.states.len(), 2, "uncounted states are absent");
    let edges: Vec<(&str, u64)> = totals
        .edges
        .iter()
        .map(|(edge, tuples)| (edge.as_str(), *tuples))
        .collect();
    assert_eq!(edges, [("edge-1", 3), ("edge-2", 1), ("edge-3", 0)]);
}

/// Goal: on a Redis Cluster the walk reads the tuple keys of every
/// primary (SCAN sees one node's keys), and the totals are read from
/// every bucket's primary. Method: a 3-primary cluster with tuple keys and
/// a state hash in all 16 buckets, which the cluster spreads over the
/// three; walked through one seed URL.
#[test]
fn on_a_cluster_every_primary_is_walked() {
    let cluster = RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let mut nodes = std::collections::BTreeSet::new();
    for bucket in 0..16 {
        let key = format!("em:{{em-b{bucket:02}}}:tuple:{bucket}");
        nodes.insert(cluster.node_of_key(&key));
        redis::cmd("SET")
            .arg(&key)
            .arg("not a tuple")
            .query::<()>(&mut connection)
            .unwrap();
        redis::cmd("HSET")
            .arg(format!("em:{{em-b{bucket:02}}}:state:Berlin"))
            .arg("tuples")
            .arg(2)
            .query::<()>(&mut connection)
            .unwrap();
    }
    assert_eq!(nodes.len(), 3, "the buckets are on every primary");
    let seed = cluster.urls()[1].clone();
    let (tuples, malformed) = cloud_tuples(&seed, ScanLimits::default()).unwrap();
    assert_eq!((tuples.len(), malformed.len()), (0, 16));
    let limited = ScanLimits {
        keys_max: 15,
        ..ScanLimits::default()
    };
    let error = cloud_tuples(&seed, limited).unwrap_err();
    assert!(error.contains("more tuple keys than 15"), "{error}");
    let totals = cloud_totals(&cluster.seeds(), &[], ScanLimits::default()).unwrap();
    assert_eq!(
        totals.states[&GermanState::from_name("Berlin").unwrap()].tuples,
        32
    );
}

/// Goal: a totals set larger than the walk's key limit is refused with an
/// error naming it, not read. Method: a households set of three members,
/// read with a limit of three and of two.
#[test]
fn the_totals_refuse_a_set_larger_than_the_limit() {
    let redis = RedisServer::start();
    redis::cmd("SADD")
        .arg("em:{em-b09}:state:Berlin:households")
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
        error.contains(
            "em:{em-b09}:state:Berlin:households has 3 members, more than the checker's limit 2"
        ),
        "{error}"
    );
}

/// Tuples of two edges over households of every bucket, some shipped by
/// both edges.
fn shipped() -> Vec<CloudTuple> {
    let mut tuples = Vec::new();
    for household in 0..64 {
        let node_id = format!("household_{household}");
        let postal_code = postal_code_for(&node_id);
        for (edge_id, windows) in [("edge-1", 0..5), ("edge-2", 3..6)] {
            for window in windows {
                let window_start_ms = window * 5_000;
                tuples.push(CloudTuple {
                    key: tuple_key(edge_id, &node_id, &window_start_ms.to_string()),
                    edge_id: edge_id.to_owned(),
                    node_id: node_id.clone(),
                    window_start_ms: Some(window_start_ms),
                    average_w: household as f64 + window as f64 / 3.0,
                    samples: 5,
                    postal_code,
                    state: state_of(postal_code).unwrap(),
                    received_ms: 1,
                });
            }
        }
    }
    tuples
}

/// Stores `tuples` through the cloud's own cache, each batch twice, as
/// the cloud would on resends.
async fn store(cache: &RedisCache, tuples: &[CloudTuple]) {
    for batch in tuples.chunks(100) {
        cache.store(batch, 9).await.unwrap();
        cache.store(batch, 9).await.unwrap();
    }
    cache.record_heartbeat("edge-1", 1, 1, 9).await.unwrap();
}

/// The checker's reading of what `urls` holds, with the totals compared.
fn checked(urls: &str, shipped: &[CloudTuple]) {
    let (mut tuples, malformed) = cloud_tuples(urls, ScanLimits::default()).unwrap();
    assert!(malformed.is_empty(), "{malformed:?}");
    tuples.sort_by(|left, right| left.key.cmp(&right.key));
    let mut expected = shipped.to_vec();
    expected.sort_by(|left, right| left.key.cmp(&right.key));
    assert_eq!(tuples, expected, "every tuple once, read back whole");
    let totals = cloud_totals(urls, &[], ScanLimits::default()).unwrap();
    assert_eq!(totals.edges, totals_of(shipped).edges);
    let mut findings = Findings::default();
    check_totals(&totals, &tuples, &mut findings);
    assert!(findings.is_clean(), "{:?}", findings.by_kind);
}

/// Goal: the checker reads the layout the cloud writes, not only the
/// fixtures above: every tuple once and totals that add up, through the
/// cloud's own `RedisCache`, on one Redis and on a 3-primary cluster.
/// Method: the same tuples, each batch resent, stored both ways and
/// checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reads_what_the_cloud_writes() {
    let tuples = shipped();
    let single = RedisServer::start();
    store(&RedisCache::connect(&single.url()).await.unwrap(), &tuples).await;
    checked(&single.url(), &tuples);
    let cluster = RedisCluster::start();
    let cache = RedisCache::connect_cluster(&cluster.urls()).await.unwrap();
    store(&cache, &tuples).await;
    checked(&cluster.urls()[2], &tuples);
}
