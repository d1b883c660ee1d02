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
        let producer: FutureProducer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Batch for up to 5 ms: at speed `max` this is what makes
            // throughput; at real time it adds 5 ms to a 2 s cadence.
            .set("linger.ms", "5")
            .set("reconnect.backoff.max.ms", "2000")
            .create()
            .map_err(setup_error)?;
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
            let doubled = RESEND_DELAY_MIN.saturating_mul(1 << attempt.min(16));
            tokio::time::sleep(doubled.min(RESEND_DELAY_MAX)).await;
        }
        for pending in failed {
            self.enqueue(pending).await;
        }
    }
}

impl ReadingSink for KafkaProducer {
    async fn publish(&mut self, reading: &Reading) -> Result<(), SinkError> {
        self.settle_ready();
        while self.in_flight.len() >= PRODUCE_INFLIGHT_MAX {
            self.settle_one().await;
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
