//! A cloud node host (`cloud`, `cloud-2`, ...): the production [`Cloud`]
//! served over turmoil TCP, as the NNG REP sockets serve it in deployment.
//! This file only moves bytes: every decision is `Cloud::handle_heartbeat`
//! / `Cloud::handle_data`. Every node reaches the one `redis` host, as
//! deployed nodes share one store: no node holds state of its own that
//! another would need.
//!
//! Each incarnation of a node also publishes the production cloud's own
//! counters ([`CloudCounters`]) after every request it answers, in a
//! [`CloudTally`] that outlives its crashes, so that the run's coverage
//! counts what the cloud actually did (requests seen twice, refusals,
//! store errors).
//!
//! Each node counts the data requests it holds (read off a pipe, not yet
//! answered) in an [`InFlight`] the harness reads between steps, to crash
//! a node exactly while batches are outstanding.
//!
//! Each accepted pipe gets a reader loop that starts one handler task per
//! request (so many requests are served at once, as NNG's asynchronous REP
//! contexts do) and a writer task that sends replies tagged with their
//! request id. A frame of request id `link::PROBE_ID` is the link's model
//! of TCP probing the path (`link.rs`): echoed at once, before any handler,
//! as a kernel ACKs whatever the process does. A reply whose pipe broke is
//! dropped, like NNG's. The cache is
//! the `redis` host, reached through [`SimCache`], so a cloud crash loses
//! nothing the cache held.

use crate::cache::SimCache;
use crate::clock::SimClock;
use crate::link::{DATA_PORT, HEARTBEAT_PORT, PROBE_ID};
use crate::net::{read_frame, write_frame};
use edgemeter_cloud::{Cloud, CloudConfig, CloudCounters};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info};
use turmoil::net::{TcpListener, TcpStream};

/// Pipes served at once per port. One edge dials one pipe per port and
/// redials after faults; stale pipes close after [`PIPE_IDLE_MAX`].
pub const CLOUD_PIPES_MAX: usize = 64;

/// Requests handled at once on one pipe. The edge keeps at most
/// `inflight_batches_max` (8) data requests in flight, plus resends.
pub const HANDLERS_PER_PIPE_MAX: usize = 32;

/// Replies waiting for the pipe's writer.
pub const REPLIES_QUEUE_MAX: usize = 32;

/// A pipe with no request for this long is closed; the edge redials.
pub const PIPE_IDLE_MAX: Duration = Duration::from_secs(60);

/// How long one reply write may take before the pipe counts as broken.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_millis(500);

type SimCloud = Cloud<SimCache, SimClock>;

/// The data requests one node holds: read off a pipe and not yet answered.
/// Shared with the harness; each holder is a [`Held`] guard, so that a
/// handler dropped by a crash of its host counts out too.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn hold(&self) -> Held {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self.0.clone())
    }
}

/// One data request in flight on a node, until dropped.
struct Held(Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "a request counted out twice");
    }
}

/// The cloud's counters of each incarnation of one node, in start order:
/// each start pushes its slot and overwrites it after every answer.
#[derive(Debug, Clone, Default)]
pub struct CloudTally(Arc<Mutex<Vec<CloudCounters>>>);

impl CloudTally {
    fn start(&self) -> usize {
        let mut slots = self.0.lock().expect("tally lock");
        slots.push(CloudCounters::default());
        slots.len() - 1
    }

    fn publish(&self, slot: usize, counters: CloudCounters) {
        self.0.lock().expect("tally lock")[slot] = counters;
    }

    /// Every incarnation's counters so far.
    pub fn incarnations(&self) -> Vec<CloudCounters> {
        self.0.lock().expect("tally lock").clone()
    }
}

/// Which port a request came in on: the node serves one heartbeat port and
/// one data port.
#[derive(Debug, Clone, Copy)]
enum Port {
    Heartbeat,
    Data,
}

/// The cloud node's software.
pub async fn run_cloud(
    config: CloudConfig,
    epoch_ms: i64,
    in_flight: InFlight,
    tally: CloudTally,
) -> turmoil::Result {
    let cloud = Arc::new(Cloud::new(config, SimCache::new(), SimClock::new(epoch_ms)));
    let slot = tally.start();
    tokio::task::spawn_local(cloud.clone().watch_heartbeats(std::future::pending()));
    let heartbeat = TcpListener::bind(("0.0.0.0", HEARTBEAT_PORT)).await?;
    let data = TcpListener::bind(("0.0.0.0", DATA_PORT)).await?;
    info!("cloud serving heartbeats and data");
    let context = Served {
        cloud,
        in_flight,
        tally,
        slot,
    };
    tokio::task::spawn_local(serve(heartbeat, context.clone(), Port::Heartbeat));
    serve(data, context, Port::Data).await
}

/// What every pipe of a node shares.
#[derive(Clone)]
struct Served {
    cloud: Arc<SimCloud>,
    in_flight: InFlight,
    tally: CloudTally,
    slot: usize,
}

async fn serve(listener: TcpListener, served: Served, channel: Port) -> turmoil::Result {
    let slots = Arc::new(Semaphore::new(CLOUD_PIPES_MAX));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (stream, _) = listener.accept().await?;
        let served = served.clone();
        tokio::task::spawn_local(async move {
            serve_pipe(stream, served, channel).await;
            drop(permit);
        });
    }
}

async fn serve_pipe(stream: TcpStream, served: Served, channel: Port) {
    let (mut reader, mut writer) = stream.into_split();
    let (replies, mut queued) = mpsc::channel::<Vec<u8>>(REPLIES_QUEUE_MAX);
    tokio::task::spawn_local(async move {
        while let Some(frame) = queued.recv().await {
            let written =
                tokio::time::timeout(REPLY_WRITE_TIMEOUT, write_frame(&mut writer, &frame)).await;
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
    });
    let handlers = Arc::new(Semaphore::new(HANDLERS_PER_PIPE_MAX));
    loop {
        let frame = match tokio::time::timeout(PIPE_IDLE_MAX, read_frame(&mut reader)).await {
            Ok(Ok(Some(frame))) if frame.len() >= 8 => frame,
            Ok(Err(error)) => {
                debug!(?channel, %error, "pipe read failed");
                return;
            }
            _ => return,
        };
        if frame[..8] == PROBE_ID.to_be_bytes() {
            // The link's model of TCP (`link.rs`): a probe is echoed at
            // once, as a kernel ACKs, whatever the handlers are doing.
            if replies.send(frame).await.is_err() {
                return;
            }
            continue;
        }
        let permit = handlers
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (cloud, replies) = (served.cloud.clone(), replies.clone());
        let (tally, slot) = (served.tally.clone(), served.slot);
        let held = matches!(channel, Port::Data).then(|| served.in_flight.hold());
        tokio::task::spawn_local(async move {
            let body = &frame[8..];
            let reply = match channel {
                Port::Heartbeat => cloud.handle_heartbeat(body).await,
                Port::Data => cloud.handle_data(body).await,
            };
            // Answered: the reply may still be lost with the pipe, which is
            // the edge's resend to handle, not a request the node holds.
            drop(held);
            tally.publish(slot, cloud.counters());
            let mut tagged = frame[..8].to_vec();
            tagged.extend_from_slice(&reply);
            let _ = replies.send(tagged).await;
            drop(permit);
        });
    }
}
