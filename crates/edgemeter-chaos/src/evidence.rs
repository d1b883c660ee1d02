//! Gathers the checker's evidence from the real system: the input windows
//! from the CSVs, the edge's SQLite rows, every tuple in Redis (found with
//! SCAN by pattern and count, never KEYS, and fetched with MGET), and the
//! cloud's per-state and per-edge totals.
//!
//! Nothing is excused: after a cache loss (a Redis restarted empty, or a
//! FLUSHALL) the edges refill the cloud, so at the end it must hold every
//! acknowledged tuple exactly once, and its totals must count each once.
//! The checker is the simulation's, run with no cache loss on record.

use crate::totals::{CloudTotals, StateCount};
use edgemeter_cloud::CloudTuple;
use edgemeter_cloud::GermanState;
use edgemeter_data::{load_dir, oracle_windows, OracleWindow};
use edgemeter_store::{SqliteOutbox, StoredTuple};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The prefix the cloud puts before every key (`redis_cache::KEY_PREFIX`).
pub const KEY_PREFIX: &str = "em:";

/// The pattern of every tuple key, of any edge: a foreign edge's tuple is
/// then reported as unexpected rather than overlooked.
pub const TUPLE_PATTERN: &str = "em:tuple:*";

/// SCAN's COUNT hint: keys examined per round trip.
pub const SCAN_COUNT: usize = 1_000;

/// Tuple keys collected at most. The shipped hour of 50 households is
/// 36,000 windows; a bound far above it keeps a runaway cache from
/// exhausting memory, and reaching it is an error.
pub const CLOUD_KEYS_MAX: usize = 10_000_000;

/// SCAN rounds at most: enough to walk `CLOUD_KEYS_MAX` keys at COUNT
/// `SCAN_COUNT` ten times over (SCAN may return a key more than once).
pub const SCAN_ROUNDS_MAX: usize = 10 * CLOUD_KEYS_MAX / SCAN_COUNT;

/// Keys per MGET.
pub const FETCH_BATCH_KEYS: usize = 500;

/// How far the walk of Redis may go. The checker uses the default,
/// [`CLOUD_KEYS_MAX`] and [`SCAN_ROUNDS_MAX`]; a test passes small limits,
/// which a few keys reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    pub keys_max: usize,
    pub rounds_max: usize,
}

impl Default for ScanLimits {
    fn default() -> ScanLimits {
        ScanLimits {
            keys_max: CLOUD_KEYS_MAX,
            rounds_max: SCAN_ROUNDS_MAX,
        }
    }
}

/// What the checker reads, owned.
#[derive(Debug)]
pub struct Gathered {
    pub oracle: BTreeMap<(String, i64), OracleWindow>,
    pub edge_rows: Vec<StoredTuple>,
    pub cloud: Vec<CloudTuple>,
    /// Redis keys under the tuple pattern that do not hold a tuple.
    pub malformed_keys: Vec<String>,
    /// The totals the cloud keeps, read after the tuples.
    pub totals: CloudTotals,
}

/// Where to look.
#[derive(Debug)]
pub struct Sources<'a> {
    pub data_dir: &'a Path,
    pub duration_ms: i64,
    pub db: &'a Path,
    pub redis_url: &'a str,
    pub edge_id: &'a str,
}

pub fn gather(sources: &Sources<'_>) -> Result<Gathered, String> {
    assert!(sources.duration_ms > 0);
    let (households, _report) = load_dir(sources.data_dir, Some(sources.duration_ms))
        .map_err(|error| format!("data {}: {error}", sources.data_dir.display()))?;
    let oracle = oracle_windows(&households);
    let edge_rows = SqliteOutbox::open_read_only(sources.db)
        .and_then(|outbox| outbox.all_tuples())
        .map_err(|error| format!("edge db {}: {error}", sources.db.display()))?;
    let (cloud, malformed_keys) = cloud_tuples(sources.redis_url, ScanLimits::default())?;
    let mut held_edges: Vec<&str> = cloud.iter().map(|tuple| tuple.edge_id.as_str()).collect();
    held_edges.push(sources.edge_id);
    held_edges.sort_unstable();
    held_edges.dedup();
    let totals = cloud_totals(sources.redis_url, &held_edges, ScanLimits::default())?;
    Ok(Gathered {
        oracle,
        edge_rows,
        cloud,
        malformed_keys,
        totals,
    })
}

/// Every tuple in Redis, and the keys that do not hold one; an error if
/// the walk would pass `limits`.
pub fn cloud_tuples(
    url: &str,
    limits: ScanLimits,
) -> Result<(Vec<CloudTuple>, Vec<String>), String> {
    let failed = |error: redis::RedisError| format!("redis {url}: {error}");
    let client = redis::Client::open(url).map_err(failed)?;
    let mut connection = client.get_connection().map_err(failed)?;
    let keys =
        scan_keys(&mut connection, limits).map_err(|error| format!("redis {url}: {error}"))?;
    let keys: Vec<String> = keys.into_iter().collect();
    let mut tuples = Vec::with_capacity(keys.len());
    let mut malformed = Vec::new();
    for chunk in keys.chunks(FETCH_BATCH_KEYS) {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut connection)
            .map_err(failed)?;
        assert_eq!(values.len(), chunk.len());
        for (key, value) in chunk.iter().zip(values) {
            match value.and_then(|value| tuple_from_value(key, &value)) {
                Some(tuple) => tuples.push(tuple),
                None => malformed.push(key.clone()),
            }
        }
    }
    Ok((tuples, malformed))
}

/// The cloud's per-state totals and per-edge counts: every state's hash
/// and households set, and the count of every edge in `em:edges` and of
/// each edge in `edges_also` (the edges whose tuples the cloud holds, so
/// that an edge missing from the set is still compared). A set with more
/// members than `limits.keys_max` is refused unread, like the tuple walk.
pub fn cloud_totals(
    url: &str,
    edges_also: &[&str],
    limits: ScanLimits,
) -> Result<CloudTotals, String> {
    let failed = |error: redis::RedisError| format!("redis {url}: {error}");
    let client = redis::Client::open(url).map_err(failed)?;
    let mut connection = client.get_connection().map_err(failed)?;
    let state_key = |state: GermanState| format!("{KEY_PREFIX}state:{}", state.name());
    let mut set_keys: Vec<String> = GermanState::ALL
        .iter()
        .map(|state| format!("{}:households", state_key(*state)))
        .collect();
    set_keys.push(format!("{KEY_PREFIX}edges"));
    let mut sets = read_sets(&mut connection, &set_keys, limits.keys_max)
        .map_err(|error| format!("redis {url}: {error}"))?;
    let edge_ids = sets.pop().expect("the edges set was read last");
    let mut hashes = redis::pipe();
    for state in GermanState::ALL {
        hashes
            .cmd("HMGET")
            .arg(state_key(state))
            .arg("tuples")
            .arg("average_sum_w");
    }
    let hashes: Vec<(Option<u64>, Option<f64>)> = hashes.query(&mut connection).map_err(failed)?;
    let mut totals = CloudTotals::default();
    for ((state, (tuples, sum)), households) in GermanState::ALL.iter().zip(hashes).zip(sets) {
        if tuples.is_none() && sum.is_none() && households.is_empty() {
            continue;
        }
        let count = StateCount {
            tuples: tuples.unwrap_or(0),
            average_sum_w: sum.unwrap_or(0.0),
            households,
        };
        totals.states.insert(*state, count);
    }
    let edges: BTreeSet<String> = edge_ids
        .into_iter()
        .chain(edges_also.iter().map(|edge| (*edge).to_owned()))
        .collect();
    for edge in edges {
        let tuples: Option<u64> = redis::cmd("HGET")
            .arg(format!("{KEY_PREFIX}edge:{edge}"))
            .arg("tuples")
            .query(&mut connection)
            .map_err(failed)?;
        totals.edges.insert(edge, tuples.unwrap_or(0));
    }
    Ok(totals)
}

/// The members of each set, in `keys` order; an error, before any member
/// is read, when a set has more than `members_max`.
fn read_sets(
    connection: &mut redis::Connection,
    keys: &[String],
    members_max: usize,
) -> Result<Vec<BTreeSet<String>>, String> {
    let mut sizes = redis::pipe();
    for key in keys {
        sizes.scard(key);
    }
    let sizes: Vec<u64> = sizes.query(connection).map_err(|error| error.to_string())?;
    assert_eq!(sizes.len(), keys.len());
    if let Some((key, size)) = keys
        .iter()
        .zip(&sizes)
        .find(|(_, size)| **size > members_max as u64)
    {
        return Err(format!(
            "{key} has {size} members, more than the checker's limit {members_max}"
        ));
    }
    let mut members = redis::pipe();
    for key in keys {
        members.smembers(key);
    }
    members.query(connection).map_err(|error| error.to_string())
}

/// SCAN MATCH/COUNT until the cursor returns to 0. SCAN may return a key
/// twice; the set keeps it once, so a repeat is never a duplicate tuple.
fn scan_keys(
    connection: &mut redis::Connection,
    limits: ScanLimits,
) -> Result<BTreeSet<String>, String> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    for _ in 0..limits.rounds_max {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(TUPLE_PATTERN)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(connection)
            .map_err(|error| error.to_string())?;
        keys.extend(batch);
        if keys.len() > limits.keys_max {
            return Err(format!(
                "more tuple keys than {}, the checker's limit",
                limits.keys_max
            ));
        }
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
    Err(format!(
        "SCAN did not finish within {} rounds, the checker's limit",
        limits.rounds_max
    ))
}

/// The cloud's stored value (`CloudTuple::stored_value`), read back;
/// `None` when it is not one.
fn tuple_from_value(key: &str, value: &[u8]) -> Option<CloudTuple> {
    let key = key.strip_prefix(KEY_PREFIX)?.to_owned();
    CloudTuple::from_stored_value(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_tuple_reads_back_and_a_foreign_key_does_not() {
        let node = "8c345400feac9da85eb7884641dbab0e335045984355bb3bdbb1973065e9fcfa";
        let code = edgemeter_cloud::postal_code_for(node);
        let tuple = CloudTuple {
            key: format!("tuple:edge-1:{node}:5000"),
            edge_id: "edge-1".to_owned(),
            node_id: node.to_owned(),
            window_start_ms: Some(5_000),
            average_w: 12.5,
            samples: 5,
            postal_code: code,
            state: edgemeter_cloud::state_of(code).unwrap(),
            received_ms: 7,
        };
        let value = tuple.stored_value();
        let key = format!("em:tuple:edge-1:{node}:5000");
        assert_eq!(tuple_from_value(&key, value.as_bytes()), Some(tuple));
        assert!(tuple_from_value(&key, b"{}").is_none());
        assert!(
            tuple_from_value("other:tuple", value.as_bytes()).is_none(),
            "a key without our prefix is not ours"
        );
    }
}
