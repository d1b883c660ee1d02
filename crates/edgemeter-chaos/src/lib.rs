//! `edgemeter-chaos` owns the fault injection and the end check of
//! `ci/chaos.sh`, the chaos run on real processes (tansu, redis-server and
//! the `edgemeter` binary's households, edge and cloud).
//!
//! # Layout
//! - [`link_state`]: what the link between edge and cloud is doing now
//!   (healthy, cut, stalled, reset), shared by every connection of a proxy.
//! - [`control`]: the proxy's line commands (`cut`, `stall MS`, `reset`,
//!   `heal`), parsed without IO.
//! - [`proxy`]: the bounded tokio TCP proxy that forwards one port and
//!   obeys the control socket.
//! - [`evidence`]: reads the real edge database and the real Redis (SCAN,
//!   never KEYS; the tuples and the totals) into the checker's evidence.
//! - [`totals`]: compares the cloud's per-state and per-edge totals with
//!   the tuples it holds, without IO.
//! - [`report`]: runs `edgemeter_checker::check` on it, with no cache loss
//!   excused, adds the totals' findings and renders the one-line JSON
//!   verdict.
//!
//! It never changes the edge's database or Redis: the checker only reads.

pub mod control;
pub mod evidence;
pub mod link_state;
pub mod proxy;
pub mod report;
pub mod totals;
