//! Parses the household CSVs:
//!
//! ```text
//! household
//! date,timestamp,energy,power,power1,power2,power3
//! 2019-12-24 00:00:01,1577145601982,90823166859000,249050,98090,111870,39090
//! ```
//! `power` is milliwatts. A malformed row is counted and skipped, never fatal.

use edgemeter_wire::Reading;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The most households one data directory may hold. The data set has 50.
pub const HOUSEHOLDS_MAX: usize = 10_000;

/// One household's readings in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Household {
    pub node_id: String,
    /// `(ts_ms, power_mw)` pairs.
    pub readings: Vec<(i64, i64)>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub files: usize,
    pub rows: usize,
    pub malformed_rows: usize,
    /// The first malformed row seen, as `file:line: reason`.
    pub first_malformed: Option<String>,
}

#[derive(Debug)]
pub enum DataError {
    MissingDirectory(PathBuf),
    NoHouseholds(PathBuf),
    TooManyHouseholds(usize),
    Io(PathBuf, std::io::Error),
    BadFileName(PathBuf),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::MissingDirectory(dir) => write!(
                f,
                "data directory {} does not exist; pass --data DIR with the household CSVs (the project ships data/gem-house-1h)",
                dir.display()
            ),
            DataError::NoHouseholds(dir) => write!(
                f,
                "data directory {} holds no *.csv or *.csv.gz files",
                dir.display()
            ),
            DataError::TooManyHouseholds(count) => {
                write!(f, "{count} households exceed the limit of {HOUSEHOLDS_MAX}")
            }
            DataError::Io(path, error) => write!(f, "cannot read {}: {error}", path.display()),
            DataError::BadFileName(path) => write!(
                f,
                "{} is not named <household id>.csv",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataError {}

fn household_id(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let id = name
        .strip_suffix(".csv.gz")
        .or_else(|| name.strip_suffix(".csv"))?;
    edgemeter_wire::check_id(id).ok()?;
    Some(id.to_owned())
}

fn parse_row(line: &str) -> Result<(i64, i64), String> {
    let mut fields = line.split(',');
    let _date = fields.next();
    let ts_ms = fields
        .next()
        .ok_or("no timestamp column")?
        .trim()
        .parse::<i64>()
        .map_err(|error| format!("timestamp: {error}"))?;
    let _energy = fields.next();
    let power_mw = fields
        .next()
        .ok_or("no power column")?
        .trim()
        .parse::<i64>()
        .map_err(|error| format!("power: {error}"))?;
    if power_mw < 0 {
        return Err(format!("negative power {power_mw} mW"));
    }
    Ok((ts_ms, power_mw))
}

/// Reads one household file, skipping (and counting) malformed rows.
pub fn load_file(path: &Path, report: &mut LoadReport) -> Result<Household, DataError> {
    let node_id = household_id(path).ok_or_else(|| DataError::BadFileName(path.to_owned()))?;
    let file = std::fs::File::open(path).map_err(|error| DataError::Io(path.to_owned(), error))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|ext| ext == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut readings = Vec::new();
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|error| DataError::Io(path.to_owned(), error))?;
        // Line 1 is the model name, line 2 the header.
        if index < 2 || line.trim().is_empty() {
            continue;
        }
        report.rows += 1;
        match parse_row(&line) {
            Ok(reading) => readings.push(reading),
            Err(reason) => {
                report.malformed_rows += 1;
                report
                    .first_malformed
                    .get_or_insert_with(|| format!("{}:{}: {reason}", path.display(), index + 1));
            }
        }
    }
    report.files += 1;
    Ok(Household { node_id, readings })
}

/// Reads every household of a directory, sorted by id. With `duration_ms`,
/// keeps the readings within that span of the data set's first reading.
pub fn load_dir(
    dir: &Path,
    duration_ms: Option<i64>,
) -> Result<(Vec<Household>, LoadReport), DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingDirectory(dir.to_owned()));
    }
    let entries = std::fs::read_dir(dir).map_err(|error| DataError::Io(dir.to_owned(), error))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| DataError::Io(dir.to_owned(), error))?
            .path();
        if household_id(&path).is_some() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(DataError::NoHouseholds(dir.to_owned()));
    }
    if paths.len() > HOUSEHOLDS_MAX {
        return Err(DataError::TooManyHouseholds(paths.len()));
    }
    paths.sort();
    let mut report = LoadReport::default();
    let mut households = paths
        .iter()
        .map(|path| load_file(path, &mut report))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(duration_ms) = duration_ms {
        let first = households
            .iter()
            .filter_map(|household| household.readings.iter().map(|(ts, _)| *ts).min())
            .min()
            .unwrap_or(0);
        for household in &mut households {
            household
                .readings
                .retain(|(ts, _)| *ts >= first && *ts < first + duration_ms);
        }
    }
    Ok((households, report))
}

/// All readings of all households in publication order: by timestamp, then
/// by household id, so that the order is the same on every run.
pub fn merged_readings(households: &[Household]) -> Vec<Reading> {
    let mut all: Vec<Reading> = households
        .iter()
        .flat_map(|household| {
            household.readings.iter().map(|(ts_ms, power_mw)| Reading {
                node_id: household.node_id.clone(),
                power_w: *power_mw as f64 / 1000.0,
                ts_ms: *ts_ms,
            })
        })
        .collect();
    all.sort_by(|a, b| {
        a.ts_ms
            .cmp(&b.ts_ms)
            .then_with(|| a.node_id.cmp(&b.node_id))
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_and_counts_malformed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc123.csv");
        std::fs::write(
            &path,
            "household\ndate,timestamp,energy,power,power1,power2,power3\n\
             2019-12-24 00:00:01,1577145601982,9,249050,1,1,1\n\
             broken row\n\
             2019-12-24 00:00:03,1577145603982,9,100000,1,1,1\n",
        )
        .unwrap();
        let (households, report) = load_dir(dir.path(), None).unwrap();
        assert_eq!(households.len(), 1);
        assert_eq!(households[0].node_id, "abc123");
        assert_eq!(
            households[0].readings,
            vec![(1577145601982, 249050), (1577145603982, 100000)]
        );
        assert_eq!(report.rows, 3);
        assert_eq!(report.malformed_rows, 1);
        assert!(report.first_malformed.unwrap().contains("abc123.csv:4"));
        let merged = merged_readings(&households);
        assert_eq!(merged[0].power_w, 249.05);
    }

    /// Goal: a directory with more household files than the bound is
    /// refused before any file is read.
    #[test]
    fn a_directory_over_the_household_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for index in 0..=HOUSEHOLDS_MAX {
            std::fs::File::create(dir.path().join(format!("h{index}.csv"))).unwrap();
        }
        let error = load_dir(dir.path(), None).unwrap_err();
        assert!(
            matches!(error, DataError::TooManyHouseholds(count) if count == HOUSEHOLDS_MAX + 1),
            "{error}"
        );
        std::fs::remove_file(dir.path().join("h0.csv")).unwrap();
        let (households, _) = load_dir(dir.path(), None).unwrap();
        assert_eq!(households.len(), HOUSEHOLDS_MAX);
    }

    #[test]
    fn a_missing_directory_names_the_fix() {
        let error = load_dir(Path::new("/no/such/dir"), None).unwrap_err();
        assert!(error.to_string().contains("--data"));
    }
}
