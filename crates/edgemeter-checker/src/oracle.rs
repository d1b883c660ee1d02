//! The oracle: every window with readings and its average, computed from
//! the CSV alone with the edge's own window arithmetic
//! (`edgemeter_data::window`). It is what the edge must end up holding,
//! and what the checker compares edges and cloud against.

use edgemeter_data::{average_w, window_start_ms, Household};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OracleWindow {
    pub average_w: f64,
    pub samples: u32,
}

/// Every `(household, window start)` with readings, and its average. A
/// reading repeated with the same timestamp counts once, as at the edge:
/// the first of them (two households with one id count as one).
///
/// Each household's readings are sorted by timestamp (stably, so the first
/// of a repeat stays first) and summed window by window: the node id is
/// copied once per window, not once per reading. Every seed of the
/// simulation builds this map; the nested maps per reading it replaced
/// were a twentieth of a full-data seed.
pub fn oracle_windows(households: &[Household]) -> BTreeMap<(String, i64), OracleWindow> {
    let mut by_id: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for household in households {
        by_id
            .entry(&household.node_id)
            .or_default()
            .extend_from_slice(&household.readings);
    }
    let mut windows = BTreeMap::new();
    for (node_id, mut readings) in by_id {
        readings.sort_by_key(|&(ts_ms, _)| ts_ms);
        readings.dedup_by_key(|&mut (ts_ms, _)| ts_ms);
        for window in readings.chunk_by(|a, b| window_start_ms(a.0) == window_start_ms(b.0)) {
            let samples = u32::try_from(window.len()).expect("a window holds few readings");
            let sum_mw: i64 = window.iter().map(|&(_, power_mw)| power_mw).sum();
            windows.insert(
                (node_id.to_owned(), window_start_ms(window[0].0)),
                OracleWindow {
                    average_w: average_w(sum_mw, samples),
                    samples,
                },
            );
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// The definition, one map entry per reading: what the sorted version
    /// must equal.
    fn reference(households: &[Household]) -> BTreeMap<(String, i64), OracleWindow> {
        let mut sums: BTreeMap<(String, i64), BTreeMap<i64, i64>> = BTreeMap::new();
        for household in households {
            for &(ts_ms, power_mw) in &household.readings {
                sums.entry((household.node_id.clone(), window_start_ms(ts_ms)))
                    .or_default()
                    .entry(ts_ms)
                    .or_insert(power_mw);
            }
        }
        sums.into_iter()
            .map(|(key, readings)| {
                let samples = readings.len() as u32;
                let sum_mw = readings.values().sum();
                let window = OracleWindow {
                    average_w: average_w(sum_mw, samples),
                    samples,
                };
                (key, window)
            })
            .collect()
    }

    /// Timestamps on a coarse grid across five windows and both sides of
    /// zero, so that repeats with other values are common.
    fn step_times() -> impl Strategy<Value = i64> {
        (-8i64..16).prop_map(|step| step * 1_250)
    }

    proptest::proptest! {
        /// Unsorted readings, many repeats with other values, negative times
        /// and two households with one id: the sorted version agrees.
        #[test]
        fn equals_the_definition(
            households in proptest::collection::vec(
                (0u8..3, proptest::collection::vec((step_times(), 0i64..5_000_000), 0..80)),
                0..5,
            )
        ) {
            let households: Vec<Household> = households
                .into_iter()
                .map(|(id, readings)| Household { node_id: format!("h{id}"), readings })
                .collect();
            proptest::prop_assert_eq!(oracle_windows(&households), reference(&households));
        }
    }

    #[test]
    fn averages_by_window_and_ignores_repeats() {
        let household = Household {
            node_id: "h".into(),
            readings: vec![
                (1000, 100_000),
                (3000, 300_000),
                (3000, 300_000),
                (6000, 50),
            ],
        };
        let windows = oracle_windows(&[household]);
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[&("h".into(), 0)].average_w, 200.0);
        assert_eq!(windows[&("h".into(), 0)].samples, 2);
        assert_eq!(windows[&("h".into(), 5000)].average_w, 0.05);
    }
}
