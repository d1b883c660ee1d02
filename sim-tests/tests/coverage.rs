//! Goal: issue 13's faults keep the invariant, each on its own, and the
//! coverage the run summary prints counts what happened; `run
//! --require-coverage` fails, naming them, when something was never
//! reached. Method: explicit one-fault schedules on the small shape, each
//! checked clean and for the rare path it must reach; then the binary on
//! one seed, which cannot reach everything.

mod common;

use common::{data, small_shape};
use sim_tests::faults::{Direction, DiskError, Fault, FaultEvent, Host, Scenario, Topology};
use sim_tests::runner::{run_one, Tracing};
use sim_tests::world::Summary;

fn run(faults: Vec<FaultEvent>, heal_delay_ms: u64) -> Summary {
    let mut shape = small_shape(None);
    shape.topology = Some(Topology::SINGLE);
    let scenario = Scenario {
        faults,
        heal_delay_ms,
        ..Scenario::calm(11, &shape)
    };
    let run = run_one(&scenario, data(), Tracing::Off);
    assert!(run.findings.is_clean(), "{:?}", run.findings);
    let summary = run.summary.expect("the run ends");
    assert_eq!(summary.acked, summary.windows, "every window acknowledged");
    assert_eq!(summary.cloud_tuples, summary.windows, "held once each");
    summary
}

fn reached(summary: &Summary, name: &str) -> bool {
    summary.coverage.contains(name)
}

fn at(at_ms: u64, fault: Fault) -> FaultEvent {
    FaultEvent { at_ms, fault }
}

/// A skew beyond the seal window: the cloud refuses every request sealed
/// meanwhile, the edge keeps its tuples and ships them once the clocks
/// agree. One within the window is refused nothing.
#[test]
fn a_clock_skew_beyond_the_seal_window_is_refused_and_loses_nothing() {
    let beyond = run(
        vec![at(
            10_000,
            Fault::ClockSkew {
                edge: 0,
                offset_ms: -300_000,
                duration_ms: 40_000,
            },
        )],
        0,
    );
    assert!(reached(&beyond, "fault:clock-skew-beyond-window"));
    assert!(reached(&beyond, "path:refused-outside-window"));
    let within = run(
        vec![at(
            10_000,
            Fault::ClockSkew {
                edge: 0,
                offset_ms: 90_000,
                duration_ms: 40_000,
            },
        )],
        0,
    );
    assert!(reached(&within, "fault:clock-skew-within-window"));
    assert!(!reached(&within, "path:refused-outside-window"));
}

/// A full disk and a failing one: SQLite refuses the edge's writes for a
/// while; the edge pauses, retries, and loses nothing.
#[test]
fn a_full_or_failing_disk_costs_time_only() {
    for failure in [DiskError::Full, DiskError::Io] {
        let summary = run(
            vec![at(
                15_000,
                Fault::DiskFailure {
                    edge: 0,
                    failure,
                    duration_ms: 20_000,
                },
            )],
            0,
        );
        assert!(reached(&summary, "path:disk-refused"), "{failure:?}");
        assert!(reached(&summary, "path:store-error"), "{failure:?}");
    }
}

/// A broker crash drops the produce requests it had not acknowledged; the
/// households send them again and every reading is in the log once.
#[test]
fn a_broker_crash_loses_nothing_acknowledged() {
    let summary = run(vec![at(20_000, Fault::BrokerCrash { down_ms: 3_000 })], 0);
    assert!(reached(&summary, "fault:broker-crash"));
    assert_eq!(summary.broker_crashes, 1);
}

/// An old reading published again arrives after its window closed: kept
/// as late, the stored average unchanged.
#[test]
fn a_stale_duplicate_is_late_and_changes_nothing() {
    let summary = run(
        vec![at(50_000, Fault::StaleDuplicate { age_ms: 30_000 })],
        0,
    );
    assert!(reached(&summary, "path:late"));
}

/// An uplink outage longer than every timeout, still on when the replay
/// ends: the final flush runs under it, the heal comes later, and the
/// seed converges within the same bound after it.
#[test]
fn an_outage_past_every_timeout_and_the_replay_end_converges() {
    let summary = run(
        vec![at(
            20_000,
            Fault::Partition {
                from: Host::Edge(0),
                to: Host::Cloud(0),
                direction: Direction::Both,
                duration_ms: 200_000,
            },
        )],
        160_000,
    );
    assert!(reached(&summary, "fault:long-partition-edge-cloud"));
    assert!(reached(&summary, "path:faults-at-end"));
    assert_eq!(summary.heal_at_ms, 220_000);
    assert!(
        summary.acked_at_heal < summary.windows as u64,
        "the windows after the outage's start waited for the heal"
    );
}

/// `--require-coverage` on one seed: it passes its checks but cannot
/// reach every kind, point and path, so the run fails and names them.
#[test]
fn require_coverage_fails_naming_what_was_never_reached() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_edgemeter-sim"))
        .args([
            "run",
            "--seeds",
            "0..1",
            "--workers",
            "1",
            "--require-coverage",
        ])
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 seeds, 0 failing"), "{stdout}");
    assert!(stdout.contains("coverage (seeds):"), "{stdout}");
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|line| line.starts_with("coverage required, never reached in 1 seeds:"))
        .unwrap_or_else(|| panic!("no unreached line in {stdout}"));
    assert!(line.contains("shape:big"), "{line}");
    assert!(line.contains("path:pending-bound"), "{line}");
    // Without the flag the same run passes.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_edgemeter-sim"))
        .args(["run", "--seeds", "0..1", "--workers", "1"])
        .output()
        .expect("the binary runs")
        .status;
    assert!(status.success());
}
