//! Counters and the link state, shared with whoever reports on the edge
//! (logs, `status`, `/metrics`, the simulation). Written only by the edge's
//! own task. Everything here is a plain atomic, so a reader (a metrics
//! scrape) never waits for the edge and never touches its store: the
//! outbox's counts are copied in by the edge each time it reads them for a
//! heartbeat, and round trips go into [`RoundTrips`], a fixed-bucket
//! histogram without IO.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::time::Duration;

/// The upper bounds of the round-trip histogram's buckets, in seconds:
/// from a loopback reply (about 1 ms) to the edge's request timeout
/// (10 s), about three per decade, as Prometheus's defaults are. A round
/// trip above the last goes only into the implicit `+Inf` bucket.
pub const ROUND_TRIP_BUCKETS_S: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The time from sending a batch to its reply, for every batch that got
/// one (a request that timed out or failed to connect measures the
/// timeout, not the cloud, and is counted in `batches_failed` instead).
#[derive(Debug, Default)]
pub struct RoundTrips {
    /// Per bucket of [`ROUND_TRIP_BUCKETS_S`], not cumulative; the last
    /// slot is the round trips above every bound.
    buckets: [AtomicU64; ROUND_TRIP_BUCKETS_S.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A copy of [`RoundTrips`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundTripsSnapshot {
    /// `(upper bound in seconds, round trips in this bucket)`, not
    /// cumulative, ending with `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_s: f64,
    pub count: u64,
}

impl RoundTrips {
    pub fn observe(&self, round_trip: Duration) {
        let seconds = round_trip.as_secs_f64();
        let slot = ROUND_TRIP_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(ROUND_TRIP_BUCKETS_S.len());
        bump(&self.buckets[slot], 1);
        let micros = u64::try_from(round_trip.as_micros()).unwrap_or(u64::MAX);
        bump(&self.sum_us, micros);
        bump(&self.count, 1);
    }

    /// The buckets, sum and count. Read one by one, so a round trip that
    /// lands during the read may show in the buckets and not yet in the
    /// count; the next scrape has it everywhere.
    pub fn snapshot(&self) -> RoundTripsSnapshot {
        let bounds = ROUND_TRIP_BUCKETS_S.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(bound, slot)| (bound, slot.load(Ordering::Relaxed)))
            .collect();
        RoundTripsSnapshot {
            buckets,
            sum_s: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// `oldest_unacked_queued_ms` when nothing is unacknowledged.
const NO_OLDEST: i64 = i64::MIN;

#[derive(Debug, Default)]
pub struct EdgeMonitor {
    connected: AtomicBool,
    consuming: AtomicBool,
    /// Set while the cloud refuses this edge process (another live one
    /// holds the edge id): nothing is consumed, committed or shipped.
    refused: AtomicBool,
    /// Set while every record of the last finished minute was rejected
    /// (see [`crate::intake`]).
    intake_alarm: AtomicBool,
    /// Every record read from the bus.
    pub readings: AtomicU64,
    /// Records that went into their window's average.
    pub counted: AtomicU64,
    /// Records kept in table `rejected`, late readings included.
    pub rejected: AtomicU64,
    /// Records rejected for not being a usable reading (not late).
    pub rejected_invalid: AtomicU64,
    pub late: AtomicU64,
    pub duplicates: AtomicU64,
    pub tuples_stored: AtomicU64,
    pub tuples_acked: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_failed: AtomicU64,
    pub store_errors: AtomicU64,
    pub conflicting_acks: AtomicU64,
    /// Tuples the cloud answered with a conflict (it holds other values).
    pub value_conflicts: AtomicU64,
    /// Acknowledged tuples shipped again to a cloud that lost its store.
    pub tuples_reshipped: AtomicU64,
    /// Refill passes started (each epoch change, and the first epoch).
    pub refill_passes: AtomicU64,
    /// Batches the cloud answered "retry later" (its store failed).
    pub batches_retry_later: AtomicU64,
    /// Batches sent with `batch_tuples_max` tuples: a backlog filled one.
    pub full_batches: AtomicU64,
    /// Stores started because `store_pending_max` windows and rejected
    /// records waited, before `store_interval` was up.
    pub pending_bound_stores: AtomicU64,
    /// Set while a refill pass has tuples left to scan, so that a display
    /// knows a reship is under way before and after its counters move.
    refill_scanning: AtomicBool,
    /// Turns of the edge's main loop: it advances only when the loop does,
    /// so a supervisor (systemd's watchdog) can tell a live edge from one
    /// stuck in a call. Kept out of [`EdgeCounters`], which loggers compare
    /// for change: this one changes on every wake.
    loop_turns: AtomicU64,
    /// The outbox's tuples at each flag, as last read by the edge.
    outbox_queued: AtomicU64,
    outbox_sent: AtomicU64,
    outbox_acked: AtomicU64,
    /// When the oldest unacknowledged tuple was queued (ms since the
    /// epoch), or [`NO_OLDEST`].
    oldest_unacked_queued_ms: AtomicI64,
    /// Whether the outbox has been read at all since the edge started.
    outbox_known: AtomicBool,
    pub round_trips: RoundTrips,
    /// Each cloud node by index, as its heartbeats last decided. Written
    /// only when a node changes (a lock taken a few times an hour) and read
    /// by `status`; kept out of [`EdgeCounters`], which is `Copy`.
    cloud_nodes: Mutex<Vec<CloudNodeState>>,
}

/// One cloud node as the edge's heartbeats last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudNodeState {
    /// As the link names it (`CloudLink::node_name`).
    pub name: String,
    pub connected: bool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    pub connected: bool,
    pub consuming: bool,
    /// The cloud refuses this edge process: another live one holds its id.
    pub refused: bool,
    /// Every record of the last minute with records was rejected: the edge
    /// consumes but stores nothing.
    pub intake_alarm: bool,
    pub readings: u64,
    pub counted: u64,
    pub rejected: u64,
    pub rejected_invalid: u64,
    pub late: u64,
    pub duplicates: u64,
    pub tuples_stored: u64,
    pub tuples_acked: u64,
    pub batches_sent: u64,
    pub batches_failed: u64,
    pub store_errors: u64,
    pub conflicting_acks: u64,
    pub value_conflicts: u64,
    pub tuples_reshipped: u64,
    pub refill_passes: u64,
    pub batches_retry_later: u64,
    pub full_batches: u64,
    pub pending_bound_stores: u64,
    /// The outbox as last read, `None` before the first read.
    pub outbox: Option<OutboxGauges>,
}

/// The outbox's counts and its oldest unacknowledged tuple, as the edge
/// last read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxGauges {
    pub queued: u64,
    pub sent: u64,
    pub acked: u64,
    /// When the oldest unacknowledged tuple was queued, ms since the epoch.
    pub oldest_unacked_queued_ms: Option<i64>,
}

impl OutboxGauges {
    /// How long ago the oldest unacknowledged tuple was queued, at
    /// `now_ms`; 0 when there is none (a clock that went back gives 0 too).
    pub fn oldest_unacked_age_ms(&self, now_ms: i64) -> u64 {
        self.oldest_unacked_queued_ms
            .map_or(0, |queued| now_ms.saturating_sub(queued).max(0) as u64)
    }
}

pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl EdgeMonitor {
    pub fn new() -> EdgeMonitor {
        EdgeMonitor::default()
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// The cloud nodes and whether each answers, in the link's order.
    pub fn cloud_nodes(&self) -> Vec<CloudNodeState> {
        self.cloud_nodes.lock().expect("cloud nodes lock").clone()
    }

    /// Names the cloud nodes at start, none connected yet.
    pub(crate) fn set_cloud_nodes(&self, names: Vec<String>) {
        let nodes = names
            .into_iter()
            .map(|name| CloudNodeState {
                name,
                connected: false,
            })
            .collect();
        *self.cloud_nodes.lock().expect("cloud nodes lock") = nodes;
    }

    pub(crate) fn set_cloud_node_connected(&self, node: usize, connected: bool) {
        let mut nodes = self.cloud_nodes.lock().expect("cloud nodes lock");
        if let Some(state) = nodes.get_mut(node) {
            state.connected = connected;
        }
    }

    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// Whether the cloud refuses this edge process now.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn set_refused(&self, refused: bool) {
        self.refused.store(refused, Ordering::Relaxed);
    }

    pub(crate) fn set_intake_alarm(&self, alarm: bool) {
        self.intake_alarm.store(alarm, Ordering::Relaxed);
    }

    /// Whether a refill pass has tuples left to scan.
    pub fn refill_scanning(&self) -> bool {
        self.refill_scanning.load(Ordering::Relaxed)
    }

    pub(crate) fn set_refill_scanning(&self, scanning: bool) {
        self.refill_scanning.store(scanning, Ordering::Relaxed);
    }

    /// How many times the edge's main loop has turned.
    pub fn loop_turns(&self) -> u64 {
        self.loop_turns.load(Ordering::Relaxed)
    }

    pub(crate) fn note_loop_turn(&self) {
        bump(&self.loop_turns, 1);
    }

    /// Publishes what the edge just read of its outbox.
    pub(crate) fn set_outbox(&self, gauges: OutboxGauges) {
        self.outbox_queued.store(gauges.queued, Ordering::Relaxed);
        self.outbox_sent.store(gauges.sent, Ordering::Relaxed);
        self.outbox_acked.store(gauges.acked, Ordering::Relaxed);
        let oldest = gauges.oldest_unacked_queued_ms.unwrap_or(NO_OLDEST);
        self.oldest_unacked_queued_ms
            .store(oldest, Ordering::Relaxed);
        self.outbox_known.store(true, Ordering::Relaxed);
    }

    pub fn outbox(&self) -> Option<OutboxGauges> {
        if !self.outbox_known.load(Ordering::Relaxed) {
            return None;
        }
        let oldest = self.oldest_unacked_queued_ms.load(Ordering::Relaxed);
        Some(OutboxGauges {
            queued: self.outbox_queued.load(Ordering::Relaxed),
            sent: self.outbox_sent.load(Ordering::Relaxed),
            acked: self.outbox_acked.load(Ordering::Relaxed),
            oldest_unacked_queued_ms: (oldest != NO_OLDEST).then_some(oldest),
        })
    }

    pub fn snapshot(&self) -> EdgeCounters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EdgeCounters {
            connected: self.connected(),
            consuming: self.consuming.load(Ordering::Relaxed),
            refused: self.refused(),
            intake_alarm: self.intake_alarm.load(Ordering::Relaxed),
            readings: load(&self.readings),
            counted: load(&self.counted),
            rejected: load(&self.rejected),
            rejected_invalid: load(&self.rejected_invalid),
            late: load(&self.late),
            duplicates: load(&self.duplicates),
            tuples_stored: load(&self.tuples_stored),
            tuples_acked: load(&self.tuples_acked),
            batches_sent: load(&self.batches_sent),
            batches_failed: load(&self.batches_failed),
            store_errors: load(&self.store_errors),
            conflicting_acks: load(&self.conflicting_acks),
            value_conflicts: load(&self.value_conflicts),
            tuples_reshipped: load(&self.tuples_reshipped),
            refill_passes: load(&self.refill_passes),
            batches_retry_later: load(&self.batches_retry_later),
            full_batches: load(&self.full_batches),
            pending_bound_stores: load(&self.pending_bound_stores),
            outbox: self.outbox(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: each round trip lands in the first bucket whose bound holds
    /// it (a bound is inclusive, as Prometheus's `le`), one past every
    /// bound lands in `+Inf`, and the sum and count add up. Method: values
    /// on, just above and far beyond the bounds.
    #[test]
    fn round_trips_land_in_their_buckets() {
        let trips = RoundTrips::default();
        for millis in [1, 2, 1_000, 1_001, 60_000] {
            trips.observe(Duration::from_millis(millis));
        }
        let snapshot = trips.snapshot();
        assert_eq!(snapshot.buckets.len(), ROUND_TRIP_BUCKETS_S.len() + 1);
        let count_at = |bound: f64| {
            snapshot
                .buckets
                .iter()
                .find(|(upper, _)| *upper == bound)
                .map(|(_, count)| *count)
        };
        assert_eq!(count_at(0.001), Some(1));
        assert_eq!(count_at(0.0025), Some(1));
        assert_eq!(count_at(1.0), Some(1));
        assert_eq!(count_at(2.5), Some(1));
        assert_eq!(count_at(f64::INFINITY), Some(1));
        assert_eq!(snapshot.count, 5);
        assert_eq!(
            snapshot.buckets.iter().map(|(_, count)| count).sum::<u64>(),
            5
        );
        assert!((snapshot.sum_s - 62.004).abs() < 1e-9, "{}", snapshot.sum_s);
    }

    /// Goal: the outbox is unknown until the edge first reads it, then
    /// reads back as written, "no oldest" included; an age never goes
    /// below 0.
    #[test]
    fn the_outbox_gauges_read_back_as_written() {
        let monitor = EdgeMonitor::new();
        assert_eq!(monitor.outbox(), None);
        let gauges = OutboxGauges {
            queued: 3,
            sent: 2,
            acked: 9,
            oldest_unacked_queued_ms: Some(1_000),
        };
        monitor.set_outbox(gauges);
        assert_eq!(monitor.snapshot().outbox, Some(gauges));
        assert_eq!(gauges.oldest_unacked_age_ms(4_500), 3_500);
        assert_eq!(gauges.oldest_unacked_age_ms(500), 0);
        let empty = OutboxGauges {
            acked: 14,
            ..OutboxGauges::default()
        };
        monitor.set_outbox(empty);
        assert_eq!(monitor.outbox(), Some(empty));
        assert_eq!(empty.oldest_unacked_age_ms(4_500), 0);
    }
}
