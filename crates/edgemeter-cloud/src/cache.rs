//! The cloud's IO boundary: the cache every tuple is written to (Redis in
//! deployment, an in-memory map in `demo`, a simulated Redis host in the
//! harness).
//!
//! The store is split into [`STORE_BUCKETS`] buckets by household
//! ([`edgemeter_wire::bucket`]), and each bucket has its own epoch, so the
//! loss of one shard renews the epochs of its buckets only and the edges
//! ship again exactly the tuples of those buckets. Each bucket's epoch is
//! set from its own candidate ([`bucket_epoch_candidate`]) so that no two
//! buckets share an epoch: the edge selects what to ship again as "recorded
//! under none of the current epochs", and a lost bucket's old epoch must
//! not survive as another bucket's current one.
//!
//! The cache also holds each edge id's instance lease ([`INSTANCE_LEASE`]):
//! the one edge process allowed to use that id. Every cloud node asks the
//! shared store, so they all agree on who holds it.

use crate::GermanState;
use edgemeter_wire::{PostalCode, STORE_BUCKETS};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// How long an edge id stays held by the instance that last heartbeated
/// with it: three missed heartbeats of the edge's default timing (1 s
/// apart, each allowed 1 s) plus a margin, so a live edge behind a lossy
/// link keeps its id, and a restarted edge (a new instance) waits at most
/// this long before it is accepted.
pub const INSTANCE_LEASE: Duration = Duration::from_secs(5);

/// The candidate for one bucket's epoch, from the candidate the cloud drew
/// for a call: distinct for each bucket (a bijection of the candidate,
/// offset per bucket), never 0. Every cache implementation sets a missing
/// bucket epoch from this, so that the buckets' epochs never coincide (see
/// the module doc).
pub fn bucket_epoch_candidate(candidate_epoch: u64, bucket: u16) -> u64 {
    assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
    assert!(usize::from(bucket) < STORE_BUCKETS, "bucket {bucket}");
    // splitmix64's finaliser: a bijection, so two candidates never give
    // one bucket the same epoch, and consecutive buckets land far apart.
    let mut mixed =
        candidate_epoch.wrapping_add(u64::from(bucket).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^= mixed >> 31;
    mixed.max(1)
}

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

/// A tuple's stored form: one JSON object per cache key, written once and
/// never rewritten. One value instead of a hash of fields keeps the write a
/// single `SET NX` (the cloud's hottest call), and any `GET` shows it whole.
#[derive(Serialize, Deserialize)]
struct StoredTuple<'a> {
    #[serde(borrow)]
    edge_id: Cow<'a, str>,
    #[serde(borrow)]
    node_id: Cow<'a, str>,
    window_start_ms: Option<i64>,
    average_w: f64,
    samples: u32,
    #[serde(borrow)]
    postal_code: Cow<'a, str>,
    #[serde(borrow)]
    state: Cow<'a, str>,
    received_ms: i64,
}

impl CloudTuple {
    /// The value stored under [`CloudTuple::key`].
    pub fn stored_value(&self) -> String {
        let stored = StoredTuple {
            edge_id: Cow::Borrowed(&self.edge_id),
            node_id: Cow::Borrowed(&self.node_id),
            window_start_ms: self.window_start_ms,
            average_w: self.average_w,
            samples: self.samples,
            postal_code: Cow::Borrowed(self.postal_code.as_str()),
            state: Cow::Borrowed(self.state.name()),
            received_ms: self.received_ms,
        };
        serde_json::to_string(&stored).expect("a tuple always encodes")
    }

    /// Reads a stored value back. `None` when it is not one of ours or is
    /// broken (written by something else); readers skip it.
    pub fn from_stored_value(key: String, value: &[u8]) -> Option<CloudTuple> {
        let stored: StoredTuple<'_> = serde_json::from_slice(value).ok()?;
        if !stored.average_w.is_finite() {
            return None;
        }
        Some(CloudTuple {
            key,
            edge_id: stored.edge_id.into_owned(),
            node_id: stored.node_id.into_owned(),
            window_start_ms: stored.window_start_ms,
            average_w: stored.average_w,
            samples: stored.samples,
            postal_code: PostalCode::parse(&stored.postal_code)?,
            state: GermanState::from_name(&stored.state)?,
            received_ms: stored.received_ms,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheWrite {
    /// Tuples stored for the first time.
    pub inserted: usize,
    /// Tuples whose key was already present: left untouched, not recounted.
    /// Conflicts are among them.
    pub existing: usize,
    /// For each bucket the batch wrote to, its epoch (never 0): the one it
    /// had, or its candidate ([`bucket_epoch_candidate`]) if it had none.
    /// Set in the same atomic step as that bucket's tuples, so it is the
    /// epoch they are stored under. Exactly the buckets of the batch's
    /// households.
    pub epochs: BTreeMap<u16, u64>,
    /// Tuples whose key held another average or sample count, by their
    /// index in the batch, with what the store holds. The stored tuple is
    /// never rewritten.
    pub conflicts: Vec<StoredConflict>,
}

/// What the store holds for a tuple that was resent with other values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredConflict {
    /// The resent tuple's index in the batch given to [`Cache::store`].
    pub index: usize,
    /// The stored average and sample count; `None` when the stored value
    /// is not one of ours (written by something else).
    pub stored: Option<(f64, u32)>,
}

/// Whether a stored tuple's value differs from a resent one: the average
/// bit for bit (a JSON round trip is exact) and the sample count.
pub fn differs(stored: (f64, u32), resent: &CloudTuple) -> bool {
    stored.0.to_bits() != resent.average_w.to_bits() || stored.1 != resent.samples
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

/// What recording a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatRecord {
    /// Every bucket's epoch, in bucket order, each set from its candidate
    /// if it had none; 0 where the store could not tell (a shard down).
    pub epochs: [u64; STORE_BUCKETS],
    /// Another instance holds the edge id's lease: this heartbeat neither
    /// took nor renewed it.
    pub refused: bool,
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

/// The store's epoch key: a random non-zero id, set only when missing. A
/// store that lost its data (flushed, restarted without persistence, an
/// empty replica promoted) has none, so the next write or heartbeat sets a
/// new one, and the edges learn from it that they must ship again. With
/// buckets, each bucket has one under its hash tag
/// (`em:{em-bNN}:epoch`); a single Redis may keep one for all of them,
/// since it loses all its buckets at once.
pub const EPOCH_KEY: &str = "epoch";

pub trait Cache: Send + Sync + 'static {
    /// Stores each tuple under its key unless the key exists, and updates the
    /// per-state and per-edge totals for the tuples stored for the first
    /// time, atomically per bucket, with the epoch of each bucket written:
    /// set from `candidate_epoch` (non-zero, see [`bucket_epoch_candidate`])
    /// if the bucket has none. Returns only once the write is done.
    fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> impl Future<Output = Result<CacheWrite, CacheError>> + Send;

    /// Records the edge's heartbeat and returns every bucket's epoch, each
    /// set from `candidate_epoch` (non-zero) if it has none, and applies
    /// the instance lease atomically: `instance` takes or renews the edge
    /// id's lease for [`INSTANCE_LEASE`] unless another instance holds it
    /// unexpired, in which case the record says `refused` and the lease is
    /// left as it is. Instance 0 is an older edge that names none: its
    /// heartbeat is recorded, never refused, and leaves the lease alone.
    fn record_heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> impl Future<Output = Result<HeartbeatRecord, CacheError>> + Send;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: one candidate gives every bucket its own epoch, none 0, and
    /// the derivation is fixed. Method: all buckets of a few candidates.
    #[test]
    fn each_bucket_gets_its_own_epoch_candidate() {
        for candidate in [1, 2, 0x1234_5678_9abc_def0, u64::MAX] {
            let epochs: std::collections::BTreeSet<u64> = (0..STORE_BUCKETS as u16)
                .map(|bucket| bucket_epoch_candidate(candidate, bucket))
                .collect();
            assert_eq!(epochs.len(), STORE_BUCKETS, "{candidate}");
            assert!(!epochs.contains(&0));
        }
        assert_eq!(bucket_epoch_candidate(7, 3), bucket_epoch_candidate(7, 3));
        assert_ne!(bucket_epoch_candidate(7, 3), bucket_epoch_candidate(8, 3));
    }

    fn tuple(window_start_ms: Option<i64>, node_id: &str) -> CloudTuple {
        CloudTuple {
            key: "t:edge-1:h1:1000".to_owned(),
            edge_id: "edge-1".to_owned(),
            node_id: node_id.to_owned(),
            window_start_ms,
            average_w: 0.1 + 0.2,
            samples: 5,
            postal_code: PostalCode::parse("01067").unwrap(),
            state: GermanState::from_name("Sachsen").unwrap(),
            received_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_stored_tuple_reads_back_bit_for_bit() {
        for original in [
            tuple(Some(1_000), "h1"),
            tuple(None, "h\"1\\\n"),
            tuple(Some(-5_000), "Haushalt ü"),
        ] {
            let value = original.stored_value();
            let read = CloudTuple::from_stored_value(original.key.clone(), value.as_bytes())
                .unwrap_or_else(|| panic!("{value} reads back"));
            assert_eq!(read, original);
            assert_eq!(read.average_w.to_bits(), original.average_w.to_bits());
        }
    }

    /// Goal: every average reads back bit for bit, not just the easy ones
    /// (serde_json's default float parser can be one ULP off).
    #[test]
    fn averages_read_back_bit_for_bit() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![127.826_666_666_666_67, 1e-300, 5e-324, f64::MAX];
        for _ in 0..10_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let value = f64::from_bits(state >> 2);
            if value.is_finite() {
                values.push(value);
            }
            values.push((state >> 11) as f64 / 3_000.0);
        }
        for average_w in values {
            let original = CloudTuple {
                average_w,
                ..tuple(Some(0), "h")
            };
            let read = CloudTuple::from_stored_value(
                original.key.clone(),
                original.stored_value().as_bytes(),
            )
            .unwrap();
            assert_eq!(
                read.average_w.to_bits(),
                average_w.to_bits(),
                "{average_w:e}"
            );
        }
    }

    #[test]
    fn a_foreign_or_broken_value_is_skipped() {
        let good = tuple(Some(1_000), "h1").stored_value();
        for broken in [
            String::new(),
            "not json".to_owned(),
            good.replace("01067", "0106"),
            good.replace("Sachsen", "Atlantis"),
            good.replace("\"samples\":5", "\"samples\":-5"),
            good.replace(",\"received_ms\":1700000000123", ""),
        ] {
            assert_eq!(
                CloudTuple::from_stored_value("k".to_owned(), broken.as_bytes()),
                None,
                "{broken}"
            );
        }
    }
}
