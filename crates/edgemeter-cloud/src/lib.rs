//! `edgemeter-cloud` is the cloud's logic, written against the [`Cache`]
//! trait so the same code serves over NNG and Redis in deployment and over
//! turmoil in the simulation.
//!
//! # Layout
//! - [`service`]: [`Cloud`], which turns request bytes into reply bytes:
//!   heartbeats, batches and the original's requests.
//! - [`cache`]: the cache trait and the stored tuple; the store's buckets'
//!   epochs and each edge id's instance lease, which every cloud node reads
//!   from the shared store so that they agree.
//! - [`memory_cache`]: an in-memory cache for `demo` and tests, kept per
//!   bucket so that tests can lose some buckets as a shard restart does.
//! - [`postal`]: postal codes and states, fixed per household.
//! - [`heartbeats`]: which edges are alive, and the backlog each reports (no IO).
//!
//! This crate never depends on nng or redis, never spawns threads, and takes
//! its timers from tokio time.

pub mod cache;
pub mod heartbeats;
pub mod memory_cache;
pub mod postal;
pub mod service;

pub use cache::*;
pub use heartbeats::EdgeView;
pub use memory_cache::MemoryCache;
pub use postal::{postal_code_for, stable_hash, state_of, GermanState};
pub use service::{
    tuple_key, Cloud, CloudAuth, CloudConfig, CloudCounters, EdgeKeys, RefusalReason,
    LEGACY_EDGE_ID,
};
