//! Planted bugs: switches that make edge or cloud misbehave the way a real
//! implementation could, so a test can prove the checker catches each one.
//!
//! A switch is read with [`PlantedBugs::has`]. Without the `planted-bugs`
//! feature `has` is the constant `false`, so production builds carry no
//! branch for any of them.

use std::fmt;

/// Each variant is one bug a real edge or cloud could have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// The edge marks a batch acknowledged (flag 2) as soon as it sends it,
    /// before the cloud replied.
    AckBeforeReply,
    /// The edge commits Kafka offsets as soon as it reads records, before the
    /// tuples they produce are durable in SQLite.
    CommitBeforeDurable,
    /// The cloud replies before its cache write finishes.
    ReplyBeforeCacheWrite,
    /// The cloud draws a random postal code for every request (the original's bug).
    RandomPostalCode,
    /// The cloud keys each stored tuple by its request, so a resend stores it twice.
    NoDeduplication,
    /// The edge forgets flag-1 tuples on restart and only ships flag-0 ones.
    ForgetSentOnRestart,
    /// The edge keys windows by arrival time instead of the reading's timestamp.
    ArrivalTimeWindows,
    /// The edge drops a batch whose request failed instead of sending it again.
    DropBatchOnLinkError,
    /// The edge keeps only the first record of each poll per partition (the original's bug).
    FirstRecordPerPoll,
    /// The edge overwrites a stored tuple when a replayed reading recomputes it.
    ReplaceStoredTuple,
    /// The edge closes every open window after 10 s of empty polls without
    /// asking the broker whether it has read to the end (the old idle flush):
    /// a stalled producer or link then closes windows early.
    FlushOnSilence,
    /// The edge ignores a change of the cloud store's epoch and never ships
    /// its acknowledged tuples again, so a cloud that forgot stays empty.
    NoReshipAfterEpochChange,
    /// The cloud serves an unsealed request naming an edge that has a key
    /// when it also allows unauthenticated requests (the mixed-mode back door).
    UnsealedAcceptedForKeyedEdge,
    /// The edge's store of closed windows is not synced before their Kafka
    /// offsets are committed (`synchronous=NORMAL` for it, as before issue 12).
    CommitBeforeSync,
    /// The edge's database runs `PRAGMA synchronous=OFF`: nothing is ever synced.
    SynchronousOff,
    /// The cloud's Lua store script moves its per-state totals by every
    /// tuple of a household's group, resent ones included, whenever the
    /// group holds a new one (a variant of the script's text, chosen by
    /// the simulated Redis: `edgemeter_scripts::planted`).
    LuaTotalsCountResends,
    /// The shared producer queue re-queues failed records behind the
    /// younger ones that fell due meanwhile, as a new record would be (the
    /// producer's original bug): one household's readings reach Kafka out
    /// of order by a whole outage, and the edge rejects the resent ones
    /// as late.
    ProducerReordering,
    /// The edge counts a household's allowed lateness from the window's
    /// start, its key, instead of its end (`newest >= start + lateness`):
    /// a window closes 3 s before its end, and its last readings are
    /// rejected as late.
    EarlyWindowClose,
    /// The edge pairs each partition's consumed position with the next
    /// partition's commit floor (a zip one step off), so it commits past
    /// readings its own open windows still need; a crash then loses them.
    OffsetArithmeticAcrossPartitions,
    /// The cloud checks a sealed request's time on one side only (the
    /// signed skew against the window, without its absolute value), so a
    /// captured request is accepted however old it is.
    AuthWindowOneSide,
}

impl Bug {
    pub const ALL: [Bug; 20] = [
        Bug::AckBeforeReply,
        Bug::CommitBeforeDurable,
        Bug::ReplyBeforeCacheWrite,
        Bug::RandomPostalCode,
        Bug::NoDeduplication,
        Bug::ForgetSentOnRestart,
        Bug::ArrivalTimeWindows,
        Bug::DropBatchOnLinkError,
        Bug::FirstRecordPerPoll,
        Bug::ReplaceStoredTuple,
        Bug::FlushOnSilence,
        Bug::NoReshipAfterEpochChange,
        Bug::UnsealedAcceptedForKeyedEdge,
        Bug::CommitBeforeSync,
        Bug::SynchronousOff,
        Bug::LuaTotalsCountResends,
        Bug::ProducerReordering,
        Bug::EarlyWindowClose,
        Bug::OffsetArithmeticAcrossPartitions,
        Bug::AuthWindowOneSide,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeReply => "ack-before-reply",
            Bug::CommitBeforeDurable => "commit-before-durable",
            Bug::ReplyBeforeCacheWrite => "reply-before-cache-write",
            Bug::RandomPostalCode => "random-postal-code",
            Bug::NoDeduplication => "no-deduplication",
            Bug::ForgetSentOnRestart => "forget-sent-on-restart",
            Bug::ArrivalTimeWindows => "arrival-time-windows",
            Bug::DropBatchOnLinkError => "drop-batch-on-link-error",
            Bug::FirstRecordPerPoll => "first-record-per-poll",
            Bug::ReplaceStoredTuple => "replace-stored-tuple",
            Bug::FlushOnSilence => "flush-on-silence",
            Bug::NoReshipAfterEpochChange => "no-reship-after-epoch-change",
            Bug::UnsealedAcceptedForKeyedEdge => "unsealed-accepted-for-keyed-edge",
            Bug::CommitBeforeSync => "commit-before-sync",
            Bug::SynchronousOff => "synchronous-off",
            Bug::LuaTotalsCountResends => "lua-totals-count-resends",
            Bug::ProducerReordering => "producer-reordering",
            Bug::EarlyWindowClose => "early-window-close",
            Bug::OffsetArithmeticAcrossPartitions => "offset-arithmetic-across-partitions",
            Bug::AuthWindowOneSide => "auth-window-one-side",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of planted bugs switched on for one edge or cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    bits: u32,
}

impl PlantedBugs {
    pub const NONE: PlantedBugs = PlantedBugs { bits: 0 };

    pub fn with(self, bug: Bug) -> PlantedBugs {
        PlantedBugs {
            bits: self.bits | bug.bit(),
        }
    }

    #[inline(always)]
    pub fn has(self, bug: Bug) -> bool {
        cfg!(feature = "planted-bugs") && self.bits & bug.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
        for bug in Bug::ALL {
            assert_eq!(Bug::from_name(bug.name()), Some(bug));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Bug::ALL.len());
    }

    #[test]
    fn switches_are_off_unless_planted() {
        let bugs = PlantedBugs::NONE.with(Bug::NoDeduplication);
        assert!(!bugs.has(Bug::AckBeforeReply));
        assert_eq!(
            bugs.has(Bug::NoDeduplication),
            cfg!(feature = "planted-bugs")
        );
    }
}
