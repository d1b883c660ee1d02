//! `KafkaBus`: the edge's [`ReadingsBus`] over rdkafka, consuming every
//! partition of its topic (`power_topic` unless told), or an explicit set of
//! them (`--partitions`), with offsets kept in the edge's own consumer
//! group, committed by hand.
//!
//! Offsets are committed only when the edge says so (after the tuples the
//! records produced are durable in SQLite), so auto-commit is off. A group
//! that never committed starts at the earliest record, so a new edge sees
//! every reading the broker still holds.
//!
//! A broker that went away stays "unavailable" to the edge until it
//! answers again (a record arrives, or a metadata request succeeds), not
//! merely until librdkafka stops reporting errors: an unreachable broker
//! is silent between its error events, and the edge takes a silent bus for
//! a finished stream and closes its windows.
//!
//! Partitions are assigned by the bus itself rather than by the broker's
//! group protocol: each edge has a group of its own and must read every
//! partition, so there is nothing to balance, and a group rebalance only
//! costs time. After a crash the dead member holds its partitions until its
//! session times out (and a broker may never hand them over: tansu 0.6
//! keeps a group whose leader died without an assignment). With its own
//! assignment a restarted edge resumes at once from the committed offsets.
//! The group still stores those offsets. The topic's partitions are looked
//! up again every [`PARTITIONS_REFRESH_INTERVAL`], so partitions added
//! later are read too.
//!
//! With an explicit set ([`KafkaBus::connect_partitions`]), several edges
//! share one topic, each reading its own partitions (its site's
//! households) in a group of its own: the bus assigns the set's partitions
//! that exist, each at the group's committed offset, and never others. A
//! named partition the topic does not have yet is logged and assigned once
//! it appears. The end query and the lag cover the assigned partitions
//! only, so another site's backlog never holds up this edge's flush.
//!
//! [`ReadingsBus::at_end`] compares, per assigned partition, the consumer's
//! position (or, before the first record since the assignment, the group's
//! committed offset) with the high watermark asked from the broker at that
//! moment (`fetch_watermarks`), off the async threads and within
//! [`WATERMARKS_QUERY_TIMEOUT`]. Any error or timeout is "not confirmed":
//! a broker that does not answer must never look like a finished stream.
//!
//! The consumer's lag ([`ConsumerLag`], `edgemeter_consumer_lag_records`)
//! comes from librdkafka's own statistics, every
//! [`STATISTICS_INTERVAL`]: per partition, `consumer_lag`, the high
//! watermark minus the group's committed offset, the lag Kafka's own tools
//! show for a group. Committed, not read: the edge commits only what
//! SQLite holds and never past an open window, so this is what a restarted
//! edge would read again, and it falls to 0 only once the stream's last
//! windows are stored. The statistics come with the consumer's own polls,
//! so the lag costs no broker query of ours.

use edgemeter_edge::{BusError, BusRecord, ReadingsBus};
use futures::{FutureExt, Stream, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The topic households publish to, as in the original system.
pub const TOPIC: &str = "power_topic";

/// How long a poll waits for its first record. The edge needs `poll` to
/// return within about a second even when idle, so that it can commit and
/// flush; 200 ms keeps it responsive without spinning.
pub const FIRST_RECORD_WAIT: Duration = Duration::from_millis(200);

/// How long the start-up check waits for the broker's metadata before it
/// reports the broker unreachable.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the bus looks for partitions it does not read yet; every
/// second while it reads none (the topic may not exist yet).
pub const PARTITIONS_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// How long a refresh of the topic's partitions may take before the bus
/// tries again at the next interval.
const PARTITIONS_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the end query may take in all (the committed offsets and one
/// watermark query per partition share it). A healthy broker answers in
/// milliseconds; past this the end is "not confirmed" and the edge asks
/// again after its next empty poll. Below the edge's own backstop, so that
/// the bus, not the edge, reports the timeout.
pub const WATERMARKS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

const _: () = assert!(
    WATERMARKS_QUERY_TIMEOUT.as_millis() < edgemeter_edge::edge::END_QUERY_TIMEOUT.as_millis()
);

/// After the first record, a poll drains what is already buffered. The
/// stream may report "nothing yet" once for an internal event even though
/// records follow, so the drain stops only after this many empty looks.
const DRAIN_EMPTY_LOOKS_MAX: usize = 2;

/// While the broker is away librdkafka queues an error event every few
/// seconds, faster than an edge backed off to one poll in 5 s reads them.
/// A poll that meets an error reads the errors already queued behind it, at
/// most this many, so that a backlog of old errors does not keep a broker
/// that has returned looking down for minutes.
const STALE_ERRORS_MAX: usize = 1_000;

/// How often librdkafka reports its statistics, which carry the consumer
/// lag. Parsing them costs a few hundred microseconds for a few partitions;
/// every 2 s keeps the lag gauge fresher than a 15 s scrape interval needs.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(2);

/// The edge's consumer lag in records, summed over the partitions it reads,
/// as librdkafka's last statistics reported it; unknown until a partition
/// has both a high watermark and a committed offset.
#[derive(Debug)]
pub struct ConsumerLag {
    /// The lag, or -1 while unknown.
    records: AtomicI64,
}

impl Default for ConsumerLag {
    fn default() -> Self {
        ConsumerLag {
            records: AtomicI64::new(-1),
        }
    }
}

impl ConsumerLag {
    pub fn records(&self) -> Option<u64> {
        u64::try_from(self.records.load(Ordering::Relaxed)).ok()
    }

    /// Takes the lag of `topic`'s partitions (those of `only`, if given)
    /// from one statistics report: the sum over partitions whose lag is
    /// known (librdkafka reports -1 for the others, and partition -1 is its
    /// internal one).
    fn handle_statistics(
        &self,
        topic: &str,
        only: Option<&BTreeSet<i32>>,
        statistics: &Statistics,
    ) {
        let Some(found) = statistics.topics.get(topic) else {
            return;
        };
        let wanted = |partition: i32| only.is_none_or(|only| only.contains(&partition));
        let known: Vec<i64> = found
            .partitions
            .iter()
            .filter(|(partition, stats)| {
                **partition >= 0 && wanted(**partition) && stats.consumer_lag >= 0
            })
            .map(|(_, stats)| stats.consumer_lag)
            .collect();
        if !known.is_empty() {
            let total = known
                .iter()
                .fold(0_i64, |sum, lag| sum.saturating_add(*lag));
            self.records.store(total, Ordering::Relaxed);
        }
    }
}

/// The consumer's context: librdkafka's statistics go to [`ConsumerLag`].
pub struct LagContext {
    topic: String,
    /// The partitions the bus may read (`None`: all): the lag is theirs.
    partitions: Option<BTreeSet<i32>>,
    lag: Arc<ConsumerLag>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        self.lag
            .handle_statistics(&self.topic, self.partitions.as_ref(), &statistics);
    }
}

impl ConsumerContext for LagContext {}

/// The environment variable that switches on librdkafka's own debug
/// contexts (e.g. `cgrp,fetch`), logged through tracing at debug level.
pub const KAFKA_DEBUG_ENV: &str = "EDGEMETER_KAFKA_DEBUG";

/// A client configuration with the brokers and, if asked for, librdkafka's
/// debug contexts.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    if let Ok(contexts) = std::env::var(KAFKA_DEBUG_ENV) {
        config.set("debug", contexts);
    }
    config
}

/// A broker that could not be reached at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSetupError {
    pub brokers: String,
    pub reason: String,
}

impl fmt::Display for BrokerSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the Kafka broker at {}: {}; start a broker there (e.g. `tansu broker`) or pass --kafka HOST:PORT",
            self.brokers, self.reason
        )
    }
}

impl std::error::Error for BrokerSetupError {}

/// Fetches the cluster's metadata to prove the broker answers. Runs the
/// blocking call off the async threads.
pub async fn check_broker<X: ConsumerContext + 'static>(
    client: Arc<impl Consumer<X> + Send + Sync + 'static>,
    brokers: &str,
    topic: &str,
) -> Result<(), BrokerSetupError> {
    let topic_name = topic.to_owned();
    let fetched = tokio::task::spawn_blocking(move || {
        client
            .fetch_metadata(Some(&topic_name), METADATA_TIMEOUT)
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .any(|topic| topic.error().is_none() && !topic.partitions().is_empty())
            })
    })
    .await
    .map_err(|error| BrokerSetupError {
        brokers: brokers.to_owned(),
        reason: format!("metadata task failed: {error}"),
    })?;
    match fetched {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!(
                topic,
                brokers,
                "topic has no partitions yet; waiting for it to be created"
            );
            Ok(())
        }
        Err(error) => Err(BrokerSetupError {
            brokers: brokers.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// The readings stream of one edge.
pub struct KafkaBus {
    consumer: Arc<StreamConsumer<LagContext>>,
    lag: Arc<ConsumerLag>,
    topic: String,
    /// The partitions it may read (`--partitions`); `None`: every one.
    wanted: Option<BTreeSet<i32>>,
    /// Named partitions the topic did not have at the last look, as last
    /// logged: logged again only when that changes.
    missing: BTreeSet<i32>,
    /// Partitions this bus reads, by number.
    assigned: BTreeSet<i32>,
    next_refresh: Instant,
    /// Set by an error from the broker, cleared once it answers again.
    broker_down: bool,
}

impl KafkaBus {
    /// Reads every partition of `topic` with offsets in the group
    /// `edgemeter-<edge id>`, after checking that the broker answers.
    pub async fn connect(
        brokers: &str,
        edge_id: &str,
        topic: &str,
    ) -> Result<KafkaBus, BrokerSetupError> {
        KafkaBus::connect_partitions(brokers, edge_id, topic, None).await
    }

    /// As [`KafkaBus::connect`], reading only the partitions of `wanted`
    /// when it is given (at least one).
    pub async fn connect_partitions(
        brokers: &str,
        edge_id: &str,
        topic: &str,
        wanted: Option<BTreeSet<i32>>,
    ) -> Result<KafkaBus, BrokerSetupError> {
        if let Some(wanted) = &wanted {
            assert!(!wanted.is_empty(), "an empty partition set reads nothing");
            assert!(wanted.iter().all(|&partition| partition >= 0));
        }
        let lag = Arc::new(ConsumerLag::default());
        let context = LagContext {
            topic: topic.to_owned(),
            partitions: wanted.clone(),
            lag: lag.clone(),
        };
        let consumer: StreamConsumer<LagContext> = client_config(brokers)
            .set("group.id", group_id(edge_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Hand over fetched records quickly instead of batching for 500 ms.
            .set("fetch.wait.max.ms", "100")
            .set("reconnect.backoff.max.ms", "2000")
            .set(
                "statistics.interval.ms",
                STATISTICS_INTERVAL.as_millis().to_string(),
            )
            .create_with_context(context)
            .map_err(|error| BrokerSetupError {
                brokers: brokers.to_owned(),
                reason: error.to_string(),
            })?;
        let consumer = Arc::new(consumer);
        check_broker(consumer.clone(), brokers, topic).await?;
        let mut bus = KafkaBus {
            consumer,
            lag,
            topic: topic.to_owned(),
            wanted,
            missing: BTreeSet::new(),
            assigned: BTreeSet::new(),
            next_refresh: Instant::now(),
            broker_down: false,
        };
        bus.refresh_partitions().await;
        Ok(bus)
    }

    /// The consumer's lag, kept up to date by librdkafka's statistics for
    /// as long as the bus is polled.
    pub fn consumer_lag(&self) -> Arc<ConsumerLag> {
        self.lag.clone()
    }

    /// Starts reading partitions of the topic (of the wanted set, if one
    /// was given) that appeared since the last look, each at its committed
    /// offset (or the earliest record).
    async fn refresh_partitions(&mut self) {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let looked_up =
            tokio::task::spawn_blocking(move || partitions_of(&*consumer, &topic)).await;
        let partitions = match looked_up {
            Ok(Ok(partitions)) => self.wanted_of(partitions),
            Ok(Err(error)) => {
                tracing::debug!(%error, "partition lookup failed; trying again later");
                BTreeSet::new()
            }
            Err(error) => {
                tracing::debug!(%error, "partition lookup task failed; trying again later");
                BTreeSet::new()
            }
        };
        let added: Vec<i32> = partitions.difference(&self.assigned).copied().collect();
        if !added.is_empty() {
            let mut list = TopicPartitionList::with_capacity(added.len());
            for partition in &added {
                let _ = list.add_partition_offset(&self.topic, *partition, Offset::Stored);
            }
            match self.consumer.incremental_assign(&list) {
                Ok(()) => {
                    tracing::info!(topic = %self.topic, partitions = ?added, "reading partitions from their committed offsets");
                    self.assigned.extend(added);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot assign partitions; trying again later")
                }
            }
        }
        let interval = if self.assigned.is_empty() {
            Duration::from_secs(1)
        } else {
            PARTITIONS_REFRESH_INTERVAL
        };
        self.next_refresh = Instant::now() + interval;
    }
}

/// The partition numbers of `topic`, from the broker's metadata.
fn partitions_of<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
) -> Result<BTreeSet<i32>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), PARTITIONS_LOOKUP_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic && found.error().is_none())
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
        .collect())
}

/// Whether the consumer has read every partition in `partitions` to the
/// high watermark the broker reports now. Blocking: the broker queries
/// share `deadline`, and running past it is an error.
fn read_to_end<X: ConsumerContext>(
    consumer: &impl Consumer<X>,
    topic: &str,
    partitions: &BTreeSet<i32>,
    deadline: std::time::Instant,
) -> Result<bool, String> {
    let remaining = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("no answer within {WATERMARKS_QUERY_TIMEOUT:?}"))
    };
    let positions = consumer.position().map_err(|error| error.to_string())?;
    let mut committed = None;
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, remaining()?)
            .map_err(|error| format!("watermarks of partition {partition}: {error}"))?;
        let position = positions
            .find_partition(topic, partition)
            .map(|element| element.offset());
        let next = match position {
            Some(Offset::Offset(next)) => next,
            // Nothing read since the assignment: the consumer stands at the
            // group's committed offset, or at the earliest record without one.
            _ => {
                if committed.is_none() {
                    let list = consumer
                        .committed(remaining()?)
                        .map_err(|error| format!("committed offsets: {error}"))?;
                    committed = Some(list);
                }
                let list = committed.as_ref().expect("fetched above");
                match list.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(next)) => next,
                    _ => low,
                }
            }
        };
        if next < high {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The consumer group of an edge: one group per edge, so that two edges
/// each see every reading and each commit their own progress.
pub fn group_id(edge_id: &str) -> String {
    format!("edgemeter-{edge_id}")
}

fn bus_record(message: &impl Message) -> BusRecord {
    BusRecord {
        partition: message.partition(),
        offset: message.offset(),
        // A record without a value is kept as empty bytes: the edge rejects
        // it as "not JSON" and keeps it in its `rejected` table.
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        // CreateTime from the producer, or LogAppendTime from the broker:
        // the clock of the original's records, which carry none.
        timestamp_ms: message.timestamp().to_millis(),
    }
}

impl KafkaBus {
    /// The partitions of `existing` this bus reads; logs the wanted ones
    /// the topic lacks when that set changes.
    fn wanted_of(&mut self, existing: BTreeSet<i32>) -> BTreeSet<i32> {
        let Some(wanted) = &self.wanted else {
            return existing;
        };
        let missing: BTreeSet<i32> = wanted.difference(&existing).copied().collect();
        if missing != self.missing {
            if !missing.is_empty() {
                tracing::warn!(topic = %self.topic, partitions = ?missing, existing = ?existing, "--partitions names partitions the topic does not have (yet); reading them once they appear");
            }
            self.missing = missing;
        }
        existing.intersection(wanted).copied().collect()
    }

    /// A poll that found nothing: an empty batch if the broker answers, or
    /// still unavailable if it went away and has not answered since.
    async fn nothing_new(&mut self) -> Result<Vec<BusRecord>, BusError> {
        if !self.broker_down {
            return Ok(Vec::new());
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let answered = tokio::task::spawn_blocking(move || partitions_of(&*consumer, &topic))
            .await
            .map_err(|error| BusError::Unavailable(format!("metadata task failed: {error}")))?;
        match answered {
            Ok(_) => {
                self.broker_down = false;
                Ok(Vec::new())
            }
            Err(error) => Err(BusError::Unavailable(format!(
                "no answer since the broker went away: {error}"
            ))),
        }
    }
}

/// Reads past the errors already queued after `first`: the first record
/// behind them, or the newest error when only errors were queued. Generic
/// over the stream so that a test can queue more errors than the limit
/// without a broker.
fn skip_stale_errors<T, E: fmt::Display>(
    stream: &mut (impl Stream<Item = Result<T, E>> + Unpin),
    first: E,
) -> Result<T, BusError> {
    let mut newest = first;
    for _ in 0..STALE_ERRORS_MAX {
        match stream.next().now_or_never() {
            Some(Some(Err(error))) => newest = error,
            Some(Some(Ok(record))) => return Ok(record),
            Some(None) | None => break,
        }
    }
    Err(BusError::Unavailable(newest.to_string()))
}

impl ReadingsBus for KafkaBus {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        assert!(records_max > 0);
        if Instant::now() >= self.next_refresh {
            self.refresh_partitions().await;
        }
        let mut stream = self.consumer.stream();
        let first = match tokio::time::timeout(FIRST_RECORD_WAIT, stream.next()).await {
            Err(_) | Ok(None) => {
                drop(stream);
                return self.nothing_new().await;
            }
            Ok(Some(Err(error))) => {
                self.broker_down = true;
                skip_stale_errors(&mut stream, error).map(|message| bus_record(&message))?
            }
            Ok(Some(Ok(message))) => bus_record(&message),
        };
        self.broker_down = false;
        let mut records = vec![first];
        let mut empty_looks = 0;
        while records.len() < records_max && empty_looks < DRAIN_EMPTY_LOOKS_MAX {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => records.push(bus_record(&message)),
                // Records already taken off the queue must reach the edge:
                // the consumer will not deliver them again.
                Some(Some(Err(error))) => {
                    tracing::debug!(%error, "consumer error after {} records; returning those", records.len());
                    break;
                }
                Some(None) | None => empty_looks += 1,
            }
        }
        Ok(records)
    }

    async fn commit(&mut self, next_offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(next_offsets.len());
        for (partition, offset) in next_offsets {
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .map_err(|error| BusError::Unavailable(error.to_string()))?;
        }
        self.consumer
            .commit(&list, CommitMode::Async)
            .map_err(|error| BusError::Unavailable(error.to_string()))
    }

    async fn at_end(&mut self) -> Result<bool, BusError> {
        if self.broker_down {
            return Err(BusError::Unavailable(
                "the broker has not answered since it went away".into(),
            ));
        }
        if self.assigned.is_empty() {
            // Nothing read yet (the topic may not exist): nothing to confirm.
            return Ok(false);
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let partitions = self.assigned.clone();
        let deadline = std::time::Instant::now() + WATERMARKS_QUERY_TIMEOUT;
        let query = tokio::task::spawn_blocking(move || {
            read_to_end(&*consumer, &topic, &partitions, deadline)
        });
        // The blocking queries keep to the deadline; this bounds the wait
        // even if one did not.
        match tokio::time::timeout(WATERMARKS_QUERY_TIMEOUT + Duration::from_millis(500), query)
            .await
        {
            Ok(Ok(Ok(at_end))) => Ok(at_end),
            Ok(Ok(Err(reason))) => Err(BusError::Unavailable(reason)),
            Ok(Err(error)) => Err(BusError::Unavailable(format!(
                "end query task failed: {error}"
            ))),
            Err(_) => Err(BusError::Unavailable(format!(
                "no answer to the end query within {WATERMARKS_QUERY_TIMEOUT:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    /// Errors `1..=errors`, then a record, then one more error: what a
    /// consumer's stream holds after an outage with a record at its end.
    fn queued(errors: usize) -> impl Stream<Item = Result<&'static str, String>> + Unpin {
        let errors = (1..=errors).map(|number| Err(format!("error {number}")));
        stream::iter(errors.chain([Ok("record"), Err("after".to_owned())]))
    }

    fn left_in(stream: impl Stream<Item = Result<&'static str, String>> + Unpin) -> usize {
        stream
            .count()
            .now_or_never()
            .expect("the stream is always ready")
    }

    /// Goal: a poll that meets an error reads at most `STALE_ERRORS_MAX`
    /// more queued items, then returns, however many errors are queued.
    /// Method: a record just within the limit is reached; one just past it
    /// is left for the next poll, with the newest error read returned.
    #[test]
    fn stale_errors_are_read_up_to_their_limit_then_the_poll_returns() {
        let mut within = queued(STALE_ERRORS_MAX - 1);
        let found = skip_stale_errors(&mut within, "error 0".to_owned());
        assert_eq!(found, Ok("record"));
        assert_eq!(left_in(within), 1, "nothing after the record is read");

        let mut past = queued(STALE_ERRORS_MAX);
        let found = skip_stale_errors(&mut past, "error 0".to_owned());
        assert_eq!(
            found,
            Err(BusError::Unavailable(format!("error {STALE_ERRORS_MAX}")))
        );
        assert_eq!(left_in(past), 2, "the record waits for the next poll");
    }

    /// Goal: a watermark query nobody answers is an error, never an end,
    /// both when it times out and when its time is already used up.
    /// Method: a consumer aimed at a port nobody listens on.
    #[test]
    fn an_unanswered_watermark_query_is_not_an_end() {
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap();
        let consumer: rdkafka::consumer::BaseConsumer =
            client_config(&nobody.to_string()).create().unwrap();
        let partitions = BTreeSet::from([0, 1]);
        let soon = std::time::Instant::now() + Duration::from_millis(300);
        let answer = read_to_end(&consumer, TOPIC, &partitions, soon);
        assert!(answer.is_err(), "{answer:?}");
        let past = std::time::Instant::now();
        let answer = read_to_end(&consumer, TOPIC, &partitions, past);
        assert!(answer.is_err(), "{answer:?}");
    }

    /// Goal: an empty or not-yet-ready queue ends the skip at once, with
    /// the error the poll met.
    #[test]
    fn with_nothing_queued_the_first_error_is_returned() {
        let mut pending = stream::pending::<Result<&'static str, String>>();
        let found = skip_stale_errors(&mut pending, "first".to_owned());
        assert_eq!(found, Err(BusError::Unavailable("first".to_owned())));
        let mut ended = stream::empty::<Result<&'static str, String>>();
        let found = skip_stale_errors(&mut ended, "first".to_owned());
        assert_eq!(found, Err(BusError::Unavailable("first".to_owned())));
    }
}
