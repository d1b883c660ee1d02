//! `edgemeter` is the deployable system: the real implementations of the
//! edge's and the cloud's IO traits, and the subcommands that wire them.
//!
//! # Layout
//! The adapters are crates of their own: `edgemeter-kafka` (the edge's
//! `ReadingsBus` and the households' producer), `edgemeter-nng` (the
//! edge's `CloudLink` and the cloud's servers), `edgemeter-redis` (the
//! cloud's `Cache`).
//!
//! - [`households`]: the replayer that paces the data set's readings.
//! - [`mosaik_link`]: the same households as a mosaik simulator (stepped by
//!   a co-simulation instead of the clock).
//! - [`speed`]: the replay's pacing factor.
//! - [`metrics`]: `GET /metrics` for both, in the Prometheus text format.
//! - [`status_socket`]: the running edge's live state for `edgemeter status`,
//!   on a Unix socket next to its database.
//! - [`edge_lock`]: one edge per database, an exclusive lock file beside it.
//! - [`service_manager`]: readiness, stopping and watchdog pings to systemd
//!   (nothing without `NOTIFY_SOCKET`).
//! - [`log_output`]: the log to the journal under systemd, else to stderr.
//! - [`progress`]: long runs' progress: a bar on a terminal, a line every
//!   few seconds in a log.
//! - [`cli`], [`commands`]: the command line and one module per subcommand.
//! - [`settings`]: the config file and the environment under the command
//!   line, merged by figment; `config check`.
//! - [`key_reload`]: SIGHUP reloads the cloud's keys file and the edge's key file.
//! - [`command_error`], [`shutdown`], [`data_dir`]: what the subcommands share.
//!
//! This crate holds IO and wiring only. Every decision about windows,
//! batches, acknowledgements and postal codes lives in `edgemeter-edge` and
//! `edgemeter-cloud`, which the simulation runs unchanged.

pub mod cli;
pub mod command_error;
pub mod commands;
pub mod dashboard_server;
pub mod data_dir;
pub mod edge_lock;
pub mod households;
pub mod key_reload;
pub mod keys;
pub mod log_output;
pub mod metrics;
pub mod mosaik_link;
pub mod progress;
pub mod service_manager;
pub mod settings;
pub mod shutdown;
pub mod speed;
pub mod status_socket;
