//! `SimLink`: the edge's [`CloudLink`] over turmoil TCP to one or more cloud
//! hosts, the model of `NngLink`'s NNG REQ sockets: one heartbeat socket per
//! node and one data socket dialing every node. A socket has one pipe
//! (connection) per node it dials, each dialled and redialled on its own;
//! many requests are in flight on it, replies matched by request id.
//!
//! What NNG's REQ does (nng_req(7), and the `CloudLink` contract suite in
//! `edgemeter-contract`, run against this model and against `NngLink`):
//! - a request goes on the next live pipe, round robin over the nodes in
//!   node order;
//! - when a pipe breaks (the peer closed it, a write failed), every request
//!   waiting on it goes again at once on another live pipe, or on the first
//!   pipe to come up when none is, and the pipe redials;
//! - when a request's resend timer fires with no reply, it goes again on
//!   the next live pipe, which with one node is the same pipe. The timer
//!   never redials: NNG cannot tell a stalled TCP connection from a slow
//!   peer, and keeps the connection. (The model used to redial here; the
//!   contract's stalled-connection behaviour showed NNG does not.)
//!
//! Below NNG, TCP. A real connection delays bytes through a stall or a
//! partition and retransmits them after it; turmoil's TCP never
//! retransmits, so a segment a partition dropped leaves a gap that stalls
//! the turmoil stream for good. The model's pipe stands in for the kernel
//! there ([`TcpModel`]): a pipe that has written and heard nothing back
//! since probes the path on TCP's retransmission backoff (a ping frame,
//! request id 0, which the cloud host echoes at once, like an ACK, and a
//! fresh turmoil stream); when the fresh stream answers and the old one
//! stays silent, the old one lost a segment, and the pipe carries on over
//! the fresh stream, writing again what still waits for a reply, as TCP
//! would retransmit it. That is not an NNG redial (no pipe break, no
//! resend count): a partition of length L costs the caller up to about L
//! more after the heal (the backoff), as in deployment. A held stream
//! answers its ping once released, so a stall only delays. A pipe that
//! heard nothing for the kernel's give-up time ([`TcpModel::give_up`],
//! Linux's `tcp_retries2` = 15: 924.6 s) breaks, as `ETIMEDOUT` would close
//! it, and NNG's break handling above takes over. What the model does not
//! keep: a reply the cloud wrote on a stream that lost a segment is lost
//! with it (TCP would deliver it late), so the resend timer answers the
//! request instead, a duplicate the cloud already tolerates.
//!
//! Either way a reply can be lost, an abandoned request can reach the
//! cloud long after its caller gave up, and the cloud can see one request
//! twice: exactly the behaviour the edge and cloud must tolerate.
//!
//! Frames are `u64 request id | body`; id 0 is the model's TCP probe. A
//! request whose caller gave up (the edge's own timeout dropped the future)
//! is forgotten at the next timer, as NNG forgets a cancelled context.

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
use turmoil::net::TcpStream;

pub const CLOUD_HOST: &str = "cloud";
pub const HEARTBEAT_PORT: u16 = 63270;
pub const DATA_PORT: u16 = 63271;

/// The request id of the model's TCP probe: never a request's (ids start
/// at 1); the cloud host echoes such a frame at once, before any handler.
pub const PROBE_ID: u64 = 0;

/// Requests queued for one socket and not yet taken up. The edge keeps at
/// most `inflight_batches_max` data requests and one heartbeat in flight,
/// so this never fills in practice; when it does, callers wait.
pub const LINK_CALLS_MAX: usize = 64;

/// Requests one socket tracks at once. A request beyond it waits in the call
/// queue, so memory stays bounded whatever the caller does.
pub const PENDING_REQUESTS_MAX: usize = 256;

/// Replies and pipe events queued from a socket's pipe readers to its driver.
pub const PIPE_EVENTS_MAX: usize = 64;

/// How long a request waits for its reply before it is sent again: the
/// value `NngLink` sets (`RESEND_INTERVAL` in `nng_link.rs`), so that the
/// simulation resends when deployment does.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(2_000);

/// The first and the longest pause between dial attempts (NNG's
/// `reconnmint`/`reconnmaxt`).
pub const REDIAL_MIN: Duration = Duration::from_millis(100);
pub const REDIAL_MAX: Duration = Duration::from_millis(1_000);

/// How long one frame write may take; past it the pipe counts as broken.
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a probe's fresh stream may take to echo its ping, after its
/// connect: a round trip at the simulation's worst latency.
pub const PROBE_ECHO_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The model of the kernel's retransmission under one pipe (see the module
/// doc). Linux's numbers, except the first probe: a real RTO starts at
/// 200 ms and is answered by an ACK within a round trip on a healthy path,
/// while the model, which has no ACKs, would then probe every slow reply;
/// so the model's first probe waits `first_probe`, and a segment lost on a
/// healthy path costs that much instead of 200 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpModel {
    /// How long a pipe that wrote may hear nothing before its first probe.
    pub first_probe: Duration,
    /// The longest pause between probes: Linux's `TCP_RTO_MAX`.
    pub rto_max: Duration,
    /// Silence after which the connection is given up: Linux's
    /// `tcp_retries2` = 15 with a 200 ms minimum RTO, 924.6 s.
    pub give_up: Duration,
}

impl TcpModel {
    pub const LINUX: TcpModel = TcpModel {
        first_probe: Duration::from_millis(1_000),
        rto_max: Duration::from_secs(120),
        give_up: Duration::from_millis(924_600),
    };
}

/// The timers of one link: NNG's resend time and the TCP model under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimers {
    pub resend: Duration,
    pub tcp: TcpModel,
}

impl Default for LinkTimers {
    fn default() -> LinkTimers {
        LinkTimers {
            resend: RESEND_INTERVAL,
            tcp: TcpModel::LINUX,
        }
    }
}

/// Counters the harness reads for its summary.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub requests: AtomicU64,
    /// NNG's resends: after a pipe break and after a resend timer.
    pub resends: AtomicU64,
    pub replies: AtomicU64,
    pub dials: AtomicU64,
    /// Pipes NNG saw break (closed by the peer, a failed write, TCP's give-up).
    pub breaks: AtomicU64,
    /// Streams the TCP model replaced after they lost a segment.
    pub repairs: AtomicU64,
}

struct Call {
    body: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("bytes", &self.body.len())
            .finish()
    }
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

impl SimLink {
    /// Starts the pipes to the cloud hosts `nodes` (turmoil host names) on
    /// the current host. Must run inside a turmoil host.
    pub fn start(nodes: Vec<String>, stats: Arc<LinkStats>) -> SimLink {
        SimLink::start_with(nodes, stats, LinkTimers::default())
    }

    /// As [`SimLink::start`], with other timers (the contract suite shortens
    /// the resend timer, as it does `NngLink`'s).
    pub fn start_with(nodes: Vec<String>, stats: Arc<LinkStats>, timers: LinkTimers) -> SimLink {
        assert!(!nodes.is_empty(), "a link needs a cloud node");
        assert!(
            !timers.resend.is_zero(),
            "a zero resend time resends in a loop"
        );
        let mut heartbeat = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let (calls_tx, calls) = mpsc::channel(LINK_CALLS_MAX);
            let hosts = vec![node.clone()];
            let socket = Socket::new(
                "heartbeat",
                hosts,
                HEARTBEAT_PORT,
                calls,
                stats.clone(),
                timers,
            );
            tokio::task::spawn_local(socket.run());
            heartbeat.push(calls_tx);
        }
        let (data, data_calls) = mpsc::channel(LINK_CALLS_MAX);
        let socket = Socket::new("data", nodes.clone(), DATA_PORT, data_calls, stats, timers);
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
    /// When it was last written: its resend timer runs from there.
    written_at: Instant,
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
    /// A probe of the TCP model ended: `fresh` is a stream that echoed its
    /// ping, or `None` if the path is still down.
    Probed {
        pipe: usize,
        generation: u64,
        started: Instant,
        fresh: Option<TcpStream>,
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

/// One NNG pipe: the connection to one node, and the TCP model under it.
struct Pipe {
    /// The cloud host it dials.
    host: String,
    connected: Option<Connected>,
    /// Counts the pipe's streams: an event of an older one is stale.
    generation: u64,
    dial_at: Instant,
    redial: Duration,
    /// When something was last read off the current stream.
    heard_at: Instant,
    /// Since when the stream has had bytes written and nothing read back:
    /// what the kernel would be retransmitting. `None` when all is heard.
    unheard_since: Option<Instant>,
    /// The next probe, and the pause before the one after (TCP's backoff).
    probe_at: Instant,
    backoff: Duration,
    /// A probe is out; its event will come.
    probing: bool,
}

impl Pipe {
    /// When this pipe needs its socket's attention: its next dial while it
    /// is down, else its next probe or its give-up while it goes unheard.
    fn next_wake(&self, tcp: &TcpModel) -> Option<Instant> {
        if self.connected.is_none() {
            return Some(self.dial_at);
        }
        let since = self.unheard_since?;
        let give_up = since + tcp.give_up;
        if self.probing {
            return Some(give_up);
        }
        Some(self.probe_at.min(give_up))
    }

    /// Bytes went out on the stream: the kernel's retransmission clock
    /// starts, unless it already runs.
    fn wrote(&mut self, now: Instant, tcp: &TcpModel) {
        if self.unheard_since.is_none() {
            self.unheard_since = Some(now);
            self.probe_at = now + tcp.first_probe;
            self.backoff = tcp.first_probe;
        }
    }
}

/// One NNG REQ socket: its pipes, one per node it dials, and the requests
/// in flight over them. Sends, matches replies, resends.
struct Socket {
    name: &'static str,
    port: u16,
    timers: LinkTimers,
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
        timers: LinkTimers,
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
                dial_at: now,
                redial: REDIAL_MIN,
                heard_at: now,
                unheard_since: None,
                probe_at: now,
                backoff: timers.tcp.first_probe,
                probing: false,
            })
            .collect();
        Socket {
            name,
            port,
            timers,
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
                Some(event) = self.events_rx.recv() => self.handle_event(event).await,
                _ = sleep_until(wake) => self.handle_timer().await,
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let idle = Instant::now() + Duration::from_secs(3600);
        let resend = self.timers.resend;
        // Resend timers only run for a request on a live pipe: one that
        // waits for a pipe goes out when one comes up. (Counting them
        // while no pipe is up would wake the task in a loop.)
        let resends = self
            .pending
            .values()
            .filter(|pending| pending.pipe.is_some())
            .map(|pending| pending.written_at + resend);
        self.pipes
            .iter()
            .filter_map(|pipe| pipe.next_wake(&self.timers.tcp))
            .chain(resends)
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
            written_at: Instant::now(),
        };
        self.pending.insert(request_id, pending);
        if let Some(pipe) = self.pick_pipe() {
            self.send(request_id, pipe).await;
        }
    }

    /// Sends every request that waits for a pipe on the live pipes, as NNG
    /// resends a broken pipe's requests on the others at once.
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
            debug!(target: "sim::link", socket = self.name, node = %self.pipes[pipe].host, request_id, "request resent on a live pipe");
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
        let now = Instant::now();
        let tcp = self.timers.tcp;
        let target = &mut self.pipes[pipe];
        if target.connected.is_none() {
            return;
        }
        pending.pipe = Some(pipe);
        pending.written_at = now;
        target.wrote(now, &tcp);
        let connected = target.connected.as_mut().expect("checked above");
        let written =
            tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut connected.writer, &frame)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.break_pipe(pipe, &error.to_string()),
            Err(_) => self.break_pipe(pipe, "write timed out"),
        }
    }

    async fn handle_event(&mut self, event: PipeEvent) {
        match event {
            PipeEvent::Reply {
                pipe,
                generation,
                request_id,
                body,
            } => {
                let target = &mut self.pipes[pipe];
                if generation != target.generation {
                    return;
                }
                target.heard_at = Instant::now();
                target.unheard_since = None;
                if request_id == PROBE_ID {
                    return;
                }
                if let Some(pending) = self.pending.remove(&request_id) {
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
            PipeEvent::Probed {
                pipe,
                generation,
                started,
                fresh,
            } => self.probed(pipe, generation, started, fresh).await,
        }
    }

    async fn handle_timer(&mut self) {
        let now = Instant::now();
        // NNG forgets a request whose caller gave up: no more resends.
        self.pending.retain(|_, pending| !pending.reply.is_closed());
        let resend = self.timers.resend;
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.pipe.is_some() && pending.written_at + resend <= now)
            .map(|(&request_id, _)| request_id)
            .collect();
        for request_id in due {
            // The resend timer: again on the next live pipe (the same one
            // with a single node), the stream kept whatever it does.
            let Some(pipe) = self.pick_pipe() else {
                break;
            };
            self.stats.resends.fetch_add(1, Ordering::Relaxed);
            debug!(target: "sim::link", socket = self.name, node = %self.pipes[pipe].host, request_id, "resend timer: request sent again");
            self.send(request_id, pipe).await;
        }
        let tcp = self.timers.tcp;
        for pipe in 0..self.pipes.len() {
            let target = &self.pipes[pipe];
            if target.connected.is_none() {
                if now >= target.dial_at {
                    self.dial(pipe).await;
                }
                continue;
            }
            let Some(since) = target.unheard_since else {
                continue;
            };
            if now >= since + tcp.give_up {
                self.break_pipe(pipe, "TCP gave up retransmitting");
                self.dial(pipe).await;
            } else if !target.probing && now >= target.probe_at {
                self.probe(pipe, now).await;
            }
        }
    }

    /// One retransmission of the TCP model: a ping on the old stream, and a
    /// fresh stream that must echo one, in a task of its own.
    async fn probe(&mut self, pipe: usize, now: Instant) {
        let tcp = self.timers.tcp;
        let target = &mut self.pipes[pipe];
        target.probing = true;
        target.backoff = (target.backoff * 2).min(tcp.rto_max);
        target.probe_at = now + target.backoff;
        let generation = target.generation;
        if let Some(connected) = target.connected.as_mut() {
            let ping = PROBE_ID.to_be_bytes();
            // A ping that cannot be written is no news: the probe decides.
            let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut connected.writer, &ping))
                .await;
        }
        let host = target.host.clone();
        let port = self.port;
        let events = self.events_tx.clone();
        tokio::task::spawn_local(async move {
            let fresh = fresh_stream(&host, port).await;
            let _ = events
                .send(PipeEvent::Probed {
                    pipe,
                    generation,
                    started: now,
                    fresh,
                })
                .await;
        });
    }

    /// A probe ended. If the path answered on a fresh stream while the old
    /// one stayed silent since the probe began, the old one lost a segment:
    /// the pipe goes on over the fresh one, writing again what waits.
    async fn probed(
        &mut self,
        pipe: usize,
        generation: u64,
        started: Instant,
        fresh: Option<TcpStream>,
    ) {
        let target = &mut self.pipes[pipe];
        if generation != target.generation || target.connected.is_none() {
            return;
        }
        target.probing = false;
        let Some(stream) = fresh else {
            return;
        };
        if target.heard_at >= started || target.unheard_since.is_none() {
            return;
        }
        target.generation += 1;
        let (reader, writer) = stream.into_split();
        let reader = tokio::task::spawn_local(read_replies(
            reader,
            pipe,
            target.generation,
            self.events_tx.clone(),
        ));
        target.connected = Some(Connected { writer, reader });
        let now = Instant::now();
        target.heard_at = now;
        target.unheard_since = None;
        self.stats.repairs.fetch_add(1, Ordering::Relaxed);
        info!(target: "sim::link", socket = self.name, node = %target.host, "TCP model: stream lost a segment; carried on over a fresh one");
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.pipe == Some(pipe))
            .map(|(&request_id, _)| request_id)
            .collect();
        for request_id in waiting {
            // The retransmission, not an NNG resend: the resend timer runs on.
            let written_at = self.pending[&request_id].written_at;
            self.send(request_id, pipe).await;
            if let Some(pending) = self.pending.get_mut(&request_id) {
                pending.written_at = written_at;
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
                target.heard_at = Instant::now();
                target.unheard_since = None;
                target.probing = false;
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
        target.dial_at = Instant::now();
        target.unheard_since = None;
        target.probing = false;
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

/// A fresh stream to `host:port` that echoed a ping, or `None`.
async fn fresh_stream(host: &str, port: u16) -> Option<TcpStream> {
    let mut stream = connect(host, port).await.ok()?;
    let ping = PROBE_ID.to_be_bytes();
    let echoed = async {
        write_frame(&mut stream, &ping).await.ok()?;
        read_frame(&mut stream).await.ok()?
    };
    let echo = tokio::time::timeout(PROBE_ECHO_TIMEOUT, echoed)
        .await
        .ok()??;
    // The id is the echo: a server may add a body (the tests' echo does).
    (echo.get(..8) == Some(&ping[..])).then_some(stream)
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

    /// One request sent at `send_at` into a partition of the edge-node
    /// link from `from` to `to` (simulated time), with `tcp` as the TCP
    /// model; returns when it was answered and the link's counters.
    fn through_a_partition(
        tcp: TcpModel,
        send_at: Duration,
        from: Duration,
        to: Duration,
    ) -> (Duration, Arc<LinkStats>) {
        let mut sim = turmoil::Builder::new()
            .tick_duration(Duration::from_millis(10))
            .simulation_duration(Duration::from_secs(600))
            .build();
        sim.host("cloud-a", || async {
            tokio::task::spawn_local(serve("cloud-a", HEARTBEAT_PORT));
            serve("cloud-a", DATA_PORT).await
        });
        let stats = Arc::new(LinkStats::default());
        let answered: Arc<Mutex<Option<Duration>>> = Arc::default();
        let (counters, at) = (stats.clone(), answered.clone());
        sim.client("edge", async move {
            let timers = LinkTimers {
                resend: RESEND_INTERVAL,
                tcp,
            };
            let link = SimLink::start_with(vec!["cloud-a".to_owned()], counters, timers);
            let start = Instant::now();
            assert_eq!(ask(&link, Channel::Data, b"warm").await, "cloud-a");
            tokio::time::sleep_until(start + send_at).await;
            let reply = tokio::time::timeout(
                Duration::from_secs(300),
                link.request(Channel::Data, b"through".to_vec()),
            )
            .await
            .expect("answered after the heal")
            .expect("a reply");
            assert_eq!(reply, b"cloud-a");
            *at.lock().unwrap() = Some(start.elapsed());
            Ok(())
        });
        let mut partitioned = false;
        loop {
            let now = sim.elapsed();
            if !partitioned && now >= from && now < to {
                sim.partition("edge", "cloud-a");
                partitioned = true;
            }
            if partitioned && now >= to {
                sim.repair("edge", "cloud-a");
                partitioned = false;
            }
            if sim.step().unwrap() {
                break;
            }
        }
        let answered = answered.lock().unwrap().expect("the client finished");
        (answered, stats)
    }

    /// Goal: a partition shorter than TCP's give-up time costs no pipe
    /// break: the stream that lost its segments is carried on over a fresh
    /// one at the first probe after the heal (the backoff: 1, 2, 4, 8 s
    /// after the first unanswered write), and the request is answered then.
    #[test]
    fn a_partition_shorter_than_the_give_up_delays_and_breaks_nothing() {
        let (answered, stats) = through_a_partition(
            TcpModel::LINUX,
            Duration::from_secs(3),
            Duration::from_secs(2),
            Duration::from_secs(12),
        );
        // Written at 3 s: probes at 4, 6, 10 and 18 s; healed at 12 s.
        assert!(
            answered >= Duration::from_secs(18) && answered < Duration::from_secs(20),
            "answered at {answered:?}"
        );
        assert_eq!(stats.breaks.load(Ordering::Relaxed), 0, "no pipe broke");
        assert!(stats.repairs.load(Ordering::Relaxed) >= 1);
    }

    /// Goal: a partition longer than the give-up time breaks the pipe once
    /// the pipe has heard nothing for that long, as the kernel's
    /// `ETIMEDOUT` does; NNG then redials and resends. Method: the give-up
    /// shortened to 20 s, a partition of 60 s.
    #[test]
    fn a_partition_longer_than_the_give_up_breaks_the_pipe() {
        let tcp = TcpModel {
            give_up: Duration::from_secs(20),
            ..TcpModel::LINUX
        };
        let (answered, stats) = through_a_partition(
            tcp,
            Duration::from_secs(3),
            Duration::from_secs(2),
            Duration::from_secs(62),
        );
        assert!(stats.breaks.load(Ordering::Relaxed) >= 1, "the pipe broke");
        // After the break the pipe redials within a second of the heal.
        assert!(
            answered >= Duration::from_secs(62) && answered < Duration::from_secs(66),
            "answered at {answered:?}"
        );
    }
}
