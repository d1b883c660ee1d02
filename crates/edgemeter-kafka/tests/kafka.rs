//! `KafkaBus` and `KafkaProducer` against a real Kafka-protocol broker
//! (tansu): every published reading is consumed, in order per household,
//! and a new consumer of the same group resumes at the committed offsets.

mod common;

use common::{broker_with_readings, Tansu};
use edgemeter_edge::{BusRecord, ReadingsBus};
use edgemeter_kafka::bus::{KafkaBus, TOPIC};
use edgemeter_kafka::producer::KafkaProducer;
use edgemeter_memlog::sink::ReadingSink;
use edgemeter_wire::Reading;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const READINGS: usize = 2_000;

/// Records per poll: far below `READINGS`, so the bound is reached.
const POLL_RECORDS_MAX: usize = 500;

fn readings() -> Vec<Reading> {
    common::house_readings(READINGS)
}

/// Polls until `count` records arrived or the deadline passes.
async fn consume(bus: &mut KafkaBus, count: usize, timeout: Duration) -> Vec<BusRecord> {
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        let polled = bus.poll(POLL_RECORDS_MAX).await.expect("poll");
        assert!(polled.len() <= POLL_RECORDS_MAX, "a poll over its bound");
        records.extend(polled);
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_go_through_and_a_restarted_consumer_resumes_at_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let sent = readings();
    let (broker, delivered) = broker_with_readings(dir.path(), &sent).await;
    assert_eq!(delivered, READINGS as u64);

    let mut bus = KafkaBus::connect(&broker.address(), "kafka-test", TOPIC)
        .await
        .unwrap();
    let records = consume(&mut bus, READINGS, Duration::from_secs(60)).await;
    assert_eq!(records.len(), READINGS, "every reading is consumed once");
    let mut per_household: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for record in &records {
        let reading = Reading::decode(&record.payload).expect("a reading");
        per_household
            .entry(reading.node_id)
            .or_default()
            .push(reading.ts_ms);
    }
    assert_eq!(per_household.len(), 7);
    for timestamps in per_household.values() {
        assert!(
            timestamps.windows(2).all(|pair| pair[0] < pair[1]),
            "a household stays in order"
        );
    }

    // Commit about half of each partition, then a new consumer in the same
    // group must start exactly there.
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for record in &records {
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record.offset);
    }
    let commit: BTreeMap<i32, i64> = by_partition
        .iter()
        .map(|(partition, offsets)| (*partition, offsets[offsets.len() / 2]))
        .collect();
    let remaining: usize = by_partition
        .values()
        .map(|offsets| offsets.len() - offsets.len() / 2)
        .sum();
    bus.commit(&commit).await.unwrap();
    // The commit is asynchronous; give it time to land before leaving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(bus);

    let mut resumed = KafkaBus::connect(&broker.address(), "kafka-test", TOPIC)
        .await
        .unwrap();
    let again = consume(&mut resumed, remaining, Duration::from_secs(60)).await;
    assert_eq!(again.len(), remaining);
    for record in &again {
        assert!(
            record.offset >= commit[&record.partition],
            "offset {} before the commit",
            record.offset
        );
    }
}

/// Goal: `KafkaBus::at_end` says "at the end" exactly when the consumer
/// has read every partition to its high watermark, asked from the broker:
/// false while records are left, true once all are read, false again after
/// a new record, and true for a restarted consumer whose group committed
/// everything (it has read nothing yet, so its committed offsets count).
/// Method: real tansu with three partitions and seven households.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_is_at_the_end_only_when_every_partition_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let mut producer = KafkaProducer::connect(&broker.address(), TOPIC)
        .await
        .unwrap();
    let sent = readings();
    for reading in &sent[..700] {
        producer.publish(reading).await.unwrap();
    }
    producer.flush().await.unwrap();
    let mut bus = KafkaBus::connect(&broker.address(), "at-end-test", TOPIC)
        .await
        .unwrap();
    assert_eq!(bus.at_end().await, Ok(false), "nothing read yet");
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.is_empty() && Instant::now() < deadline {
        first = bus.poll(10).await.unwrap();
    }
    assert!(!first.is_empty(), "no record within a minute");
    assert_eq!(bus.at_end().await, Ok(false), "records are left");
    let rest = consume(&mut bus, 700 - first.len(), Duration::from_secs(60)).await;
    assert_eq!(first.len() + rest.len(), 700);
    assert_eq!(bus.at_end().await, Ok(true), "every partition read");

    producer.publish(&sent[700]).await.unwrap();
    producer.flush().await.unwrap();
    assert_eq!(bus.at_end().await, Ok(false), "a new record is waiting");
    let last = consume(&mut bus, 1, Duration::from_secs(60)).await;
    assert_eq!(bus.at_end().await, Ok(true));

    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for record in first.iter().chain(&rest).chain(&last) {
        let end = ends.entry(record.partition).or_default();
        *end = (*end).max(record.offset + 1);
    }
    bus.commit(&ends).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(bus);
    let mut resumed = KafkaBus::connect(&broker.address(), "at-end-test", TOPIC)
        .await
        .unwrap();
    assert_eq!(
        resumed.at_end().await,
        Ok(true),
        "a consumer whose group committed everything is at the end"
    );
}
