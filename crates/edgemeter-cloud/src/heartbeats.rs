//! Which edges are alive, from their heartbeats, and the backlog each last
//! reported (version-3 heartbeats). No IO: the service reports each
//! heartbeat and asks, on its own tick, which edges changed state.

use edgemeter_wire::Backlog;
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
    /// What its last heartbeat reported; `None` when that heartbeat
    /// carried no backlog (an older edge, or one whose cloud fell back).
    backlog: Option<Backlog>,
}

/// One edge as the heartbeats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeView {
    pub edge_id: String,
    /// Whether its heartbeats are current.
    pub alive: bool,
    /// The backlog its last heartbeat reported, if it reported one.
    pub backlog: Option<Backlog>,
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

    /// Records a heartbeat and the backlog it reported; logs when an edge
    /// is first seen or returns.
    pub fn seen(&mut self, edge_id: &str, now: Instant, backlog: Option<Backlog>) {
        if let Some(seen) = self.edges.get_mut(edge_id) {
            if !seen.alive {
                info!(edge = edge_id, "edge heartbeats returned");
            }
            seen.last = now;
            seen.alive = true;
            seen.backlog = backlog;
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
                backlog,
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

    /// Every tracked edge, by edge id.
    pub fn views(&self) -> Vec<EdgeView> {
        self.edges
            .iter()
            .map(|(edge_id, seen)| EdgeView {
                edge_id: edge_id.clone(),
                alive: seen.alive,
                backlog: seen.backlog,
            })
            .collect()
    }

    /// How many edges' heartbeats are current.
    pub fn alive_count(&self) -> usize {
        self.edges.values().filter(|seen| seen.alive).count()
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
            tracker.seen(&format!("edge-{index}"), start, None);
        }
        tracker.seen("one-more", start, None);
        let liveness = tracker.liveness();
        assert_eq!(liveness.len(), EDGES_MAX);
        assert!(liveness.iter().all(|(edge_id, _)| edge_id != "one-more"));
        assert_eq!(tracker.check(start + Duration::from_secs(4)), EDGES_MAX);
        tracker.seen("edge-0", start + Duration::from_secs(5), None);
        assert_eq!(tracker.liveness()[0], ("edge-0".to_owned(), true));
    }

    #[test]
    fn an_edge_goes_quiet_and_returns() {
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(Duration::from_secs(3));
        let backlog = Backlog {
            queued: 4,
            sent: 2,
            oldest_unacked_age_ms: 900,
        };
        tracker.seen("e", start, Some(backlog));
        assert_eq!(tracker.views()[0].backlog, Some(backlog));
        assert_eq!(tracker.alive_count(), 1);
        assert_eq!(tracker.check(start + Duration::from_secs(3)), 0);
        assert_eq!(tracker.check(start + Duration::from_secs(4)), 1);
        assert_eq!(tracker.liveness(), vec![("e".to_owned(), false)]);
        assert_eq!(tracker.alive_count(), 0);
        assert_eq!(
            tracker.check(start + Duration::from_secs(5)),
            0,
            "logged once"
        );
        tracker.seen("e", start + Duration::from_secs(6), None);
        assert_eq!(tracker.liveness(), vec![("e".to_owned(), true)]);
        assert_eq!(
            tracker.views()[0].backlog,
            None,
            "a heartbeat without a backlog does not keep an old one"
        );
    }
}
