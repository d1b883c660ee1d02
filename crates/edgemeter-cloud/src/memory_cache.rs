//! An in-memory [`Cache`] for `edgemeter demo` and tests: the same
//! set-if-absent semantics, conflict reports, per-bucket store epochs,
//! instance leases and incremental totals as the Redis cache, in one
//! process, lost when it exits (and by [`MemoryCache::lose`], which forgets
//! every bucket with its epoch, or [`MemoryCache::lose_buckets`], which
//! forgets some, as the restart of one shard of a cluster does).
//!
//! The data is kept per bucket, as the Redis layout keeps it per hash tag:
//! each bucket holds its tuples, its epoch, its partial per-state and
//! per-edge totals, and the heartbeats and leases of the edge ids that hash
//! to it. Readers sum the 16 buckets, which costs the same with ten tuples
//! or ten million.

use crate::cache::{
    bucket_epoch_candidate, differs, Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord,
    HeartbeatRecord, StateTotals, StoredConflict, INSTANCE_LEASE,
};
use crate::GermanState;
use edgemeter_wire::{store_bucket, STORE_BUCKETS};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

/// The most tuples held. A day of the 50 households is 864,000 tuples; past
/// this bound writes fail as a full Redis would, rather than exhausting memory.
pub const MEMORY_TUPLES_MAX: usize = 5_000_000;

/// The recent-tuples list keeps this many, as the Redis list is trimmed.
pub const RECENT_TUPLES_MAX: usize = 1_000;

/// The most edge records (and so leases) kept. Past it, a heartbeat from a
/// new edge id is answered and leased but its record is not kept, as the
/// cloud's heartbeat tracker does (`EDGES_MAX`); a peer inventing ids
/// cannot grow the cache.
pub const MEMORY_EDGES_MAX: usize = 10_000;

#[derive(Debug, Default)]
struct StateEntry {
    households: BTreeSet<String>,
    tuples: u64,
    average_sum_w: f64,
}

/// One edge as one bucket knows it: the tuples of the bucket it shipped;
/// in the edge id's own bucket also its heartbeats and lease.
#[derive(Debug, Default, Clone)]
struct EdgeEntry {
    tuples: u64,
    last_tuple_ms: Option<i64>,
    last_heartbeat_ms: Option<i64>,
    /// The instance holding the edge id, and until when (ms).
    lease: Option<(u64, i64)>,
}

/// One bucket's share of the store: what one hash tag holds in Redis.
#[derive(Debug, Default)]
struct Bucket {
    tuples: BTreeMap<String, CloudTuple>,
    states: BTreeMap<GermanState, StateEntry>,
    edges: BTreeMap<String, EdgeEntry>,
    /// The bucket's epoch; `None` until the first write or heartbeat.
    epoch: Option<u64>,
}

impl Bucket {
    fn epoch(&mut self, candidate_epoch: u64, bucket: u16) -> u64 {
        *self
            .epoch
            .get_or_insert_with(|| bucket_epoch_candidate(candidate_epoch, bucket))
    }
}

#[derive(Debug)]
struct Inner {
    buckets: Vec<Bucket>,
    /// Newest first: each tuple's bucket and key.
    recent: VecDeque<(u16, String)>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            buckets: (0..STORE_BUCKETS).map(|_| Bucket::default()).collect(),
            recent: VecDeque::new(),
        }
    }
}

impl Inner {
    fn tuple_count(&self) -> usize {
        self.buckets.iter().map(|bucket| bucket.tuples.len()).sum()
    }

    fn edge_count(&self) -> usize {
        self.buckets.iter().map(|bucket| bucket.edges.len()).sum()
    }

    /// The edge's entry in a bucket; `None` when the cache holds its limit
    /// of edge records and this one is new.
    fn edge_entry(&mut self, bucket: u16, edge_id: &str) -> Option<&mut EdgeEntry> {
        let full = self.edge_count() >= MEMORY_EDGES_MAX;
        let edges = &mut self.buckets[usize::from(bucket)].edges;
        if full && !edges.contains_key(edge_id) {
            return None;
        }
        Some(edges.entry(edge_id.to_owned()).or_default())
    }
}

#[derive(Debug)]
pub struct MemoryCache {
    inner: Mutex<Inner>,
    /// [`MEMORY_TUPLES_MAX`], or a smaller bound for tests of the limit.
    tuples_max: usize,
}

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCache::with_tuples_max(MEMORY_TUPLES_MAX)
    }
}

impl MemoryCache {
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }

    /// A cache that holds at most `tuples_max` tuples.
    pub fn with_tuples_max(tuples_max: usize) -> MemoryCache {
        assert!(tuples_max > 0);
        MemoryCache {
            inner: Mutex::new(Inner::default()),
            tuples_max,
        }
    }

    /// Every stored tuple by key, for tests and checks.
    pub fn snapshot(&self) -> BTreeMap<String, CloudTuple> {
        let inner = self.inner.lock().expect("cache lock");
        inner
            .buckets
            .iter()
            .flat_map(|bucket| bucket.tuples.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").tuple_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every bucket's epoch as it stands, 0 where none is set yet; for tests.
    pub fn epochs(&self) -> [u64; STORE_BUCKETS] {
        let inner = self.inner.lock().expect("cache lock");
        std::array::from_fn(|bucket| inner.buckets[bucket].epoch.unwrap_or(0))
    }

    /// Forgets everything, the epochs too: what a Redis restarted without
    /// persistence does. The next write or heartbeat sets new epochs.
    pub fn lose(&self) {
        *self.inner.lock().expect("cache lock") = Inner::default();
    }

    /// Forgets the given buckets whole (tuples, partial totals, epochs,
    /// heartbeats and leases): what the restart of the shard holding them
    /// does. The other buckets keep everything, their epochs included.
    pub fn lose_buckets(&self, buckets: &BTreeSet<u16>) {
        let mut inner = self.inner.lock().expect("cache lock");
        for &bucket in buckets {
            inner.buckets[usize::from(bucket)] = Bucket::default();
        }
        inner.recent.retain(|(bucket, _)| !buckets.contains(bucket));
    }
}

impl MemoryCache {
    /// Stores one tuple in its bucket unless its key is there; a stored
    /// key with other values is a conflict.
    fn store_one(inner: &mut Inner, index: usize, tuple: &CloudTuple, write: &mut CacheWrite) {
        let bucket = store_bucket(&tuple.node_id);
        let slot = &mut inner.buckets[usize::from(bucket)];
        if let Some(stored) = slot.tuples.get(&tuple.key) {
            write.existing += 1;
            let values = (stored.average_w, stored.samples);
            if differs(values, tuple) {
                write.conflicts.push(StoredConflict {
                    index,
                    stored: Some(values),
                });
            }
            return;
        }
        write.inserted += 1;
        slot.tuples.insert(tuple.key.clone(), tuple.clone());
        let state = slot.states.entry(tuple.state).or_default();
        state.households.insert(tuple.node_id.clone());
        state.tuples += 1;
        state.average_sum_w += tuple.average_w;
        if let Some(edge) = inner.edge_entry(bucket, &tuple.edge_id) {
            edge.tuples += 1;
            edge.last_tuple_ms = edge.last_tuple_ms.max(Some(tuple.received_ms));
        }
        inner.recent.push_front((bucket, tuple.key.clone()));
        inner.recent.truncate(RECENT_TUPLES_MAX);
    }
}

impl Cache for MemoryCache {
    async fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        let mut inner = self.inner.lock().expect("cache lock");
        if inner.tuple_count() + tuples.len() > self.tuples_max {
            return Err(CacheError::Unavailable(format!(
                "memory cache holds its limit of {} tuples",
                self.tuples_max
            )));
        }
        let mut write = CacheWrite::default();
        for tuple in tuples {
            let bucket = store_bucket(&tuple.node_id);
            let epoch = inner.buckets[usize::from(bucket)].epoch(candidate_epoch, bucket);
            write.epochs.insert(bucket, epoch);
        }
        for (index, tuple) in tuples.iter().enumerate() {
            MemoryCache::store_one(&mut inner, index, tuple, &mut write);
        }
        Ok(write)
    }

    async fn record_heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        let mut inner = self.inner.lock().expect("cache lock");
        let lease_ms = INSTANCE_LEASE.as_millis() as i64;
        let home = store_bucket(edge_id);
        let mut refused = false;
        if let Some(edge) = inner.edge_entry(home, edge_id) {
            edge.last_heartbeat_ms = Some(now_ms);
            let held_by_other = edge
                .lease
                .is_some_and(|(holder, until_ms)| holder != instance && until_ms > now_ms);
            if instance != 0 {
                refused = held_by_other;
                if !refused {
                    edge.lease = Some((instance, now_ms.saturating_add(lease_ms)));
                }
            }
        }
        let epochs = std::array::from_fn(|bucket| {
            inner.buckets[bucket].epoch(candidate_epoch, bucket as u16)
        });
        Ok(HeartbeatRecord { epochs, refused })
    }

    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        let inner = self.inner.lock().expect("cache lock");
        Ok(GermanState::ALL
            .iter()
            .map(|state| {
                let mut totals = StateTotals {
                    state: *state,
                    households: 0,
                    tuples: 0,
                    average_sum_w: 0.0,
                };
                // A household is in one bucket only: the sets are disjoint.
                for entry in inner.buckets.iter().filter_map(|b| b.states.get(state)) {
                    totals.households += entry.households.len() as u64;
                    totals.tuples += entry.tuples;
                    totals.average_sum_w += entry.average_sum_w;
                }
                totals
            })
            .collect())
    }

    async fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, CacheError> {
        let inner = self.inner.lock().expect("cache lock");
        Ok(inner
            .recent
            .iter()
            .take(limit)
            .filter_map(|(bucket, key)| {
                inner.buckets[usize::from(*bucket)].tuples.get(key).cloned()
            })
            .collect())
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        let inner = self.inner.lock().expect("cache lock");
        let mut records: BTreeMap<&str, EdgeRecord> = BTreeMap::new();
        for (edge_id, entry) in inner.buckets.iter().flat_map(|bucket| &bucket.edges) {
            let record = records.entry(edge_id).or_insert_with(|| EdgeRecord {
                edge_id: edge_id.clone(),
                last_heartbeat_ms: None,
                tuples: 0,
                last_tuple_ms: None,
            });
            record.tuples += entry.tuples;
            record.last_tuple_ms = record.last_tuple_ms.max(entry.last_tuple_ms);
            record.last_heartbeat_ms = record.last_heartbeat_ms.max(entry.last_heartbeat_ms);
        }
        Ok(records.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_wire::PostalCode;

    fn tuple(index: usize) -> CloudTuple {
        CloudTuple {
            key: format!("tuple:edge-1:h:{index}"),
            edge_id: "edge-1".into(),
            node_id: "h".into(),
            window_start_ms: Some(index as i64 * 5_000),
            average_w: 1.0,
            samples: 1,
            postal_code: PostalCode::parse("01067").unwrap(),
            state: GermanState::from_name("Sachsen").unwrap(),
            received_ms: 0,
        }
    }

    /// Goal: past its bound the cache refuses a write as a full Redis
    /// would (the edge keeps the tuples and retries), instead of growing.
    #[tokio::test]
    async fn a_full_cache_refuses_writes_and_keeps_what_it_has() {
        let cache = MemoryCache::with_tuples_max(3);
        let batch: Vec<CloudTuple> = (0..3).map(tuple).collect();
        assert_eq!(cache.store(&batch, 1).await.unwrap().inserted, 3);
        let refused = cache.store(&[tuple(3)], 1).await.unwrap_err();
        assert!(refused.to_string().contains("limit of 3"), "{refused}");
        assert_eq!(cache.len(), 3);
        // Even a resend of what it holds, as a full Redis refuses every
        // write: the bound counts the batch before looking at its keys.
        assert!(cache.store(&batch[..1], 1).await.is_err());
    }

    #[tokio::test]
    async fn the_recent_list_keeps_its_bound() {
        let cache = MemoryCache::new();
        let batch: Vec<CloudTuple> = (0..RECENT_TUPLES_MAX + 10).map(tuple).collect();
        cache.store(&batch, 1).await.unwrap();
        let recent = cache.recent_tuples(usize::MAX).await.unwrap();
        assert_eq!(recent.len(), RECENT_TUPLES_MAX);
        assert_eq!(recent[0].key, batch.last().unwrap().key, "newest first");
        assert_eq!(cache.inner.lock().unwrap().recent.len(), RECENT_TUPLES_MAX);
    }

    /// Goal: the epochs are set once, by the first write or heartbeat, and
    /// a loss makes the next one set new ones; a resend with another
    /// average is a conflict that leaves the stored tuple as it was.
    #[tokio::test]
    async fn the_epoch_survives_writes_and_changes_with_a_loss() {
        let cache = MemoryCache::new();
        let record = cache.record_heartbeat("edge-1", 0, 0, 7).await.unwrap();
        assert!(!record.refused);
        let bucket = store_bucket("h");
        let seven = bucket_epoch_candidate(7, bucket);
        assert_eq!(record.epochs[usize::from(bucket)], seven);
        assert_eq!(record.epochs, cache.epochs());
        let first = cache.store(&[tuple(0)], 8).await.unwrap();
        assert_eq!(first.epochs, BTreeMap::from([(bucket, seven)]));
        assert_eq!(first.inserted, 1);
        let mut changed = tuple(0);
        changed.average_w = 2.0;
        let again = cache.store(&[tuple(1), changed], 9).await.unwrap();
        assert_eq!((again.inserted, again.existing), (1, 1));
        assert_eq!(
            again.conflicts,
            vec![StoredConflict {
                index: 1,
                stored: Some((1.0, 1))
            }]
        );
        assert_eq!(cache.snapshot()["tuple:edge-1:h:0"].average_w, 1.0);
        assert!(cache
            .store(&[tuple(0)], 9)
            .await
            .unwrap()
            .conflicts
            .is_empty());
        cache.lose();
        assert!(cache.is_empty());
        let ten = bucket_epoch_candidate(10, bucket);
        assert_eq!(
            cache.store(&[tuple(0)], 10).await.unwrap().epochs[&bucket],
            ten
        );
        let record = cache.record_heartbeat("edge-1", 0, 0, 11).await.unwrap();
        assert_eq!(record.epochs[usize::from(bucket)], ten);
        assert_eq!(
            record.epochs[usize::from((bucket + 1) % STORE_BUCKETS as u16)],
            bucket_epoch_candidate(11, (bucket + 1) % STORE_BUCKETS as u16),
            "the other buckets were set by the heartbeat"
        );
    }

    fn tuple_of(node_id: &str, index: usize) -> CloudTuple {
        CloudTuple {
            key: format!("tuple:edge-1:{node_id}:{index}"),
            node_id: node_id.to_owned(),
            ..tuple(index)
        }
    }

    /// Two households in different buckets.
    fn two_buckets() -> ((String, u16), (String, u16)) {
        let first = ("h".to_owned(), store_bucket("h"));
        let other = (0..)
            .map(|index| format!("h{index}"))
            .find(|node_id| store_bucket(node_id) != first.1)
            .unwrap();
        let other_bucket = store_bucket(&other);
        (first, (other, other_bucket))
    }

    /// Goal: losing some buckets forgets exactly their tuples, totals and
    /// epochs; the others keep theirs, and a write to a lost bucket gets a
    /// new epoch while the kept bucket's stays. Method: two households in
    /// two buckets, the loss of one bucket, then reads and writes.
    #[tokio::test]
    async fn losing_a_bucket_forgets_only_that_bucket() {
        let cache = MemoryCache::new();
        let ((kept, kept_bucket), (lost, lost_bucket)) = two_buckets();
        let batch = [tuple_of(&kept, 0), tuple_of(&lost, 0), tuple_of(&lost, 1)];
        let write = cache.store(&batch, 3).await.unwrap();
        assert_eq!(write.epochs.len(), 2);
        let before = cache.epochs();
        cache.lose_buckets(&BTreeSet::from([lost_bucket]));
        assert_eq!(cache.len(), 1);
        assert!(cache.snapshot().contains_key(&batch[0].key));
        let after = cache.epochs();
        assert_eq!(after[usize::from(lost_bucket)], 0);
        assert_eq!(
            after[usize::from(kept_bucket)],
            before[usize::from(kept_bucket)]
        );
        let totals = cache.state_totals().await.unwrap();
        assert_eq!(totals.iter().map(|t| t.tuples).sum::<u64>(), 1);
        assert_eq!(totals.iter().map(|t| t.households).sum::<u64>(), 1);
        assert_eq!(cache.edges().await.unwrap()[0].tuples, 1);
        assert_eq!(cache.recent_tuples(10).await.unwrap().len(), 1);
        let again = cache.store(&batch, 4).await.unwrap();
        assert_eq!((again.inserted, again.existing), (2, 1));
        assert_eq!(again.epochs[&kept_bucket], before[usize::from(kept_bucket)]);
        assert_eq!(
            again.epochs[&lost_bucket],
            bucket_epoch_candidate(4, lost_bucket)
        );
        assert_ne!(again.epochs[&lost_bucket], before[usize::from(lost_bucket)]);
    }

    /// Goal: the instance lease of the design's section 3: the first
    /// instance takes the id, a second one is refused while the first
    /// renews it, the first is never refused, an older edge (instance 0) is
    /// never refused and moves nothing, and after the holder goes quiet
    /// for one lease a new instance is accepted and holds it. Method:
    /// heartbeats at chosen times.
    #[tokio::test]
    async fn the_instance_lease_admits_one_process_per_edge_id() {
        let cache = MemoryCache::new();
        let lease_ms = INSTANCE_LEASE.as_millis() as i64;
        let beat = |instance, now_ms| {
            let cache = &cache;
            async move {
                cache
                    .record_heartbeat("edge-1", instance, now_ms, 1)
                    .await
                    .unwrap()
                    .refused
            }
        };
        assert!(!beat(11, 0).await, "the first instance takes the id");
        assert!(beat(22, 1).await, "a second instance is refused");
        assert!(!beat(0, 2).await, "an older edge is never refused");
        for now_ms in (1_000..4 * lease_ms).step_by(1_000) {
            assert!(!beat(11, now_ms).await, "the holder renews at {now_ms}");
            assert!(beat(22, now_ms + 1).await, "still refused at {now_ms}");
        }
        let last_renewal = 4 * lease_ms - 1_000;
        assert!(
            beat(22, last_renewal + lease_ms - 1).await,
            "the lease still runs"
        );
        assert!(
            !beat(22, last_renewal + lease_ms).await,
            "accepted after one lease"
        );
        assert!(
            beat(11, last_renewal + lease_ms + 1).await,
            "the old holder is now refused"
        );
        let edges = cache.edges().await.unwrap();
        assert_eq!(edges.len(), 1);
        assert_eq!(
            edges[0].last_heartbeat_ms,
            Some(last_renewal + lease_ms + 1)
        );
        // Another id is another lease.
        let other = cache.record_heartbeat("edge-2", 22, 0, 1).await.unwrap();
        assert!(!other.refused);
    }
}
