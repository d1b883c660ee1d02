//! Coverage: what a sweep of seeds actually reached, so that a fault kind,
//! a crash point or a rare path the swarm claims but never exercises shows
//! as a zero in `run`'s summary and fails `run --require-coverage` (CI's
//! 300-seed sweep).
//!
//! Everything is counted from what happened in the seed, never from the
//! schedule alone: a fault kind counts once one of its actions was applied
//! before the heal (a crash point or an in-flight crash once it fired),
//! and a rare path once the production edge's or cloud's own counters
//! ([`EdgeCounters`], [`CloudCounters`]) or the simulated link's say it
//! was taken.

use crate::faults::FAULT_KINDS;
use edgemeter_cloud::{CloudCounters, RefusalReason};
use edgemeter_edge::EdgeCounters;
use edgemeter_env::CrashPoint;
use std::collections::{BTreeMap, BTreeSet};

/// The rare paths, each with what reaching it means.
pub const PATHS: [(&str, &str); 14] = [
    (
        "late",
        "an edge kept a reading as late (its window had closed)",
    ),
    (
        "resend",
        "the link resent a request (pipe broken or resend timer)",
    ),
    (
        "repeat",
        "the cloud stored a tuple it already held (a request seen twice)",
    ),
    (
        "retry-later",
        "the cloud answered a batch with retry-later (its store failed)",
    ),
    (
        "reship",
        "an edge shipped acknowledged tuples again under a new epoch",
    ),
    ("refused", "the cloud refused a request or an edge's lease"),
    (
        "refused-outside-window",
        "the cloud refused a seal outside its window (clock skew)",
    ),
    (
        "refused-unsealed",
        "the cloud refused an unsealed request in a keyed edge's name",
    ),
    (
        "refused-lease",
        "the cloud refused an edge instance another one's lease held",
    ),
    (
        "store-error",
        "an edge's SQLite refused a write (full or failing disk)",
    ),
    ("disk-refused", "a failing disk refused an operation"),
    (
        "full-batch",
        "an edge sent a batch of batch_tuples_max (1,024) tuples",
    ),
    (
        "pending-bound",
        "an edge stored because store_pending_max records waited",
    ),
    (
        "faults-at-end",
        "a fault was still on when the replay ended",
    ),
];

/// What one seed did, as the harness saw it.
pub struct Evidence<'a> {
    pub kinds: &'a BTreeSet<&'static str>,
    pub points: &'a BTreeSet<&'static str>,
    /// Each edge's counters, over all its lives.
    pub edges: &'a [EdgeCounters],
    /// Each cloud node incarnation's counters.
    pub clouds: &'a [CloudCounters],
    pub link_resends: u64,
    pub disk_refusals: u64,
    pub big: bool,
    pub faults_at_end: bool,
}

/// The names one seed reached: `fault:KIND`, `point:NAME`, `path:NAME`,
/// `shape:big`.
pub fn reached(evidence: &Evidence<'_>) -> BTreeSet<String> {
    let edges = |field: fn(&EdgeCounters) -> u64| evidence.edges.iter().map(field).sum::<u64>();
    let clouds =
        |field: &dyn Fn(&CloudCounters) -> u64| evidence.clouds.iter().map(field).sum::<u64>();
    let refused_for = |reason| clouds(&|c: &CloudCounters| c.refused_for(reason));
    let refused_any = clouds(&|c| c.refused.iter().sum::<u64>() + c.instances_refused);
    let paths = [
        ("late", edges(|e| e.late)),
        ("resend", evidence.link_resends),
        ("repeat", clouds(&|c| c.tuples_repeated)),
        ("retry-later", edges(|e| e.batches_retry_later)),
        ("reship", edges(|e| e.tuples_reshipped)),
        ("refused", refused_any),
        (
            "refused-outside-window",
            refused_for(RefusalReason::OutsideWindow),
        ),
        (
            "refused-unsealed",
            refused_for(RefusalReason::KeyedEdgeUnsealed) + refused_for(RefusalReason::Unsealed),
        ),
        ("refused-lease", clouds(&|c| c.instances_refused)),
        ("store-error", edges(|e| e.store_errors)),
        ("disk-refused", evidence.disk_refusals),
        ("full-batch", edges(|e| e.full_batches)),
        ("pending-bound", edges(|e| e.pending_bound_stores)),
        ("faults-at-end", u64::from(evidence.faults_at_end)),
    ];
    let mut names: BTreeSet<String> = paths
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(name, _)| format!("path:{name}"))
        .collect();
    names.extend(evidence.kinds.iter().map(|kind| format!("fault:{kind}")));
    names.extend(evidence.points.iter().map(|point| format!("point:{point}")));
    if evidence.big {
        names.insert("shape:big".to_owned());
    }
    names
}

/// Every name a sweep should reach, in the order the summary prints them.
pub fn expected() -> Vec<String> {
    let mut names: Vec<String> = FAULT_KINDS
        .iter()
        .map(|kind| format!("fault:{kind}"))
        .collect();
    names.extend(
        CrashPoint::ALL
            .iter()
            .map(|point| format!("point:{}", point.name())),
    );
    names.extend(PATHS.iter().map(|(name, _)| format!("path:{name}")));
    names.push("shape:big".to_owned());
    names
}

/// How many seeds reached each expected name (zeros included), plus any
/// name reached that is not expected, in [`expected`]'s order.
pub fn tally<'a>(seeds: impl IntoIterator<Item = &'a BTreeSet<String>>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for seed in seeds {
        for name in seed {
            *counts.entry(name.clone()).or_default() += 1;
        }
    }
    let mut rows: Vec<(String, usize)> = expected()
        .into_iter()
        .map(|name| {
            let count = counts.remove(&name).unwrap_or(0);
            (name, count)
        })
        .collect();
    rows.extend(counts);
    rows
}

/// The expected names no seed reached.
pub fn unreached(rows: &[(String, usize)]) -> Vec<String> {
    rows.iter()
        .filter(|(_, count)| *count == 0)
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a rare path counts only when a counter moved, a kind only when
    /// applied, and a sweep names what it never reached. Method: one seed's
    /// evidence with a late reading and an applied partition; its tally
    /// must list both at 1 and everything else as unreached.
    #[test]
    fn counts_what_happened_and_names_the_rest() {
        let kinds = BTreeSet::from(["partition-edge-cloud"]);
        let points = BTreeSet::new();
        let edge = EdgeCounters {
            late: 2,
            ..EdgeCounters::default()
        };
        let names = reached(&Evidence {
            kinds: &kinds,
            points: &points,
            edges: &[edge],
            clouds: &[CloudCounters::default()],
            link_resends: 0,
            disk_refusals: 0,
            big: false,
            faults_at_end: false,
        });
        assert_eq!(
            names,
            BTreeSet::from([
                "fault:partition-edge-cloud".to_owned(),
                "path:late".to_owned()
            ])
        );
        let rows = tally([&names]);
        let missing = unreached(&rows);
        assert!(!missing.contains(&"path:late".to_owned()));
        assert!(missing.contains(&"path:resend".to_owned()));
        assert!(missing.contains(&format!("point:{}", CrashPoint::ALL[0].name())));
        assert_eq!(missing.len(), expected().len() - 2);
    }
}
