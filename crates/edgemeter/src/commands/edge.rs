//! `edgemeter edge`: consumes Kafka, keeps 5-second averages in SQLite and
//! ships them to the cloud node(s) over NNG, and serves its live state to
//! `edgemeter status` on `<db>.status.sock` and, with `--metrics ADDR`, to
//! Prometheus on `http://ADDR/metrics`.

use crate::cli::EdgeArgs;
use crate::command_error::CommandError;
use crate::shutdown::Shutdown;
use crate::status_socket::{ServerCounters, StatusSocket};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeMonitor};
use edgemeter_env::SystemClock;
use edgemeter_kafka::bus::KafkaBus;
use edgemeter_nng::link::NngLink;
use edgemeter_store::SqliteOutbox;
use std::sync::Arc;
use std::time::Duration;

/// How often the edge logs its counters while they change.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(args: EdgeArgs, shutdown: Shutdown) -> Result<(), CommandError> {
    // First: SIGHUP would end the edge otherwise.
    let hangups = crate::key_reload::Hangups::install()?;
    // A list that names one node twice needs no IO to refuse.
    let nodes = args
        .cloud
        .resolve(args.ports.heartbeat_port, args.ports.data_port)
        .map_err(CommandError::Config)?;
    // The local database first: its errors are the cheapest to report.
    let key = crate::keys::load_edge_key(args.key_file.as_deref())?;
    let (key_updates, key_receiver) = tokio::sync::watch::channel(key.clone());
    let reloader = crate::key_reload::for_edge(
        hangups,
        args.key_file.clone(),
        key_updates,
        shutdown.clone(),
    );
    // Before the database is opened (opening it may write): a second edge
    // on it stops here, naming the first one's pid.
    let lock = crate::edge_lock::EdgeLock::acquire(&args.db)?;
    let outbox = SqliteOutbox::open(&args.db).map_err(CommandError::store(&args.db))?;
    // Bound before the slow steps, so that a second edge on this database
    // or a path too long for a socket fails at once.
    let status_socket = StatusSocket::bind(&args.db)?;
    let metrics_listener = match &args.metrics {
        Some(address) => Some(crate::metrics::bind(address).await?),
        None => None,
    };
    let bus = KafkaBus::connect_partitions(
        &args.kafka,
        &args.edge_id,
        &args.topic,
        args.partitions.clone(),
    )
    .await?;
    let link = Arc::new(NngLink::dial_nodes(&nodes)?);
    let monitor = Arc::new(EdgeMonitor::new());
    if let Some((listener, address)) = metrics_listener {
        let registry = crate::metrics::registry(crate::metrics::EdgeMetrics {
            monitor: monitor.clone(),
            lag: Some(bus.consumer_lag()),
        });
        crate::metrics::serve(listener, registry, shutdown.clone());
        tracing::info!(%address, "metrics at http://{address}/metrics");
    }
    let reporter = tokio::spawn(report(monitor.clone(), shutdown.clone()));
    // Served only from here on, so that every answer is the running edge's
    // own state; a `status` that asks earlier waits in the listen backlog.
    let status_server = tokio::spawn(status_socket.serve(
        args.edge_id.clone(),
        monitor.clone(),
        Arc::new(ServerCounters::default()),
        shutdown.clone(),
    ));
    // The outbox is open and the status socket bound and served: systemd
    // may order what depends on this edge after it (no-op outside systemd).
    let reships = tokio::spawn(crate::progress::follow_reship(
        monitor.clone(),
        crate::progress::Display::for_stderr(),
        shutdown.clone(),
    ));
    crate::service_manager::notify_ready();
    let watchdog = {
        let monitor = monitor.clone();
        crate::service_manager::spawn_watchdog(move || monitor.loop_turns(), shutdown.clone())
    };
    tracing::info!(
        edge = %args.edge_id,
        kafka = %args.kafka,
        cloud = %args.cloud,
        topic = %args.topic,
        partitions = ?args.partitions,
        db = %args.db.display(),
        authenticated = key.is_some(),
        readings = args.readings.name(),
        "edge starting"
    );
    let mut config = EdgeConfig::new(args.edge_id.clone());
    config.key = key;
    config.key_updates = Some(key_receiver);
    config.idle_flush = args.idle_flush;
    config.readings = args.readings;
    // The original's records are unkeyed: no per-household order to rely on.
    config.windows.household_order = args.readings == edgemeter_wire::ReadingForm::EdgeMeter;
    config.ack_retention = args.ack_retention;
    config.instance = draw_instance();
    tracing::info!(
        instance = format!("{:016x}", config.instance),
        lock = %lock.path().display(),
        "edge process instance drawn; the cloud leases the edge id to it"
    );
    let outcome = run_edge(
        config,
        bus,
        link,
        outbox,
        SystemClock,
        monitor.clone(),
        shutdown.wait(),
    )
    .await;
    crate::service_manager::notify_stopping();
    reporter.abort();
    reloader.abort();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // Awaited: the reship display writes its last line on shutdown.
    if outcome.is_err() {
        reships.abort();
    }
    let _ = reships.await;
    // Awaited, so that the socket file is gone before the process exits.
    status_server.abort();
    let _ = status_server.await;
    tracing::info!(counters = ?monitor.snapshot(), "edge stopped");
    // Held to here: the lock goes with the process, after everything else.
    drop(lock);
    outcome.map_err(CommandError::from)
}

/// This process's instance: random from the OS, non-zero (0 is "none" on
/// the wire), so a restart is a new instance and the cloud's lease tells it
/// from a second process with the same id.
fn draw_instance() -> u64 {
    loop {
        let instance: u64 = rand::random();
        if instance != 0 {
            return instance;
        }
    }
}

/// Logs the edge's counters every [`REPORT_INTERVAL`] while they change.
pub async fn report(monitor: Arc<EdgeMonitor>, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(REPORT_INTERVAL);
    let mut last = monitor.snapshot();
    while !shutdown.is_fired() {
        ticks.tick().await;
        let counters = monitor.snapshot();
        if counters != last {
            tracing::info!(?counters, "edge progress");
            last = counters;
        }
    }
}
