//! What the Redis tests share: tuples as the cloud builds them, households
//! that cover every store bucket, and a run of batches (two edges, every
//! bucket, resends, overlaps and a conflicting resend) to store on a
//! single Redis and on a cluster alike.

#![allow(dead_code)]

use edgemeter_cloud::{postal_code_for, state_of, tuple_key, CloudTuple};
use edgemeter_redis::layout::{store_bucket, BucketKeys};

pub fn tuple(edge_id: &str, node_id: &str, window_start_ms: i64, average_w: f64) -> CloudTuple {
    let postal_code = postal_code_for(node_id);
    CloudTuple {
        key: tuple_key(edge_id, node_id, &window_start_ms.to_string()),
        edge_id: edge_id.into(),
        node_id: node_id.into(),
        window_start_ms: Some(window_start_ms),
        average_w,
        samples: 3,
        postal_code,
        state: state_of(postal_code).unwrap(),
        received_ms: 1_700_000_000_000 + window_start_ms / 1000,
    }
}

/// The Redis key a tuple is stored under.
pub fn redis_key(tuple: &CloudTuple) -> String {
    BucketKeys::new(store_bucket(&tuple.node_id)).tuple(&tuple.key)
}

pub use edgemeter_wire::bucket::households_in_every_bucket;

/// A run of batches as edges send them: two edges whose households cover
/// every bucket (some households shipped by both), each batch
/// interleaving households, then a resend of a whole batch, a batch
/// overlapping earlier ones, the same tuple twice in one batch and a
/// resend with another average (a conflict).
pub fn mixed_batches() -> Vec<Vec<CloudTuple>> {
    let households = households_in_every_bucket(3);
    let average = |house: usize, window: i64| (house as f64) * 10.0 + window as f64 / 7.0 + 0.1;
    let batch = |edge: &str, houses: &[String], windows: std::ops::Range<i64>| {
        let mut batch = Vec::new();
        for window in windows {
            for (house, node) in houses.iter().enumerate() {
                batch.push(tuple(edge, node, window * 5_000, average(house, window)));
            }
        }
        batch
    };
    let edge_a = batch("edge-a", &households[..30], 0..4);
    let edge_b = batch("edge-b", &households[18..], 0..3);
    let later_a = batch("edge-a", &households[..30], 4..6);
    let mut overlapping = later_a[50..].to_vec();
    overlapping.extend(batch("edge-a", &households[..30], 6..7));
    let twice = tuple("edge-b", &households[40], 99 * 5_000, 1.25);
    overlapping.push(twice.clone());
    overlapping.push(CloudTuple {
        average_w: 2.5,
        ..twice
    });
    let mut conflicting = edge_b[..5].to_vec();
    conflicting[2].average_w += 100.0;
    vec![
        edge_a.clone(),
        edge_b,
        edge_a,
        later_a,
        overlapping,
        conflicting,
    ]
}

/// How many distinct tuples [`mixed_batches`] holds.
pub fn mixed_batches_distinct() -> usize {
    let mut keys: Vec<String> = mixed_batches()
        .iter()
        .flatten()
        .map(|tuple| tuple.key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys.len()
}
