//! The `households` host: replays the CSV readings into the broker in
//! simulated time, each reading at its own timestamp (the data's first
//! reading of the slice is simulated time zero), as `edgemeter households
//! --speed 1` does against Kafka. Each reading goes to the topic of the
//! edge that serves its household (one producer for every site, as one
//! replay process feeds every site's topic in the end-to-end test).
//!
//! The producer is idempotent: each reading has a sequence number, a batch
//! whose reply was lost is sent again with the same numbers, and the broker
//! skips what it already has. Readings that fall due while the broker is
//! unreachable wait and go out together once it answers, so the log always
//! holds every reading exactly once, in order per household.
//!
//! Stale duplicates (a [`crate::faults::Fault::StaleDuplicate`]) are the
//! one exception, on purpose: a second producer, as a replay run again over
//! a range or a producer without idempotence that retried after a long
//! outage, sends again a reading published a minute or more before. Its
//! window has closed at the edge, so the edge must keep it as `late` and
//! leave the stored average as it is (the reading was counted already).

use crate::broker::{BrokerReply, BrokerRequest, ProducedRecord, BROKER_HOST, BROKER_PORT};
use crate::net::{call, connect};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

/// The most readings in one produce request. With 50 households a second
/// brings 25 readings; this lets a backlog after an outage drain quickly.
pub const PRODUCE_RECORDS_MAX: usize = 2048;

/// How long a due reading waits for others to share its produce request, as
/// a Kafka producer's `linger.ms`. A reading is published at most this late.
pub const PRODUCE_LINGER: Duration = Duration::from_millis(250);

/// How long one produce may take before it is sent again.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(1);

/// The pause between attempts while the broker is unreachable.
pub const PRODUCE_BACKOFF: Duration = Duration::from_millis(200);

/// The producer id the households use (one producer for all of them).
const PRODUCER_ID: u64 = 1;

/// The producer id of the stale duplicates' producer.
const STALE_PRODUCER_ID: u64 = 2;

/// How often a stale duplicate is tried before it is given up (the broker
/// may be unreachable then; a duplicate that never arrives changes
/// nothing).
pub const STALE_ATTEMPTS_MAX: u32 = 20;

/// One stale duplicate: when it is sent (from the start), and how much
/// older than that the reading it repeats is at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleDuplicate {
    pub at: Duration,
    pub age: Duration,
}

/// One reading ready to publish: its key (household id), its JSON record,
/// and when it falls due in simulated time.
#[derive(Debug, Clone)]
pub struct Publication {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub due: Duration,
}

/// What the harness sees of the replay.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Readings acknowledged by the broker.
    pub published: AtomicU64,
}

/// The households host's software. `topics[i]` is the topic of
/// `readings[i]`.
pub async fn run_households(
    readings: Arc<Vec<Publication>>,
    topics: Arc<Vec<u32>>,
    progress: Arc<ReplayProgress>,
    stale: Arc<Vec<StaleDuplicate>>,
) -> turmoil::Result {
    assert_eq!(readings.len(), topics.len());
    let origin = Instant::now();
    if !stale.is_empty() {
        let (readings, topics, progress) = (readings.clone(), topics.clone(), progress.clone());
        tokio::task::spawn_local(send_stale(origin, readings, topics, progress, stale));
    }
    let mut connection = None;
    let mut reachable = true;
    loop {
        let cursor = progress.published.load(Ordering::Relaxed) as usize;
        if cursor == readings.len() {
            info!(readings = cursor, "households finished the replay");
            return Ok(());
        }
        sleep_until(origin + readings[cursor].due + PRODUCE_LINGER).await;
        let now = origin.elapsed();
        let batch: Vec<ProducedRecord> = readings[cursor..]
            .iter()
            .zip(&topics[cursor..])
            .take(PRODUCE_RECORDS_MAX)
            .take_while(|(reading, _)| reading.due <= now)
            .map(|(reading, topic)| (*topic, reading.key.clone(), reading.value.clone()))
            .collect();
        let request = BrokerRequest::Produce {
            producer_id: PRODUCER_ID,
            first_sequence: cursor as u64,
            records: batch,
        };
        match produce(&mut connection, &request).await {
            Ok(next_sequence) => {
                if !reachable {
                    info!(
                        backlog = next_sequence - cursor as u64,
                        "households reach the broker again"
                    );
                    reachable = true;
                }
                assert!(next_sequence as usize <= readings.len());
                progress.published.store(next_sequence, Ordering::Relaxed);
            }
            Err(reason) => {
                if reachable {
                    warn!(%reason, "households cannot reach the broker; readings wait");
                    reachable = false;
                }
                connection = None;
                sleep(PRODUCE_BACKOFF).await;
            }
        }
    }
}

/// Sends each stale duplicate at its time: the newest reading published
/// at least its age before, again, from a second producer.
async fn send_stale(
    origin: Instant,
    readings: Arc<Vec<Publication>>,
    topics: Arc<Vec<u32>>,
    progress: Arc<ReplayProgress>,
    stale: Arc<Vec<StaleDuplicate>>,
) {
    let mut connection = None;
    let mut sequence = 0u64;
    for duplicate in stale.iter() {
        sleep_until(origin + duplicate.at).await;
        let published = progress.published.load(Ordering::Relaxed) as usize;
        let Some(due_before) = origin.elapsed().checked_sub(duplicate.age) else {
            continue;
        };
        let Some(index) = readings[..published]
            .iter()
            .rposition(|reading| reading.due <= due_before)
        else {
            continue;
        };
        let reading = &readings[index];
        let request = BrokerRequest::Produce {
            producer_id: STALE_PRODUCER_ID,
            first_sequence: sequence,
            records: vec![(topics[index], reading.key.clone(), reading.value.clone())],
        };
        for _ in 0..STALE_ATTEMPTS_MAX {
            match produce(&mut connection, &request).await {
                Ok(next_sequence) => {
                    sequence = next_sequence;
                    info!(index, "a stale duplicate of a reading was published");
                    break;
                }
                Err(_) => {
                    connection = None;
                    sleep(PRODUCE_BACKOFF).await;
                }
            }
        }
    }
}

async fn produce(
    connection: &mut Option<turmoil::net::TcpStream>,
    request: &BrokerRequest,
) -> Result<u64, String> {
    if connection.is_none() {
        *connection = Some(
            connect(BROKER_HOST, BROKER_PORT)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let stream = connection.as_mut().expect("connected above");
    let bytes = call(stream, &request.encode(), PRODUCE_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    match BrokerReply::decode(&bytes).map_err(|error| error.to_string())? {
        BrokerReply::Produced { next_sequence } => Ok(next_sequence),
        other => Err(format!("unexpected reply {other:?}")),
    }
}
