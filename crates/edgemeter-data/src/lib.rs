//! `edgemeter-data` reads the household data set (GEM HOUSE openData,
//! doi:10.21227/4821-vf03; format in `data/README.md`) and computes the
//! oracle: each household's 5-second averages, straight from the CSV, which
//! every test and the simulation's checker compare the pipeline against.
//!
//! - [`csv`]: one file per household, plain or gzipped; the file name is the id.
//! - [`oracle`]: window arithmetic shared with the edge, and the reference averages.

pub mod csv;
pub mod oracle;

pub use csv::{load_dir, DataError, Household, LoadReport};
pub use oracle::{milliwatts, oracle_windows, window_start_ms, OracleWindow, WINDOW_MS};
