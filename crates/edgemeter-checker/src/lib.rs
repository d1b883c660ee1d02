//! `edgemeter-checker` holds EdgeMeter's one promise in code: every window
//! with readings ends as exactly one tuple, at flag 2 with its postal code,
//! unchanged, in the edge's outbox and once in the cloud's cache.
//!
//! - [`oracle`]: the expected windows and averages, from the CSV alone.
//! - [`checker`]: compares what edges and cloud hold with the oracle and
//!   names every violation (lost, unexpected, duplicated, changed, ...).
//!
//! It is its own crate because two different runs judge by it: the
//! simulation (`sim-tests`, every seed) and the chaos run on the real
//! binaries (`edgemeter-chaos`). Neither owns the other's harness, and both
//! must apply the same rules. It does no IO: callers gather the evidence.

pub mod checker;
pub mod oracle;

pub use checker::{check, check_union, EdgeEvidence, Evidence, Findings, Kind, UnionEvidence};
pub use oracle::{oracle_windows, OracleWindow};
