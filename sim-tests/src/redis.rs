//! The `redis` host: the cloud's cache as its own simulated server, so that
//! it survives a cloud crash and can be lost on its own. It runs the
//! production Lua scripts, the very text `RedisCache` sends
//! (`edgemeter_scripts::STORE_SCRIPT` and the others), in an embedded Lua
//! 5.1, the version Redis embeds, with `redis.call` and `redis.pcall`
//! bound to a simulated keyspace ([`crate::keyspace`]) and `cjson.decode`
//! as Redis's lua-cjson has it. Nothing here re-implements what the
//! scripts do: a slip in a script, in its totals or in the recent list, is
//! a slip of the simulation too.
//!
//! What stays outside the scripts is the host's own behaviour: its latency
//! (the simulated network), its losses, and its run id. A "cache loss"
//! ([`CacheWorld::lose`]) empties the keyspace (Redis restarted without
//! persistence) and gives every bucket a new run id; a shard loss
//! ([`CacheWorld::lose_buckets`]) empties only the keys of the buckets that
//! shard holds and renews only their run id. `INFO server` inside a
//! script answers the run id of the script's bucket, so the script's own
//! `bucket_epoch` renews the epoch of exactly the buckets whose server
//! lost its data, as a cluster's restarted primary does. A start of the
//! host is a new process and renews every run id too.
//!
//! A request is one `Cache` call, and the host answers it the way
//! `RedisCache` talks to Redis: a store is split by bucket and packed by
//! the same functions (`edgemeter_scripts::layout`), one script call per
//! bucket; a bucket whose script fails does not stop the others (they run
//! concurrently over `RedisCache`'s connection), and the request then
//! answers an error, so the cloud says "retry later". A failed script
//! leaves behind the writes it made before the failing command, as Redis
//! does (no rollback). The readers send the commands `RedisCache` sends
//! (HMGET and SCARD per state, SMEMBERS and HMGET per edge, LRANGE and
//! MGET for the recent tuples) and merge the buckets' answers as it does.
//!
//! The harness reads the same keyspace for the checker: every tuple key
//! (a scan the production readers never make), the totals and edges as
//! the readers read them, the household sets and the recent list.

use crate::codec::{invalid, Reader, Writer};
use crate::keyspace::{Keyspace, Reply, Value};
use crate::net::{read_frame, write_frame};
use edgemeter_cloud::{
    bucket_epoch_candidate, CloudTuple, EdgeRecord, GermanState, HeartbeatRecord, StateTotals,
    INSTANCE_LEASE,
};
use edgemeter_env::{Bug, PlantedBugs};
use edgemeter_scripts::layout::{
    heartbeat_keys, merge_recent, split_by_bucket, store_call, tuple_key_of, BucketKeys,
};
use edgemeter_wire::{PostalCode, STORE_BUCKETS};
use mlua::{Function, LightUserData, Lua, LuaOptions, MultiValue, StdLib, Value as LuaValue};
use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{debug, info};
use turmoil::net::{TcpListener, TcpStream};

pub use edgemeter_scripts::layout::RECENT_TUPLES_MAX;

pub const REDIS_HOST: &str = "redis";
pub const REDIS_PORT: u16 = 6379;

/// Connections served at once: the cloud's pool, plus stale ones until
/// [`REDIS_IDLE_MAX`] closes them.
pub const REDIS_CONNECTIONS_MAX: usize = 64;

/// A connection with no request for this long is closed.
pub const REDIS_IDLE_MAX: Duration = Duration::from_secs(30);

/// A tuple's identity across keys: edge, household, window. The planted
/// no-deduplication bug stores one identity under two keys; grouping by
/// identity is how the checker sees that.
pub type Identity = (String, String, Option<i64>);

pub fn identity_of(tuple: &CloudTuple) -> Identity {
    (
        tuple.edge_id.clone(),
        tuple.node_id.clone(),
        tuple.window_start_ms,
    )
}

/// A hash map with a fixed hasher (SipHash with zero keys): the same
/// layout in every run. Used for lookups only; nothing iterates it.
pub type FixedHashMap<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// Identity -> number of cache losses before its latest write. The checker
/// no longer excuses anything by it; kept for `edgemeter-chaos`, which
/// still gathers it from its run.
pub type WriteLog = FixedHashMap<Identity, u32>;

/// A conflicting resend: its index in the batch, and what is stored
/// (`None` when the stored value is not a tuple of ours).
pub type Conflict = (u32, Option<(f64, u32)>);

/// What one store request did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreResult {
    pub inserted: u64,
    pub existing: u64,
    /// Each written bucket's epoch.
    pub epochs: BTreeMap<u16, u64>,
    pub conflicts: Vec<Conflict>,
}

/// The three scripts, compiled once per server as Redis caches a loaded
/// script.
struct Scripts {
    store: Function,
    epoch: Function,
    heartbeat: Function,
}

/// What the Lua callbacks reach: the keyspace, and the run id of the
/// bucket whose script runs (what `INFO server` answers).
#[derive(Debug, Default)]
struct Server {
    keyspace: Keyspace,
    run_id: String,
}

/// The cache host's data (the keyspace and the Lua that runs the scripts
/// on it), and counts the harness reads.
pub struct CacheWorld {
    server: Rc<RefCell<Server>>,
    lua: Lua,
    scripts: Scripts,
    /// Per bucket, how often its server lost its data or restarted: the
    /// bucket's run id is made from it.
    generations: [u64; STORE_BUCKETS],
    /// How many cache losses happened so far.
    pub losses: u32,
    pub store_requests: u64,
}

impl std::fmt::Debug for CacheWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWorld")
            .field("losses", &self.losses)
            .field("store_requests", &self.store_requests)
            .finish_non_exhaustive()
    }
}

impl Default for CacheWorld {
    fn default() -> Self {
        CacheWorld::new(PlantedBugs::NONE)
    }
}

/// Redis's `%.17g` for a Lua number passed to `redis.call` (Redis 7.0's
/// conversion; integers, all the scripts pass, print as integers).
fn number_argument(number: f64) -> Vec<u8> {
    if number.fract() == 0.0 && number.abs() < 1e17 {
        return format!("{}", number as i64).into_bytes();
    }
    let text = format!("{number:.16e}");
    let (mantissa, exponent) = text.split_once('e').expect("an exponent");
    let exponent: i32 = exponent.parse().expect("a number");
    let digits = mantissa.trim_end_matches('0').trim_end_matches('.');
    if (-4..17).contains(&exponent) {
        format!("{}", number)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            .into_bytes()
    } else {
        format!(
            "{digits}e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        )
        .into_bytes()
    }
}

/// A Redis reply as `redis.call` hands it to Lua: integers as numbers,
/// bulk strings as strings, nil as false, a status as `{ok = ...}`, an
/// error (from `redis.pcall`) as `{err = ...}`, arrays as sequences.
fn reply_to_lua(lua: &Lua, reply: Reply) -> mlua::Result<LuaValue> {
    Ok(match reply {
        Reply::Integer(value) => LuaValue::Number(value as f64),
        Reply::Bulk(bytes) => LuaValue::String(lua.create_string(bytes)?),
        Reply::Nil => LuaValue::Boolean(false),
        Reply::Status(text) => {
            let table = lua.create_table()?;
            table.raw_set("ok", text)?;
            LuaValue::Table(table)
        }
        Reply::Error(text) => {
            let table = lua.create_table()?;
            table.raw_set("err", text)?;
            LuaValue::Table(table)
        }
        Reply::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (at, item) in items.into_iter().enumerate() {
                table.raw_set(at + 1, reply_to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
    })
}

/// A script's return value as Redis turns it into a reply: numbers are
/// truncated to integers, true is 1, false and nil are nil, a table with
/// `err` or `ok` is an error or a status, any other table is an array up
/// to its first nil.
fn lua_to_reply(value: LuaValue) -> Reply {
    match value {
        LuaValue::String(text) => Reply::Bulk(text.as_bytes().to_vec()),
        LuaValue::Integer(value) => Reply::Integer(value),
        LuaValue::Number(value) => Reply::Integer(value as i64),
        LuaValue::Boolean(true) => Reply::Integer(1),
        LuaValue::Table(table) => {
            if let Ok(LuaValue::String(text)) = table.raw_get::<LuaValue>("err") {
                return Reply::Error(text.to_string_lossy());
            }
            if let Ok(LuaValue::String(text)) = table.raw_get::<LuaValue>("ok") {
                return Reply::Status(text.to_string_lossy());
            }
            let mut items = Vec::new();
            for at in 1.. {
                match table.raw_get::<LuaValue>(at) {
                    Ok(LuaValue::Nil) | Err(_) => break,
                    Ok(item) => items.push(lua_to_reply(item)),
                }
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    }
}

/// `redis.call` (raising Redis's errors) or `redis.pcall` (returning them
/// as `{err = ...}`).
fn redis_call(
    lua: &Lua,
    server: &RefCell<Server>,
    args: MultiValue,
    protected: bool,
) -> mlua::Result<LuaValue> {
    if args.is_empty() {
        return Err(mlua::Error::RuntimeError(
            "Please specify at least one argument for this redis lib call".to_owned(),
        ));
    }
    let mut argv = Vec::with_capacity(args.len());
    for arg in args {
        argv.push(match arg {
            LuaValue::String(text) => text.as_bytes().to_vec(),
            LuaValue::Integer(value) => value.to_string().into_bytes(),
            LuaValue::Number(value) => number_argument(value),
            _ => {
                return Err(mlua::Error::RuntimeError(
                    "Lua redis lib command arguments must be strings or integers".to_owned(),
                ))
            }
        });
    }
    let reply = {
        let mut server = server.borrow_mut();
        let Server { keyspace, run_id } = &mut *server;
        keyspace.command(run_id, &argv)
    };
    match reply {
        Reply::Error(text) if !protected => Err(mlua::Error::RuntimeError(text)),
        reply => reply_to_lua(lua, reply),
    }
}

/// lua-cjson's null: a light userdata holding NULL.
fn json_null() -> LuaValue {
    LuaValue::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// A JSON value as lua-cjson decodes it: numbers are Lua numbers (doubles),
/// null is `cjson.null`, arrays are sequences, objects tables.
fn json_to_lua(lua: &Lua, value: serde_json::Value) -> mlua::Result<LuaValue> {
    use serde_json::Value as Json;
    Ok(match value {
        Json::Null => json_null(),
        Json::Bool(value) => LuaValue::Boolean(value),
        Json::Number(number) => LuaValue::Number(number.as_f64().unwrap_or(f64::NAN)),
        Json::String(text) => LuaValue::String(lua.create_string(text)?),
        Json::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (at, item) in items.into_iter().enumerate() {
                table.raw_set(at + 1, json_to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
        Json::Object(fields) => {
            let table = lua.create_table_with_capacity(0, fields.len())?;
            for (name, item) in fields {
                table.raw_set(name, json_to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
    })
}

/// The libraries Redis opens for scripts that mlua can give (base, table,
/// string, math), plus `redis` and `cjson` as the scripts use them.
fn scripting_lua(server: &Rc<RefCell<Server>>) -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )?;
    let redis = lua.create_table()?;
    for (name, protected) in [("call", false), ("pcall", true)] {
        let server = server.clone();
        redis.raw_set(
            name,
            lua.create_function(move |lua, args: MultiValue| {
                redis_call(lua, &server, args, protected)
            })?,
        )?;
    }
    lua.globals().raw_set("redis", redis)?;
    let cjson = lua.create_table()?;
    cjson.raw_set(
        "decode",
        lua.create_function(|lua, text: LuaValue| {
            let LuaValue::String(text) = text else {
                return Err(mlua::Error::RuntimeError(
                    "bad argument #1 to 'decode' (string expected)".to_owned(),
                ));
            };
            let parsed: serde_json::Value =
                serde_json::from_slice(&text.as_bytes()).map_err(|error| {
                    mlua::Error::RuntimeError(format!(
                        "Expected value but found invalid token: {error}"
                    ))
                })?;
            json_to_lua(lua, parsed)
        })?,
    )?;
    cjson.raw_set("null", json_null())?;
    lua.globals().raw_set("cjson", cjson)?;
    Ok(lua)
}

fn bucket_of_key(key: &[u8]) -> Option<u16> {
    let rest = key.strip_prefix(b"em:{em-b")?;
    let digits = rest.get(..2)?;
    (rest.get(2..4)? == b"}:")
        .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
        .flatten()
}

fn words(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|part| part.as_bytes().to_vec()).collect()
}

fn bulk_text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// redis-rs's `Option<u64>` (or `i64`) from a reply: nil is `None`, a bulk
/// must parse.
fn optional_number<T: std::str::FromStr>(reply: &Reply) -> Result<Option<T>, String> {
    match reply {
        Reply::Nil => Ok(None),
        Reply::Bulk(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("not a number: {:?}", String::from_utf8_lossy(bytes))),
        Reply::Integer(value) => value
            .to_string()
            .parse()
            .map(Some)
            .map_err(|_| "not a number".to_owned()),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

fn array(reply: Reply) -> Result<Vec<Reply>, String> {
    match reply {
        Reply::Array(items) => Ok(items),
        Reply::Error(text) => Err(text),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

impl CacheWorld {
    /// A fresh, empty server; `planted` chooses a planted variant of a
    /// script where one is switched on.
    pub fn new(planted: PlantedBugs) -> CacheWorld {
        let server = Rc::new(RefCell::new(Server::default()));
        let lua = scripting_lua(&server).expect("the scripting Lua starts");
        let store_text = if planted.has(Bug::LuaTotalsCountResends) {
            edgemeter_scripts::planted::store_script_counting_resends()
        } else {
            edgemeter_scripts::STORE_SCRIPT.to_owned()
        };
        let compile = |text: &str, name: &str| {
            lua.load(text)
                .set_name(format!("@user_script:{name}"))
                .into_function()
                .expect("the production scripts compile")
        };
        let scripts = Scripts {
            store: compile(&store_text, "store"),
            epoch: compile(edgemeter_scripts::EPOCH_SCRIPT, "epoch"),
            heartbeat: compile(edgemeter_scripts::HEARTBEAT_SCRIPT, "heartbeat"),
        };
        CacheWorld {
            server,
            lua,
            scripts,
            generations: [0; STORE_BUCKETS],
            losses: 0,
            store_requests: 0,
        }
    }

    /// The run id `INFO server` answers in `bucket`'s scripts: 40 hex
    /// digits, new whenever the bucket's server lost its data or started.
    pub fn run_id(&self, bucket: u16) -> String {
        format!("{bucket:02x}{:038x}", self.generations[usize::from(bucket)])
    }

    /// The server's clock (simulated ms), for expiry.
    pub fn set_now(&mut self, now_ms: u64) {
        self.server.borrow_mut().keyspace.set_now(now_ms);
    }

    /// The redis process started: every run id is new.
    pub fn started(&mut self) {
        for generation in &mut self.generations {
            *generation += 1;
        }
    }

    /// Redis restarted without persistence: the data and its epochs go,
    /// and the run id is new.
    pub fn lose(&mut self) {
        self.server.borrow_mut().keyspace.clear();
        self.started();
        self.losses += 1;
    }

    /// A shard restarted empty: the buckets it holds lose every key
    /// (tuples, partial totals, epochs, heartbeats, leases, recent lists)
    /// and get a new run id; every other bucket keeps all it has. Counts
    /// as a cache loss.
    pub fn lose_buckets(&mut self, buckets: &BTreeSet<u16>) {
        assert!(buckets
            .iter()
            .all(|&bucket| usize::from(bucket) < STORE_BUCKETS));
        self.server
            .borrow_mut()
            .keyspace
            .remove_where(|key| bucket_of_key(key).is_some_and(|bucket| buckets.contains(&bucket)));
        for &bucket in buckets {
            self.generations[usize::from(bucket)] += 1;
        }
        self.losses += 1;
    }

    /// One command outside any script, as a client sends it (the
    /// contract's fixture plants and reads keys with it).
    pub fn command(&mut self, args: &[&str]) -> Reply {
        let mut server = self.server.borrow_mut();
        server.keyspace.command("", &words(args))
    }

    fn read(&self, args: &[&str]) -> Reply {
        self.server.borrow_mut().keyspace.command("", &words(args))
    }

    /// Runs `script` for `bucket` with KEYS and ARGV as given: Redis's
    /// EVALSHA. An error a command raised, or the script's own, is the
    /// reply; the writes before it stay.
    fn eval(&self, script: &Function, bucket: u16, keys: &[String], args: &[String]) -> Reply {
        self.server.borrow_mut().run_id = self.run_id(bucket);
        let run = || -> mlua::Result<LuaValue> {
            let globals = self.lua.globals();
            globals.raw_set(
                "KEYS",
                self.lua
                    .create_sequence_from(keys.iter().map(String::as_str))?,
            )?;
            globals.raw_set(
                "ARGV",
                self.lua
                    .create_sequence_from(args.iter().map(String::as_str))?,
            )?;
            script.call::<LuaValue>(())
        };
        match run() {
            Ok(value) => lua_to_reply(value),
            Err(error) => Reply::Error(format!("ERR Error running script: {error}")),
        }
    }

    /// Stores a batch as `RedisCache::store` does: one store script call
    /// per bucket, all of them run; any failure fails the request.
    pub fn store(
        &mut self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
        stamp: u64,
    ) -> Result<StoreResult, String> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        self.store_requests += 1;
        let mut result = StoreResult::default();
        let mut failure = None;
        for (bucket, indexes) in split_by_bucket(tuples) {
            let call = store_call(bucket, tuples, indexes, candidate_epoch, stamp);
            let reply = self.eval(&self.scripts.store, bucket, &call.keys, &call.args);
            match parse_store_reply(reply) {
                Ok((inserted, epoch, conflicts)) => {
                    assert!(
                        inserted <= call.indexes.len(),
                        "the script inserted more than it was given"
                    );
                    result.inserted += inserted as u64;
                    result.epochs.insert(bucket, parse_epoch(&epoch)?);
                    for (index, value) in conflicts {
                        let index = *call
                            .indexes
                            .get(index)
                            .ok_or("a conflict outside the call")?;
                        let stored = CloudTuple::from_stored_value(String::new(), &value)
                            .map(|tuple| (tuple.average_w, tuple.samples));
                        result.conflicts.push((index as u32, stored));
                    }
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        result.existing = tuples.len() as u64 - result.inserted;
        result.conflicts.sort_by_key(|conflict| conflict.0);
        Ok(result)
    }

    /// `RedisCache::bucket_epoch`: the epoch script for one bucket.
    fn bucket_epoch(&self, bucket: u16, candidate_epoch: u64) -> Result<u64, String> {
        let keys = [BucketKeys::new(bucket).epoch()];
        let args = [bucket_epoch_candidate(candidate_epoch, bucket).to_string()];
        let reply = self.eval(&self.scripts.epoch, bucket, &keys, &args);
        match &reply {
            Reply::Error(text) => Err(text.clone()),
            reply => parse_epoch(&bulk_text(reply).ok_or("the epoch is not a string")?),
        }
    }

    /// `RedisCache::heartbeat`: the heartbeat script in the edge id's
    /// bucket, then the epoch script in every other; a failure of another
    /// bucket reads 0 there.
    pub fn heartbeat(
        &mut self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, String> {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        let (lease_bucket, keys) = heartbeat_keys(edge_id);
        let args = [
            bucket_epoch_candidate(candidate_epoch, lease_bucket).to_string(),
            edge_id.to_owned(),
            now_ms.to_string(),
            instance.to_string(),
            (INSTANCE_LEASE.as_millis() as u64).to_string(),
        ];
        let reply = self.eval(&self.scripts.heartbeat, lease_bucket, &keys, &args);
        let parts = array(reply)?;
        let (Some(epoch), Some(Reply::Integer(refused))) =
            (parts.first().and_then(bulk_text), parts.get(1))
        else {
            return Err(format!("unexpected heartbeat reply {parts:?}"));
        };
        let mut epochs = [0; STORE_BUCKETS];
        epochs[usize::from(lease_bucket)] = parse_epoch(&epoch)?;
        for bucket in (0..STORE_BUCKETS as u16).filter(|bucket| *bucket != lease_bucket) {
            if let Ok(epoch) = self.bucket_epoch(bucket, candidate_epoch) {
                epochs[usize::from(bucket)] = epoch;
            }
        }
        Ok(HeartbeatRecord {
            epochs,
            refused: *refused != 0,
        })
    }

    /// Every bucket's epoch as it stands: 0 where none is set, or where it
    /// was set under another run id (the next write or heartbeat renews
    /// it). Read without a script, so it changes nothing.
    pub fn epochs(&self) -> [u64; STORE_BUCKETS] {
        std::array::from_fn(|bucket| {
            let bucket = bucket as u16;
            let held = bulk_text(&self.read(&["GET", &BucketKeys::new(bucket).epoch()]));
            held.and_then(|held| {
                let (epoch, run) = held.split_once(':')?;
                (run == self.run_id(bucket)).then(|| epoch.parse().ok())?
            })
            .unwrap_or(0)
        })
    }

    /// The per-state totals, as `RedisCache::state_totals` reads them: per
    /// bucket an HMGET and an SCARD per state, summed in bucket order.
    pub fn state_totals(&self) -> Result<Vec<StateTotals>, String> {
        let mut totals: Vec<StateTotals> = GermanState::ALL
            .into_iter()
            .map(|state| StateTotals {
                state,
                households: 0,
                tuples: 0,
                average_sum_w: 0.0,
            })
            .collect();
        for keys in BucketKeys::all() {
            // The whole bucket's pipeline first, as one pipeline fails whole.
            let mut parts = Vec::with_capacity(GermanState::ALL.len());
            for state in GermanState::ALL {
                let sums =
                    array(self.read(&["HMGET", &keys.state(state), "tuples", "average_sum_w"]))?;
                let households = match self.read(&["SCARD", &keys.state_households(state)]) {
                    Reply::Integer(count) => count as u64,
                    Reply::Error(text) => return Err(text),
                    other => return Err(format!("unexpected reply {other:?}")),
                };
                let tuples: Option<u64> = optional_number(&sums[0])?;
                let sum = bulk_text(&sums[1]).and_then(|text| text.parse::<f64>().ok());
                parts.push((households, tuples.unwrap_or(0), sum.unwrap_or(0.0)));
            }
            for (total, (households, tuples, sum)) in totals.iter_mut().zip(parts) {
                total.households += households;
                total.tuples += tuples;
                total.average_sum_w += sum;
            }
        }
        Ok(totals)
    }

    /// The per-edge records, as `RedisCache::edges` reads them.
    pub fn edges(&self) -> Result<Vec<EdgeRecord>, String> {
        let mut records: BTreeMap<String, EdgeRecord> = BTreeMap::new();
        for keys in BucketKeys::all() {
            let ids: Vec<String> = array(self.read(&["SMEMBERS", &keys.edges()]))?
                .iter()
                .filter_map(bulk_text)
                .collect();
            for edge_id in ids {
                let row = array(self.read(&[
                    "HMGET",
                    &keys.edge(&edge_id),
                    "last_heartbeat_ms",
                    "tuples",
                    "last_tuple_ms",
                ]))?;
                let last_heartbeat_ms: Option<i64> = optional_number(&row[0])?;
                let tuples: Option<u64> = optional_number(&row[1])?;
                let last_tuple_ms: Option<i64> = optional_number(&row[2])?;
                let record = records
                    .entry(edge_id.clone())
                    .or_insert_with(|| EdgeRecord {
                        edge_id,
                        last_heartbeat_ms: None,
                        tuples: 0,
                        last_tuple_ms: None,
                    });
                record.tuples += tuples.unwrap_or(0);
                record.last_heartbeat_ms = record.last_heartbeat_ms.max(last_heartbeat_ms);
                record.last_tuple_ms = record.last_tuple_ms.max(last_tuple_ms);
            }
        }
        Ok(records.into_values().collect())
    }

    /// The newest `limit` tuples, as `RedisCache::recent_tuples` reads
    /// them: each bucket's list head, merged by stamp and index, then the
    /// values by MGET; entries whose tuple is gone or not ours are skipped.
    pub fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, String> {
        let limit = limit.min(RECENT_TUPLES_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = (limit - 1).to_string();
        let mut lists = Vec::with_capacity(STORE_BUCKETS);
        for keys in BucketKeys::all() {
            let list = array(self.read(&["LRANGE", &keys.recent(), "0", &stop]))?;
            lists.push((keys.bucket(), list.iter().filter_map(bulk_text).collect()));
        }
        let merged = merge_recent(lists, limit);
        let mut per_bucket: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (bucket, entry) in &merged {
            per_bucket
                .entry(*bucket)
                .or_default()
                .push(entry.redis_key.clone());
        }
        let mut values: BTreeMap<u16, std::vec::IntoIter<Reply>> = BTreeMap::new();
        for (bucket, keys) in per_bucket {
            let mut command = vec!["MGET"];
            command.extend(keys.iter().map(String::as_str));
            values.insert(bucket, array(self.read(&command))?.into_iter());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(bucket, entry)| {
                let Reply::Bulk(value) = values.get_mut(&bucket)?.next()? else {
                    return None;
                };
                let tuple_key = tuple_key_of(&entry.redis_key)?;
                CloudTuple::from_stored_value(tuple_key.to_owned(), &value)
            })
            .collect())
    }

    /// Every tuple the keyspace holds, in key order: a scan for the
    /// checker, which no production reader makes.
    pub fn held_tuples(&self) -> Vec<CloudTuple> {
        let server = self.server.borrow();
        server
            .keyspace
            .iter()
            .filter_map(|(key, value)| {
                let tuple_key = tuple_key_of(std::str::from_utf8(key).ok()?)?;
                let Value::String(bytes) = value else {
                    return None;
                };
                CloudTuple::from_stored_value(tuple_key.to_owned(), bytes)
            })
            .collect()
    }

    /// Per state, the households its sets hold, with the bucket of each
    /// set they are in (a household in two buckets' sets is there twice).
    pub fn household_sets(&self) -> BTreeMap<GermanState, Vec<(u16, String)>> {
        let mut sets: BTreeMap<GermanState, Vec<(u16, String)>> = BTreeMap::new();
        for keys in BucketKeys::all() {
            for state in GermanState::ALL {
                if let Reply::Array(members) =
                    self.read(&["SMEMBERS", &keys.state_households(state)])
                {
                    sets.entry(state).or_default().extend(
                        members
                            .iter()
                            .filter_map(bulk_text)
                            .map(|id| (keys.bucket(), id)),
                    );
                }
            }
        }
        sets
    }
}

/// A store call's answer: inserted, the bucket's epoch, and per conflict
/// its call-local index and the stored value.
type StoreReply = (usize, String, Vec<(usize, Vec<u8>)>);

/// The store script's reply: inserted, epoch, conflict indexes, values.
fn parse_store_reply(reply: Reply) -> Result<StoreReply, String> {
    let mut parts = array(reply)?.into_iter();
    let (
        Some(Reply::Integer(inserted)),
        Some(epoch),
        Some(Reply::Array(indexes)),
        Some(Reply::Array(values)),
    ) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("unexpected store reply".to_owned());
    };
    let epoch = bulk_text(&epoch).ok_or("the epoch is not a string")?;
    if indexes.len() != values.len() {
        return Err("conflict indexes and values differ in number".to_owned());
    }
    let conflicts = indexes
        .into_iter()
        .zip(values)
        .map(|(index, value)| match (index, value) {
            (Reply::Integer(index), Reply::Bulk(value)) if index >= 0 => {
                Ok((index as usize, value))
            }
            (Reply::Integer(index), Reply::Nil) if index >= 0 => Ok((index as usize, Vec::new())),
            other => Err(format!("unexpected conflict {other:?}")),
        })
        .collect::<Result<_, String>>()?;
    Ok((inserted as usize, epoch, conflicts))
}

/// An epoch as the scripts return it: a non-zero u64 in decimal.
fn parse_epoch(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(epoch) if epoch != 0 => Ok(epoch),
        _ => Err(format!("{text:?} is not an epoch")),
    }
}

pub type SharedCache = Rc<RefCell<CacheWorld>>;

/// One request to the simulated Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisRequest {
    Store {
        tuples: Vec<CloudTuple>,
        candidate_epoch: u64,
        /// The store call's recent-list stamp, made by the client as
        /// `RedisCache` makes it (see `SimCache`).
        stamp: u64,
    },
    Heartbeat {
        edge_id: String,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    },
    StateTotals,
    Recent {
        limit: u32,
    },
    Edges,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RedisReply {
    Stored(StoreResult),
    /// Every bucket's epoch and the lease's verdict, after a heartbeat.
    Heartbeat(HeartbeatRecord),
    Totals(Vec<StateTotals>),
    Tuples(Vec<CloudTuple>),
    Edges(Vec<EdgeRecord>),
    /// Redis answered an error (a script that failed, a key of the wrong
    /// type): the client reports the cache unavailable, as `RedisCache`
    /// does.
    Error(String),
}

fn put_tuple(writer: &mut Writer, tuple: &CloudTuple) {
    writer
        .str(&tuple.key)
        .str(&tuple.edge_id)
        .str(&tuple.node_id)
        .u8(u8::from(tuple.window_start_ms.is_some()))
        .i64(tuple.window_start_ms.unwrap_or(0))
        .f64(tuple.average_w)
        .u32(tuple.samples)
        .str(tuple.postal_code.as_str())
        .str(tuple.state.name())
        .i64(tuple.received_ms);
}

fn get_tuple(reader: &mut Reader<'_>) -> io::Result<CloudTuple> {
    let key = reader.string()?;
    let edge_id = reader.string()?;
    let node_id = reader.string()?;
    let has_window = reader.u8()? == 1;
    let window = reader.i64()?;
    let average_w = reader.f64()?;
    let samples = reader.u32()?;
    let postal_code = PostalCode::parse(&reader.string()?).ok_or_else(|| invalid("postal code"))?;
    let state = GermanState::from_name(&reader.string()?).ok_or_else(|| invalid("state"))?;
    Ok(CloudTuple {
        key,
        edge_id,
        node_id,
        window_start_ms: has_window.then_some(window),
        average_w,
        samples,
        postal_code,
        state,
        received_ms: reader.i64()?,
    })
}

fn put_option(writer: &mut Writer, value: Option<i64>) {
    writer.u8(u8::from(value.is_some())).i64(value.unwrap_or(0));
}

fn get_option(reader: &mut Reader<'_>) -> io::Result<Option<i64>> {
    let present = reader.u8()? == 1;
    let value = reader.i64()?;
    Ok(present.then_some(value))
}

impl RedisRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        match self {
            RedisRequest::Store {
                tuples,
                candidate_epoch,
                stamp,
            } => {
                writer
                    .u8(1)
                    .u64(*candidate_epoch)
                    .u64(*stamp)
                    .count(tuples.len());
                tuples
                    .iter()
                    .for_each(|tuple| put_tuple(&mut writer, tuple));
            }
            RedisRequest::Heartbeat {
                edge_id,
                instance,
                now_ms,
                candidate_epoch,
            } => {
                writer
                    .u8(2)
                    .str(edge_id)
                    .u64(*instance)
                    .i64(*now_ms)
                    .u64(*candidate_epoch);
            }
            RedisRequest::StateTotals => {
                writer.u8(3);
            }
            RedisRequest::Recent { limit } => {
                writer.u8(4).u32(*limit);
            }
            RedisRequest::Edges => {
                writer.u8(5);
            }
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> io::Result<RedisRequest> {
        let mut reader = Reader::new(bytes);
        let request = match reader.u8()? {
            1 => {
                let candidate_epoch = reader.u64()?;
                let stamp = reader.u64()?;
                let count = reader.count()?;
                RedisRequest::Store {
                    tuples: (0..count)
                        .map(|_| get_tuple(&mut reader))
                        .collect::<io::Result<_>>()?,
                    candidate_epoch,
                    stamp,
                }
            }
            2 => RedisRequest::Heartbeat {
                edge_id: reader.string()?,
                instance: reader.u64()?,
                now_ms: reader.i64()?,
                candidate_epoch: reader.u64()?,
            },
            3 => RedisRequest::StateTotals,
            4 => RedisRequest::Recent {
                limit: reader.u32()?,
            },
            5 => RedisRequest::Edges,
            kind => return Err(invalid(format!("unknown redis request {kind}"))),
        };
        reader.finish()?;
        Ok(request)
    }
}

impl RedisReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        match self {
            RedisReply::Stored(result) => {
                writer
                    .u8(1)
                    .u64(result.inserted)
                    .u64(result.existing)
                    .count(result.epochs.len());
                for (&bucket, &epoch) in &result.epochs {
                    writer.u32(u32::from(bucket)).u64(epoch);
                }
                writer.count(result.conflicts.len());
                for (index, stored) in &result.conflicts {
                    let (average_w, samples) = stored.unwrap_or((0.0, 0));
                    writer
                        .u32(*index)
                        .u8(u8::from(stored.is_some()))
                        .f64(average_w)
                        .u32(samples);
                }
            }
            RedisReply::Heartbeat(record) => {
                writer.u8(2).u8(u8::from(record.refused));
                for epoch in record.epochs {
                    writer.u64(epoch);
                }
            }
            RedisReply::Totals(totals) => {
                writer.u8(3).count(totals.len());
                for total in totals {
                    writer
                        .str(total.state.name())
                        .u64(total.households)
                        .u64(total.tuples)
                        .f64(total.average_sum_w);
                }
            }
            RedisReply::Tuples(tuples) => {
                writer.u8(4).count(tuples.len());
                tuples
                    .iter()
                    .for_each(|tuple| put_tuple(&mut writer, tuple));
            }
            RedisReply::Edges(edges) => {
                writer.u8(5).count(edges.len());
                for edge in edges {
                    writer.str(&edge.edge_id);
                    put_option(&mut writer, edge.last_heartbeat_ms);
                    writer.u64(edge.tuples);
                    put_option(&mut writer, edge.last_tuple_ms);
                }
            }
            RedisReply::Error(text) => {
                writer.u8(6).str(text);
            }
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> io::Result<RedisReply> {
        let mut reader = Reader::new(bytes);
        let reply = match reader.u8()? {
            1 => {
                let (inserted, existing) = (reader.u64()?, reader.u64()?);
                let buckets = reader.count()?;
                let mut epochs = BTreeMap::new();
                for _ in 0..buckets {
                    let bucket = u16::try_from(reader.u32()?).map_err(|_| invalid("bucket"))?;
                    epochs.insert(bucket, reader.u64()?);
                }
                let count = reader.count()?;
                let conflicts = (0..count)
                    .map(|_| {
                        let index = reader.u32()?;
                        let present = reader.u8()? == 1;
                        let stored = (reader.f64()?, reader.u32()?);
                        Ok((index, present.then_some(stored)))
                    })
                    .collect::<io::Result<_>>()?;
                RedisReply::Stored(StoreResult {
                    inserted,
                    existing,
                    epochs,
                    conflicts,
                })
            }
            2 => {
                let refused = reader.u8()? == 1;
                let mut epochs = [0; STORE_BUCKETS];
                for epoch in &mut epochs {
                    *epoch = reader.u64()?;
                }
                RedisReply::Heartbeat(HeartbeatRecord { epochs, refused })
            }
            3 => {
                let count = reader.count()?;
                let totals = (0..count)
                    .map(|_| {
                        Ok(StateTotals {
                            state: GermanState::from_name(&reader.string()?)
                                .ok_or_else(|| invalid("state"))?,
                            households: reader.u64()?,
                            tuples: reader.u64()?,
                            average_sum_w: reader.f64()?,
                        })
                    })
                    .collect::<io::Result<_>>()?;
                RedisReply::Totals(totals)
            }
            4 => {
                let count = reader.count()?;
                RedisReply::Tuples(
                    (0..count)
                        .map(|_| get_tuple(&mut reader))
                        .collect::<io::Result<_>>()?,
                )
            }
            5 => {
                let count = reader.count()?;
                let edges = (0..count)
                    .map(|_| {
                        Ok(EdgeRecord {
                            edge_id: reader.string()?,
                            last_heartbeat_ms: get_option(&mut reader)?,
                            tuples: reader.u64()?,
                            last_tuple_ms: get_option(&mut reader)?,
                        })
                    })
                    .collect::<io::Result<_>>()?;
                RedisReply::Edges(edges)
            }
            6 => RedisReply::Error(reader.string()?),
            kind => return Err(invalid(format!("unknown redis reply {kind}"))),
        };
        reader.finish()?;
        Ok(reply)
    }
}

fn apply(world: &SharedCache, request: RedisRequest) -> RedisReply {
    let mut world = world.borrow_mut();
    let now_ms = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
    world.set_now(now_ms);
    let reply = match request {
        RedisRequest::Store {
            tuples,
            candidate_epoch,
            stamp,
        } => world
            .store(&tuples, candidate_epoch, stamp)
            .map(RedisReply::Stored),
        RedisRequest::Heartbeat {
            edge_id,
            instance,
            now_ms,
            candidate_epoch,
        } => world
            .heartbeat(&edge_id, instance, now_ms, candidate_epoch)
            .map(RedisReply::Heartbeat),
        RedisRequest::StateTotals => world.state_totals().map(RedisReply::Totals),
        RedisRequest::Recent { limit } => {
            world.recent_tuples(limit as usize).map(RedisReply::Tuples)
        }
        RedisRequest::Edges => world.edges().map(RedisReply::Edges),
    };
    reply.unwrap_or_else(RedisReply::Error)
}

/// The redis host's software: a new process each start (new run ids).
pub async fn run_redis(world: SharedCache) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", REDIS_PORT)).await?;
    let losses = {
        let mut world = world.borrow_mut();
        world.started();
        world.losses
    };
    info!(losses, "redis started");
    let slots = Arc::new(Semaphore::new(REDIS_CONNECTIONS_MAX));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (stream, peer) = listener.accept().await?;
        let world = world.clone();
        tokio::task::spawn_local(async move {
            if let Err(error) = serve_connection(&world, stream).await {
                debug!(%peer, %error, "redis connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(world: &SharedCache, mut stream: TcpStream) -> io::Result<()> {
    loop {
        let frame = match tokio::time::timeout(REDIS_IDLE_MAX, read_frame(&mut stream)).await {
            Ok(frame) => frame?,
            Err(_) => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        let request = RedisRequest::decode(&frame)?;
        let reply = apply(world, request);
        write_frame(&mut stream, &reply.encode()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_cloud::{postal_code_for, state_of};
    use edgemeter_wire::store_bucket;

    fn tuple(node_id: &str, window: i64) -> CloudTuple {
        let postal_code = postal_code_for(node_id);
        CloudTuple {
            key: format!("tuple:edge-1:{node_id}:{window}"),
            edge_id: "edge-1".into(),
            node_id: node_id.into(),
            window_start_ms: Some(window),
            average_w: 2.5,
            samples: 3,
            postal_code,
            state: state_of(postal_code).unwrap(),
            received_ms: window,
        }
    }

    /// Households covering at least two buckets, by bucket.
    fn households() -> BTreeMap<u16, Vec<String>> {
        let mut by_bucket: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for index in 0..40 {
            let node_id = format!("h{index}");
            by_bucket
                .entry(store_bucket(&node_id))
                .or_default()
                .push(node_id);
        }
        assert!(by_bucket.len() > 2);
        by_bucket
    }

    /// Goal: a shard loss empties exactly the lost buckets: their tuples,
    /// partial totals and epochs go, every other bucket keeps all it has,
    /// the epoch included, and the totals still add up to what is held; a
    /// write to a lost bucket sets a new epoch there only. Method: the
    /// scripts through the host's calls, then its readers against the held
    /// tuples.
    #[test]
    fn a_shard_loss_empties_exactly_its_buckets() {
        let mut world = CacheWorld::default();
        world.started();
        let by_bucket = households();
        let tuples: Vec<CloudTuple> = by_bucket
            .values()
            .flatten()
            .flat_map(|node_id| [tuple(node_id, 0), tuple(node_id, 5_000)])
            .collect();
        let stored = world.store(&tuples, 7, 1).unwrap();
        assert_eq!(stored.inserted as usize, tuples.len());
        assert_eq!(stored.epochs.len(), by_bucket.len());
        let before = world.epochs();
        let lost: BTreeSet<u16> = by_bucket.keys().copied().step_by(2).collect();
        world.lose_buckets(&lost);
        assert_eq!(world.losses, 1);
        let kept = |tuple: &CloudTuple| !lost.contains(&store_bucket(&tuple.node_id));
        let held: Vec<&CloudTuple> = tuples.iter().filter(|tuple| kept(tuple)).collect();
        assert_eq!(world.held_tuples().len(), held.len());
        assert!(world.held_tuples().iter().all(kept));
        let after = world.epochs();
        for bucket in 0..STORE_BUCKETS {
            let gone = lost.contains(&(bucket as u16));
            assert_eq!(after[bucket] == 0, gone || before[bucket] == 0, "{bucket}");
            if !gone {
                assert_eq!(after[bucket], before[bucket]);
            }
        }
        let totals = world.state_totals().unwrap();
        assert_eq!(
            totals.iter().map(|t| t.tuples).sum::<u64>(),
            held.len() as u64
        );
        assert_eq!(world.edges().unwrap()[0].tuples, held.len() as u64);
        assert_eq!(
            world.recent_tuples(RECENT_TUPLES_MAX).unwrap().len(),
            held.len()
        );
        let again = world.store(&tuples, 9, 2).unwrap();
        assert_eq!(again.inserted as usize, tuples.len() - held.len());
        for (bucket, epoch) in &again.epochs {
            if lost.contains(bucket) {
                assert_eq!(*epoch, bucket_epoch_candidate(9, *bucket));
            } else {
                assert_eq!(*epoch, before[usize::from(*bucket)]);
            }
        }
    }

    /// Goal: the lease is the script's: the holder renews, another instance
    /// is refused until the lease runs out by the server's clock, an older
    /// edge is never refused, and a shard loss of the edge id's bucket
    /// drops the lease; every heartbeat names all 16 epochs.
    #[test]
    fn the_lease_admits_one_instance_and_goes_with_its_bucket() {
        let mut world = CacheWorld::default();
        world.started();
        let lease_ms = INSTANCE_LEASE.as_millis() as u64;
        let beat = |world: &mut CacheWorld, instance, now_ms: u64| {
            world.set_now(now_ms);
            world
                .heartbeat("edge-1", instance, now_ms as i64, 3)
                .unwrap()
        };
        let first = beat(&mut world, 1, 0);
        assert!(!first.refused && !first.epochs.contains(&0));
        assert!(beat(&mut world, 2, 10).refused);
        assert!(!beat(&mut world, 0, 20).refused);
        assert!(!beat(&mut world, 1, 1_000).refused);
        assert!(beat(&mut world, 2, 1_000 + lease_ms - 1).refused);
        assert!(!beat(&mut world, 2, 1_000 + lease_ms).refused);
        assert!(beat(&mut world, 1, 1_000 + lease_ms + 1).refused);
        world.lose_buckets(&BTreeSet::from([store_bucket("edge-1")]));
        assert!(
            !beat(&mut world, 1, 1_000 + lease_ms + 2).refused,
            "the lease went with the shard"
        );
    }

    /// Goal: a new run id (a restart, here without losing the data) renews
    /// every epoch at the next heartbeat, as the script's `bucket_epoch`
    /// says, while the tuples stay.
    #[test]
    fn a_restart_renews_the_epochs() {
        let mut world = CacheWorld::default();
        world.started();
        let first = world.heartbeat("edge-1", 1, 0, 3).unwrap();
        assert_eq!(
            world.heartbeat("edge-1", 1, 0, 5).unwrap().epochs,
            first.epochs
        );
        world.started();
        assert!(
            world.epochs().iter().all(|epoch| *epoch == 0),
            "stale until renewed"
        );
        let renewed = world.heartbeat("edge-1", 1, 0, 5).unwrap();
        for bucket in 0..STORE_BUCKETS as u16 {
            assert_eq!(
                renewed.epochs[usize::from(bucket)],
                bucket_epoch_candidate(5, bucket)
            );
        }
    }

    /// Goal: the planted variant is the script the planted bug selects, and
    /// it counts a resent tuple in the totals when its group also holds a
    /// new one; the production script does not.
    #[test]
    fn the_planted_store_script_counts_resends() {
        let node = "h1";
        let counted = |planted| {
            let mut world = CacheWorld::new(planted);
            world.started();
            world.store(&[tuple(node, 0)], 7, 1).unwrap();
            world
                .store(&[tuple(node, 0), tuple(node, 5_000)], 7, 2)
                .unwrap();
            let totals = world.state_totals().unwrap();
            (
                totals.iter().map(|t| t.tuples).sum::<u64>(),
                totals.iter().map(|t| t.average_sum_w).sum::<f64>(),
            )
        };
        assert_eq!(counted(PlantedBugs::NONE), (2, 5.0));
        assert_eq!(
            counted(PlantedBugs::NONE.with(Bug::LuaTotalsCountResends)),
            (3, 7.5)
        );
    }

    /// Goal: a script that fails midway keeps the writes it made before the
    /// failing command, as Redis does, and the request is an error.
    /// Method: a string planted at the bucket's state hash; the store
    /// inserts the tuple, then fails at HINCRBY.
    #[test]
    fn a_failed_script_keeps_its_earlier_writes() {
        let mut world = CacheWorld::default();
        world.started();
        let held = tuple("h1", 0);
        let keys = BucketKeys::new(store_bucket("h1"));
        world.command(&["SET", &keys.state(held.state), "not a hash"]);
        let failed = world.store(std::slice::from_ref(&held), 7, 1);
        assert!(failed.unwrap_err().contains("WRONGTYPE"));
        assert_eq!(world.held_tuples(), vec![held.clone()]);
        assert_ne!(
            world.epochs()[usize::from(keys.bucket())],
            0,
            "the epoch was set first"
        );
        assert_eq!(world.command(&["LLEN", &keys.recent()]), Reply::Integer(0));
        world.command(&["DEL", &keys.state(held.state)]);
        let again = world.store(&[held], 7, 2).unwrap();
        assert_eq!((again.inserted, again.existing), (0, 1));
        assert!(world.state_totals().unwrap().iter().all(|t| t.tuples == 0));
    }

    /// Goal: the requests and replies that carry bucket epochs, leases and
    /// errors round-trip through the model's codec.
    #[test]
    fn heartbeat_and_store_messages_round_trip() {
        let request = RedisRequest::Heartbeat {
            edge_id: "e".into(),
            instance: u64::MAX,
            now_ms: -1,
            candidate_epoch: 5,
        };
        assert_eq!(RedisRequest::decode(&request.encode()).unwrap(), request);
        let store = RedisRequest::Store {
            tuples: vec![tuple("h1", 0)],
            candidate_epoch: 5,
            stamp: 77,
        };
        assert_eq!(RedisRequest::decode(&store.encode()).unwrap(), store);
        let mut epochs = [0; STORE_BUCKETS];
        epochs[3] = 9;
        let reply = RedisReply::Heartbeat(HeartbeatRecord {
            epochs,
            refused: true,
        });
        assert_eq!(RedisReply::decode(&reply.encode()).unwrap(), reply);
        let stored = RedisReply::Stored(StoreResult {
            inserted: 1,
            existing: 2,
            epochs: BTreeMap::from([(0, 4), (15, u64::MAX)]),
            conflicts: vec![(1, Some((2.5, 3))), (2, None)],
        });
        assert_eq!(RedisReply::decode(&stored.encode()).unwrap(), stored);
        let error = RedisReply::Error("WRONGTYPE".into());
        assert_eq!(RedisReply::decode(&error.encode()).unwrap(), error);
    }
}
