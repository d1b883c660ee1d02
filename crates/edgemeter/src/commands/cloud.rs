//! `edgemeter cloud`: the cloud logic behind NNG, storing into one Redis
//! (`--redis`) or a Redis Cluster (`--redis-cluster`).

use crate::cli::CloudArgs;
use crate::command_error::CommandError;
use crate::shutdown::Shutdown;
use edgemeter_cloud::{Cloud, CloudAuth, CloudConfig};
use edgemeter_env::SystemClock;
use edgemeter_nng::server::NngServer;
use edgemeter_redis::cache::RedisCache;
use std::sync::Arc;
use std::time::Duration;

/// How often the cloud logs its counters while they change.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Who may talk to this cloud: the keys file's edges, and unauthenticated
/// peers only when the operator says so.
fn auth(args: &CloudArgs) -> Result<CloudAuth, CommandError> {
    let keys = match &args.keys {
        Some(path) => crate::keys::load_keys_file(path)?,
        None if args.allow_unauthenticated => Default::default(),
        None => {
            return Err(CommandError::config(
                "the cloud needs --keys FILE (or EDGEMETER_KEYS) with each edge's key, \
                 made with `edgemeter keygen` (or `keys` in the [cloud] table of the config \
                 file); or --allow-unauthenticated to serve edges \
                 without keys and the original wire form",
            ))
        }
    };
    Ok(CloudAuth {
        keys,
        allow_unauthenticated: args.allow_unauthenticated,
        ..CloudAuth::open()
    })
}

/// The cache of `--redis` or `--redis-cluster` (clap lets exactly one
/// through), and how to name it in the log, its password masked.
async fn connect_cache(args: &CloudArgs) -> Result<(RedisCache, String), CommandError> {
    match (&args.redis, &args.redis_cluster) {
        (Some(url), None) => Ok((
            RedisCache::connect(url).await?,
            crate::settings::mask_url_password(url),
        )),
        (None, Some(seeds)) => {
            let urls: Vec<String> = seeds
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect();
            let cache = RedisCache::connect_cluster(&urls).await?;
            let masked: Vec<String> = urls
                .iter()
                .map(|url| crate::settings::mask_url_password(url))
                .collect();
            Ok((cache, format!("cluster {}", masked.join(","))))
        }
        _ => Err(CommandError::config(
            "the cloud needs exactly one of --redis URL and --redis-cluster URL[,URL...]",
        )),
    }
}

pub async fn run(args: CloudArgs, shutdown: Shutdown) -> Result<(), CommandError> {
    // First: SIGHUP would end the cloud otherwise.
    let hangups = crate::key_reload::Hangups::install()?;
    let auth = auth(&args)?;
    let (cache, redis) = connect_cache(&args).await?;
    let edges_with_keys = auth.keys.len();
    let config = CloudConfig {
        auth,
        // OS randomness: a restarted cloud must not draw its predecessor's
        // epoch candidates, or a store lost in between would keep its epoch.
        rng_seed: rand::random(),
        ..CloudConfig::default()
    };
    let (listener, http) = crate::dashboard_server::bind(&args.http).await?;
    let cloud = Arc::new(Cloud::new(config, cache, SystemClock));
    let reloader =
        crate::key_reload::for_cloud(hangups, cloud.clone(), args.keys.clone(), shutdown.clone());
    crate::dashboard_server::serve(listener, cloud.clone(), &args.http, shutdown.clone())?;
    tracing::info!(%http, "dashboard and REST API at http://{http}");
    let server = NngServer::start(
        cloud.clone(),
        &args.listen,
        args.ports.heartbeat_port,
        args.ports.data_port,
    )?;
    let ports = server.ports();
    tracing::info!(
        listen = %args.listen,
        heartbeat_port = ports.heartbeat,
        data_port = ports.data,
        %redis,
        edges_with_keys,
        allow_unauthenticated = args.allow_unauthenticated,
        "cloud serving"
    );
    let watcher = tokio::spawn(cloud.clone().watch_heartbeats(shutdown.clone().wait()));
    // NNG and HTTP listen and Redis answered: ready (no-op outside systemd).
    // The watchdog follows the heartbeat sweeps, which stop if the runtime
    // or the heartbeat lock every handler takes is wedged.
    crate::service_manager::notify_ready();
    let watchdog = {
        let cloud = cloud.clone();
        crate::service_manager::spawn_watchdog(move || cloud.heartbeat_sweeps(), shutdown.clone())
    };
    let mut reports = tokio::time::interval(REPORT_INTERVAL);
    let mut last = cloud.counters();
    let stopping = shutdown.wait();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => break,
            _ = reports.tick() => {
                let counters = cloud.counters();
                if counters != last {
                    tracing::info!(?counters, "cloud progress");
                    last = counters;
                }
            }
        }
    }
    crate::service_manager::notify_stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    server.close();
    let _ = watcher.await;
    reloader.abort();
    tracing::info!(counters = ?cloud.counters(), "cloud stopped");
    Ok(())
}
