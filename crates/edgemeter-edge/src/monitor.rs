//! Counters and the link state, shared with whoever reports on the edge
//! (logs, `status`, the simulation). Written only by the edge's own task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct EdgeMonitor {
    connected: AtomicBool,
    consuming: AtomicBool,
    /// Set while every record of the last finished minute was rejected
    /// (see [`crate::intake`]).
    intake_alarm: AtomicBool,
    pub readings: AtomicU64,
    pub rejected: AtomicU64,
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
    /// Set while a refill pass has tuples left to scan, so that a display
    /// knows a reship is under way before and after its counters move.
    refill_scanning: AtomicBool,
    /// Turns of the edge's main loop: it advances only when the loop does,
    /// so a supervisor (systemd's watchdog) can tell a live edge from one
    /// stuck in a call. Kept out of [`EdgeCounters`], which loggers compare
    /// for change: this one changes on every wake.
    loop_turns: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    pub connected: bool,
    pub consuming: bool,
    /// Every record of the last minute with records was rejected: the edge
    /// consumes but stores nothing.
    pub intake_alarm: bool,
    pub readings: u64,
    pub rejected: u64,
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

    pub(crate) fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Relaxed);
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

    pub fn snapshot(&self) -> EdgeCounters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EdgeCounters {
            connected: self.connected(),
            consuming: self.consuming.load(Ordering::Relaxed),
            intake_alarm: self.intake_alarm.load(Ordering::Relaxed),
            readings: load(&self.readings),
            rejected: load(&self.rejected),
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
        }
    }
}
