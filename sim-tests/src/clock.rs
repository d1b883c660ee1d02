//! The simulation's [`WallClock`]: turmoil's simulated time since the start
//! plus a fixed epoch (the first reading of the replayed slice), so that the
//! timestamps the edge and cloud store are reproducible and line up with
//! the data's event time. Nothing here reads the operating system's clock.

use edgemeter_env::WallClock;

#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    epoch_ms: i64,
}

impl SimClock {
    pub fn new(epoch_ms: i64) -> SimClock {
        SimClock { epoch_ms }
    }
}

impl WallClock for SimClock {
    fn now_ms(&self) -> i64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        self.epoch_ms + elapsed.as_millis() as i64
    }
}
