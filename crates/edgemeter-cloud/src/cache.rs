//! The cloud's IO boundary: the cache every tuple is written to (Redis in
//! deployment, an in-memory map in `demo`, a simulated Redis host in the
//! harness).

use crate::GermanState;
use edgemeter_wire::PostalCode;
use serde::Serialize;
use std::fmt;
use std::future::Future;

/// One tuple as the cloud stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudTuple {
    /// The cache key. Chosen by the cloud logic from the tuple's identity
    /// (edge, household, window), so a resent tuple lands on the same key.
    pub key: String,
    pub edge_id: String,
    pub node_id: String,
    /// `None` for the original's requests, which carry no window.
    pub window_start_ms: Option<i64>,
    pub average_w: f64,
    pub samples: u32,
    pub postal_code: PostalCode,
    pub state: GermanState,
    pub received_ms: i64,
}

impl CloudTuple {
    /// Reads a tuple back from its stored text fields (`edge_id`, `node_id`,
    /// `window_start_ms` (empty for none), `average_w`, `samples`,
    /// `postal_code`, `state`, `received_ms`), the layout of a cached tuple
    /// hash. `None` when a field is missing or broken.
    pub fn from_fields<'a>(
        key: String,
        field: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<CloudTuple> {
        let window = field("window_start_ms")?;
        Some(CloudTuple {
            key,
            edge_id: field("edge_id")?.to_owned(),
            node_id: field("node_id")?.to_owned(),
            window_start_ms: if window.is_empty() {
                None
            } else {
                Some(window.parse().ok()?)
            },
            average_w: field("average_w")?.parse().ok()?,
            samples: field("samples")?.parse().ok()?,
            postal_code: PostalCode::parse(field("postal_code")?)?,
            state: GermanState::from_name(field("state")?)?,
            received_ms: field("received_ms")?.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheWrite {
    /// Tuples stored for the first time.
    pub inserted: usize,
    /// Tuples whose key was already present: left untouched, not recounted.
    pub existing: usize,
}

/// Per-state totals, kept incrementally as tuples are first stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateTotals {
    pub state: GermanState,
    pub households: u64,
    pub tuples: u64,
    /// Sum of the stored tuples' averages, in watts.
    pub average_sum_w: f64,
}

/// What the cloud knows of one edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeRecord {
    pub edge_id: String,
    pub last_heartbeat_ms: Option<i64>,
    pub tuples: u64,
    pub last_tuple_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The cache cannot be reached or refused the write. Nothing is
    /// acknowledged; the edge sends the tuples again later.
    Unavailable(String),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Unavailable(reason) => write!(f, "cache unavailable: {reason}"),
        }
    }
}

impl std::error::Error for CacheError {}

pub trait Cache: Send + Sync + 'static {
    /// Stores each tuple under its key unless the key exists, and updates the
    /// per-state and per-edge totals for the tuples stored for the first
    /// time, atomically. Returns only once the write is done.
    fn store(
        &self,
        tuples: &[CloudTuple],
    ) -> impl Future<Output = Result<CacheWrite, CacheError>> + Send;

    fn record_heartbeat(
        &self,
        edge_id: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// All 16 states, in [`GermanState::ALL`] order.
    fn state_totals(&self) -> impl Future<Output = Result<Vec<StateTotals>, CacheError>> + Send;

    /// The latest `limit` tuples stored, newest first.
    fn recent_tuples(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<CloudTuple>, CacheError>> + Send;

    /// Every edge seen, by edge id.
    fn edges(&self) -> impl Future<Output = Result<Vec<EdgeRecord>, CacheError>> + Send;
}
