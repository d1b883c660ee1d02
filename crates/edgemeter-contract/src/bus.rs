//! The `ReadingsBus` contract: what the edge relies on from its consumer,
//! for the simulated bus (`SimBus` over the simulated broker) and the real
//! one (`KafkaBus` over rdkafka and a Kafka-protocol broker) alike.
//!
//! The edge's correctness rests on these, each a behaviour below:
//! - records of one partition arrive in offset order, each once
//!   ([`order_within_a_partition`]);
//! - a new consumer of the group resumes at the committed offsets, so what
//!   was read but not committed comes again and nothing committed does
//!   ([`redelivery_from_the_committed_offset`]);
//! - silence is an empty poll, not an error, and the end is confirmed
//!   ([`an_empty_poll_on_silence`]);
//! - a stalled broker (the process frozen, its connections open) gives
//!   empty polls, never an error the edge could take for a dead broker,
//!   and never confirms the end; the stall hidden a real bug once, the
//!   idle flush of a stalled producer ([`a_stalled_broker`]);
//! - a dead broker gives no records and never confirms the end; once it is
//!   back, reading goes on where it stopped ([`a_dead_broker`]).

use edgemeter_edge::{BusRecord, ReadingsBus};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// A poll or an end check must return within this, whatever the broker
/// does: the trait's own bound ("about a second"), with room for a slow
/// machine. Past it the edge's commits and heartbeats would be held up.
pub const POLL_RETURNS_WITHIN: Duration = Duration::from_secs(10);

/// Polls a behaviour makes while it waits for records before it fails:
/// each poll waits up to about a second, so this is minutes at worst.
pub const POLLS_MAX: usize = 300;

/// Records taken per poll in the behaviours: small, so that a behaviour
/// sees several polls.
pub const RECORDS_PER_POLL: usize = 64;

/// Empty polls in a row that a behaviour takes for "nothing more to come".
const QUIET_POLLS: usize = 3;

/// The world around one bus implementation: its broker, records put into
/// it, consumers of one group, and the broker's faults.
pub trait BusFixture {
    type Bus: ReadingsBus;

    /// Appends `payloads` under `key` to the topic the consumers read,
    /// in order, and returns once the broker holds them all. Records of
    /// one key land in one partition.
    fn produce(&mut self, key: &str, payloads: &[Vec<u8>]) -> impl Future<Output = ()>;

    /// A new consumer in the fixture's one group, as a restarted edge makes.
    fn consumer(&mut self) -> impl Future<Output = Self::Bus>;

    /// Freezes the broker: its connections stay open and it answers nothing.
    fn stall_broker(&mut self) -> impl Future<Output = ()>;

    /// Kills the broker: connections break, and connecting is refused.
    fn kill_broker(&mut self) -> impl Future<Output = ()>;

    /// Undoes the fault: a stalled broker runs on, a killed one starts
    /// again with its log and committed offsets.
    fn heal_broker(&mut self) -> impl Future<Output = ()>;
}

/// The payload of record `index` of key `key`: what a behaviour checks the
/// order and identity by.
pub fn payload(key: &str, index: usize) -> Vec<u8> {
    format!("{key}/{index:06}").into_bytes()
}

fn parse_payload(record: &BusRecord) -> (String, usize) {
    let text = std::str::from_utf8(&record.payload).expect("a payload of the contract");
    let (key, index) = text.rsplit_once('/').expect("key/index");
    (key.to_owned(), index.parse().expect("an index"))
}

/// One poll under the trait's time bound.
async fn poll_once<B: ReadingsBus>(bus: &mut B, what: &str) -> Vec<BusRecord> {
    match tokio::time::timeout(POLL_RETURNS_WITHIN, bus.poll(RECORDS_PER_POLL)).await {
        Ok(Ok(records)) => {
            assert!(
                records.len() <= RECORDS_PER_POLL,
                "{what}: a poll returned {} records, over its bound {RECORDS_PER_POLL}",
                records.len()
            );
            records
        }
        Ok(Err(error)) => panic!("{what}: poll failed with the broker up: {error}"),
        Err(_) => panic!("{what}: a poll did not return within {POLL_RETURNS_WITHIN:?}"),
    }
}

/// Polls until `count` records arrived, then until the bus is quiet, and
/// returns them all: a bus that delivers more than `count` is caught.
async fn read_exactly<B: ReadingsBus>(bus: &mut B, count: usize, what: &str) -> Vec<BusRecord> {
    let mut records = Vec::new();
    let mut polls = 0;
    while records.len() < count {
        polls += 1;
        assert!(
            polls <= POLLS_MAX,
            "{what}: {} of {count} records after {POLLS_MAX} polls",
            records.len()
        );
        records.extend(poll_once(bus, what).await);
    }
    for _ in 0..QUIET_POLLS {
        records.extend(poll_once(bus, what).await);
    }
    assert_eq!(
        records.len(),
        count,
        "{what}: more records than were produced"
    );
    records
}

/// Checks that each key's records came in production order, from one
/// partition, at increasing offsets, and that each partition's offsets
/// only grow.
fn assert_in_order(records: &[BusRecord], what: &str) {
    let mut by_key: BTreeMap<String, (i32, i64, usize)> = BTreeMap::new();
    let mut by_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for record in records {
        let (key, index) = parse_payload(record);
        if let Some(last) = by_partition.insert(record.partition, record.offset) {
            assert!(
                record.offset > last,
                "{what}: partition {} went from offset {last} to {}",
                record.partition,
                record.offset
            );
        }
        match by_key.insert(key.clone(), (record.partition, record.offset, index)) {
            None => assert_eq!(index, 0, "{what}: {key} started at record {index}"),
            Some((partition, _, previous)) => {
                assert_eq!(
                    partition, record.partition,
                    "{what}: {key} in two partitions"
                );
                assert_eq!(
                    index,
                    previous + 1,
                    "{what}: {key} went from {previous} to {index}"
                );
            }
        }
    }
}

/// Goal: records of one partition arrive in offset order, each exactly
/// once, and every record of a key comes from one partition.
pub async fn order_within_a_partition<F: BusFixture>(fixture: &mut F) {
    let keys = ["house-a", "house-b", "house-c", "house-d"];
    for round in 0..3 {
        for key in keys {
            let payloads: Vec<Vec<u8>> = (round * 40..(round + 1) * 40)
                .map(|index| payload(key, index))
                .collect();
            fixture.produce(key, &payloads).await;
        }
    }
    let mut bus = fixture.consumer().await;
    let records = read_exactly(&mut bus, keys.len() * 120, "order").await;
    assert_in_order(&records, "order");
}

/// Goal: a new consumer of the group starts at the committed offsets: the
/// records read but not committed are delivered again, the committed ones
/// are not, and nothing is skipped.
pub async fn redelivery_from_the_committed_offset<F: BusFixture>(fixture: &mut F) {
    let payloads: Vec<Vec<u8>> = (0..100).map(|index| payload("house-r", index)).collect();
    fixture.produce("house-r", &payloads).await;
    let mut first = fixture.consumer().await;
    let records = read_exactly(&mut first, 100, "first consumer").await;
    let partition = records[0].partition;
    let committed_at = records[40].offset;
    let commit = BTreeMap::from([(partition, committed_at)]);
    first
        .commit(&commit)
        .await
        .expect("commit with the broker up");
    drop(first);

    let mut resumed = fixture.consumer().await;
    let again = read_exactly(&mut resumed, 60, "resumed consumer").await;
    assert_eq!(
        again[0].offset, committed_at,
        "the resumed consumer starts at the committed offset"
    );
    assert_eq!(parse_payload(&again[0]), ("house-r".to_owned(), 40));
    assert_eq!(parse_payload(&again[59]), ("house-r".to_owned(), 99));
    for pair in again.windows(2) {
        assert_eq!(
            pair[1].offset,
            pair[0].offset + 1,
            "resumed: no gap, no repeat"
        );
    }
}

/// Goal: with nothing to read, a poll is empty (not an error) and returns
/// within the trait's bound, and the bus confirms it is at the end.
pub async fn an_empty_poll_on_silence<F: BusFixture>(fixture: &mut F) {
    let payloads: Vec<Vec<u8>> = (0..10).map(|index| payload("house-s", index)).collect();
    fixture.produce("house-s", &payloads).await;
    let mut bus = fixture.consumer().await;
    read_exactly(&mut bus, 10, "before silence").await;
    for _ in 0..QUIET_POLLS {
        assert!(poll_once(&mut bus, "silence").await.is_empty());
    }
    let at_end = tokio::time::timeout(POLL_RETURNS_WITHIN, bus.at_end())
        .await
        .expect("at_end returns within its bound");
    assert_eq!(at_end, Ok(true), "every record read: the end is confirmed");
    // A record produced now makes the end false again once the bus sees it
    // is behind, and is then delivered.
    fixture.produce("house-s", &[payload("house-s", 10)]).await;
    let late = read_exactly(&mut bus, 1, "after silence").await;
    assert_eq!(parse_payload(&late[0]), ("house-s".to_owned(), 10));
}

/// Polls during a fault: every poll returns within the bound, none holds a
/// record, and `at_end` never says the end is reached. Returns how many
/// polls were errors, for the caller's check.
async fn during_fault<B: ReadingsBus>(bus: &mut B, what: &str) -> usize {
    let mut errors = 0;
    for _ in 0..5 {
        match tokio::time::timeout(POLL_RETURNS_WITHIN, bus.poll(RECORDS_PER_POLL)).await {
            Ok(Ok(records)) => assert!(
                records.is_empty(),
                "{what}: records from a broker that is not there"
            ),
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("{what}: a poll did not return within {POLL_RETURNS_WITHIN:?}"),
        }
    }
    let at_end = tokio::time::timeout(POLL_RETURNS_WITHIN * 2, bus.at_end())
        .await
        .unwrap_or_else(|_| panic!("{what}: at_end did not return"));
    assert!(
        at_end != Ok(true),
        "{what}: the end was confirmed by a broker that does not answer"
    );
    // For the record of how each implementation looks (sim-tests/README.md).
    println!("{what}: {errors} of 5 polls were errors; at_end: {at_end:?}");
    errors
}

/// After a healed fault, the rest arrives: nothing lost, nothing repeated.
async fn reads_on_after<F: BusFixture>(fixture: &mut F, bus: &mut F::Bus, key: &str, what: &str) {
    fixture.produce(key, &[payload(key, 20)]).await;
    let mut records = Vec::new();
    let mut polls = 0;
    while records.is_empty() {
        polls += 1;
        assert!(
            polls <= POLLS_MAX,
            "{what}: nothing read after the broker came back"
        );
        // Errors are allowed while the bus reconnects.
        if let Ok(Ok(polled)) =
            tokio::time::timeout(POLL_RETURNS_WITHIN, bus.poll(RECORDS_PER_POLL)).await
        {
            records.extend(polled);
        }
    }
    for _ in 0..QUIET_POLLS {
        if let Ok(Ok(polled)) =
            tokio::time::timeout(POLL_RETURNS_WITHIN, bus.poll(RECORDS_PER_POLL)).await
        {
            records.extend(polled);
        }
    }
    let indexes: Vec<usize> = records
        .iter()
        .map(|record| parse_payload(record).1)
        .collect();
    assert_eq!(
        indexes,
        vec![20],
        "{what}: after the fault, exactly the new record"
    );
}

/// Goal: a frozen broker gives empty polls, never errors (the edge cannot
/// tell it from a quiet one, and must not take it for a dead one), and
/// never confirms the end; once it runs on, reading goes on.
pub async fn a_stalled_broker<F: BusFixture>(fixture: &mut F) {
    let payloads: Vec<Vec<u8>> = (0..20).map(|index| payload("house-t", index)).collect();
    fixture.produce("house-t", &payloads).await;
    let mut bus = fixture.consumer().await;
    read_exactly(&mut bus, 20, "before the stall").await;
    fixture.stall_broker().await;
    let errors = during_fault(&mut bus, "stalled broker").await;
    assert_eq!(errors, 0, "a stalled broker looks quiet, not dead");
    fixture.heal_broker().await;
    reads_on_after(fixture, &mut bus, "house-t", "after the stall").await;
}

/// Goal: a dead broker gives no records, is reported unavailable (the edge
/// backs off and says so in its status) and never confirms the end; once
/// it is back with its log, reading goes on where it stopped.
pub async fn a_dead_broker<F: BusFixture>(fixture: &mut F) {
    let payloads: Vec<Vec<u8>> = (0..20).map(|index| payload("house-k", index)).collect();
    fixture.produce("house-k", &payloads).await;
    let mut bus = fixture.consumer().await;
    read_exactly(&mut bus, 20, "before the kill").await;
    fixture.kill_broker().await;
    let errors = during_fault(&mut bus, "dead broker").await;
    // KafkaBus answers an error from the first poll after librdkafka's
    // error event; the first poll may still be empty while it notices.
    assert!(
        errors >= 4,
        "a dead broker is reported as unavailable, not as quiet: {errors} of 5 polls were errors"
    );
    fixture.heal_broker().await;
    reads_on_after(fixture, &mut bus, "house-k", "after the restart").await;
}
