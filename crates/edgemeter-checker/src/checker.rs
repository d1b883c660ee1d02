//! The checker: at the end of every seed, compares what each edge's SQLite
//! and the cloud's cache hold with the oracle computed from the CSV, and
//! names every violation in Jepsen's words. With several edges the
//! invariant is the same over their union: each edge is checked against
//! the oracle of its own households, and the cloud holds each edge's
//! acknowledged tuples exactly once, keyed by edge ([`check_union`]).
//!
//! - **lost**: an input window that never became a tuple; a tuple never
//!   acknowledged (not at flag 2 with a postal code when the run ends); an
//!   acknowledged tuple the cloud does not hold, cache losses or not: the
//!   edges refill a cloud that forgot.
//! - **unexpected**: a tuple, at the edge or in the cloud, for a window that
//!   has no readings in the input (or that the edge never stored).
//! - **lost**, in the cloud's own records: fewer entries in the recent list
//!   (`em:recent`, as the dashboard reads it) than the newest
//!   `RECENT_TUPLES_MAX` tuples held.
//! - **duplicated**: one window stored twice at the edge, or one tuple
//!   identity (edge, household, window) held under two keys in the cloud;
//!   a per-state or per-edge total that counts more tuples than the cloud
//!   holds; a household twice in a state's household sets; a tuple twice
//!   in the recent list.
//! - **changed**: an average or sample count that differs from the oracle or
//!   between edge and cloud; a postal code that differs between the cloud
//!   and the edge, between tuples of one household, or from the household's
//!   fixed code; any tuple the cloud answered with a conflict; a per-state
//!   or per-edge total (tuples, sum of averages, households) that is not
//!   what the held tuples add up to; a household set that names a
//!   household with no held tuple in that state, misses one that has, or
//!   keeps it outside its household's bucket; a recent entry whose tuple
//!   differs from the one held. A recent entry with no held tuple is
//!   **unexpected**.
//!
//! Liveness (`stuck`) and crashes (`crashed`) are added by the harness.

use crate::oracle::OracleWindow;
use edgemeter_cloud::{postal_code_for, CloudTuple, EdgeRecord, GermanState, StateTotals};
use edgemeter_scripts::layout::RECENT_TUPLES_MAX;
use edgemeter_store::StoredTuple;
use edgemeter_wire::store_bucket;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
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

/// One edge's share of the evidence: its id, the oracle of the households
/// it serves, and its SQLite's rows.
#[derive(Debug, Clone, Copy)]
pub struct EdgeEvidence<'a> {
    pub edge_id: &'a str,
    pub oracle: &'a BTreeMap<(String, i64), OracleWindow>,
    pub edge_rows: &'a [StoredTuple],
}

/// The evidence of a run with any number of edges sharing one cloud.
#[derive(Debug)]
pub struct UnionEvidence<'a> {
    pub edges: &'a [EdgeEvidence<'a>],
    /// What the cloud holds (every node's: they share the store), in the
    /// order it was first stored.
    pub cloud: &'a [CloudTuple],
    pub state_totals: Option<&'a [StateTotals]>,
    pub edge_records: Option<&'a [EdgeRecord]>,
    /// The recent tuples as the dashboard reads them (at most
    /// `RECENT_TUPLES_MAX`, newest first).
    pub recent: Option<&'a [CloudTuple]>,
    /// Per state, each household its sets hold, with the bucket of the set.
    pub household_sets: Option<&'a HouseholdSets>,
}

/// Per state, the households of its per-bucket sets, each with its set's
/// bucket: a household in two sets is there twice.
pub type HouseholdSets = BTreeMap<GermanState, Vec<(u16, String)>>;

/// Everything the checker looks at, for a run with one edge.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub edge_id: &'a str,
    pub oracle: &'a BTreeMap<(String, i64), OracleWindow>,
    pub edge_rows: &'a [StoredTuple],
    /// What the cloud holds, in the order it was first stored.
    pub cloud: &'a [CloudTuple],
    /// The totals the cloud keeps beside the tuples; `None` where the
    /// evidence has none (the chaos run reads tuples only), which skips
    /// their check.
    pub state_totals: Option<&'a [StateTotals]>,
    pub edge_records: Option<&'a [EdgeRecord]>,
    pub recent: Option<&'a [CloudTuple]>,
    pub household_sets: Option<&'a HouseholdSets>,
}

/// A window by household and start, borrowed from the evidence: the
/// checker looks at every tuple of a seed and copies none of their ids.
type WindowKey<'a> = (&'a str, i64);

/// Checks a run with one edge: [`check_union`] over that edge alone.
pub fn check(evidence: &Evidence<'_>) -> Findings {
    let edges = [EdgeEvidence {
        edge_id: evidence.edge_id,
        oracle: evidence.oracle,
        edge_rows: evidence.edge_rows,
    }];
    check_union(&UnionEvidence {
        edges: &edges,
        cloud: evidence.cloud,
        state_totals: evidence.state_totals,
        edge_records: evidence.edge_records,
        recent: evidence.recent,
        household_sets: evidence.household_sets,
    })
}

/// Each edge's windows against its oracle, then the cloud against every
/// edge. A window's identity in the cloud is (edge, household, window): a
/// tuple under an edge that never stored it is unexpected, even when
/// another edge did store that household's window.
pub fn check_union(evidence: &UnionEvidence<'_>) -> Findings {
    let mut findings = Findings::default();
    let mut by_edge: BTreeMap<&str, EdgeWindows<'_>> = BTreeMap::new();
    for edge in evidence.edges {
        let windows = edge_by_window(edge, &mut findings);
        check_against_oracle(edge, &windows, &mut findings);
        check_delivery(edge.edge_id, &windows, &mut findings);
        check_postal_codes(edge.edge_id, &windows, &mut findings);
        if by_edge.insert(edge.edge_id, windows).is_some() {
            findings.add(Kind::Duplicated, || {
                format!("edge id {} given to two edges", edge.edge_id)
            });
        }
    }
    check_cloud(evidence, &by_edge, &mut findings);
    check_state_totals(evidence, &mut findings);
    check_edge_counts(evidence, &mut findings);
    check_household_sets(evidence, &mut findings);
    check_recent(evidence, &mut findings);
    findings
}

/// One edge's stored tuples by window.
type EdgeWindows<'a> = BTreeMap<WindowKey<'a>, &'a StoredTuple>;

/// How far a kept sum of averages may be from the held tuples' sum: the
/// cloud adds in its own order, and float addition is not associative.
/// Far below any average a window can have but zero.
const SUM_TOLERANCE_RELATIVE: f64 = 1e-9;

/// The kept totals per state must be what the held tuples add up to: a
/// total above them counted a tuple twice, anything else changed.
fn check_state_totals(evidence: &UnionEvidence<'_>, findings: &mut Findings) {
    let Some(state_totals) = evidence.state_totals else {
        return;
    };
    let mut held: BTreeMap<GermanState, (u64, f64, BTreeSet<&str>)> = BTreeMap::new();
    for tuple in evidence.cloud {
        let entry = held.entry(tuple.state).or_default();
        entry.0 += 1;
        entry.1 += tuple.average_w;
        entry.2.insert(tuple.node_id.as_str());
    }
    let kept: BTreeMap<GermanState, &StateTotals> = state_totals
        .iter()
        .map(|totals| (totals.state, totals))
        .collect();
    for state in GermanState::ALL {
        let (tuples, sum_w, households) = held.remove(&state).unwrap_or_default();
        let (kept_tuples, kept_sum_w, kept_households) = kept
            .get(&state)
            .map_or((0, 0.0, 0), |t| (t.tuples, t.average_sum_w, t.households));
        let sum_differs =
            (kept_sum_w - sum_w).abs() > SUM_TOLERANCE_RELATIVE * sum_w.abs().max(1.0);
        if kept_tuples == tuples && !sum_differs && kept_households == households.len() as u64 {
            continue;
        }
        let kind = if kept_tuples > tuples {
            Kind::Duplicated
        } else {
            Kind::Changed
        };
        findings.add(kind, || {
            format!(
                "state {}: totals count {kept_tuples} tuples, {kept_sum_w} W, {kept_households} households; the cloud holds {tuples}, {sum_w} W, {}",
                state.name(),
                households.len()
            )
        });
    }
}

/// The kept tuple count per edge must be the tuples held for it.
fn check_edge_counts(evidence: &UnionEvidence<'_>, findings: &mut Findings) {
    let Some(edge_records) = evidence.edge_records else {
        return;
    };
    let mut held: BTreeMap<&str, u64> = BTreeMap::new();
    for tuple in evidence.cloud {
        *held.entry(tuple.edge_id.as_str()).or_default() += 1;
    }
    for record in edge_records {
        let tuples = held.remove(record.edge_id.as_str()).unwrap_or(0);
        if record.tuples == tuples {
            continue;
        }
        let kind = if record.tuples > tuples {
            Kind::Duplicated
        } else {
            Kind::Changed
        };
        findings.add(kind, || {
            format!(
                "edge {}: its record counts {} tuples, the cloud holds {tuples}",
                record.edge_id, record.tuples
            )
        });
    }
    for (edge_id, tuples) in held {
        findings.add(Kind::Changed, || {
            format!("edge {edge_id}: the cloud holds {tuples} tuples and no record counts them")
        });
    }
}

/// Each state's household sets must hold exactly the households with a
/// held tuple in that state, each once, in its own bucket's set (the
/// per-bucket counts add up to a distinct count only so).
fn check_household_sets(evidence: &UnionEvidence<'_>, findings: &mut Findings) {
    let Some(sets) = evidence.household_sets else {
        return;
    };
    let mut held: BTreeMap<GermanState, BTreeSet<&str>> = BTreeMap::new();
    for tuple in evidence.cloud {
        held.entry(tuple.state)
            .or_default()
            .insert(tuple.node_id.as_str());
    }
    for state in GermanState::ALL {
        let mut expected = held.remove(&state).unwrap_or_default();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for (bucket, household) in sets.get(&state).map_or(&[][..], Vec::as_slice) {
            let household = household.as_str();
            if !seen.insert(household) {
                findings.add(Kind::Duplicated, || {
                    format!(
                        "state {}: household {} is in two household sets",
                        state.name(),
                        short(household)
                    )
                });
                continue;
            }
            if store_bucket(household) != *bucket {
                findings.add(Kind::Changed, || {
                    format!(
                        "state {}: household {} is in bucket {bucket}'s set, not its own",
                        state.name(),
                        short(household)
                    )
                });
            }
            if !expected.remove(household) {
                findings.add(Kind::Changed, || {
                    format!(
                        "state {}: the household set names {}, which has no tuple held there",
                        state.name(),
                        short(household)
                    )
                });
            }
        }
        for household in expected {
            findings.add(Kind::Changed, || {
                format!(
                    "state {}: household {} has tuples held and is in no household set",
                    state.name(),
                    short(household)
                )
            });
        }
    }
}

/// The recent list must show held tuples as they are held, each once, and
/// as many as it can: the newest `RECENT_TUPLES_MAX`, or every held tuple
/// when fewer are held (each bucket keeps that many, so the merged heads
/// always reach the bound).
fn check_recent(evidence: &UnionEvidence<'_>, findings: &mut Findings) {
    let Some(recent) = evidence.recent else {
        return;
    };
    let held: BTreeMap<&str, &CloudTuple> = evidence
        .cloud
        .iter()
        .map(|tuple| (tuple.key.as_str(), tuple))
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for tuple in recent {
        if !seen.insert(tuple.key.as_str()) {
            findings.add(Kind::Duplicated, || {
                format!("tuple {} is in the recent list twice", tuple.key)
            });
            continue;
        }
        match held.get(tuple.key.as_str()) {
            None => findings.add(Kind::Unexpected, || {
                format!(
                    "the recent list shows {}, which the cloud does not hold",
                    tuple.key
                )
            }),
            Some(stored) if *stored != tuple => findings.add(Kind::Changed, || {
                format!(
                    "the recent list shows {} as {} W over {}, the cloud holds {} W over {}",
                    tuple.key, tuple.average_w, tuple.samples, stored.average_w, stored.samples
                )
            }),
            Some(_) => {}
        }
    }
    let expected = held.len().min(RECENT_TUPLES_MAX);
    if seen.len() < expected {
        findings.add(Kind::Lost, || {
            format!(
                "the recent list shows {} tuples, the cloud holds {} (the list shows up to {RECENT_TUPLES_MAX})",
                seen.len(),
                held.len()
            )
        });
    }
}

fn describe(key: &WindowKey<'_>) -> String {
    format!("{}@{}", short(key.0), key.1)
}

/// Household ids are 64 hex digits; eight identify them in a report.
fn short(node_id: &str) -> &str {
    &node_id[..node_id.len().min(8)]
}

fn edge_by_window<'a>(evidence: &EdgeEvidence<'a>, findings: &mut Findings) -> EdgeWindows<'a> {
    let mut edge = BTreeMap::new();
    for row in evidence.edge_rows {
        let key = (row.node_id.as_str(), row.window_start_ms);
        if edge.insert(key, row).is_some() {
            findings.add(Kind::Duplicated, || {
                format!(
                    "window {} stored twice at {}",
                    describe(&key),
                    evidence.edge_id
                )
            });
        }
    }
    edge
}

/// Walks the oracle and the edge's tuples side by side: both are sorted by
/// household and window, so one pass finds every window lost, invented or
/// changed without a lookup per window.
fn check_against_oracle(
    evidence: &EdgeEvidence<'_>,
    edge: &EdgeWindows<'_>,
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

fn check_delivery(edge_id: &str, edge: &EdgeWindows<'_>, findings: &mut Findings) {
    for (key, row) in edge {
        if row.conflict {
            findings.add(Kind::Changed, || {
                format!(
                    "tuple {} ({}) of {edge_id}: the cloud answered that it holds other values",
                    row.id,
                    describe(key)
                )
            });
        }
        if row.sent != 2 || row.postal_code.is_none() {
            findings.add(Kind::Lost, || {
                format!(
                    "tuple {} ({}) of {edge_id} never acknowledged: flag {}",
                    row.id,
                    describe(key),
                    row.sent
                )
            });
        }
    }
}

/// The shipped data set's households and their postal codes, pinned apart
/// from the code that computes them (see the file's header): a mapping
/// that changed, or collapsed every household onto one code, is caught
/// even though edge and cloud would agree with each other.
const PINNED_POSTAL_CODES: &str = include_str!("postal_codes.tsv");

/// The pinned postal code of `node_id`, if it is a household of the
/// shipped data set.
pub fn pinned_postal_code(node_id: &str) -> Option<&'static str> {
    PINNED_POSTAL_CODES
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('\t'))
        .find(|(id, _)| *id == node_id)
        .map(|(_, code)| code)
}

/// The code a household must carry: its pinned one, else the mapping's.
fn fixed_postal_code(node_id: &str) -> String {
    match pinned_postal_code(node_id) {
        Some(code) => code.to_owned(),
        None => postal_code_for(node_id).as_str().to_owned(),
    }
}

fn check_postal_codes(edge_id: &str, edge: &EdgeWindows<'_>, findings: &mut Findings) {
    let mut fixed_codes: BTreeMap<&str, String> = BTreeMap::new();
    for (key, row) in edge {
        let Some(code) = &row.postal_code else {
            continue;
        };
        let fixed = fixed_codes
            .entry(key.0)
            .or_insert_with(|| fixed_postal_code(key.0));
        if code != fixed {
            findings.add(Kind::Changed, || {
                format!(
                    "tuple {} ({}) of {edge_id} has postal code {code}, household's code is {fixed}",
                    row.id,
                    describe(key)
                )
            });
        }
    }
}

fn check_cloud(
    evidence: &UnionEvidence<'_>,
    by_edge: &BTreeMap<&str, EdgeWindows<'_>>,
    findings: &mut Findings,
) {
    let mut held: BTreeMap<(&str, WindowKey<'_>), &CloudTuple> = BTreeMap::new();
    for tuple in evidence.cloud {
        let Some(window) = tuple.window_start_ms else {
            findings.add(Kind::Unexpected, || {
                format!("cloud key {} has no window", tuple.key)
            });
            continue;
        };
        let Some(edge) = by_edge.get(tuple.edge_id.as_str()) else {
            findings.add(Kind::Unexpected, || {
                format!("cloud key {} from unknown edge", tuple.key)
            });
            continue;
        };
        let key = (tuple.node_id.as_str(), window);
        if held.insert((tuple.edge_id.as_str(), key), tuple).is_some() {
            findings.add(Kind::Duplicated, || {
                format!(
                    "window {} of {} held twice in the cloud (key {})",
                    describe(&key),
                    tuple.edge_id,
                    tuple.key
                )
            });
        }
        let Some(row) = edge.get(&key) else {
            findings.add(Kind::Unexpected, || {
                format!(
                    "cloud holds {} under {}, which that edge never stored",
                    describe(&key),
                    tuple.edge_id
                )
            });
            continue;
        };
        compare_cloud_with_edge(&key, tuple, row, findings);
    }
    for (edge_id, edge) in by_edge {
        for (key, row) in edge {
            if row.sent != 2 || held.contains_key(&(*edge_id, *key)) {
                continue;
            }
            findings.add(Kind::Lost, || {
                format!(
                    "tuple {} ({}) of {edge_id} acknowledged but not in the cloud",
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

    /// The pinned table covers the shipped data set and agrees with the
    /// mapping today; were the mapping to change, this fails and so does
    /// every seed's postal-code check.
    #[test]
    fn the_pinned_postal_codes_cover_the_data_set_and_match_the_mapping() {
        let rows: Vec<(&str, &str)> = PINNED_POSTAL_CODES
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_once('\t').expect("id<TAB>code"))
            .collect();
        assert_eq!(rows.len(), 50, "one row per household of data/gem-house-1h");
        for (id, code) in rows {
            assert_eq!(pinned_postal_code(id), Some(code));
            assert_eq!(postal_code_for(id).as_str(), code, "household {id}");
        }
        assert_eq!(pinned_postal_code("not-a-household"), None);
    }

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
            acked_epoch: Some(1),
            conflict: false,
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

    /// The totals a faithful cloud keeps for `held`.
    fn totals_of(held: &[CloudTuple]) -> (Vec<StateTotals>, Vec<EdgeRecord>) {
        let states = GermanState::ALL
            .iter()
            .map(|state| {
                let mine: Vec<&CloudTuple> = held.iter().filter(|t| t.state == *state).collect();
                let households: BTreeSet<&str> = mine.iter().map(|t| t.node_id.as_str()).collect();
                StateTotals {
                    state: *state,
                    households: households.len() as u64,
                    tuples: mine.len() as u64,
                    average_sum_w: mine.iter().map(|t| t.average_w).sum(),
                }
            })
            .collect();
        let edges = vec![EdgeRecord {
            edge_id: "edge-1".to_owned(),
            last_heartbeat_ms: None,
            tuples: held.len() as u64,
            last_tuple_ms: None,
        }];
        (states, edges)
    }

    fn run(rows: &[StoredTuple], held: &[CloudTuple]) -> Findings {
        let (states, edges) = totals_of(held);
        run_with(rows, held, &states, &edges)
    }

    fn run_with(
        rows: &[StoredTuple],
        held: &[CloudTuple],
        states: &[StateTotals],
        edges: &[EdgeRecord],
    ) -> Findings {
        let oracle = oracle();
        check(&Evidence {
            edge_id: "edge-1",
            oracle: &oracle,
            edge_rows: rows,
            cloud: held,
            state_totals: Some(states),
            edge_records: Some(edges),
            recent: None,
            household_sets: None,
        })
    }

    fn kinds(findings: &Findings) -> Vec<Kind> {
        findings.by_kind.keys().copied().collect()
    }

    #[test]
    fn a_faithful_run_is_clean() {
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        assert!(run(&rows, &held).is_clean());
    }

    #[test]
    fn each_kind_of_violation_is_named() {
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        let missing_window = run(&[row(1, 0, 100.0)], &held[..1]);
        assert_eq!(kinds(&missing_window), vec![Kind::Lost]);
        let extra = [row(1, 0, 100.0), row(2, 5_000, 200.0), row(3, 10_000, 1.0)];
        assert!(kinds(&run(&extra, &held)).contains(&Kind::Unexpected));
        let doubled = [held[0].clone(), held[1].clone(), cloud(0, 100.0, ":7")];
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        assert_eq!(kinds(&run(&rows, &doubled)), vec![Kind::Duplicated]);
        let drifted = [row(1, 0, 100.0), row(2, 5_000, 200.5)];
        assert_eq!(kinds(&run(&drifted, &held)), vec![Kind::Changed]);
        let mut recoded = rows.clone();
        recoded[1].postal_code = Some("99999".to_owned());
        assert_eq!(kinds(&run(&recoded, &held)), vec![Kind::Changed]);
        let mut unacked = rows.clone();
        unacked[0].sent = 1;
        unacked[0].postal_code = None;
        assert_eq!(kinds(&run(&unacked, &held)), vec![Kind::Lost]);
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
        // The cloud holds every row, so that only the walk's findings remain.
        let held: Vec<CloudTuple> = rows
            .iter()
            .map(|row| {
                let code = postal_code_for(&row.node_id);
                CloudTuple {
                    key: format!("tuple:edge-1:{}:{}", row.node_id, row.window_start_ms),
                    node_id: row.node_id.clone(),
                    postal_code: code,
                    state: state_of(code).unwrap(),
                    average_w: row.average_w,
                    ..cloud(row.window_start_ms, 1.0, "")
                }
            })
            .collect();
        let findings = check(&Evidence {
            edge_id: "edge-1",
            oracle: &oracle,
            edge_rows: &rows,
            cloud: &held,
            state_totals: None,
            edge_records: None,
            recent: None,
            household_sets: None,
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

    /// Goal: a cache loss excuses nothing: an acknowledged tuple the cloud
    /// does not hold is lost, and what it holds is still checked.
    #[test]
    fn a_cache_loss_excuses_nothing() {
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let held = [cloud(5_000, 200.0, "")];
        assert_eq!(kinds(&run(&rows, &held)), vec![Kind::Lost]);
        let changed = [cloud(0, 100.0, ""), cloud(5_000, 1.0, "")];
        assert_eq!(kinds(&run(&rows, &changed)), vec![Kind::Changed]);
    }

    /// Goal: a tuple the cloud answered with a conflict is a change, even
    /// when the values agree by the time the run ends.
    #[test]
    fn a_conflict_is_a_change() {
        let mut rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        rows[1].conflict = true;
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        assert_eq!(kinds(&run(&rows, &held)), vec![Kind::Changed]);
    }

    /// Goal: the kept totals must add up to the held tuples: counting one
    /// twice is a duplicate, a wrong sum or household count is a change,
    /// and so is a per-edge count off either way. Method: faithful totals,
    /// then each bent on its own.
    #[test]
    fn totals_that_do_not_add_up_are_found() {
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        let (states, edges) = totals_of(&held);
        assert!(run_with(&rows, &held, &states, &edges).is_clean());
        let at = states.iter().position(|t| t.tuples > 0).unwrap();
        let bent = |change: &dyn Fn(&mut StateTotals)| {
            let mut states = states.clone();
            change(&mut states[at]);
            kinds(&run_with(&rows, &held, &states, &edges))
        };
        assert_eq!(bent(&|t| t.tuples += 1), vec![Kind::Duplicated]);
        assert_eq!(bent(&|t| t.average_sum_w += 0.5), vec![Kind::Changed]);
        assert_eq!(bent(&|t| t.households += 1), vec![Kind::Changed]);
        assert_eq!(bent(&|t| t.average_sum_w += 1e-10), Vec::<Kind>::new());
        let mut counted_twice = edges.clone();
        counted_twice[0].tuples += 2;
        assert_eq!(
            kinds(&run_with(&rows, &held, &states, &counted_twice)),
            vec![Kind::Duplicated]
        );
        assert_eq!(
            kinds(&run_with(&rows, &held, &states, &[])),
            vec![Kind::Changed],
            "held tuples no record counts"
        );
    }

    /// The recent list and household sets a faithful cloud keeps for `held`.
    fn records_of(held: &[CloudTuple]) -> (Vec<CloudTuple>, HouseholdSets) {
        let mut sets = HouseholdSets::new();
        for tuple in held {
            let entry = (store_bucket(&tuple.node_id), tuple.node_id.clone());
            let members = sets.entry(tuple.state).or_default();
            if !members.contains(&entry) {
                members.push(entry);
            }
        }
        (held.iter().rev().cloned().collect(), sets)
    }

    fn run_records(held: &[CloudTuple], recent: &[CloudTuple], sets: &HouseholdSets) -> Vec<Kind> {
        let rows = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let (states, edges) = totals_of(held);
        let oracle = oracle();
        kinds(&check(&Evidence {
            edge_id: "edge-1",
            oracle: &oracle,
            edge_rows: &rows,
            cloud: held,
            state_totals: Some(&states),
            edge_records: Some(&edges),
            recent: Some(recent),
            household_sets: Some(sets),
        }))
    }

    /// Goal: the recent list must show held tuples, as held, each once, as
    /// many as are held (up to its bound), and the household sets must
    /// name exactly the held households, once, in their own bucket.
    /// Method: faithful records, then each bent on its own.
    #[test]
    fn recent_lists_and_household_sets_that_disagree_are_found() {
        let held = [cloud(0, 100.0, ""), cloud(5_000, 200.0, "")];
        let (recent, sets) = records_of(&held);
        assert_eq!(run_records(&held, &recent, &sets), Vec::<Kind>::new());
        assert_eq!(run_records(&held, &recent[..1], &sets), vec![Kind::Lost]);
        let twice = [recent[0].clone(), recent[0].clone()];
        assert_eq!(
            run_records(&held, &twice, &sets),
            vec![Kind::Lost, Kind::Duplicated]
        );
        let mut changed = recent.clone();
        changed[0].average_w = 1.0;
        assert_eq!(run_records(&held, &changed, &sets), vec![Kind::Changed]);
        let mut foreign = recent.clone();
        foreign.push(cloud(10_000, 1.0, ""));
        assert_eq!(run_records(&held, &foreign, &sets), vec![Kind::Unexpected]);
        let state = held[0].state;
        let bucket = store_bucket(NODE);
        let mut doubled = sets.clone();
        doubled
            .get_mut(&state)
            .unwrap()
            .push(((bucket + 1) % 16, NODE.to_owned()));
        assert_eq!(
            run_records(&held, &recent, &doubled),
            vec![Kind::Duplicated]
        );
        let mut elsewhere = sets.clone();
        elsewhere.get_mut(&state).unwrap()[0].0 = (bucket + 1) % 16;
        assert_eq!(run_records(&held, &recent, &elsewhere), vec![Kind::Changed]);
        let mut empty = sets.clone();
        empty.get_mut(&state).unwrap().clear();
        assert_eq!(run_records(&held, &recent, &empty), vec![Kind::Changed]);
        let mut stranger = sets.clone();
        stranger
            .get_mut(&state)
            .unwrap()
            .push((store_bucket("stranger"), "stranger".to_owned()));
        assert_eq!(run_records(&held, &recent, &stranger), vec![Kind::Changed]);
    }

    /// Goal: over several edges, each edge answers for its own households
    /// and the cloud holds each edge's tuples under that edge: a faithful
    /// union is clean; a tuple held under the other edge is unexpected, and
    /// the edge that acknowledged it has lost it. Method: two edges of one
    /// household each (the same household id, so only the edge tells the
    /// two apart), then one cloud tuple moved to the other edge.
    #[test]
    fn the_union_of_two_edges_is_checked_per_edge() {
        let oracle_one = oracle();
        let oracle_two: BTreeMap<(String, i64), OracleWindow> =
            oracle().into_iter().take(1).collect();
        let rows_one = [row(1, 0, 100.0), row(2, 5_000, 200.0)];
        let rows_two = [row(1, 0, 100.0)];
        let under = |edge: &str, window: i64, average_w: f64| CloudTuple {
            edge_id: edge.to_owned(),
            key: format!("tuple:{edge}:{NODE}:{window}"),
            ..cloud(window, average_w, "")
        };
        let edges = [
            EdgeEvidence {
                edge_id: "edge-1",
                oracle: &oracle_one,
                edge_rows: &rows_one,
            },
            EdgeEvidence {
                edge_id: "edge-2",
                oracle: &oracle_two,
                edge_rows: &rows_two,
            },
        ];
        let faithful = [
            under("edge-1", 0, 100.0),
            under("edge-1", 5_000, 200.0),
            under("edge-2", 0, 100.0),
        ];
        let union = |held: &[CloudTuple]| {
            kinds(&check_union(&UnionEvidence {
                edges: &edges,
                cloud: held,
                state_totals: None,
                edge_records: None,
                recent: None,
                household_sets: None,
            }))
        };
        assert_eq!(union(&faithful), Vec::<Kind>::new());
        let moved = [
            under("edge-1", 0, 100.0),
            under("edge-2", 5_000, 200.0),
            under("edge-2", 0, 100.0),
        ];
        assert_eq!(union(&moved), vec![Kind::Lost, Kind::Unexpected]);
        let unknown = [
            faithful[0].clone(),
            faithful[1].clone(),
            under("edge-3", 0, 100.0),
        ];
        assert_eq!(union(&unknown), vec![Kind::Lost, Kind::Unexpected]);
    }
}
