//! The edge's view of the cloud: connected or disconnected, decided by
//! heartbeats alone. A state machine with no IO: the driver tells it when a
//! heartbeat succeeded or failed and asks it when the next one is due.
//!
//! [`HeartbeatForm`] picks the heartbeat's version: version 4, which names
//! the edge process (the cloud's instance lease) and is answered with every
//! store bucket's epoch, unless the cloud answered the last one with
//! something other than its reply (a cloud of a previous version refuses
//! it as malformed). Then the version below, one at a time (3, which still
//! reports the backlog, then 2, which every older cloud answers), until
//! [`BACKLOG_RETRY_INTERVAL`] has passed and version 4 is tried again (the
//! cloud may have been upgraded).

use tokio::time::{Duration, Instant};

/// How long the edge sends an older heartbeat version after a cloud refused
/// a newer one before it tries version 4 again. Each try costs one missed
/// heartbeat against an old cloud, far below the misses that mark it
/// disconnected; ten minutes keeps the dashboard's backlog and the bucket
/// epochs at most that late after the cloud is upgraded.
pub const BACKLOG_RETRY_INTERVAL: Duration = Duration::from_secs(600);

/// A heartbeat's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Version 4: the instance and the backlog; bucket epochs back.
    WithInstance,
    /// Version 3: the backlog, for a cloud that refused version 4.
    WithBacklog,
    /// Version 2: neither, for a cloud that refused version 3.
    WithoutBacklog,
}

impl Form {
    /// The next older form, if any.
    fn older(self) -> Option<Form> {
        match self {
            Form::WithInstance => Some(Form::WithBacklog),
            Form::WithBacklog => Some(Form::WithoutBacklog),
            Form::WithoutBacklog => None,
        }
    }
}

/// Which heartbeat version to send, from how the cloud answered.
#[derive(Debug, Default)]
pub struct HeartbeatForm {
    /// The older form sent after a refusal, and until when.
    fallback: Option<(Form, Instant)>,
}

impl HeartbeatForm {
    pub fn poll_form(&self, now: Instant) -> Form {
        match self.fallback {
            Some((form, until)) if now < until => form,
            _ => Form::WithInstance,
        }
    }

    /// Records how the cloud answered a heartbeat sent in `form`:
    /// `understood` is whether the reply was that version's reply. Returns
    /// the older form the edge switched to, if this answer switched it.
    pub fn handle_reply(&mut self, now: Instant, form: Form, understood: bool) -> Option<Form> {
        if understood {
            // The newest form understood ends the fallback; an older one
            // understood keeps it until the retry is due.
            if form == Form::WithInstance {
                self.fallback = None;
            }
            return None;
        }
        // A refusal of a form other than the one in force now (a reply that
        // was in flight) changes nothing.
        if form != self.poll_form(now) {
            return None;
        }
        let older = form.older()?;
        self.fallback = Some((older, now + BACKLOG_RETRY_INTERVAL));
        Some(older)
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

    /// Goal: version 4 until a cloud answers it with something else, then
    /// version 3, then (refused too) version 2, each for the retry
    /// interval, then version 4 again, which an upgraded cloud keeps;
    /// answers to older versions understood keep the fallback, and a late
    /// refusal of a form no longer in force changes nothing.
    #[test]
    fn a_cloud_that_refuses_newer_heartbeats_gets_older_ones_for_a_while() {
        let start = Instant::now();
        let mut form = HeartbeatForm::default();
        assert_eq!(form.poll_form(start), Form::WithInstance);
        assert_eq!(form.handle_reply(start, Form::WithInstance, true), None);
        assert_eq!(
            form.handle_reply(start, Form::WithInstance, false),
            Some(Form::WithBacklog)
        );
        assert_eq!(form.poll_form(start), Form::WithBacklog);
        assert_eq!(form.handle_reply(start, Form::WithBacklog, true), None);
        assert_eq!(form.poll_form(start), Form::WithBacklog, "kept");
        assert_eq!(
            form.handle_reply(start, Form::WithInstance, false),
            None,
            "a late refusal of version 4"
        );
        assert_eq!(
            form.handle_reply(start, Form::WithBacklog, false),
            Some(Form::WithoutBacklog)
        );
        assert_eq!(form.handle_reply(start, Form::WithoutBacklog, false), None);
        let almost = start + BACKLOG_RETRY_INTERVAL - Duration::from_millis(1);
        assert_eq!(form.poll_form(almost), Form::WithoutBacklog);
        let retry = start + BACKLOG_RETRY_INTERVAL;
        assert_eq!(form.poll_form(retry), Form::WithInstance);
        assert_eq!(form.handle_reply(retry, Form::WithInstance, true), None);
        assert_eq!(
            form.poll_form(retry + BACKLOG_RETRY_INTERVAL * 5),
            Form::WithInstance
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
