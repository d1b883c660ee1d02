//! `edgemeter households`: replays the data set into Kafka.

use crate::cli::HouseholdsArgs;
use crate::command_error::CommandError;
use crate::data_dir::resolve_data_dir;
use crate::households::{load_replay, replay, ReadingSink};
use crate::progress::{published_progress, CountingSink, Display};
use crate::shutdown::Shutdown;
use edgemeter_kafka::producer::KafkaProducer;
use std::time::Duration;

/// After ctrl-c, how long the producer may take to deliver what it holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: HouseholdsArgs, shutdown: Shutdown) -> Result<(), CommandError> {
    let dir = resolve_data_dir(args.data.data.as_deref());
    if let Some(addr) = &args.mosaik {
        return cosimulate(addr, &dir, &args, shutdown).await;
    }
    let data = load_replay(&dir, args.data.duration)?;
    let producer = KafkaProducer::connect(&args.kafka, &args.topic).await?;
    let mut producer = CountingSink::new(producer);
    tracing::info!(
        data = %dir.display(),
        households = data.households,
        readings = data.readings.len(),
        speed = %args.speed,
        kafka = %args.kafka,
        "replaying households"
    );
    let progress = published_progress(&producer, data.readings.len(), Display::for_stderr());
    let finished = tokio::select! {
        outcome = replay(&data.readings, args.speed, &mut producer) => Some(outcome),
        _ = shutdown.wait() => None,
    };
    progress.finish().await;
    let producer = producer.inner_mut();
    match finished {
        Some(outcome) => {
            let outcome = outcome?;
            tracing::info!(
                published = outcome.published,
                delivered = producer.delivered(),
                seconds = outcome.elapsed.as_secs_f64(),
                "replay finished"
            );
        }
        None => {
            tracing::info!("stopping; delivering what was published");
            if tokio::time::timeout(FLUSH_TIMEOUT, producer.flush())
                .await
                .is_err()
            {
                tracing::warn!("some readings were not confirmed by the broker");
            }
        }
    }
    Ok(())
}

/// The households as a mosaik simulator: mosaik's steps pace the replay.
async fn cosimulate(
    addr: &str,
    dir: &std::path::Path,
    args: &HouseholdsArgs,
    shutdown: Shutdown,
) -> Result<(), CommandError> {
    let duration_ms = args
        .data
        .duration
        .map(|duration| duration.as_millis().min(i64::MAX as u128) as i64);
    let (households, _) = edgemeter_data::load_dir(dir, duration_ms)?;
    let series = households
        .into_iter()
        .map(|household| {
            let mut readings: Vec<edgemeter_wire::Reading> = household
                .readings
                .iter()
                .map(|&(ts_ms, power_mw)| edgemeter_wire::Reading {
                    node_id: household.node_id.clone(),
                    power_w: power_mw as f64 / 1000.0,
                    ts_ms,
                })
                .collect();
            readings.sort_by_key(|reading| reading.ts_ms);
            (household.node_id, readings)
        })
        .collect();
    let mut producer = KafkaProducer::connect(&args.kafka, &args.topic).await?;
    tracing::info!(mosaik = addr, data = %dir.display(), kafka = %args.kafka, "households joining a mosaik co-simulation");
    let simulator = edgemeter_mosaik::Simulator::new(series);
    tokio::select! {
        outcome = crate::mosaik_link::serve(addr, simulator, &mut producer) => {
            outcome?;
        }
        _ = shutdown.wait() => {
            tracing::info!("stopping; delivering what was published");
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, producer.flush()).await;
        }
    }
    Ok(())
}
