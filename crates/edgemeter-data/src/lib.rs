//! `edgemeter-data` reads the household data set (GEM HOUSE openData,
//! doi:10.21227/4821-vf03; format in `data/README.md`) and holds the window
//! arithmetic the edge, the replay and the oracle share. The oracle itself
//! (the reference averages) is `edgemeter-checker`'s.
//!
//! - [`csv`]: one file per household, plain or gzipped; the file name is the id.
//! - [`window`]: 5-second event-time windows, milliwatt sums and averages.

pub mod csv;
pub mod window;

pub use csv::{load_dir, DataError, Household, LoadReport};
pub use window::{average_w, milliwatts, window_start_ms, WINDOW_MS};
