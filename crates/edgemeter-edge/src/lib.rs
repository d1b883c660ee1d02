//! `edgemeter-edge` is the edge's logic, free of any particular IO.
pub mod ports;
pub use ports::*;
