//! The edge's view of the cloud: connected or disconnected, decided by
//! heartbeats alone. A state machine with no IO: the driver tells it when a
//! heartbeat succeeded or failed and asks it when the next one is due.

use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connected,
    Disconnected,
}

#[derive(Debug)]
pub struct Heartbeat {
    state: LinkState,
    /// Consecutive failed heartbeats.
    misses: u32,
    /// This many consecutive misses mark the cloud disconnected. One lost
    /// heartbeat on a lossy link should not stop shipping.
    misses_max: u32,
    interval: Duration,
    next_due: Instant,
    in_flight: bool,
}

impl Heartbeat {
    pub fn new(now: Instant, interval: Duration, misses_max: u32) -> Heartbeat {
        assert!(misses_max > 0);
        assert!(!interval.is_zero());
        Heartbeat {
            state: LinkState::Disconnected,
            misses: 0,
            misses_max,
            interval,
            next_due: now,
            in_flight: false,
        }
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    /// When the driver should next wake for a heartbeat.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.in_flight).then_some(self.next_due)
    }

    /// True when a heartbeat should be sent now; marks it in flight.
    pub fn poll_send(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.next_due {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// Records a heartbeat's outcome; returns the new state if it changed.
    pub fn handle_result(&mut self, now: Instant, success: bool) -> Option<LinkState> {
        assert!(self.in_flight, "a heartbeat result without a heartbeat");
        self.in_flight = false;
        self.next_due = now + self.interval;
        let before = self.state;
        if success {
            self.misses = 0;
            self.state = LinkState::Connected;
        } else {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= self.misses_max {
                self.state = LinkState::Disconnected;
            }
        }
        (self.state != before).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_on_success_and_disconnects_after_misses() {
        let start = Instant::now();
        let mut heartbeat = Heartbeat::new(start, Duration::from_secs(1), 2);
        assert_eq!(heartbeat.state(), LinkState::Disconnected);
        assert!(heartbeat.poll_send(start));
        assert!(!heartbeat.poll_send(start), "one heartbeat at a time");
        assert_eq!(
            heartbeat.handle_result(start, true),
            Some(LinkState::Connected)
        );
        assert!(!heartbeat.poll_send(start), "not due yet");
        let later = start + Duration::from_secs(1);
        assert!(heartbeat.poll_send(later));
        assert_eq!(heartbeat.handle_result(later, false), None);
        assert!(heartbeat.poll_send(later + Duration::from_secs(1)));
        assert_eq!(
            heartbeat.handle_result(later, false),
            Some(LinkState::Disconnected)
        );
    }
}
