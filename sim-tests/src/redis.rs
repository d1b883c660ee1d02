//! The `redis` host: the cloud's cache as its own simulated server, so that
//! it survives a cloud crash and can be lost on its own. It keeps tuples by
//! key with set-if-absent semantics and, for the tuples stored for the first
//! time, the per-state and per-edge totals, all applied atomically per
//! request, as the real Redis cache's script does. It is a model of that
//! script in Rust, with the same semantics: one epoch per store bucket
//! (`em:{em-bNN}:epoch`, each set from its own candidate,
//! `edgemeter_cloud::bucket_epoch_candidate`, when missing, in the same
//! step as the bucket's tuples), the instance lease of each edge id (in
//! the edge id's bucket), and a conflict for each resent tuple whose
//! average or sample count differs from the stored one, which is kept.
//!
//! The data is kept per bucket as a Redis Cluster keeps it per hash tag:
//! the tuples, the partial per-state and per-edge totals, the epoch, the
//! heartbeats and leases. Readers sum the buckets.
//!
//! Its data lives in a [`CacheWorld`] that the harness creates and reads.
//! A "cache loss" fault crashes the host and empties the data, every epoch
//! with it (Redis restarted without persistence), so the next write or
//! heartbeat sets new ones. A shard loss ([`CacheWorld::lose_buckets`])
//! empties only the buckets that shard holds, epochs included: the edges
//! then ship again exactly those buckets' tuples.

use crate::codec::{invalid, Reader, Writer};
use crate::net::{read_frame, write_frame};
use edgemeter_cloud::{
    bucket_epoch_candidate, CloudTuple, EdgeRecord, GermanState, HeartbeatRecord, StateTotals,
    INSTANCE_LEASE,
};
use edgemeter_wire::{store_bucket, PostalCode, STORE_BUCKETS};
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

/// One edge id's lease: the instance holding it and until when (ms).
pub type Lease = (u64, i64);

/// What Redis holds; lost whole on a cache loss, per bucket on a shard loss.
#[derive(Debug, Default)]
pub struct RedisData {
    /// Every tuple, in the order it was first stored (`recent_tuples`
    /// reads it backwards).
    pub tuples: Vec<CloudTuple>,
    /// Key -> index in `tuples`: a lookup per stored tuple, so hashed.
    index: FixedHashMap<String, usize>,
    /// Per bucket and state (by its index in `GermanState::ALL`): the
    /// households, tuples and sum of averages, as each hash tag keeps its
    /// partial totals.
    totals: BTreeMap<(u16, usize), (BTreeSet<String>, u64, f64)>,
    /// Per bucket and edge id: the edge's tuples in that bucket and,
    /// in the edge id's own bucket, its heartbeat time.
    edges: BTreeMap<(u16, String), EdgeRecord>,
    /// Each bucket's `em:{em-bNN}:epoch`: 0 while missing (a fresh or
    /// lost bucket).
    pub epochs: [u64; STORE_BUCKETS],
    /// Edge id -> its lease, kept in the edge id's bucket.
    leases: BTreeMap<String, Lease>,
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
    /// Each written bucket's epoch.
    pub epochs: BTreeMap<u16, u64>,
    pub conflicts: Vec<Conflict>,
}

impl CacheWorld {
    /// Redis restarted without persistence: the data and its epochs go.
    pub fn lose(&mut self) {
        self.data = RedisData::default();
        self.losses += 1;
    }

    /// A shard restarted empty: the buckets it holds lose their tuples,
    /// partial totals, epochs, heartbeats and leases; every other bucket
    /// keeps all it has. Counts as a cache loss.
    pub fn lose_buckets(&mut self, buckets: &BTreeSet<u16>) {
        assert!(buckets
            .iter()
            .all(|&bucket| usize::from(bucket) < STORE_BUCKETS));
        let data = &mut self.data;
        data.tuples
            .retain(|tuple| !buckets.contains(&store_bucket(&tuple.node_id)));
        data.index = data
            .tuples
            .iter()
            .enumerate()
            .map(|(at, tuple)| (tuple.key.clone(), at))
            .collect();
        data.totals
            .retain(|(bucket, _), _| !buckets.contains(bucket));
        data.edges
            .retain(|(bucket, _), _| !buckets.contains(bucket));
        data.leases
            .retain(|edge_id, _| !buckets.contains(&store_bucket(edge_id)));
        for &bucket in buckets {
            data.epochs[usize::from(bucket)] = 0;
        }
        self.losses += 1;
    }

    /// Every bucket's epoch as it stands (0 where none is set).
    pub fn epochs(&self) -> [u64; STORE_BUCKETS] {
        self.data.epochs
    }

    /// `SET em:{em-bNN}:epoch candidate NX`, then `GET` it.
    fn epoch(&mut self, bucket: u16, candidate_epoch: u64) -> u64 {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        let epoch = &mut self.data.epochs[usize::from(bucket)];
        if *epoch == 0 {
            *epoch = bucket_epoch_candidate(candidate_epoch, bucket);
        }
        *epoch
    }

    fn edge_record(&mut self, bucket: u16, edge_id: &str) -> &mut EdgeRecord {
        self.data
            .edges
            .entry((bucket, edge_id.to_owned()))
            .or_insert_with(|| EdgeRecord {
                edge_id: edge_id.to_owned(),
                last_heartbeat_ms: None,
                tuples: 0,
                last_tuple_ms: None,
            })
    }

    fn store(&mut self, tuples: Vec<CloudTuple>, candidate_epoch: u64) -> StoreResult {
        self.store_requests += 1;
        let mut epochs = BTreeMap::new();
        for tuple in &tuples {
            let bucket = store_bucket(&tuple.node_id);
            let epoch = self.epoch(bucket, candidate_epoch);
            epochs.insert(bucket, epoch);
        }
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
            let bucket = store_bucket(&tuple.node_id);
            let state = GermanState::ALL
                .iter()
                .position(|s| *s == tuple.state)
                .expect("a state");
            let totals = self.data.totals.entry((bucket, state)).or_default();
            totals.0.insert(tuple.node_id.clone());
            totals.1 += 1;
            totals.2 += tuple.average_w;
            let edge = self.edge_record(bucket, &tuple.edge_id);
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
            epochs,
            conflicts,
        }
    }

    /// Records the heartbeat in the edge id's bucket, applies the lease
    /// (instance 0: an older edge, never refused, the lease untouched) and
    /// sets and reads every bucket's epoch.
    fn heartbeat(
        &mut self,
        edge_id: String,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> HeartbeatRecord {
        let home = store_bucket(&edge_id);
        self.edge_record(home, &edge_id).last_heartbeat_ms = Some(now_ms);
        let mut refused = false;
        if instance != 0 {
            let lease_ms = INSTANCE_LEASE.as_millis() as i64;
            let held = self.data.leases.get(&edge_id).copied();
            refused =
                held.is_some_and(|(holder, until_ms)| holder != instance && until_ms > now_ms);
            if !refused {
                self.data
                    .leases
                    .insert(edge_id, (instance, now_ms.saturating_add(lease_ms)));
            }
        }
        let epochs = std::array::from_fn(|bucket| self.epoch(bucket as u16, candidate_epoch));
        HeartbeatRecord { epochs, refused }
    }

    /// The per-state totals, as `Cache::state_totals` reads them.
    pub fn state_totals(&self) -> Vec<StateTotals> {
        GermanState::ALL
            .iter()
            .enumerate()
            .map(|(index, state)| {
                let mut totals = StateTotals {
                    state: *state,
                    households: 0,
                    tuples: 0,
                    average_sum_w: 0.0,
                };
                // Bucket order, as a reader sums the hash tags; a household
                // is in one bucket, so the sets are disjoint.
                for bucket in 0..STORE_BUCKETS as u16 {
                    if let Some((households, tuples, sum)) = self.data.totals.get(&(bucket, index))
                    {
                        totals.households += households.len() as u64;
                        totals.tuples += tuples;
                        totals.average_sum_w += sum;
                    }
                }
                totals
            })
            .collect()
    }

    /// The per-edge records, as `Cache::edges` reads them.
    pub fn edges(&self) -> Vec<EdgeRecord> {
        let mut records: BTreeMap<&str, EdgeRecord> = BTreeMap::new();
        for ((_, edge_id), part) in &self.data.edges {
            let record = records.entry(edge_id).or_insert_with(|| EdgeRecord {
                edge_id: edge_id.clone(),
                last_heartbeat_ms: None,
                tuples: 0,
                last_tuple_ms: None,
            });
            record.tuples += part.tuples;
            record.last_tuple_ms = record.last_tuple_ms.max(part.last_tuple_ms);
            record.last_heartbeat_ms = record.last_heartbeat_ms.max(part.last_heartbeat_ms);
        }
        records.into_values().collect()
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
                for (index, average_w, samples) in &result.conflicts {
                    writer.u32(*index).f64(*average_w).u32(*samples);
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
                    .map(|_| Ok((reader.u32()?, reader.f64()?, reader.u32()?)))
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
            instance,
            now_ms,
            candidate_epoch,
        } => RedisReply::Heartbeat(world.heartbeat(edge_id, instance, now_ms, candidate_epoch)),
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
