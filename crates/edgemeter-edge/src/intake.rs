//! Whether the records the edge consumes become readings: an edge that
//! reads but stores nothing is not healthy, even while it is connected and
//! consuming (the original's producers fed an edge 8,100 records that were
//! all rejected, and its status said `consuming` throughout).
//!
//! The edge's own time is cut into windows of [`INTAKE_WINDOW`]. When a
//! window that read records ends with every one of them rejected, the
//! intake is in alarm; the first window in which some record became a
//! reading ends it. A window without records changes nothing: a quiet
//! stream neither raises nor clears the alarm. No IO and no clock: `now`
//! comes in with every call.

use std::collections::BTreeMap;
use tokio::time::{Duration, Instant};

/// How long a stretch of records the verdict looks at: long enough that a
/// burst of bad records among good ones is not an alarm, short enough that
/// an operator who feeds the wrong form hears of it within a minute.
pub const INTAKE_WINDOW: Duration = Duration::from_secs(60);

/// Rejection kinds counted per window; further kinds are counted as `other`.
/// The edge knows a dozen kinds; the bound keeps a window's map small.
pub const INTAKE_KINDS_MAX: usize = 32;

/// What one finished window saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeAlarm {
    /// Records read in the window, every one rejected.
    pub records: u64,
    /// How many of them each rejection kind took, by kind.
    pub kinds: BTreeMap<&'static str, u64>,
}

/// A change of verdict, for the driver to log and publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeChange {
    /// A window read records and rejected every one of them.
    AllRejected(IntakeAlarm),
    /// Records became readings again after an alarm.
    Recovered,
}

#[derive(Debug)]
pub struct IntakeHealth {
    window_start: Instant,
    read: u64,
    rejected: u64,
    kinds: BTreeMap<&'static str, u64>,
    in_alarm: bool,
}

impl IntakeHealth {
    pub fn new(now: Instant) -> IntakeHealth {
        IntakeHealth {
            window_start: now,
            read: 0,
            rejected: 0,
            kinds: BTreeMap::new(),
            in_alarm: false,
        }
    }

    /// Whether the last finished window with records rejected them all.
    pub fn in_alarm(&self) -> bool {
        self.in_alarm
    }

    /// One record read: `rejected_kind` is its rejection kind, or `None`
    /// when it became (or repeated) a reading.
    pub fn handle_record(&mut self, rejected_kind: Option<&'static str>) {
        self.read += 1;
        if let Some(kind) = rejected_kind {
            self.rejected += 1;
            let kind = if self.kinds.len() < INTAKE_KINDS_MAX || self.kinds.contains_key(kind) {
                kind
            } else {
                "other"
            };
            *self.kinds.entry(kind).or_default() += 1;
        }
        assert!(self.rejected <= self.read);
    }

    /// Ends the current window if its time is over and says whether the
    /// verdict changed.
    pub fn poll_change(&mut self, now: Instant) -> Option<IntakeChange> {
        if now < self.window_start + INTAKE_WINDOW {
            return None;
        }
        let (read, rejected) = (self.read, self.rejected);
        let kinds = std::mem::take(&mut self.kinds);
        *self = IntakeHealth {
            in_alarm: self.in_alarm,
            ..IntakeHealth::new(now)
        };
        if read == 0 {
            return None;
        }
        let all_rejected = rejected == read;
        if all_rejected == self.in_alarm {
            return None;
        }
        self.in_alarm = all_rejected;
        Some(if all_rejected {
            IntakeChange::AllRejected(IntakeAlarm {
                records: read,
                kinds,
            })
        } else {
            IntakeChange::Recovered
        })
    }
}

impl IntakeAlarm {
    /// The plain sentence the log and `status` show.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        format!(
            "every one of the {} records of the last minute was rejected ({}); \
             the edge stores nothing: see table rejected, and --readings if the \
             producer is the original's",
            self.records,
            kinds.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: an alarm needs a whole window of records all rejected, a
    /// quiet window changes nothing, and one good record ends the alarm.
    #[test]
    fn a_window_of_only_rejected_records_raises_the_alarm_and_a_reading_clears_it() {
        let start = Instant::now();
        let mut health = IntakeHealth::new(start);
        for _ in 0..3 {
            health.handle_record(Some("absurd_power"));
        }
        health.handle_record(Some("missing_field"));
        assert_eq!(health.poll_change(start + INTAKE_WINDOW / 2), None);
        let minute = start + INTAKE_WINDOW;
        let Some(IntakeChange::AllRejected(alarm)) = health.poll_change(minute) else {
            panic!("a minute of rejected records is an alarm");
        };
        assert_eq!(alarm.records, 4);
        assert_eq!(alarm.kinds.get("absurd_power"), Some(&3));
        assert!(alarm.describe().contains("every one of the 4 records"));
        assert!(health.in_alarm());
        assert_eq!(health.poll_change(minute + INTAKE_WINDOW), None, "quiet");
        assert!(health.in_alarm(), "a quiet minute does not clear it");
        health.handle_record(Some("absurd_power"));
        health.handle_record(None);
        assert_eq!(
            health.poll_change(minute + INTAKE_WINDOW * 2),
            Some(IntakeChange::Recovered)
        );
        assert!(!health.in_alarm());
    }

    /// Goal: good records among bad ones are never an alarm.
    #[test]
    fn one_reading_in_a_window_keeps_the_intake_healthy() {
        let start = Instant::now();
        let mut health = IntakeHealth::new(start);
        for _ in 0..1_000 {
            health.handle_record(Some("not_json"));
        }
        health.handle_record(None);
        assert_eq!(health.poll_change(start + INTAKE_WINDOW), None);
        assert!(!health.in_alarm());
    }

    /// Goal: the per-window map of kinds stays within its bound.
    #[test]
    fn kinds_beyond_the_bound_are_counted_as_other() {
        const NAMES: [&str; 40] = [
            "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11", "k12", "k13",
            "k14", "k15", "k16", "k17", "k18", "k19", "k20", "k21", "k22", "k23", "k24", "k25",
            "k26", "k27", "k28", "k29", "k30", "k31", "k32", "k33", "k34", "k35", "k36", "k37",
            "k38", "k39",
        ];
        let start = Instant::now();
        let mut health = IntakeHealth::new(start);
        for name in NAMES {
            health.handle_record(Some(name));
        }
        let Some(IntakeChange::AllRejected(alarm)) = health.poll_change(start + INTAKE_WINDOW)
        else {
            panic!("all rejected");
        };
        assert!(alarm.kinds.len() <= INTAKE_KINDS_MAX + 1);
        assert_eq!(alarm.kinds.values().sum::<u64>(), 40);
        assert_eq!(
            alarm.kinds.get("other"),
            Some(&(40 - INTAKE_KINDS_MAX as u64))
        );
    }
}
