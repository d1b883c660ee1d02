//! `SimBus`: the edge's [`ReadingsBus`] over the simulated broker. It plays
//! the part rdkafka plays in deployment: a consumer of one topic (its
//! edge's) in a group that starts at the group's committed offsets, keeps
//! its own fetch positions, and commits on request.
//!
//! Each call is one framed request under a timeout, on one connection
//! that a reader task reads replies from. What the edge sees mirrors
//! `KafkaBus` over librdkafka, as the `ReadingsBus` contract suite
//! (`edgemeter-contract`, run against both) checks:
//! - A request with no answer in time (a stalled broker, a held link) is
//!   an empty poll, as librdkafka's consumer returns nothing then: the edge
//!   cannot tell a stalled broker from a quiet one by the poll. The
//!   connection is kept, as a real client keeps its socket, and the late
//!   reply is skipped when it comes (replies come in request order). Only
//!   after [`SOCKET_TIMEOUT`] without any answer is the connection dropped
//!   and the broker reported down, as librdkafka does after
//!   `socket.timeout.ms`.
//! - A connection that breaks, or a connect that fails, marks the broker
//!   down, and from then on every call answers [`BusError::Unavailable`]
//!   until the broker answers again, as `KafkaBus` does after librdkafka's
//!   error event. (The model once answered an empty poll to every connect
//!   that timed out after the first error, so a dead broker looked like a
//!   stalled one; the contract suite's `a_dead_broker` found it.)
//! - [`ReadingsBus::at_end`] asks the broker for every partition's end
//!   offset; any error or timeout there is an error, so a broker that does
//!   not answer never confirms the end.
//!
//! Fetch positions live in memory, as a Kafka consumer's do: they survive a
//! reconnect but not a crash, after which the group's committed offsets
//! apply.

use crate::broker::{BrokerReply, BrokerRequest, BROKER_HOST, BROKER_PORT, FETCH_WAIT_MAX};
use crate::net::{connect, read_frame, write_frame};
use edgemeter_edge::{BusError, BusRecord, ReadingsBus};
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tracing::info;
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The longest one request to the broker may take, including a fetch's
/// wait. The edge expects a poll to return within about a second.
pub const BUS_CALL_TIMEOUT: Duration = Duration::from_millis(800);

const _: () = assert!(FETCH_WAIT_MAX.as_millis() * 2 < BUS_CALL_TIMEOUT.as_millis());

/// The fewest records a fetch waits for (up to `FETCH_WAIT_MAX`), as
/// Kafka's `fetch.min.bytes`: under a trickle of readings the edge then
/// polls a few times a second rather than once per reading, which is how a
/// consumer tuned for throughput behaves and keeps the simulation fast.
pub const FETCH_MIN_RECORDS: u32 = 256;

/// The consumer group the first edge reads in; edge `n` (from 0) reads in
/// [`edge_group`]`(n)`, its own, as each deployed edge has one.
pub const EDGE_GROUP: &str = "edgemeter-edge";

/// The consumer group of edge `index` (from 0).
pub fn edge_group(index: usize) -> String {
    match index {
        0 => EDGE_GROUP.to_owned(),
        _ => format!("{EDGE_GROUP}-{}", index + 1),
    }
}

/// How long a connection may go without any answer before it is dropped
/// and the broker reported down: librdkafka's `socket.timeout.ms` default,
/// which `KafkaBus` keeps. Shorter stalls are empty polls.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

/// Replies a connection may owe for requests whose caller gave up, before
/// it is dropped: one per call for [`SOCKET_TIMEOUT`], bounding the reply
/// queue.
pub const STALE_REPLIES_MAX: usize =
    (SOCKET_TIMEOUT.as_millis() / BUS_CALL_TIMEOUT.as_millis()) as usize + 1;

/// One connection to the broker: its write half, and the replies its
/// reader task has read, in order.
#[derive(Debug)]
struct Connection {
    writer: OwnedWriteHalf,
    replies: mpsc::Receiver<io::Result<Vec<u8>>>,
    reader: JoinHandle<()>,
    /// Requests written whose replies no caller took: the next replies on
    /// the connection are theirs, and are skipped.
    stale: usize,
    /// Since when a request has waited for an answer; `None` while every
    /// request was answered.
    unanswered_since: Option<Instant>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads reply frames until the connection ends; the last message is the
/// error or end that ended it.
async fn read_replies(mut reader: OwnedReadHalf, replies: mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let frame = match read_frame(&mut reader).await {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "broker closed",
            )),
            Err(error) => Err(error),
        };
        let ended = frame.is_err();
        if replies.send(frame).await.is_err() || ended {
            return;
        }
    }
}

/// Why a call got no reply.
#[derive(Debug)]
enum CallError {
    /// No answer in time on a connection that is still up.
    NoAnswer,
    /// The broker cannot be reached, or the connection broke.
    Down(io::Error),
}

impl From<io::Error> for CallError {
    fn from(error: io::Error) -> CallError {
        CallError::Down(error)
    }
}

#[derive(Debug)]
pub struct SimBus {
    topic: u32,
    group: String,
    connection: Option<Connection>,
    /// Set when a connection broke or could not be made; cleared by the
    /// next answer. While set, a call without an answer is an error.
    broker_down: bool,
    /// partition -> next offset to fetch; `None` until the group's committed
    /// offsets were read.
    positions: Option<BTreeMap<i32, i64>>,
}

impl SimBus {
    pub fn new(topic: u32, group: &str) -> SimBus {
        SimBus {
            topic,
            group: group.to_owned(),
            connection: None,
            broker_down: false,
            positions: None,
        }
    }

    async fn request(&mut self, request: &BrokerRequest) -> Result<BrokerReply, CallError> {
        let result = self.exchange(request).await;
        match &result {
            Ok(_) => self.broker_down = false,
            Err(CallError::Down(_)) => {
                self.connection = None;
                self.broker_down = true;
            }
            Err(CallError::NoAnswer) => {}
        }
        let bytes = result?;
        match BrokerReply::decode(&bytes)? {
            BrokerReply::Error(reason) => Err(CallError::Down(io::Error::other(reason))),
            reply => Ok(reply),
        }
    }

    /// Writes `request` and waits for its reply, skipping the replies owed
    /// to earlier requests nobody waits for any more.
    async fn exchange(&mut self, request: &BrokerRequest) -> Result<Vec<u8>, CallError> {
        let deadline = Instant::now() + BUS_CALL_TIMEOUT;
        if self.connection.is_none() {
            let stream = connect(BROKER_HOST, BROKER_PORT).await?;
            let (reader, writer) = stream.into_split();
            let (sender, replies) = mpsc::channel(STALE_REPLIES_MAX + 1);
            self.connection = Some(Connection {
                writer,
                replies,
                // The edge polls from a task of its own, outside any LocalSet.
                reader: tokio::spawn(read_replies(reader, sender)),
                stale: 0,
                unanswered_since: None,
            });
            info!(target: "sim::bus", "edge connected to the broker");
        }
        let connection = self.connection.as_mut().expect("connected above");
        let now = Instant::now();
        let waiting_since = *connection.unanswered_since.get_or_insert(now);
        // A frame is one segment (net.rs), so a write that times out wrote
        // nothing, and the connection stays usable.
        match timeout_at(
            deadline,
            write_frame(&mut connection.writer, &request.encode()),
        )
        .await
        {
            Ok(written) => written?,
            Err(_) => return Err(connection.no_answer(waiting_since)),
        }
        loop {
            match timeout_at(deadline, connection.replies.recv()).await {
                Err(_) => {
                    connection.stale += 1;
                    return Err(connection.no_answer(waiting_since));
                }
                Ok(None) => return Err(io::Error::other("the reply reader ended").into()),
                Ok(Some(reply)) => {
                    let frame = reply?;
                    if connection.stale > 0 {
                        connection.stale -= 1;
                        connection.unanswered_since = Some(Instant::now());
                        continue;
                    }
                    connection.unanswered_since = None;
                    return Ok(frame);
                }
            }
        }
    }
    async fn positions(&mut self) -> Result<BTreeMap<i32, i64>, CallError> {
        if let Some(positions) = &self.positions {
            return Ok(positions.clone());
        }
        let request = BrokerRequest::Committed {
            topic: self.topic,
            group: self.group.clone(),
        };
        match self.request(&request).await? {
            BrokerReply::Offsets(offsets) => {
                let positions: BTreeMap<i32, i64> = offsets.into_iter().collect();
                info!(target: "sim::bus", ?positions, "edge resumes at the group's committed offsets");
                self.positions = Some(positions.clone());
                Ok(positions)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn fetch(&mut self, records_max: usize) -> Result<Vec<BusRecord>, CallError> {
        let positions = self.positions().await?;
        let request = BrokerRequest::Fetch {
            topic: self.topic,
            positions: positions.into_iter().collect(),
            records_max: records_max.min(u32::MAX as usize) as u32,
            min_records: FETCH_MIN_RECORDS,
            wait_ms: FETCH_WAIT_MAX.as_millis() as u32,
        };
        let records = match self.request(&request).await? {
            BrokerReply::Records(records) => records,
            other => return Err(unexpected(other)),
        };
        let positions = self.positions.as_mut().expect("read above");
        for record in &records {
            let next = positions.entry(record.partition).or_insert(0);
            assert_eq!(
                *next, record.offset,
                "the broker skipped or repeated an offset"
            );
            *next = record.offset + 1;
        }
        Ok(records)
    }
}

impl Connection {
    /// A call got no answer in time: an empty poll, unless the connection
    /// has answered nothing for [`SOCKET_TIMEOUT`] or owes too many replies,
    /// when it is given up as librdkafka gives up a socket.
    fn no_answer(&self, waiting_since: Instant) -> CallError {
        if waiting_since.elapsed() >= SOCKET_TIMEOUT || self.stale > STALE_REPLIES_MAX {
            CallError::Down(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer for {SOCKET_TIMEOUT:?}"),
            ))
        } else {
            CallError::NoAnswer
        }
    }
}

fn unexpected(reply: BrokerReply) -> CallError {
    CallError::Down(io::Error::other(format!("unexpected reply {reply:?}")))
}

fn unavailable(error: CallError) -> BusError {
    match error {
        CallError::NoAnswer => BusError::Unavailable("no answer in time".to_owned()),
        CallError::Down(error) => BusError::Unavailable(error.to_string()),
    }
}

impl SimBus {
    /// Whether every fetch position has reached its partition's end offset.
    async fn read_to_end(&mut self) -> Result<bool, CallError> {
        let positions = self.positions().await?;
        let ends = match self
            .request(&BrokerRequest::EndOffsets { topic: self.topic })
            .await?
        {
            BrokerReply::Offsets(ends) => ends,
            other => return Err(unexpected(other)),
        };
        Ok(ends
            .iter()
            .all(|(partition, end)| positions.get(partition).copied().unwrap_or(0) >= *end))
    }
}

impl ReadingsBus for SimBus {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        assert!(records_max > 0);
        match self.fetch(records_max).await {
            Ok(records) => Ok(records),
            // No answer in time from a broker not known to be down:
            // librdkafka's consumer returns nothing then.
            Err(CallError::NoAnswer) if !self.broker_down => Ok(Vec::new()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        self.read_to_end().await.map_err(unavailable)
    }

    async fn commit(&mut self, next_offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        let request = BrokerRequest::Commit {
            topic: self.topic,
            group: self.group.clone(),
            offsets: next_offsets.iter().map(|(p, o)| (*p, *o)).collect(),
        };
        match self.request(&request).await.map_err(unavailable)? {
            BrokerReply::Done => Ok(()),
            other => Err(BusError::Unavailable(format!("unexpected reply {other:?}"))),
        }
    }
}
