//! The cloud service: turns request bytes into reply bytes. The NNG servers
//! (deployment) and the turmoil servers (simulation) only move bytes; every
//! decision is here.
//!
//! For a batch, the tuples are written to the cache first and the reply
//! comes after the write succeeded, never before: a crash in between leaves
//! the edge without a reply, so it sends again, and the keyed write makes
//! that harmless. If the cache is down the reply says "retry later" and the
//! edge keeps its tuples.
//!
//! The store has one epoch per bucket ([`edgemeter_wire::bucket`]), drawn
//! here as a candidate and kept by the cache only where a bucket has none:
//! a bucket that lost its data answers with a new epoch, and the edges ship
//! what they acknowledged under the old one again. Every version is
//! answered:
//! - heartbeat version 4 and batch version 3 name each bucket's epoch (all
//!   16 in the heartbeat, the ones the batch touched in the batch reply),
//!   or refuse the edge process when another instance holds the edge id's
//!   lease (`Cache::record_heartbeat` decides, in the shared store, so
//!   every cloud node agrees);
//! - heartbeat versions 2 and 3 and batch version 2, whose edges know one
//!   epoch, get the digest of the 16 ([`epochs_digest`]): such an edge
//!   ships again all it holds when any bucket changes. Correct, only wider.
//!
//! For that digest the service keeps the bucket epochs it last heard of
//! (`known_epochs`), from every heartbeat and write; a batch reply's digest
//! uses the write's own epochs for the buckets it wrote. A stale epoch of
//! another bucket only makes the digest differ from the next heartbeat's,
//! which ships more again, never less.
//!
//! A version-3 batch from an instance whose last heartbeat here was
//! refused is refused too, from that memory: no extra store round trip.
//! The edge stops shipping while refused anyway; this is the second guard.
//!
//! A resent tuple whose average or sample count differs from the stored
//! one is a conflict: counted, logged with both values, answered as such,
//! and never stored over.
//!
//! An edge with a key is served only through requests sealed with that
//! key, whatever `allow_unauthenticated` says: the switch admits edges
//! without keys and the original's form, never a request in a keyed edge's
//! name.
//!
//! The edges' keys can be replaced while the cloud serves
//! ([`Cloud::replace_keys`]): the binary reads a new keys file on SIGHUP and
//! hands the map over; no file is read here. A request is checked against
//! one map from start to end, the one in force when it arrived.

use crate::cache::{bucket_epoch_candidate, Cache, CacheWrite, CloudTuple, HeartbeatRecord};
use crate::heartbeats::{EdgeView, HeartbeatTracker, EDGES_MAX};
use crate::postal::{postal_code_at, postal_code_for, state_of};
use edgemeter_env::{Bug, CrashPoint, CrashPoints, PlantedBugs, WallClock};
use edgemeter_wire::batch::REQUEST_MAGIC;
use edgemeter_wire::bucket::epochs_digest;
use edgemeter_wire::heartbeat::HEARTBEAT_REPLY;
use edgemeter_wire::sealed::{is_sealed_request, open_request, seal_reply, OpenedRequest};
use edgemeter_wire::AuthError;
use edgemeter_wire::{
    legacy, store_bucket, Ack, BatchReply, BatchRequest, BucketHeartbeatReply, DataRequest,
    EdgeKey, HeartbeatReply, HeartbeatRequest, LegacyDataRequest, PostalCode, ReplyOutcome,
    TupleAck, TupleOutcome, WireVersion, STORE_BUCKETS,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

/// Each edge's secret key, by edge id.
pub type EdgeKeys = BTreeMap<String, EdgeKey>;

/// Who may talk to the cloud.
#[derive(Debug, Clone)]
pub struct CloudAuth {
    /// Each edge's secret key, by edge id: the keys the cloud starts with;
    /// [`Cloud::replace_keys`] swaps them later.
    pub keys: EdgeKeys,
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
    /// Seeds the cloud's randomness: the candidates for the cache's epoch
    /// (and the planted random-code bug). Deployments pass OS randomness,
    /// so that a restarted cloud never draws its predecessor's candidates;
    /// the simulation passes one derived from its seed.
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

/// Why the cloud refused a request, as `edgemeter_cloud_requests_refused_total`
/// labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Not sealed, and the cloud requires edge keys.
    Unsealed,
    /// Not sealed, in the name of an edge that has a key (mixed mode).
    KeyedEdgeUnsealed,
    /// Sealed in the name of an edge the cloud has no key for.
    UnknownEdge,
    /// The seal's tag does not match: forged, corrupted or a wrong key.
    BadTag,
    /// The seal's time is outside the window around the cloud's clock.
    OutsideWindow,
    /// The sealed envelope itself does not decode.
    MalformedSeal,
    /// Sealed with one edge's key, naming another edge.
    EdgeMismatch,
    /// Not a request the cloud understands.
    Malformed,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 8] = [
        RefusalReason::Unsealed,
        RefusalReason::KeyedEdgeUnsealed,
        RefusalReason::UnknownEdge,
        RefusalReason::BadTag,
        RefusalReason::OutsideWindow,
        RefusalReason::MalformedSeal,
        RefusalReason::EdgeMismatch,
        RefusalReason::Malformed,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            RefusalReason::Unsealed => "unsealed",
            RefusalReason::KeyedEdgeUnsealed => "keyed_edge_unsealed",
            RefusalReason::UnknownEdge => "unknown_edge",
            RefusalReason::BadTag => "bad_tag",
            RefusalReason::OutsideWindow => "outside_window",
            RefusalReason::MalformedSeal => "malformed_seal",
            RefusalReason::EdgeMismatch => "edge_mismatch",
            RefusalReason::Malformed => "malformed",
        }
    }

    fn of(error: &AuthError) -> RefusalReason {
        match error {
            AuthError::Malformed(_) => RefusalReason::MalformedSeal,
            AuthError::UnknownEdge(_) => RefusalReason::UnknownEdge,
            AuthError::BadTag => RefusalReason::BadTag,
            AuthError::OutsideWindow { .. } => RefusalReason::OutsideWindow,
        }
    }

    fn index(self) -> usize {
        RefusalReason::ALL
            .iter()
            .position(|reason| *reason == self)
            .expect("every reason is in ALL")
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
    conflicts: AtomicU64,
    /// By [`RefusalReason::ALL`] order.
    refused: [AtomicU64; 8],
    /// Heartbeats and batches refused because another instance holds the
    /// edge id.
    instances_refused: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloudCounters {
    pub requests: u64,
    pub heartbeats: u64,
    pub tuples_stored: u64,
    pub tuples_repeated: u64,
    pub malformed: u64,
    pub cache_errors: u64,
    /// Requests refused for a missing or failed authentication, or unsealed
    /// in the name of an edge that has a key.
    pub unauthenticated: u64,
    /// Resent tuples whose average or samples differ from the stored ones.
    pub conflicts: u64,
    /// Requests refused, by [`RefusalReason::ALL`] order: the auth
    /// refusals counted in `unauthenticated`, malformed requests and
    /// batches naming another edge than their key.
    pub refused: [u64; 8],
    /// Heartbeats and batches refused because another live instance holds
    /// the edge id's lease.
    pub instances_refused: u64,
}

impl CloudCounters {
    /// Requests refused for `reason`.
    pub fn refused_for(&self, reason: RefusalReason) -> u64 {
        self.refused[reason.index()]
    }
}

pub struct Cloud<C, W> {
    /// The settings; `config.auth.keys` is emptied at construction, the
    /// keys in force are in `keys`.
    config: CloudConfig,
    /// The edges' keys in force. Behind a lock so that a reload swaps them
    /// while requests are served; an `Arc` so that a request holds the lock
    /// only to clone the pointer, never while it checks a tag.
    keys: RwLock<Arc<EdgeKeys>>,
    cache: Arc<C>,
    clock: W,
    heartbeats: Mutex<HeartbeatTracker>,
    rng: Mutex<StdRng>,
    counters: Counters,
    /// Each bucket's epoch as the cache last named it here, 0 until it
    /// did: for the digest older edges get, and the planted early reply.
    known_epochs: Mutex<[u64; STORE_BUCKETS]>,
    /// Per edge id, the instance whose last heartbeat here was refused:
    /// its version-3 batches are refused without asking the store. An
    /// accepted heartbeat of that instance clears it. At most
    /// [`EDGES_MAX`] entries; past that, batches go unguarded (the edge
    /// stops shipping on its own heartbeat's refusal).
    refused_instances: Mutex<BTreeMap<String, u64>>,
    /// Sweeps of the heartbeat watcher done: it advances only while the
    /// watcher's loop runs and gets the lock every heartbeat handler takes,
    /// so a supervisor (systemd's watchdog) can tell a live cloud from a
    /// wedged one.
    heartbeat_sweeps: AtomicU64,
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
    pub fn new(mut config: CloudConfig, cache: C, clock: W) -> Cloud<C, W> {
        let keys = std::mem::take(&mut config.auth.keys);
        Cloud {
            keys: RwLock::new(Arc::new(keys)),
            heartbeats: Mutex::new(HeartbeatTracker::new(config.heartbeat_timeout)),
            rng: Mutex::new(StdRng::seed_from_u64(config.rng_seed)),
            config,
            cache: Arc::new(cache),
            clock,
            counters: Counters::default(),
            known_epochs: Mutex::new([0; STORE_BUCKETS]),
            refused_instances: Mutex::new(BTreeMap::new()),
            heartbeat_sweeps: AtomicU64::new(0),
        }
    }

    pub fn cache(&self) -> &Arc<C> {
        &self.cache
    }

    /// The edges' keys in force.
    pub fn keys(&self) -> Arc<EdgeKeys> {
        self.keys.read().expect("keys lock").clone()
    }

    /// Replaces every edge's key at once: requests that arrive from now on
    /// are checked against `keys` only, so an edge left out is refused and
    /// a replaced key stops working. Returns how many edges had keys
    /// before.
    pub fn replace_keys(&self, keys: EdgeKeys) -> usize {
        let mut slot = self.keys.write().expect("keys lock");
        let before = slot.len();
        *slot = Arc::new(keys);
        before
    }

    /// How many sweeps [`Cloud::watch_heartbeats`] has done.
    pub fn heartbeat_sweeps(&self) -> u64 {
        self.heartbeat_sweeps.load(Ordering::Relaxed)
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
            conflicts: load(&self.counters.conflicts),
            refused: std::array::from_fn(|index| load(&self.counters.refused[index])),
            instances_refused: load(&self.counters.instances_refused),
        }
    }

    fn count_refusal(&self, reason: RefusalReason) {
        bump(&self.counters.refused[reason.index()], 1);
    }

    /// A candidate for the cache's epoch: random, never 0 (the wire's
    /// "unknown").
    fn candidate_epoch(&self) -> u64 {
        let mut rng = self.rng.lock().expect("rng lock");
        loop {
            let candidate: u64 = rng.gen();
            if candidate != 0 {
                return candidate;
            }
        }
    }

    /// Refuses an unsealed request in the name of an edge that has a key:
    /// `allow_unauthenticated` serves edges without keys, never a keyed
    /// one's name (mixed mode is not a back door). `Some` is the refusal.
    fn refuse_unsealed_for_keyed(&self, edge_id: &str, sealed_by: Option<&str>) -> Option<Vec<u8>> {
        let keyed = sealed_by.is_none() && self.keys().contains_key(edge_id);
        if !keyed || self.config.planted.has(Bug::UnsealedAcceptedForKeyedEdge) {
            return None;
        }
        Some(self.refuse(
            RefusalReason::KeyedEdgeUnsealed,
            &format!("edge {edge_id} has a key; its requests must be sealed with it"),
        ))
    }

    /// Each known edge and whether its heartbeats are current.
    pub fn edge_liveness(&self) -> Vec<(String, bool)> {
        self.heartbeats.lock().expect("heartbeat lock").liveness()
    }

    /// Each known edge, whether its heartbeats are current, and the
    /// backlog it last reported.
    pub fn edge_views(&self) -> Vec<EdgeView> {
        self.heartbeats.lock().expect("heartbeat lock").views()
    }

    /// How many edges' heartbeats are current.
    pub fn edges_connected(&self) -> usize {
        self.heartbeats
            .lock()
            .expect("heartbeat lock")
            .alive_count()
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
        let keys = self.keys();
        if !is_sealed_request(request) {
            if auth.allow_unauthenticated {
                return Ok(None);
            }
            return Err(self.refuse(
                RefusalReason::Unsealed,
                "request is not authenticated; this cloud requires edge keys",
            ));
        }
        let mut key = None;
        let now_ms = self.clock.now_ms();
        let window_ms = auth.window.as_millis() as i64;
        let one_side = self.config.planted.has(Bug::AuthWindowOneSide);
        let opened = open_request(
            request,
            |edge_id| {
                key = keys.get(edge_id).cloned();
                key.clone()
            },
            now_ms,
            // The planted slip opens with no window and then checks the
            // signed skew itself, below.
            if one_side { i64::MAX } else { window_ms },
        );
        let opened = match opened {
            Ok(opened) if one_side && opened.sent_ms.saturating_sub(now_ms) > window_ms => {
                Err(AuthError::OutsideWindow {
                    skew_ms: opened.sent_ms.saturating_sub(now_ms),
                })
            }
            other => other,
        };
        match opened {
            Ok(opened) => Ok(Some((opened, key.expect("a key opened it")))),
            Err(error) => Err(self.refuse(RefusalReason::of(&error), &error.to_string())),
        }
    }

    fn refuse(&self, why: RefusalReason, reason: &str) -> Vec<u8> {
        bump(&self.counters.unauthenticated, 1);
        self.count_refusal(why);
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
                if let Some(refusal) = self.refuse_unsealed_for_keyed(&batch.edge_id, sealed_by) {
                    return refusal;
                }
                if sealed_by.is_some_and(|edge_id| edge_id != batch.edge_id) {
                    self.count_refusal(RefusalReason::EdgeMismatch);
                    let reason = "batch names another edge than its key";
                    return BatchReply {
                        version: batch.version,
                        request_id: batch.request_id,
                        outcome: ReplyOutcome::Rejected(reason.into()),
                    }
                    .encode();
                }
                self.store_batch(batch).await
            }
            Ok(DataRequest::Legacy(legacy)) => {
                if let Some(refusal) = self.refuse_unsealed_for_keyed(LEGACY_EDGE_ID, sealed_by) {
                    return refusal;
                }
                self.store_legacy(legacy).await
            }
            Err(error) => {
                bump(&self.counters.malformed, 1);
                self.count_refusal(RefusalReason::Malformed);
                warn!(%error, bytes = request.len(), "malformed data request answered with an error");
                if request.starts_with(&REQUEST_MAGIC[..3]) {
                    let version = match request.get(3) {
                        Some(2) => WireVersion::V2,
                        Some(3) => WireVersion::V3,
                        _ => WireVersion::V1,
                    };
                    BatchReply {
                        version,
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
        if batch.version == WireVersion::V3 && self.instance_refused(&batch.edge_id, batch.instance)
        {
            bump(&self.counters.instances_refused, 1);
            return BatchReply {
                version: batch.version,
                request_id: batch.request_id,
                outcome: ReplyOutcome::Refused(format!(
                    "another instance holds edge id {}; this one ({:016x}) was refused",
                    batch.edge_id, batch.instance
                )),
            }
            .encode();
        }
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
                version: batch.version,
                request_id: batch.request_id,
                outcome,
            }
            .encode()
        };
        let write = match self.write(&tuples).await {
            Ok(write) => write,
            Err(reason) => return reply(ReplyOutcome::RetryLater(reason)),
        };
        debug!(edge = %batch.edge_id, request_id = batch.request_id, tuples = acks.len(), buckets = write.epochs.len(), "batch stored");
        if batch.version == WireVersion::V1 {
            // An edge of version 1 cannot hear of a conflict; it is counted
            // and logged all the same.
            return reply(ReplyOutcome::Stored(acks));
        }
        let mut acks: Vec<TupleAck> = acks
            .into_iter()
            .map(|ack| TupleAck {
                ack,
                outcome: TupleOutcome::Stored,
            })
            .collect();
        for conflict in &write.conflicts {
            acks[conflict.index].outcome = TupleOutcome::Conflict;
        }
        if batch.version == WireVersion::V3 {
            return reply(ReplyOutcome::StoredInBuckets {
                epochs: write.epochs,
                acks,
            });
        }
        match self.batch_digest(&batch.edge_id, &write).await {
            Some(epoch) => reply(ReplyOutcome::StoredUnder { epoch, acks }),
            // Stored, but the store could not name every bucket's epoch:
            // the edge sends again, which stores nothing twice.
            None => reply(ReplyOutcome::RetryLater(
                "the store's epochs are not all known yet".into(),
            )),
        }
    }

    /// Whether `instance` of `edge_id` was refused by its last heartbeat here.
    fn instance_refused(&self, edge_id: &str, instance: u64) -> bool {
        let refused = self.refused_instances.lock().expect("refused lock");
        refused.get(edge_id) == Some(&instance)
    }

    /// Remembers a heartbeat's verdict on its instance, for the batch guard.
    /// Logs when an instance is first refused (each further refusal only
    /// counts).
    fn note_instance(&self, edge_id: &str, instance: u64, refused: bool) {
        let mut refused_instances = self.refused_instances.lock().expect("refused lock");
        if !refused {
            if refused_instances.get(edge_id) == Some(&instance) {
                refused_instances.remove(edge_id);
                debug!(
                    edge = edge_id,
                    instance = format!("{instance:016x}"),
                    "instance accepted after a refusal"
                );
            }
            return;
        }
        bump(&self.counters.instances_refused, 1);
        if refused_instances.get(edge_id) == Some(&instance) {
            return;
        }
        if refused_instances.len() >= EDGES_MAX && !refused_instances.contains_key(edge_id) {
            return;
        }
        refused_instances.insert(edge_id.to_owned(), instance);
        warn!(
            edge = edge_id,
            instance = format!("{instance:016x}"),
            "heartbeat refused: another live instance holds this edge id (two edges started with one id?)"
        );
    }

    /// Takes in bucket epochs the cache named (0 = not named) and returns
    /// the view with them.
    fn learn_epochs(&self, epochs: impl IntoIterator<Item = (u16, u64)>) -> [u64; STORE_BUCKETS] {
        let mut known = self.known_epochs.lock().expect("epochs lock");
        for (bucket, epoch) in epochs {
            if epoch != 0 {
                known[usize::from(bucket)] = epoch;
            }
        }
        *known
    }

    /// The single epoch a version-2 batch reply names: the digest of every
    /// bucket's epoch, the written buckets' from the write itself. When
    /// some bucket was never named here (a cloud just started), the store
    /// is asked once, the way a heartbeat asks it (instance 0: the lease
    /// is left alone). `None` when it cannot tell.
    async fn batch_digest(&self, edge_id: &str, write: &CacheWrite) -> Option<u64> {
        let mut view = self.learn_epochs(write.epochs.iter().map(|(&b, &e)| (b, e)));
        if view.contains(&0) {
            let record = self.ask_heartbeat(edge_id, 0).await?;
            self.learn_epochs((0..STORE_BUCKETS as u16).zip(record.epochs));
            for (bucket, epoch) in record.epochs.iter().enumerate() {
                if view[bucket] == 0 {
                    view[bucket] = *epoch;
                }
            }
        }
        epochs_digest(&view)
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
        match self.write(&[tuple]).await {
            Ok(_) => request.reply(postal_code),
            Err(reason) => legacy::error_reply(&reason),
        }
    }

    /// Writes tuples to the cache; `Err` carries the reason for the reply.
    /// Conflicts are counted and logged here, with both values.
    async fn write(&self, tuples: &[CloudTuple]) -> Result<CacheWrite, String> {
        let candidate = self.candidate_epoch();
        let buckets: BTreeSet<u16> = tuples
            .iter()
            .map(|tuple| store_bucket(&tuple.node_id))
            .collect();
        if self.config.planted.has(Bug::ReplyBeforeCacheWrite) {
            let (cache, tuples) = (self.cache.clone(), tuples.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(PLANTED_WRITE_DELAY).await;
                let _ = cache.store(&tuples, candidate).await;
            });
            let known = *self.known_epochs.lock().expect("epochs lock");
            let guessed = |bucket: u16| match known[usize::from(bucket)] {
                0 => bucket_epoch_candidate(candidate, bucket),
                epoch => epoch,
            };
            return Ok(CacheWrite {
                epochs: buckets
                    .iter()
                    .map(|&bucket| (bucket, guessed(bucket)))
                    .collect(),
                ..CacheWrite::default()
            });
        }
        match self.cache.store(tuples, candidate).await {
            Ok(write) => {
                assert!(
                    write.epochs.keys().copied().eq(buckets.iter().copied()),
                    "the cache named the epochs of other buckets than it wrote"
                );
                assert!(
                    !write.epochs.values().any(|&epoch| epoch == 0),
                    "the cache stored without an epoch"
                );
                self.learn_epochs(write.epochs.iter().map(|(&b, &e)| (b, e)));
                bump(&self.counters.tuples_stored, write.inserted as u64);
                bump(&self.counters.tuples_repeated, write.existing as u64);
                self.log_conflicts(tuples, &write);
                self.config
                    .crash_points
                    .reached(CrashPoint::CloudAfterCacheWrite)
                    .await;
                Ok(write)
            }
            Err(error) => {
                bump(&self.counters.cache_errors, 1);
                warn!(%error, "cache write failed; the edge will retry");
                Err(error.to_string())
            }
        }
    }

    fn log_conflicts(&self, tuples: &[CloudTuple], write: &CacheWrite) {
        bump(&self.counters.conflicts, write.conflicts.len() as u64);
        for conflict in &write.conflicts {
            let resent = &tuples[conflict.index];
            let (stored_average_w, stored_samples) = match conflict.stored {
                Some((average_w, samples)) => (Some(average_w), Some(samples)),
                None => (None, None),
            };
            warn!(
                key = %resent.key,
                ?stored_average_w,
                ?stored_samples,
                resent_average_w = resent.average_w,
                resent_samples = resent.samples,
                "conflicting resend: the stored tuple is kept and the edge is told"
            );
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
        let heartbeat = match HeartbeatRequest::decode(request) {
            Ok(heartbeat) => heartbeat,
            Err(error) => {
                bump(&self.counters.malformed, 1);
                self.count_refusal(RefusalReason::Malformed);
                warn!(%error, "malformed heartbeat answered with an error");
                return legacy::error_reply(&error.to_string());
            }
        };
        let edge_id = heartbeat.edge_id().unwrap_or(LEGACY_EDGE_ID).to_owned();
        if let Some(refusal) = self.refuse_unsealed_for_keyed(&edge_id, sealed_by) {
            return refusal;
        }
        if sealed_by.is_some_and(|sealer| sealer != edge_id) {
            return self.refuse(
                RefusalReason::EdgeMismatch,
                "heartbeat names another edge than its key",
            );
        }
        bump(&self.counters.heartbeats, 1);
        self.heartbeats.lock().expect("heartbeat lock").seen(
            &edge_id,
            Instant::now(),
            heartbeat.backlog(),
        );
        // The heartbeat says the cloud process is alive; a cache outage shows
        // in data replies instead, so its error does not fail the heartbeat.
        let instance = heartbeat.instance().unwrap_or(0);
        let record = self.ask_heartbeat(&edge_id, instance).await;
        let mut view = None;
        if let Some(record) = &record {
            view = Some(self.learn_epochs((0..STORE_BUCKETS as u16).zip(record.epochs)));
            if instance != 0 {
                self.note_instance(&edge_id, instance, record.refused);
            }
        }
        if heartbeat.wants_bucket_epochs() {
            return match record {
                Some(record) if record.refused => BucketHeartbeatReply::Refused,
                Some(record) => BucketHeartbeatReply::Accepted {
                    epochs: record.epochs,
                },
                // Answered with every bucket unknown: alive, nothing learnt.
                None => BucketHeartbeatReply::Accepted {
                    epochs: [0; STORE_BUCKETS],
                },
            }
            .encode();
        }
        if heartbeat.wants_epoch() {
            // A bucket the store could not name now (a shard down) keeps
            // the epoch last heard of, so the digest does not flap.
            let epoch = view.and_then(|view| epochs_digest(&view));
            return HeartbeatReply { epoch }.encode();
        }
        HEARTBEAT_REPLY.to_vec()
    }

    /// Records a heartbeat in the cache within [`HEARTBEAT_RECORD_TIMEOUT`];
    /// `None` when it failed or took too long.
    async fn ask_heartbeat(&self, edge_id: &str, instance: u64) -> Option<HeartbeatRecord> {
        let candidate = self.candidate_epoch();
        let record = self
            .cache
            .record_heartbeat(edge_id, instance, self.clock.now_ms(), candidate);
        match tokio::time::timeout(HEARTBEAT_RECORD_TIMEOUT, record).await {
            Ok(Ok(record)) => Some(record),
            Ok(Err(error)) => {
                debug!(%error, "heartbeat not recorded in the cache");
                None
            }
            Err(_) => {
                debug!("heartbeat not recorded in the cache in time");
                None
            }
        }
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
                    bump(&self.heartbeat_sweeps, 1);
                }
            }
        }
    }
}
