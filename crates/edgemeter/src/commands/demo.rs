//! `edgemeter demo`: households, edge and cloud in one process.
//!
//! By default the bus is the in-process [`SharedLog`] and the cache the
//! cloud's [`MemoryCache`], so nothing needs installing; `--kafka` and
//! `--redis` switch to real servers. The edge-cloud link is always real NNG
//! on loopback and the edge's store always real SQLite, so the demo runs
//! the same edge and cloud code as deployment.
//!
//! With `--exit-when-done` the demo watches the edge's database and exits 0
//! once the replay is over and every expected tuple is acknowledged, with a
//! one-line JSON summary last on stdout.

use crate::cli::DemoArgs;
use crate::command_error::CommandError;
use crate::commands::edge::report;
use crate::commands::status;
use crate::data_dir::resolve_data_dir;
use crate::households::{load_replay, replay, MemLogSink, ReadingSink, ReplayOutcome, SinkError};
use crate::progress::{published_progress, CountingSink, Display, PROGRESS_LINE_INTERVAL};
use crate::shutdown::{self, Shutdown};
use crate::speed::Speed;
use edgemeter_cloud::{Cache, Cloud, CloudAuth, CloudConfig, MemoryCache};
use edgemeter_edge::{run_edge, EdgeConfig, EdgeError, EdgeMonitor, ReadingsBus};
use edgemeter_env::SystemClock;
use edgemeter_kafka::bus::{group_id, KafkaBus, TOPIC};
use edgemeter_kafka::producer::KafkaProducer;
use edgemeter_memlog::{MemLog, SharedLog};
use edgemeter_nng::link::NngLink;
use edgemeter_nng::server::NngServer;
use edgemeter_redis::cache::RedisCache;
use edgemeter_store::SqliteOutbox;
use edgemeter_wire::Reading;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Partitions of the in-process log: as many as the test broker's topic,
/// so the edge sees the same interleaving of households.
const DEMO_PARTITIONS: u32 = 3;

/// How often the demo reads the edge's database to see whether it is done.
const PROGRESS_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How often the demo logs its progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// With `--exit-when-done`, the demo fails if the replay is over and no
/// tuple was stored or acknowledged for this long: something is stuck, and
/// a CI run should fail rather than hang.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the edge may take to stop once told to.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo edge's idle flush at real time: five reading intervals of a
/// household, the deployment's value before the edge learned to confirm
/// the end of the stream (see `pipeline` for why the demo keeps it).
const DEMO_IDLE_FLUSH_BASE: Duration = Duration::from_secs(10);

/// The shortest idle time after which the demo's edge closes every open
/// window. The base waits 10 s of wall time, five reading intervals at
/// real time; the demo scales it by its speed (data time runs
/// that much faster), but never below this, so that a scheduler stall of
/// the in-process replay cannot close windows early. At `max` the replay
/// is over in well under a second and this is most of what is left to wait.
const DEMO_IDLE_FLUSH_MIN: Duration = Duration::from_secs(2);

/// The last line on stdout with `--exit-when-done`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub tuples: u64,
    pub acked: u64,
    pub households: usize,
    pub seconds: f64,
}

/// What every combination of bus and cache needs.
struct DemoRun {
    /// The dashboard's listener, bound first; served once the cloud exists.
    listener: Option<tokio::net::TcpListener>,
    /// The demo edge's key, made when the cloud is.
    key: Option<edgemeter_wire::EdgeKey>,
    args: DemoArgs,
    readings: Vec<Reading>,
    households: usize,
    expected: u64,
    started: Instant,
    shutdown: Shutdown,
}

pub async fn run(args: DemoArgs, shutdown: Shutdown) -> Result<(), CommandError> {
    let started = Instant::now();
    let (listener, http) = crate::dashboard_server::bind(&args.http).await?;
    tracing::info!("dashboard at http://{http} (REST API under /api)");
    let dir = resolve_data_dir(args.data.data.as_deref());
    let data = load_replay(&dir, args.data.duration)?;
    let expected = expected_tuples(&data.readings);
    tracing::info!(
        data = %dir.display(),
        households = data.households,
        readings = data.readings.len(),
        expected_tuples = expected,
        speed = %args.speed,
        db = %args.db.display(),
        "demo starting"
    );
    let redis = args.redis.clone();
    let run = DemoRun {
        listener: Some(listener),
        key: None,
        args,
        readings: data.readings,
        households: data.households,
        expected,
        started,
        shutdown,
    };
    let summary = match redis {
        Some(url) => with_cache(run, RedisCache::connect(&url).await?).await?,
        None => with_cache(run, MemoryCache::new()).await?,
    };
    let line = serde_json::to_string(&summary).expect("a summary serializes");
    println!("{line}");
    Ok(())
}

/// The number of distinct (household, window) pairs: one tuple each.
pub fn expected_tuples(readings: &[Reading]) -> u64 {
    let windows: BTreeSet<(&str, i64)> = readings
        .iter()
        .map(|reading| {
            (
                reading.node_id.as_str(),
                edgemeter_data::window_start_ms(reading.ts_ms),
            )
        })
        .collect();
    windows.len() as u64
}

async fn with_cache<C: Cache>(mut run: DemoRun, cache: C) -> Result<Summary, CommandError> {
    // The demo speaks the authenticated protocol, as a deployment should:
    // a fresh key for its edge, and a cloud that accepts nothing else.
    let key = crate::keys::generate_key();
    let auth = CloudAuth {
        allow_unauthenticated: false,
        ..CloudAuth::open().with_key(&run.args.edge_id, key.clone())
    };
    let config = CloudConfig {
        auth,
        // OS randomness: a restarted cloud must not draw its predecessor's
        // epoch candidates, or a store lost in between would keep its epoch.
        rng_seed: rand::random(),
        ..CloudConfig::default()
    };
    let cloud = Arc::new(Cloud::new(config, cache, SystemClock));
    let listener = run.listener.take().expect("the listener is served once");
    crate::dashboard_server::serve(
        listener,
        cloud.clone(),
        &run.args.http,
        run.shutdown.clone(),
    )?;
    run.key = Some(key);
    let server = NngServer::start(
        cloud.clone(),
        "127.0.0.1",
        run.args.heartbeat_port,
        run.args.data_port,
    )?;
    let ports = server.ports();
    tracing::info!(
        heartbeat_port = ports.heartbeat,
        data_port = ports.data,
        "demo cloud serving on 127.0.0.1"
    );
    let watcher = tokio::spawn(cloud.clone().watch_heartbeats(run.shutdown.clone().wait()));
    let link = Arc::new(NngLink::dial("127.0.0.1", ports.heartbeat, ports.data)?);
    let summary = match run.args.kafka.clone() {
        Some(brokers) => {
            let bus = KafkaBus::connect(&brokers, &run.args.edge_id, TOPIC).await?;
            let sink = KafkaProducer::connect(&brokers, TOPIC).await?;
            pipeline(run, link, bus, sink).await
        }
        None => {
            let log = SharedLog::new(MemLog::new(DEMO_PARTITIONS, run.readings.len().max(1)));
            let bus = log.consumer(&group_id(&run.args.edge_id));
            pipeline(run, link, bus, MemLogSink::new(log)).await
        }
    };
    server.close();
    watcher.abort();
    tracing::info!(counters = ?cloud.counters(), "demo cloud stopped");
    summary
}

async fn pipeline<B: ReadingsBus, S: ReadingSink + 'static>(
    run: DemoRun,
    link: Arc<NngLink>,
    bus: B,
    sink: S,
) -> Result<Summary, CommandError> {
    let db = run.args.db.clone();
    let outbox = SqliteOutbox::open(&db).map_err(CommandError::store(&db))?;
    let (edge_trigger, edge_shutdown) = shutdown::channel();
    let monitor = Arc::new(EdgeMonitor::new());
    let reporter = tokio::spawn(report(monitor.clone(), edge_shutdown.clone()));
    let mut config = EdgeConfig::new(run.args.edge_id.clone());
    config.key = run.key.clone();
    // Not the deployment's 60 s: that bound is for a producer, broker or
    // link that can stall. The demo's bus is in process and its replay
    // runs in the same runtime, so neither can stall for long; the older,
    // shorter base, scaled by speed, keeps `--exit-when-done` from waiting
    // a minute more.
    config.idle_flush = demo_idle_flush(DEMO_IDLE_FLUSH_BASE, run.args.speed);
    let edge = tokio::spawn(run_edge(
        config,
        bus,
        link,
        outbox,
        SystemClock,
        monitor.clone(),
        edge_shutdown.wait(),
    ));
    let (readings, speed) = (run.readings, run.args.speed);
    let replayer = tokio::spawn(async move {
        // Log lines, never a bar: the demo's own logs would tear a bar.
        let display = Display::Lines {
            interval: PROGRESS_LINE_INTERVAL,
        };
        let mut sink = CountingSink::new(sink);
        let progress = published_progress(&sink, readings.len(), display);
        let outcome = replay(&readings, speed, &mut sink).await;
        progress.finish().await;
        outcome
    });
    let watch = Watch {
        db,
        expected: run.expected,
        exit_when_done: run.args.exit_when_done,
        shutdown: run.shutdown,
    };
    let watched = watch.until_done(replayer, &edge).await;
    edge_trigger.fire();
    reporter.abort();
    stop_edge(edge).await?;
    let counts = watched?;
    Ok(Summary {
        tuples: counts.queued + counts.sent + counts.acked,
        acked: counts.acked,
        households: run.households,
        seconds: (run.started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    })
}

/// The deployment's idle flush scaled by the replay speed, within
/// [`DEMO_IDLE_FLUSH_MIN`] and the deployment's value.
pub fn demo_idle_flush(deployed: Duration, speed: Speed) -> Duration {
    let scaled = match speed {
        Speed::Max => DEMO_IDLE_FLUSH_MIN,
        Speed::Factor(factor) => deployed.div_f64(factor.max(1.0)),
    };
    scaled.clamp(DEMO_IDLE_FLUSH_MIN.min(deployed), deployed)
}

async fn stop_edge(edge: JoinHandle<Result<(), EdgeError>>) -> Result<(), CommandError> {
    match tokio::time::timeout(STOP_TIMEOUT, edge).await {
        Ok(Ok(outcome)) => outcome.map_err(CommandError::from),
        Ok(Err(join)) => Err(CommandError::TaskFailed(format!("edge task: {join}"))),
        Err(_) => {
            tracing::warn!("the edge did not stop within {STOP_TIMEOUT:?}");
            Ok(())
        }
    }
}

/// Watches the edge's database until the demo is done or interrupted.
struct Watch {
    db: PathBuf,
    expected: u64,
    exit_when_done: bool,
    shutdown: Shutdown,
}

impl Watch {
    async fn until_done(
        &self,
        mut replayer: JoinHandle<Result<ReplayOutcome, SinkError>>,
        edge: &JoinHandle<Result<(), EdgeError>>,
    ) -> Result<edgemeter_edge::StatusCounts, CommandError> {
        let mut replay_over = false;
        let mut progress = Progress::new();
        let mut ticks = tokio::time::interval(PROGRESS_POLL_INTERVAL);
        loop {
            tokio::select! {
                joined = &mut replayer, if !replay_over => {
                    replay_over = true;
                    let outcome = joined.map_err(|join| CommandError::TaskFailed(format!("replay task: {join}")))??;
                    tracing::info!(published = outcome.published, seconds = outcome.elapsed.as_secs_f64(), "replay finished");
                }
                _ = self.shutdown.clone().wait() => return status::read(&self.db),
                _ = ticks.tick() => {}
            }
            if edge.is_finished() {
                return Err(CommandError::TaskFailed(
                    "the edge stopped on its own".into(),
                ));
            }
            let counts = status::read(&self.db)?;
            let done =
                replay_over && counts.acked >= self.expected && counts.queued + counts.sent == 0;
            if done && self.exit_when_done {
                tracing::info!(acked = counts.acked, "every tuple acknowledged; demo done");
                return Ok(counts);
            }
            progress.observe(&counts, done, self.expected);
            if replay_over && self.exit_when_done && progress.stalled_for() > STALL_TIMEOUT {
                return Err(CommandError::Stalled {
                    acked: counts.acked,
                    expected: self.expected,
                    waited: STALL_TIMEOUT,
                });
            }
        }
    }
}

/// When the counts last moved, and when progress was last logged.
struct Progress {
    last: Option<edgemeter_edge::StatusCounts>,
    moved_at: Instant,
    logged_at: Instant,
    done_logged: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            last: None,
            moved_at: Instant::now(),
            logged_at: Instant::now(),
            done_logged: false,
        }
    }

    fn observe(&mut self, counts: &edgemeter_edge::StatusCounts, done: bool, expected: u64) {
        if self.last.as_ref() != Some(counts) {
            self.last = Some(*counts);
            self.moved_at = Instant::now();
        }
        if self.logged_at.elapsed() >= PROGRESS_LOG_INTERVAL {
            self.logged_at = Instant::now();
            tracing::info!(
                queued = counts.queued,
                sent = counts.sent,
                acked = counts.acked,
                expected,
                "demo progress"
            );
        }
        if done && !self.done_logged {
            self.done_logged = true;
            tracing::info!(
                acked = counts.acked,
                "every tuple acknowledged; ctrl-c to stop"
            );
        }
    }

    fn stalled_for(&self) -> Duration {
        self.moved_at.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_flush_scales_with_speed_within_bounds() {
        let deployed = Duration::from_secs(10);
        assert_eq!(
            demo_idle_flush(deployed, Speed::Max),
            Duration::from_secs(2)
        );
        assert_eq!(demo_idle_flush(deployed, Speed::Factor(1.0)), deployed);
        assert_eq!(demo_idle_flush(deployed, Speed::Factor(0.5)), deployed);
        assert_eq!(
            demo_idle_flush(deployed, Speed::Factor(2.0)),
            Duration::from_secs(5)
        );
        assert_eq!(
            demo_idle_flush(deployed, Speed::Factor(60.0)),
            Duration::from_secs(2)
        );
        assert_eq!(
            demo_idle_flush(Duration::from_secs(1), Speed::Max),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn one_tuple_per_household_window() {
        let reading = |node_id: &str, ts_ms| Reading {
            node_id: node_id.into(),
            power_w: 1.0,
            ts_ms,
        };
        let readings = [
            reading("a", 1_000),
            reading("a", 4_999),
            reading("a", 5_000),
            reading("b", 1_000),
        ];
        assert_eq!(expected_tuples(&readings), 3);
    }
}
