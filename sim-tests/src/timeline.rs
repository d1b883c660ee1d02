//! Turns a scenario's fault events into a timeline of primitive actions
//! (block a direction, unblock it, crash a host, arm a crash point, lose the
//! cache or one shard of it, arm a cloud node's crash with requests in
//! flight, raise or restore latency, hold or release a link), sorted by time
//! with a stable order for ties. Pure data: no simulation here, so it is easy to test and to read.

use crate::faults::{crash_point_named, Direction, DiskError, Fault, FaultEvent, Host, Topology};
use edgemeter_env::CrashPoint;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Traffic `from` -> `to` is dropped (counted: overlapping partitions
    /// lift only when the last one ends).
    Block {
        from: Host,
        to: Host,
    },
    Unblock {
        from: Host,
        to: Host,
    },
    Crash {
        host: Host,
        down_ms: u64,
    },
    Arm {
        point: CrashPoint,
        down_ms: u64,
    },
    LoseCache {
        down_ms: u64,
    },
    SpikeStart {
        max_ms: u64,
    },
    SpikeEnd {
        max_ms: u64,
    },
    /// Messages between `host` and `peer` are held, both ways (counted, as
    /// blocks are), and delivered when the last hold on the pair ends.
    Hold {
        host: Host,
        peer: Host,
    },
    Release {
        host: Host,
        peer: Host,
    },
    PowerLoss {
        edge: u8,
        down_ms: u64,
        kept_percent: u8,
    },
    /// Cloud node `node` is crashed at the first step it has data
    /// requests in flight.
    ArmInFlight {
        node: u8,
        down_ms: u64,
    },
    LoseShard {
        shard: u8,
    },
    /// Edge `edge`'s wall clock reads `offset_ms` off (the latest skew
    /// started wins while several overlap) until the matching end.
    SkewStart {
        edge: u8,
        offset_ms: i64,
    },
    SkewEnd {
        edge: u8,
        offset_ms: i64,
    },
    /// Edge `edge`'s disk fails as `failure` says (counted: it works again
    /// when the last failure on it ends; an I/O error wins over full).
    DiskFail {
        edge: u8,
        failure: DiskError,
    },
    DiskRepair {
        edge: u8,
        failure: DiskError,
    },
    /// The households host sends a stale duplicate now (scheduled there
    /// from the start: this action only marks the time).
    StaleDuplicate {
        age_ms: u64,
    },
}

/// The actions of `faults`, each with its time, in the order to apply them.
/// Actions at or after `heal_at_ms` are dropped: the heal ends everything.
/// `topology` says which hosts a broker outage cuts off; actions naming a
/// host or shard outside it are dropped ([`fits`]).
pub fn timeline(faults: &[FaultEvent], heal_at_ms: u64, topology: &Topology) -> Vec<(u64, Action)> {
    timeline_of_kinds(faults, heal_at_ms, topology)
        .into_iter()
        .map(|(at, action, _)| (at, action))
        .collect()
}

/// [`timeline`], each action with the kind of the fault it comes from
/// ([`Fault::kind_name`]), so the harness can count the kinds a seed
/// actually applied.
pub fn timeline_of_kinds(
    faults: &[FaultEvent],
    heal_at_ms: u64,
    topology: &Topology,
) -> Vec<(u64, Action, &'static str)> {
    let mut actions: Vec<(u64, usize, Action, &'static str)> = faults
        .iter()
        .flat_map(|event| {
            let kind = event.fault.kind_name();
            actions_of(event, topology)
                .into_iter()
                .map(move |(at, action)| (at, action, kind))
        })
        .filter(|(_, action, _)| fits(action, topology))
        .filter(|(at, _, _)| *at < heal_at_ms)
        .enumerate()
        .map(|(order, (at, action, kind))| (at, order, action, kind))
        .collect();
    actions.sort_by_key(|(at, order, _, _)| (*at, *order));
    actions
        .into_iter()
        .map(|(at, _, action, kind)| (at, action, kind))
        .collect()
}

/// Whether `action` names only hosts (and shards) `topology` has. A
/// schedule from a file, or one the shrinker narrowed, may name an edge,
/// node or shard the seed does not run: such actions are left out.
pub fn fits(action: &Action, topology: &Topology) -> bool {
    let host_fits = |host: &Host| match host {
        Host::Edge(index) => usize::from(*index) < topology.edges,
        Host::Cloud(index) => usize::from(*index) < topology.nodes,
        Host::Broker | Host::Households | Host::Redis => true,
    };
    match action {
        Action::Block { from, to } | Action::Unblock { from, to } => {
            host_fits(from) && host_fits(to)
        }
        Action::Hold { host, peer } | Action::Release { host, peer } => {
            host_fits(host) && host_fits(peer)
        }
        Action::Crash { host, .. } => host_fits(host),
        Action::PowerLoss { edge, .. } => host_fits(&Host::Edge(*edge)),
        Action::ArmInFlight { node, .. } => host_fits(&Host::Cloud(*node)),
        Action::LoseShard { shard } => usize::from(*shard) < topology.shards,
        Action::SkewStart { edge, .. }
        | Action::SkewEnd { edge, .. }
        | Action::DiskFail { edge, .. }
        | Action::DiskRepair { edge, .. } => host_fits(&Host::Edge(*edge)),
        Action::Arm { .. }
        | Action::StaleDuplicate { .. }
        | Action::LoseCache { .. }
        | Action::SpikeStart { .. }
        | Action::SpikeEnd { .. } => true,
    }
}

/// Blocks `from` -> `to` at `at` for `duration_ms`.
fn block(from: Host, to: Host, at: u64, duration_ms: u64) -> [(u64, Action); 2] {
    [
        (at, Action::Block { from, to }),
        (at.saturating_add(duration_ms), Action::Unblock { from, to }),
    ]
}

/// One fault event as primitive actions, unsorted.
fn actions_of(event: &FaultEvent, topology: &Topology) -> Vec<(u64, Action)> {
    let at = event.at_ms;
    match &event.fault {
        Fault::Partition {
            from,
            to,
            direction,
            duration_ms,
        } => {
            let mut actions = block(*from, *to, at, *duration_ms).to_vec();
            if *direction == Direction::Both {
                actions.extend(block(*to, *from, at, *duration_ms));
            }
            actions
        }
        Fault::BrokerOutage { duration_ms } => topology
            .edge_hosts()
            .chain([Host::Households])
            .flat_map(|other| {
                let mut actions = block(Host::Broker, other, at, *duration_ms).to_vec();
                actions.extend(block(other, Host::Broker, at, *duration_ms));
                actions
            })
            .collect(),
        Fault::Crash { host, down_ms } => vec![(
            at,
            Action::Crash {
                host: *host,
                down_ms: *down_ms,
            },
        )],
        Fault::CrashAtPoint { point, down_ms } => crash_point_named(point)
            .map(|point| {
                (
                    at,
                    Action::Arm {
                        point,
                        down_ms: *down_ms,
                    },
                )
            })
            .into_iter()
            .collect(),
        Fault::CacheLoss { down_ms } => vec![(at, Action::LoseCache { down_ms: *down_ms })],
        Fault::PowerLoss {
            down_ms,
            kept_percent,
            edge,
        } => vec![(
            at,
            Action::PowerLoss {
                edge: *edge,
                down_ms: *down_ms,
                kept_percent: *kept_percent,
            },
        )],
        Fault::CrashNodeInFlight { node, down_ms } => vec![(
            at,
            Action::ArmInFlight {
                node: *node,
                down_ms: *down_ms,
            },
        )],
        Fault::LoseShard { shard } => vec![(at, Action::LoseShard { shard: *shard })],
        Fault::ClockSkew {
            edge,
            offset_ms,
            duration_ms,
        } => vec![
            (
                at,
                Action::SkewStart {
                    edge: *edge,
                    offset_ms: *offset_ms,
                },
            ),
            (
                at.saturating_add(*duration_ms),
                Action::SkewEnd {
                    edge: *edge,
                    offset_ms: *offset_ms,
                },
            ),
        ],
        Fault::DiskFailure {
            edge,
            failure,
            duration_ms,
        } => vec![
            (
                at,
                Action::DiskFail {
                    edge: *edge,
                    failure: *failure,
                },
            ),
            (
                at.saturating_add(*duration_ms),
                Action::DiskRepair {
                    edge: *edge,
                    failure: *failure,
                },
            ),
        ],
        Fault::StaleDuplicate { age_ms } => {
            vec![(at, Action::StaleDuplicate { age_ms: *age_ms })]
        }
        Fault::BrokerCrash { down_ms } => vec![(
            at,
            Action::Crash {
                host: Host::Broker,
                down_ms: *down_ms,
            },
        )],
        Fault::LatencySpike {
            max_ms,
            duration_ms,
        } => vec![
            (at, Action::SpikeStart { max_ms: *max_ms }),
            (
                at.saturating_add(*duration_ms),
                Action::SpikeEnd { max_ms: *max_ms },
            ),
        ],
        Fault::Stall {
            host,
            peer,
            duration_ms,
        } => vec![
            (
                at,
                Action::Hold {
                    host: *host,
                    peer: *peer,
                },
            ),
            (
                at.saturating_add(*duration_ms),
                Action::Release {
                    host: *host,
                    peer: *peer,
                },
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_way_partition_blocks_and_lifts_both_directions_and_heal_cuts_the_rest() {
        let faults = vec![
            FaultEvent {
                at_ms: 100,
                fault: Fault::Partition {
                    from: Host::Edge(0),
                    to: Host::Cloud(0),
                    direction: Direction::Both,
                    duration_ms: 50,
                },
            },
            FaultEvent {
                at_ms: 10,
                fault: Fault::CacheLoss { down_ms: 5 },
            },
            FaultEvent {
                at_ms: 120,
                fault: Fault::LatencySpike {
                    max_ms: 500,
                    duration_ms: 1_000,
                },
            },
        ];
        let actions = timeline(&faults, 1_000, &Topology::SINGLE);
        assert_eq!(actions[0], (10, Action::LoseCache { down_ms: 5 }));
        assert_eq!(
            actions[1],
            (
                100,
                Action::Block {
                    from: Host::Edge(0),
                    to: Host::Cloud(0)
                }
            )
        );
        assert_eq!(
            actions[2],
            (
                100,
                Action::Block {
                    from: Host::Cloud(0),
                    to: Host::Edge(0)
                }
            )
        );
        assert_eq!(actions[3], (120, Action::SpikeStart { max_ms: 500 }));
        assert_eq!(
            actions[4],
            (
                150,
                Action::Unblock {
                    from: Host::Edge(0),
                    to: Host::Cloud(0)
                }
            )
        );
        assert_eq!(actions.len(), 6, "the spike's end falls after the heal");
    }

    #[test]
    fn a_stall_holds_then_releases_its_pair() {
        let faults = vec![FaultEvent {
            at_ms: 40,
            fault: Fault::Stall {
                host: Host::Households,
                peer: Host::Broker,
                duration_ms: 20,
            },
        }];
        let held = Action::Hold {
            host: Host::Households,
            peer: Host::Broker,
        };
        let released = Action::Release {
            host: Host::Households,
            peer: Host::Broker,
        };
        assert_eq!(
            timeline(&faults, 1_000, &Topology::SINGLE),
            vec![(40, held.clone()), (60, released)]
        );
        assert_eq!(
            timeline(&faults, 50, &Topology::SINGLE),
            vec![(40, held)],
            "the heal releases it"
        );
    }

    /// Goal: a broker outage cuts the broker off from every edge of the
    /// topology and from the households, and from nothing else.
    #[test]
    fn a_broker_outage_cuts_off_every_edge() {
        let faults = vec![FaultEvent {
            at_ms: 10,
            fault: Fault::BrokerOutage { duration_ms: 5 },
        }];
        let topology = Topology {
            edges: 3,
            nodes: 2,
            shards: 1,
        };
        let mut cut: Vec<Host> = timeline(&faults, 1_000, &topology)
            .into_iter()
            .filter_map(|(at, action)| match action {
                Action::Block { from, to } if at == 10 && to == Host::Broker => Some(from),
                _ => None,
            })
            .collect();
        cut.sort();
        assert_eq!(
            cut,
            [
                Host::Households,
                Host::Edge(0),
                Host::Edge(1),
                Host::Edge(2)
            ]
        );
        assert_eq!(timeline(&faults, 1_000, &topology).len(), 16);
    }

    /// Goal: a schedule that names an edge, node or shard the topology does
    /// not have runs without them instead of failing the harness.
    #[test]
    fn actions_outside_the_topology_are_dropped() {
        let at = |at_ms, fault| FaultEvent { at_ms, fault };
        let faults = vec![
            at(
                1,
                Fault::Crash {
                    host: Host::Edge(2),
                    down_ms: 5,
                },
            ),
            at(
                2,
                Fault::CrashNodeInFlight {
                    node: 1,
                    down_ms: 5,
                },
            ),
            at(3, Fault::LoseShard { shard: 1 }),
            at(
                4,
                Fault::Crash {
                    host: Host::Cloud(0),
                    down_ms: 5,
                },
            ),
        ];
        assert_eq!(
            timeline(&faults, 1_000, &Topology::SINGLE),
            vec![(
                4,
                Action::Crash {
                    host: Host::Cloud(0),
                    down_ms: 5
                }
            )]
        );
        let wide = Topology {
            edges: 3,
            nodes: 2,
            shards: 2,
        };
        assert_eq!(timeline(&faults, 1_000, &wide).len(), 4);
    }
}
