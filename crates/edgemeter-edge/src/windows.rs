//! Five-second tumbling windows of event time, per household.
//!
//! A window covers `[start, start + 5 s)` with `start` a multiple of 5 s since
//! the Unix epoch. It closes, and becomes a tuple, on the first of:
//! - its household's newest reading passes its end by the allowed lateness;
//! - the stream watermark (the slowest partition's newest reading) passes its
//!   end by the quiet grace, so a household that went quiet does not hold its
//!   last window open while the others move on;
//! - the driver flushes everything at the end of the stream: after
//!   `idle_flush` of empty polls, and only once the bus confirms that the
//!   consumer has read every partition to its end (see [`crate::edge`]).
//!
//! Nothing else closes a window: not the wall clock, not a silent bus. A
//! reading that arrives after its window closed is [`Added::Late`]; the
//! driver keeps it in table `rejected`, and the stored average stays.
//!
//! Sums are integer milliwatts, so an average does not depend on the order of
//! its readings. A reading seen twice (same household, same timestamp) counts
//! once. This module does no IO and reads no clock: it sees only readings.

use crate::ports::NewTuple;
use edgemeter_env::{Bug, PlantedBugs};
use std::collections::{BTreeMap, BTreeSet};

pub const WINDOW_MS: i64 = 5_000;

/// The most households tracked at once. The data set has 50; a stream with
/// more distinct ids than this is misconfigured, and readings of households
/// beyond it are refused rather than growing memory without bound.
pub const HOUSEHOLDS_MAX: usize = 100_000;

/// The most readings one window holds: one per millisecond of its 5 s.
pub const WINDOW_READINGS_MAX: usize = WINDOW_MS as usize;

// A full window must still ship: the wire refuses more samples than this.
const _: () = assert!(WINDOW_READINGS_MAX as u32 <= edgemeter_wire::batch::WINDOW_SAMPLES_MAX);

/// How far outside the stream a timestamp may lie before it is refused as
/// absurd: a day either side of the newest reading seen.
pub const STREAM_SKEW_MS_MAX: i64 = 24 * 3600 * 1000;

pub fn window_start_ms(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(WINDOW_MS) * WINDOW_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// How long after a window's end a reading of the same household may still
    /// arrive. Kafka keeps one household's readings in order, so this only
    /// absorbs producers that reorder slightly. Ours reorders by minutes
    /// only after a delivery failure (an outage longer than its delivery
    /// timeout, see `edgemeter_memlog::produce_queue`): those readings are
    /// late whatever this is, and kept in `rejected`.
    pub lateness_ms: i64,
    /// How far the stream watermark must pass a window's end to close it
    /// without a later reading of its household.
    pub quiet_grace_ms: i64,
    /// Whether one household's readings arrive in order, so that its own
    /// later reading may close its window. True for keyed records (ours:
    /// one household, one partition). The original's records have no key
    /// and spread over every partition, so an older reading of a household
    /// may still wait in another partition: its windows close only when
    /// the watermark (every partition read so far) passes their end by the
    /// quiet grace.
    pub household_order: bool,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            lateness_ms: 2_000,
            quiet_grace_ms: 30_000,
            household_order: true,
        }
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Counted,
    /// Same household and timestamp as a reading already in its window.
    Duplicate,
    /// Its window has closed already.
    Late,
    /// More than [`STREAM_SKEW_MS_MAX`] away from the stream.
    OutsideStream,
    /// [`HOUSEHOLDS_MAX`] households are open already.
    TooManyHouseholds,
}

#[derive(Debug)]
struct OpenWindow {
    partition: i32,
    /// The lowest offset that contributed: the group must not commit past
    /// it while the window is open, or a crash would lose its readings.
    first_offset: i64,
    sum_mw: i64,
    timestamps: BTreeSet<i64>,
}

#[derive(Debug, Default)]
struct Household {
    newest_ts_ms: i64,
    /// Windows starting below this have closed.
    closed_below_ms: i64,
    open: BTreeMap<i64, OpenWindow>,
}

#[derive(Debug, Default)]
pub struct Windows {
    config: WindowConfig,
    households: BTreeMap<String, Household>,
    /// Newest timestamp seen per partition.
    partition_newest_ms: BTreeMap<i32, i64>,
    newest_ms: Option<i64>,
    planted: PlantedBugs,
}

impl Windows {
    pub fn new(config: WindowConfig) -> Windows {
        assert!(config.lateness_ms >= 0);
        // A window closed by the watermark must not be reopened by a reading
        // that is merely late within the allowed lateness.
        assert!(config.quiet_grace_ms >= config.lateness_ms);
        Windows {
            config,
            ..Windows::default()
        }
    }

    /// Windows with planted bugs switched on (the simulation's).
    pub fn with_planted(config: WindowConfig, planted: PlantedBugs) -> Windows {
        Windows {
            planted,
            ..Windows::new(config)
        }
    }

    /// Adds one reading, in milliwatts, with the bus position it came from.
    pub fn add(
        &mut self,
        node_id: &str,
        ts_ms: i64,
        power_mw: i64,
        partition: i32,
        offset: i64,
    ) -> Added {
        assert!(power_mw >= 0, "readings are validated before windowing");
        if let Some(newest) = self.newest_ms {
            if (ts_ms - newest).abs() > STREAM_SKEW_MS_MAX {
                return Added::OutsideStream;
            }
        }
        if !self.households.contains_key(node_id) && self.households.len() >= HOUSEHOLDS_MAX {
            return Added::TooManyHouseholds;
        }
        let household = self.households.entry(node_id.to_owned()).or_default();
        let start = window_start_ms(ts_ms);
        if start < household.closed_below_ms {
            return Added::Late;
        }
        let window = household.open.entry(start).or_insert_with(|| OpenWindow {
            partition,
            first_offset: offset,
            sum_mw: 0,
            timestamps: BTreeSet::new(),
        });
        if window.timestamps.contains(&ts_ms) {
            return Added::Duplicate;
        }
        assert!(
            window.timestamps.len() < WINDOW_READINGS_MAX,
            "distinct ms exceed a window"
        );
        window.timestamps.insert(ts_ms);
        window.sum_mw += power_mw;
        window.first_offset = window.first_offset.min(offset);
        household.newest_ts_ms = household.newest_ts_ms.max(ts_ms);
        let newest = self.partition_newest_ms.entry(partition).or_insert(ts_ms);
        *newest = (*newest).max(ts_ms);
        self.newest_ms = Some(self.newest_ms.map_or(ts_ms, |n| n.max(ts_ms)));
        Added::Counted
    }

    /// The slowest partition's newest timestamp.
    fn watermark_ms(&self) -> Option<i64> {
        self.partition_newest_ms.values().copied().min()
    }

    /// Closes every window whose time has come, appending one tuple each.
    pub fn close_ready(&mut self, closed: &mut Vec<NewTuple>) {
        let watermark = self.watermark_ms().unwrap_or(i64::MIN);
        let WindowConfig {
            lateness_ms,
            quiet_grace_ms,
            household_order,
        } = self.config;
        let from_start = self.planted.has(Bug::EarlyWindowClose);
        for (node_id, household) in &mut self.households {
            let newest = household.newest_ts_ms;
            let ready = |start: i64| {
                let end = start + WINDOW_MS;
                let own_passed = if from_start {
                    // The planted slip: the lateness counted from the
                    // window's key, its start, instead of its end.
                    newest >= start + lateness_ms
                } else {
                    newest >= end + lateness_ms
                };
                (household_order && own_passed) || watermark >= end.saturating_add(quiet_grace_ms)
            };
            close_while(node_id, household, ready, closed);
        }
    }

    /// Closes every open window: the stream has gone idle.
    pub fn close_all(&mut self, closed: &mut Vec<NewTuple>) {
        for (node_id, household) in &mut self.households {
            close_while(node_id, household, |_| true, closed);
        }
    }

    pub fn open_windows(&self) -> usize {
        self.households.values().map(|h| h.open.len()).sum()
    }

    /// The lowest offset of `partition` that an open window still needs, if any.
    pub fn commit_floor(&self, partition: i32) -> Option<i64> {
        self.households
            .values()
            .flat_map(|household| household.open.values())
            .filter(|window| window.partition == partition)
            .map(|window| window.first_offset)
            .min()
    }
}

fn close_while(
    node_id: &str,
    household: &mut Household,
    ready: impl Fn(i64) -> bool,
    closed: &mut Vec<NewTuple>,
) {
    while let Some(entry) = household.open.first_entry() {
        let start = *entry.key();
        if !ready(start) {
            break;
        }
        let window = entry.remove();
        let samples = window.timestamps.len() as u32;
        assert!(samples > 0, "a window opens with its first reading");
        closed.push(NewTuple {
            node_id: node_id.to_owned(),
            window_start_ms: start,
            average_w: window.sum_mw as f64 / f64::from(samples) / 1000.0,
            samples,
        });
        household.closed_below_ms = household.closed_below_ms.max(start + WINDOW_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_577_145_600_000;

    fn closed(windows: &mut Windows) -> Vec<NewTuple> {
        let mut out = Vec::new();
        windows.close_ready(&mut out);
        out
    }

    #[test]
    fn a_later_reading_closes_the_window() {
        let mut windows = Windows::new(WindowConfig {
            lateness_ms: 0,
            quiet_grace_ms: 60_000,
            household_order: true,
        });
        assert_eq!(windows.add("h", T0 + 1_000, 100_000, 0, 0), Added::Counted);
        assert_eq!(windows.add("h", T0 + 3_000, 200_000, 0, 1), Added::Counted);
        assert!(closed(&mut windows).is_empty());
        assert_eq!(windows.add("h", T0 + 5_000, 50_000, 0, 2), Added::Counted);
        let tuples = closed(&mut windows);
        assert_eq!(tuples.len(), 1);
        assert_eq!(tuples[0].window_start_ms, T0);
        assert_eq!(tuples[0].average_w, 150.0);
        assert_eq!(tuples[0].samples, 2);
        assert_eq!(windows.add("h", T0 + 4_000, 1, 0, 3), Added::Late);
        assert_eq!(windows.commit_floor(0), Some(2));
    }

    #[test]
    fn duplicates_count_once_and_the_floor_holds_the_first_offset() {
        let mut windows = Windows::new(WindowConfig::default());
        windows.add("h", T0 + 1_000, 100_000, 1, 10);
        assert_eq!(
            windows.add("h", T0 + 1_000, 100_000, 1, 11),
            Added::Duplicate
        );
        assert_eq!(windows.commit_floor(1), Some(10));
        assert_eq!(windows.commit_floor(0), None);
        let mut out = Vec::new();
        windows.close_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].samples, 1);
        assert_eq!(windows.commit_floor(1), None);
    }

    #[test]
    fn a_quiet_household_closes_by_the_watermark() {
        let mut windows = Windows::new(WindowConfig {
            lateness_ms: 0,
            quiet_grace_ms: 10_000,
            household_order: true,
        });
        windows.add("quiet", T0, 1_000, 0, 0);
        windows.add("busy", T0 + 14_999, 1_000, 0, 1);
        assert!(closed(&mut windows).iter().all(|t| t.node_id != "quiet"));
        windows.add("busy", T0 + 15_000, 1_000, 0, 2);
        let tuples = closed(&mut windows);
        assert!(tuples.iter().any(|t| t.node_id == "quiet"));
    }

    /// Goal: unkeyed records (the original's form) close a window only when
    /// every partition has passed it, never on the household's own later
    /// reading, which may have overtaken an older one in another partition.
    #[test]
    fn without_household_order_only_the_watermark_closes() {
        let mut windows = Windows::new(WindowConfig {
            lateness_ms: 1_000,
            quiet_grace_ms: 3_000,
            household_order: false,
        });
        windows.add("h", T0 + 1_000, 1_000, 0, 0);
        windows.add("g", T0 + 1_500, 1_000, 1, 0);
        windows.add("h", T0 + 9_000, 1_000, 0, 1);
        assert!(
            closed(&mut windows).is_empty(),
            "partition 1 has not passed it"
        );
        windows.add("h", T0 + 4_000, 3_000, 1, 1);
        assert!(
            closed(&mut windows).is_empty(),
            "partition 1 is still inside it"
        );
        windows.add("g", T0 + 8_000, 1_000, 1, 2);
        let tuples = closed(&mut windows);
        let h: Vec<&NewTuple> = tuples.iter().filter(|t| t.node_id == "h").collect();
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].samples, h[0].average_w), (2, 2.0));
    }

    /// Goal: the household map never grows past its bound. Method: fill it
    /// to the limit, then a new household is refused while a known one is
    /// still counted.
    #[test]
    fn households_beyond_the_limit_are_refused() {
        let mut windows = Windows::new(WindowConfig::default());
        for index in 0..HOUSEHOLDS_MAX {
            let node_id = format!("h{index}");
            assert_eq!(windows.add(&node_id, T0, 1, 0, 0), Added::Counted);
        }
        assert_eq!(
            windows.add("one-more", T0, 1, 0, 1),
            Added::TooManyHouseholds
        );
        assert_eq!(windows.add("h0", T0 + 1, 1, 0, 2), Added::Counted);
        assert_eq!(windows.households.len(), HOUSEHOLDS_MAX);
    }

    /// Goal: a window holds at most one reading per millisecond, and a full
    /// window closes into a tuple the wire accepts.
    #[test]
    fn a_window_holds_at_most_one_reading_per_millisecond() {
        let mut windows = Windows::new(WindowConfig::default());
        for ms in 0..WINDOW_READINGS_MAX as i64 {
            assert_eq!(windows.add("h", T0 + ms, 1_000, 0, ms), Added::Counted);
        }
        assert_eq!(
            windows.add("h", T0 + 4_999, 1_000, 0, 9_999),
            Added::Duplicate,
            "the window is full: a further reading can only repeat a millisecond"
        );
        let mut out = Vec::new();
        windows.close_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].samples as usize, WINDOW_READINGS_MAX);
        assert_eq!(out[0].samples, edgemeter_wire::batch::WINDOW_SAMPLES_MAX);
    }

    #[test]
    fn refuses_timestamps_far_from_the_stream() {
        let mut windows = Windows::new(WindowConfig::default());
        windows.add("h", T0, 1, 0, 0);
        assert_eq!(
            windows.add("h", T0 + STREAM_SKEW_MS_MAX + 1, 1, 0, 1),
            Added::OutsideStream
        );
        assert_eq!(
            windows.add("h", T0 - STREAM_SKEW_MS_MAX - 1, 1, 0, 2),
            Added::OutsideStream
        );
    }
}
