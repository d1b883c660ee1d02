//! The cloud service: turns request bytes into reply bytes. The NNG servers
//! (deployment) and the turmoil servers (simulation) only move bytes; every
//! decision is here.
//!
//! For a batch, the tuples are written to the cache first and the reply
//! comes after the write succeeded, never before: a crash in between leaves
//! the edge without a reply, so it sends again, and the keyed write makes
//! that harmless. If the cache is down the reply says "retry later" and the
//! edge keeps its tuples.

use crate::cache::{Cache, CloudTuple};
use crate::heartbeats::HeartbeatTracker;
use crate::postal::{postal_code_at, postal_code_for, state_of};
use edgemeter_env::{Bug, CrashPoint, CrashPoints, PlantedBugs, WallClock};
use edgemeter_wire::batch::REQUEST_MAGIC;
use edgemeter_wire::heartbeat::HEARTBEAT_REPLY;
use edgemeter_wire::sealed::{is_sealed_request, open_request, seal_reply, OpenedRequest};
use edgemeter_wire::{
    legacy, Ack, BatchReply, BatchRequest, DataRequest, EdgeKey, HeartbeatRequest,
    LegacyDataRequest, PostalCode, ReplyOutcome,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};
use tracing::{debug, warn};

/// The edge id under which the original's requests are stored.
pub const LEGACY_EDGE_ID: &str = "legacy";

/// How late the planted `reply-before-cache-write` bug writes, after its
/// reply: long enough for a crash to land in between.
const PLANTED_WRITE_DELAY: Duration = Duration::from_millis(200);

/// How long a heartbeat waits to be recorded in the cache before it is
/// answered anyway: a slow cache must not make the cloud look dead.
const HEARTBEAT_RECORD_TIMEOUT: Duration = Duration::from_millis(200);

/// Who may talk to the cloud.
#[derive(Debug, Clone)]
pub struct CloudAuth {
    /// Each edge's secret key, by edge id.
    pub keys: BTreeMap<String, EdgeKey>,
    /// Whether requests without an authentication envelope are served: the
    /// original's wire form, and edges without a key.
    pub allow_unauthenticated: bool,
    /// How far a sealed request's time may be from the cloud's clock.
    pub window: Duration,
}

impl CloudAuth {
    /// Serves everyone: for tests and the in-process demo. The `cloud`
    /// command requires keys unless its operator allows the original form.
    pub fn open() -> CloudAuth {
        CloudAuth {
            keys: BTreeMap::new(),
            allow_unauthenticated: true,
            window: Duration::from_secs(120),
        }
    }

    pub fn with_key(mut self, edge_id: &str, key: EdgeKey) -> CloudAuth {
        self.keys.insert(edge_id.to_owned(), key);
        self
    }
}

#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Silence after which an edge's heartbeats count as stopped.
    pub heartbeat_timeout: Duration,
    pub planted: PlantedBugs,
    pub crash_points: CrashPoints,
    /// Seeds the only randomness the cloud has: the planted random-code bug.
    pub rng_seed: u64,
    pub auth: CloudAuth,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            heartbeat_timeout: Duration::from_secs(5),
            planted: PlantedBugs::NONE,
            crash_points: CrashPoints::none(),
            rng_seed: 0,
            auth: CloudAuth::open(),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    heartbeats: AtomicU64,
    tuples_stored: AtomicU64,
    tuples_repeated: AtomicU64,
    malformed: AtomicU64,
    cache_errors: AtomicU64,
    unauthenticated: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloudCounters {
    pub requests: u64,
    pub heartbeats: u64,
    pub tuples_stored: u64,
    pub tuples_repeated: u64,
    pub malformed: u64,
    pub cache_errors: u64,
    /// Requests refused for a missing or failed authentication.
    pub unauthenticated: u64,
}

pub struct Cloud<C, W> {
    config: CloudConfig,
    cache: Arc<C>,
    clock: W,
    heartbeats: Mutex<HeartbeatTracker>,
    rng: Mutex<StdRng>,
    counters: Counters,
}

/// The cache key of a tuple: its identity, so a resend lands on the same key
/// and two edges or households never collide (the original keyed by the
/// edge's row id alone).
pub fn tuple_key(edge_id: &str, node_id: &str, window: &str) -> String {
    format!("tuple:{edge_id}:{node_id}:{window}")
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl<C: Cache, W: WallClock> Cloud<C, W> {
    pub fn new(config: CloudConfig, cache: C, clock: W) -> Cloud<C, W> {
        Cloud {
            heartbeats: Mutex::new(HeartbeatTracker::new(config.heartbeat_timeout)),
            rng: Mutex::new(StdRng::seed_from_u64(config.rng_seed)),
            config,
            cache: Arc::new(cache),
            clock,
            counters: Counters::default(),
        }
    }

    pub fn cache(&self) -> &Arc<C> {
        &self.cache
    }

    pub fn counters(&self) -> CloudCounters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CloudCounters {
            requests: load(&self.counters.requests),
            heartbeats: load(&self.counters.heartbeats),
            tuples_stored: load(&self.counters.tuples_stored),
            tuples_repeated: load(&self.counters.tuples_repeated),
            malformed: load(&self.counters.malformed),
            cache_errors: load(&self.counters.cache_errors),
            unauthenticated: load(&self.counters.unauthenticated),
        }
    }

    /// Each known edge and whether its heartbeats are current.
    pub fn edge_liveness(&self) -> Vec<(String, bool)> {
        self.heartbeats.lock().expect("heartbeat lock").liveness()
    }

    fn postal_code(&self, node_id: &str) -> PostalCode {
        if self.config.planted.has(Bug::RandomPostalCode) {
            let index = self.rng.lock().expect("rng lock").gen_range(0..usize::MAX);
            return postal_code_at(index);
        }
        postal_code_for(node_id)
    }

    fn cloud_tuple(
        &self,
        edge_id: &str,
        node_id: &str,
        window: Option<i64>,
        key: String,
        average_w: f64,
        samples: u32,
    ) -> CloudTuple {
        let postal_code = self.postal_code(node_id);
        CloudTuple {
            key,
            edge_id: edge_id.to_owned(),
            node_id: node_id.to_owned(),
            window_start_ms: window,
            average_w,
            samples,
            postal_code,
            state: state_of(postal_code).expect("codes come from the table"),
            received_ms: self.clock.now_ms(),
        }
    }

    /// Checks a request's authentication. `Ok(None)`: an unsealed request
    /// that may be served; `Ok(Some)`: a sealed one that checked out; `Err`:
    /// the refusal to send back.
    fn authenticate(&self, request: &[u8]) -> Result<Option<(OpenedRequest, EdgeKey)>, Vec<u8>> {
        let auth = &self.config.auth;
        if !is_sealed_request(request) {
            if auth.allow_unauthenticated {
                return Ok(None);
            }
            return Err(self.refuse("request is not authenticated; this cloud requires edge keys"));
        }
        let mut key = None;
        let opened = open_request(
            request,
            |edge_id| {
                key = auth.keys.get(edge_id).cloned();
                key.clone()
            },
            self.clock.now_ms(),
            auth.window.as_millis() as i64,
        );
        match opened {
            Ok(opened) => Ok(Some((opened, key.expect("a key opened it")))),
            Err(error) => Err(self.refuse(&error.to_string())),
        }
    }

    fn refuse(&self, reason: &str) -> Vec<u8> {
        bump(&self.counters.unauthenticated, 1);
        warn!(%reason, "request refused before reaching the cache");
        legacy::error_reply(&format!("unauthenticated: {reason}"))
    }

    /// Answers one request on the data socket: sealed or not, in either
    /// wire form.
    pub async fn handle_data(&self, request: &[u8]) -> Vec<u8> {
        bump(&self.counters.requests, 1);
        match self.authenticate(request) {
            Ok(None) => self.handle_data_body(request, None).await,
            Ok(Some((opened, key))) => {
                let reply = self
                    .handle_data_body(&opened.body, Some(&opened.edge_id))
                    .await;
                seal_reply(&key, &opened.tag, &reply)
            }
            Err(refusal) => refusal,
        }
    }

    async fn handle_data_body(&self, request: &[u8], sealed_by: Option<&str>) -> Vec<u8> {
        match DataRequest::decode(request) {
            Ok(DataRequest::Batch(batch)) => {
                if sealed_by.is_some_and(|edge_id| edge_id != batch.edge_id) {
                    let reason = "batch names another edge than its key";
                    return BatchReply {
                        request_id: batch.request_id,
                        outcome: ReplyOutcome::Rejected(reason.into()),
                    }
                    .encode();
                }
                self.store_batch(batch).await
            }
            Ok(DataRequest::Legacy(legacy)) => self.store_legacy(legacy).await,
            Err(error) => {
                bump(&self.counters.malformed, 1);
                warn!(%error, bytes = request.len(), "malformed data request answered with an error");
                if request.starts_with(&REQUEST_MAGIC[..3]) {
                    BatchReply {
                        request_id: 0,
                        outcome: ReplyOutcome::Rejected(error.to_string()),
                    }
                    .encode()
                } else {
                    legacy::error_reply(&error.to_string())
                }
            }
        }
    }

    async fn store_batch(&self, batch: BatchRequest) -> Vec<u8> {
        let no_dedup = self.config.planted.has(Bug::NoDeduplication);
        let tuples: Vec<CloudTuple> = batch
            .tuples
            .iter()
            .map(|tuple| {
                let mut key = tuple_key(
                    &batch.edge_id,
                    &tuple.node_id,
                    &tuple.window_start_ms.to_string(),
                );
                if no_dedup {
                    key.push_str(&format!(":{}", batch.request_id));
                }
                self.cloud_tuple(
                    &batch.edge_id,
                    &tuple.node_id,
                    Some(tuple.window_start_ms),
                    key,
                    tuple.average_w,
                    tuple.samples,
                )
            })
            .collect();
        let acks: Vec<Ack> = batch
            .tuples
            .iter()
            .zip(&tuples)
            .map(|(tuple, stored)| Ack {
                tuple_id: tuple.tuple_id,
                postal_code: stored.postal_code,
            })
            .collect();
        let reply = |outcome| {
            BatchReply {
                request_id: batch.request_id,
                outcome,
            }
            .encode()
        };
        match self.write(tuples).await {
            Ok(()) => {
                debug!(edge = %batch.edge_id, request_id = batch.request_id, tuples = acks.len(), "batch stored");
                reply(ReplyOutcome::Stored(acks))
            }
            Err(reason) => reply(ReplyOutcome::RetryLater(reason)),
        }
    }

    async fn store_legacy(&self, request: LegacyDataRequest) -> Vec<u8> {
        let key = tuple_key(
            LEGACY_EDGE_ID,
            &request.node_id,
            &format!("id{}", request.id),
        );
        let tuple = self.cloud_tuple(
            LEGACY_EDGE_ID,
            &request.node_id,
            None,
            key,
            request.average,
            1,
        );
        let postal_code = tuple.postal_code;
        match self.write(vec![tuple]).await {
            Ok(()) => request.reply(postal_code),
            Err(reason) => legacy::error_reply(&reason),
        }
    }

    /// Writes tuples to the cache; `Err` carries the reason for the reply.
    async fn write(&self, tuples: Vec<CloudTuple>) -> Result<(), String> {
        if self.config.planted.has(Bug::ReplyBeforeCacheWrite) {
            let cache = self.cache.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PLANTED_WRITE_DELAY).await;
                let _ = cache.store(&tuples).await;
            });
            return Ok(());
        }
        match self.cache.store(&tuples).await {
            Ok(write) => {
                bump(&self.counters.tuples_stored, write.inserted as u64);
                bump(&self.counters.tuples_repeated, write.existing as u64);
                self.config
                    .crash_points
                    .reached(CrashPoint::CloudAfterCacheWrite)
                    .await;
                Ok(())
            }
            Err(error) => {
                bump(&self.counters.cache_errors, 1);
                warn!(%error, "cache write failed; the edge will retry");
                Err(error.to_string())
            }
        }
    }

    /// Answers one request on the heartbeat socket.
    pub async fn handle_heartbeat(&self, request: &[u8]) -> Vec<u8> {
        match self.authenticate(request) {
            Ok(None) => self.handle_heartbeat_body(request, None).await,
            Ok(Some((opened, key))) => {
                let reply = self
                    .handle_heartbeat_body(&opened.body, Some(&opened.edge_id))
                    .await;
                seal_reply(&key, &opened.tag, &reply)
            }
            Err(refusal) => refusal,
        }
    }

    async fn handle_heartbeat_body(&self, request: &[u8], sealed_by: Option<&str>) -> Vec<u8> {
        let edge_id = match HeartbeatRequest::decode(request) {
            Ok(HeartbeatRequest::Legacy) => LEGACY_EDGE_ID.to_owned(),
            Ok(HeartbeatRequest::Edge { edge_id }) => edge_id,
            Err(error) => {
                bump(&self.counters.malformed, 1);
                warn!(%error, "malformed heartbeat answered with an error");
                return legacy::error_reply(&error.to_string());
            }
        };
        if sealed_by.is_some_and(|sealer| sealer != edge_id) {
            return self.refuse("heartbeat names another edge than its key");
        }
        bump(&self.counters.heartbeats, 1);
        self.heartbeats
            .lock()
            .expect("heartbeat lock")
            .seen(&edge_id, Instant::now());
        // The heartbeat says the cloud process is alive; a cache outage shows
        // in data replies instead, so its error does not fail the heartbeat.
        let record = self.cache.record_heartbeat(&edge_id, self.clock.now_ms());
        match tokio::time::timeout(HEARTBEAT_RECORD_TIMEOUT, record).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => debug!(%error, "heartbeat not recorded in the cache"),
            Err(_) => debug!("heartbeat not recorded in the cache in time"),
        }
        HEARTBEAT_REPLY.to_vec()
    }

    /// Logs edges whose heartbeats stop and return, until `shutdown`.
    pub async fn watch_heartbeats(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let period = self.config.heartbeat_timeout / 4;
        let mut ticks = tokio::time::interval(period.max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {
                    self.heartbeats.lock().expect("heartbeat lock").check(Instant::now());
                }
            }
        }
    }
}
