//! `KafkaProducer`: the households' [`ReadingSink`] into Kafka.
//!
//! Each reading is one record on `power_topic`, keyed by household, so one
//! household's readings stay on one partition and in order. The producer is
//! idempotent, so librdkafka's own retries never write a record twice.
//!
//! A publish hands the record to librdkafka at once and keeps its delivery
//! future; at most [`PRODUCE_INFLIGHT_MAX`] are unconfirmed. A record whose
//! delivery fails (the broker stayed down past librdkafka's message timeout)
//! is sent again with backoff, never dropped.

use crate::households::{ReadingSink, SinkError};
use crate::kafka_bus::{check_broker, client_config, BrokerSetupError};
use edgemeter_wire::Reading;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;

/// Unconfirmed records at most. Bounds our memory (a reading is ~130
/// bytes), while leaving librdkafka plenty to batch: at speed `max` it
/// sends tens of thousands of records a second.
pub const PRODUCE_INFLIGHT_MAX: usize = 10_000;

/// The first pause before a failed record is sent again; it doubles.
const RESEND_DELAY_MIN: Duration = Duration::from_millis(100);

/// The longest pause between two sends of a failed record.
const RESEND_DELAY_MAX: Duration = Duration::from_secs(5);

/// The pause when librdkafka's own queue is full and nothing of ours is
/// in flight to wait for instead.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// A record handed to librdkafka, and what is needed to send it again.
struct Pending {
    key: String,
    payload: Vec<u8>,
    attempt: u32,
}

type Delivery = BoxFuture<'static, (Pending, Result<(), KafkaError>)>;

pub struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
    in_flight: FuturesUnordered<Delivery>,
    /// Records that failed and wait for their next send.
    failed: Vec<Pending>,
    delivered: u64,
}

impl KafkaProducer {
    /// Creates an idempotent producer after checking that the broker answers.
    pub async fn connect(brokers: &str, topic: &str) -> Result<KafkaProducer, BrokerSetupError> {
        let setup_error = |error: KafkaError| BrokerSetupError {
            brokers: brokers.to_owned(),
            reason: error.to_string(),
        };
        let probe: BaseConsumer = client_config(brokers).create().map_err(setup_error)?;
        check_broker(Arc::new(probe), brokers, topic).await?;
        KafkaProducer::create(brokers, topic).map_err(setup_error)
    }

    /// The producer itself, without the check that the broker answers.
    fn create(brokers: &str, topic: &str) -> Result<KafkaProducer, KafkaError> {
        let producer: FutureProducer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Batch for up to 5 ms: at speed `max` this is what makes
            // throughput; at real time it adds 5 ms to a 2 s cadence.
            .set("linger.ms", "5")
            .set("reconnect.backoff.max.ms", "2000")
            .create()?;
        Ok(KafkaProducer {
            producer,
            topic: topic.to_owned(),
            in_flight: FuturesUnordered::new(),
            failed: Vec::new(),
            delivered: 0,
        })
    }

    /// Records confirmed by the broker so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Hands a record to librdkafka, waiting while its queue is full.
    async fn enqueue(&mut self, pending: Pending) {
        loop {
            let record = FutureRecord::to(&self.topic)
                .key(&pending.key)
                .payload(&pending.payload);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    let future = async move {
                        let outcome = match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((error, _))) => Err(error),
                            Err(_) => Err(KafkaError::Canceled),
                        };
                        (pending, outcome)
                    };
                    self.in_flight.push(future.boxed());
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if !self.settle_one().await {
                        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    }
                }
                Err((error, _)) => {
                    tracing::warn!(%error, "record not accepted by librdkafka; retrying");
                    tokio::time::sleep(RESEND_DELAY_MIN).await;
                }
            }
        }
    }

    /// Waits for one delivery; false when none is in flight.
    async fn settle_one(&mut self) -> bool {
        match self.in_flight.next().await {
            Some(outcome) => {
                self.record_outcome(outcome);
                true
            }
            None => false,
        }
    }

    fn settle_ready(&mut self) {
        while let Some(Some(outcome)) = self.in_flight.next().now_or_never() {
            self.record_outcome(outcome);
        }
    }

    fn record_outcome(&mut self, (mut pending, outcome): (Pending, Result<(), KafkaError>)) {
        match outcome {
            Ok(()) => self.delivered += 1,
            Err(error) => {
                if pending.attempt == 0 {
                    tracing::warn!(%error, key = %pending.key, "delivery failed; sending again with backoff");
                }
                pending.attempt += 1;
                self.failed.push(pending);
            }
        }
    }

    /// Sends failed records again, after a pause that grows with their attempts.
    async fn resend_failed(&mut self) {
        let failed = std::mem::take(&mut self.failed);
        if let Some(attempt) = failed.iter().map(|pending| pending.attempt).max() {
            tokio::time::sleep(resend_delay(attempt)).await;
        }
        for pending in failed {
            self.enqueue(pending).await;
        }
    }

    /// Records handed to librdkafka and not yet confirmed, including those
    /// waiting to be sent again: what [`PRODUCE_INFLIGHT_MAX`] bounds.
    pub fn unconfirmed(&self) -> usize {
        self.in_flight.len() + self.failed.len()
    }
}

/// The pause before the `attempt`-th resend of a record: doubling from
/// [`RESEND_DELAY_MIN`], never above [`RESEND_DELAY_MAX`].
fn resend_delay(attempt: u32) -> Duration {
    RESEND_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RESEND_DELAY_MAX)
}

impl ReadingSink for KafkaProducer {
    async fn publish(&mut self, reading: &Reading) -> Result<(), SinkError> {
        self.settle_ready();
        // Failed records count too: they go back in flight before this one.
        while self.unconfirmed() >= PRODUCE_INFLIGHT_MAX {
            if !self.settle_one().await {
                self.resend_failed().await;
            }
        }
        if !self.failed.is_empty() {
            self.resend_failed().await;
        }
        let pending = Pending {
            key: reading.node_id.clone(),
            payload: reading.encode(),
            attempt: 0,
        };
        self.enqueue(pending).await;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        loop {
            while self.settle_one().await {}
            if self.failed.is_empty() {
                return Ok(());
            }
            self.resend_failed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resend_delay_doubles_to_its_cap() {
        assert_eq!(resend_delay(0), RESEND_DELAY_MIN);
        assert_eq!(resend_delay(1), RESEND_DELAY_MIN * 2);
        let delays: Vec<Duration> = (0..100).map(resend_delay).collect();
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!(delays.iter().all(|delay| *delay <= RESEND_DELAY_MAX));
        assert_eq!(resend_delay(u32::MAX), RESEND_DELAY_MAX);
    }

    /// Goal: a broker that does not confirm makes `publish` wait, rather
    /// than letting unconfirmed records pile up. Method: a producer aimed
    /// at a port nobody listens on; librdkafka accepts records into its
    /// queue but never confirms one, so the publish after the bound must
    /// stay pending with exactly the bound unconfirmed.
    #[tokio::test]
    async fn publishing_waits_at_the_unconfirmed_bound() {
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap();
        let mut producer = KafkaProducer::create(&nobody.to_string(), "power_topic").unwrap();
        let reading = Reading {
            node_id: "house".into(),
            power_w: 1.0,
            ts_ms: 1_577_145_600_000,
        };
        for _ in 0..PRODUCE_INFLIGHT_MAX {
            producer
                .publish(&reading)
                .now_or_never()
                .expect("below the bound a publish does not wait")
                .unwrap();
        }
        assert_eq!(producer.unconfirmed(), PRODUCE_INFLIGHT_MAX);
        assert!(
            producer.publish(&reading).now_or_never().is_none(),
            "at the bound a publish waits for a confirmation"
        );
        assert_eq!(producer.unconfirmed(), PRODUCE_INFLIGHT_MAX);
    }
}
