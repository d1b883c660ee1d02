//! `SimLink`: the edge's [`CloudLink`] over turmoil TCP to one or more cloud
//! hosts, behaving like the NNG REQ sockets of `NngLink`: one heartbeat
//! socket per node and one data socket dialing every node. A socket has one
//! pipe (connection) per node it dials, each dialled and redialled on its
//! own; many requests are in flight on it, replies matched by request id.
//!
//! As NNG's REQ does, the data socket spreads requests over the pipes that
//! are up (round robin over the nodes, in node order), and when a pipe
//! breaks every request waiting on it goes again at once on another live
//! pipe, or on the first pipe to come up when none is. Any cloud node
//! answers any request, so a node that crashes costs a resend, not a stall.
//!
//! As in NNG (nng_req(7)), a request is sent again when its pipe breaks
//! (on another live pipe, else on the redialled one) and when its resend
//! timer fires. turmoil's TCP never retransmits, so a pipe that lost a
//! segment stalls for good; a request written on the pipe and unanswered
//! for [`RESEND_INTERVAL`] (even one its caller gave up on) therefore marks
//! the pipe stalled: the pipe redials and its pending requests go again,
//! which is what TCP retransmission plus NNG's resend achieve on a real
//! network. Either way a reply can be lost
//! and the cloud can see one request twice: exactly the behaviour the edge
//! and cloud must tolerate.
//!
//! Frames are `u64 request id | body`. A request whose caller gave up (the
//! edge's own timeout dropped the future) is forgotten at the next timer,
//! as NNG forgets a cancelled context.

use crate::net::{connect, read_frame, write_frame};
use edgemeter_edge::{Channel, CloudLink, LinkError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const CLOUD_HOST: &str = "cloud";
pub const HEARTBEAT_PORT: u16 = 63270;
pub const DATA_PORT: u16 = 63271;

/// Requests queued for one socket and not yet taken up. The edge keeps at
/// most `inflight_batches_max` data requests and one heartbeat in flight,
/// so this never fills in practice; when it does, callers wait.
pub const LINK_CALLS_MAX: usize = 64;

/// Requests one socket tracks at once. A request beyond it waits in the call
/// queue, so memory stays bounded whatever the caller does.
pub const PENDING_REQUESTS_MAX: usize = 256;

/// Replies and pipe events queued from a socket's pipe readers to its driver.
pub const PIPE_EVENTS_MAX: usize = 64;

/// How long a request waits for its reply before it is sent again. NNG's
/// default is 60 s; the simulation scales it down with the edge's own
/// timeouts (request 5 s, heartbeat 1 s), so that resends actually happen.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(2_000);

/// The first and the longest pause between dial attempts (NNG's
/// `reconnmint`/`reconnmaxt`).
pub const REDIAL_MIN: Duration = Duration::from_millis(100);
pub const REDIAL_MAX: Duration = Duration::from_millis(1_000);

/// How long one frame write may take; past it the pipe counts as broken.
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// Counters the harness reads for its summary.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub requests: AtomicU64,
    pub resends: AtomicU64,
    pub replies: AtomicU64,
    pub dials: AtomicU64,
    pub breaks: AtomicU64,
}

struct Call {
    body: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

/// The edge's link to the cloud hosts.
#[derive(Debug, Clone)]
pub struct SimLink {
    /// The cloud hosts, in the order the edge numbers them.
    nodes: Vec<String>,
    /// One heartbeat socket per node, by node index.
    heartbeat: Vec<mpsc::Sender<Call>>,
    /// The data socket, dialing every node.
    data: mpsc::Sender<Call>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl SimLink {
    /// Starts the pipes to the cloud hosts `nodes` (turmoil host names) on
    /// the current host. Must run inside a turmoil host.
    pub fn start(nodes: Vec<String>, stats: Arc<LinkStats>) -> SimLink {
        assert!(!nodes.is_empty(), "a link needs a cloud node");
        let mut heartbeat = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let (calls_tx, calls) = mpsc::channel(LINK_CALLS_MAX);
            let hosts = vec![node.clone()];
            let socket = Socket::new("heartbeat", hosts, HEARTBEAT_PORT, calls, stats.clone());
            tokio::task::spawn_local(socket.run());
            heartbeat.push(calls_tx);
        }
        let (data, data_calls) = mpsc::channel(LINK_CALLS_MAX);
        let socket = Socket::new("data", nodes.clone(), DATA_PORT, data_calls, stats);
        tokio::task::spawn_local(socket.run());
        SimLink {
            nodes,
            heartbeat,
            data,
        }
    }
}

impl CloudLink for SimLink {
    fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn node_name(&self, node: usize) -> String {
        self.nodes[node].clone()
    }

    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let calls = match channel {
            Channel::Heartbeat(node) => &self.heartbeat[node],
            Channel::Data => &self.data,
        };
        let (reply, replied) = oneshot::channel();
        let stopped = || LinkError::Unreachable("the link stopped".to_owned());
        calls
            .send(Call { body, reply })
            .await
            .map_err(|_| stopped())?;
        replied.await.map_err(|_| stopped())
    }
}

struct Pending {
    body: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
    /// The pipe it was last written on, while that pipe lives; `None`
    /// while it waits for a live pipe.
    pipe: Option<usize>,
}

enum PipeEvent {
    Reply {
        pipe: usize,
        generation: u64,
        request_id: u64,
        body: Vec<u8>,
    },
    Closed {
        pipe: usize,
        generation: u64,
        reason: String,
    },
}

struct Connected {
    writer: OwnedWriteHalf,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One NNG pipe: the connection to one node.
struct Pipe {
    /// The cloud host it dials.
    host: String,
    connected: Option<Connected>,
    /// Counts the pipe's connections: an event of an older one is stale.
    generation: u64,
    /// Requests written on the current connection and not answered yet,
    /// by id, with when they were written; kept after their caller gives
    /// up, since a missing reply is how a stalled pipe shows.
    awaiting: BTreeMap<u64, Instant>,
    dial_at: Instant,
    redial: Duration,
}

impl Pipe {
    /// When this pipe needs its socket's attention: its next dial while it
    /// is down, else the earliest resend deadline of what it awaits.
    fn next_wake(&self) -> Option<Instant> {
        // Resend timers only matter on a live pipe: without one, the next
        // dial resends everything. (Counting them while disconnected would
        // wake the task in a loop and stall simulated time.)
        if self.connected.is_none() {
            return Some(self.dial_at);
        }
        self.awaiting
            .values()
            .min()
            .map(|sent_at| *sent_at + RESEND_INTERVAL)
    }

    fn overdue(&self, now: Instant) -> bool {
        self.awaiting
            .values()
            .any(|sent_at| *sent_at + RESEND_INTERVAL <= now)
    }
}

/// One NNG REQ socket: its pipes, one per node it dials, and the requests
/// in flight over them. Sends, matches replies, resends.
struct Socket {
    name: &'static str,
    port: u16,
    calls: mpsc::Receiver<Call>,
    pending: BTreeMap<u64, Pending>,
    next_request_id: u64,
    /// By node index.
    pipes: Vec<Pipe>,
    /// The pipe to try first for the next request: round robin, so that
    /// requests spread over the live pipes as NNG spreads them.
    next_pipe: usize,
    events_tx: mpsc::Sender<PipeEvent>,
    events_rx: mpsc::Receiver<PipeEvent>,
    stats: Arc<LinkStats>,
}

impl Socket {
    fn new(
        name: &'static str,
        hosts: Vec<String>,
        port: u16,
        calls: mpsc::Receiver<Call>,
        stats: Arc<LinkStats>,
    ) -> Socket {
        assert!(!hosts.is_empty(), "a socket dials at least one node");
        let (events_tx, events_rx) = mpsc::channel(PIPE_EVENTS_MAX);
        let now = Instant::now();
        let pipes = hosts
            .into_iter()
            .map(|host| Pipe {
                host,
                connected: None,
                generation: 0,
                awaiting: BTreeMap::new(),
                dial_at: now,
                redial: REDIAL_MIN,
            })
            .collect();
        Socket {
            name,
            port,
            calls,
            pending: BTreeMap::new(),
            next_request_id: 1,
            pipes,
            next_pipe: 0,
            events_tx,
            events_rx,
            stats,
        }
    }

    async fn run(mut self) {
        loop {
            self.send_unassigned().await;
            let wake = self.next_wake();
            let room = self.pending.len() < PENDING_REQUESTS_MAX;
            tokio::select! {
                call = self.calls.recv(), if room => match call {
                    Some(call) => self.take_call(call).await,
                    None => return,
                },
                Some(event) = self.events_rx.recv() => self.handle_event(event),
                _ = sleep_until(wake) => self.handle_timer().await,
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let idle = Instant::now() + Duration::from_secs(3600);
        self.pipes
            .iter()
            .filter_map(Pipe::next_wake)
            .fold(idle, Instant::min)
    }

    /// The next live pipe in round-robin order, if any is up.
    fn pick_pipe(&mut self) -> Option<usize> {
        let count = self.pipes.len();
        let picked = (0..count)
            .map(|step| (self.next_pipe + step) % count)
            .find(|&pipe| self.pipes[pipe].connected.is_some())?;
        self.next_pipe = (picked + 1) % count;
        Some(picked)
    }

    async fn take_call(&mut self, call: Call) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            body: call.body,
            reply: call.reply,
            pipe: None,
        };
        self.pending.insert(request_id, pending);
        if let Some(pipe) = self.pick_pipe() {
            self.send(request_id, pipe).await;
        }
    }

    /// Sends every request that waits for a pipe on the live pipes, as NNG
    /// resends a broken pipe's requests on the others. Only a socket with
    /// several pipes has such requests while one is up: a lone pipe's
    /// requests go out when it is redialled.
    async fn send_unassigned(&mut self) {
        if self.pipes.iter().all(|pipe| pipe.connected.is_none()) {
            return;
        }
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.pipe.is_none())
            .map(|(&request_id, _)| request_id)
            .collect();
        for request_id in waiting {
            let Some(pipe) = self.pick_pipe() else {
                return;
            };
            self.stats.resends.fetch_add(1, Ordering::Relaxed);
            debug!(target: "sim::link", socket = self.name, node = %self.pipes[pipe].host, request_id, "request resent on another pipe");
            self.send(request_id, pipe).await;
        }
    }

    /// Writes one pending request on pipe `pipe`.
    async fn send(&mut self, request_id: u64, pipe: usize) {
        let Some(pending) = self.pending.get_mut(&request_id) else {
            return;
        };
        let mut frame = Vec::with_capacity(8 + pending.body.len());
        frame.extend_from_slice(&request_id.to_be_bytes());
        frame.extend_from_slice(&pending.body);
        let target = &mut self.pipes[pipe];
        let Some(connected) = target.connected.as_mut() else {
            return;
        };
        pending.pipe = Some(pipe);
        target.awaiting.insert(request_id, Instant::now());
        let written =
            tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut connected.writer, &frame)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.break_pipe(pipe, &error.to_string()),
            Err(_) => self.break_pipe(pipe, "write timed out"),
        }
    }

    fn handle_event(&mut self, event: PipeEvent) {
        match event {
            PipeEvent::Reply {
                pipe,
                generation,
                request_id,
                body,
            } => {
                if generation != self.pipes[pipe].generation {
                    return;
                }
                self.pipes[pipe].awaiting.remove(&request_id);
                if let Some(pending) = self.pending.remove(&request_id) {
                    // It may have gone again on another pipe meanwhile: that
                    // pipe waits for it no more.
                    if let Some(other) = pending.pipe {
                        self.pipes[other].awaiting.remove(&request_id);
                    }
                    self.stats.replies.fetch_add(1, Ordering::Relaxed);
                    let _ = pending.reply.send(body);
                }
            }
            PipeEvent::Closed {
                pipe,
                generation,
                reason,
            } => {
                let current = &self.pipes[pipe];
                if generation == current.generation && current.connected.is_some() {
                    self.break_pipe(pipe, &reason);
                }
            }
        }
    }

    async fn handle_timer(&mut self) {
        let now = Instant::now();
        self.pending.retain(|_, pending| !pending.reply.is_closed());
        for pipe in 0..self.pipes.len() {
            let target = &self.pipes[pipe];
            if target.connected.is_none() {
                if now >= target.dial_at {
                    self.dial(pipe).await;
                }
                continue;
            }
            if target.overdue(now) {
                // A reply this late means the pipe lost a segment (turmoil
                // never retransmits): redial, and its requests go again.
                self.break_pipe(pipe, "resend timer fired");
                self.dial(pipe).await;
            }
        }
    }

    async fn dial(&mut self, pipe: usize) {
        self.stats.dials.fetch_add(1, Ordering::Relaxed);
        let host = self.pipes[pipe].host.clone();
        match connect(&host, self.port).await {
            Ok(stream) => {
                let target = &mut self.pipes[pipe];
                target.generation += 1;
                let (reader, writer) = stream.into_split();
                let reader = tokio::task::spawn_local(read_replies(
                    reader,
                    pipe,
                    target.generation,
                    self.events_tx.clone(),
                ));
                target.connected = Some(Connected { writer, reader });
                target.redial = REDIAL_MIN;
                info!(target: "sim::link", socket = self.name, node = %host, pending = self.pending.len(), "pipe connected");
                // What waits for a pipe goes on this one: were another up,
                // it would have gone there already.
                let ids: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, pending)| pending.pipe.is_none())
                    .map(|(&request_id, _)| request_id)
                    .collect();
                for request_id in ids {
                    if self.pipes[pipe].connected.is_none() {
                        break;
                    }
                    self.stats.resends.fetch_add(1, Ordering::Relaxed);
                    debug!(target: "sim::link", socket = self.name, node = %host, request_id, "request resent");
                    self.send(request_id, pipe).await;
                }
            }
            Err(_) => {
                let target = &mut self.pipes[pipe];
                target.dial_at = Instant::now() + target.redial;
                target.redial = (target.redial * 2).min(REDIAL_MAX);
            }
        }
    }

    /// Pipe `pipe` is gone: what waited on it waits for a live pipe.
    fn break_pipe(&mut self, pipe: usize, reason: &str) {
        let target = &mut self.pipes[pipe];
        target.awaiting.clear();
        target.dial_at = Instant::now();
        if target.connected.take().is_some() {
            self.stats.breaks.fetch_add(1, Ordering::Relaxed);
            info!(target: "sim::link", socket = self.name, node = %target.host, pending = self.pending.len(), reason, "pipe broken");
        }
        for pending in self.pending.values_mut() {
            if pending.pipe == Some(pipe) {
                pending.pipe = None;
            }
        }
    }
}

/// Reads reply frames off one pipe until it fails, then reports that.
async fn read_replies(
    mut reader: OwnedReadHalf,
    pipe: usize,
    generation: u64,
    events: mpsc::Sender<PipeEvent>,
) {
    let reason = loop {
        match read_frame(&mut reader).await {
            Ok(Some(frame)) if frame.len() >= 8 => {
                let request_id = u64::from_be_bytes(frame[..8].try_into().expect("eight bytes"));
                let body = frame[8..].to_vec();
                let event = PipeEvent::Reply {
                    pipe,
                    generation,
                    request_id,
                    body,
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Ok(Some(_)) => break "reply frame without a request id".to_owned(),
            Ok(None) => break "cloud closed the pipe".to_owned(),
            Err(error) => break error.to_string(),
        }
    };
    let _ = events
        .send(PipeEvent::Closed {
            pipe,
            generation,
            reason,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use turmoil::net::TcpListener;

    /// Replies to every request with the host's name, except `die`, on
    /// which the host closes the connection unanswered, as a cloud node
    /// that crashes with the request in flight.
    async fn serve(host: &'static str, port: u16) -> turmoil::Result {
        let listener = TcpListener::bind(("0.0.0.0", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let (mut reader, mut writer) = stream.into_split();
                while let Ok(Some(frame)) = read_frame(&mut reader).await {
                    if &frame[8..] == b"die" && host == "cloud-b" {
                        return;
                    }
                    let mut reply = frame[..8].to_vec();
                    reply.extend_from_slice(host.as_bytes());
                    if write_frame(&mut writer, &reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn ask(link: &SimLink, channel: Channel, body: &[u8]) -> String {
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            link.request(channel, body.to_vec()),
        )
        .await
        .expect("a reply in time")
        .expect("a reply");
        String::from_utf8(reply).expect("a host name")
    }

    /// Goal: with two nodes, heartbeats reach their own node; data spreads
    /// over both; a request whose node drops it goes again on the other
    /// node, so every request is answered. Method: two echo hosts, the
    /// second of which closes the connection on `die`.
    #[test]
    fn data_spreads_and_a_dropped_request_goes_again_on_the_other_node() {
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(120))
            .build();
        for host in ["cloud-a", "cloud-b"] {
            sim.host(host, move || async move {
                tokio::task::spawn_local(serve(host, HEARTBEAT_PORT));
                serve(host, DATA_PORT).await
            });
        }
        let answers: Arc<Mutex<Vec<String>>> = Arc::default();
        let stats = Arc::new(LinkStats::default());
        let (seen, counters) = (answers.clone(), stats.clone());
        sim.client("edge", async move {
            let nodes = vec!["cloud-a".to_owned(), "cloud-b".to_owned()];
            let link = SimLink::start(nodes, counters);
            assert_eq!(link.nodes(), 2);
            assert_eq!(link.node_name(1), "cloud-b");
            assert_eq!(ask(&link, Channel::Heartbeat(0), b"hb").await, "cloud-a");
            assert_eq!(ask(&link, Channel::Heartbeat(1), b"hb").await, "cloud-b");
            // Both data pipes are up once both nodes answered a heartbeat
            // and a moment passed; then requests alternate.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let spread =
                futures::future::join_all((0..8).map(|_| ask(&link, Channel::Data, b"hello")))
                    .await;
            let dying =
                futures::future::join_all((0..8).map(|_| ask(&link, Channel::Data, b"die"))).await;
            let mut seen = seen.lock().unwrap();
            seen.extend(spread);
            seen.extend(dying);
            Ok(())
        });
        sim.run().unwrap();
        let answers = answers.lock().unwrap();
        let (spread, dying) = answers.split_at(8);
        assert!(spread.iter().any(|host| host == "cloud-a"), "{spread:?}");
        assert!(spread.iter().any(|host| host == "cloud-b"), "{spread:?}");
        assert!(
            dying.iter().all(|host| host == "cloud-a"),
            "only node A answers `die`: {dying:?}"
        );
        assert!(
            stats.breaks.load(Ordering::Relaxed) > 0,
            "node B dropped its pipe"
        );
        assert!(stats.resends.load(Ordering::Relaxed) > 0);
    }
}
