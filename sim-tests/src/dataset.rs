//! The input: the household CSVs loaded once per process, and the slice one
//! scenario replays (which households, which span), with its oracle.

use crate::faults::Scenario;
use crate::households::Publication;
use edgemeter_data::{load_dir, oracle_windows, DataError, Household, OracleWindow};
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
        let publications = edgemeter_data::csv::merged_readings(&households)
            .into_iter()
            .map(|reading: Reading| Publication {
                key: reading.node_id.as_bytes().to_vec(),
                value: reading.encode(),
                due: Duration::from_millis((reading.ts_ms - start).max(0) as u64),
            })
            .collect();
        Slice {
            oracle: oracle_windows(&households),
            households,
            epoch_ms: start,
            publications: Arc::new(publications),
        }
    }
}
