//! The edge's view of the cloud: connected or disconnected, decided by
//! heartbeats alone. A state machine with no IO: the driver tells it when a
//! heartbeat succeeded or failed and asks it when the next one is due.
//!
//! [`Heartbeat`] is one cloud node's state; [`NodeHeartbeats`] runs one per
//! node and decides the edge's: connected while any node answers, because
//! any node takes any batch (the link spreads data over the nodes that are
//! up). It also says when a node went away or came back, so that the log
//! names the node even while the edge as a whole stays connected.
//!
//! [`HeartbeatForm`] picks the heartbeat's version: version 4, which names
//! the edge process (the cloud's instance lease) and is answered with every
//! store bucket's epoch, unless the cloud answered the last one with
//! something other than its reply (a cloud of a previous version refuses
//! it as malformed). Then the version below, one at a time (3, which still
//! reports the backlog, then 2, which every older cloud answers), until
//! [`BACKLOG_RETRY_INTERVAL`] has passed and version 4 is tried again (the
//! cloud may have been upgraded). One form serves every node: a node of an older version makes every node
//! hear the older form for a while, which they all answer.

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

/// What one heartbeat's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeartbeatChange {
    /// The node's own change, if any.
    pub node: Option<NodeChange>,
    /// The edge's change (any node connected, or none), if any.
    pub edge: Option<LinkState>,
}

/// A change of one node's state, as the log tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// The node answered for the first time since the edge started.
    Answers,
    /// The node missed `misses_max` heartbeats in a row.
    WentAway,
    /// The node answered again after it went away.
    CameBack,
}

/// One [`Heartbeat`] per cloud node, by node index, and the edge's state
/// over them: connected while any node is.
#[derive(Debug)]
pub struct NodeHeartbeats {
    nodes: Vec<Heartbeat>,
    /// Per node, whether it ever answered: its first answer is news of a
    /// different kind than an answer after it went away.
    answered: Vec<bool>,
}

impl NodeHeartbeats {
    /// `nodes` heartbeats with the same timing, all disconnected and due now.
    pub fn new(now: Instant, interval: Duration, misses_max: u32, nodes: usize) -> NodeHeartbeats {
        assert!(nodes > 0, "an edge heartbeats at least one cloud node");
        NodeHeartbeats {
            nodes: (0..nodes)
                .map(|_| Heartbeat::new(now, interval, misses_max))
                .collect(),
            answered: vec![false; nodes],
        }
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The edge's state: connected while any node is.
    pub fn state(&self) -> LinkState {
        if self.connected_nodes() > 0 {
            LinkState::Connected
        } else {
            LinkState::Disconnected
        }
    }

    pub fn node_state(&self, node: usize) -> LinkState {
        self.nodes[node].state()
    }

    pub fn connected_nodes(&self) -> usize {
        self.nodes
            .iter()
            .filter(|heartbeat| heartbeat.state() == LinkState::Connected)
            .count()
    }

    /// When the driver should next wake for a heartbeat: the earliest due
    /// node's time, if any node has none in flight.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes.iter().filter_map(Heartbeat::poll_timeout).min()
    }

    /// The lowest-numbered node whose heartbeat is due now, marked in
    /// flight; `None` when none is. Called until `None`: at most once per
    /// node, since a node in flight is not due.
    pub fn poll_send(&mut self, now: Instant) -> Option<usize> {
        self.nodes
            .iter_mut()
            .position(|heartbeat| heartbeat.poll_send(now))
    }

    /// Records the outcome of node `node`'s heartbeat.
    pub fn handle_result(&mut self, now: Instant, node: usize, success: bool) -> HeartbeatChange {
        assert!(node < self.nodes.len(), "no cloud node {node}");
        let edge_before = self.state();
        let node_change = self.nodes[node]
            .handle_result(now, success)
            .map(|state| match state {
                LinkState::Disconnected => NodeChange::WentAway,
                LinkState::Connected if self.answered[node] => NodeChange::CameBack,
                LinkState::Connected => NodeChange::Answers,
            });
        if success {
            self.answered[node] = true;
        }
        let edge_after = self.state();
        HeartbeatChange {
            node: node_change,
            edge: (edge_after != edge_before).then_some(edge_after),
        }
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

    /// Goal: the edge is connected while any node answers, each node's
    /// changes are reported apart from the edge's, a node's first answer
    /// differs from its return, and due nodes are handed out one at a time.
    /// Method: two nodes, two misses to go away; fail node 0 while node 1
    /// answers, then fail both, then bring node 0 back.
    #[test]
    fn the_edge_is_connected_while_any_node_answers() {
        let interval = Duration::from_secs(1);
        let start = Instant::now();
        let mut heartbeats = NodeHeartbeats::new(start, interval, 2, 2);
        assert_eq!(heartbeats.state(), LinkState::Disconnected);
        assert_eq!(heartbeats.poll_timeout(), Some(start));
        assert_eq!(heartbeats.poll_send(start), Some(0));
        assert_eq!(heartbeats.poll_send(start), Some(1));
        assert_eq!(heartbeats.poll_send(start), None, "both in flight");
        assert_eq!(heartbeats.poll_timeout(), None);
        let change = heartbeats.handle_result(start, 1, true);
        assert_eq!(change.node, Some(NodeChange::Answers));
        assert_eq!(change.edge, Some(LinkState::Connected));
        let change = heartbeats.handle_result(start, 0, true);
        assert_eq!(change.node, Some(NodeChange::Answers));
        assert_eq!(change.edge, None, "already connected through node 1");
        assert_eq!(heartbeats.connected_nodes(), 2);

        // Node 0 misses twice: it went away, the edge stays connected.
        let mut now = start;
        for miss in 0..2 {
            now += interval;
            assert_eq!(heartbeats.poll_send(now), Some(0));
            assert_eq!(heartbeats.poll_send(now), Some(1));
            assert_eq!(
                heartbeats.handle_result(now, 1, true),
                HeartbeatChange::default()
            );
            let change = heartbeats.handle_result(now, 0, false);
            let expected = (miss == 1).then_some(NodeChange::WentAway);
            assert_eq!(change.node, expected, "miss {miss}");
            assert_eq!(change.edge, None);
        }
        assert_eq!(heartbeats.node_state(0), LinkState::Disconnected);
        assert_eq!(heartbeats.state(), LinkState::Connected);

        // Node 1 goes away too: now the edge is disconnected.
        for miss in 0..2 {
            now += interval;
            assert_eq!(heartbeats.poll_send(now), Some(0));
            assert_eq!(heartbeats.poll_send(now), Some(1));
            assert_eq!(
                heartbeats.handle_result(now, 0, false),
                HeartbeatChange::default()
            );
            let change = heartbeats.handle_result(now, 1, false);
            if miss == 1 {
                assert_eq!(change.node, Some(NodeChange::WentAway));
                assert_eq!(change.edge, Some(LinkState::Disconnected));
            } else {
                assert_eq!(change, HeartbeatChange::default());
            }
        }
        assert_eq!(heartbeats.state(), LinkState::Disconnected);

        // Node 0 comes back: a return, not a first answer.
        now += interval;
        assert_eq!(heartbeats.poll_send(now), Some(0));
        let change = heartbeats.handle_result(now, 0, true);
        assert_eq!(change.node, Some(NodeChange::CameBack));
        assert_eq!(change.edge, Some(LinkState::Connected));
        assert_eq!(heartbeats.connected_nodes(), 1);
        assert_eq!(
            heartbeats.poll_timeout(),
            Some(now),
            "node 1 is due, not sent yet"
        );
    }

    /// Goal: a node whose heartbeat is in flight is not due, and the wake
    /// is the earliest node's. Method: answer the nodes at different times.
    #[test]
    fn the_next_wake_is_the_earliest_node_due() {
        let interval = Duration::from_secs(1);
        let start = Instant::now();
        let mut heartbeats = NodeHeartbeats::new(start, interval, 3, 3);
        for node in 0..3 {
            assert_eq!(heartbeats.poll_send(start), Some(node));
        }
        let late = start + Duration::from_millis(700);
        heartbeats.handle_result(late, 2, true);
        assert_eq!(heartbeats.poll_timeout(), Some(late + interval));
        let early = start + Duration::from_millis(200);
        heartbeats.handle_result(early, 0, true);
        assert_eq!(heartbeats.poll_timeout(), Some(early + interval));
        assert_eq!(heartbeats.poll_send(early + interval), Some(0));
        assert_eq!(heartbeats.poll_send(early + interval), None);
        assert_eq!(heartbeats.poll_timeout(), Some(late + interval));
    }
}
