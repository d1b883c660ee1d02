//! The `broker` host: Kafka-like topics served over turmoil TCP, one per
//! edge (each site consumes its own topic, as `edgemeter edge --topic`
//! does). Storage is one `edgemeter-memlog` [`MemLog`] per topic
//! (partitions, offsets, group commits); this file owns the small framed
//! protocol around them (produce, fetch, commit, committed offsets, end
//! offsets, each naming its topic) and the server loop.
//!
//! The log lives in a [`BrokerState`] created by the harness outside the
//! host, so it outlasts anything that happens to the other hosts, and the
//! harness can read end and committed offsets between steps. Produce is
//! idempotent per producer (as Kafka's `enable.idempotence`): a resent batch
//! whose reply was lost is not appended twice.

use crate::codec::{invalid, Reader, Writer};
use crate::net::{read_frame, write_frame};
use edgemeter_edge::BusRecord;
use edgemeter_memlog::MemLog;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};
use turmoil::net::{TcpListener, TcpStream};

pub const BROKER_HOST: &str = "broker";
pub const BROKER_PORT: u16 = 9092;

/// Partitions of each topic, as the deployment creates `power_topic`.
pub const TOPIC_PARTITIONS: u32 = 3;

/// The most topics the broker holds: one per edge.
pub const TOPICS_MAX: usize = crate::faults::EDGES_MAX;

/// The most records one topic's log holds. 50 households × 1 hour is about
/// 90,000 readings; this leaves room for a day of them and bounds memory if
/// a producer runs away.
pub const LOG_RECORDS_MAX: usize = 5_000_000;

/// The most records one fetch returns, whatever the consumer asks.
pub const FETCH_RECORDS_MAX: usize = 4096;

/// The longest a fetch waits for new records before answering empty. The
/// edge's bus must answer within about a second; this leaves room for the
/// round trip.
pub const FETCH_WAIT_MAX: Duration = Duration::from_millis(300);

/// Connections served at once. The simulation has up to four clients (the
/// households and each edge), each reconnecting after faults; stale
/// connections close on [`CONNECTION_IDLE_MAX`].
pub const BROKER_CONNECTIONS_MAX: usize = 64;

/// A connection with no request for this long is closed. turmoil streams
/// stall silently after a partition drops a segment; this reclaims them.
pub const CONNECTION_IDLE_MAX: Duration = Duration::from_secs(30);

/// One request to the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerRequest {
    /// Appends `records` (topic, key, value) as the producer's sequence
    /// numbers `first_sequence..`. Sequences already appended are skipped.
    /// One producer serves every topic, as one Kafka producer can.
    Produce {
        producer_id: u64,
        first_sequence: u64,
        records: Vec<ProducedRecord>,
    },
    /// Answers once `min_records` are there or `wait_ms` has passed, as a
    /// Kafka fetch with `fetch.min.bytes` and `fetch.max.wait.ms` does.
    Fetch {
        topic: u32,
        positions: Vec<(i32, i64)>,
        records_max: u32,
        min_records: u32,
        wait_ms: u32,
    },
    Commit {
        topic: u32,
        group: String,
        offsets: Vec<(i32, i64)>,
    },
    Committed {
        topic: u32,
        group: String,
    },
    /// Each partition's end offset (high watermark): the offset the next
    /// record appended to it will get.
    EndOffsets {
        topic: u32,
    },
}

/// One record to produce: its topic, key and value.
pub type ProducedRecord = (u32, Vec<u8>, Vec<u8>);

#[derive(Debug, Clone, PartialEq)]
pub enum BrokerReply {
    /// The producer's next sequence number: everything before it is in the log.
    Produced {
        next_sequence: u64,
    },
    Records(Vec<BusRecord>),
    Offsets(Vec<(i32, i64)>),
    Done,
    Error(String),
}

fn put_offsets(writer: &mut Writer, offsets: &[(i32, i64)]) {
    writer.count(offsets.len());
    for (partition, offset) in offsets {
        writer.i32(*partition).i64(*offset);
    }
}

fn get_offsets(reader: &mut Reader<'_>) -> io::Result<Vec<(i32, i64)>> {
    let count = reader.count()?;
    (0..count)
        .map(|_| Ok((reader.i32()?, reader.i64()?)))
        .collect()
}

impl BrokerRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        match self {
            BrokerRequest::Produce {
                producer_id,
                first_sequence,
                records,
            } => {
                writer.u8(1).u64(*producer_id).u64(*first_sequence);
                writer.count(records.len());
                for (topic, key, value) in records {
                    writer.u32(*topic).bytes(key).bytes(value);
                }
            }
            BrokerRequest::Fetch {
                topic,
                positions,
                records_max,
                min_records,
                wait_ms,
            } => {
                writer
                    .u8(2)
                    .u32(*topic)
                    .u32(*records_max)
                    .u32(*min_records)
                    .u32(*wait_ms);
                put_offsets(&mut writer, positions);
            }
            BrokerRequest::Commit {
                topic,
                group,
                offsets,
            } => {
                writer.u8(3).u32(*topic).str(group);
                put_offsets(&mut writer, offsets);
            }
            BrokerRequest::Committed { topic, group } => {
                writer.u8(4).u32(*topic).str(group);
            }
            BrokerRequest::EndOffsets { topic } => {
                writer.u8(5).u32(*topic);
            }
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> io::Result<BrokerRequest> {
        let mut reader = Reader::new(bytes);
        let request = match reader.u8()? {
            1 => {
                let producer_id = reader.u64()?;
                let first_sequence = reader.u64()?;
                let count = reader.count()?;
                let records = (0..count)
                    .map(|_| Ok((reader.u32()?, reader.bytes()?, reader.bytes()?)))
                    .collect::<io::Result<_>>()?;
                BrokerRequest::Produce {
                    producer_id,
                    first_sequence,
                    records,
                }
            }
            2 => {
                let topic = reader.u32()?;
                let records_max = reader.u32()?;
                let min_records = reader.u32()?;
                let wait_ms = reader.u32()?;
                let positions = get_offsets(&mut reader)?;
                BrokerRequest::Fetch {
                    topic,
                    positions,
                    records_max,
                    min_records,
                    wait_ms,
                }
            }
            3 => {
                let topic = reader.u32()?;
                let group = reader.string()?;
                let offsets = get_offsets(&mut reader)?;
                BrokerRequest::Commit {
                    topic,
                    group,
                    offsets,
                }
            }
            4 => BrokerRequest::Committed {
                topic: reader.u32()?,
                group: reader.string()?,
            },
            5 => BrokerRequest::EndOffsets {
                topic: reader.u32()?,
            },
            kind => return Err(invalid(format!("unknown broker request {kind}"))),
        };
        reader.finish()?;
        Ok(request)
    }
}

impl BrokerReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        match self {
            BrokerReply::Produced { next_sequence } => {
                writer.u8(1).u64(*next_sequence);
            }
            BrokerReply::Records(records) => {
                writer.u8(2).count(records.len());
                for record in records {
                    writer
                        .i32(record.partition)
                        .i64(record.offset)
                        .bytes(&record.payload);
                }
            }
            BrokerReply::Offsets(offsets) => {
                writer.u8(3);
                put_offsets(&mut writer, offsets);
            }
            BrokerReply::Done => {
                writer.u8(4);
            }
            BrokerReply::Error(reason) => {
                writer.u8(5).str(reason);
            }
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> io::Result<BrokerReply> {
        let mut reader = Reader::new(bytes);
        let reply = match reader.u8()? {
            1 => BrokerReply::Produced {
                next_sequence: reader.u64()?,
            },
            2 => {
                let count = reader.count()?;
                let records = (0..count)
                    .map(|_| {
                        Ok(BusRecord {
                            partition: reader.i32()?,
                            offset: reader.i64()?,
                            payload: reader.bytes()?,
                            // The simulated households publish EdgeMeter's
                            // form, which is timed inside the record.
                            timestamp_ms: None,
                        })
                    })
                    .collect::<io::Result<_>>()?;
                BrokerReply::Records(records)
            }
            3 => BrokerReply::Offsets(get_offsets(&mut reader)?),
            4 => BrokerReply::Done,
            5 => BrokerReply::Error(reader.string()?),
            kind => return Err(invalid(format!("unknown broker reply {kind}"))),
        };
        reader.finish()?;
        Ok(reply)
    }
}

/// The broker's storage, shared between the host and the harness.
#[derive(Debug)]
pub struct BrokerData {
    /// One log per topic, by topic number.
    pub logs: Vec<MemLog>,
    /// producer id -> next sequence number expected.
    producers: BTreeMap<u64, u64>,
}

/// How long the broker holds a produce request before it appends and
/// acknowledges it, in seeds that crash the broker: a Kafka leader with
/// `acks=all` answers only once its followers have the records, and a
/// leader that dies meanwhile loses them (they were never acknowledged).
/// Here a crash of the broker host drops the waiting request, so the
/// producer's resend is what puts the records in the log. Seeds without
/// broker crashes keep the immediate answer they always had.
pub const PRODUCE_ACK_DELAY: Duration = Duration::from_millis(30);

#[derive(Debug, Clone)]
pub struct BrokerState {
    data: Arc<Mutex<BrokerData>>,
    appended: Arc<Notify>,
    /// [`PRODUCE_ACK_DELAY`] when the seed crashes the broker.
    ack_delay: Option<Duration>,
}

impl BrokerState {
    /// A broker with `topics` empty topics (numbered from 0).
    pub fn new(topics: usize) -> BrokerState {
        assert!((1..=TOPICS_MAX).contains(&topics), "{topics} topics");
        let logs = (0..topics)
            .map(|_| MemLog::new(TOPIC_PARTITIONS, LOG_RECORDS_MAX))
            .collect();
        BrokerState {
            data: Arc::new(Mutex::new(BrokerData {
                logs,
                producers: BTreeMap::new(),
            })),
            appended: Arc::new(Notify::new()),
            ack_delay: None,
        }
    }

    /// The same broker, holding each produce [`PRODUCE_ACK_DELAY`] before
    /// appending and acknowledging it, so that a crash of its host loses
    /// the produce requests not yet acknowledged.
    pub fn with_ack_delay(mut self) -> BrokerState {
        self.ack_delay = Some(PRODUCE_ACK_DELAY);
        self
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut BrokerData) -> T) -> T {
        f(&mut self.data.lock().expect("broker lock"))
    }

    /// True when `group` has committed every record of every partition of
    /// `topic`.
    pub fn fully_committed(&self, topic: u32, group: &str) -> bool {
        self.with(|data| {
            let log = &data.logs[topic as usize];
            (0..log.partition_count() as i32)
                .all(|partition| log.committed(group, partition) == log.end_offset(partition))
        })
    }

    fn produce(
        &self,
        producer_id: u64,
        first_sequence: u64,
        records: &[ProducedRecord],
    ) -> BrokerReply {
        let reply = self.with(|data| {
            let next = data.producers.entry(producer_id).or_insert(0);
            if first_sequence > *next {
                return BrokerReply::Error(format!(
                    "sequence gap: expected {next}, got {first_sequence}"
                ));
            }
            let skip = (*next - first_sequence) as usize;
            for (topic, key, value) in records.iter().skip(skip) {
                let Some(log) = data.logs.get_mut(*topic as usize) else {
                    return BrokerReply::Error(format!("no topic {topic}"));
                };
                if let Err(full) = log.append(key, value.clone()) {
                    return BrokerReply::Error(format!("log full at {} records", full.records_max));
                }
                *next += 1;
            }
            BrokerReply::Produced {
                next_sequence: *next,
            }
        });
        self.appended.notify_waiters();
        reply
    }

    /// Runs `f` on `topic`'s log, or answers that there is no such topic.
    fn with_log(&self, topic: u32, f: impl FnOnce(&mut MemLog) -> BrokerReply) -> BrokerReply {
        self.with(|data| match data.logs.get_mut(topic as usize) {
            Some(log) => f(log),
            None => BrokerReply::Error(format!("no topic {topic}")),
        })
    }

    fn fetch_now(
        &self,
        log: &MemLog,
        positions: &[(i32, i64)],
        records_max: usize,
    ) -> Vec<BusRecord> {
        let mut out = Vec::new();
        for (partition, offset) in positions {
            let room = records_max - out.len();
            if room == 0 {
                break;
            }
            out.extend(log.fetch(*partition, *offset, room));
        }
        out
    }

    /// Records past `positions`, counted without copying them.
    fn available(log: &MemLog, positions: &[(i32, i64)]) -> usize {
        positions
            .iter()
            .map(|(partition, offset)| (log.end_offset(*partition) - offset).max(0) as usize)
            .sum()
    }

    async fn fetch(
        &self,
        topic: u32,
        positions: &[(i32, i64)],
        records_max: u32,
        min_records: u32,
        wait_ms: u32,
    ) -> BrokerReply {
        let records_max = (records_max as usize).clamp(1, FETCH_RECORDS_MAX);
        let min_records = (min_records as usize).clamp(1, records_max);
        let wait = Duration::from_millis(u64::from(wait_ms)).min(FETCH_WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Any topic's append wakes every waiting fetch; each then counts
            // its own topic again, which costs little at three topics.
            let notified = self.appended.notified();
            let enough = self.with(|data| {
                data.logs
                    .get(topic as usize)
                    .is_none_or(|log| BrokerState::available(log, positions) >= min_records)
            });
            if enough {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.with_log(topic, |log| {
            BrokerReply::Records(self.fetch_now(log, positions, records_max))
        })
    }

    fn commit(&self, topic: u32, group: &str, offsets: &[(i32, i64)]) -> BrokerReply {
        self.with_log(topic, |log| {
            for (partition, offset) in offsets {
                if *partition < 0 || *partition >= log.partition_count() as i32 {
                    return BrokerReply::Error(format!("no partition {partition}"));
                }
                let end = log.end_offset(*partition);
                if *offset < 0 || *offset > end {
                    return BrokerReply::Error(format!(
                        "commit of offset {offset} outside 0..={end} on partition {partition}"
                    ));
                }
            }
            for (partition, offset) in offsets {
                log.commit(group, *partition, *offset);
            }
            BrokerReply::Done
        })
    }

    fn committed(&self, topic: u32, group: &str) -> BrokerReply {
        self.with_log(topic, |log| {
            let offsets = (0..log.partition_count() as i32)
                .map(|partition| (partition, log.committed(group, partition)))
                .collect();
            BrokerReply::Offsets(offsets)
        })
    }

    fn end_offsets(&self, topic: u32) -> BrokerReply {
        self.with_log(topic, |log| {
            let offsets = (0..log.partition_count() as i32)
                .map(|partition| (partition, log.end_offset(partition)))
                .collect();
            BrokerReply::Offsets(offsets)
        })
    }

    async fn handle(&self, request: BrokerRequest) -> BrokerReply {
        match request {
            BrokerRequest::Produce {
                producer_id,
                first_sequence,
                records,
            } => {
                if let Some(delay) = self.ack_delay {
                    // A crash of the host now drops this request unanswered
                    // and unappended.
                    tokio::time::sleep(delay).await;
                }
                self.produce(producer_id, first_sequence, &records)
            }
            BrokerRequest::Fetch {
                topic,
                positions,
                records_max,
                min_records,
                wait_ms,
            } => {
                self.fetch(topic, &positions, records_max, min_records, wait_ms)
                    .await
            }
            BrokerRequest::Commit {
                topic,
                group,
                offsets,
            } => self.commit(topic, &group, &offsets),
            BrokerRequest::Committed { topic, group } => self.committed(topic, &group),
            BrokerRequest::EndOffsets { topic } => self.end_offsets(topic),
        }
    }
}

/// The broker host's software: serves [`BrokerState`] until the host stops.
pub async fn run_broker(state: BrokerState) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", BROKER_PORT)).await?;
    let slots = Arc::new(Semaphore::new(BROKER_CONNECTIONS_MAX));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (stream, peer) = listener.accept().await?;
        let state = state.clone();
        tokio::task::spawn_local(async move {
            if let Err(error) = serve_connection(&state, stream).await {
                debug!(%peer, %error, "broker connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(state: &BrokerState, mut stream: TcpStream) -> io::Result<()> {
    loop {
        let frame = match tokio::time::timeout(CONNECTION_IDLE_MAX, read_frame(&mut stream)).await {
            Ok(frame) => frame?,
            Err(_) => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        let reply = match BrokerRequest::decode(&frame) {
            Ok(request) => state.handle(request).await,
            Err(error) => {
                warn!(%error, "broker refused a malformed request");
                BrokerReply::Error(error.to_string())
            }
        };
        if let BrokerReply::Error(reason) = &reply {
            warn!(%reason, "broker answered with an error");
        }
        write_frame(&mut stream, &reply.encode()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let requests = [
            BrokerRequest::Produce {
                producer_id: 1,
                first_sequence: 5,
                records: vec![(1, b"k".to_vec(), b"v".to_vec())],
            },
            BrokerRequest::Fetch {
                topic: 2,
                positions: vec![(0, 3), (1, 0)],
                records_max: 10,
                min_records: 4,
                wait_ms: 100,
            },
            BrokerRequest::Commit {
                topic: 1,
                group: "edge".into(),
                offsets: vec![(2, 9)],
            },
            BrokerRequest::Committed {
                topic: 0,
                group: "g".into(),
            },
            BrokerRequest::EndOffsets { topic: 2 },
        ];
        for request in requests {
            assert_eq!(BrokerRequest::decode(&request.encode()).unwrap(), request);
        }
        let replies = [
            BrokerReply::Produced { next_sequence: 4 },
            BrokerReply::Records(vec![BusRecord {
                partition: 1,
                offset: 2,
                payload: b"x".to_vec(),
                timestamp_ms: None,
            }]),
            BrokerReply::Offsets(vec![(0, 1)]),
            BrokerReply::Done,
            BrokerReply::Error("no".into()),
        ];
        for reply in replies {
            assert_eq!(BrokerReply::decode(&reply.encode()).unwrap(), reply);
        }
        assert!(BrokerRequest::decode(&[9]).is_err());
    }

    #[test]
    fn a_resent_produce_is_not_appended_twice_and_bad_commits_are_refused() {
        let state = BrokerState::new(2);
        let records = vec![
            (0, b"a".to_vec(), b"1".to_vec()),
            (1, b"a".to_vec(), b"2".to_vec()),
        ];
        assert_eq!(
            state.produce(7, 0, &records),
            BrokerReply::Produced { next_sequence: 2 }
        );
        assert_eq!(
            state.produce(7, 0, &records),
            BrokerReply::Produced { next_sequence: 2 }
        );
        let totals = state.with(|data| {
            data.logs
                .iter()
                .map(MemLog::total_records)
                .collect::<Vec<_>>()
        });
        assert_eq!(totals, [1, 1], "one record on each topic");
        assert!(
            matches!(
                state.produce(7, 2, &[(5, b"a".to_vec(), b"3".to_vec())]),
                BrokerReply::Error(_)
            ),
            "no topic 5"
        );
        assert!(matches!(
            state.produce(7, 5, &records),
            BrokerReply::Error(_)
        ));
        assert!(matches!(
            state.commit(0, "g", &[(0, 99)]),
            BrokerReply::Error(_)
        ));
        assert!(!state.fully_committed(0, "g"));
        let ends = state.end_offsets(1);
        let BrokerReply::Offsets(ends) = ends else {
            panic!("end offsets answer with offsets: {ends:?}")
        };
        assert_eq!(ends.iter().map(|(_, end)| end).sum::<i64>(), 1);
        assert_eq!(ends.len(), TOPIC_PARTITIONS as usize);
    }
}
