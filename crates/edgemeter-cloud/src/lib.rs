//! `edgemeter-cloud` is the cloud's logic, free of any particular IO.
pub mod cache;
pub mod postal;
pub use cache::*;
pub use postal::{postal_code_for, stable_hash, state_of, GermanState};
