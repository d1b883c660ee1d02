//! The input: the household CSVs loaded once per process, and the slice one
//! scenario replays (which households, which span), with its oracle.

use crate::faults::Scenario;
use crate::households::Publication;
use edgemeter_checker::{oracle_windows, OracleWindow};
use edgemeter_data::{load_dir, DataError, Household};
use edgemeter_wire::Reading;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The data set shipped with the project: 50 households, one hour.
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/gem-house-1h")
}

/// Every household of the data set, sorted by id.
#[derive(Debug, Clone)]
pub struct DataSet {
    pub households: Arc<Vec<Household>>,
    pub first_ts_ms: i64,
    pub span_ms: i64,
}

impl DataSet {
    pub fn load(dir: &Path) -> Result<DataSet, DataError> {
        let (households, _report) = load_dir(dir, None)?;
        let timestamps = || {
            households
                .iter()
                .flat_map(|h| h.readings.iter().map(|(ts, _)| *ts))
        };
        let first_ts_ms = timestamps().min().unwrap_or(0);
        let last_ts_ms = timestamps().max().unwrap_or(0);
        Ok(DataSet {
            households: Arc::new(households),
            first_ts_ms,
            span_ms: last_ts_ms - first_ts_ms + 1,
        })
    }
}

/// What one scenario replays.
#[derive(Debug, Clone)]
pub struct Slice {
    pub households: Vec<Household>,
    /// The slice's start: simulated time zero, and the wall clock's epoch.
    pub epoch_ms: i64,
    pub publications: Arc<Vec<Publication>>,
    pub oracle: BTreeMap<(String, i64), OracleWindow>,
}

impl Slice {
    pub fn cut(data: &DataSet, scenario: &Scenario) -> Slice {
        let available = data.households.len();
        assert!(available > 0);
        let count = scenario.households.clamp(1, available);
        let start = data.first_ts_ms + scenario.data_offset_ms;
        let end = start + scenario.duration_ms;
        let households: Vec<Household> = (0..count)
            .map(|index| {
                let household = &data.households[(scenario.household_first + index) % available];
                Household {
                    node_id: household.node_id.clone(),
                    readings: household
                        .readings
                        .iter()
                        .copied()
                        .filter(|(ts, _)| (start..end).contains(ts))
                        .collect(),
                }
            })
            .collect();
        let publications = publications(&households, start);
        Slice {
            oracle: oracle_windows(&households),
            households,
            epoch_ms: start,
            publications: Arc::new(publications),
        }
    }
}

/// The households' readings as the broker receives them: in the order of
/// [`edgemeter_data::csv::merged_readings`] (time, then household, then
/// file order), each encoded as its JSON record and due at its offset from
/// `start`. Sorts positions instead of readings, so a household's id is
/// copied once per household, not once per reading.
fn publications(households: &[Household], start: i64) -> Vec<Publication> {
    let mut order: Vec<(usize, usize)> = households
        .iter()
        .enumerate()
        .flat_map(|(household, h)| (0..h.readings.len()).map(move |index| (household, index)))
        .collect();
    let ts_of = |&(household, index): &(usize, usize)| households[household].readings[index].0;
    order.sort_by(|a, b| {
        ts_of(a)
            .cmp(&ts_of(b))
            .then_with(|| households[a.0].node_id.cmp(&households[b.0].node_id))
    });
    let mut readings: Vec<Reading> = households
        .iter()
        .map(|household| Reading {
            node_id: household.node_id.clone(),
            power_w: 0.0,
            ts_ms: 0,
        })
        .collect();
    order
        .into_iter()
        .map(|(household, index)| {
            let (ts_ms, power_mw) = households[household].readings[index];
            let reading = &mut readings[household];
            reading.power_w = power_mw as f64 / 1000.0;
            reading.ts_ms = ts_ms;
            Publication {
                key: reading.node_id.as_bytes().to_vec(),
                value: reading.encode(),
                due: Duration::from_millis((ts_ms - start).max(0) as u64),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: merge the readings, then encode each.
    fn reference(households: &[Household], start: i64) -> Vec<(Vec<u8>, Vec<u8>, Duration)> {
        edgemeter_data::csv::merged_readings(households)
            .into_iter()
            .map(|reading| {
                let due = Duration::from_millis((reading.ts_ms - start).max(0) as u64);
                (reading.node_id.as_bytes().to_vec(), reading.encode(), due)
            })
            .collect()
    }

    fn flat(publications: Vec<Publication>) -> Vec<(Vec<u8>, Vec<u8>, Duration)> {
        publications
            .into_iter()
            .map(|p| (p.key, p.value, p.due))
            .collect()
    }

    #[test]
    fn publications_follow_the_merged_order() {
        // Out of id order, shared timestamps, a repeat within a household,
        // a reading before the start.
        let households = vec![
            Household {
                node_id: "b".into(),
                readings: vec![(2_000, 5), (1_000, 7), (2_000, 9), (500, 1)],
            },
            Household {
                node_id: "a".into(),
                readings: vec![(2_000, 3), (3_000, 4)],
            },
        ];
        let built = flat(publications(&households, 1_000));
        assert_eq!(built, reference(&households, 1_000));
        let order: Vec<&[u8]> = built.iter().map(|(key, ..)| key.as_slice()).collect();
        assert_eq!(order, [b"b", b"b", b"a", b"b", b"b", b"a"]);
    }

    #[test]
    fn the_shipped_data_publishes_as_merged() {
        let data = DataSet::load(&default_data_dir()).expect("the shipped data set");
        let households: Vec<Household> = data.households.iter().take(7).cloned().collect();
        let start = data.first_ts_ms + 60_000;
        let built = flat(publications(&households, start));
        assert!(built.len() > 1_000);
        assert_eq!(built, reference(&households, start));
    }
}
