//! Property tests of the windows against the oracle, which averages the
//! readings directly: out-of-order readings within the allowed lateness,
//! repeated readings, a household that goes quiet, a household with gaps.
//! Also the real data: every household of the shipped hour.

use edgemeter_checker::oracle_windows;
use edgemeter_data::Household;
use edgemeter_edge::windows::{WindowConfig, Windows};
use edgemeter_edge::NewTuple;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const T0: i64 = 1_577_145_600_000;

/// Feeds readings in the given order, closing windows as the edge does after
/// every poll, and flushes at the end as the idle timer does.
fn run_windows(config: WindowConfig, stream: &[(String, i64, i64)]) -> Vec<NewTuple> {
    let mut windows = Windows::new(config);
    let mut closed = Vec::new();
    for (offset, (node_id, ts_ms, power_mw)) in stream.iter().enumerate() {
        windows.add(node_id, *ts_ms, *power_mw, 0, offset as i64);
        windows.close_ready(&mut closed);
    }
    windows.close_all(&mut closed);
    closed
}

fn assert_matches_oracle(households: &[Household], closed: &[NewTuple]) {
    let oracle = oracle_windows(households);
    let mut seen = BTreeMap::new();
    for tuple in closed {
        let key = (tuple.node_id.clone(), tuple.window_start_ms);
        assert!(
            seen.insert(key.clone(), tuple).is_none(),
            "window {key:?} closed twice"
        );
    }
    assert_eq!(
        seen.len(),
        oracle.len(),
        "window count differs from the oracle"
    );
    for (key, expected) in &oracle {
        let tuple = seen
            .get(key)
            .unwrap_or_else(|| panic!("window {key:?} lost"));
        assert_eq!(tuple.samples, expected.samples, "{key:?}");
        assert_eq!(
            tuple.average_w.to_bits(),
            expected.average_w.to_bits(),
            "{key:?}"
        );
    }
}

/// One household's readings: about every 2 s, with optional gaps, as the data set.
fn household_strategy(index: usize) -> impl Strategy<Value = Household> {
    let steps = proptest::collection::vec((1_500i64..2_600, 0u32..100_000_000, 0u8..40), 1..120);
    steps.prop_map(move |steps| {
        let mut ts = T0 + index as i64 * 137;
        let readings = steps
            .into_iter()
            .map(|(step, power_mw, gap)| {
                // One step in forty opens a gap of a minute or more.
                ts += if gap == 0 { step + 60_000 } else { step };
                (ts, i64::from(power_mw))
            })
            .collect();
        Household {
            node_id: format!("house-{index}"),
            readings,
        }
    })
}

fn households_strategy() -> impl Strategy<Value = Vec<Household>> {
    (1usize..5).prop_flat_map(|count| (0..count).map(household_strategy).collect::<Vec<_>>())
}

/// Merges households by time, repeats some readings, and swaps neighbours
/// whose timestamps differ by at most `lateness_ms`.
fn disorder(households: &[Household], lateness_ms: i64, seed: u64) -> Vec<(String, i64, i64)> {
    let mut stream: Vec<(String, i64, i64)> = households
        .iter()
        .flat_map(|h| {
            h.readings
                .iter()
                .map(|(ts, mw)| (h.node_id.clone(), *ts, *mw))
        })
        .collect();
    stream.sort_by_key(|(node, ts, _)| (*ts, node.clone()));
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(stream.len() * 2);
    for reading in stream {
        if next() % 7 == 0 {
            out.push(reading.clone());
        }
        out.push(reading);
    }
    for index in 1..out.len() {
        let close = (out[index].1 - out[index - 1].1).abs() <= lateness_ms;
        if close && next() % 3 == 0 {
            out.swap(index, index - 1);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn windows_equal_the_oracle_under_disorder(households in households_strategy(), seed in any::<u64>()) {
        let config = WindowConfig::default();
        let stream = disorder(&households, config.lateness_ms, seed);
        let closed = run_windows(config, &stream);
        assert_matches_oracle(&households, &closed);
    }

    #[test]
    fn a_quiet_household_does_not_hold_its_window(households in households_strategy()) {
        // Strict settings: no lateness, and a short grace. Every household but
        // the first stops early; its windows must close while the others run.
        let config = WindowConfig { lateness_ms: 0, quiet_grace_ms: 10_000, household_order: true };
        let mut households = households;
        for household in households.iter_mut().skip(1) {
            household.readings.truncate(3);
        }
        let stream = disorder(&households, 0, 1);
        let mut windows = Windows::new(config);
        let mut closed = Vec::new();
        for (offset, (node, ts, mw)) in stream.iter().enumerate() {
            windows.add(node, *ts, *mw, 0, offset as i64);
            windows.close_ready(&mut closed);
        }
        let newest = stream.iter().map(|(_, ts, _)| *ts).max().unwrap();
        for household in households.iter().skip(1) {
            let last = household.readings.last().unwrap().0;
            let window_end = last.div_euclid(5_000) * 5_000 + 5_000;
            if newest >= window_end + 10_000 {
                prop_assert!(
                    closed.iter().any(|t| t.node_id == household.node_id && t.window_start_ms + 5_000 == window_end),
                    "quiet household {} held its last window open", household.node_id
                );
            }
        }
    }
}

#[test]
fn the_shipped_hour_equals_the_oracle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gem-house-1h");
    let (households, report) = edgemeter_data::load_dir(&dir, None).unwrap();
    assert_eq!(households.len(), 50);
    assert_eq!(report.malformed_rows, 0);
    let stream: Vec<(String, i64, i64)> = edgemeter_data::csv::merged_readings(&households)
        .into_iter()
        .map(|r| (r.node_id, r.ts_ms, (r.power_w * 1000.0).round() as i64))
        .collect();
    let closed = run_windows(WindowConfig::default(), &stream);
    assert_matches_oracle(&households, &closed);
    // The household with gaps yields no tuple for its empty windows.
    assert!(closed.len() < 50 * 720);
}
