//! Shared by the simulation tests: the data set, loaded once per test
//! binary, and the per-seed shapes the tests use.

#![allow(dead_code)]

use sim_tests::dataset::{default_data_dir, DataSet};
use sim_tests::faults::DrawOptions;
use std::sync::OnceLock;

pub fn data() -> &'static DataSet {
    static DATA: OnceLock<DataSet> = OnceLock::new();
    DATA.get_or_init(|| DataSet::load(&default_data_dir()).expect("data/gem-house-1h loads"))
}

/// The default shape of `edgemeter-sim run`, optionally with a planted bug.
pub fn default_shape(mutation: Option<&str>) -> DrawOptions {
    DrawOptions {
        mutation: mutation.map(str::to_owned),
        ..sim_tests::default_options(data())
    }
}

/// A small shape for tests that run many simulations in any build.
pub fn small_shape(mutation: Option<&str>) -> DrawOptions {
    DrawOptions {
        households: 2,
        duration_ms: 60_000,
        ..default_shape(mutation)
    }
}

/// Worker threads for multi-seed tests: the machines have two cores.
pub const WORKERS: usize = 2;
