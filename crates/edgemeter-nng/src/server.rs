//! `NngServer`: the cloud's two NNG REP sockets (heartbeat and data),
//! serving many requests at once.
//!
//! Each socket has [`SERVER_CONTEXTS_MAX`] contexts. A context loops:
//! receive a request, hand it to tokio through a bounded channel, let the
//! [`RequestHandler`] answer it, send the reply on that same context, receive
//! again. The `Aio` callbacks run on NNG's threads and never block: they
//! only start the next NNG operation or pass a request on.
//!
//! Bad input never stops a context: NNG drops messages over
//! [`MESSAGE_BYTES_MAX`] (closing that peer's connection), the handler
//! answers everything else, and a handler that panics gets an error reply
//! sent for it and a counter bumped.

use crate::setup::{tcp_url, NngSetupError, MESSAGE_BYTES_MAX};
use edgemeter_edge::Channel;
use futures::FutureExt;
use nng::options::transport::tcp::BoundPort;
use nng::options::{Options, RecvMaxSize};
use nng::{Aio, AioResult, Context, Listener, Message, Protocol, Socket};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Contexts per socket: the most requests one socket serves at once. The
/// edge keeps up to a few hundred requests in flight; 64 per socket keep the
/// cache busy without queueing unboundedly in front of it. Requests beyond
/// wait inside NNG, on the connection.
pub const SERVER_CONTEXTS_MAX: usize = 64;

/// The requests waiting for a tokio task. Each context holds at most one
/// request, so two sockets' worth of contexts can never fill it.
const JOBS_QUEUED_MAX: usize = 2 * SERVER_CONTEXTS_MAX;

/// The pause after a receive error other than a closed socket, so that a
/// persistent error does not spin an NNG thread.
const RECEIVE_RETRY_DELAY: Duration = Duration::from_millis(50);

/// What answers requests. The cloud implements it; tests use stubs.
pub trait RequestHandler: Send + Sync + 'static {
    /// The reply to one request. Must answer every request, malformed ones
    /// with an error reply: REQ peers resend unanswered requests forever.
    fn handle(&self, channel: Channel, request: Vec<u8>) -> impl Future<Output = Vec<u8>> + Send;
}

/// Counters a test or a log line can read.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub requests: AtomicU64,
    pub handler_panics: AtomicU64,
    pub reply_failures: AtomicU64,
    pub receive_errors: AtomicU64,
}

/// The addresses a server is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundPorts {
    pub heartbeat: u16,
    pub data: u16,
}

/// A running server. Dropping it (or calling [`NngServer::close`]) closes
/// both sockets; contexts stop at their next operation.
pub struct NngServer {
    sockets: Vec<Socket>,
    /// The contexts and their callbacks. Never dropped, only leaked when the
    /// server goes: a request task may still hold a clone of an `Aio`, and
    /// if the last clone were dropped while its callback runs, NNG would wait
    /// for that callback from inside it, a deadlock. A server lives as long
    /// as its process, so this leaks once, a few hundred small objects.
    _workers: std::mem::ManuallyDrop<Vec<Worker>>,
    ports: BoundPorts,
    counters: Arc<ServerCounters>,
    dispatcher: tokio::task::JoinHandle<()>,
    /// Guards every reply against the sockets closing under it. libnng
    /// releases a context inside `nng_ctx_send`; if its socket was already
    /// closed and finalized, that release locks a freed mutex and aborts the
    /// process (seen in the tests under load). Replies hold the read side
    /// while they send; closing takes the write side first, so no reply is
    /// in progress when the sockets close and none starts after.
    open: Arc<RwLock<bool>>,
}

/// One context and its `Aio`.
struct Worker {
    _context: Context,
    _aio: Aio,
}

/// A received request on its way to the handler.
struct Job {
    channel: Channel,
    context: Context,
    aio: Aio,
    request: Message,
}

impl NngServer {
    /// Binds both sockets on `host` and starts serving. A port of 0 picks a
    /// free one; [`NngServer::ports`] tells which. Must be called inside a
    /// tokio runtime.
    pub fn start<H: RequestHandler>(
        handler: Arc<H>,
        host: &str,
        heartbeat_port: u16,
        data_port: u16,
    ) -> Result<NngServer, NngSetupError> {
        let (jobs, queue) = mpsc::channel(JOBS_QUEUED_MAX);
        let open = Arc::new(RwLock::new(true));
        let counters = Arc::new(ServerCounters::default());
        let mut sockets = Vec::new();
        let mut workers = Vec::new();
        let mut bound = [0u16; 2];
        for (index, (channel, port)) in [
            (Channel::Heartbeat(0), heartbeat_port),
            (Channel::Data, data_port),
        ]
        .into_iter()
        .enumerate()
        {
            let url = tcp_url(host, port);
            let socket = open_reply_socket(&url)?;
            for _ in 0..SERVER_CONTEXTS_MAX {
                workers.push(Worker::start(&socket, channel, &jobs, &counters, &url)?);
            }
            bound[index] = listen(&socket, &url)?;
            sockets.push(socket);
        }
        let dispatcher = tokio::spawn(dispatch(handler, queue, counters.clone(), open.clone()));
        Ok(NngServer {
            sockets,
            _workers: std::mem::ManuallyDrop::new(workers),
            ports: BoundPorts {
                heartbeat: bound[0],
                data: bound[1],
            },
            counters,
            dispatcher,
            open,
        })
    }

    pub fn ports(&self) -> BoundPorts {
        self.ports
    }

    pub fn counters(&self) -> &Arc<ServerCounters> {
        &self.counters
    }

    /// Closes both sockets and stops handing requests to the handler.
    pub fn close(self) {
        drop(self);
    }
}

impl Drop for NngServer {
    fn drop(&mut self) {
        self.dispatcher.abort();
        let mut open = self
            .open
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *open = false;
        for socket in &self.sockets {
            socket.close();
        }
    }
}

fn open_reply_socket(url: &str) -> Result<Socket, NngSetupError> {
    let socket =
        Socket::new(Protocol::Rep0).map_err(|error| NngSetupError::new(url, "open", error))?;
    socket
        .set_opt::<RecvMaxSize>(MESSAGE_BYTES_MAX)
        .map_err(|error| NngSetupError::new(url, "configure", error))?;
    Ok(socket)
}

/// Listens on `url` and returns the port actually bound.
fn listen(socket: &Socket, url: &str) -> Result<u16, NngSetupError> {
    let listener =
        Listener::new(socket, url).map_err(|error| NngSetupError::new(url, "listen", error))?;
    listener
        .get_opt::<BoundPort>()
        .map_err(|error| NngSetupError::new(url, "listen", error))
}

impl Worker {
    fn start(
        socket: &Socket,
        channel: Channel,
        jobs: &mpsc::Sender<Job>,
        counters: &Arc<ServerCounters>,
        url: &str,
    ) -> Result<Worker, NngSetupError> {
        let setup = |error| NngSetupError::new(url, "open", error);
        let context = Context::new(socket).map_err(setup)?;
        let callback_context = context.clone();
        let jobs = jobs.clone();
        let counters = counters.clone();
        let aio = Aio::new(move |aio, result| {
            on_event(aio, &callback_context, channel, &jobs, &counters, result)
        })
        .map_err(setup)?;
        context.recv(&aio).map_err(setup)?;
        Ok(Worker {
            _context: context,
            _aio: aio,
        })
    }
}

/// Runs on an NNG thread; must not block or panic.
fn on_event(
    aio: Aio,
    context: &Context,
    channel: Channel,
    jobs: &mpsc::Sender<Job>,
    counters: &ServerCounters,
    result: AioResult,
) {
    match result {
        AioResult::Recv(Ok(request)) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let job = Job {
                channel,
                context: context.clone(),
                aio,
                request,
            };
            // Full cannot happen (one job per context); Closed means the
            // server is shutting down, and the context stops here.
            if jobs.try_send(job).is_err() {
                tracing::debug!("server stopping; a request goes unanswered");
            }
        }
        AioResult::Recv(Err(nng::Error::Closed)) => {}
        AioResult::Recv(Err(error)) => {
            counters.receive_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, "NNG receive failed; receiving again");
            let _ = aio.sleep(RECEIVE_RETRY_DELAY);
        }
        AioResult::Send(outcome) => {
            if let Err((_, error)) = outcome {
                counters.reply_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "NNG reply not sent (the requester went away)");
            }
            receive_next(&aio, context);
        }
        AioResult::Sleep(_) => receive_next(&aio, context),
    }
}

fn receive_next(aio: &Aio, context: &Context) {
    if let Err(error) = context.recv(aio) {
        if error != nng::Error::Closed {
            tracing::warn!(%error, "an NNG context stopped receiving");
        }
    }
}

/// Takes received requests off the channel and answers each in its own
/// task. The number of tasks is bounded by the number of contexts.
async fn dispatch<H: RequestHandler>(
    handler: Arc<H>,
    mut queue: mpsc::Receiver<Job>,
    counters: Arc<ServerCounters>,
    open: Arc<RwLock<bool>>,
) {
    while let Some(job) = queue.recv().await {
        let handler = handler.clone();
        let counters = counters.clone();
        tokio::spawn(answer(handler, job, counters, open.clone()));
    }
}

async fn answer<H: RequestHandler>(
    handler: Arc<H>,
    job: Job,
    counters: Arc<ServerCounters>,
    open: Arc<RwLock<bool>>,
) {
    let request = job.request.as_slice().to_vec();
    let handled = AssertUnwindSafe(handler.handle(job.channel, request))
        .catch_unwind()
        .await;
    let reply = handled.unwrap_or_else(|_| {
        counters.handler_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(channel = ?job.channel, "request handler panicked; sending an error reply");
        edgemeter_wire::legacy::error_reply("internal error")
    });
    let open = open.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*open {
        return;
    }
    if let Err((_, error)) = job.context.send(&job.aio, Message::from(&reply[..])) {
        counters.reply_failures.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%error, "could not start sending a reply");
        receive_next(&job.aio, &job.context);
    }
}
