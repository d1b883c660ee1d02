//! `sim-tests` runs EdgeMeter's production edge and cloud over a turmoil
//! simulation with seeded faults, and checks at the end of every seed that
//! each 5-second window with readings became exactly one tuple, delivered
//! once, unchanged, with its household's postal code. A seed runs 1 to 3
//! edges (each with its own households, topic, outbox and key), 1 to 3
//! cloud nodes on one shared cache, and a cache of 1 to 3 shards over the
//! store's buckets ([`faults::Topology`]); the invariant holds over the
//! union of the edges.
//!
//! # Layout
//! - Hosts (each the software of one simulated machine):
//!   [`broker`] (Kafka-like topics, one per edge, over `edgemeter-memlog`),
//!   [`households`] (replays the CSV in simulated time, each reading to its
//!   edge's topic), [`edge_host`] (the production `run_edge`, one host per
//!   edge), [`cloud_host`] (the production `Cloud`, one host per node),
//!   [`redis`] (the cache, which outlives cloud crashes and can be lost on
//!   its own, whole or one shard's buckets; it runs the production Lua
//!   scripts in embedded Lua 5.1 over [`keyspace`], a simulated Redis
//!   keyspace with Redis's commands, replies and errors),
//!   [`forger`] (unsealed requests in the keyed edge's name, on seeds that
//!   draw forgeries, and a day-old sealed request on seeds that draw
//!   replays).
//! - IO swapped in for the production traits: [`bus`] (`ReadingsBus`),
//!   [`link`] (`CloudLink`, with NNG REQ resend semantics), [`cache`]
//!   (`Cache`), [`clock`] (`WallClock`); [`net`] and [`codec`] frame bytes.
//! - The harness: [`faults`] (the schedule as data, drawn per seed by swarm
//!   testing, and the topology), [`timeline`] (schedule to actions),
//!   [`world`] (one seed: build, step, fault, heal, converge), [`checker`]
//!   (lost, unexpected, duplicated, changed, over every edge), [`dataset`] (input slice and oracle), [`trace`]
//!   (per-seed log stamped with simulated time), [`panics`], [`runner`]
//!   (one seed, or many on several cores), [`shrink`] (minimal failing
//!   schedules), [`coverage`] (the fault kinds, crash points and rare
//!   paths a sweep actually reached).
//!
//! Nothing inside a simulation reads the wall clock, starts a thread,
//! iterates a `HashMap` or draws unseeded randomness: the same scenario
//! gives the same trace, byte for byte.

pub mod bench;
pub mod broker;
pub mod bus;
pub mod cache;
pub mod clock;
pub mod cloud_host;
pub mod codec;
pub mod coverage;
pub mod dataset;
pub mod edge_host;
pub mod faults;
pub mod forger;
pub mod households;
pub mod keyspace;
pub mod link;
pub mod net;
pub mod panics;
pub mod redis;
pub mod runner;
pub mod shrink;
pub mod timeline;
pub mod trace;
pub mod world;

/// The checker is `edgemeter-checker`'s, shared with the chaos run on the
/// real binaries; re-exported so `sim_tests::checker` keeps naming it.
pub use edgemeter_checker::checker;

/// Households per seed by default: enough to interleave several
/// households' windows and partitions, few enough for hundreds of seeds.
pub const DEFAULT_HOUSEHOLDS: usize = 3;

/// Data replayed per seed by default. A few simulated minutes hold dozens of
/// windows per household and room for a swarm of faults.
pub const DEFAULT_DURATION: &str = "3m";

/// Simulated time per step. Each network hop takes at least one step, so
/// this is the simulated network's resolution; 10 ms keeps round trips
/// realistic while an hour simulates in seconds.
pub const DEFAULT_TICK_MS: u64 = 10;

/// The edge's idle flush the harness runs with: `None`, the production
/// value. (This harness found that the edge once flushed while its broker
/// was unreachable, closing windows whose readings were still coming.)
pub const DEFAULT_EDGE_IDLE_FLUSH_MS: Option<u64> = None;

/// `90s`, `3m`, `1h`, `250ms` or plain milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "ms"),
    };
    let value: i64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    value
        .checked_mul(factor)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("duration {text:?} out of range"))
}

/// The default per-seed shape over `data`, with faults on.
pub fn default_options(data: &dataset::DataSet) -> faults::DrawOptions {
    faults::DrawOptions {
        mutation: None,
        households: DEFAULT_HOUSEHOLDS,
        duration_ms: parse_duration_ms(DEFAULT_DURATION).expect("a valid default"),
        tick_ms: DEFAULT_TICK_MS,
        edge_idle_flush_ms: DEFAULT_EDGE_IDLE_FLUSH_MS,
        households_available: data.households.len(),
        data_span_ms: data.span_ms,
        faults: true,
        topology: None,
    }
}
