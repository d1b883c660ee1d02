//! `KafkaBus` and `KafkaProducer` against a real Kafka-protocol broker
//! (tansu): every published reading is consumed, in order per household,
//! and a new consumer of the same group resumes at the committed offsets.

mod common;

use common::Tansu;
use edgemeter::households::ReadingSink;
use edgemeter::kafka_bus::{KafkaBus, TOPIC};
use edgemeter::kafka_producer::KafkaProducer;
use edgemeter_edge::{BusRecord, ReadingsBus};
use edgemeter_wire::Reading;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const READINGS: usize = 2_000;

/// Records per poll: far below `READINGS`, so the bound is reached.
const POLL_RECORDS_MAX: usize = 500;

fn readings() -> Vec<Reading> {
    (0..READINGS)
        .map(|index| Reading {
            node_id: format!("house-{}", index % 7),
            power_w: index as f64,
            ts_ms: 1_577_145_600_000 + index as i64 * 100,
        })
        .collect()
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let mut producer = KafkaProducer::connect(&broker.address(), TOPIC)
        .await
        .unwrap();
    let sent = readings();
    for reading in &sent {
        producer.publish(reading).await.unwrap();
    }
    producer.flush().await.unwrap();
    assert_eq!(producer.delivered(), READINGS as u64);

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
