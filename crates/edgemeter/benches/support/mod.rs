//! What the benches share: the made-up backlog every drain bench ships,
//! and filling an outbox with it (not timed).

#![allow(dead_code)]

use edgemeter_edge::{NewTuple, Outbox};
use edgemeter_store::SqliteOutbox;
use std::path::Path;

/// A count from the environment variable `name`, or `default`; at least 1.
pub fn env_count(name: &str, default: usize) -> usize {
    let count = std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    assert!(count > 0, "{name} must be at least 1");
    count
}

/// Households a backlog is spread over: the shipped data set's 50.
pub const HOUSEHOLDS: usize = 50;

/// Tuples per SQLite transaction while filling an outbox.
const FILL_CHUNK_TUPLES: usize = 10_000;

/// The first window of a backlog: 2019-12-24, the data set's day.
const FIRST_WINDOW_MS: i64 = 1_577_145_600_000;

/// Household ids as the data set has them: 64 hex digits. `site` keeps
/// the households of different edges apart.
pub fn household(site: usize, index: usize) -> String {
    let seed = ((site * HOUSEHOLDS + index) as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{seed:016x}").repeat(4)
}

/// The tuple at `index` of site `site`'s backlog: households round-robin,
/// each with consecutive 5-second windows.
pub fn backlog_tuple(site: usize, index: usize) -> NewTuple {
    NewTuple {
        node_id: household(site, index % HOUSEHOLDS),
        window_start_ms: FIRST_WINDOW_MS + (index / HOUSEHOLDS) as i64 * 5_000,
        average_w: 100.0 + (index % 1_000) as f64 * 0.5,
        samples: 3,
    }
}

/// Fills a fresh outbox with `count` queued tuples of site `site`.
pub fn fill_outbox(db: &Path, site: usize, count: usize) {
    let mut outbox = SqliteOutbox::open(db).expect("open the outbox");
    let mut next = 0usize;
    while next < count {
        let chunk: Vec<NewTuple> = (next..count.min(next + FILL_CHUNK_TUPLES))
            .map(|index| backlog_tuple(site, index))
            .collect();
        next += chunk.len();
        outbox
            .store_closed(&chunk, &[], 0)
            .expect("fill the outbox");
    }
}
