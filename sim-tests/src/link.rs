//! `SimLink`: the edge's [`CloudLink`] over turmoil TCP, behaving like an NNG
//! REQ socket: one pipe (connection) per cloud port, dialled and redialled
//! on its own, many requests in flight on it, replies matched by request id.
//!
//! As in NNG (nng_req(7)), a request is sent again when its pipe breaks
//! (on the new pipe) and when its resend timer fires. turmoil's TCP never
//! retransmits, so a pipe that lost a segment stalls for good; a request
//! written on the pipe and unanswered for [`RESEND_INTERVAL`] (even one its
//! caller gave up on) therefore marks the pipe stalled: the pipe redials and
//! every pending request goes again, which is what TCP retransmission plus
//! NNG's resend achieve on a real network. Either way a reply can be lost
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

/// Requests queued for one pipe and not yet taken up. The edge keeps at
/// most `inflight_batches_max` data requests and one heartbeat in flight,
/// so this never fills in practice; when it does, callers wait.
pub const LINK_CALLS_MAX: usize = 64;

/// Requests one pipe tracks at once. A request beyond it waits in the call
/// queue, so memory stays bounded whatever the caller does.
pub const PENDING_REQUESTS_MAX: usize = 256;

/// Replies and pipe events queued from a pipe's reader to its driver.
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

/// The edge's link to the cloud host.
#[derive(Debug, Clone)]
pub struct SimLink {
    heartbeat: mpsc::Sender<Call>,
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
    /// Starts both pipes on the current host. Must run inside a turmoil host.
    pub fn start(stats: Arc<LinkStats>) -> SimLink {
        let (heartbeat, heartbeat_calls) = mpsc::channel(LINK_CALLS_MAX);
        let (data, data_calls) = mpsc::channel(LINK_CALLS_MAX);
        tokio::task::spawn_local(
            Pipe::new("heartbeat", HEARTBEAT_PORT, heartbeat_calls, stats.clone()).run(),
        );
        tokio::task::spawn_local(Pipe::new("data", DATA_PORT, data_calls, stats).run());
        SimLink { heartbeat, data }
    }
}

impl CloudLink for SimLink {
    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        let calls = match channel {
            Channel::Heartbeat => &self.heartbeat,
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
}

enum PipeEvent {
    Reply {
        generation: u64,
        request_id: u64,
        body: Vec<u8>,
    },
    Closed {
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

/// One NNG pipe: dials, sends, matches replies, resends.
struct Pipe {
    name: &'static str,
    port: u16,
    calls: mpsc::Receiver<Call>,
    pending: BTreeMap<u64, Pending>,
    /// Requests written on the current pipe and not answered yet, by id,
    /// with when they were written; kept after their caller gives up, since
    /// a missing reply is how a stalled pipe shows.
    awaiting: BTreeMap<u64, Instant>,
    next_request_id: u64,
    connected: Option<Connected>,
    generation: u64,
    events_tx: mpsc::Sender<PipeEvent>,
    events_rx: mpsc::Receiver<PipeEvent>,
    dial_at: Instant,
    redial: Duration,
    stats: Arc<LinkStats>,
}

impl Pipe {
    fn new(
        name: &'static str,
        port: u16,
        calls: mpsc::Receiver<Call>,
        stats: Arc<LinkStats>,
    ) -> Pipe {
        let (events_tx, events_rx) = mpsc::channel(PIPE_EVENTS_MAX);
        Pipe {
            name,
            port,
            calls,
            pending: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            next_request_id: 1,
            connected: None,
            generation: 0,
            events_tx,
            events_rx,
            dial_at: Instant::now(),
            redial: REDIAL_MIN,
            stats,
        }
    }

    async fn run(mut self) {
        loop {
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
        // Resend timers only matter on a live pipe: without one, the next
        // dial resends everything. (Counting them while disconnected would
        // wake the task in a loop and stall simulated time.)
        if self.connected.is_none() {
            return self.dial_at;
        }
        let idle = Instant::now() + Duration::from_secs(3600);
        let earliest = self
            .awaiting
            .values()
            .min()
            .map(|sent_at| *sent_at + RESEND_INTERVAL);
        earliest.map_or(idle, |stalled_at| stalled_at.min(idle))
    }

    async fn take_call(&mut self, call: Call) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            body: call.body,
            reply: call.reply,
        };
        self.pending.insert(request_id, pending);
        if self.connected.is_some() {
            self.send(request_id).await;
        }
    }

    /// Writes one pending request on the current pipe.
    async fn send(&mut self, request_id: u64) {
        let Some(pending) = self.pending.get(&request_id) else {
            return;
        };
        let mut frame = Vec::with_capacity(8 + pending.body.len());
        frame.extend_from_slice(&request_id.to_be_bytes());
        frame.extend_from_slice(&pending.body);
        let Some(connected) = self.connected.as_mut() else {
            return;
        };
        self.awaiting.insert(request_id, Instant::now());
        let written =
            tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut connected.writer, &frame)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.break_pipe(&error.to_string()),
            Err(_) => self.break_pipe("write timed out"),
        }
    }

    fn handle_event(&mut self, event: PipeEvent) {
        match event {
            PipeEvent::Reply {
                generation,
                request_id,
                body,
            } => {
                if generation != self.generation {
                    return;
                }
                self.awaiting.remove(&request_id);
                if let Some(pending) = self.pending.remove(&request_id) {
                    self.stats.replies.fetch_add(1, Ordering::Relaxed);
                    let _ = pending.reply.send(body);
                }
            }
            PipeEvent::Closed { generation, reason } => {
                if generation == self.generation && self.connected.is_some() {
                    self.break_pipe(&reason);
                }
            }
        }
    }

    async fn handle_timer(&mut self) {
        let now = Instant::now();
        self.pending.retain(|_, pending| !pending.reply.is_closed());
        if self.connected.is_none() {
            if now >= self.dial_at {
                self.dial().await;
            }
            return;
        }
        let overdue = self
            .awaiting
            .values()
            .any(|sent_at| *sent_at + RESEND_INTERVAL <= now);
        if overdue {
            // A reply this late means the pipe lost a segment (turmoil never
            // retransmits): redial, and every pending request goes again.
            self.break_pipe("resend timer fired");
            self.dial().await;
        }
    }

    async fn dial(&mut self) {
        self.stats.dials.fetch_add(1, Ordering::Relaxed);
        match connect(CLOUD_HOST, self.port).await {
            Ok(stream) => {
                self.generation += 1;
                let (reader, writer) = stream.into_split();
                let reader = tokio::task::spawn_local(read_replies(
                    reader,
                    self.generation,
                    self.events_tx.clone(),
                ));
                self.connected = Some(Connected { writer, reader });
                self.redial = REDIAL_MIN;
                info!(target: "sim::link", pipe = self.name, pending = self.pending.len(), "pipe connected");
                let ids: Vec<u64> = self.pending.keys().copied().collect();
                for request_id in ids {
                    if self.connected.is_none() {
                        break;
                    }
                    self.stats.resends.fetch_add(1, Ordering::Relaxed);
                    debug!(target: "sim::link", pipe = self.name, request_id, "request resent");
                    self.send(request_id).await;
                }
            }
            Err(_) => {
                self.dial_at = Instant::now() + self.redial;
                self.redial = (self.redial * 2).min(REDIAL_MAX);
            }
        }
    }

    fn break_pipe(&mut self, reason: &str) {
        self.awaiting.clear();
        if self.connected.take().is_some() {
            self.stats.breaks.fetch_add(1, Ordering::Relaxed);
            info!(target: "sim::link", pipe = self.name, pending = self.pending.len(), reason, "pipe broken");
        }
        self.dial_at = Instant::now();
    }
}

/// Reads reply frames off one pipe until it fails, then reports that.
async fn read_replies(mut reader: OwnedReadHalf, generation: u64, events: mpsc::Sender<PipeEvent>) {
    let reason = loop {
        match read_frame(&mut reader).await {
            Ok(Some(frame)) if frame.len() >= 8 => {
                let request_id = u64::from_be_bytes(frame[..8].try_into().expect("eight bytes"));
                let body = frame[8..].to_vec();
                let event = PipeEvent::Reply {
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
    let _ = events.send(PipeEvent::Closed { generation, reason }).await;
}
