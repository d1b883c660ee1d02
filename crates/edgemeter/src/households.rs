//! The households: a replayer that publishes the data set's readings as if
//! the meters were sending them now.
//!
//! It steps simulated time like a co-simulation: the readings of all
//! households are merged in timestamp order, and each is published when the
//! wall time since the replay began reaches its offset from the first
//! reading, divided by the [`Speed`]. At `max` nothing waits.
//!
//! Its progress is shown by the caller, which counts what the sink
//! published ([`crate::progress::CountingSink`]).
//!
//! Publishing goes through [`ReadingSink`] (`edgemeter-memlog`'s, so that
//! the Kafka adapter implements it too): Kafka for `households`, the
//! in-process log ([`MemLogSink`]) for `demo`.

use crate::speed::Speed;
use edgemeter_data::{csv::merged_readings, load_dir, DataError, LoadReport};
use edgemeter_wire::Reading;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// At speed `max` the replay yields to the scheduler after this many
/// readings, so that an edge and a cloud in the same process keep running.
const YIELD_EVERY_READINGS: u64 = 256;

pub use edgemeter_memlog::sink::{MemLogSink, ReadingSink, SinkError};

/// The readings of a data set, ready to replay.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Every reading of every household, in publication order.
    pub readings: Vec<Reading>,
    pub households: usize,
    pub report: LoadReport,
}

/// Loads a data directory, keeping the readings within `duration` of the
/// data set's first reading.
pub fn load_replay(dir: &Path, duration: Option<Duration>) -> Result<Replay, DataError> {
    let duration_ms = duration.map(|duration| duration.as_millis().min(i64::MAX as u128) as i64);
    let (households, report) = load_dir(dir, duration_ms)?;
    if report.malformed_rows > 0 {
        tracing::warn!(
            malformed = report.malformed_rows,
            first = report.first_malformed.as_deref().unwrap_or(""),
            "skipped malformed rows in the data set"
        );
    }
    Ok(Replay {
        readings: merged_readings(&households),
        households: households.len(),
        report,
    })
}

/// What a finished replay did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOutcome {
    pub published: u64,
    /// From the first reading's timestamp to the last one's.
    pub data_span_ms: i64,
    pub elapsed: Duration,
}

/// Publishes `readings` (in timestamp order) at `speed`, then flushes.
pub async fn replay<S: ReadingSink>(
    readings: &[Reading],
    speed: Speed,
    sink: &mut S,
) -> Result<ReplayOutcome, SinkError> {
    let started = Instant::now();
    let first_ts_ms = readings.first().map_or(0, |reading| reading.ts_ms);
    let mut published = 0u64;
    for reading in readings {
        let data_offset_ms = reading.ts_ms - first_ts_ms;
        debug_assert!(data_offset_ms >= 0, "readings are in timestamp order");
        match speed.due_after(data_offset_ms) {
            Some(due) => tokio::time::sleep_until(started + due).await,
            None if published % YIELD_EVERY_READINGS == 0 => tokio::task::yield_now().await,
            None => {}
        }
        sink.publish(reading).await?;
        published += 1;
    }
    sink.flush().await?;
    let data_span_ms = readings.last().map_or(0, |reading| reading.ts_ms) - first_ts_ms;
    Ok(ReplayOutcome {
        published,
        data_span_ms,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what was published and when, in paused tokio time.
    struct RecordingSink {
        started: Instant,
        published: Vec<(Duration, i64)>,
        flushed: bool,
    }

    impl ReadingSink for RecordingSink {
        async fn publish(&mut self, reading: &Reading) -> Result<(), SinkError> {
            self.published.push((self.started.elapsed(), reading.ts_ms));
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), SinkError> {
            self.flushed = true;
            Ok(())
        }
    }

    fn reading(ts_ms: i64) -> Reading {
        Reading {
            node_id: "h".into(),
            power_w: 1.0,
            ts_ms,
        }
    }

    /// Goal: each reading goes out at its scaled offset from the first one.
    /// Method: tokio's paused clock advances only through the replay's own
    /// sleeps, so the publish times are exact.
    #[tokio::test(start_paused = true)]
    async fn paces_readings_by_scaled_timestamps() {
        let readings = [reading(1_000_000), reading(1_002_000), reading(1_060_000)];
        let mut sink = RecordingSink {
            started: Instant::now(),
            published: Vec::new(),
            flushed: false,
        };
        let outcome = replay(&readings, Speed::Factor(2.0), &mut sink)
            .await
            .unwrap();
        assert_eq!(
            sink.published,
            vec![
                (Duration::ZERO, 1_000_000),
                (Duration::from_secs(1), 1_002_000),
                (Duration::from_secs(30), 1_060_000),
            ]
        );
        assert!(sink.flushed);
        assert_eq!(outcome.published, 3);
        assert_eq!(outcome.data_span_ms, 60_000);
    }

    #[tokio::test(start_paused = true)]
    async fn max_speed_does_not_wait() {
        let readings: Vec<Reading> = (0..1000)
            .map(|index| reading(1_000_000 + index * 2_000))
            .collect();
        let mut sink = RecordingSink {
            started: Instant::now(),
            published: Vec::new(),
            flushed: false,
        };
        replay(&readings, Speed::Max, &mut sink).await.unwrap();
        assert_eq!(sink.published.len(), 1000);
        assert!(sink.published.iter().all(|(at, _)| *at == Duration::ZERO));
    }

    #[tokio::test]
    async fn a_full_log_is_an_error_not_a_crash() {
        let log = edgemeter_memlog::SharedLog::new(edgemeter_memlog::MemLog::new(1, 2));
        let mut sink = MemLogSink::new(log.clone());
        let readings = [reading(1), reading(2), reading(3)];
        let error = replay(&readings, Speed::Max, &mut sink).await.unwrap_err();
        assert_eq!(error, SinkError::Full { records_max: 2 });
        assert_eq!(log.with(|log| log.total_records()), 2);
    }
}
