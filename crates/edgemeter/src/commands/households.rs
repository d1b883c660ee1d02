//! `edgemeter households`: replays the data set into Kafka.

use crate::cli::HouseholdsArgs;
use crate::command_error::CommandError;
use crate::data_dir::resolve_data_dir;
use crate::households::{load_replay, replay, ReadingSink};
use crate::kafka_producer::KafkaProducer;
use crate::shutdown::Shutdown;
use std::time::Duration;

/// After ctrl-c, how long the producer may take to deliver what it holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: HouseholdsArgs, shutdown: Shutdown) -> Result<(), CommandError> {
    let dir = resolve_data_dir(args.data.data.as_deref());
    let data = load_replay(&dir, args.data.duration)?;
    let mut producer = KafkaProducer::connect(&args.kafka, &args.topic).await?;
    tracing::info!(
        data = %dir.display(),
        households = data.households,
        readings = data.readings.len(),
        speed = %args.speed,
        kafka = %args.kafka,
        "replaying households"
    );
    let finished = tokio::select! {
        outcome = replay(&data.readings, args.speed, &mut producer) => Some(outcome),
        _ = shutdown.wait() => None,
    };
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
