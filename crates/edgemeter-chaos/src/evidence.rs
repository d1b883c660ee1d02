//! Gathers the checker's evidence from the real system: the input windows
//! from the CSVs, the edge's SQLite rows, every tuple in Redis (found with
//! SCAN by pattern and count, never KEYS, and fetched with pipelined GETs),
//! and the cloud's per-state and per-edge totals.
//!
//! Redis is one server or a Redis Cluster, found out by asking: a server
//! with cluster support answers `CLUSTER NODES`, and then every primary it
//! lists is walked, since SCAN sees one node's keys only. The totals are
//! read per store bucket through a cluster-aware connection, each command
//! to its slot's primary.
//!
//! The layout is restated here, not imported from the cloud's Redis code,
//! so that the checker reads what is in Redis rather than what the cloud
//! means to write (only the bucket count and hash tag come from the wire):
//! 16 buckets, each a hash tag `{em-bNN}`; under `em:{em-bNN}:` the
//! tuples (`tuple:...`), the per-state hashes `state:<state>` (`tuples`,
//! `average_sum_w`) and sets `state:<state>:households`, the edges set
//! `edges` and the per-edge hashes `edge:<edge>` (`tuples`). A state's and
//! an edge's totals are the sums over the buckets; households are bucketed
//! by id, so the buckets' sets are disjoint.
//!
//! Nothing is excused: after a cache loss (a Redis restarted empty, or a
//! FLUSHALL, or one shard of a cluster lost) the edges refill the cloud, so
//! at the end it must hold every acknowledged tuple exactly once, and its
//! totals must count each once. The checker is the simulation's, run with
//! no cache loss on record.

use crate::totals::{CloudTotals, StateCount};
use edgemeter_checker::{oracle_windows, OracleWindow};
use edgemeter_cloud::CloudTuple;
use edgemeter_cloud::GermanState;
use edgemeter_data::load_dir;
use edgemeter_store::{SqliteOutbox, StoredTuple};
use redis::ConnectionLike;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The prefix the cloud puts before every key (`redis_layout::KEY_PREFIX`).
pub const KEY_PREFIX: &str = "em:";

/// The cloud's store buckets, each one hash tag (`bucket_hash_tag`).
pub const STORE_BUCKETS: u16 = edgemeter_wire::STORE_BUCKETS as u16;

/// The pattern of every tuple key, of any edge and bucket: a foreign
/// edge's tuple is then reported as unexpected rather than overlooked.
pub const TUPLE_PATTERN: &str = "em:{em-b*}:tuple:*";

/// SCAN's COUNT hint: keys examined per round trip.
pub const SCAN_COUNT: usize = 1_000;

/// Tuple keys collected at most, over every node. The shipped hour of 50
/// households is 36,000 windows; a bound far above it keeps a runaway
/// cache from exhausting memory, and reaching it is an error.
pub const CLOUD_KEYS_MAX: usize = 10_000_000;

/// SCAN rounds at most, over every node: enough to walk `CLOUD_KEYS_MAX`
/// keys at COUNT `SCAN_COUNT` ten times over (SCAN may return a key more
/// than once).
pub const SCAN_ROUNDS_MAX: usize = 10 * CLOUD_KEYS_MAX / SCAN_COUNT;

/// Keys per pipeline of GETs.
pub const FETCH_BATCH_KEYS: usize = 500;

/// Cluster nodes walked at most: a `CLUSTER NODES` listing longer than
/// this is refused (Redis Cluster's own advice tops out near 1,000).
pub const CLUSTER_NODES_MAX: usize = 1_000;

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
    /// One Redis, or any node of a Redis Cluster (or several, joined by
    /// commas): which it is, is asked, and a cluster is walked whole.
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

/// The Redis the checker reads: one server, or a cluster's primaries.
enum Target {
    Single(String),
    Cluster {
        /// The seed URLs, for the cluster-aware connection.
        seeds: Vec<String>,
        /// One URL per primary, for the per-node walk.
        primaries: Vec<String>,
    },
}

/// Finds out what `urls` (one URL, or a cluster's seeds joined by commas)
/// point at: the first URL answers either `CLUSTER NODES` (a cluster) or
/// that cluster support is disabled (one server).
fn target(urls: &str) -> Result<Target, String> {
    let seeds: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect();
    let first = seeds
        .first()
        .ok_or_else(|| format!("no Redis URL in {urls:?}"))?
        .clone();
    let failed = |error: redis::RedisError| format!("redis {first}: {error}");
    let client = redis::Client::open(first.as_str()).map_err(failed)?;
    let mut connection = client.get_connection().map_err(failed)?;
    match redis::cmd("CLUSTER")
        .arg("NODES")
        .query::<String>(&mut connection)
    {
        Ok(nodes) => {
            let primaries = primaries_of(&nodes)?
                .into_iter()
                .map(|address| node_url(&first, &address))
                .collect();
            Ok(Target::Cluster { seeds, primaries })
        }
        Err(error) if error.to_string().contains("cluster support disabled") => {
            if seeds.len() > 1 {
                return Err(format!(
                    "redis {first} is not a cluster node, but {} URLs were given",
                    seeds.len()
                ));
            }
            Ok(Target::Single(first))
        }
        Err(error) => Err(failed(error)),
    }
}

/// The `host:port` of every primary in a `CLUSTER NODES` listing
/// (`<id> <host:port@bus[,hostname]> <flags> ...`), failing or not: a
/// failing primary is an error when it is walked, not a node skipped.
fn primaries_of(nodes: &str) -> Result<Vec<String>, String> {
    let mut primaries = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || !fields[2].split(',').any(|flag| flag == "master") {
            continue;
        }
        let address = fields[1].split(['@', ',']).next().unwrap_or("");
        if address.is_empty() || address.starts_with(':') {
            return Err(format!("a primary without an address: {line}"));
        }
        primaries.push(address.to_owned());
        if primaries.len() > CLUSTER_NODES_MAX {
            return Err(format!(
                "more primaries than {CLUSTER_NODES_MAX}, the checker's limit"
            ));
        }
    }
    if primaries.is_empty() {
        return Err(format!("no primary in CLUSTER NODES: {nodes}"));
    }
    Ok(primaries)
}

/// `seed`'s URL with its host and port replaced by `address`, keeping its
/// scheme and credentials: every node of a cluster takes the same.
fn node_url(seed: &str, address: &str) -> String {
    let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", seed));
    let credentials = rest
        .rsplit_once('@')
        .map(|(credentials, _)| format!("{credentials}@"))
        .unwrap_or_default();
    format!("{scheme}://{credentials}{address}/")
}

/// A connection that reaches every key: the server, or the cluster with
/// each command routed to its slot's primary.
fn keyed_connection(target: &Target) -> Result<Box<dyn ConnectionLike>, String> {
    match target {
        Target::Single(url) => {
            let failed = |error: redis::RedisError| format!("redis {url}: {error}");
            let client = redis::Client::open(url.as_str()).map_err(failed)?;
            Ok(Box::new(client.get_connection().map_err(failed)?))
        }
        Target::Cluster { seeds, .. } => {
            let failed = |error: redis::RedisError| format!("redis cluster {seeds:?}: {error}");
            let client = redis::cluster::ClusterClient::new(seeds.clone()).map_err(failed)?;
            Ok(Box::new(client.get_connection().map_err(failed)?))
        }
    }
}

/// Every tuple in Redis (on every primary of a cluster), and the keys that
/// do not hold one; an error if the walk would pass `limits`.
pub fn cloud_tuples(
    urls: &str,
    limits: ScanLimits,
) -> Result<(Vec<CloudTuple>, Vec<String>), String> {
    let nodes = match target(urls)? {
        Target::Single(url) => vec![url],
        Target::Cluster { primaries, .. } => primaries,
    };
    let mut walked = Walked::default();
    for url in &nodes {
        walk_node(url, limits, &mut walked)?;
    }
    Ok((walked.tuples, walked.malformed))
}

/// What the walk found so far, over the nodes walked.
#[derive(Default)]
struct Walked {
    tuples: Vec<CloudTuple>,
    malformed: Vec<String>,
    keys: usize,
    rounds: usize,
}

/// Walks one node's tuple keys and reads their values, counting against
/// `limits` what the nodes before it used.
fn walk_node(url: &str, limits: ScanLimits, walked: &mut Walked) -> Result<(), String> {
    let failed = |error: redis::RedisError| format!("redis {url}: {error}");
    let client = redis::Client::open(url).map_err(failed)?;
    let mut connection = client.get_connection().map_err(failed)?;
    let keys = scan_keys(&mut connection, limits, walked)
        .map_err(|error| format!("redis {url}: {error}"))?;
    walked.keys += keys.len();
    let keys: Vec<String> = keys.into_iter().collect();
    for chunk in keys.chunks(FETCH_BATCH_KEYS) {
        // GETs, not one MGET: a cluster node refuses an MGET over slots.
        let mut gets = redis::pipe();
        for key in chunk {
            gets.get(key);
        }
        let values: Vec<Option<Vec<u8>>> = gets.query(&mut connection).map_err(failed)?;
        assert_eq!(values.len(), chunk.len());
        for (key, value) in chunk.iter().zip(values) {
            match value.and_then(|value| tuple_from_value(key, &value)) {
                Some(tuple) => walked.tuples.push(tuple),
                None => walked.malformed.push(key.clone()),
            }
        }
    }
    Ok(())
}

/// The prefix of every key of bucket `bucket`: `em:{em-bNN}:`.
fn bucket_prefix(bucket: u16) -> String {
    format!(
        "{KEY_PREFIX}{}:",
        edgemeter_wire::bucket::bucket_hash_tag(bucket)
    )
}

/// The cloud's per-state totals and per-edge counts, summed over the
/// buckets: every state's hash and households set, and the count of every
/// edge in a bucket's `edges` set and of each edge in `edges_also` (the
/// edges whose tuples the cloud holds, so that an edge missing from the
/// sets is still compared). A set with more members than
/// `limits.keys_max` is refused unread, like the tuple walk.
pub fn cloud_totals(
    urls: &str,
    edges_also: &[&str],
    limits: ScanLimits,
) -> Result<CloudTotals, String> {
    let mut connection = keyed_connection(&target(urls)?)?;
    let failed = |error: redis::RedisError| format!("redis {urls}: {error}");
    let mut totals = CloudTotals::default();
    let mut edge_ids: BTreeSet<String> = edges_also.iter().map(|edge| (*edge).to_owned()).collect();
    for bucket in 0..STORE_BUCKETS {
        let prefix = bucket_prefix(bucket);
        let state_key = |state: GermanState| format!("{prefix}state:{}", state.name());
        let mut set_keys: Vec<String> = GermanState::ALL
            .iter()
            .map(|state| format!("{}:households", state_key(*state)))
            .collect();
        set_keys.push(format!("{prefix}edges"));
        let mut sets = read_sets(connection.as_mut(), &set_keys, limits.keys_max)
            .map_err(|error| format!("redis {urls}: {error}"))?;
        edge_ids.extend(sets.pop().expect("the edges set was read last"));
        for (state, households) in GermanState::ALL.iter().zip(sets) {
            let (tuples, sum): (Option<u64>, Option<f64>) = redis::cmd("HMGET")
                .arg(state_key(*state))
                .arg("tuples")
                .arg("average_sum_w")
                .query(connection.as_mut())
                .map_err(failed)?;
            if tuples.is_none() && sum.is_none() && households.is_empty() {
                continue;
            }
            let count = totals
                .states
                .entry(*state)
                .or_insert_with(StateCount::default);
            count.tuples += tuples.unwrap_or(0);
            count.average_sum_w += sum.unwrap_or(0.0);
            count.households.extend(households);
        }
    }
    for edge in edge_ids {
        let mut tuples = 0;
        for bucket in 0..STORE_BUCKETS {
            let counted: Option<u64> = redis::cmd("HGET")
                .arg(format!("{}edge:{edge}", bucket_prefix(bucket)))
                .arg("tuples")
                .query(connection.as_mut())
                .map_err(failed)?;
            tuples += counted.unwrap_or(0);
        }
        totals.edges.insert(edge, tuples);
    }
    Ok(totals)
}

/// The members of each set, in `keys` order; an error, before any member
/// is read, when a set has more than `members_max`. One command at a time:
/// the keys are of one bucket, but a cluster connection routes each alone.
fn read_sets(
    connection: &mut dyn ConnectionLike,
    keys: &[String],
    members_max: usize,
) -> Result<Vec<BTreeSet<String>>, String> {
    let mut sizes = Vec::with_capacity(keys.len());
    for key in keys {
        let size: u64 = redis::cmd("SCARD")
            .arg(key)
            .query(connection)
            .map_err(|error| error.to_string())?;
        if size > members_max as u64 {
            return Err(format!(
                "{key} has {size} members, more than the checker's limit {members_max}"
            ));
        }
        sizes.push(size);
    }
    keys.iter()
        .map(|key| {
            redis::cmd("SMEMBERS")
                .arg(key)
                .query(connection)
                .map_err(|error| error.to_string())
        })
        .collect()
}

/// SCAN MATCH/COUNT until the cursor returns to 0, on one node, counting
/// against `limits` the keys and rounds of the nodes walked before; adds
/// its rounds to `walked`. SCAN may return a key twice; the set keeps it
/// once, so a repeat is never a duplicate tuple.
fn scan_keys(
    connection: &mut redis::Connection,
    limits: ScanLimits,
    walked: &mut Walked,
) -> Result<BTreeSet<String>, String> {
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    while walked.rounds < limits.rounds_max {
        walked.rounds += 1;
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(TUPLE_PATTERN)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(connection)
            .map_err(|error| error.to_string())?;
        keys.extend(batch);
        if walked.keys + keys.len() > limits.keys_max {
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
    let rest = key.strip_prefix("em:{em-b")?;
    let (bucket, tuple_key) = rest.split_once("}:")?;
    let bucket: u16 = bucket.parse().ok()?;
    if bucket >= STORE_BUCKETS || !tuple_key.starts_with("tuple:") {
        return None;
    }
    CloudTuple::from_stored_value(tuple_key.to_owned(), value)
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
        let key = format!("em:{{em-b07}}:tuple:edge-1:{node}:5000");
        assert_eq!(tuple_from_value(&key, value.as_bytes()), Some(tuple));
        assert!(tuple_from_value(&key, b"{}").is_none());
        assert!(
            tuple_from_value("other:tuple", value.as_bytes()).is_none(),
            "a key without our prefix is not ours"
        );
        assert!(
            tuple_from_value(&format!("em:tuple:edge-1:{node}:5000"), value.as_bytes()).is_none(),
            "nor one of the old, unbucketed layout"
        );
        assert!(tuple_from_value("em:{em-b16}:tuple:x", value.as_bytes()).is_none());
    }

    #[test]
    fn a_cluster_listing_names_its_primaries_and_their_urls() {
        let nodes = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                     b 10.0.0.2:7001@17001,host-b master,fail - 0 0 2 disconnected 5461-16383\n\
                     c 127.0.0.1:7002@17002 slave a 0 0 1 connected\n";
        assert_eq!(
            primaries_of(nodes).unwrap(),
            ["127.0.0.1:7000", "10.0.0.2:7001"]
        );
        assert!(primaries_of("").is_err());
        assert_eq!(
            node_url("redis://:secret@127.0.0.1:7000/", "10.0.0.2:7001"),
            "redis://:secret@10.0.0.2:7001/"
        );
        assert_eq!(
            node_url("redis://127.0.0.1:7000", "10.0.0.2:7001"),
            "redis://10.0.0.2:7001/"
        );
    }
}
