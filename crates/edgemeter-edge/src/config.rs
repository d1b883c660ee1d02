//! The edge's settings, each with its reason.

use crate::windows::WindowConfig;
use edgemeter_env::{CrashPoints, PlantedBugs};
use edgemeter_wire::{EdgeKey, ReadingForm};
use std::time::Duration;
use tokio::sync::watch;

/// The default of [`EdgeConfig::idle_flush`] (`edgemeter edge --idle-flush`).
pub const DEFAULT_IDLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Names this edge to the cloud; part of every tuple's identity there.
    pub edge_id: String,
    /// Which producer's record form the bus carries: EdgeMeter's own, or
    /// the original system's (milliwatts, timed by the Kafka record).
    pub readings: ReadingForm,
    pub windows: WindowConfig,
    /// When every poll has come back empty for this long AND the bus
    /// confirms the consumer is at the end of every partition, every open
    /// window is closed: the stream has stopped (the replay ended, or every
    /// household went quiet). This is the stall bound: a producer that
    /// pauses for less than this changes no average, while a longer pause
    /// closes its windows early and the readings that follow are kept in
    /// `rejected` as `late`. A broker or link that does not answer never
    /// confirms the end, so it never causes a flush. 60 s outlasts a
    /// broker's leader election and a producer's reconnect backoff with a
    /// wide margin; it costs only that the last windows of a stream that
    /// really ended wait a minute.
    pub idle_flush: Duration,
    pub heartbeat_interval: Duration,
    /// How long a heartbeat may take before it counts as missed.
    pub heartbeat_timeout: Duration,
    /// Consecutive missed heartbeats that mark the cloud disconnected.
    pub heartbeat_misses_max: u32,
    /// How long a data request may take before its batch is queued for a
    /// resend. NNG resends inside this time on its own.
    pub request_timeout: Duration,
    /// Tuples per data request; at most `edgemeter_wire::batch::BATCH_TUPLES_MAX`.
    pub batch_tuples_max: usize,
    /// Data requests in flight at once. Throughput over a link with latency
    /// needs several; each holds at most one batch in memory.
    pub inflight_batches_max: usize,
    /// Records taken from the bus per poll.
    pub poll_records_max: usize,
    /// How long a closed window may wait in memory before it is stored.
    /// Storing many windows per transaction instead of one or two per poll
    /// is most of the edge's SQLite cost; a second is small beside the
    /// 5-second windows, and nothing waiting is committed to Kafka yet.
    pub store_interval: Duration,
    /// Closed windows and rejected records that may wait before a store
    /// regardless of `store_interval`, bounding the edge's memory.
    pub store_pending_max: usize,
    /// How many polled batches may wait between the bus task and the edge.
    /// Small: when the store stalls, the bus stops being read.
    pub poll_queue_max: usize,
    /// This edge's secret. With a key every request is sealed and every
    /// reply checked; without one the edge speaks unauthenticated, which a
    /// cloud accepts only when its operator allows it.
    pub key: Option<EdgeKey>,
    /// Replacement keys, when the key may change while the edge runs: each
    /// value sent replaces `key` from the next request on (the binary sends
    /// one when SIGHUP brings a new key file). Requests already in flight
    /// keep the key they were sealed with. `None`: `key` never changes.
    pub key_updates: Option<watch::Receiver<Option<EdgeKey>>>,
    /// How long an acknowledged tuple is kept before the edge deletes it.
    /// Within it, a cloud that loses its store is refilled from here; a
    /// loss noticed later cannot be refilled for the older tuples, which is
    /// the operator's documented choice. A week of 50 households is about
    /// 3.5M rows (a few hundred MB).
    pub ack_retention: Duration,
    pub planted: PlantedBugs,
    pub crash_points: CrashPoints,
    /// Names this edge process to the cloud (heartbeat version 4, batch
    /// version 3): a random non-zero u64, drawn once per process start, so
    /// that the cloud's instance lease tells a second process with the
    /// same `edge_id` from this one, and a restart from a resend. This
    /// crate reads no randomness: the `edge` command draws it from the OS,
    /// the simulation from its seed (a new one per start). The default,
    /// [`DEFAULT_INSTANCE`], is for tests and the in-process demo, where
    /// one process runs one edge.
    pub instance: u64,
}

/// The instance of an [`EdgeConfig::new`] config; see [`EdgeConfig::instance`].
pub const DEFAULT_INSTANCE: u64 = 1;

impl EdgeConfig {
    pub fn new(edge_id: impl Into<String>) -> EdgeConfig {
        let edge_id = edge_id.into();
        assert!(
            edgemeter_wire::check_id(&edge_id).is_ok(),
            "invalid edge id"
        );
        EdgeConfig {
            edge_id,
            readings: ReadingForm::EdgeMeter,
            windows: WindowConfig::default(),
            idle_flush: DEFAULT_IDLE_FLUSH,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(1),
            heartbeat_misses_max: 3,
            request_timeout: Duration::from_secs(5),
            batch_tuples_max: 1024,
            inflight_batches_max: 8,
            poll_records_max: 4096,
            store_interval: Duration::from_secs(1),
            store_pending_max: 4096,
            poll_queue_max: 2,
            key: None,
            key_updates: None,
            ack_retention: Duration::from_secs(7 * 24 * 3600),
            planted: PlantedBugs::NONE,
            crash_points: CrashPoints::none(),
            instance: DEFAULT_INSTANCE,
        }
    }
}
