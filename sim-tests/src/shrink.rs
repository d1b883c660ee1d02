//! Shrinking: from a failing scenario to a minimal one that still fails the
//! same way, written as a schedule file that `replay --schedule` runs.
//!
//! Two tools share the notion of "fails the same way" (at least one kind of
//! violation in common with the original):
//! - [`fault_events`], a proptest strategy over explicit fault schedules:
//!   proptest generates schedules, and when one fails, shrinks it by its own
//!   value trees (dropping events, shortening durations, moving times);
//! - [`shrink_greedy`], for a schedule drawn by a seed: drops one event at a
//!   time, then halves durations, keeping each change that still fails;
//!   before that it narrows the topology (fewer edges, nodes, shards).

use crate::checker::Kind;
use crate::dataset::DataSet;
use crate::faults::{Direction, Fault, FaultEvent, Host, Network, Scenario, Topology};
use crate::runner::{run_one, Tracing};
use edgemeter_env::CrashPoint;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The most simulation runs one greedy shrink may spend.
pub const SHRINK_RUNS_MAX: usize = 200;

/// The most events a generated schedule has.
pub const GENERATED_EVENTS_MAX: usize = 12;

fn failing_kinds(scenario: &Scenario, data: &DataSet) -> BTreeSet<Kind> {
    run_one(scenario, data, Tracing::Off)
        .findings
        .by_kind
        .keys()
        .copied()
        .collect()
}

/// The smallest variant of `scenario` found that still fails with a kind of
/// violation the original had; `None` if the original passes.
pub fn shrink_greedy(
    scenario: &Scenario,
    data: &DataSet,
    mut progress: impl FnMut(&Scenario),
) -> Option<Scenario> {
    let original = failing_kinds(scenario, data);
    if original.is_empty() {
        return None;
    }
    let mut runs = 1;
    let mut best = scenario.clone();
    let still_fails = |candidate: &Scenario, runs: &mut usize| {
        *runs += 1;
        !failing_kinds(candidate, data).is_disjoint(&original)
    };
    let calm = Network {
        fail_rate_ppm: 0,
        repair_rate_ppm: 0,
        ..best.network.clone()
    };
    let candidate = Scenario {
        network: calm,
        ..best.clone()
    };
    if candidate != best && still_fails(&candidate, &mut runs) {
        best = candidate;
    }
    // Fewer edges, nodes and shards, one at a time (the faults naming a
    // host that goes are left out when the schedule runs): a failure that
    // needs no second edge reads more easily without one.
    for narrow in [narrow_edges, narrow_nodes, narrow_shards] {
        while runs < SHRINK_RUNS_MAX {
            let Some(topology) = narrow(best.topology) else {
                break;
            };
            let candidate = Scenario {
                topology,
                ..best.clone()
            };
            if !still_fails(&candidate, &mut runs) {
                break;
            }
            best = candidate;
            progress(&best);
        }
    }
    let mut changed = true;
    while changed && runs < SHRINK_RUNS_MAX {
        changed = false;
        for index in (0..best.faults.len()).rev() {
            let mut candidate = best.clone();
            candidate.faults.remove(index);
            if runs < SHRINK_RUNS_MAX && still_fails(&candidate, &mut runs) {
                best = candidate;
                progress(&best);
                changed = true;
            }
        }
        for index in 0..best.faults.len() {
            let mut candidate = best.clone();
            if !halve(&mut candidate.faults[index].fault) {
                continue;
            }
            if runs < SHRINK_RUNS_MAX && still_fails(&candidate, &mut runs) {
                best = candidate;
                progress(&best);
                changed = true;
            }
        }
    }
    Some(best)
}

fn narrow_edges(topology: Topology) -> Option<Topology> {
    (topology.edges > 1).then(|| Topology {
        edges: topology.edges - 1,
        ..topology
    })
}

fn narrow_nodes(topology: Topology) -> Option<Topology> {
    (topology.nodes > 1).then(|| Topology {
        nodes: topology.nodes - 1,
        ..topology
    })
}

fn narrow_shards(topology: Topology) -> Option<Topology> {
    (topology.shards > 1).then(|| Topology {
        shards: topology.shards - 1,
        ..topology
    })
}

/// Halves a fault's duration; false when it is already short.
fn halve(fault: &mut Fault) -> bool {
    let length = match fault {
        Fault::Partition { duration_ms, .. }
        | Fault::BrokerOutage { duration_ms }
        | Fault::LatencySpike { duration_ms, .. }
        | Fault::Stall { duration_ms, .. }
        | Fault::ClockSkew { duration_ms, .. }
        | Fault::DiskFailure { duration_ms, .. } => duration_ms,
        Fault::Crash { down_ms, .. }
        | Fault::BrokerCrash { down_ms }
        | Fault::CrashAtPoint { down_ms, .. }
        | Fault::CacheLoss { down_ms }
        | Fault::CrashNodeInFlight { down_ms, .. }
        | Fault::PowerLoss { down_ms, .. } => down_ms,
        Fault::LoseShard { .. } | Fault::StaleDuplicate { .. } => return false,
    };
    if *length < 200 {
        return false;
    }
    *length /= 2;
    true
}

fn host_pair() -> impl Strategy<Value = (Host, Host)> {
    prop_oneof![
        Just((Host::Edge(0), Host::Cloud(0))),
        Just((Host::Cloud(0), Host::Edge(0))),
        Just((Host::Edge(0), Host::Broker)),
        Just((Host::Broker, Host::Edge(0))),
        Just((Host::Cloud(0), Host::Redis)),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    let direction = prop_oneof![Just(Direction::Both), Just(Direction::Oneway)];
    let point =
        (0..CrashPoint::ALL.len()).prop_map(|index| CrashPoint::ALL[index].name().to_owned());
    prop_oneof![
        (host_pair(), direction, 100u64..40_000).prop_map(
            |((from, to), direction, duration_ms)| {
                Fault::Partition {
                    from,
                    to,
                    direction,
                    duration_ms,
                }
            }
        ),
        (
            prop_oneof![Just(Host::Edge(0)), Just(Host::Cloud(0))],
            10u64..8_000
        )
            .prop_map(|(host, down_ms)| Fault::Crash { host, down_ms }),
        (point, 10u64..5_000).prop_map(|(point, down_ms)| Fault::CrashAtPoint { point, down_ms }),
        (0u64..3_000).prop_map(|down_ms| Fault::CacheLoss { down_ms }),
        (100u64..30_000).prop_map(|duration_ms| Fault::BrokerOutage { duration_ms }),
        (10u64..8_000, 0u8..=100).prop_map(|(down_ms, kept_percent)| Fault::PowerLoss {
            down_ms,
            kept_percent,
            edge: 0,
        }),
    ]
}

/// Explicit fault schedules within `duration_ms`, sorted by time. Proptest
/// shrinks them by dropping events and shrinking each field toward its
/// range's low end (earlier, shorter).
pub fn fault_events(duration_ms: u64) -> impl Strategy<Value = Vec<FaultEvent>> {
    let event =
        (0..duration_ms.max(1), fault()).prop_map(|(at_ms, fault)| FaultEvent { at_ms, fault });
    proptest::collection::vec(event, 0..=GENERATED_EVENTS_MAX).prop_map(|mut events| {
        events.sort_by_key(|event| event.at_ms);
        events
    })
}
