//! `SimBus`: the edge's [`ReadingsBus`] over the simulated broker. It plays
//! the part rdkafka plays in deployment: a consumer of one topic (its
//! edge's) in a group that starts at the group's committed offsets, keeps
//! its own fetch positions, and commits on request.
//!
//! Each call is one framed request on one connection, under a timeout; any
//! error or timeout drops the connection, and the next call reconnects. A
//! poll that gets no answer in time (a held link, a stalled broker, a
//! connect that hangs) returns an empty poll, as rdkafka's consumer does
//! when nothing arrives within its wait: the edge cannot tell a stalled
//! broker from a quiet one by the poll. Other errors (a refused connect, a
//! broken stream) answer [`BusError::Unavailable`], as rdkafka's error
//! events do. [`ReadingsBus::at_end`] asks the broker for every
//! partition's end offset; any error or timeout there is an error, so a
//! broker that does not answer never confirms the end.
//!
//! Fetch positions live in memory, as a Kafka consumer's do: they survive a
//! reconnect but not a crash, after which the group's committed offsets
//! apply.

use crate::broker::{BrokerReply, BrokerRequest, BROKER_HOST, BROKER_PORT, FETCH_WAIT_MAX};
use crate::net::{call, connect};
use edgemeter_edge::{BusError, BusRecord, ReadingsBus};
use std::collections::BTreeMap;
use std::io;
use std::time::Duration;
use tracing::info;
use turmoil::net::TcpStream;

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

#[derive(Debug)]
pub struct SimBus {
    topic: u32,
    group: String,
    connection: Option<TcpStream>,
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
            positions: None,
        }
    }

    async fn request(&mut self, request: &BrokerRequest) -> io::Result<BrokerReply> {
        if self.connection.is_none() {
            self.connection = Some(connect(BROKER_HOST, BROKER_PORT).await?);
            info!(target: "sim::bus", "edge connected to the broker");
        }
        let stream = self.connection.as_mut().expect("connected above");
        let result = call(stream, &request.encode(), BUS_CALL_TIMEOUT).await;
        let reply = result.and_then(|bytes| BrokerReply::decode(&bytes));
        match reply {
            Ok(BrokerReply::Error(reason)) => Err(io::Error::other(reason)),
            Ok(reply) => Ok(reply),
            Err(error) => {
                self.connection = None;
                Err(error)
            }
        }
    }

    async fn positions(&mut self) -> io::Result<BTreeMap<i32, i64>> {
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
            other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    async fn fetch(&mut self, records_max: usize) -> io::Result<Vec<BusRecord>> {
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
            other => return Err(io::Error::other(format!("unexpected reply {other:?}"))),
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

fn unavailable(error: io::Error) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl SimBus {
    /// Whether every fetch position has reached its partition's end offset.
    async fn read_to_end(&mut self) -> io::Result<bool> {
        let positions = self.positions().await?;
        let ends = match self
            .request(&BrokerRequest::EndOffsets { topic: self.topic })
            .await?
        {
            BrokerReply::Offsets(ends) => ends,
            other => return Err(io::Error::other(format!("unexpected reply {other:?}"))),
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
            // No answer in time: rdkafka's consumer returns nothing then.
            Err(error) if error.kind() == io::ErrorKind::TimedOut => Ok(Vec::new()),
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
