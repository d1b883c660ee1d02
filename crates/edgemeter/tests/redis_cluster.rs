//! `RedisCache` on a real Redis Cluster of three primaries (from
//! `edgemeter-testkit`: `redis-server --cluster-enabled yes` x3 on free
//! loopback ports, joined by `redis-cli --cluster create`): the same
//! layout and scripts as on one Redis, every script call on one slot (the
//! cluster refuses any other), set-if-new semantics across resends, exact
//! totals, reads equal to a single Redis's after the same batches, the
//! instance lease shared by two cloud nodes, and a primary restarted
//! empty: its buckets get new epochs, the others keep theirs, and a
//! reship of exactly the tuples of the changed buckets restores the whole.
//! With a primary down (and the cluster serving the slots that are up),
//! only its buckets stall. And the `edgemeter cloud --redis-cluster` binary: it serves on a
//! cluster, and names the flag when the cluster cannot be reached.

mod common;
// The batches the cache tests store, shared with edgemeter-redis's own.
#[path = "../../edgemeter-redis/tests/redis_support/mod.rs"]
mod redis_support;

use edgemeter_cloud::{bucket_epoch_candidate, Cache, CloudTuple, StateTotals};
use edgemeter_redis::cache::{RedisCache, CALL_TIMEOUT, RECENT_TUPLES_MAX};
use edgemeter_redis::layout::{store_bucket, BucketKeys, STORE_BUCKETS, TUPLE_PATTERN};
use edgemeter_testkit::{RedisCluster, RedisServer, PRIMARIES};
use redis_support::{mixed_batches, mixed_batches_distinct, redis_key};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{ask, edgemeter_process, free_port, CloudPorts};

/// How long the cache may take to reach a restarted primary again: the
/// cluster client's reconnection, within a few calls.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(cluster: &RedisCluster) -> RedisCache {
    tokio::time::timeout(
        CALL_TIMEOUT * 4,
        RedisCache::connect_cluster(&cluster.urls()),
    )
    .await
    .expect("connecting gives up on its own")
    .expect("the cluster answers")
}

/// Stores every batch of [`mixed_batches`] twice (each resent at once, as
/// an edge does after a lost reply), then heartbeats both edges; returns
/// the tuples inserted.
async fn store_run(cache: &RedisCache, candidate_epoch: u64) -> usize {
    let mut inserted = 0;
    for batch in mixed_batches() {
        let first = cache.store(&batch, candidate_epoch).await.unwrap();
        let resent = cache.store(&batch, candidate_epoch).await.unwrap();
        assert_eq!((resent.inserted, resent.existing), (0, batch.len()));
        assert_eq!(resent.conflicts.len(), first.conflicts.len());
        inserted += first.inserted;
    }
    for (edge, now_ms) in [("edge-a", 10_000), ("edge-b", 20_000)] {
        cache
            .record_heartbeat(edge, 0, now_ms, candidate_epoch)
            .await
            .unwrap();
    }
    inserted
}

/// Every tuple key on every primary, with the node that holds it.
fn keys_on_nodes(cluster: &RedisCluster) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for node in 0..PRIMARIES {
        let mut connection = cluster.connection(node);
        let iter = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(TUPLE_PATTERN)
            .arg("COUNT")
            .arg(1_000)
            .clone()
            .iter::<String>(&mut connection)
            .unwrap();
        for key in iter {
            let key = key.unwrap();
            assert_eq!(keys.insert(key.clone(), node), None, "{key} on two nodes");
        }
    }
    keys
}

/// Goal: on a cluster a tuple is stored once however often it is sent, by
/// one single-slot call per bucket (a cross-slot call would be refused),
/// with conflicts reported, and the totals count each tuple once; the
/// tuples are spread over all three primaries. Method: the shared run of
/// batches, each resent; then the keys on each node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tuple_is_stored_once_on_a_cluster_however_often_it_is_sent() {
    let cluster = RedisCluster::start();
    let cache = connect(&cluster).await;
    let inserted = store_run(&cache, 5).await;
    assert_eq!(inserted, mixed_batches_distinct());
    let conflicted = cache.store(&mixed_batches()[5], 5).await.unwrap();
    assert_eq!(
        conflicted
            .conflicts
            .iter()
            .map(|c| c.index)
            .collect::<Vec<_>>(),
        [2],
        "the resend with another average"
    );
    let keys = keys_on_nodes(&cluster);
    assert_eq!(keys.len(), inserted, "one key per distinct tuple");
    let nodes: BTreeSet<usize> = keys.values().copied().collect();
    assert_eq!(nodes.len(), PRIMARIES, "every primary holds tuples");
    for batch in mixed_batches() {
        for tuple in batch {
            assert!(keys.contains_key(&redis_key(&tuple)), "{}", tuple.key);
        }
    }
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(
        totals.iter().map(|state| state.tuples).sum::<u64>(),
        inserted as u64
    );
    let edges = cache.edges().await.unwrap();
    assert_eq!(
        edges.iter().map(|edge| edge.tuples).sum::<u64>(),
        inserted as u64
    );
}

/// Goal: `/api/states`, `/api/tuples` and `/api/edges` read the same from
/// a 3-shard cluster as from one Redis after the same batches: state
/// totals bit for bit (the buckets' partials are the same and are added
/// in bucket order), the recent tuples in the same order, the edges with
/// the same counts and times. Method: the shared run on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_a_cluster_equal_a_single_redis_after_the_same_batches() {
    let cluster = RedisCluster::start();
    let single = RedisServer::start();
    let on_cluster = connect(&cluster).await;
    let on_single = RedisCache::connect(&single.url()).await.unwrap();
    assert_eq!(
        store_run(&on_cluster, 5).await,
        store_run(&on_single, 5).await
    );
    let totals = on_cluster.state_totals().await.unwrap();
    assert_eq!(totals, on_single.state_totals().await.unwrap());
    assert!(totals.iter().filter(|state| state.tuples > 0).count() > 1);
    let recent = on_cluster.recent_tuples(RECENT_TUPLES_MAX).await.unwrap();
    assert_eq!(
        recent.len(),
        mixed_batches_distinct().min(RECENT_TUPLES_MAX)
    );
    assert_eq!(
        recent,
        on_single.recent_tuples(RECENT_TUPLES_MAX).await.unwrap()
    );
    assert_eq!(
        on_cluster.recent_tuples(7).await.unwrap(),
        recent[..7].to_vec()
    );
    let edges = on_cluster.edges().await.unwrap();
    assert_eq!(edges, on_single.edges().await.unwrap());
    assert_eq!(
        edges
            .iter()
            .map(|edge| (edge.edge_id.as_str(), edge.last_heartbeat_ms))
            .collect::<Vec<_>>(),
        [("edge-a", Some(10_000)), ("edge-b", Some(20_000))]
    );
}

/// Goal: two cloud nodes on one cluster agree on who holds an edge id: an
/// instance admitted through one is refused through the other until its
/// lease lapses or it is the holder. Method: two caches (two cloud
/// nodes' connections) heartbeating one id with two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_shared_by_the_cloud_nodes() {
    let cluster = RedisCluster::start();
    let (node_a, node_b) = (connect(&cluster).await, connect(&cluster).await);
    let first = node_a
        .record_heartbeat("edge-a", 1, 1_000, 3)
        .await
        .unwrap();
    assert!(!first.refused);
    for (bucket, epoch) in first.epochs.iter().enumerate() {
        assert_eq!(*epoch, bucket_epoch_candidate(3, bucket as u16));
    }
    assert!(
        node_b
            .record_heartbeat("edge-a", 2, 1_100, 4)
            .await
            .unwrap()
            .refused
    );
    assert!(
        !node_b
            .record_heartbeat("edge-a", 1, 1_200, 4)
            .await
            .unwrap()
            .refused
    );
    assert!(
        node_a
            .record_heartbeat("edge-a", 2, 1_300, 4)
            .await
            .unwrap()
            .refused
    );
    assert!(
        !node_a
            .record_heartbeat("edge-b", 2, 1_300, 4)
            .await
            .unwrap()
            .refused
    );
}

/// The bucket epochs a heartbeat reads once every bucket answers again.
async fn epochs_once_all_answer(cache: &RedisCache, candidate_epoch: u64) -> [u64; STORE_BUCKETS] {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        match cache
            .record_heartbeat("edge-a", 0, 30_000, candidate_epoch)
            .await
        {
            Ok(heartbeat) if !heartbeat.epochs.contains(&0) => return heartbeat.epochs,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(heartbeat) => panic!("buckets still unknown: {:?}", heartbeat.epochs),
            Err(error) => panic!("the cluster did not answer again: {error}"),
        }
    }
}

/// Goal: a primary restarted empty loses exactly its buckets: their epochs
/// are new, the other buckets keep theirs, so the edges can tell which of
/// their acknowledged tuples to reship (those acked under an epoch not in
/// the current set); reshipping exactly those restores every tuple once
/// and totals that count each once, and resending the rest changes
/// nothing. Method: the shared run under epoch 5; the primary of one
/// bucket restarted empty; heartbeats until all answer (candidate 6); the
/// lost buckets' tuples stored again; the keys and totals compared with
/// a single Redis that never lost anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_empty_changes_only_its_buckets_epochs() {
    let mut cluster = RedisCluster::start();
    let reference = RedisServer::start();
    let cache = connect(&cluster).await;
    let on_reference = RedisCache::connect(&reference.url()).await.unwrap();
    store_run(&cache, 5).await;
    store_run(&on_reference, 5).await;
    let before = epochs_once_all_answer(&cache, 9).await;
    for (bucket, epoch) in before.iter().enumerate() {
        assert_eq!(
            *epoch,
            bucket_epoch_candidate(5, bucket as u16),
            "written under 5"
        );
    }

    let lost_node = cluster.node_of_key(&BucketKeys::new(0).epoch());
    let lost: BTreeSet<u16> = (0..STORE_BUCKETS as u16)
        .filter(|bucket| cluster.node_of_key(&BucketKeys::new(*bucket).epoch()) == lost_node)
        .collect();
    assert!(!lost.is_empty() && lost.len() < STORE_BUCKETS, "{lost:?}");
    cluster.restart_empty(lost_node);

    let after = epochs_once_all_answer(&cache, 6).await;
    for bucket in 0..STORE_BUCKETS as u16 {
        let candidate = if lost.contains(&bucket) { 6 } else { 5 };
        let expected = bucket_epoch_candidate(candidate, bucket);
        assert_eq!(after[usize::from(bucket)], expected, "bucket {bucket}");
    }
    let held = keys_on_nodes(&cluster);
    assert!(held.values().all(|node| *node != lost_node));

    // The edges' refill: every acknowledged tuple whose bucket's epoch is
    // no longer in the set, in their original batches; then, to show it
    // is harmless, every batch again.
    let current: BTreeSet<u64> = after.iter().copied().collect();
    let mut reshipped = 0;
    for batch in mixed_batches() {
        let refill: Vec<CloudTuple> = batch
            .into_iter()
            .filter(|tuple| !current.contains(&before[usize::from(store_bucket(&tuple.node_id))]))
            .collect();
        if !refill.is_empty() {
            reshipped += cache.store(&refill, 7).await.unwrap().inserted;
        }
    }
    assert!(reshipped > 0);
    for batch in mixed_batches() {
        assert_eq!(cache.store(&batch, 7).await.unwrap().inserted, 0);
    }
    assert_eq!(keys_on_nodes(&cluster).len(), mixed_batches_distinct());
    assert_eq!(reshipped + held.len(), mixed_batches_distinct());

    let totals = cache.state_totals().await.unwrap();
    let expected = on_reference.state_totals().await.unwrap();
    let counts = |totals: &[StateTotals]| -> Vec<(u64, u64)> {
        totals
            .iter()
            .map(|state| (state.tuples, state.households))
            .collect()
    };
    assert_eq!(counts(&totals), counts(&expected));
    for (total, reference) in totals.iter().zip(&expected) {
        // The lost buckets' sums were added up again in other groupings:
        // equal up to the last bits.
        let tolerance = 1e-9 * reference.average_sum_w.abs().max(1.0);
        assert!(
            (total.average_sum_w - reference.average_sum_w).abs() <= tolerance,
            "{}: {} != {}",
            total.state.name(),
            total.average_sum_w,
            reference.average_sum_w
        );
    }
    let tuples_of = |edges: Vec<edgemeter_cloud::EdgeRecord>| -> Vec<(String, u64)> {
        edges
            .into_iter()
            .map(|edge| (edge.edge_id, edge.tuples))
            .collect()
    };
    assert_eq!(
        tuples_of(cache.edges().await.unwrap()),
        tuples_of(on_reference.edges().await.unwrap())
    );
}

/// Goal: the cloud binary stores into a cluster with `--redis-cluster`
/// (seeds comma-separated), a tuple once however often it is sent, in its
/// household's bucket, wherever that bucket's slot lives. Method: the
/// original wire form (no key needed) for households of every bucket,
/// each sent twice, through the real `edgemeter cloud`; the keys read on
/// each node.
#[test]
fn the_cloud_binary_stores_into_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let ports = CloudPorts::free();
    let _cloud = ports.start(
        "cloud",
        ["--redis-cluster", &cluster.seeds()],
        &["--allow-unauthenticated"],
        dir.path(),
    );
    let (heartbeat_port, data_port) = (ports.heartbeat, ports.data);
    assert_eq!(ask(heartbeat_port, b"heartbeat"), b"ack");
    let households = redis_support::households_in_every_bucket(1);
    for (id, household) in households.iter().enumerate() {
        let request = format!(r#"{{"id": {id}, "node_id": "{household}", "average": 1.5}}"#);
        for _ in 0..2 {
            let reply = String::from_utf8(ask(data_port, request.as_bytes())).unwrap();
            assert!(
                reply.starts_with(&format!("PLZ for id: {id} - PLZ: ")),
                "{reply}"
            );
        }
    }
    let keys = keys_on_nodes(&cluster);
    assert_eq!(keys.len(), households.len(), "{keys:?}");
    let nodes: BTreeSet<usize> = keys.values().copied().collect();
    assert_eq!(nodes.len(), PRIMARIES, "the buckets are on every primary");
    for household in &households {
        let bucket = BucketKeys::new(store_bucket(household));
        assert!(
            keys.keys()
                .any(|key| key.starts_with(bucket.prefix()) && key.contains(household.as_str())),
            "{household} in its bucket"
        );
    }
}

/// Goal: a cluster that cannot be reached at start is one line that names
/// the seeds and `--redis-cluster`, within a bound; `--redis` and
/// `--redis-cluster` together are refused before anything starts.
#[test]
fn an_unreachable_cluster_is_named_and_the_two_flags_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = format!(
        "redis://127.0.0.1:{},redis://127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let common_args = ["--http", "127.0.0.1:0", "--allow-unauthenticated"];
    let started = Instant::now();
    let mut cloud = edgemeter_process(
        "cloud",
        &[&["cloud", "--redis-cluster", &seeds][..], &common_args[..]].concat(),
        dir.path(),
    );
    let status = cloud.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = cloud.log_tail();
    let line = log
        .lines()
        .find(|line| line.contains("cannot reach Redis"))
        .unwrap_or_else(|| panic!("no error line in {log}"));
    assert!(
        line.contains(&seeds) && line.contains("--redis-cluster"),
        "{line}"
    );

    let mut both = edgemeter_process(
        "cloud-both",
        &[
            &[
                "cloud",
                "--redis",
                "redis://127.0.0.1:1",
                "--redis-cluster",
                &seeds,
            ][..],
            &common_args[..],
        ]
        .concat(),
        dir.path(),
    );
    assert_eq!(both.wait_exit(Duration::from_secs(30)).code(), Some(2));
    assert!(
        both.log_tail().contains("cannot be used with"),
        "{}",
        both.log_tail()
    );
}

/// Goal: with one primary down and the cluster serving the slots that are
/// up (`cluster-require-full-coverage no`), only that primary's buckets
/// stall: a heartbeat answers within the call timeout with 0 (unknown)
/// for them and their epochs for the rest, a batch of live buckets is
/// stored, one touching a dead bucket is "unavailable" (to be resent)
/// within the call timeout; once the primary is back, empty, everything
/// is served again. Method: a cluster with partial coverage, one primary
/// killed, then restarted empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_down_stalls_only_its_buckets() {
    let mut cluster = RedisCluster::start_partial_coverage();
    let cache = connect(&cluster).await;
    let bucket_node: Vec<usize> = (0..STORE_BUCKETS as u16)
        .map(|bucket| cluster.node_of_key(&BucketKeys::new(bucket).epoch()))
        .collect();
    let dead_node = bucket_node[0];
    let edge_id = (0..1_000)
        .map(|number| format!("edge-{number}"))
        .find(|edge| bucket_node[usize::from(store_bucket(edge))] != dead_node)
        .expect("an edge id whose lease is on a live primary");
    let households = redis_support::households_in_every_bucket(1);
    let batch_of = |on_dead_node: bool| -> Vec<CloudTuple> {
        (0..STORE_BUCKETS)
            .filter(|bucket| (bucket_node[*bucket] == dead_node) == on_dead_node)
            .map(|bucket| redis_support::tuple(&edge_id, &households[bucket], 0, 2.0))
            .collect()
    };
    let (live, dead) = (batch_of(false), batch_of(true));
    cache.record_heartbeat(&edge_id, 1, 1, 5).await.unwrap();
    cluster.kill(dead_node);

    let started = Instant::now();
    let record = cache.record_heartbeat(&edge_id, 1, 2, 6).await.unwrap();
    assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_secs(1));
    assert!(!record.refused);
    for (bucket, epoch) in record.epochs.iter().enumerate() {
        if bucket_node[bucket] == dead_node {
            assert_eq!(
                *epoch, 0,
                "bucket {bucket} is unknown while its primary is down"
            );
        } else {
            assert_eq!(
                *epoch,
                bucket_epoch_candidate(5, bucket as u16),
                "bucket {bucket}"
            );
        }
    }
    assert_eq!(cache.store(&live, 6).await.unwrap().inserted, live.len());
    let started = Instant::now();
    let error = cache.store(&dead, 6).await.unwrap_err();
    assert!(started.elapsed() < CALL_TIMEOUT + Duration::from_secs(1));
    assert!(
        matches!(error, edgemeter_cloud::CacheError::Unavailable(_)),
        "{error:?}"
    );

    cluster.restart_empty(dead_node);
    let epochs = epochs_once_all_answer(&cache, 7).await;
    for (bucket, epoch) in epochs.iter().enumerate() {
        let candidate = if bucket_node[bucket] == dead_node {
            7
        } else {
            5
        };
        assert_eq!(
            *epoch,
            bucket_epoch_candidate(candidate, bucket as u16),
            "bucket {bucket}"
        );
    }
    assert_eq!(cache.store(&dead, 7).await.unwrap().inserted, dead.len());
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(
        totals.iter().map(|state| state.tuples).sum::<u64>(),
        (live.len() + dead.len()) as u64
    );
}
