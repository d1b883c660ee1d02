//! `edgemeter-edge` is the edge's logic, written against the IO traits in
//! [`ports`] so that the same code runs over rdkafka, NNG and SQLite in
//! deployment and over turmoil in the simulation.
//!
//! # Layout
//! - [`ports`]: the IO boundary: readings bus, cloud link, outbox store.
//! - [`windows`]: 5-second event-time windows per household (no IO).
//! - [`heartbeat`]: the connected/disconnected state machine, one per
//!   cloud node, the edge's state over them, and which heartbeat version
//!   to send (no IO).
//! - [`intake`]: whether consumed records become readings (no IO).
//! - [`uplink`]: in-flight batches, resends, the outbox cursor, backoff (no IO).
//! - [`refill`]: the cloud store's epochs, one per store bucket, and the
//!   scan that ships again the tuples of the buckets a cloud lost (no IO).
//! - [`edge`]: the driver that wires them to the ports: [`run_edge`].
//! - [`config`], [`monitor`]: settings and shared counters.
//!
//! This crate never reads the wall clock except through
//! [`edgemeter_env::WallClock`], never spawns threads, and takes all timers
//! from tokio time, which turmoil simulates.

pub mod config;
pub mod edge;
pub mod heartbeat;
pub mod intake;
pub mod monitor;
pub mod ports;
pub mod refill;
pub mod uplink;
pub mod windows;

pub use config::{EdgeConfig, DEFAULT_IDLE_FLUSH};
pub use edge::{run_edge, EdgeError};
pub use monitor::{CloudNodeState, EdgeCounters, EdgeMonitor, OutboxGauges, RoundTripsSnapshot};
pub use ports::*;
