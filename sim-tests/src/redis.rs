//! The `redis` host: the cloud's cache as its own simulated server, so that
//! it survives a cloud crash and can be lost on its own. It keeps tuples by
//! key with set-if-absent semantics and, for the tuples stored for the first
//! time, the per-state and per-edge totals, all applied atomically per
//! request, as the real Redis cache's script does. It is a model of that
//! script in Rust, with the same semantics: the store's epoch (`em:epoch`,
//! set from the cloud's candidate when missing, in the same step as the
//! tuples) and a conflict for each resent tuple whose average or sample
//! count differs from the stored one, which is kept.
//!
//! Its data lives in a [`CacheWorld`] that the harness creates and reads.
//! A "cache loss" fault crashes the host and empties the data, the epoch
//! with it (Redis restarted without persistence), so the next write or
//! heartbeat sets a new one.

use crate::codec::{invalid, Reader, Writer};
use crate::net::{read_frame, write_frame};
use edgemeter_cloud::{CloudTuple, EdgeRecord, GermanState, StateTotals};
use edgemeter_wire::PostalCode;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{debug, info};
use turmoil::net::{TcpListener, TcpStream};

pub const REDIS_HOST: &str = "redis";
pub const REDIS_PORT: u16 = 6379;

/// Connections served at once: the cloud's pool, plus stale ones until
/// [`REDIS_IDLE_MAX`] closes them.
pub const REDIS_CONNECTIONS_MAX: usize = 64;

/// A connection with no request for this long is closed.
pub const REDIS_IDLE_MAX: Duration = Duration::from_secs(30);

/// The most tuples `recent_tuples` returns.
pub const RECENT_TUPLES_MAX: usize = 1000;

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

/// What Redis holds; lost whole on a cache loss.
#[derive(Debug, Default)]
pub struct RedisData {
    /// Every tuple, in the order it was first stored (`recent_tuples`
    /// reads it backwards).
    pub tuples: Vec<CloudTuple>,
    /// Key -> index in `tuples`: a lookup per stored tuple, so hashed.
    index: FixedHashMap<String, usize>,
    totals: BTreeMap<usize, (BTreeSet<String>, u64, f64)>,
    edges: BTreeMap<String, EdgeRecord>,
    /// `em:epoch`: 0 while missing (a fresh or lost store).
    pub epoch: u64,
}

/// A conflicting resend: its index in the batch, and what is stored.
pub type Conflict = (u32, f64, u32);

/// The cache host's data, and counts the harness reads.
#[derive(Debug, Default)]
pub struct CacheWorld {
    pub data: RedisData,
    /// How many cache losses happened so far.
    pub losses: u32,
    pub store_requests: u64,
}

/// What one store request did.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreResult {
    pub inserted: u64,
    pub existing: u64,
    pub epoch: u64,
    pub conflicts: Vec<Conflict>,
}

impl CacheWorld {
    /// Redis restarted without persistence: the data and its epoch go.
    pub fn lose(&mut self) {
        self.data = RedisData::default();
        self.losses += 1;
    }

    /// `SET em:epoch candidate NX`, then `GET em:epoch`.
    fn epoch(&mut self, candidate_epoch: u64) -> u64 {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        if self.data.epoch == 0 {
            self.data.epoch = candidate_epoch;
        }
        self.data.epoch
    }

    fn store(&mut self, tuples: Vec<CloudTuple>, candidate_epoch: u64) -> StoreResult {
        self.store_requests += 1;
        let epoch = self.epoch(candidate_epoch);
        let (mut inserted, mut existing) = (0, 0);
        let mut conflicts = Vec::new();
        for (index, tuple) in tuples.into_iter().enumerate() {
            if let Some(&at) = self.data.index.get(&tuple.key) {
                existing += 1;
                let stored = &self.data.tuples[at];
                let values = (stored.average_w, stored.samples);
                if edgemeter_cloud::differs(values, &tuple) {
                    conflicts.push((index as u32, values.0, values.1));
                }
                continue;
            }
            inserted += 1;
            let state = GermanState::ALL
                .iter()
                .position(|s| *s == tuple.state)
                .expect("a state");
            let totals = self.data.totals.entry(state).or_default();
            totals.0.insert(tuple.node_id.clone());
            totals.1 += 1;
            totals.2 += tuple.average_w;
            let edge = self
                .data
                .edges
                .entry(tuple.edge_id.clone())
                .or_insert_with(|| EdgeRecord {
                    edge_id: tuple.edge_id.clone(),
                    last_heartbeat_ms: None,
                    tuples: 0,
                    last_tuple_ms: None,
                });
            edge.tuples += 1;
            edge.last_tuple_ms = edge.last_tuple_ms.max(Some(tuple.received_ms));
            self.data
                .index
                .insert(tuple.key.clone(), self.data.tuples.len());
            self.data.tuples.push(tuple);
        }
        StoreResult {
            inserted,
            existing,
            epoch,
            conflicts,
        }
    }

    fn heartbeat(&mut self, edge_id: String, now_ms: i64, candidate_epoch: u64) -> u64 {
        let edge = self
            .data
            .edges
            .entry(edge_id.clone())
            .or_insert_with(|| EdgeRecord {
                edge_id,
                last_heartbeat_ms: None,
                tuples: 0,
                last_tuple_ms: None,
            });
        edge.last_heartbeat_ms = Some(now_ms);
        self.epoch(candidate_epoch)
    }

    /// The per-state totals, as `Cache::state_totals` reads them.
    pub fn state_totals(&self) -> Vec<StateTotals> {
        GermanState::ALL
            .iter()
            .enumerate()
            .map(|(index, state)| {
                let (households, tuples, sum) =
                    self.data.totals.get(&index).cloned().unwrap_or_default();
                StateTotals {
                    state: *state,
                    households: households.len() as u64,
                    tuples,
                    average_sum_w: sum,
                }
            })
            .collect()
    }

    /// The per-edge records, as `Cache::edges` reads them.
    pub fn edges(&self) -> Vec<EdgeRecord> {
        self.data.edges.values().cloned().collect()
    }

    fn recent(&self, limit: usize) -> Vec<CloudTuple> {
        let limit = limit.min(RECENT_TUPLES_MAX);
        self.data.tuples.iter().rev().take(limit).cloned().collect()
    }
}

pub type SharedCache = Arc<Mutex<CacheWorld>>;

/// One request to the simulated Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisRequest {
    Store {
        tuples: Vec<CloudTuple>,
        candidate_epoch: u64,
    },
    Heartbeat {
        edge_id: String,
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
    /// The store's epoch, after a heartbeat.
    Epoch(u64),
    Totals(Vec<StateTotals>),
    Tuples(Vec<CloudTuple>),
    Edges(Vec<EdgeRecord>),
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
            } => {
                writer.u8(1).u64(*candidate_epoch).count(tuples.len());
                tuples
                    .iter()
                    .for_each(|tuple| put_tuple(&mut writer, tuple));
            }
            RedisRequest::Heartbeat {
                edge_id,
                now_ms,
                candidate_epoch,
            } => {
                writer.u8(2).str(edge_id).i64(*now_ms).u64(*candidate_epoch);
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
                let count = reader.count()?;
                RedisRequest::Store {
                    tuples: (0..count)
                        .map(|_| get_tuple(&mut reader))
                        .collect::<io::Result<_>>()?,
                    candidate_epoch,
                }
            }
            2 => RedisRequest::Heartbeat {
                edge_id: reader.string()?,
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
                    .u64(result.epoch)
                    .count(result.conflicts.len());
                for (index, average_w, samples) in &result.conflicts {
                    writer.u32(*index).f64(*average_w).u32(*samples);
                }
            }
            RedisReply::Epoch(epoch) => {
                writer.u8(2).u64(*epoch);
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
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> io::Result<RedisReply> {
        let mut reader = Reader::new(bytes);
        let reply = match reader.u8()? {
            1 => {
                let (inserted, existing, epoch) = (reader.u64()?, reader.u64()?, reader.u64()?);
                let count = reader.count()?;
                let conflicts = (0..count)
                    .map(|_| Ok((reader.u32()?, reader.f64()?, reader.u32()?)))
                    .collect::<io::Result<_>>()?;
                RedisReply::Stored(StoreResult {
                    inserted,
                    existing,
                    epoch,
                    conflicts,
                })
            }
            2 => RedisReply::Epoch(reader.u64()?),
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
            kind => return Err(invalid(format!("unknown redis reply {kind}"))),
        };
        reader.finish()?;
        Ok(reply)
    }
}

fn apply(world: &SharedCache, request: RedisRequest) -> RedisReply {
    let mut world = world.lock().expect("cache lock");
    match request {
        RedisRequest::Store {
            tuples,
            candidate_epoch,
        } => RedisReply::Stored(world.store(tuples, candidate_epoch)),
        RedisRequest::Heartbeat {
            edge_id,
            now_ms,
            candidate_epoch,
        } => RedisReply::Epoch(world.heartbeat(edge_id, now_ms, candidate_epoch)),
        RedisRequest::StateTotals => RedisReply::Totals(world.state_totals()),
        RedisRequest::Recent { limit } => RedisReply::Tuples(world.recent(limit as usize)),
        RedisRequest::Edges => RedisReply::Edges(world.edges()),
    }
}

/// The redis host's software.
pub async fn run_redis(world: SharedCache) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", REDIS_PORT)).await?;
    let losses = world.lock().expect("cache lock").losses;
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
