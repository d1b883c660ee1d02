//! `RedisCache` against a real redis-server: one entry and one count per
//! tuple however often it is stored, totals kept incrementally per store
//! bucket and summed by the readers, readers that see what was written,
//! epochs per bucket, the edge instance lease, and a Redis that is down
//! reported quickly. Against a stand-in that breaks every connection:
//! reconnection attempts stop at their bound. The same on a Redis Cluster
//! is `tests/redis_cluster.rs`.

mod redis_support;

use edgemeter_cloud::{
    bucket_epoch_candidate, Cache, CacheError, CloudTuple, GermanState, INSTANCE_LEASE,
};
use edgemeter_redis::cache::{
    RedisCache, CALL_TIMEOUT, RECENT_TUPLES_MAX, RECONNECT_ATTEMPTS_MAX, RECONNECT_DELAY_MAX,
};
use edgemeter_redis::layout::{
    store_bucket, BucketKeys, LAYOUT_PATTERN, OLD_LAYOUT_PATTERN, STORE_BUCKETS,
};
use edgemeter_testkit::{free_port, RedisServer};
use redis_support::{households_in_every_bucket, redis_key, tuple};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `count` consecutive windows of edge `edge-a`, the households taking
/// turns: window `i` belongs to `house-{i % households}`.
fn interleaved(count: i64, households: i64, average_w: impl Fn(i64) -> f64) -> Vec<CloudTuple> {
    (0..count)
        .map(|index| {
            tuple(
                "edge-a",
                &format!("house-{}", index % households),
                index * 5_000,
                average_w(index),
            )
        })
        .collect()
}

/// Goal: a resent batch changes nothing, in the entries or in the totals.
/// Method: store a batch, store it again, and a batch overlapping it; read
/// every structure back and count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_is_idempotent_and_totals_count_each_tuple_once() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let batch = interleaved(100, 10, |index| index as f64 + 0.25);
    let first = cache.store(&batch, 1).await.unwrap();
    assert_eq!((first.inserted, first.existing), (100, 0));
    let again = cache.store(&batch, 1).await.unwrap();
    assert_eq!((again.inserted, again.existing), (0, 100));
    let mut overlapping = batch[90..].to_vec();
    overlapping.push(tuple("edge-a", "house-0", 100 * 5_000, 7.0));
    // The same tuple twice in one batch is stored once, the first copy.
    overlapping.push(tuple("edge-a", "house-0", 100 * 5_000, 8.0));
    // The same household and window from another edge is another tuple.
    overlapping.push(tuple("edge-b", "house-0", 0, 9.0));
    let third = cache.store(&overlapping, 1).await.unwrap();
    assert_eq!((third.inserted, third.existing), (2, 11));

    let totals = cache.state_totals().await.unwrap();
    assert_eq!(totals.len(), GermanState::ALL.len());
    assert_eq!(totals.iter().map(|state| state.tuples).sum::<u64>(), 102);
    let expected_sum: f64 = (0..100).map(|index| index as f64 + 0.25).sum::<f64>() + 7.0 + 9.0;
    let stored_sum: f64 = totals.iter().map(|state| state.average_sum_w).sum();
    assert!(
        (stored_sum - expected_sum).abs() < 1e-6,
        "{stored_sum} != {expected_sum}"
    );
    assert_eq!(
        totals.iter().map(|state| state.households).sum::<u64>(),
        10,
        "households are counted once per state"
    );

    let edges = cache.edges().await.unwrap();
    let counts: Vec<(&str, u64)> = edges
        .iter()
        .map(|edge| (edge.edge_id.as_str(), edge.tuples))
        .collect();
    assert_eq!(counts, vec![("edge-a", 101), ("edge-b", 1)]);

    let mut connection = redis.connection();
    let value: Vec<u8> = redis::cmd("GET")
        .arg(redis_key(&batch[3]))
        .query(&mut connection)
        .unwrap();
    let stored = CloudTuple::from_stored_value(batch[3].key.clone(), &value).unwrap();
    assert_eq!(stored, batch[3], "one GET shows the whole tuple");
    let first_copy = &overlapping[10];
    let value: Vec<u8> = redis::cmd("GET")
        .arg(redis_key(first_copy))
        .query(&mut connection)
        .unwrap();
    let stored = CloudTuple::from_stored_value(first_copy.key.clone(), &value).unwrap();
    assert_eq!(
        stored.average_w, 7.0,
        "a batch's second copy is not written"
    );
}

/// Goal: a fresh Redis reads as empty, not as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_cache_reads_as_empty() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    assert_eq!(cache.recent_tuples(10).await.unwrap(), vec![]);
    assert_eq!(cache.edges().await.unwrap(), vec![]);
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(totals.len(), GermanState::ALL.len());
    assert!(totals
        .iter()
        .all(|state| state.tuples == 0 && state.households == 0 && state.average_sum_w == 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_tuples_are_newest_first_and_bounded() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let count = RECENT_TUPLES_MAX as i64 + 50;
    let tuples: Vec<CloudTuple> = (0..count)
        .map(|index| tuple("edge-a", "house", index * 5_000, 1.5))
        .collect();
    for batch in tuples.chunks(500) {
        cache.store(batch, 1).await.unwrap();
    }
    let recent = cache.recent_tuples(10).await.unwrap();
    assert_eq!(recent.len(), 10);
    assert_eq!(
        recent[0],
        tuples[tuples.len() - 1],
        "the newest comes first and reads back whole"
    );
    assert_eq!(
        recent[9].window_start_ms,
        tuples[tuples.len() - 10].window_start_ms
    );
    let all = cache.recent_tuples(usize::MAX).await.unwrap();
    assert_eq!(all.len(), RECENT_TUPLES_MAX);
    let mut connection = redis.connection();
    let length: usize = redis::cmd("LLEN")
        .arg(BucketKeys::new(store_bucket("house")).recent())
        .query(&mut connection)
        .unwrap();
    assert_eq!(length, RECENT_TUPLES_MAX);
}

/// Goal: the recent tuples list a batch newest first in the batch's own
/// order, even when the batch interleaves households of different buckets
/// (each bucket keeps its own list, merged at read time by the store
/// call's stamp and the batch index) and some were stored before. Method:
/// a batch alternating three households of three buckets, every fourth
/// tuple stored by an earlier call; read the list back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_tuples_keep_batch_order_across_buckets() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let households = households_in_every_bucket(1);
    let batch: Vec<CloudTuple> = (0..30)
        .map(|index| {
            let household = &households[(index % 3) as usize * 5];
            tuple("edge-a", household, index * 5_000, index as f64)
        })
        .collect();
    let buckets: std::collections::BTreeSet<u16> = batch
        .iter()
        .map(|tuple| store_bucket(&tuple.node_id))
        .collect();
    assert_eq!(buckets.len(), 3, "three buckets");
    let stored_before: Vec<CloudTuple> = batch.iter().step_by(4).cloned().collect();
    cache.store(&stored_before, 1).await.unwrap();
    let write = cache.store(&batch, 1).await.unwrap();
    assert_eq!(write.existing, stored_before.len());

    let recent = cache.recent_tuples(batch.len()).await.unwrap();
    let fresh_newest_first: Vec<&CloudTuple> = batch
        .iter()
        .enumerate()
        .filter(|(index, _)| index % 4 != 0)
        .map(|(_, tuple)| tuple)
        .rev()
        .collect();
    let expected: Vec<&CloudTuple> = fresh_newest_first
        .into_iter()
        .chain(stored_before.iter().rev())
        .collect();
    assert_eq!(recent.iter().collect::<Vec<_>>(), expected);
    assert_eq!(cache.recent_tuples(5).await.unwrap()[..], recent[..5]);

    let totals = cache.state_totals().await.unwrap();
    let stored_sum: f64 = totals.iter().map(|state| state.average_sum_w).sum();
    let expected_sum: f64 = (0..30).map(|index| index as f64).sum();
    assert_eq!(stored_sum, expected_sum, "each average counted once");
    assert_eq!(
        totals.iter().map(|state| state.households).sum::<u64>(),
        3,
        "the buckets' household sets are disjoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_recorded_per_edge() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    cache.record_heartbeat("edge-b", 0, 2_000, 1).await.unwrap();
    cache.record_heartbeat("edge-a", 0, 1_000, 1).await.unwrap();
    cache.record_heartbeat("edge-a", 0, 3_000, 1).await.unwrap();
    let edges = cache.edges().await.unwrap();
    assert_eq!(edges.len(), 2);
    assert_eq!(
        (
            edges[0].edge_id.as_str(),
            edges[0].last_heartbeat_ms,
            edges[0].tuples
        ),
        ("edge-a", Some(3_000), 0)
    );
    assert_eq!(edges[1].last_heartbeat_ms, Some(2_000));
}

/// Goal: Redis going away is an error within the call timeout, never a
/// hang, and the cache works again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_goes_away_is_unavailable_quickly_then_recovers() {
    let mut redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    cache
        .store(&[tuple("edge-a", "house", 0, 1.0)], 1)
        .await
        .unwrap();
    redis.stop();
    // Bounded, not fast: the call must give up on its own (CALL_TIMEOUT)
    // rather than hang; the outer deadline only turns a hang into a failure.
    let error = tokio::time::timeout(
        CALL_TIMEOUT * 4,
        cache.store(&[tuple("edge-a", "house", 5_000, 1.0)], 1),
    )
    .await
    .expect("a store against a stopped Redis gives up on its own")
    .unwrap_err();
    assert!(matches!(error, CacheError::Unavailable(_)));

    // A new server on the same port: the connection manager reconnects.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cache
            .store(&[tuple("edge-a", "house", 5_000, 1.0)], 1)
            .await
        {
            Ok(write) => {
                assert_eq!(write.inserted, 1);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(error) => panic!("the cache did not recover: {error}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_redis_at_start_names_the_url_and_the_fix() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let error = tokio::time::timeout(CALL_TIMEOUT * 4, RedisCache::connect(&url))
        .await
        .expect("connecting gives up on its own")
        .err()
        .expect("nothing listens there");
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("--redis"), "{message}");
    assert!(!message.contains('\n'));
}

/// Goal: the store script takes a full batch (`BATCH_TUPLES_MAX` tuples, the
/// most the wire allows) in one call, and a resend of it changes nothing.
/// Method: a batch of exactly that many tuples of 64-character household
/// ids, the data's longest, stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_one_script_call() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let full = edgemeter_wire::batch::BATCH_TUPLES_MAX;
    let batch: Vec<CloudTuple> = (0..full)
        .map(|index| {
            let node = format!("{:064x}", index % 50);
            tuple("edge-full", &node, index as i64 * 5_000, 2.0)
        })
        .collect();
    let first = cache.store(&batch, 1).await.unwrap();
    assert_eq!((first.inserted, first.existing), (full, 0));
    let again = cache.store(&batch, 1).await.unwrap();
    assert_eq!((again.inserted, again.existing), (0, full));
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(
        totals.iter().map(|state| state.tuples).sum::<u64>(),
        full as u64
    );
}

/// A stand-in for Redis that counts the connections made to it. Until it
/// is broken it answers every command, `+PONG` to PING and `+OK` to the
/// rest (enough for the client's set-up and a PING); once broken it closes
/// its live connections, and every new one as soon as it is accepted.
struct BreakingRedis {
    url: String,
    connections: Arc<AtomicUsize>,
    broken: watch::Sender<bool>,
}

impl BreakingRedis {
    async fn start() -> BreakingRedis {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let (broken, state) = watch::channel(false);
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                if !*state.borrow() {
                    tokio::spawn(answer(stream, state.clone()));
                }
            }
        });
        BreakingRedis {
            url,
            connections,
            broken,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Answers commands until the client closes or the stand-in is broken.
/// A command read after the break is never answered: the flag is checked
/// again before each reply, since a command and the break can be ready in
/// the same poll (an unbiased select would answer it half the time).
async fn answer(stream: TcpStream, mut broken: watch::Receiver<bool>) {
    let mut stream = BufReader::new(stream);
    loop {
        let command = tokio::select! {
            biased;
            _ = broken.wait_for(|is_broken| *is_broken) => None,
            command = read_command(&mut stream) => command,
        };
        let Some(name) = command.filter(|_| !*broken.borrow()) else {
            return;
        };
        let reply: &[u8] = if name.eq_ignore_ascii_case(b"PING") {
            b"+PONG\r\n"
        } else {
            b"+OK\r\n"
        };
        if stream.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads one command, an array of bulk strings, and returns its name;
/// `None` at the end of the stream or on anything else.
async fn read_command(stream: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let count = read_header(stream, '*').await?;
    let mut name = None;
    for _ in 0..count {
        let length = read_header(stream, '$').await?;
        let mut argument = vec![0; length + 2];
        stream.read_exact(&mut argument).await.ok()?;
        argument.truncate(length);
        name.get_or_insert(argument);
    }
    name
}

async fn read_header(stream: &mut BufReader<TcpStream>, kind: char) -> Option<usize> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    line.strip_prefix(kind)?.trim_end().parse().ok()
}

/// Goal: a broken connection is dialled at most `1 +
/// RECONNECT_ATTEMPTS_MAX` times before the failure is reported, not
/// without end (nor the client's default seven times). Method: a stand-in
/// Redis that counts connections breaks them all; each failing call then
/// starts one round of dials, which must stop at the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_redialled_at_most_its_attempts() {
    let redis = BreakingRedis::start().await;
    let cache = RedisCache::connect(&redis.url).await.unwrap();
    assert_eq!(redis.connections(), 1);
    redis.broken.send_replace(true);
    let round = 1 + RECONNECT_ATTEMPTS_MAX;
    // Pauses between dials are at most RECONNECT_DELAY_MAX plus as much
    // jitter: a dial past the bound would come well within this.
    let quiet = 6 * RECONNECT_DELAY_MAX;
    for calls in 1..=2 {
        let error = tokio::time::timeout(CALL_TIMEOUT * 4, cache.ping())
            .await
            .expect("a call against a broken Redis gives up on its own")
            .unwrap_err();
        assert!(matches!(error, CacheError::Unavailable(_)), "{error:?}");
        let expected = 1 + calls * round;
        let deadline = Instant::now() + Duration::from_secs(30);
        while redis.connections() < expected {
            assert!(
                Instant::now() < deadline,
                "only {} connections after call {calls}; {expected} expected",
                redis.connections()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(quiet).await;
        assert_eq!(
            redis.connections(),
            expected,
            "dials after call {calls}: at most {round} per broken connection"
        );
    }
}

/// Goal: each bucket has its own epoch, set from the candidate only when
/// missing and returned with the write of that bucket; heartbeats read
/// all 16 (setting the missing ones); a bucket that loses its keys gets a
/// new epoch while the others keep theirs. A resend with another average
/// or sample count is reported as a conflict, by its batch index, with
/// the stored values, and rewrites nothing. Method: real redis-server; a
/// bucket's loss is its keys deleted through a second client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bucket_has_its_epoch_and_conflicts_are_reported() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let households = households_in_every_bucket(1);
    let batch: Vec<CloudTuple> = (0..4)
        .map(|index| {
            tuple(
                "edge-a",
                &households[index],
                index as i64 * 5_000,
                index as f64 + 0.5,
            )
        })
        .collect();
    let first = cache.store(&batch, 11).await.unwrap();
    assert_eq!(first.inserted, 4);
    let touched: Vec<u16> = (0..4).collect();
    assert_eq!(first.epochs.keys().copied().collect::<Vec<_>>(), touched);
    for (bucket, epoch) in &first.epochs {
        assert_eq!(
            *epoch,
            bucket_epoch_candidate(11, *bucket),
            "each bucket its own"
        );
    }
    let heartbeat = cache.record_heartbeat("edge-a", 7, 1, 12).await.unwrap();
    assert!(!heartbeat.refused);
    let candidate_of = |bucket: usize| if bucket < 4 { 11 } else { 12 };
    for bucket in 0..STORE_BUCKETS {
        let expected = bucket_epoch_candidate(candidate_of(bucket), bucket as u16);
        assert_eq!(heartbeat.epochs[bucket], expected, "bucket {bucket}");
    }
    let mut resent = batch.clone();
    resent[1].average_w += 1.0;
    resent[3].samples += 1;
    let again = cache.store(&resent, 13).await.unwrap();
    assert_eq!(again.inserted, 0);
    assert_eq!(again.epochs, first.epochs, "the epochs stay");
    let conflicts: Vec<(usize, Option<(f64, u32)>)> = again
        .conflicts
        .iter()
        .map(|conflict| (conflict.index, conflict.stored))
        .collect();
    assert_eq!(conflicts, [(1, Some((1.5, 3))), (3, Some((3.5, 3)))]);
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(totals.iter().map(|t| t.tuples).sum::<u64>(), 4);
    let held = cache.recent_tuples(10).await.unwrap();
    assert!(held
        .iter()
        .any(|t| t.key == batch[1].key && t.average_w == 1.5));

    // Bucket 2 loses every key (as its shard would): a new epoch there only.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let (_, lost): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("em:{em-b02}:*")
        .arg("COUNT")
        .arg(10_000)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(lost.contains(&BucketKeys::new(2).epoch()), "{lost:?}");
    let _: () = redis::cmd("DEL")
        .arg(&lost)
        .query_async(&mut raw)
        .await
        .unwrap();
    let heartbeat = cache.record_heartbeat("edge-a", 7, 2, 14).await.unwrap();
    for bucket in 0..STORE_BUCKETS {
        let candidate = if bucket == 2 {
            14
        } else {
            candidate_of(bucket)
        };
        let expected = bucket_epoch_candidate(candidate, bucket as u16);
        assert_eq!(heartbeat.epochs[bucket], expected, "bucket {bucket}");
    }
    let refilled = cache.store(&batch, 15).await.unwrap();
    assert_eq!(refilled.inserted, 1, "only the lost bucket's tuple is new");
    assert_eq!(refilled.epochs[&2], bucket_epoch_candidate(14, 2));
    assert!(refilled.conflicts.is_empty());
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(totals.iter().map(|t| t.tuples).sum::<u64>(), 4);
}

/// Goal: one edge id, one live instance: the first instance takes the
/// lease, another is refused while it is held (and records nothing), the
/// holder renews it, and once it lapses (`INSTANCE_LEASE` after the last
/// renewal) another instance takes it. An older edge (instance 0) is never
/// refused and takes no lease. Method: real heartbeats, a real wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_lease_admits_one_instance_per_edge_id() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    assert!(
        !cache
            .record_heartbeat("edge-a", 1, 1_000, 9)
            .await
            .unwrap()
            .refused
    );
    let intruder = cache.record_heartbeat("edge-a", 2, 2_000, 9).await.unwrap();
    assert!(intruder.refused, "another instance while the lease is held");
    assert!(!intruder.epochs.contains(&0), "epochs still read");
    assert!(
        !cache
            .record_heartbeat("edge-b", 2, 2_000, 9)
            .await
            .unwrap()
            .refused,
        "another id"
    );
    assert!(
        !cache
            .record_heartbeat("edge-a", 1, 3_000, 9)
            .await
            .unwrap()
            .refused,
        "a renewal"
    );
    assert!(
        !cache
            .record_heartbeat("edge-a", 0, 4_000, 9)
            .await
            .unwrap()
            .refused,
        "an old edge"
    );
    let edges = cache.edges().await.unwrap();
    assert_eq!(
        edges[0].last_heartbeat_ms,
        Some(4_000),
        "not the refused one's"
    );
    tokio::time::sleep(INSTANCE_LEASE / 2).await;
    assert!(
        cache
            .record_heartbeat("edge-a", 2, 5_000, 9)
            .await
            .unwrap()
            .refused
    );
    tokio::time::sleep(INSTANCE_LEASE + Duration::from_millis(500)).await;
    assert!(
        !cache
            .record_heartbeat("edge-a", 2, 6_000, 9)
            .await
            .unwrap()
            .refused,
        "the lease lapsed: the new instance takes it"
    );
    assert!(
        cache
            .record_heartbeat("edge-a", 1, 7_000, 9)
            .await
            .unwrap()
            .refused
    );
}

/// Goal: a batch of every bucket is written in one call per bucket, and
/// `/api/states`-level reads add the buckets up: the totals and the edges
/// equal what the distinct tuples add up to, across resends, overlaps and
/// a conflict. Method: the shared run of batches; the expected totals
/// computed from the first copy of each distinct tuple.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buckets_partial_totals_add_up_to_the_distinct_tuples() {
    let redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let mut first_copies: std::collections::BTreeMap<String, CloudTuple> = Default::default();
    let mut inserted = 0;
    for batch in redis_support::mixed_batches() {
        let write = cache.store(&batch, 3).await.unwrap();
        inserted += write.inserted;
        assert_eq!(write.inserted + write.existing, batch.len());
        for tuple in batch {
            first_copies.entry(tuple.key.clone()).or_insert(tuple);
        }
    }
    assert_eq!(inserted, redis_support::mixed_batches_distinct());
    assert_eq!(inserted, first_copies.len());
    let totals = cache.state_totals().await.unwrap();
    for state in GermanState::ALL {
        let held: Vec<&CloudTuple> = first_copies.values().filter(|t| t.state == state).collect();
        let total = totals.iter().find(|total| total.state == state).unwrap();
        assert_eq!(total.tuples, held.len() as u64, "{}", state.name());
        let households: std::collections::BTreeSet<&str> =
            held.iter().map(|t| t.node_id.as_str()).collect();
        assert_eq!(
            total.households,
            households.len() as u64,
            "{}",
            state.name()
        );
        let sum: f64 = held.iter().map(|t| t.average_w).sum();
        assert!(
            (total.average_sum_w - sum).abs() <= 1e-9 * sum.max(1.0),
            "{}",
            state.name()
        );
    }
    let edges = cache.edges().await.unwrap();
    let counts: Vec<(&str, u64)> = edges
        .iter()
        .map(|e| (e.edge_id.as_str(), e.tuples))
        .collect();
    let count = |edge: &str| first_copies.values().filter(|t| t.edge_id == edge).count() as u64;
    assert_eq!(
        counts,
        [("edge-a", count("edge-a")), ("edge-b", count("edge-b"))]
    );
}

/// The keys `pattern` matches, by SCAN.
async fn scan(connection: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..1_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            keys.sort();
            keys.dedup();
            return keys;
        }
        cursor = next;
    }
    panic!("SCAN did not end");
}

/// Goal: what the README says of an upgrade holds: a Redis written by an
/// older cloud (unbucketed keys, one `em:epoch`) is not read by this one,
/// whose buckets start without epochs (so the first heartbeat sets new
/// ones and the edges reship), and the old keys are exactly those of
/// `OLD_LAYOUT_PATTERN`, none of ours. Method: the old layout's keys
/// written by hand beside a stored batch and a heartbeat; SCAN by both
/// patterns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_layout_is_ignored_and_found_by_its_own_pattern() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let old_tuple = tuple("edge-a", "house-0", 0, 1.0);
    let old_keys = [
        format!("em:{}", old_tuple.key),
        "em:epoch".to_owned(),
        "em:state:Sachsen".to_owned(),
        "em:edge:edge-a".to_owned(),
        "em:edges".to_owned(),
        "em:recent".to_owned(),
    ];
    for key in &old_keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(old_tuple.stored_value())
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    assert_eq!(cache.recent_tuples(10).await.unwrap(), vec![]);
    assert!(cache.edges().await.unwrap().is_empty());
    let record = cache.record_heartbeat("edge-a", 1, 1, 77).await.unwrap();
    for (bucket, epoch) in record.epochs.iter().enumerate() {
        assert_eq!(
            *epoch,
            bucket_epoch_candidate(77, bucket as u16),
            "a new epoch"
        );
    }
    let write = cache
        .store(std::slice::from_ref(&old_tuple), 78)
        .await
        .unwrap();
    assert_eq!(write.inserted, 1, "stored again under the new layout");

    let mut expected_old = old_keys.to_vec();
    expected_old.sort();
    assert_eq!(scan(&mut raw, OLD_LAYOUT_PATTERN).await, expected_old);
    let ours = scan(&mut raw, LAYOUT_PATTERN).await;
    assert!(ours.contains(&redis_key(&old_tuple)), "{ours:?}");
    assert!(ours.iter().all(|key| !old_keys.contains(key)));
    assert_eq!(
        scan(&mut raw, "em:*").await.len(),
        ours.len() + old_keys.len(),
        "the two patterns cover every key of ours"
    );
}

/// Goal: a Redis that comes back from a crash with some acknowledged
/// writes missing but its epoch keys intact (AOF `everysec` loses up to a
/// second, a snapshot what came after it, an asynchronous replica the
/// primary's latest) renews every epoch, so the edges ship again what was
/// lost; and the reship stores exactly that. Method: a batch, a snapshot
/// (`SAVE`), a second batch, a SIGKILL and a restart that loads the
/// snapshot: the second batch is gone while every epoch key is still there;
/// then both batches again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_lost_acknowledged_writes_renews_every_epoch() {
    let mut redis = RedisServer::start();
    let cache = RedisCache::connect(&redis.url()).await.unwrap();
    let households = households_in_every_bucket(1);
    let batch = |from: usize| -> Vec<CloudTuple> {
        (0..STORE_BUCKETS)
            .map(|bucket| {
                tuple(
                    "edge-a",
                    &households[bucket],
                    (from + bucket) as i64 * 5_000,
                    1.5,
                )
            })
            .collect()
    };
    let (kept, lost) = (batch(0), batch(100));
    assert_eq!(
        cache.store(&kept, 21).await.unwrap().inserted,
        STORE_BUCKETS
    );
    let before = cache
        .record_heartbeat("edge-a", 0, 1, 22)
        .await
        .unwrap()
        .epochs;
    let mut raw = redis.connection();
    let _: () = redis::cmd("SAVE").query(&mut raw).unwrap();
    let written = cache.store(&lost, 23).await.unwrap();
    assert_eq!(written.inserted, STORE_BUCKETS);
    assert!(
        written
            .epochs
            .iter()
            .all(|(bucket, epoch)| before[usize::from(*bucket)] == *epoch),
        "the second batch was acknowledged under the same epochs"
    );

    redis.restart(); // SIGKILL, then the snapshot loads: `lost` is gone.
    let mut raw = redis.connection();
    for bucket in 0..STORE_BUCKETS as u16 {
        let held: Option<String> = redis::cmd("GET")
            .arg(BucketKeys::new(bucket).epoch())
            .query(&mut raw)
            .unwrap();
        assert!(held.is_some(), "the epoch key of bucket {bucket} survived");
    }
    // The connection manager redials the restarted server.
    let mut attempts = 0;
    let after = loop {
        attempts += 1;
        match cache.record_heartbeat("edge-a", 0, 2, 24).await {
            Ok(heartbeat) => break heartbeat.epochs,
            Err(error) if attempts < 50 => {
                let CacheError::Unavailable(_) = error;
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("the restarted Redis never answered: {error}"),
        }
    };
    for bucket in 0..STORE_BUCKETS {
        assert_ne!(
            after[bucket], before[bucket],
            "bucket {bucket} has a new epoch"
        );
        assert_eq!(after[bucket], bucket_epoch_candidate(24, bucket as u16));
    }
    // What the edges then ship again: only the lost batch is new.
    assert_eq!(cache.store(&kept, 25).await.unwrap().inserted, 0);
    let refilled = cache.store(&lost, 26).await.unwrap();
    assert_eq!(
        refilled.inserted, STORE_BUCKETS,
        "exactly the lost tuples come back"
    );
    let totals = cache.state_totals().await.unwrap();
    assert_eq!(
        totals.iter().map(|t| t.tuples).sum::<u64>(),
        2 * STORE_BUCKETS as u64
    );
    // A server that did not restart keeps its epochs.
    let steady = cache
        .record_heartbeat("edge-a", 0, 3, 27)
        .await
        .unwrap()
        .epochs;
    assert_eq!(steady, after);
}
