//! Gathers the checker's evidence from the real system: the input windows
//! from the CSVs, the edge's SQLite rows, and every tuple in Redis (found
//! with SCAN by pattern and count, never KEYS, and fetched with MGET).
//!
//! Cache losses: a restarted Redis is empty, so tuples acknowledged before
//! it are legitimately missing. The simulation knows each tuple's latest
//! cache-write epoch; here the edge's `acked_at` stands in for it: a tuple
//! acknowledged before a loss time was (last) written before that loss.
//! `ci/chaos.sh` records each loss time after the old server is dead and
//! a pause before the new one starts, so that a write to the old server
//! whose reply is processed late still counts as before the loss.

use edgemeter_cloud::CloudTuple;
use edgemeter_data::{load_dir, oracle_windows, OracleWindow};
use edgemeter_store::{SqliteOutbox, StoredTuple};
use rusqlite::{Connection, OpenFlags};
use sim_tests::redis::WriteLog;
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
    pub cache_epoch: u32,
    pub writes: WriteLog,
}

/// Where to look.
#[derive(Debug)]
pub struct Sources<'a> {
    pub data_dir: &'a Path,
    pub duration_ms: i64,
    pub db: &'a Path,
    pub redis_url: &'a str,
    pub edge_id: &'a str,
    /// Wall-clock times (ms since the epoch) of each Redis restart.
    pub cache_losses_ms: &'a [i64],
}

pub fn gather(sources: &Sources<'_>) -> Result<Gathered, String> {
    assert!(sources.duration_ms > 0);
    let (households, _report) = load_dir(sources.data_dir, Some(sources.duration_ms))
        .map_err(|error| format!("data {}: {error}", sources.data_dir.display()))?;
    let oracle = oracle_windows(&households);
    let edge_rows = SqliteOutbox::open_read_only(sources.db)
        .and_then(|outbox| outbox.all_tuples())
        .map_err(|error| format!("edge db {}: {error}", sources.db.display()))?;
    let writes = write_epochs(sources)?;
    let (cloud, malformed_keys) = cloud_tuples(sources.redis_url, ScanLimits::default())?;
    Ok(Gathered {
        oracle,
        edge_rows,
        cloud,
        malformed_keys,
        cache_epoch: u32::try_from(sources.cache_losses_ms.len()).expect("few losses"),
        writes,
    })
}

/// Each acknowledged tuple's write epoch: how many cache losses happened
/// at or before its acknowledgement.
fn write_epochs(sources: &Sources<'_>) -> Result<WriteLog, String> {
    let failed = |error: rusqlite::Error| format!("edge db {}: {error}", sources.db.display());
    let connection = Connection::open_with_flags(sources.db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(failed)?;
    let mut statement = connection
        .prepare("SELECT node_id, window_start, acked_at FROM power_averages WHERE sent = 2")
        .map_err(failed)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(failed)?;
    let mut writes = WriteLog::default();
    for row in rows {
        let (node_id, window_start_ms, acked_at) = row.map_err(failed)?;
        // An acknowledged row without a time is not excused by any loss.
        let acked_at = acked_at.unwrap_or(i64::MAX);
        let epoch = sources
            .cache_losses_ms
            .iter()
            .filter(|loss_ms| **loss_ms <= acked_at)
            .count();
        let identity = (sources.edge_id.to_owned(), node_id, Some(window_start_ms));
        writes.insert(identity, u32::try_from(epoch).expect("few losses"));
    }
    Ok(writes)
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

    /// Goal: the edge's acknowledgement time places each tuple in a cache
    /// epoch, so only tuples acknowledged before the last loss are excused.
    /// Method: a database with three acknowledged rows around two losses.
    #[test]
    fn acknowledgement_times_become_write_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let connection = Connection::open(&db).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE power_averages (node_id TEXT, window_start INTEGER,
                     sent INTEGER, acked_at INTEGER);
                 INSERT INTO power_averages VALUES ('a', 0, 2, 100), ('a', 5000, 2, 250),
                     ('a', 10000, 2, 400), ('a', 15000, 1, NULL);",
            )
            .unwrap();
        let losses = [200, 300];
        let sources = Sources {
            data_dir: dir.path(),
            duration_ms: 1,
            db: &db,
            redis_url: "redis://127.0.0.1:1",
            edge_id: "e",
            cache_losses_ms: &losses,
        };
        let writes = write_epochs(&sources).unwrap();
        let epoch = |window| {
            writes
                .get(&("e".to_owned(), "a".to_owned(), Some(window)))
                .copied()
        };
        assert_eq!(epoch(0), Some(0), "before both losses");
        assert_eq!(epoch(5_000), Some(1), "between them");
        assert_eq!(epoch(10_000), Some(2), "after the last: never excused");
        assert_eq!(epoch(15_000), None, "unacknowledged rows are not listed");
    }
}
