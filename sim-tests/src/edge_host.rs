//! An edge host (`edge`, `edge-2`, ...): the production `run_edge` with the
//! simulated bus (on the edge's own topic and consumer group), link (to
//! every cloud node) and clock, and the real SQLite outbox in a per-edge
//! directory on its own simulated disk (`edgemeter-simdisk`): a process
//! crash leaves every write in place, as the page cache does; a power loss
//! keeps only what SQLite synced (and a seeded share of the rest).
//!
//! Each start (the first, and every restart after a crash or power loss)
//! opens the outbox again, checks it with `PRAGMA integrity_check` (any
//! answer but `ok` is recorded for the checker as `corrupt`), and runs the
//! edge from what it finds there, which is exactly the recovery path the
//! production binary takes.

use crate::bus::SimBus;
use crate::clock::SimClock;
use crate::link::{LinkStats, SimLink};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeMonitor};
use edgemeter_env::PlantedBugs;
use edgemeter_store::{OpenOptions, SqliteOutbox};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// What the edge's starts found wrong with the database, for the checker.
pub type CorruptionLog = Arc<Mutex<Vec<String>>>;

/// Everything the edge host needs at each start.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    pub config: EdgeConfig,
    pub db_path: PathBuf,
    /// The broker topic this edge consumes, and its consumer group.
    pub topic: u32,
    pub group: String,
    /// The cloud nodes' host names, in `--cloud` order.
    pub nodes: Vec<String>,
    pub planted: PlantedBugs,
    pub epoch_ms: i64,
    pub monitor: Arc<EdgeMonitor>,
    pub link_stats: Arc<LinkStats>,
    pub corruption: CorruptionLog,
}

/// The edge host's software.
pub async fn run_edge_host(setup: EdgeSetup) -> turmoil::Result {
    let options = OpenOptions {
        vfs: Some(edgemeter_simdisk::VFS_NAME),
        planted: setup.planted,
    };
    let outbox = match SqliteOutbox::open_in(&setup.db_path, options) {
        Ok(outbox) => outbox,
        Err(error) => {
            // A database that does not open is a finding of its own, not a
            // crash of the harness: record it and stay down.
            record(
                &setup.corruption,
                format!("the outbox does not open: {error}"),
            );
            std::future::pending::<()>().await;
            unreachable!("pending never completes");
        }
    };
    match outbox.integrity_check() {
        Ok(answer) if answer == ["ok"] => {}
        Ok(answer) => record(
            &setup.corruption,
            format!("integrity_check at start: {}", answer.join("; ")),
        ),
        Err(error) => record(
            &setup.corruption,
            format!("integrity_check failed: {error}"),
        ),
    }
    let link = Arc::new(SimLink::start(
        setup.nodes.clone(),
        setup.link_stats.clone(),
    ));
    info!("edge process started on its outbox");
    run_edge(
        setup.config.clone(),
        SimBus::new(setup.topic, &setup.group),
        link,
        outbox,
        SimClock::new(setup.epoch_ms),
        setup.monitor.clone(),
        std::future::pending(),
    )
    .await?;
    Ok(())
}

fn record(log: &CorruptionLog, finding: String) {
    warn!(%finding, "the edge's database is corrupt");
    log.lock().expect("corruption log lock").push(finding);
}
