//! `edgemeter-env` holds what edge and cloud logic take from the world
//! outside them, so that the same logic runs in deployment and under
//! simulation:
//!
//! - [`clock`]: the wall clock, for the timestamps stored with each tuple.
//!   Durations and timers come from tokio time, which turmoil simulates.
//! - [`planted`]: the harness's planted bugs. Each is a switch that the
//!   simulation turns on to prove its checker catches that bug. Without the
//!   `planted-bugs` feature every switch is the constant `false`.
//! - [`crash`]: named crash points where the simulation may freeze a host
//!   and crash it, to hit the narrow windows between two effects.
//!
//! This crate performs no IO of its own.

pub mod clock;
pub mod crash;
pub mod planted;

pub use clock::{SystemClock, WallClock};
pub use crash::{CrashPoint, CrashPoints};
pub use planted::{Bug, PlantedBugs};
