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
//! production binary takes. While the harness makes the edge's disk fail
//! (full, or I/O errors), a start whose open fails is not a finding: the
//! process exits as `edgemeter edge` does and its service manager starts
//! it again after [`RESTART_DELAY`]; an open that fails on a working disk
//! still is.

use crate::bus::SimBus;
use crate::clock::{SimClock, Skew};
use crate::link::{LinkStats, SimLink};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeMonitor};
use edgemeter_env::PlantedBugs;
use edgemeter_store::{OpenOptions, SqliteOutbox};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// How long the service manager waits before it starts an edge whose
/// previous start failed on a failing disk (systemd's `RestartSec`).
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

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
    /// The host's wall-clock offset, set by clock-skew faults.
    pub skew: Skew,
    /// Set by the harness while the edge's disk fails.
    pub disk_failing: Arc<AtomicBool>,
}

/// The edge host's software.
pub async fn run_edge_host(setup: EdgeSetup) -> turmoil::Result {
    let options = OpenOptions {
        vfs: Some(edgemeter_simdisk::VFS_NAME),
        planted: setup.planted,
    };
    let outbox = loop {
        match SqliteOutbox::open_in(&setup.db_path, options) {
            Ok(outbox) => break outbox,
            Err(error) if setup.disk_failing.load(Ordering::Relaxed) => {
                warn!(%error, "the outbox does not open on a failing disk; the process exits and is started again");
                tokio::time::sleep(RESTART_DELAY).await;
            }
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
        SimClock::skewed(setup.epoch_ms, setup.skew.clone()),
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
