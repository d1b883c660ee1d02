//! `RedisCache`: the cloud's [`Cache`] in Redis.
//!
//! Layout, every key under [`KEY_PREFIX`]:
//! - `em:<tuple key>`: one string per tuple, the JSON of
//!   [`CloudTuple::stored_value`] (edge, household, window, average, samples,
//!   postal code, state, received time). The tuple key comes from the cloud
//!   logic and names the tuple's identity, so a resend lands on it. One
//!   value, not a hash of fields: the write is a single `SET NX`, which is
//!   most of what the cloud's Redis does per tuple.
//! - `em:state:<state>`: hash of `tuples` and `average_sum_w`;
//!   `em:state:<state>:households`: the set of households seen there.
//! - `em:edge:<edge id>`: hash of `tuples`, `last_tuple_ms`,
//!   `last_heartbeat_ms`; `em:edges`: the set of edge ids.
//! - `em:recent`: the latest [`RECENT_TUPLES_MAX`] tuple keys, newest first.
//! - `em:epoch`: the store's epoch, a random non-zero u64 in decimal, set
//!   with `SET NX` by the first write or heartbeat that finds it missing. A
//!   Redis that lost its data (FLUSHALL, a restart without persistence, a
//!   failover to an empty replica) has none, so the next call sets a new
//!   one, and the edges ship again what they acknowledged under the old.
//!   This single Redis keeps ONE epoch for all the store buckets
//!   ([`edgemeter_wire::bucket`]): it loses all of them at once (a FLUSHALL
//!   or a restart), so every bucket's epoch changes together, which is the
//!   per-bucket rule with one shard. (A stop-gap until the cluster layout,
//!   where each bucket's hash tag has its own epoch.)
//! - `em:lease:<edge id>`: the instance holding the edge id, a decimal
//!   u64 set with `PX` [`INSTANCE_LEASE`] by each accepted heartbeat; a
//!   heartbeat of another instance while it exists is refused
//!   ([`HEARTBEAT_SCRIPT`], one atomic step).
//!
//! A batch is stored by ONE Lua script, so it is atomic and costs one round
//! trip: each tuple is inserted only if its key is new, and only new tuples
//! move the totals. A resent tuple changes nothing; one whose average or
//! sample count differs from the stored one is reported as a conflict. The
//! script sets and reads `em:epoch` in the same step, so the epoch it
//! returns is the one the batch was written under. Readers touch those
//! structures only: no `KEYS *`, ever (the original's API took 14 s at
//! 100,000 keys that way).
//!
//! Redis being down is an operating condition: every call gives up within
//! [`CALL_TIMEOUT`] with [`CacheError::Unavailable`], and the cloud answers
//! "retry later".

use edgemeter_cloud::{
    Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, GermanState, HeartbeatRecord,
    StateTotals, StoredConflict, EPOCH_KEY, INSTANCE_LEASE,
};
use edgemeter_wire::{store_bucket, STORE_BUCKETS};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Every key of ours starts with this, so the data shares a Redis with
/// others without collisions and can be found with one `SCAN` pattern.
pub const KEY_PREFIX: &str = "em:";

/// The recent-tuples list is trimmed to this many entries on every write:
/// the dashboard shows the latest few hundred, and the list must not grow
/// with the data.
pub const RECENT_TUPLES_MAX: usize = 1_000;

/// The longest one cache call may take, connection included. A Lua write of
/// a full batch takes milliseconds; past this Redis is treated as down.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a command may wait for its response once sent.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Retries of a failed reconnection: a broken connection is dialled at most
/// `1 + RECONNECT_ATTEMPTS_MAX` times before the manager reports the error;
/// the cloud's callers retry on their own schedule after that.
pub const RECONNECT_ATTEMPTS_MAX: usize = 2;

/// The longest pause between two reconnection attempts.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(500);

/// Arguments per tuple in the script's arguments: key, stored value and
/// the tag of its group.
const TUPLE_ARGS: usize = 3;

/// Arguments per group (one household of one edge in one batch).
const GROUP_ARGS: usize = 6;

/// Inserts each new tuple and moves the totals for the new ones only.
/// ARGV: prefix, recent list bound, group count, then per group state,
/// node id, edge id, latest received ms, tuple count and the sum of its
/// tuples' averages; then tuple count, then per tuple, in batch order, key,
/// stored value and group tag (the group's number from 1, in decimal).
/// The last argument is the candidate epoch, set if `em:epoch` is missing.
/// Returns the number of tuples inserted, the epoch (a string), the
/// 0-based batch indexes of the conflicting tuples and, for each, the value
/// stored under its key.
///
/// Everything per household is passed once per group: turning arguments
/// into Lua strings and numbers (`tonumber` is a `strtod`) was a third of
/// the script's time. The tag is looked up as a string, so a tuple costs
/// no `tonumber`. Tuples stay in batch order, which is the order
/// `em:recent` shows them in. A group's sum counts every tuple; only when
/// some of them were stored before is it summed again from the new ones'
/// values, in batch order, so the totals are exactly what adding each new
/// average gives.
const STORE_SCRIPT: &str = r#"
local prefix = ARGV[1]
local recent_max = tonumber(ARGV[2])
local group_count = tonumber(ARGV[3])
local groups = {}
local order = {}
for number = 1, group_count do
  local base = 3 + (number - 1) * 6
  local group = { state = ARGV[base + 1], node = ARGV[base + 2], edge = ARGV[base + 3],
    received = ARGV[base + 4], count = tonumber(ARGV[base + 5]), sum = ARGV[base + 6],
    fresh = 0 }
  groups[tostring(number)] = group
  order[number] = group
end
local first = 4 + group_count * 6
local count = tonumber(ARGV[first])
local epoch_key = prefix .. 'epoch'
redis.call('SET', epoch_key, ARGV[first + 1 + count * 3], 'NX')
local epoch = redis.call('GET', epoch_key)
local inserted = 0
local recent = {}
local existing = nil
local conflicts = {}
local stored_values = {}
for index = 0, count - 1 do
  local base = first + index * 3
  local group = groups[ARGV[base + 3]]
  local key = prefix .. ARGV[base + 1]
  if redis.call('SET', key, ARGV[base + 2], 'NX') then
    group.fresh = group.fresh + 1
    inserted = inserted + 1
    recent[inserted] = ARGV[base + 1]
  else
    existing = existing or {}
    existing[index] = true
    local stored = redis.call('GET', key)
    local ok, old = pcall(cjson.decode, stored)
    local new = cjson.decode(ARGV[base + 2])
    if not ok or type(old) ~= 'table' or old.average_w ~= new.average_w
        or old.samples ~= new.samples then
      conflicts[#conflicts + 1] = index
      stored_values[#stored_values + 1] = stored
    end
  end
end
if existing then
  for _, group in ipairs(order) do
    if group.fresh < group.count then group.sum = 0 end
  end
  for index = 0, count - 1 do
    local base = first + index * 3
    local group = groups[ARGV[base + 3]]
    if group.fresh < group.count and not existing[index] then
      group.sum = group.sum + cjson.decode(ARGV[base + 2]).average_w
    end
  end
end
local states = {}
local edges = {}
for _, group in ipairs(order) do
  if group.fresh > 0 then
    local totals = states[group.state]
    if not totals then
      totals = { tuples = 0, sum = 0, households = {} }
      states[group.state] = totals
    end
    totals.tuples = totals.tuples + group.fresh
    totals.sum = totals.sum + tonumber(group.sum)
    totals.households[#totals.households + 1] = group.node
    local edge = edges[group.edge]
    if not edge then
      edge = { tuples = 0, last = 0 }
      edges[group.edge] = edge
    end
    edge.tuples = edge.tuples + group.fresh
    edge.last = math.max(edge.last, tonumber(group.received))
  end
end
for state, totals in pairs(states) do
  local state_key = prefix .. 'state:' .. state
  redis.call('HINCRBY', state_key, 'tuples', totals.tuples)
  redis.call('HINCRBYFLOAT', state_key, 'average_sum_w', string.format('%.17g', totals.sum))
  redis.call('SADD', state_key .. ':households', unpack(totals.households))
end
for edge_id, edge in pairs(edges) do
  local edge_key = prefix .. 'edge:' .. edge_id
  redis.call('SADD', prefix .. 'edges', edge_id)
  redis.call('HINCRBY', edge_key, 'tuples', edge.tuples)
  local last = tonumber(redis.call('HGET', edge_key, 'last_tuple_ms') or '0')
  if edge.last > last then
    redis.call('HSET', edge_key, 'last_tuple_ms', string.format('%d', edge.last))
  end
end
if #recent > 0 then
  redis.call('LPUSH', prefix .. 'recent', unpack(recent))
  redis.call('LTRIM', prefix .. 'recent', 0, recent_max - 1)
end
return { inserted, epoch, conflicts, stored_values }
"#;

/// Records a heartbeat, applies the instance lease and sets and reads the
/// epoch, atomically. ARGV: prefix, edge id, now ms, instance (decimal, "0"
/// for an older edge that names none: recorded, never refused, the lease
/// left alone), lease ms, candidate epoch. Returns the epoch (a string)
/// and 1 when refused, else 0.
const HEARTBEAT_SCRIPT: &str = r#"
local prefix, edge, now, instance = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('HSET', prefix .. 'edge:' .. edge, 'last_heartbeat_ms', now)
redis.call('SADD', prefix .. 'edges', edge)
local refused = 0
if instance ~= '0' then
  local lease_key = prefix .. 'lease:' .. edge
  local holder = redis.call('GET', lease_key)
  if holder and holder ~= instance then
    refused = 1
  else
    redis.call('SET', lease_key, instance, 'PX', ARGV[5])
  end
end
redis.call('SET', prefix .. 'epoch', ARGV[6], 'NX')
return { redis.call('GET', prefix .. 'epoch'), refused }
"#;

/// A Redis that could not be reached at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSetupError {
    pub url: String,
    pub reason: String,
}

impl fmt::Display for RedisSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach Redis at {}: {}; start redis-server there (e.g. `redis-server --port 6379`) or pass --redis redis://HOST:PORT",
            self.url, self.reason
        )
    }
}

impl std::error::Error for RedisSetupError {}

/// The cloud's cache in Redis. Cheap to clone: clones share one multiplexed
/// connection, which reconnects on its own.
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    store_script: Script,
    heartbeat_script: Script,
    url: String,
}

impl RedisCache {
    /// Connects and checks with a PING that Redis answers.
    pub async fn connect(url: &str) -> Result<RedisCache, RedisSetupError> {
        let setup_error = |reason: String| RedisSetupError {
            url: url.to_owned(),
            reason,
        };
        let client = redis::Client::open(url).map_err(|error| setup_error(error.to_string()))?;
        let connecting = ConnectionManager::new_with_config(client, manager_config());
        let connection = tokio::time::timeout(CALL_TIMEOUT, connecting)
            .await
            .map_err(|_| setup_error(format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|error| setup_error(error.to_string()))?;
        let cache = RedisCache {
            connection,
            store_script: Script::new(STORE_SCRIPT),
            heartbeat_script: Script::new(HEARTBEAT_SCRIPT),
            url: url.to_owned(),
        };
        cache
            .ping()
            .await
            .map_err(|error| setup_error(error.to_string()))?;
        Ok(cache)
    }

    /// Answers whether Redis is reachable now.
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

    /// Runs one Redis call under [`CALL_TIMEOUT`], mapping every failure
    /// to [`CacheError::Unavailable`].
    async fn call<T>(
        &self,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CacheError::Unavailable(format!(
                "redis {}: {error}",
                self.url
            ))),
            Err(_) => Err(CacheError::Unavailable(format!(
                "redis {}: no answer within {CALL_TIMEOUT:?}",
                self.url
            ))),
        }
    }

    fn key(suffix: &str) -> String {
        format!("{KEY_PREFIX}{suffix}")
    }

    /// Reads the epoch Redis returned: a non-zero u64 in decimal.
    fn parse_epoch(&self, text: &str) -> Result<u64, CacheError> {
        match text.parse::<u64>() {
            Ok(epoch) if epoch != 0 => Ok(epoch),
            _ => Err(CacheError::Unavailable(format!(
                "redis {}: {} holds {text:?}, not an epoch",
                self.url,
                RedisCache::key(EPOCH_KEY)
            ))),
        }
    }
}

/// The connection manager's timeouts and reconnection bounds.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_ATTEMPTS_MAX)
        .set_max_delay(RECONNECT_DELAY_MAX)
}

/// One household of one edge in a batch, as the store script takes it.
struct Group<'a> {
    first: &'a CloudTuple,
    latest_received_ms: i64,
    tuples: usize,
    average_sum_w: f64,
}

fn state_key(state: GermanState) -> String {
    RedisCache::key(&format!("state:{}", state.name()))
}

fn edge_key(edge_id: &str) -> String {
    RedisCache::key(&format!("edge:{edge_id}"))
}

impl Cache for RedisCache {
    async fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        if tuples.is_empty() {
            return Ok(CacheWrite::default());
        }
        // Each tuple names its group: one household of one edge, whose
        // fields and sum go to the script once.
        let mut group_of: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut tags = Vec::with_capacity(tuples.len());
        for tuple in tuples {
            let identity = (
                tuple.state.name(),
                tuple.node_id.as_str(),
                tuple.edge_id.as_str(),
            );
            let index = *group_of.entry(identity).or_insert_with(|| {
                groups.push(Group {
                    first: tuple,
                    latest_received_ms: tuple.received_ms,
                    tuples: 0,
                    average_sum_w: 0.0,
                });
                groups.len() - 1
            });
            let group = &mut groups[index];
            group.latest_received_ms = group.latest_received_ms.max(tuple.received_ms);
            group.tuples += 1;
            // Batch order, as the script sums when it must sum again.
            group.average_sum_w += tuple.average_w;
            tags.push(index + 1);
        }
        let mut invocation = self.store_script.prepare_invoke();
        invocation
            .arg(KEY_PREFIX)
            .arg(RECENT_TUPLES_MAX)
            .arg(groups.len());
        for group in &groups {
            invocation
                .arg(group.first.state.name())
                .arg(&group.first.node_id)
                .arg(&group.first.edge_id)
                .arg(group.latest_received_ms)
                .arg(group.tuples)
                // Shortest round-trip form: Lua reads back the same f64.
                .arg(group.average_sum_w.to_string());
        }
        invocation.arg(tuples.len());
        for (tuple, tag) in tuples.iter().zip(tags) {
            // An integer argument is sent as its decimal digits, the
            // string the script looks the group up by.
            invocation
                .arg(&tuple.key)
                .arg(tuple.stored_value())
                .arg(tag);
        }
        // After the tuples, so that the group and tuple offsets stay fixed.
        invocation.arg(candidate_epoch.to_string());
        let mut connection = self.connection.clone();
        let (inserted, epoch, indexes, stored): (usize, String, Vec<usize>, Vec<Vec<u8>>) = self
            .call(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        assert!(
            inserted <= tuples.len(),
            "the script inserted more than it was given"
        );
        assert_eq!(indexes.len(), stored.len());
        let conflicts = indexes
            .into_iter()
            .zip(stored)
            .map(|(index, value)| {
                assert!(index < tuples.len(), "a conflict outside the batch");
                let stored = CloudTuple::from_stored_value(String::new(), &value)
                    .map(|tuple| (tuple.average_w, tuple.samples));
                StoredConflict { index, stored }
            })
            .collect();
        // One epoch for every bucket of this Redis (see the module doc).
        let epoch = self.parse_epoch(&epoch)?;
        Ok(CacheWrite {
            inserted,
            existing: tuples.len() - inserted,
            epochs: tuples
                .iter()
                .map(|tuple| (store_bucket(&tuple.node_id), epoch))
                .collect(),
            conflicts,
        })
    }

    async fn record_heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        let mut invocation = self.heartbeat_script.prepare_invoke();
        invocation
            .arg(KEY_PREFIX)
            .arg(edge_id)
            .arg(now_ms)
            .arg(instance.to_string())
            .arg(INSTANCE_LEASE.as_millis() as u64)
            .arg(candidate_epoch.to_string());
        let mut connection = self.connection.clone();
        let (epoch, refused): (String, u8) = self
            .call(async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let epoch = self.parse_epoch(&epoch)?;
        Ok(HeartbeatRecord {
            epochs: [epoch; STORE_BUCKETS],
            refused: refused == 1,
        })
    }

    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        // All the HMGETs, then all the SCARDs: each half converts as one list.
        let mut pipe = redis::pipe();
        for state in GermanState::ALL {
            pipe.cmd("HMGET")
                .arg(state_key(state))
                .arg("tuples")
                .arg("average_sum_w");
        }
        for state in GermanState::ALL {
            pipe.scard(format!("{}:households", state_key(state)));
        }
        let mut connection = self.connection.clone();
        let mut replies: Vec<redis::Value> = self
            .call(async move { pipe.query_async(&mut connection).await })
            .await?;
        let unexpected = |error: redis::ParsingError| {
            CacheError::Unavailable(format!("redis {}: unexpected totals: {error}", self.url))
        };
        let households = replies.split_off(GermanState::ALL.len());
        let sums: Vec<(Option<u64>, Option<String>)> =
            redis::from_redis_value(redis::Value::Array(replies)).map_err(unexpected)?;
        let households: Vec<u64> =
            redis::from_redis_value(redis::Value::Array(households)).map_err(unexpected)?;
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

    async fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, CacheError> {
        let limit = limit.min(RECENT_TUPLES_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let keys: Vec<String> = self
            .call(async move {
                connection
                    .lrange(RedisCache::key("recent"), 0, limit as isize - 1)
                    .await
            })
            .await?;
        // An empty pipeline is an error in the client: nothing to read.
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full_keys: Vec<String> = keys.iter().map(|key| RedisCache::key(key)).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<Vec<u8>>> = self
            .call(async move { connection.mget(full_keys).await })
            .await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| CloudTuple::from_stored_value(key, &value?))
            .collect())
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        let mut connection = self.connection.clone();
        let mut edge_ids: Vec<String> = self
            .call(async move { connection.smembers(RedisCache::key("edges")).await })
            .await?;
        edge_ids.sort();
        if edge_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for edge_id in &edge_ids {
            pipe.cmd("HMGET")
                .arg(edge_key(edge_id))
                .arg("last_heartbeat_ms")
                .arg("tuples")
                .arg("last_tuple_ms");
        }
        let mut connection = self.connection.clone();
        let rows: Vec<(Option<i64>, Option<u64>, Option<i64>)> = self
            .call(async move { pipe.query_async(&mut connection).await })
            .await?;
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
}

const _: () = assert!(RECENT_TUPLES_MAX > 0);
const _: () =
    assert!((TUPLE_ARGS + GROUP_ARGS) * edgemeter_wire::batch::BATCH_TUPLES_MAX + 5 < 1_000_000);

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
}
