//! Which edges are alive, from their heartbeats. No IO: the service reports
//! each heartbeat and asks, on its own tick, which edges changed state.

use std::collections::BTreeMap;
use tokio::time::{Duration, Instant};
use tracing::{info, warn};

/// The most edges tracked. Heartbeats from further edge ids are answered
/// but not tracked, so a peer inventing ids cannot grow this map.
pub const EDGES_MAX: usize = 10_000;

#[derive(Debug)]
struct Seen {
    last: Instant,
    alive: bool,
}

#[derive(Debug)]
pub struct HeartbeatTracker {
    timeout: Duration,
    edges: BTreeMap<String, Seen>,
}

impl HeartbeatTracker {
    pub fn new(timeout: Duration) -> HeartbeatTracker {
        assert!(!timeout.is_zero());
        HeartbeatTracker {
            timeout,
            edges: BTreeMap::new(),
        }
    }

    /// Records a heartbeat; logs when an edge is first seen or returns.
    pub fn seen(&mut self, edge_id: &str, now: Instant) {
        if let Some(seen) = self.edges.get_mut(edge_id) {
            if !seen.alive {
                info!(edge = edge_id, "edge heartbeats returned");
            }
            seen.last = now;
            seen.alive = true;
            return;
        }
        if self.edges.len() >= EDGES_MAX {
            return;
        }
        info!(edge = edge_id, "edge connected");
        self.edges.insert(
            edge_id.to_owned(),
            Seen {
                last: now,
                alive: true,
            },
        );
    }

    /// Marks edges silent for longer than the timeout; logs each change.
    pub fn check(&mut self, now: Instant) -> usize {
        let mut stopped = 0;
        for (edge_id, seen) in &mut self.edges {
            if seen.alive && now.duration_since(seen.last) > self.timeout {
                seen.alive = false;
                stopped += 1;
                warn!(edge = %edge_id, timeout_ms = self.timeout.as_millis() as u64, "edge heartbeats stopped");
            }
        }
        stopped
    }

    pub fn liveness(&self) -> Vec<(String, bool)> {
        self.edges
            .iter()
            .map(|(edge_id, seen)| (edge_id.clone(), seen.alive))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a peer inventing edge ids cannot grow the tracker. Method: fill
    /// it, then a new id is not tracked while a known one still is.
    #[test]
    fn edges_beyond_the_limit_are_not_tracked() {
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(Duration::from_secs(3));
        for index in 0..EDGES_MAX {
            tracker.seen(&format!("edge-{index}"), start);
        }
        tracker.seen("one-more", start);
        let liveness = tracker.liveness();
        assert_eq!(liveness.len(), EDGES_MAX);
        assert!(liveness.iter().all(|(edge_id, _)| edge_id != "one-more"));
        assert_eq!(tracker.check(start + Duration::from_secs(4)), EDGES_MAX);
        tracker.seen("edge-0", start + Duration::from_secs(5));
        assert_eq!(tracker.liveness()[0], ("edge-0".to_owned(), true));
    }

    #[test]
    fn an_edge_goes_quiet_and_returns() {
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(Duration::from_secs(3));
        tracker.seen("e", start);
        assert_eq!(tracker.check(start + Duration::from_secs(3)), 0);
        assert_eq!(tracker.check(start + Duration::from_secs(4)), 1);
        assert_eq!(tracker.liveness(), vec![("e".to_owned(), false)]);
        assert_eq!(
            tracker.check(start + Duration::from_secs(5)),
            0,
            "logged once"
        );
        tracker.seen("e", start + Duration::from_secs(6));
        assert_eq!(tracker.liveness(), vec![("e".to_owned(), true)]);
    }
}
