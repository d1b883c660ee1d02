//! The checker: at the end of every seed, compares what the edge's SQLite
//! and the cloud's cache hold with the oracle computed from the CSV, and
//! names every violation in Jepsen's words.
//!
//! - **lost**: an input window that never became a tuple; a tuple never
//!   acknowledged (not at flag 2 with a postal code when the run ends); an
//!   acknowledged tuple the cloud does not hold (unless a cache loss excuses
//!   it, below).
//! - **unexpected**: a tuple, at the edge or in the cloud, for a window that
//!   has no readings in the input (or that the edge never stored).
//! - **duplicated**: one window stored twice at the edge, or one tuple
//!   identity (edge, household, window) held under two keys in the cloud.
//! - **changed**: an average or sample count that differs from the oracle or
//!   between edge and cloud; a postal code that differs between the cloud
//!   and the edge, between tuples of one household, or from the household's
//!   fixed code.
//!
//! What a cache loss excuses, precisely: an acknowledged tuple may be
//! missing from the cloud only if every cache write of it happened before
//! the last loss (its identity's latest write epoch is older than the
//! current epoch). Nothing is excused for what the cloud does hold: after
//! any number of losses every held tuple must still be single, unchanged
//! and known to the edge; and a tuple written after the last loss must be
//! there.
//!
//! Liveness (`stuck`) and crashes (`crashed`) are added by the harness.

use crate::redis::WriteLog;
use edgemeter_cloud::{postal_code_for, CloudTuple};
use edgemeter_data::OracleWindow;
use edgemeter_store::StoredTuple;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// Examples kept per kind of violation; the count is always complete.
pub const EXAMPLES_MAX: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Lost,
    Unexpected,
    Duplicated,
    Changed,
    /// The system did not converge within the bound after the heal.
    Stuck,
    /// A host panicked or exited on its own.
    Crashed,
    /// The edge's SQLite failed `PRAGMA integrity_check` at a start, or
    /// would not open.
    Corrupt,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Unexpected => "unexpected",
            Kind::Duplicated => "duplicated",
            Kind::Changed => "changed",
            Kind::Stuck => "stuck",
            Kind::Crashed => "crashed",
            Kind::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Violations by kind: a full count and the first few examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Findings {
    pub by_kind: BTreeMap<Kind, (usize, Vec<String>)>,
}

impl Findings {
    pub fn add(&mut self, kind: Kind, example: impl FnOnce() -> String) {
        let entry = self.by_kind.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < EXAMPLES_MAX {
            entry.1.push(example());
        }
    }

    /// Adds every count and example of `other`.
    pub fn merge(&mut self, other: Findings) {
        for (kind, (count, examples)) in other.by_kind {
            let entry = self.by_kind.entry(kind).or_default();
            entry.0 += count;
            let room = EXAMPLES_MAX.saturating_sub(entry.1.len());
            entry.1.extend(examples.into_iter().take(room));
        }
    }

    pub fn is_clean(&self) -> bool {
        self.by_kind.is_empty()
    }

    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.by_kind
            .iter()
            .map(|(kind, (count, _))| (kind.name().to_owned(), *count))
            .collect()
    }
}

/// Everything the checker looks at.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub edge_id: &'a str,
    pub oracle: &'a BTreeMap<(String, i64), OracleWindow>,
    pub edge_rows: &'a [StoredTuple],
    pub cloud: &'a [CloudTuple],
    /// Cache losses so far, and each identity's latest write epoch.
    pub cache_epoch: u32,
    pub writes: &'a WriteLog,
}

/// A window by household and start, borrowed from the evidence: the
/// checker looks at every tuple of a seed and copies none of their ids.
type WindowKey<'a> = (&'a str, i64);

pub fn check(evidence: &Evidence<'_>) -> Findings {
    let mut findings = Findings::default();
    let edge = edge_by_window(evidence, &mut findings);
    check_against_oracle(evidence, &edge, &mut findings);
    check_delivery(&edge, &mut findings);
    check_postal_codes(&edge, &mut findings);
    check_cloud(evidence, &edge, &mut findings);
    findings
}

fn describe(key: &WindowKey<'_>) -> String {
    format!("{}@{}", short(key.0), key.1)
}

/// Household ids are 64 hex digits; eight identify them in a report.
fn short(node_id: &str) -> &str {
    &node_id[..node_id.len().min(8)]
}

fn edge_by_window<'a>(
    evidence: &Evidence<'a>,
    findings: &mut Findings,
) -> BTreeMap<WindowKey<'a>, &'a StoredTuple> {
    let mut edge = BTreeMap::new();
    for row in evidence.edge_rows {
        let key = (row.node_id.as_str(), row.window_start_ms);
        if edge.insert(key, row).is_some() {
            findings.add(Kind::Duplicated, || {
                format!("window {} stored twice at the edge", describe(&key))
            });
        }
    }
    edge
}

/// Walks the oracle and the edge's tuples side by side: both are sorted by
/// household and window, so one pass finds every window lost, invented or
/// changed without a lookup per window.
fn check_against_oracle(
    evidence: &Evidence<'_>,
    edge: &BTreeMap<WindowKey<'_>, &StoredTuple>,
    findings: &mut Findings,
) {
    let mut expected = evidence.oracle.iter().peekable();
    let mut stored = edge.iter().peekable();
    loop {
        let order = match (expected.peek(), stored.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(((node_id, start), _)), Some((key, _))) => (node_id.as_str(), *start).cmp(*key),
        };
        match order {
            Ordering::Less => {
                let ((node_id, start), _) = expected.next().expect("peeked");
                findings.add(Kind::Lost, || {
                    format!(
                        "window {} has readings but no tuple",
                        describe(&(node_id, *start))
                    )
                });
            }
            Ordering::Greater => {
                let (key, _) = stored.next().expect("peeked");
                findings.add(Kind::Unexpected, || {
                    format!("edge tuple for window {} without readings", describe(key))
                });
            }
            Ordering::Equal => {
                let (_, window) = expected.next().expect("peeked");
                let (key, row) = stored.next().expect("peeked");
                if row.average_w != window.average_w || row.samples != window.samples {
                    findings.add(Kind::Changed, || {
                        format!(
                            "window {}: edge has {} W over {} samples, oracle {} W over {}",
                            describe(key),
                            row.average_w,
                            row.samples,
                            window.average_w,
                            window.samples
                        )
                    });
                }
            }
        }
    }
}

fn check_delivery(edge: &BTreeMap<WindowKey<'_>, &StoredTuple>, findings: &mut Findings) {
    for (key, row) in edge {
        if row.sent != 2 || row.postal_code.is_none() {
            findings.add(Kind::Lost, || {
                format!(
                    "tuple {} ({}) never acknowledged: flag {}",
                    row.id,
                    describe(key),
                    row.sent
                )
            });
        }
    }
}

fn check_postal_codes(edge: &BTreeMap<WindowKey<'_>, &StoredTuple>, findings: &mut Findings) {
    for (key, row) in edge {
        let Some(code) = &row.postal_code else {
            continue;
        };
        let fixed = postal_code_for(key.0);
        if code != fixed.as_str() {
            findings.add(Kind::Changed, || {
                format!(
                    "tuple {} ({}) has postal code {code}, household's code is {fixed}",
                    row.id,
                    describe(key)
                )
            });
        }
    }
}

fn check_cloud(
    evidence: &Evidence<'_>,
    edge: &BTreeMap<WindowKey<'_>, &StoredTuple>,
    findings: &mut Findings,
) {
    let mut held: BTreeMap<WindowKey<'_>, &CloudTuple> = BTreeMap::new();
    for tuple in evidence.cloud {
        let Some(window) = tuple.window_start_ms else {
            findings.add(Kind::Unexpected, || {
                format!("cloud key {} has no window", tuple.key)
            });
            continue;
        };
        if tuple.edge_id != evidence.edge_id {
            findings.add(Kind::Unexpected, || {
                format!("cloud key {} from unknown edge", tuple.key)
            });
            continue;
        }
        let key = (tuple.node_id.as_str(), window);
        if held.insert(key, tuple).is_some() {
            findings.add(Kind::Duplicated, || {
                format!(
                    "window {} held twice in the cloud (key {})",
                    describe(&key),
                    tuple.key
                )
            });
        }
        let Some(row) = edge.get(&key) else {
            findings.add(Kind::Unexpected, || {
                format!("cloud holds {} which the edge never stored", describe(&key))
            });
            continue;
        };
        compare_cloud_with_edge(&key, tuple, row, findings);
    }
    for (key, row) in edge {
        if row.sent != 2 || held.contains_key(key) {
            continue;
        }
        let identity = (evidence.edge_id.to_owned(), key.0.to_owned(), Some(key.1));
        let excused = evidence
            .writes
            .get(&identity)
            .is_some_and(|epoch| *epoch < evidence.cache_epoch);
        if !excused {
            findings.add(Kind::Lost, || {
                format!(
                    "tuple {} ({}) acknowledged but not in the cloud",
                    row.id,
                    describe(key)
                )
            });
        }
    }
}

fn compare_cloud_with_edge(
    key: &WindowKey<'_>,
    tuple: &CloudTuple,
    row: &StoredTuple,
    findings: &mut Findings,
) {
    if tuple.average_w != row.average_w || tuple.samples != row.samples {
        findings.add(Kind::Changed, || {
            format!(
                "window {}: cloud has {} W over {}, edge {} W over {}",
                describe(key),
                tuple.average_w,
                tuple.samples,
                row.average_w,
                row.samples
            )
        });
    }
    if let Some(code) = &row.postal_code {
        if code != tuple.postal_code.as_str() {
            findings.add(Kind::Changed, || {
                format!(
                    "window {}: cloud code {}, edge code {code}",
                    describe(key),
                    tuple.postal_code
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_cloud::state_of;

    const NODE: &str = "8c345400feac9da85eb7884641dbab0e335045984355bb3bdbb1973065e9fcfa";

    fn oracle() -> BTreeMap<(String, i64), OracleWindow> {
        [(0, 100.0), (5_000, 200.0)]
            .into_iter()
            .map(|(start, average_w)| {
                (
                    (NODE.to_owned(), start),
                    OracleWindow {
                        average_w,
                        samples: 2,
                    },
                )
            })
            .collect()
    }

    fn row(id: i64, window: i64, average_w: f64) -> StoredTuple {
        StoredTuple {
            id,
            node_id: NODE.to_owned(),
            window_start_ms: window,
            average_w,
            samples: 2,
            postal_code: Some(postal_code_for(NODE).as_str().to_owned()),
            sent: 2,
        }
    }

    fn cloud(window: i64, average_w: f64, key_suffix: &str) -> CloudTuple {
        let code = postal_code_for(NODE);
        CloudTuple {
            key: format!("tuple:edge-1:{NODE}:{window}{key_suffix}"),
            edge_id: "edge-1".to_owned(),
            node_id: NODE.to_owned(),
            window_start_ms: Some(window),
            average_w,
            samples: 2,
            postal_code: code,
            state: state_of(code).unwrap(),
            received_ms: 0,
        }
    }

    fn run(rows: &[StoredTuple], held: &[CloudTuple], epoch: u32, writes: &WriteLog) -> Findings {
        let oracle = oracle();
        check(&Evidence {
            edge_id: "edge-1",
            oracle: &oracle,
            edge_rows: rows,
            cloud: held,
            cache_epoch: epoch,
            writes,
        })
    }

    fn kinds(findings: &Findings) -> Vec<Kind> {
        findings.by_kind.keys().copied().collect()
    }

    #[test]
    fn a_faithful_run_is_clean() {
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        assert!(run(&rows, &held, 0, &WriteLog::default()).is_clean());
    }

    #[test]
    fn each_kind_of_violation_is_named() {
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        let missing_window = run(&[row(1, 0, 100.0)], &held[..1], 0, &WriteLog::default());
        assert_eq!(kinds(&missing_window), vec![Kind::Lost]);
        let extra = [row(1, 0, 100.0), row(2, 5_000, 200.0), row(3, 10_000, 1.0)];
        assert!(kinds(&run(&extra, &held, 0, &WriteLog::default())).contains(&Kind::Unexpected));
        let doubled = [held[0].clone(), held[1].clone(), cloud(0, 100.0, ":7")];
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        assert_eq!(
            kinds(&run(&rows, &doubled, 0, &WriteLog::default())),
            vec![Kind::Duplicated]
        );
        let drifted = [row(1, 0, 100.0), row(2, 5_000, 200.5)];
        assert_eq!(
            kinds(&run(&drifted, &held, 0, &WriteLog::default())),
            vec![Kind::Changed]
        );
        let mut recoded = rows.clone();
        recoded[1].postal_code = Some("99999".to_owned());
        assert_eq!(
            kinds(&run(&recoded, &held, 0, &WriteLog::default())),
            vec![Kind::Changed]
        );
        let mut unacked = rows.clone();
        unacked[0].sent = 1;
        unacked[0].postal_code = None;
        assert_eq!(
            kinds(&run(&unacked, &held, 0, &WriteLog::default())),
            vec![Kind::Lost]
        );
    }

    /// Several households, windows lost and invented before, between and
    /// after the matching ones: each is found once, and nothing else.
    #[test]
    fn the_oracle_walk_finds_each_gap_across_households() {
        let household = |node: &str, window: i64| StoredTuple {
            node_id: node.to_owned(),
            postal_code: Some(postal_code_for(node).as_str().to_owned()),
            ..row(0, window, 1.0)
        };
        let oracle: BTreeMap<(String, i64), OracleWindow> =
            [("b", 0), ("b", 5_000), ("d", 0), ("d", 10_000), ("f", 0)]
                .into_iter()
                .map(|(node, window)| {
                    let average = OracleWindow {
                        average_w: 1.0,
                        samples: 2,
                    };
                    ((node.to_owned(), window), average)
                })
                .collect();
        let rows = [
            household("a", 0),
            household("b", 5_000),
            household("c", 0),
            household("d", 0),
            household("d", 5_000),
            household("d", 10_000),
            household("g", 0),
        ];
        let findings = check(&Evidence {
            edge_id: "edge-1",
            oracle: &oracle,
            edge_rows: &rows,
            cloud: &[],
            cache_epoch: 1,
            writes: &WriteLog::from_iter(rows.iter().map(|row| {
                let identity = (
                    "edge-1".to_owned(),
                    row.node_id.clone(),
                    Some(row.window_start_ms),
                );
                (identity, 0)
            })),
        });
        let (lost, lost_examples) = &findings.by_kind[&Kind::Lost];
        assert_eq!(*lost, 2);
        assert_eq!(lost_examples[0], "window b@0 has readings but no tuple");
        assert_eq!(lost_examples[1], "window f@0 has readings but no tuple");
        let (unexpected, examples) = &findings.by_kind[&Kind::Unexpected];
        assert_eq!(*unexpected, 4);
        let invented: Vec<&str> = examples
            .iter()
            .map(|text| {
                text.trim_start_matches("edge tuple for window ")
                    .trim_end_matches(" without readings")
            })
            .collect();
        assert_eq!(invented, ["a@0", "c@0", "d@5000", "g@0"]);
        assert_eq!(kinds(&findings), vec![Kind::Lost, Kind::Unexpected]);
    }

    #[test]
    fn a_cache_loss_excuses_only_tuples_last_written_before_it() {
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let held = [cloud(5_000, 200.0, "")];
        let identity = |window| ("edge-1".to_owned(), NODE.to_owned(), Some(window));
        let mut writes = WriteLog::from_iter([(identity(0), 0), (identity(5_000), 1)]);
        assert!(
            run(&rows, &held, 1, &writes).is_clean(),
            "written before the loss: excused"
        );
        writes.insert(identity(0), 1);
        assert_eq!(
            kinds(&run(&rows, &held, 1, &writes)),
            vec![Kind::Lost],
            "written after it: lost"
        );
        writes.remove(&identity(0));
        assert_eq!(
            kinds(&run(&rows, &held, 1, &writes)),
            vec![Kind::Lost],
            "never written: lost"
        );
        let changed = [cloud(5_000, 1.0, "")];
        writes.insert(identity(0), 0);
        assert_eq!(
            kinds(&run(&rows, &changed, 1, &writes)),
            vec![Kind::Changed],
            "no excuse for what is held"
        );
    }
}
