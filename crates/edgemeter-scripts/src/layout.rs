//! The cloud store's layout in Redis: key names, the split of a batch into
//! store buckets, the packing of each bucket's script call, and the
//! recent-list entries, all without IO, so that the one-slot rule can be
//! tested without a server. `RedisCache` (crate `edgemeter`) sends what
//! this module builds, and the simulated Redis (`sim-tests`) runs the same
//! calls through the same scripts ([`crate::STORE_SCRIPT`] and the others).
//!
//! # Buckets
//! Every key lives in one of [`STORE_BUCKETS`] buckets, and a bucket is one
//! Redis Cluster hash tag, `{em-bNN}` (NN = 00..15): all keys of a bucket
//! hash to one slot, so one Lua script may touch any of them on any
//! cluster, and a batch becomes at most 16 single-slot script calls.
//! A tuple's bucket is its household's, `store_bucket(node_id)`, so every
//! tuple of a household (whichever edge ships it) and the household's
//! membership in its state's set live in one bucket; the per-bucket sets
//! are then disjoint and their sizes add up to distinct counts. Edge
//! records that belong to no household (the heartbeat time and the
//! instance lease) live in the bucket of `store_bucket(edge_id)`.
//!
//! # Keys of bucket `B` (prefix `em:{em-bNN}:`)
//! - `tuple:<edge>:<household>:<window start>`: one JSON string per tuple
//!   (the cloud's tuple key after the bucket prefix), written `SET NX`.
//! - `epoch`: the bucket's epoch, a random non-zero u64 in decimal, set
//!   `SET NX` by the first write or heartbeat that finds it missing. A
//!   shard restarted empty loses the epochs of its buckets only.
//! - `state:<state>`: hash `tuples`, `average_sum_w` of the bucket's
//!   tuples in that state; `state:<state>:households`: their households.
//! - `edge:<edge>`: hash `tuples`, `last_tuple_ms` of the edge's tuples in
//!   the bucket, and, in the edge's own bucket, `last_heartbeat_ms`;
//!   `edges`: the set of edges with such a hash in the bucket.
//! - `lease:<edge>`: the instance that holds the edge id, expiring after
//!   the lease (in the edge's own bucket).
//! - `recent`: the bucket's latest [`RECENT_TUPLES_MAX`] entries,
//!   `<stamp>:<batch index>:<tuple's Redis key>`, newest first; readers
//!   merge the 16 lists by (stamp, index).
//!
//! Readers touch a fixed set of keys per bucket (16 state hashes and 16
//! sets for the totals), so `/api/states` costs 16 calls whatever the
//! number of tuples or shards. Nothing ever runs `KEYS *`.
//!
//! # Upgrading from the unbucketed layout
//! An older cloud kept `em:tuple:*`, `em:state:*`, `em:edge:*`, `em:edges`,
//! `em:recent` and `em:epoch` without a hash tag. The new layout has no
//! epochs at first, so the first heartbeat sets new ones and the edges
//! reship what they retain; the old keys are then unused and can be
//! deleted with the pattern [`OLD_LAYOUT_PATTERN`] (on every node of a
//! cluster; never with `KEYS`).

use edgemeter_cloud::{bucket_epoch_candidate, CloudTuple, GermanState};
use edgemeter_wire::bucket::bucket_hash_tag;
use std::collections::BTreeMap;

/// Every key of ours starts with this, so the data shares a Redis with
/// others without collisions and can be found with one `SCAN` pattern.
pub const KEY_PREFIX: &str = "em:";

/// The buckets and the bucket of a household (for its tuples) or of an
/// edge (for its heartbeat and lease): the wire's one function, which the
/// edge and the simulation call too.
pub use edgemeter_wire::{store_bucket, STORE_BUCKETS};

/// Every key of the bucketed layout matches this `SCAN` pattern.
pub const LAYOUT_PATTERN: &str = "em:{em-b*";

/// Every tuple key of the bucketed layout matches this `SCAN` pattern.
pub const TUPLE_PATTERN: &str = "em:{em-b*}:tuple:*";

/// The keys an older, unbucketed cloud wrote match this `SCAN` pattern and
/// no key of the bucketed layout does (their `em:` is followed by `{`).
pub const OLD_LAYOUT_PATTERN: &str = "em:[^{]*";

/// The recent-tuples list of each bucket is trimmed to this many entries
/// on every write: the dashboard shows the latest few hundred, and the
/// list must not grow with the data. Each bucket keeps as many as the
/// readers may ask for, so the newest `RECENT_TUPLES_MAX` overall are
/// always among the 16 lists' heads.
pub const RECENT_TUPLES_MAX: usize = 1_000;

/// The key names of one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKeys {
    bucket: u16,
    /// `em:{em-bNN}:`, the start of every key of the bucket.
    prefix: String,
}

impl BucketKeys {
    pub fn new(bucket: u16) -> BucketKeys {
        assert!(usize::from(bucket) < STORE_BUCKETS, "bucket {bucket}");
        BucketKeys {
            bucket,
            prefix: format!("{KEY_PREFIX}{}:", bucket_hash_tag(bucket)),
        }
    }

    /// The 16 buckets in order.
    pub fn all() -> impl Iterator<Item = BucketKeys> {
        (0..STORE_BUCKETS as u16).map(BucketKeys::new)
    }

    pub fn bucket(&self) -> u16 {
        self.bucket
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    pub fn recent(&self) -> String {
        format!("{}recent", self.prefix)
    }

    pub fn edges(&self) -> String {
        format!("{}edges", self.prefix)
    }

    pub fn state(&self, state: GermanState) -> String {
        format!("{}state:{}", self.prefix, state.name())
    }

    pub fn state_households(&self, state: GermanState) -> String {
        format!("{}state:{}:households", self.prefix, state.name())
    }

    pub fn edge(&self, edge_id: &str) -> String {
        format!("{}edge:{edge_id}", self.prefix)
    }

    pub fn lease(&self, edge_id: &str) -> String {
        format!("{}lease:{edge_id}", self.prefix)
    }

    /// The Redis key of a tuple whose cloud key is `tuple_key`.
    pub fn tuple(&self, tuple_key: &str) -> String {
        format!("{}{tuple_key}", self.prefix)
    }
}

/// The cloud's tuple key of a Redis tuple key of any bucket; `None` when
/// the key is not a tuple key of the bucketed layout.
pub fn tuple_key_of(redis_key: &str) -> Option<&str> {
    let rest = redis_key.strip_prefix("em:{em-b")?;
    let (number, tuple_key) = rest.split_once("}:")?;
    let bucket: usize = number.parse().ok()?;
    (number.len() == 2 && bucket < STORE_BUCKETS && tuple_key.starts_with("tuple:"))
        .then_some(tuple_key)
}

/// The batch's tuple indexes per bucket, each list in batch order.
pub fn split_by_bucket(tuples: &[CloudTuple]) -> BTreeMap<u16, Vec<usize>> {
    let mut buckets: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (index, tuple) in tuples.iter().enumerate() {
        buckets
            .entry(store_bucket(&tuple.node_id))
            .or_default()
            .push(index);
    }
    assert!(buckets.len() <= STORE_BUCKETS);
    buckets
}

/// ARGV fixed at the head of a store call: candidate epoch, recent bound,
/// stamp, and the counts of states, edges, groups and tuples.
pub const STORE_HEAD_ARGS: usize = 7;

/// ARGV per group (one household of one edge in one call): state number,
/// edge number, household, latest received ms, tuple count, average sum.
pub const GROUP_ARGS: usize = 6;

/// ARGV per tuple: stored value, group tag, index in the whole batch.
pub const TUPLE_ARGS: usize = 3;

/// KEYS fixed at the head of a store call: epoch, recent list, edges set.
pub const STORE_HEAD_KEYS: usize = 3;

/// One bucket's store script call: everything the script touches is in
/// `keys`, and every key is of `bucket`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreCall {
    pub bucket: u16,
    pub keys: Vec<String>,
    pub args: Vec<String>,
    /// The batch index of the call's tuples, in call order: the script's
    /// conflict indexes are positions in this list.
    pub indexes: Vec<usize>,
}

/// One household of one edge in a call, as the script takes it.
struct Group {
    state: usize,
    edge: usize,
    node_id: String,
    latest_received_ms: i64,
    tuples: usize,
    average_sum_w: f64,
}

/// Packs the store script call of the tuples `indexes` of `tuples`, all of
/// bucket `bucket`. `stamp` orders the call's recent entries against other
/// calls'; `candidate_epoch` becomes the bucket's epoch if it has none.
///
/// Everything per household is passed once per group: turning arguments
/// into Lua strings and numbers (`tonumber` is a `strtod`) was a third of
/// the script's time. The group tag is looked up as a string, so a tuple
/// costs no `tonumber`.
pub fn store_call(
    bucket: u16,
    tuples: &[CloudTuple],
    indexes: Vec<usize>,
    candidate_epoch: u64,
    stamp: u64,
) -> StoreCall {
    assert!(!indexes.is_empty(), "a call stores at least one tuple");
    assert_ne!(candidate_epoch, 0, "epoch 0 means unknown");
    let keys_of = BucketKeys::new(bucket);
    let mut states: Vec<GermanState> = Vec::new();
    let mut edges: Vec<&str> = Vec::new();
    let mut group_of: BTreeMap<(GermanState, &str, &str), usize> = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut tags = Vec::with_capacity(indexes.len());
    for &index in &indexes {
        let tuple = &tuples[index];
        assert_eq!(
            store_bucket(&tuple.node_id),
            bucket,
            "a tuple of another bucket"
        );
        let identity = (tuple.state, tuple.node_id.as_str(), tuple.edge_id.as_str());
        let number = *group_of.entry(identity).or_insert_with(|| {
            groups.push(Group {
                state: position_or_push(&mut states, tuple.state),
                edge: position_or_push(&mut edges, tuple.edge_id.as_str()),
                node_id: tuple.node_id.clone(),
                latest_received_ms: tuple.received_ms,
                tuples: 0,
                average_sum_w: 0.0,
            });
            groups.len() - 1
        });
        let group = &mut groups[number];
        group.latest_received_ms = group.latest_received_ms.max(tuple.received_ms);
        group.tuples += 1;
        // Batch order, as the script sums when it must sum again.
        group.average_sum_w += tuple.average_w;
        tags.push(number + 1);
    }
    let mut keys =
        Vec::with_capacity(STORE_HEAD_KEYS + 2 * states.len() + edges.len() + indexes.len());
    keys.extend([keys_of.epoch(), keys_of.recent(), keys_of.edges()]);
    for &state in &states {
        keys.push(keys_of.state(state));
        keys.push(keys_of.state_households(state));
    }
    keys.extend(edges.iter().map(|edge_id| keys_of.edge(edge_id)));
    keys.extend(
        indexes
            .iter()
            .map(|&index| keys_of.tuple(&tuples[index].key)),
    );
    let mut args = Vec::with_capacity(
        STORE_HEAD_ARGS + edges.len() + GROUP_ARGS * groups.len() + TUPLE_ARGS * indexes.len(),
    );
    args.extend([
        // Each bucket its own value, so that no two buckets share an epoch.
        bucket_epoch_candidate(candidate_epoch, bucket).to_string(),
        RECENT_TUPLES_MAX.to_string(),
        stamp.to_string(),
        states.len().to_string(),
        edges.len().to_string(),
        groups.len().to_string(),
        indexes.len().to_string(),
    ]);
    args.extend(edges.iter().map(|edge_id| (*edge_id).to_owned()));
    for group in groups {
        args.extend([
            (group.state + 1).to_string(),
            (group.edge + 1).to_string(),
            group.node_id,
            group.latest_received_ms.to_string(),
            group.tuples.to_string(),
            // Shortest round-trip form: Lua reads back the same f64.
            group.average_sum_w.to_string(),
        ]);
    }
    for (&index, tag) in indexes.iter().zip(tags) {
        args.extend([
            tuples[index].stored_value(),
            tag.to_string(),
            index.to_string(),
        ]);
    }
    StoreCall {
        bucket,
        keys,
        args,
        indexes,
    }
}

/// The position of `value` in `values`, appended if missing. The lists are
/// at most 16 states and a few edges long, so a scan beats a map.
fn position_or_push<T: PartialEq>(values: &mut Vec<T>, value: T) -> usize {
    match values.iter().position(|known| *known == value) {
        Some(position) => position,
        None => {
            values.push(value);
            values.len() - 1
        }
    }
}

/// One entry of a bucket's recent list: `<stamp>:<index>:<redis key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEntry {
    /// The store call's stamp (microseconds, increasing per cloud process).
    pub stamp: u64,
    /// The tuple's index in its batch: orders a batch's tuples across
    /// buckets, which are stored by separate calls with one stamp.
    pub index: u32,
    /// The tuple's Redis key (of the list's bucket).
    pub redis_key: String,
}

impl RecentEntry {
    pub fn parse(entry: &str) -> Option<RecentEntry> {
        let mut parts = entry.splitn(3, ':');
        let stamp = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        let redis_key = parts.next()?.to_owned();
        Some(RecentEntry {
            stamp,
            index,
            redis_key,
        })
    }

    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.stamp, self.index, self.redis_key)
    }

    /// Newest first: the later stamp, then within a batch the later index.
    fn order(&self) -> (u64, u32) {
        (self.stamp, self.index)
    }
}

/// The newest `limit` entries of the buckets' lists (each newest first),
/// newest first, each with its bucket. Entries that are not ours are
/// skipped. Cost: the lists' total length, at most 16 × `limit`.
pub fn merge_recent(lists: Vec<(u16, Vec<String>)>, limit: usize) -> Vec<(u16, RecentEntry)> {
    let mut entries: Vec<(u16, RecentEntry)> = lists
        .into_iter()
        .flat_map(|(bucket, list)| {
            list.into_iter()
                .filter_map(move |entry| Some((bucket, RecentEntry::parse(&entry)?)))
        })
        .collect();
    // Stable: equal keys (never expected) keep bucket order.
    entries.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.order()));
    entries.truncate(limit);
    entries
}

/// KEYS of the heartbeat script: epoch, edges set, edge hash, lease.
pub fn heartbeat_keys(edge_id: &str) -> (u16, Vec<String>) {
    let bucket = store_bucket(edge_id);
    let keys = BucketKeys::new(bucket);
    (
        bucket,
        vec![
            keys.epoch(),
            keys.edges(),
            keys.edge(edge_id),
            keys.lease(edge_id),
        ],
    )
}

const _: () = assert!(RECENT_TUPLES_MAX > 0);
const _: () = assert!(STORE_BUCKETS <= 100, "two digits in the hash tag");
// A full batch in one call stays far below Lua's and Redis's argument
// limits (the script unpacks at most one list of that many values).
const _: () = assert!(
    STORE_HEAD_ARGS + (GROUP_ARGS + TUPLE_ARGS + 1) * edgemeter_wire::batch::BATCH_TUPLES_MAX
        < 1_000_000
);

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_cloud::{postal_code_for, state_of, tuple_key};

    fn tuple(edge_id: &str, node_id: &str, window_start_ms: i64) -> CloudTuple {
        let postal_code = postal_code_for(node_id);
        CloudTuple {
            key: tuple_key(edge_id, node_id, &window_start_ms.to_string()),
            edge_id: edge_id.into(),
            node_id: node_id.into(),
            window_start_ms: Some(window_start_ms),
            average_w: 1.5,
            samples: 3,
            postal_code,
            state: state_of(postal_code).unwrap(),
            received_ms: 7,
        }
    }

    /// Goal: the packing's counts and offsets are what the script reads:
    /// head, one id per edge, six per group, three per tuple; keys head,
    /// two per state, one per edge, one per tuple; and a split keeps batch
    /// order and covers every tuple once.
    #[test]
    fn a_call_packs_its_keys_and_arguments_in_the_scripts_order() {
        let household = edgemeter_wire::bucket::households_in_every_bucket(1).remove(3);
        let batch: Vec<CloudTuple> = (0..5)
            .map(|window| {
                let edge = if window < 3 { "edge-a" } else { "edge-b" };
                tuple(edge, &household, window * 5_000)
            })
            .collect();
        let split = split_by_bucket(&batch);
        assert_eq!(
            split.into_iter().collect::<Vec<_>>(),
            [(3, vec![0, 1, 2, 3, 4])]
        );
        let call = store_call(3, &batch, vec![0, 1, 2, 3, 4], 9, 42);
        assert_eq!(call.keys.len(), STORE_HEAD_KEYS + 2 + 2 + 5);
        assert_eq!(
            call.args.len(),
            STORE_HEAD_ARGS + 2 + 2 * GROUP_ARGS + 5 * TUPLE_ARGS
        );
        assert_eq!(
            call.args[1..STORE_HEAD_ARGS],
            ["1000", "42", "1", "2", "2", "5"]
        );
        assert_eq!(
            call.args[0],
            bucket_epoch_candidate(9, 3).to_string(),
            "the bucket's own candidate"
        );
        assert_eq!(
            call.keys[STORE_HEAD_KEYS + 4],
            BucketKeys::new(3).tuple(&batch[0].key)
        );
        let first_tuple = STORE_HEAD_ARGS + 2 + 2 * GROUP_ARGS;
        assert_eq!(call.args[first_tuple + 1], "1", "the first group's tag");
        assert_eq!(call.args[first_tuple + 3 * 3 + 1], "2", "edge-b's group");
        assert_eq!(call.args[first_tuple + 3 * 4 + 2], "4", "the batch index");
    }

    /// Goal: the buckets' recent lists merge newest first by stamp, then
    /// batch index, are cut at the limit, and a tuple key reads back from
    /// its Redis key; foreign entries and keys are refused.
    #[test]
    fn recent_lists_merge_newest_first() {
        let entry = |stamp, index, key: &str| {
            RecentEntry {
                stamp,
                index,
                redis_key: key.to_owned(),
            }
            .encode()
        };
        let lists = vec![
            (
                0,
                vec![entry(20, 1, "a:2"), entry(10, 3, "a:1"), "junk".to_owned()],
            ),
            (5, vec![entry(20, 2, "b:2"), entry(10, 0, "b:1")]),
        ];
        let merged: Vec<String> = merge_recent(lists.clone(), 10)
            .into_iter()
            .map(|(_, entry)| entry.redis_key)
            .collect();
        assert_eq!(merged, ["b:2", "a:2", "a:1", "b:1"]);
        assert_eq!(merge_recent(lists, 1)[0].0, 5);
        let keys = BucketKeys::new(7);
        let redis_key = keys.tuple("tuple:e:h:5");
        assert_eq!(redis_key, "em:{em-b07}:tuple:e:h:5");
        assert_eq!(tuple_key_of(&redis_key), Some("tuple:e:h:5"));
        assert_eq!(tuple_key_of("em:tuple:e:h:5"), None, "the old layout");
        assert_eq!(tuple_key_of(&keys.epoch()), None);
        assert_eq!(tuple_key_of("em:{em-b99}:tuple:e"), None);
    }
}
