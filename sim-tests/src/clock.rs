//! The simulation's [`WallClock`]: turmoil's simulated time since the start
//! plus a fixed epoch (the first reading of the replayed slice), so that the
//! timestamps the edge and cloud store are reproducible and line up with
//! the data's event time. Nothing here reads the operating system's clock.
//!
//! A clock may carry a [`Skew`]: an offset the harness sets between steps
//! (a clock-skew fault of one edge host), as an edge whose NTP drifted or
//! jumped reads a wall clock ahead of or behind the cloud's. Only the wall
//! clock moves; tokio's monotonic time, which every timeout uses, does not,
//! as in deployment.

use edgemeter_env::WallClock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A host's wall-clock offset in milliseconds, shared with the harness.
#[derive(Debug, Clone, Default)]
pub struct Skew(Arc<AtomicI64>);

impl Skew {
    pub fn set(&self, offset_ms: i64) {
        self.0.store(offset_ms, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
pub struct SimClock {
    epoch_ms: i64,
    skew: Option<Skew>,
}

impl SimClock {
    pub fn new(epoch_ms: i64) -> SimClock {
        SimClock {
            epoch_ms,
            skew: None,
        }
    }

    /// A clock that reads `skew` ahead of the simulation's wall time.
    pub fn skewed(epoch_ms: i64, skew: Skew) -> SimClock {
        SimClock {
            epoch_ms,
            skew: Some(skew),
        }
    }
}

impl WallClock for SimClock {
    fn now_ms(&self) -> i64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        let offset = self.skew.as_ref().map_or(0, Skew::get);
        self.epoch_ms + elapsed.as_millis() as i64 + offset
    }
}
