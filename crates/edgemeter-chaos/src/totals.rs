//! The cloud's running totals against the tuples it holds. The cloud moves
//! its per-state totals (in each store bucket `em:{em-bNN}:`, the hash
//! `state:<state>`: `tuples`, `average_sum_w`, and the set
//! `state:<state>:households`) and its per-edge counts (`edge:<edge>`:
//! `tuples`, and the set `edges`), summed over the buckets by
//! [`crate::evidence`], only when a tuple is stored for the first time, so
//! after any crash, resend, cache loss or refill they must equal what the
//! held tuples add up to: a tuple counted
//! twice is duplicated, one held but not counted is lost from the totals.
//!
//! Comparing does no IO: [`crate::evidence`] reads the totals, this module
//! only compares them.

use edgemeter_checker::checker::{Findings, Kind};
use edgemeter_cloud::{CloudTuple, GermanState};
use std::collections::{BTreeMap, BTreeSet};

/// How far a state's `average_sum_w` may stray from the sum of its held
/// tuples' averages, relative to that sum (or to 1 W when it is smaller):
/// the cloud adds a batch's averages in Lua doubles and `HINCRBYFLOAT`
/// keeps long doubles, so the two sums differ in their last bits. A tuple
/// counted twice or left out moves the sum by a whole average, far more.
pub const SUM_RELATIVE_TOLERANCE: f64 = 1e-9;

/// One state's totals as the cloud keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateCount {
    pub tuples: u64,
    pub average_sum_w: f64,
    pub households: BTreeSet<String>,
}

/// Every total the cloud keeps: states with no key are absent (a state the
/// cloud never counted), as are edges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudTotals {
    pub states: BTreeMap<GermanState, StateCount>,
    /// Each edge's `tuples`, for every edge in `em:edges` or with a hash.
    pub edges: BTreeMap<String, u64>,
}

/// What the held tuples add up to, per state and per edge.
pub fn totals_of(cloud: &[CloudTuple]) -> CloudTotals {
    let mut totals = CloudTotals::default();
    for tuple in cloud {
        let state = totals.states.entry(tuple.state).or_default();
        state.tuples += 1;
        state.average_sum_w += tuple.average_w;
        state.households.insert(tuple.node_id.clone());
        *totals.edges.entry(tuple.edge_id.clone()).or_default() += 1;
    }
    totals
}

/// Adds a finding for every total that differs from what `cloud` holds.
pub fn check_totals(counted: &CloudTotals, cloud: &[CloudTuple], findings: &mut Findings) {
    let held = totals_of(cloud);
    let empty = StateCount::default();
    for state in GermanState::ALL {
        let counted_state = counted.states.get(&state).unwrap_or(&empty);
        let held_state = held.states.get(&state).unwrap_or(&empty);
        compare_state(state, counted_state, held_state, findings);
    }
    let edges: BTreeSet<&String> = counted.edges.keys().chain(held.edges.keys()).collect();
    for edge in edges {
        let counted_tuples = counted.edges.get(edge).copied().unwrap_or(0);
        let held_tuples = held.edges.get(edge).copied().unwrap_or(0);
        compare_count(
            &format!("edge {edge}"),
            counted_tuples,
            held_tuples,
            findings,
        );
    }
}

fn compare_state(
    state: GermanState,
    counted: &StateCount,
    held: &StateCount,
    findings: &mut Findings,
) {
    let name = format!("state {}", state.name());
    compare_count(&name, counted.tuples, held.tuples, findings);
    // A count that is off already explains a sum that is off: one finding.
    let tolerance = SUM_RELATIVE_TOLERANCE * held.average_sum_w.abs().max(1.0);
    if counted.tuples == held.tuples
        && (counted.average_sum_w - held.average_sum_w).abs() > tolerance
    {
        findings.add(Kind::Changed, || {
            format!(
                "{name}: average_sum_w is {} W, the held tuples add up to {} W",
                counted.average_sum_w, held.average_sum_w
            )
        });
    }
    for household in counted.households.difference(&held.households) {
        findings.add(Kind::Unexpected, || {
            format!("{name} counts household {household}, of which the cloud holds no tuple")
        });
    }
    for household in held.households.difference(&counted.households) {
        findings.add(Kind::Lost, || {
            format!("{name} does not count household {household}, whose tuples the cloud holds")
        });
    }
}

/// A count above the held tuples counts some twice; one below leaves some
/// out.
fn compare_count(name: &str, counted: u64, held: u64, findings: &mut Findings) {
    if counted > held {
        findings.add(Kind::Duplicated, || {
            format!("{name} counts {counted} tuples, the cloud holds {held}")
        });
    } else if counted < held {
        findings.add(Kind::Lost, || {
            format!("{name} counts {counted} tuples, the cloud holds {held}")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_cloud::{postal_code_for, state_of};

    fn tuple(edge: &str, node: &str, window: i64, average_w: f64) -> CloudTuple {
        let code = postal_code_for(node);
        CloudTuple {
            key: format!("tuple:{edge}:{node}:{window}"),
            edge_id: edge.to_owned(),
            node_id: node.to_owned(),
            window_start_ms: Some(window),
            average_w,
            samples: 3,
            postal_code: code,
            state: state_of(code).unwrap(),
            received_ms: 0,
        }
    }

    fn kinds(findings: &Findings) -> Vec<Kind> {
        findings.by_kind.keys().copied().collect()
    }

    fn checked(counted: &CloudTotals, cloud: &[CloudTuple]) -> Findings {
        let mut findings = Findings::default();
        check_totals(counted, cloud, &mut findings);
        findings
    }

    /// Goal: totals that add up pass, and each way of being off is named
    /// with its kind, once. Method: three tuples of two households, their
    /// true totals, then copies with one field off each.
    #[test]
    fn totals_that_add_up_pass_and_each_difference_is_named() {
        let cloud = [
            tuple("edge-1", "a", 0, 100.0),
            tuple("edge-1", "a", 5_000, 200.5),
            tuple("edge-1", "b", 0, 0.25),
        ];
        let truth = totals_of(&cloud);
        assert_eq!(truth.edges["edge-1"], 3);
        let states_tuples: u64 = truth.states.values().map(|state| state.tuples).sum();
        assert_eq!(states_tuples, 3);
        assert!(checked(&truth, &cloud).is_clean());

        let state_a = cloud[0].state;
        let mut twice = truth.clone();
        twice.states.get_mut(&state_a).unwrap().tuples += 1;
        assert_eq!(kinds(&checked(&twice, &cloud)), vec![Kind::Duplicated]);

        let mut forgotten = truth.clone();
        *forgotten.edges.get_mut("edge-1").unwrap() -= 1;
        assert_eq!(kinds(&checked(&forgotten, &cloud)), vec![Kind::Lost]);

        let mut drifted = truth.clone();
        drifted.states.get_mut(&state_a).unwrap().average_sum_w += 0.5;
        assert_eq!(kinds(&checked(&drifted, &cloud)), vec![Kind::Changed]);

        let mut rounded = truth.clone();
        rounded.states.get_mut(&state_a).unwrap().average_sum_w *= 1.0 + 1e-12;
        assert!(
            checked(&rounded, &cloud).is_clean(),
            "the last bits of a float sum are not a difference"
        );

        let mut stranger = truth.clone();
        stranger
            .states
            .get_mut(&state_a)
            .unwrap()
            .households
            .insert("z".to_owned());
        assert_eq!(kinds(&checked(&stranger, &cloud)), vec![Kind::Unexpected]);
    }

    /// Goal: a cache that lost its totals but kept (or got back) its tuples
    /// fails, and so do totals with no tuple behind them. Method: held
    /// tuples against empty totals, and the other way round.
    #[test]
    fn totals_and_tuples_missing_on_either_side_are_found() {
        let cloud = [tuple("edge-1", "a", 0, 100.0)];
        let none = checked(&CloudTotals::default(), &cloud);
        assert_eq!(kinds(&none), vec![Kind::Lost]);
        assert_eq!(
            none.by_kind[&Kind::Lost].0,
            3,
            "state count, household, edge"
        );
        let orphaned = checked(&totals_of(&cloud), &[]);
        assert_eq!(
            kinds(&orphaned),
            vec![Kind::Unexpected, Kind::Duplicated],
            "counts above nothing held, and a household with no tuple"
        );
    }
}
