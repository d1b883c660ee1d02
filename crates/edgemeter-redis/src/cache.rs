//! `RedisCache`: the cloud's [`Cache`] in Redis, a single server or a
//! Redis Cluster, on one layout and the same scripts.
//!
//! The keys and their buckets are [`crate::layout`]'s: 16 buckets,
//! each one hash tag and so one cluster slot. This module owns the talking:
//! the connection (a [`ConnectionManager`] to one server, or a
//! [`ClusterConnection`] that routes each call to its slot's primary,
//! behind one `Connection` enum), the Lua scripts, and the merge of the
//! buckets' partial answers. The scripts themselves, and the layout, are
//! `edgemeter-scripts`', which the simulated Redis runs too.
//!
//! A batch is split by household bucket into at most 16 script calls, each
//! touching keys of its bucket only, all passed in KEYS. The calls run
//! concurrently over the multiplexed connection(s), so a batch costs one
//! round trip per shard, not one per bucket in sequence. Each call is
//! atomic for its bucket: a tuple is inserted only if its key is new, and
//! only new tuples move the bucket's totals. A resent tuple changes
//! nothing; one whose average or sample count differs from the stored one
//! is reported as a conflict. Each call sets its bucket's epoch if missing,
//! or if the Redis server is not the one that set it (a restart or a
//! failover may have lost acknowledged writes while the epoch key
//! survived), each bucket its own value derived from the call's candidate
//! ([`edgemeter_cloud::bucket_epoch_candidate`]), and returns it, so the
//! epoch a bucket reports is the one its tuples were written under. A batch that fails in some buckets and not others
//! is answered "retry later": the resend stores the rest and recounts
//! nothing.
//!
//! Readers read a fixed set of keys per bucket, one call per bucket, and
//! add the partial totals up: no `KEYS *`, ever (the original's API took
//! 14 s at 100,000 keys that way).
//!
//! Redis being down is an operating condition: every call gives up within
//! [`CALL_TIMEOUT`] with [`CacheError::Unavailable`], and the cloud answers
//! "retry later".
//!
//! # Upgrading from the unbucketed layout
//! A cloud of this version finds none of its keys in a Redis written by an
//! older one (whose keys had no hash tag, `em:tuple:*`, `em:epoch`, ...):
//! the buckets have no epochs yet, so the first heartbeat sets new ones,
//! and the edges reship every tuple they retain (`--ack-retention`). The
//! old keys are then unused; delete them on every node with
//! `redis-cli -p PORT --scan --pattern 'em:[^{]*' | xargs -r -n 500 redis-cli -p PORT unlink`
//! ([`crate::layout::OLD_LAYOUT_PATTERN`]). No migration is needed.

use crate::layout::{
    heartbeat_keys, merge_recent, split_by_bucket, store_call, tuple_key_of, BucketKeys, StoreCall,
    STORE_BUCKETS,
};
use edgemeter_cloud::{
    bucket_epoch_candidate, Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, GermanState,
    HeartbeatRecord, StateTotals, StoredConflict, INSTANCE_LEASE,
};
use futures::future::{join_all, try_join_all};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::layout::{KEY_PREFIX, RECENT_TUPLES_MAX};

/// The longest one cache call may take, connection included. A Lua write of
/// a full batch takes milliseconds; past this Redis is treated as down.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a command may wait for its response once sent.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Retries of a failed reconnection: a broken connection is dialled at most
/// `1 + RECONNECT_ATTEMPTS_MAX` times before the manager reports the error;
/// the cloud's callers retry on their own schedule after that. The cluster
/// client retries a request (after a MOVED, a broken connection, a
/// refreshed slot map) at most as often.
pub const RECONNECT_ATTEMPTS_MAX: usize = 2;

/// The longest pause between two reconnection attempts.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(500);

/// Seed nodes `--redis-cluster` takes at most: a few suffice, since the
/// client learns the whole cluster from any one of them.
pub const CLUSTER_SEEDS_MAX: usize = 64;

// The scripts are `edgemeter-scripts`' (one source with the simulated
// Redis, which runs the same bytes): see there for KEYS, ARGV and replies.
use edgemeter_scripts::{EPOCH_SCRIPT, HEARTBEAT_SCRIPT, STORE_SCRIPT};

/// A Redis that could not be reached at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSetupError {
    /// The URL, or the cluster's seed URLs joined by commas.
    pub url: String,
    pub reason: String,
    /// The flag that names it: `--redis` or `--redis-cluster`.
    pub flag: &'static str,
}

impl fmt::Display for RedisSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = if self.flag == "--redis-cluster" {
            "start the cluster's redis-server nodes there (cluster_state:ok)"
        } else {
            "start redis-server there (e.g. `redis-server --port 6379`)"
        };
        write!(
            f,
            "cannot reach Redis at {}: {}; {start} or pass {} redis://HOST:PORT",
            self.url, self.reason, self.flag
        )
    }
}

impl std::error::Error for RedisSetupError {}

/// The two ways to Redis behind one type, so every call below is written
/// once: a multiplexed connection to one server that reconnects on its
/// own, or a cluster connection that routes each command by its key's
/// slot (a script by its first key) and follows MOVED and ASK.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The cloud's cache in Redis. Cheap to clone: clones share one
/// multiplexed connection (per node in a cluster), which reconnects on its
/// own.
#[derive(Clone)]
pub struct RedisCache {
    connection: Connection,
    scripts: Arc<Scripts>,
    /// The URL (or seed URLs) for messages.
    target: Arc<str>,
    /// The last stamp handed to a store call, shared by clones.
    last_stamp: Arc<AtomicU64>,
}

/// The three scripts, hashed once; each call sends EVALSHA and loads the
/// script only when a node answers NOSCRIPT (a fresh or restarted node).
struct Scripts {
    store: Script,
    epoch: Script,
    heartbeat: Script,
}

impl RedisCache {
    /// Connects to one Redis and checks with a PING that it answers.
    pub async fn connect(url: &str) -> Result<RedisCache, RedisSetupError> {
        let setup_error = |reason: String| RedisSetupError {
            url: url.to_owned(),
            reason,
            flag: "--redis",
        };
        let client = redis::Client::open(url).map_err(|error| setup_error(error.to_string()))?;
        let connecting = ConnectionManager::new_with_config(client, manager_config());
        let connection = tokio::time::timeout(CALL_TIMEOUT, connecting)
            .await
            .map_err(|_| setup_error(format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|error| setup_error(error.to_string()))?;
        let cache = RedisCache::with_connection(Connection::Single(connection), url);
        cache
            .ping()
            .await
            .map_err(|error| setup_error(error.to_string()))?;
        Ok(cache)
    }

    /// Connects to a Redis Cluster through its seed nodes and checks with
    /// a PING that every primary answers.
    pub async fn connect_cluster(urls: &[String]) -> Result<RedisCache, RedisSetupError> {
        let joined = urls.join(",");
        let setup_error = |reason: String| RedisSetupError {
            url: joined.clone(),
            reason,
            flag: "--redis-cluster",
        };
        if urls.is_empty() || urls.len() > CLUSTER_SEEDS_MAX {
            return Err(setup_error(format!(
                "give 1 to {CLUSTER_SEEDS_MAX} seed URLs, not {}",
                urls.len()
            )));
        }
        let client = cluster_builder(urls)
            .build()
            .map_err(|error| setup_error(error.to_string()))?;
        let connection = tokio::time::timeout(CALL_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| setup_error(format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|error| setup_error(error.to_string()))?;
        let cache = RedisCache::with_connection(Connection::Cluster(connection), &joined);
        cache
            .ping()
            .await
            .map_err(|error| setup_error(error.to_string()))?;
        Ok(cache)
    }

    fn with_connection(connection: Connection, target: &str) -> RedisCache {
        RedisCache {
            connection,
            scripts: Arc::new(Scripts {
                store: Script::new(STORE_SCRIPT),
                epoch: Script::new(EPOCH_SCRIPT),
                heartbeat: Script::new(HEARTBEAT_SCRIPT),
            }),
            target: target.into(),
            last_stamp: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Answers whether Redis is reachable now: in a cluster, every primary.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        self.call(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Runs Redis work under [`CALL_TIMEOUT`], mapping every failure to
    /// [`CacheError::Unavailable`].
    async fn call<T>(
        &self,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.unavailable(error)),
            Err(_) => Err(CacheError::Unavailable(format!(
                "redis {}: no answer within {CALL_TIMEOUT:?}",
                self.target
            ))),
        }
    }

    fn unavailable(&self, reason: impl fmt::Display) -> CacheError {
        CacheError::Unavailable(format!("redis {}: {reason}", self.target))
    }

    /// Reads an epoch Redis returned: a non-zero u64 in decimal.
    fn parse_epoch(&self, bucket: u16, text: &str) -> Result<u64, CacheError> {
        match text.parse::<u64>() {
            Ok(epoch) if epoch != 0 => Ok(epoch),
            _ => Err(self.unavailable(format!(
                "{} holds {text:?}, not an epoch",
                BucketKeys::new(bucket).epoch()
            ))),
        }
    }

    /// A stamp for a store call's recent entries: the wall clock in
    /// microseconds, made strictly increasing per process, so that this
    /// node's batches list in the order they were stored, and a batch's
    /// tuples (one stamp, split over buckets) by their index. Other nodes'
    /// batches interleave by their clocks.
    fn next_stamp(&self) -> u64 {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        advance_stamp(&self.last_stamp, now_us)
    }
}

/// The stamp after `last` at `now_us`: the clock, or one past the last
/// stamp when the clock has not moved (or went back).
fn advance_stamp(last: &AtomicU64, now_us: u64) -> u64 {
    let previous = last
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now_us.max(last + 1))
        })
        .expect("the update always succeeds");
    now_us.max(previous + 1)
}

/// The connection manager's timeouts and reconnection bounds.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_ATTEMPTS_MAX)
        .set_max_delay(RECONNECT_DELAY_MAX)
}

/// The cluster client with the same bounds as the single connection.
fn cluster_builder(urls: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(urls.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(CALL_TIMEOUT))
        .retries(RECONNECT_ATTEMPTS_MAX as u32)
        .max_retry_wait(RECONNECT_DELAY_MAX.as_millis() as u64)
}

/// The store script's reply: inserted, epoch, conflict indexes, values.
type StoreReply = (usize, String, Vec<usize>, Vec<Vec<u8>>);

impl RedisCache {
    /// Stores a batch, one script call per bucket it touches, all at once.
    async fn store_calls(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        let stamp = self.next_stamp();
        let calls: Vec<StoreCall> = split_by_bucket(tuples)
            .into_iter()
            .map(|(bucket, indexes)| store_call(bucket, tuples, indexes, candidate_epoch, stamp))
            .collect();
        let replies = self
            .call(try_join_all(calls.iter().map(|call| self.store_one(call))))
            .await?;
        let mut writes = CacheWrite::default();
        for (call, (inserted, epoch, indexes, stored)) in calls.iter().zip(replies) {
            assert!(
                inserted <= call.indexes.len(),
                "the script inserted more than it was given"
            );
            assert_eq!(indexes.len(), stored.len());
            writes.inserted += inserted;
            writes
                .epochs
                .insert(call.bucket, self.parse_epoch(call.bucket, &epoch)?);
            for (index, value) in indexes.into_iter().zip(stored) {
                let index = *call
                    .indexes
                    .get(index)
                    .expect("a conflict outside the call");
                let stored = CloudTuple::from_stored_value(String::new(), &value)
                    .map(|tuple| (tuple.average_w, tuple.samples));
                writes.conflicts.push(StoredConflict { index, stored });
            }
        }
        assert!(writes.inserted <= tuples.len());
        writes.existing = tuples.len() - writes.inserted;
        writes.conflicts.sort_by_key(|conflict| conflict.index);
        Ok(writes)
    }

    async fn store_one(&self, call: &StoreCall) -> redis::RedisResult<StoreReply> {
        let mut invocation = self.scripts.store.prepare_invoke();
        for key in &call.keys {
            invocation.key(key);
        }
        for arg in &call.args {
            invocation.arg(arg);
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await
    }

    /// One bucket's epoch, set from `candidate_epoch` if it has none (to the
    /// bucket's own value, [`bucket_epoch_candidate`]).
    async fn bucket_epoch(&self, bucket: u16, candidate_epoch: u64) -> Result<u64, CacheError> {
        let mut invocation = self.scripts.epoch.prepare_invoke();
        invocation
            .key(BucketKeys::new(bucket).epoch())
            .arg(bucket_epoch_candidate(candidate_epoch, bucket).to_string());
        let mut connection = self.connection.clone();
        let epoch: String = self
            .call(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        self.parse_epoch(bucket, &epoch)
    }

    /// Records a heartbeat of `instance` under the lease rule, and reads
    /// (setting where missing) every bucket's epoch. The edge's own bucket
    /// must answer; a bucket whose shard does not within [`CALL_TIMEOUT`]
    /// reads 0, unknown, so one lost shard does not stop the others.
    async fn heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        let (lease_bucket, keys) = heartbeat_keys(edge_id);
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(bucket_epoch_candidate(candidate_epoch, lease_bucket).to_string())
            .arg(edge_id)
            .arg(now_ms)
            .arg(instance.to_string())
            .arg(INSTANCE_LEASE.as_millis() as u64);
        let mut connection = self.connection.clone();
        let lease = self.call(async move {
            invocation
                .invoke_async::<(String, u8)>(&mut connection)
                .await
        });
        let others =
            join_all(
                (0..STORE_BUCKETS as u16)
                    .filter(|bucket| *bucket != lease_bucket)
                    .map(|bucket| async move {
                        (bucket, self.bucket_epoch(bucket, candidate_epoch).await)
                    }),
            );
        let (lease, others) = futures::join!(lease, others);
        let (epoch, refused) = lease?;
        let mut epochs = [0; STORE_BUCKETS];
        epochs[usize::from(lease_bucket)] = self.parse_epoch(lease_bucket, &epoch)?;
        for (bucket, epoch) in others {
            if let Ok(epoch) = epoch {
                epochs[usize::from(bucket)] = epoch;
            }
        }
        Ok(HeartbeatRecord {
            epochs,
            refused: refused != 0,
        })
    }
}

impl RedisCache {
    /// One bucket's partial totals: 16 HMGETs and 16 SCARDs, one pipeline
    /// to the bucket's slot.
    async fn bucket_totals(&self, keys: &BucketKeys) -> redis::RedisResult<Vec<StateTotals>> {
        let mut pipe = redis::pipe();
        for state in GermanState::ALL {
            pipe.cmd("HMGET")
                .arg(keys.state(state))
                .arg("tuples")
                .arg("average_sum_w");
        }
        for state in GermanState::ALL {
            pipe.scard(keys.state_households(state));
        }
        let mut connection = self.connection.clone();
        let mut replies: Vec<Value> = pipe.query_async(&mut connection).await?;
        let households = replies.split_off(GermanState::ALL.len());
        let sums: Vec<(Option<u64>, Option<String>)> =
            redis::from_redis_value(Value::Array(replies))?;
        let households: Vec<u64> = redis::from_redis_value(Value::Array(households))?;
        Ok(GermanState::ALL
            .into_iter()
            .zip(sums.into_iter().zip(households))
            .map(|(state, ((tuples, sum), households))| StateTotals {
                state,
                households,
                tuples: tuples.unwrap_or(0),
                average_sum_w: sum.and_then(|text| text.parse().ok()).unwrap_or(0.0),
            })
            .collect())
    }

    /// One bucket's edge records: the edges set, then one HMGET each.
    async fn bucket_edges(&self, keys: &BucketKeys) -> redis::RedisResult<Vec<EdgeRecord>> {
        let mut connection = self.connection.clone();
        let edge_ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.edges())
            .query_async(&mut connection)
            .await?;
        // An empty pipeline is an error in the client: nothing to read.
        if edge_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for edge_id in &edge_ids {
            pipe.cmd("HMGET")
                .arg(keys.edge(edge_id))
                .arg("last_heartbeat_ms")
                .arg("tuples")
                .arg("last_tuple_ms");
        }
        let rows: Vec<(Option<i64>, Option<u64>, Option<i64>)> =
            pipe.query_async(&mut connection).await?;
        Ok(edge_ids
            .into_iter()
            .zip(rows)
            .map(
                |(edge_id, (last_heartbeat_ms, tuples, last_tuple_ms))| EdgeRecord {
                    edge_id,
                    last_heartbeat_ms,
                    tuples: tuples.unwrap_or(0),
                    last_tuple_ms,
                },
            )
            .collect())
    }

    /// The values of `redis_keys`, all of `bucket` (one slot, one MGET).
    async fn bucket_values(
        &self,
        redis_keys: Vec<String>,
    ) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
        let mut connection = self.connection.clone();
        redis::cmd("MGET")
            .arg(redis_keys)
            .query_async(&mut connection)
            .await
    }
}

impl Cache for RedisCache {
    async fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        if tuples.is_empty() {
            // No bucket written, so no epoch to report.
            return Ok(CacheWrite::default());
        }
        self.store_calls(tuples, candidate_epoch).await
    }

    async fn record_heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        self.heartbeat(edge_id, instance, now_ms, candidate_epoch)
            .await
    }

    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        let buckets: Vec<BucketKeys> = BucketKeys::all().collect();
        let partials = self
            .call(try_join_all(
                buckets.iter().map(|keys| self.bucket_totals(keys)),
            ))
            .await?;
        // Summed in bucket order, so a single Redis and a cluster holding
        // the same partials give the same floating-point totals.
        let mut totals: Vec<StateTotals> = GermanState::ALL
            .into_iter()
            .map(|state| StateTotals {
                state,
                households: 0,
                tuples: 0,
                average_sum_w: 0.0,
            })
            .collect();
        for partial in partials {
            for (total, part) in totals.iter_mut().zip(partial) {
                assert_eq!(total.state, part.state);
                total.households += part.households;
                total.tuples += part.tuples;
                total.average_sum_w += part.average_sum_w;
            }
        }
        Ok(totals)
    }

    async fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, CacheError> {
        let limit = limit.min(RECENT_TUPLES_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lists = self
            .call(try_join_all(BucketKeys::all().map(|keys| {
                let mut connection = self.connection.clone();
                async move {
                    let list: Vec<String> = redis::cmd("LRANGE")
                        .arg(keys.recent())
                        .arg(0)
                        .arg(limit as isize - 1)
                        .query_async(&mut connection)
                        .await?;
                    Ok::<_, redis::RedisError>((keys.bucket(), list))
                }
            })))
            .await?;
        let merged = merge_recent(lists, limit);
        // The chosen keys per bucket, in merged order, one MGET each.
        let mut per_bucket: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (bucket, entry) in &merged {
            per_bucket
                .entry(*bucket)
                .or_default()
                .push(entry.redis_key.clone());
        }
        let buckets: Vec<u16> = per_bucket.keys().copied().collect();
        let values = self
            .call(try_join_all(
                per_bucket
                    .into_values()
                    .map(|keys| self.bucket_values(keys)),
            ))
            .await?;
        let mut values: BTreeMap<u16, std::vec::IntoIter<Option<Vec<u8>>>> = buckets
            .into_iter()
            .zip(values.into_iter().map(Vec::into_iter))
            .collect();
        Ok(merged
            .into_iter()
            .filter_map(|(bucket, entry)| {
                let value = values.get_mut(&bucket)?.next()??;
                let tuple_key = tuple_key_of(&entry.redis_key)?;
                CloudTuple::from_stored_value(tuple_key.to_owned(), &value)
            })
            .collect())
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        let buckets: Vec<BucketKeys> = BucketKeys::all().collect();
        let partials = self
            .call(try_join_all(
                buckets.iter().map(|keys| self.bucket_edges(keys)),
            ))
            .await?;
        let mut edges: BTreeMap<String, EdgeRecord> = BTreeMap::new();
        for part in partials.into_iter().flatten() {
            let edge = edges
                .entry(part.edge_id.clone())
                .or_insert_with(|| EdgeRecord {
                    edge_id: part.edge_id.clone(),
                    last_heartbeat_ms: None,
                    tuples: 0,
                    last_tuple_ms: None,
                });
            edge.tuples += part.tuples;
            edge.last_heartbeat_ms = edge.last_heartbeat_ms.max(part.last_heartbeat_ms);
            edge.last_tuple_ms = edge.last_tuple_ms.max(part.last_tuple_ms);
        }
        Ok(edges.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the manager is built with our reconnection bounds, not the
    /// client's defaults (6 retries, no cap on the delay). The attempts
    /// are also counted against a Redis that breaks connections, in
    /// `tests/redis_cache.rs`; the delay cap is checked only here, since a
    /// test that timed the pauses would depend on the machine's speed.
    #[test]
    fn the_manager_reconnects_within_its_bounds() {
        let config = manager_config();
        assert_eq!(config.number_of_retries(), RECONNECT_ATTEMPTS_MAX);
        assert_eq!(config.max_delay(), Some(RECONNECT_DELAY_MAX));
        assert_eq!(config.connection_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(config.response_timeout(), Some(RESPONSE_TIMEOUT));
    }

    /// Goal: stamps follow the clock and increase strictly even when the
    /// clock stands still or steps back.
    #[test]
    fn stamps_increase_strictly() {
        let last = AtomicU64::new(0);
        assert_eq!(advance_stamp(&last, 100), 100);
        assert_eq!(advance_stamp(&last, 100), 101);
        assert_eq!(advance_stamp(&last, 50), 102);
        assert_eq!(advance_stamp(&last, 200), 200);
    }
}
