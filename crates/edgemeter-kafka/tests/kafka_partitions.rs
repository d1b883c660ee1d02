//! `KafkaBus` with an explicit partition set (`edge --partitions`) against
//! a real Kafka-protocol broker (tansu): two sites share one topic, each
//! edge reading its own partitions in its own group.
//!
//! Goal: each bus reads exactly its partitions, and together they read
//! every record once; the end query confirms the end of the bus's own
//! partitions while another site's partition still holds records nobody
//! in its group read; the lag counts its own partitions only; a restarted
//! bus resumes at its group's commit; and a named partition the topic
//! lacks is skipped, not waited for. Method: seven households over three
//! partitions, one bus on {0, 1}, one on {2}, one on {1, 7}.

mod common;

use common::broker_with_readings;
use edgemeter_edge::{BusRecord, ReadingsBus};
use edgemeter_kafka::bus::{KafkaBus, TOPIC};
use edgemeter_wire::Reading;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const READINGS: usize = 700;

/// Records per poll: below what one partition holds, so polls are bounded.
const POLL_RECORDS_MAX: usize = 100;

/// How long a bus may take to read its partitions to their end.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Records of partition 0 left uncommitted, which the lag must count.
const HELD_BACK: usize = 10;

fn readings() -> Vec<Reading> {
    common::house_readings(READINGS)
}

/// Polls until the bus confirms the end of its partitions.
async fn read_to_end(bus: &mut KafkaBus) -> Vec<BusRecord> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut records = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no end within {READ_TIMEOUT:?}");
        let polled = bus.poll(POLL_RECORDS_MAX).await.expect("poll");
        assert!(polled.len() <= POLL_RECORDS_MAX, "a poll over its bound");
        let empty = polled.is_empty();
        records.extend(polled);
        if empty && !records.is_empty() && bus.at_end().await == Ok(true) {
            return records;
        }
    }
}

fn partitions_of(records: &[BusRecord]) -> BTreeSet<i32> {
    records.iter().map(|record| record.partition).collect()
}

/// Per partition, the offset after its last record.
fn ends_of(records: &[BusRecord]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for record in records {
        let end = ends.entry(record.partition).or_insert(0);
        *end = (*end).max(record.offset + 1);
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_read_their_own_partitions_of_one_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _) = broker_with_readings(dir.path(), &readings()).await;

    // Site A reads {0, 1} to its end before site B has read anything:
    // partition 2's records never hold up A's end.
    let site_a = BTreeSet::from([0, 1]);
    let mut bus_a =
        KafkaBus::connect_partitions(&broker.address(), "site-a", TOPIC, Some(site_a.clone()))
            .await
            .unwrap();
    let read_a = read_to_end(&mut bus_a).await;
    assert_eq!(partitions_of(&read_a), site_a, "site A reads 0 and 1 only");
    let mut bus_b = KafkaBus::connect_partitions(
        &broker.address(),
        "site-b",
        TOPIC,
        Some(BTreeSet::from([2])),
    )
    .await
    .unwrap();
    let read_b = read_to_end(&mut bus_b).await;
    assert_eq!(partitions_of(&read_b), BTreeSet::from([2]));
    let mut seen = BTreeSet::new();
    for record in read_a.iter().chain(&read_b) {
        assert!(
            seen.insert((record.partition, record.offset)),
            "record {}/{} read twice",
            record.partition,
            record.offset
        );
    }
    assert_eq!(seen.len(), READINGS, "the two sites read every record");

    // Commit all of site A's but the last few records of partition 0: its
    // lag is those, whatever partition 2 holds.
    let mut commit = ends_of(&read_a);
    *commit.get_mut(&0).unwrap() -= HELD_BACK as i64;
    bus_a.commit(&commit).await.unwrap();
    let lag = bus_a.consumer_lag();
    let deadline = Instant::now() + READ_TIMEOUT;
    while lag.records() != Some(HELD_BACK as u64) {
        assert!(
            Instant::now() < deadline,
            "the lag stays at {:?}, not {HELD_BACK}",
            lag.records()
        );
        // The statistics, and so the lag, come with the consumer's polls.
        assert!(bus_a.poll(POLL_RECORDS_MAX).await.unwrap().is_empty());
    }
    drop(bus_a);

    // A restarted site A resumes at its commit: the held-back records.
    let mut resumed =
        KafkaBus::connect_partitions(&broker.address(), "site-a", TOPIC, Some(site_a))
            .await
            .unwrap();
    let again = read_to_end(&mut resumed).await;
    assert_eq!(again.len(), HELD_BACK, "exactly the uncommitted records");
    assert!(again
        .iter()
        .all(|record| record.partition == 0 && record.offset >= commit[&0]));

    // A partition the topic lacks is skipped: the end is confirmed on
    // what exists.
    let mut lacking = KafkaBus::connect_partitions(
        &broker.address(),
        "site-c",
        TOPIC,
        Some(BTreeSet::from([1, 7])),
    )
    .await
    .unwrap();
    let read_c = read_to_end(&mut lacking).await;
    assert_eq!(partitions_of(&read_c), BTreeSet::from([1]));
    let of_one = read_a.iter().filter(|record| record.partition == 1).count();
    assert_eq!(read_c.len(), of_one, "partition 1 whole, once");
}
