//! The `edge` host: the production `run_edge` with the simulated bus, link
//! and clock, and the real SQLite outbox in a per-seed directory that the
//! host's crash leaves in place, as a process crash leaves the disk.
//!
//! Each start (the first, and every restart after a crash) opens the outbox
//! again and runs the edge from what it finds there, which is exactly the
//! recovery path the production binary takes.

use crate::bus::{SimBus, EDGE_GROUP};
use crate::clock::SimClock;
use crate::link::{LinkStats, SimLink};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeMonitor};
use edgemeter_env::PlantedBugs;
use edgemeter_store::SqliteOutbox;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::info;

/// Everything the edge host needs at each start.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    pub config: EdgeConfig,
    pub db_path: PathBuf,
    pub planted: PlantedBugs,
    pub epoch_ms: i64,
    pub monitor: Arc<EdgeMonitor>,
    pub link_stats: Arc<LinkStats>,
}

/// The edge host's software.
pub async fn run_edge_host(setup: EdgeSetup) -> turmoil::Result {
    let outbox = SqliteOutbox::open_with(&setup.db_path, setup.planted)?;
    let link = Arc::new(SimLink::start(setup.link_stats.clone()));
    info!("edge process started on its outbox");
    run_edge(
        setup.config.clone(),
        SimBus::new(EDGE_GROUP),
        link,
        outbox,
        SimClock::new(setup.epoch_ms),
        setup.monitor.clone(),
        std::future::pending(),
    )
    .await?;
    Ok(())
}
