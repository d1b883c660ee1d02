//! What syncing the store of closed windows costs: stores per second and
//! tuples per second of `store_closed` at three batch sizes (one window,
//! a hundred, and the edge's `store_pending_max` of 4,096), each store
//! followed by marking its tuples sent and acknowledged as the edge does,
//! on a database in the system's temporary directory (a real disk, unlike
//! the simulation's tmpfs).
//!
//! `cargo bench -p edgemeter-store --bench store_sync` measures the
//! outbox as it runs (FULL for stores, NORMAL for flags); with
//! `--features planted-bugs` it also measures it with the planted
//! `commit-before-sync` (stores at NORMAL, the behaviour before issue 12)
//! for comparison. Figures depend on the disk: print, never assert.

use edgemeter_edge::{NewTuple, Outbox};
use edgemeter_env::{Bug, PlantedBugs};
use edgemeter_store::{OpenOptions, SqliteOutbox};
use edgemeter_wire::{Ack, PostalCode, TupleAck, TupleOutcome};
use std::time::Instant;

/// (windows per store, stores per run): each run writes about the same.
const SHAPES: [(usize, usize); 3] = [(1, 300), (100, 200), (4_096, 20)];

/// Runs per shape, to show the spread.
const RUNS: usize = 3;

fn run(planted: PlantedBugs, windows: usize, stores: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = OpenOptions { vfs: None, planted };
    let mut outbox = SqliteOutbox::open_in(&dir.path().join("edge.db"), options).expect("opens");
    let code = PostalCode::parse("01067").expect("a postal code");
    let started = Instant::now();
    for store in 0..stores {
        let tuples: Vec<NewTuple> = (0..windows)
            .map(|index| NewTuple {
                node_id: format!("household-{index:04}"),
                window_start_ms: store as i64 * 5_000,
                average_w: 1.0,
                samples: 2,
            })
            .collect();
        outbox.store_closed(&tuples, &[], 0).expect("stores");
        let batch = outbox.unacked_after(0, windows, false).expect("reads");
        let ids: Vec<i64> = batch.iter().map(|tuple| tuple.tuple_id).collect();
        outbox.mark_sent(&ids, 1).expect("marks sent");
        let acks: Vec<TupleAck> = ids
            .iter()
            .map(|id| TupleAck {
                ack: Ack {
                    tuple_id: *id,
                    postal_code: code,
                },
                outcome: TupleOutcome::Stored,
            })
            .collect();
        outbox
            .mark_acked(&acks, &vec![Some(1); acks.len()], 2)
            .expect("marks acked");
    }
    let seconds = started.elapsed().as_secs_f64();
    (stores as f64 / seconds, (stores * windows) as f64 / seconds)
}

fn main() {
    let mut variants = vec![("synced store (FULL)", PlantedBugs::NONE)];
    if cfg!(feature = "planted-bugs") {
        let lazy = PlantedBugs::NONE.with(Bug::CommitBeforeSync);
        variants.push(("lazy store (NORMAL, planted)", lazy));
    }
    for (windows, stores) in SHAPES {
        for (name, planted) in &variants {
            let figures: Vec<String> = (0..RUNS)
                .map(|_| {
                    let (stores_per_s, tuples_per_s) = run(*planted, windows, stores);
                    format!("{stores_per_s:.0} stores/s {tuples_per_s:.0} tuples/s")
                })
                .collect();
            println!(
                "{windows:>5} windows per store, {name:<30} {}",
                figures.join(" | ")
            );
        }
    }
}
