//! An in-memory [`Cache`] for `edgemeter demo` and tests: the same
//! set-if-absent semantics, conflict reports, store epoch and incremental
//! totals as the Redis cache, in one process, lost when it exits (and by
//! [`MemoryCache::lose`], which forgets the epoch with the data).

use crate::cache::{
    differs, Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, StateTotals, StoredConflict,
};
use crate::GermanState;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

/// The most tuples held. A day of the 50 households is 864,000 tuples; past
/// this bound writes fail as a full Redis would, rather than exhausting memory.
pub const MEMORY_TUPLES_MAX: usize = 5_000_000;

/// The recent-tuples list keeps this many, as the Redis list is trimmed.
pub const RECENT_TUPLES_MAX: usize = 1_000;

#[derive(Debug, Default)]
struct StateEntry {
    households: BTreeSet<String>,
    tuples: u64,
    average_sum_w: f64,
}

#[derive(Debug, Default)]
struct Inner {
    tuples: BTreeMap<String, CloudTuple>,
    states: BTreeMap<GermanState, StateEntry>,
    edges: BTreeMap<String, EdgeRecord>,
    recent: VecDeque<String>,
    /// The store's epoch; `None` until the first write or heartbeat.
    epoch: Option<u64>,
}

impl Inner {
    fn epoch(&mut self, candidate_epoch: u64) -> u64 {
        assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
        *self.epoch.get_or_insert(candidate_epoch)
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
        self.inner.lock().expect("cache lock").tuples.clone()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").tuples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything, the epoch too: what a Redis restarted without
    /// persistence does. The next write or heartbeat sets a new epoch.
    pub fn lose(&self) {
        *self.inner.lock().expect("cache lock") = Inner::default();
    }
}

fn edge_entry<'a>(
    edges: &'a mut BTreeMap<String, EdgeRecord>,
    edge_id: &str,
) -> &'a mut EdgeRecord {
    edges
        .entry(edge_id.to_owned())
        .or_insert_with(|| EdgeRecord {
            edge_id: edge_id.to_owned(),
            last_heartbeat_ms: None,
            tuples: 0,
            last_tuple_ms: None,
        })
}

impl Cache for MemoryCache {
    async fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        let mut inner = self.inner.lock().expect("cache lock");
        if inner.tuples.len() + tuples.len() > self.tuples_max {
            return Err(CacheError::Unavailable(format!(
                "memory cache holds its limit of {} tuples",
                self.tuples_max
            )));
        }
        let mut write = CacheWrite {
            epoch: inner.epoch(candidate_epoch),
            ..CacheWrite::default()
        };
        for (index, tuple) in tuples.iter().enumerate() {
            if let Some(stored) = inner.tuples.get(&tuple.key) {
                write.existing += 1;
                let values = (stored.average_w, stored.samples);
                if differs(values, tuple) {
                    write.conflicts.push(StoredConflict {
                        index,
                        stored: Some(values),
                    });
                }
                continue;
            }
            write.inserted += 1;
            inner.tuples.insert(tuple.key.clone(), tuple.clone());
            let state = inner.states.entry(tuple.state).or_default();
            state.households.insert(tuple.node_id.clone());
            state.tuples += 1;
            state.average_sum_w += tuple.average_w;
            let edge = edge_entry(&mut inner.edges, &tuple.edge_id);
            edge.tuples += 1;
            edge.last_tuple_ms = Some(tuple.received_ms);
            inner.recent.push_front(tuple.key.clone());
            inner.recent.truncate(RECENT_TUPLES_MAX);
        }
        Ok(write)
    }

    async fn record_heartbeat(
        &self,
        edge_id: &str,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<u64, CacheError> {
        let mut inner = self.inner.lock().expect("cache lock");
        edge_entry(&mut inner.edges, edge_id).last_heartbeat_ms = Some(now_ms);
        Ok(inner.epoch(candidate_epoch))
    }

    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        let inner = self.inner.lock().expect("cache lock");
        Ok(GermanState::ALL
            .iter()
            .map(|state| {
                let entry = inner.states.get(state);
                StateTotals {
                    state: *state,
                    households: entry.map_or(0, |e| e.households.len() as u64),
                    tuples: entry.map_or(0, |e| e.tuples),
                    average_sum_w: entry.map_or(0.0, |e| e.average_sum_w),
                }
            })
            .collect())
    }

    async fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, CacheError> {
        let inner = self.inner.lock().expect("cache lock");
        Ok(inner
            .recent
            .iter()
            .take(limit)
            .filter_map(|key| inner.tuples.get(key).cloned())
            .collect())
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        Ok(self
            .inner
            .lock()
            .expect("cache lock")
            .edges
            .values()
            .cloned()
            .collect())
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

    /// Goal: the epoch is set once, by the first write or heartbeat, and a
    /// loss makes the next one set a new epoch; a resend with another
    /// average is a conflict that leaves the stored tuple as it was.
    #[tokio::test]
    async fn the_epoch_survives_writes_and_changes_with_a_loss() {
        let cache = MemoryCache::new();
        assert_eq!(cache.record_heartbeat("edge-1", 0, 7).await.unwrap(), 7);
        let first = cache.store(&[tuple(0)], 8).await.unwrap();
        assert_eq!((first.epoch, first.inserted), (7, 1));
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
        assert_eq!(cache.store(&[tuple(0)], 10).await.unwrap().epoch, 10);
        assert_eq!(cache.record_heartbeat("edge-1", 0, 11).await.unwrap(), 10);
    }
}
