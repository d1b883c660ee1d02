//! `edgemeter-memlog` holds records the way a Kafka topic does (partitions,
//! offsets, per-group committed offsets) in memory, for two users: `edgemeter
//! demo`, which runs without a broker, and the simulation's broker host.
//!
//! - [`MemLog`]: the log itself; plain data, no IO, no clock.
//! - [`MemBus`]: an in-process [`ReadingsBus`] over a shared [`MemLog`]; its
//!   [`ReadingsBus::at_end`] compares its positions with the log's ends.
//! - [`ProduceQueue`] (module [`produce_queue`]): the producer's side of
//!   the same model, the order and retry decisions of a producer, without
//!   IO: `edgemeter households` drives it over librdkafka.
//! - [`sink`]: [`sink::ReadingSink`], where a replay publishes readings,
//!   and [`sink::MemLogSink`], the demo's sink into a [`MemLog`].

pub mod produce_queue;
pub mod sink;

pub use produce_queue::ProduceQueue;

use edgemeter_edge::{BusError, BusRecord, ReadingsBus};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Kafka's default partitioner hashes the key with murmur2; any fixed hash
/// serves here, as long as one household always lands on one partition.
pub fn partition_for(key: &[u8], partitions: u32) -> i32 {
    assert!(partitions > 0);
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % partitions) as i32
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFull {
    pub records_max: usize,
}

/// A partitioned log with consumer-group offsets.
#[derive(Debug)]
pub struct MemLog {
    partitions: Vec<Vec<Vec<u8>>>,
    /// group -> partition -> next offset to read.
    committed: BTreeMap<String, BTreeMap<i32, i64>>,
    records: usize,
    /// The log refuses appends past this many records, as a broker with a
    /// full disk would: memory stays bounded whatever the producer does.
    records_max: usize,
}

impl MemLog {
    pub fn new(partitions: u32, records_max: usize) -> MemLog {
        assert!(partitions > 0 && partitions <= 1024);
        MemLog {
            partitions: (0..partitions).map(|_| Vec::new()).collect(),
            committed: BTreeMap::new(),
            records: 0,
            records_max,
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Appends a record keyed by `key`; returns its partition and offset.
    pub fn append(&mut self, key: &[u8], value: Vec<u8>) -> Result<(i32, i64), LogFull> {
        if self.records >= self.records_max {
            return Err(LogFull {
                records_max: self.records_max,
            });
        }
        let partition = partition_for(key, self.partition_count());
        let records = &mut self.partitions[partition as usize];
        records.push(value);
        self.records += 1;
        Ok((partition, records.len() as i64 - 1))
    }

    /// Up to `records_max` records of one partition from `offset` on.
    pub fn fetch(&self, partition: i32, offset: i64, records_max: usize) -> Vec<BusRecord> {
        let Some(records) = self.partitions.get(partition as usize) else {
            return Vec::new();
        };
        let start = offset.clamp(0, records.len() as i64) as usize;
        records[start..]
            .iter()
            .take(records_max)
            .enumerate()
            .map(|(index, payload)| BusRecord {
                partition,
                offset: (start + index) as i64,
                payload: payload.clone(),
                // The demo's producer writes EdgeMeter's form, timed inside.
                timestamp_ms: None,
            })
            .collect()
    }

    pub fn end_offset(&self, partition: i32) -> i64 {
        self.partitions
            .get(partition as usize)
            .map_or(0, |records| records.len() as i64)
    }

    pub fn total_records(&self) -> usize {
        self.records
    }

    pub fn commit(&mut self, group: &str, partition: i32, next_offset: i64) {
        assert!(next_offset >= 0);
        assert!(
            next_offset <= self.end_offset(partition),
            "commit past the log end"
        );
        self.committed
            .entry(group.to_owned())
            .or_default()
            .insert(partition, next_offset);
    }

    /// The group's committed offset, or 0 when it never committed.
    pub fn committed(&self, group: &str, partition: i32) -> i64 {
        self.committed
            .get(group)
            .and_then(|offsets| offsets.get(&partition))
            .copied()
            .unwrap_or(0)
    }
}

/// A [`MemLog`] shared between a producer and consumers in one process.
#[derive(Debug, Clone)]
pub struct SharedLog {
    log: Arc<Mutex<MemLog>>,
    appended: Arc<Notify>,
}

impl SharedLog {
    pub fn new(log: MemLog) -> SharedLog {
        SharedLog {
            log: Arc::new(Mutex::new(log)),
            appended: Arc::new(Notify::new()),
        }
    }

    pub fn append(&self, key: &[u8], value: Vec<u8>) -> Result<(i32, i64), LogFull> {
        let placed = self.log.lock().expect("log lock").append(key, value)?;
        self.appended.notify_waiters();
        Ok(placed)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut MemLog) -> T) -> T {
        f(&mut self.log.lock().expect("log lock"))
    }

    /// A consumer in `group`, starting at the group's committed offsets.
    pub fn consumer(&self, group: &str) -> MemBus {
        let positions = self.with(|log| {
            (0..log.partition_count() as i32)
                .map(|partition| (partition, log.committed(group, partition)))
                .collect()
        });
        MemBus {
            log: self.clone(),
            group: group.to_owned(),
            positions,
        }
    }
}

/// An in-process consumer: [`ReadingsBus`] over a [`SharedLog`].
#[derive(Debug)]
pub struct MemBus {
    log: SharedLog,
    group: String,
    /// partition -> next offset to fetch.
    positions: BTreeMap<i32, i64>,
}

/// How long an empty poll waits for an append before it returns nothing.
const POLL_WAIT: Duration = Duration::from_millis(100);

impl MemBus {
    fn fetch_available(&mut self, records_max: usize) -> Vec<BusRecord> {
        let mut out = Vec::new();
        self.log.with(|log| {
            for (partition, position) in self.positions.iter_mut() {
                let room = records_max - out.len();
                if room == 0 {
                    break;
                }
                let records = log.fetch(*partition, *position, room);
                if let Some(last) = records.last() {
                    *position = last.offset + 1;
                }
                out.extend(records);
            }
        });
        out
    }
}

impl ReadingsBus for MemBus {
    async fn poll(&mut self, records_max: usize) -> Result<Vec<BusRecord>, BusError> {
        assert!(records_max > 0);
        let appended = self.log.appended.clone();
        let notified = appended.notified();
        let records = self.fetch_available(records_max);
        if !records.is_empty() {
            return Ok(records);
        }
        let _ = tokio::time::timeout(POLL_WAIT, notified).await;
        Ok(self.fetch_available(records_max))
    }

    async fn commit(&mut self, next_offsets: &BTreeMap<i32, i64>) -> Result<(), BusError> {
        let group = self.group.clone();
        self.log.with(|log| {
            for (partition, offset) in next_offsets {
                log.commit(&group, *partition, *offset);
            }
        });
        Ok(())
    }

    /// In process the log's end is known exactly: at the end when every
    /// fetch position has reached its partition's end offset.
    async fn at_end(&mut self) -> Result<bool, BusError> {
        Ok(self.log.with(|log| {
            self.positions
                .iter()
                .all(|(partition, position)| *position >= log.end_offset(*partition))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stays_on_its_partition_and_offsets_grow() {
        let mut log = MemLog::new(3, 100);
        let (partition, first) = log.append(b"house-a", b"1".to_vec()).unwrap();
        let (again, second) = log.append(b"house-a", b"2".to_vec()).unwrap();
        assert_eq!(partition, again);
        assert_eq!(second, first + 1);
        let records = log.fetch(partition, 0, 10);
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].payload, b"2");
    }

    #[test]
    fn refuses_appends_past_its_bound() {
        let mut log = MemLog::new(1, 2);
        log.append(b"k", vec![]).unwrap();
        log.append(b"k", vec![]).unwrap();
        assert_eq!(log.append(b"k", vec![]), Err(LogFull { records_max: 2 }));
    }

    #[tokio::test]
    async fn a_new_consumer_resumes_at_the_commit() {
        let shared = SharedLog::new(MemLog::new(1, 100));
        for value in 0..5u8 {
            shared.append(b"k", vec![value]).unwrap();
        }
        let mut bus = shared.consumer("edge");
        let records = bus.poll(3).await.unwrap();
        assert_eq!(records.len(), 3);
        bus.commit(&BTreeMap::from([(0, 2)])).await.unwrap();
        let mut resumed = shared.consumer("edge");
        let records = resumed.poll(10).await.unwrap();
        assert_eq!(records.first().map(|r| r.offset), Some(2));
        assert_eq!(records.len(), 3);
    }

    /// Goal: the bus is at the end exactly when every partition has been
    /// read to its end offset. Method: two partitions, one record on each
    /// key; the answer turns true only after both were fetched, and false
    /// again after one more append.
    #[tokio::test]
    async fn at_end_once_every_partition_is_read() {
        let shared = SharedLog::new(MemLog::new(2, 100));
        let mut bus = shared.consumer("edge");
        assert!(
            bus.at_end().await.unwrap(),
            "an empty log is read to its end"
        );
        let keys: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
        let spread: std::collections::BTreeSet<i32> =
            keys.iter().map(|key| partition_for(key, 2)).collect();
        assert_eq!(spread.len(), 2, "the keys cover both partitions");
        for key in &keys {
            shared.append(key, b"1".to_vec()).unwrap();
        }
        assert!(!bus.at_end().await.unwrap());
        let records = bus.poll(1).await.unwrap();
        assert_eq!(records.len(), 1);
        assert!(!bus.at_end().await.unwrap(), "records are left");
        while !bus.poll(10).await.unwrap().is_empty() {}
        assert!(bus.at_end().await.unwrap());
        shared.append(b"a", b"2".to_vec()).unwrap();
        assert!(!bus.at_end().await.unwrap());
    }
}
