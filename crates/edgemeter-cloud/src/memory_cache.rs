//! An in-memory [`Cache`] for `edgemeter demo` and tests: the same
//! set-if-absent semantics and incremental totals as the Redis cache, in one
//! process, lost when it exits.

use crate::cache::{Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, StateTotals};
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
}

#[derive(Debug, Default)]
pub struct MemoryCache {
    inner: Mutex<Inner>,
}

impl MemoryCache {
    pub fn new() -> MemoryCache {
        MemoryCache::default()
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
    async fn store(&self, tuples: &[CloudTuple]) -> Result<CacheWrite, CacheError> {
        let mut inner = self.inner.lock().expect("cache lock");
        if inner.tuples.len() + tuples.len() > MEMORY_TUPLES_MAX {
            return Err(CacheError::Unavailable(format!(
                "memory cache holds its limit of {MEMORY_TUPLES_MAX} tuples"
            )));
        }
        let mut write = CacheWrite::default();
        for tuple in tuples {
            if inner.tuples.contains_key(&tuple.key) {
                write.existing += 1;
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

    async fn record_heartbeat(&self, edge_id: &str, now_ms: i64) -> Result<(), CacheError> {
        let mut inner = self.inner.lock().expect("cache lock");
        edge_entry(&mut inner.edges, edge_id).last_heartbeat_ms = Some(now_ms);
        Ok(())
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
