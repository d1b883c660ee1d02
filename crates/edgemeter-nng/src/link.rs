//! `NngLink`: the edge's [`CloudLink`] over NNG REQ sockets to one or more
//! cloud nodes: one heartbeat socket per node, so that the edge knows each
//! node's state, and one data socket that dials every node.
//!
//! The data socket is where several nodes pay off: NNG's REQ spreads its
//! requests over the socket's pipes (one per node that is up), and when a
//! pipe breaks it resends each request waiting on it on another pipe at
//! once (nng_req(7)). Any node answers any batch, since deduplication lives
//! in the shared store, so a node that dies costs the edge a resend, not a
//! stall. A heartbeat, in contrast, must reach its own node: a heartbeat
//! socket dialing every node would answer from whichever is up and hide
//! the one that went away.
//!
//! NNG's REQ protocol allows one outstanding request per context, and the
//! `nng` crate has callbacks, not futures. So each request borrows a context
//! (with its `Aio`) from a bounded pool, and the `Aio` callback, which runs on
//! an NNG thread, hands the reply to the waiting task through a oneshot
//! channel. Many requests are in flight at once, one per context.
//!
//! Sockets are dialed non-blocking: a cloud that is down at start is not an
//! error, NNG keeps redialing it (`RECONNECT_DELAY_*`), and requests time out
//! until it answers. The edge's heartbeat turns those timeouts into its
//! connected/disconnected state, node by node.

use crate::cloud_nodes::CloudNode;
use crate::setup::{
    tcp_url, NngSetupError, MESSAGE_BYTES_MAX, RECONNECT_DELAY_MAX, RECONNECT_DELAY_MIN,
};
use edgemeter_edge::{Channel, CloudLink, LinkError};
use edgemeter_wire::FRAME_BYTES_MAX;
use nng::options::protocol::reqrep::ResendTime;
use nng::options::{Options, ReconnectMaxTime, ReconnectMinTime, RecvMaxSize};
use nng::{Aio, AioResult, Context, Dialer, Message, Protocol, Socket};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// The most requests in flight on one socket, and so the most NNG contexts
/// it holds. The edge keeps a handful of batches in flight; 256 leaves room
/// for heartbeats and bursts while bounding the memory NNG holds for us.
/// A request past the limit waits for a free context.
pub const INFLIGHT_CONTEXTS_MAX: usize = 256;

/// How long REQ waits for a reply before it sends the request again on its
/// own. NNG's default is 60 s, far longer than the edge waits. Two seconds
/// covers a busy cloud writing a full batch to Redis, so resends stay rare,
/// and the cloud is idempotent, so a resend is harmless. (REQ also resends
/// at once when the connection to the cloud breaks.)
pub const RESEND_INTERVAL: Duration = Duration::from_secs(2);

/// The longest one send or receive of a request may take before NNG aborts
/// it. The edge wraps every request in its own, shorter timeout; this is the
/// backstop that frees the context if a caller stops waiting early, and
/// ends a request that a caller without a timeout of its own would wait on
/// for ever.
pub const AIO_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a context's callback delivers the outcome of the current request.
#[derive(Default)]
struct ReplyState {
    /// The waiting task's end of the channel; taken when the outcome is sent.
    sender: Option<oneshot::Sender<Result<Message, nng::Error>>>,
    /// Set when the waiting task gave up, so that the callback does not
    /// start (or cancels) the receive that would follow the send.
    abandoned: bool,
}

type ReplyCell = Arc<Mutex<ReplyState>>;

/// The edge's link to the cloud nodes over NNG.
pub struct NngLink {
    /// The nodes, in the order the edge numbers them.
    nodes: Vec<CloudNode>,
    /// One socket per node, by node index.
    heartbeats: Vec<RequestSocket>,
    /// One socket dialing every node.
    data: RequestSocket,
}

impl NngLink {
    /// Dials one cloud node's two sockets without waiting for it to answer.
    pub fn dial(host: &str, heartbeat_port: u16, data_port: u16) -> Result<NngLink, NngSetupError> {
        NngLink::dial_with_backstop(host, heartbeat_port, data_port, AIO_TIMEOUT)
    }

    /// As [`NngLink::dial`], with `aio_timeout` in place of [`AIO_TIMEOUT`]:
    /// a test of the backstop cannot wait 30 s for it.
    pub fn dial_with_backstop(
        host: &str,
        heartbeat_port: u16,
        data_port: u16,
        aio_timeout: Duration,
    ) -> Result<NngLink, NngSetupError> {
        let node = CloudNode {
            host: host.to_owned(),
            heartbeat_port,
            data_port,
        };
        NngLink::dial_nodes_with_backstop(&[node], aio_timeout)
    }

    /// Dials every node's heartbeat socket and one data socket to all of
    /// them, without waiting for any to answer.
    pub fn dial_nodes(nodes: &[CloudNode]) -> Result<NngLink, NngSetupError> {
        NngLink::dial_nodes_with_backstop(nodes, AIO_TIMEOUT)
    }

    /// As [`NngLink::dial_nodes`], with `aio_timeout` for [`AIO_TIMEOUT`].
    pub fn dial_nodes_with_backstop(
        nodes: &[CloudNode],
        aio_timeout: Duration,
    ) -> Result<NngLink, NngSetupError> {
        NngLink::dial_nodes_with_timers(nodes, RESEND_INTERVAL, aio_timeout)
    }

    /// As [`NngLink::dial_nodes`], with `resend` for [`RESEND_INTERVAL`]
    /// and `aio_timeout` for [`AIO_TIMEOUT`]: the `CloudLink` contract
    /// suite waits for resend timers, and sets them as the model's.
    pub fn dial_nodes_with_timers(
        nodes: &[CloudNode],
        resend: Duration,
        aio_timeout: Duration,
    ) -> Result<NngLink, NngSetupError> {
        assert!(!nodes.is_empty(), "a link needs a cloud node");
        assert!(
            !aio_timeout.is_zero(),
            "a zero backstop fails every request"
        );
        assert!(!resend.is_zero(), "a zero resend time resends in a loop");
        let mut heartbeats = Vec::with_capacity(nodes.len());
        for node in nodes {
            let url = tcp_url(&node.host, node.heartbeat_port);
            heartbeats.push(RequestSocket::dial(&[url], resend, aio_timeout)?);
        }
        let data_urls: Vec<String> = nodes
            .iter()
            .map(|node| tcp_url(&node.host, node.data_port))
            .collect();
        Ok(NngLink {
            nodes: nodes.to_vec(),
            heartbeats,
            data: RequestSocket::dial(&data_urls, resend, aio_timeout)?,
        })
    }

    fn socket(&self, channel: Channel) -> &RequestSocket {
        match channel {
            Channel::Heartbeat(node) => &self.heartbeats[node],
            Channel::Data => &self.data,
        }
    }
}

impl CloudLink for NngLink {
    fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn node_name(&self, node: usize) -> String {
        self.nodes[node].name()
    }

    async fn request(&self, channel: Channel, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        self.socket(channel).request(body).await
    }
}

/// One REQ socket and its pool of idle contexts.
struct RequestSocket {
    socket: Socket,
    /// The URLs it dials, for errors: one, or one per node for data.
    url: String,
    /// [`AIO_TIMEOUT`] outside tests; set on every context's `Aio`.
    aio_timeout: Duration,
    /// One permit per context that may exist; a request holds one until its
    /// reply arrives or it is abandoned.
    permits: Arc<Semaphore>,
    /// Contexts whose last request finished, ready for the next one.
    idle: Mutex<Vec<Slot>>,
}

/// A context, its `Aio`, and the channel its next reply goes to.
struct Slot {
    context: Context,
    aio: Aio,
    reply: ReplyCell,
}

impl RequestSocket {
    /// One socket dialing every URL of `urls`: NNG keeps one pipe per URL
    /// that answers and spreads requests over them.
    fn dial(
        urls: &[String],
        resend: Duration,
        aio_timeout: Duration,
    ) -> Result<RequestSocket, NngSetupError> {
        assert!(!urls.is_empty(), "a socket needs a peer");
        let socket = open_socket(&urls[0], resend)?;
        for url in urls {
            dial_url(&socket, url)?;
        }
        Ok(RequestSocket {
            socket,
            url: urls.join(","),
            aio_timeout,
            permits: Arc::new(Semaphore::new(INFLIGHT_CONTEXTS_MAX)),
            idle: Mutex::new(Vec::with_capacity(INFLIGHT_CONTEXTS_MAX)),
        })
    }

    async fn request(&self, body: Vec<u8>) -> Result<Vec<u8>, LinkError> {
        if body.len() > FRAME_BYTES_MAX {
            return Err(LinkError::Unreachable(format!(
                "request of {} bytes exceeds the frame limit of {FRAME_BYTES_MAX}; not sent",
                body.len()
            )));
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the permit semaphore is never closed");
        let slot = self.checkout()?;
        let (sender, receiver) = oneshot::channel();
        *slot.reply.lock().expect("reply lock") = ReplyState {
            sender: Some(sender),
            abandoned: false,
        };
        if let Err((_, error)) = slot.context.send(&slot.aio, Message::from(&body[..])) {
            self.checkin(slot);
            return Err(self.link_error(error));
        }
        // Declared after the permit so that it drops first: an abandoned
        // request is cancelled and its context returned to the pool before
        // the permit lets another request in.
        let mut in_flight = InFlight {
            slot: Some(slot),
            socket: self,
        };
        let Ok(outcome) = receiver.await else {
            // The sender lives in the slot and is only ever taken to send,
            // so this cannot happen; if it did, `in_flight` would cancel
            // the operation and return the slot as for an abandoned request.
            return Err(LinkError::Unreachable(format!(
                "{}: the NNG callback went away",
                self.url
            )));
        };
        // The operation finished, so the context is idle again; a new send
        // on it starts a fresh request.
        let slot = in_flight.slot.take().expect("the slot is taken once");
        self.checkin(slot);
        outcome
            .map(|reply| reply.as_slice().to_vec())
            .map_err(|error| self.link_error(error))
    }

    fn checkout(&self) -> Result<Slot, LinkError> {
        if let Some(slot) = self.idle.lock().expect("idle lock").pop() {
            return Ok(slot);
        }
        Slot::new(&self.socket, self.aio_timeout).map_err(|error| self.link_error(error))
    }

    fn checkin(&self, slot: Slot) {
        let mut idle = self.idle.lock().expect("idle lock");
        assert!(
            idle.len() < INFLIGHT_CONTEXTS_MAX,
            "more contexts than permits"
        );
        idle.push(slot);
    }

    fn link_error(&self, error: nng::Error) -> LinkError {
        match error {
            nng::Error::TimedOut => LinkError::Timeout,
            other => LinkError::Unreachable(format!("{}: {other}", self.url)),
        }
    }
}

/// A REQ socket with our options and `resend` as its resend time, dialing
/// nothing yet; `url` names it in errors.
fn open_socket(url: &str, resend: Duration) -> Result<Socket, NngSetupError> {
    let socket =
        Socket::new(Protocol::Req0).map_err(|error| NngSetupError::new(url, "open", error))?;
    let configure = |error| NngSetupError::new(url, "configure", error);
    socket
        .set_opt::<ResendTime>(Some(resend))
        .map_err(configure)?;
    socket
        .set_opt::<RecvMaxSize>(MESSAGE_BYTES_MAX)
        .map_err(configure)?;
    socket
        .set_opt::<ReconnectMinTime>(Some(RECONNECT_DELAY_MIN))
        .map_err(configure)?;
    socket
        .set_opt::<ReconnectMaxTime>(Some(RECONNECT_DELAY_MAX))
        .map_err(configure)?;
    Ok(socket)
}

/// Dials `url` from `socket` without waiting for it. Non-blocking, as
/// `Socket::dial_async`, but with the dialer's handle: the socket does not
/// report its reconnect options, the dialer that took them over does.
fn dial_url(socket: &Socket, url: &str) -> Result<Dialer, NngSetupError> {
    Dialer::new(socket, url, true).map_err(|error| NngSetupError::new(url, "dial", error))
}

/// A REQ socket with our options, dialing `url` without waiting for it.
#[cfg(test)]
fn dial_socket(url: &str) -> Result<(Socket, Dialer), NngSetupError> {
    let socket = open_socket(url, RESEND_INTERVAL)?;
    let dialer = dial_url(&socket, url)?;
    Ok((socket, dialer))
}

impl Drop for RequestSocket {
    fn drop(&mut self) {
        // Every slot is idle by now (a request borrows the socket), so
        // dropping them races with no callback.
        self.socket.close();
    }
}

impl Slot {
    fn new(socket: &Socket, aio_timeout: Duration) -> Result<Slot, nng::Error> {
        let context = Context::new(socket)?;
        let reply: ReplyCell = Arc::new(Mutex::new(ReplyState::default()));
        let callback_context = context.clone();
        let callback_reply = reply.clone();
        let aio = Aio::new(move |aio, result| {
            on_event(&aio, &callback_context, &callback_reply, result)
        })?;
        aio.set_timeout(Some(aio_timeout))?;
        Ok(Slot {
            context,
            aio,
            reply,
        })
    }
}

/// Runs on an NNG thread: a sent request goes on to wait for its reply, and
/// a reply or an error goes to the waiting task. Must not block or panic.
fn on_event(aio: &Aio, context: &Context, reply: &ReplyCell, result: AioResult) {
    match result {
        AioResult::Send(Ok(())) => {
            if let Err(error) = context.recv(aio) {
                complete(reply, Err(error));
                return;
            }
            // The waiting task may have given up between the send and this
            // receive; its cancel then came too early to stop the receive.
            let abandoned = reply.lock().map(|state| state.abandoned).unwrap_or(true);
            if abandoned {
                aio.cancel();
            }
        }
        AioResult::Send(Err((_unsent, error))) => complete(reply, Err(error)),
        AioResult::Recv(outcome) => complete(reply, outcome),
        AioResult::Sleep(_) => {}
    }
}

fn complete(reply: &ReplyCell, outcome: Result<Message, nng::Error>) {
    let sender = match reply.lock() {
        Ok(mut state) => state.sender.take(),
        Err(_) => return,
    };
    if let Some(sender) = sender {
        // The waiting task may have given up; then nobody wants the reply.
        let _ = sender.send(outcome);
    }
}

/// A request whose reply has not arrived. If the waiting task is dropped
/// (the edge's own timeout fired), the request is cancelled inside NNG and
/// its context goes back to the pool once the callback has finished.
///
/// The slot is never dropped here: the last handle of an `Aio` dropped while
/// its callback runs would make NNG wait for that callback from inside it,
/// a deadlock. Slots are dropped only with the link, when all are idle.
struct InFlight<'a> {
    slot: Option<Slot>,
    socket: &'a RequestSocket,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        if let Ok(mut state) = slot.reply.lock() {
            state.abandoned = true;
            state.sender = None;
        }
        slot.aio.cancel();
        // Returns once the cancelled operation's callback has run, which
        // starts nothing new for an abandoned request: microseconds.
        slot.aio.wait();
        self.socket.checkin(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the dialer NNG redials with carries our reconnect bounds, not
    /// NNG's defaults (no growth at all), and the link's backstop is
    /// `AIO_TIMEOUT`. Method: dial a port where nothing listens and read
    /// the options back from the dialer, which takes them over from its
    /// socket.
    #[test]
    fn dialed_sockets_carry_the_redial_bounds_and_the_backstop() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let (socket, dialer) = dial_socket(&tcp_url("127.0.0.1", port)).unwrap();
        assert_eq!(
            dialer.get_opt::<ReconnectMaxTime>().unwrap(),
            Some(RECONNECT_DELAY_MAX)
        );
        assert_eq!(
            dialer.get_opt::<ReconnectMinTime>().unwrap(),
            Some(RECONNECT_DELAY_MIN)
        );
        assert_eq!(dialer.get_opt::<RecvMaxSize>().unwrap(), MESSAGE_BYTES_MAX);
        assert_eq!(
            socket.get_opt::<ResendTime>().unwrap(),
            Some(RESEND_INTERVAL)
        );
        socket.close();

        let link = NngLink::dial("127.0.0.1", port, port).unwrap();
        assert_eq!(link.heartbeats[0].aio_timeout, AIO_TIMEOUT);
        assert_eq!(link.data.aio_timeout, AIO_TIMEOUT);
        assert_eq!(link.nodes(), 1);
    }
}
