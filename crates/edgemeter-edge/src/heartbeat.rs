//! The edge's view of the cloud: connected or disconnected, decided by
//! heartbeats alone. A state machine with no IO: the driver tells it when a
//! heartbeat succeeded or failed and asks it when the next one is due.
//!
//! [`HeartbeatForm`] picks the heartbeat's version: version 3, which
//! reports the edge's backlog, unless the cloud answered the last one with
//! something other than a heartbeat reply (a cloud of the previous version
//! refuses version 3 as malformed). Then version 2, which every cloud of
//! the previous version answers, until [`BACKLOG_RETRY_INTERVAL`] has
//! passed and version 3 is tried again (the cloud may have been upgraded).

use tokio::time::{Duration, Instant};

/// How long the edge sends version-2 heartbeats after a cloud refused a
/// version-3 one before it tries version 3 again. Each try costs one
/// missed heartbeat against an old cloud, far below the misses that mark
/// it disconnected; ten minutes keeps the dashboard's backlog at most that
/// late after the cloud is upgraded.
pub const BACKLOG_RETRY_INTERVAL: Duration = Duration::from_secs(600);

/// A heartbeat's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Version 3: with the backlog.
    WithBacklog,
    /// Version 2: without, for a cloud that refused version 3.
    WithoutBacklog,
}

/// Which heartbeat version to send, from how the cloud answered.
#[derive(Debug, Default)]
pub struct HeartbeatForm {
    /// Until when version 2 is sent, after a refusal of version 3.
    without_backlog_until: Option<Instant>,
}

impl HeartbeatForm {
    pub fn poll_form(&self, now: Instant) -> Form {
        match self.without_backlog_until {
            Some(until) if now < until => Form::WithoutBacklog,
            _ => Form::WithBacklog,
        }
    }

    /// Records how the cloud answered a heartbeat sent in `form`:
    /// `understood` is whether the reply was a heartbeat reply. Returns
    /// true when this answer switched the edge to version 2.
    pub fn handle_reply(&mut self, now: Instant, form: Form, understood: bool) -> bool {
        if form != Form::WithBacklog {
            return false;
        }
        if understood {
            self.without_backlog_until = None;
            return false;
        }
        self.without_backlog_until = Some(now + BACKLOG_RETRY_INTERVAL);
        true
    }
}

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

    /// Goal: version 3 until a cloud answers it with something else, then
    /// version 2 for the retry interval, then version 3 again, which an
    /// upgraded cloud keeps; answers to version 2 change nothing.
    #[test]
    fn a_cloud_that_refuses_the_backlog_gets_version_two_for_a_while() {
        let start = Instant::now();
        let mut form = HeartbeatForm::default();
        assert_eq!(form.poll_form(start), Form::WithBacklog);
        assert!(!form.handle_reply(start, Form::WithBacklog, true));
        assert!(form.handle_reply(start, Form::WithBacklog, false));
        assert_eq!(form.poll_form(start), Form::WithoutBacklog);
        assert!(!form.handle_reply(start, Form::WithoutBacklog, false));
        assert!(!form.handle_reply(start, Form::WithoutBacklog, true));
        let almost = start + BACKLOG_RETRY_INTERVAL - Duration::from_millis(1);
        assert_eq!(form.poll_form(almost), Form::WithoutBacklog);
        let retry = start + BACKLOG_RETRY_INTERVAL;
        assert_eq!(form.poll_form(retry), Form::WithBacklog);
        assert!(!form.handle_reply(retry, Form::WithBacklog, true));
        assert_eq!(
            form.poll_form(retry + BACKLOG_RETRY_INTERVAL * 5),
            Form::WithBacklog
        );
    }

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
