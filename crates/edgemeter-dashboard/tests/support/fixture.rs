//! A fixed slice of tuples, and the direct computation of what the API must
//! say about them. Averages are multiples of 0.25 W, so every sum is exact in
//! floating point whatever order a cache adds them in, and the snapshot
//! cannot drift between caches.

#![allow(dead_code)]

use edgemeter_cloud::{postal_code_for, state_of, tuple_key, CloudTuple, GermanState};
use std::collections::{BTreeMap, BTreeSet, HashSet};

pub const FIXTURE_EDGES: [&str; 3] = ["edge-alpha", "edge-beta", "edge-gamma"];
pub const FIXTURE_HOUSEHOLDS: usize = 24;
pub const FIXTURE_WINDOWS: usize = 5;
pub const FIXTURE_WINDOW_START_MS: i64 = 1_700_000_000_000;
pub const FIXTURE_RECEIVED_MS: i64 = 1_700_000_100_000;

pub fn household_id(household: usize) -> String {
    format!("household-{household:02}")
}

/// One tuple, as the cloud would build it: postal code and state from the
/// household id, the key from the tuple's identity.
pub fn tuple(
    edge_id: &str,
    node_id: &str,
    window_start_ms: i64,
    average_w: f64,
    received_ms: i64,
) -> CloudTuple {
    let postal_code = postal_code_for(node_id);
    CloudTuple {
        key: tuple_key(edge_id, node_id, &window_start_ms.to_string()),
        edge_id: edge_id.to_owned(),
        node_id: node_id.to_owned(),
        window_start_ms: Some(window_start_ms),
        average_w,
        samples: 5,
        postal_code,
        state: state_of(postal_code).expect("our codes are in the table"),
        received_ms,
    }
}

/// 24 households on 3 edges, 5 windows each: 120 tuples, received in order.
pub fn fixture_tuples() -> Vec<CloudTuple> {
    let mut tuples = Vec::with_capacity(FIXTURE_HOUSEHOLDS * FIXTURE_WINDOWS);
    for window in 0..FIXTURE_WINDOWS {
        for household in 0..FIXTURE_HOUSEHOLDS {
            let quarter_watts = (household * 37 + window * 11) % 800;
            let index = tuples.len() as i64;
            tuples.push(tuple(
                FIXTURE_EDGES[household % FIXTURE_EDGES.len()],
                &household_id(household),
                FIXTURE_WINDOW_START_MS + window as i64 * 5_000,
                50.0 + quarter_watts as f64 * 0.25,
                FIXTURE_RECEIVED_MS + index,
            ));
        }
    }
    tuples
}

/// What `/api/states` must say, computed straight from the tuples, each key
/// counted once: `(state, households, tuples, avg W, kWh/year, €/year)`.
pub fn expected_states(
    tuples: &[CloudTuple],
    price_eur_per_kwh: f64,
) -> Vec<(GermanState, u64, u64, f64, f64, f64)> {
    let mut seen = HashSet::new();
    let mut groups: BTreeMap<GermanState, (BTreeSet<&str>, u64, f64)> = BTreeMap::new();
    for tuple in tuples
        .iter()
        .filter(|tuple| seen.insert(tuple.key.as_str()))
    {
        let group = groups.entry(tuple.state).or_default();
        group.0.insert(&tuple.node_id);
        group.1 += 1;
        group.2 += tuple.average_w;
    }
    GermanState::ALL
        .into_iter()
        .map(|state| {
            let (households, count, sum) = groups.remove(&state).unwrap_or_default();
            let average = if count == 0 { 0.0 } else { sum / count as f64 };
            let kwh = average * 24.0 * 365.0 / 1_000.0;
            (
                state,
                households.len() as u64,
                count,
                average,
                kwh,
                kwh * price_eur_per_kwh,
            )
        })
        .collect()
}

/// The fixture's states with at least one household.
pub fn fixture_states() -> BTreeSet<GermanState> {
    fixture_tuples().iter().map(|tuple| tuple.state).collect()
}
