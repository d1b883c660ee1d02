//! `KafkaProducer`: the households' [`ReadingSink`] into Kafka.
//!
//! Each reading is one record on `power_topic`, keyed by household, so one
//! household's readings stay on one partition. The producer is idempotent,
//! so librdkafka's own retries never write a record twice nor reorder one.
//!
//! A publish hands the record to librdkafka at once and keeps its delivery
//! future; at most [`PRODUCE_INFLIGHT_MAX`] are unconfirmed. A record whose
//! delivery fails (the broker stayed down past librdkafka's delivery
//! timeout, [`DELIVERY_TIMEOUT`]) is sent again with backoff, never dropped,
//! and before any younger record not yet handed to librdkafka: the order
//! and retry decisions are [`ProduceQueue`]'s, shared with the simulated
//! households, and this file only moves records between it and librdkafka.
//! Younger records librdkafka already holds may still be delivered before
//! the resend (see [`edgemeter_memlog::produce_queue`]): after an outage
//! longer than the delivery timeout, Kafka holds a household's readings
//! out of order, and the edge keeps those that come after their window
//! closed as rejected.

use crate::bus::{check_broker, client_config, BrokerSetupError};
use edgemeter_memlog::produce_queue::{DELIVERY_TIMEOUT, RESEND_DELAY_MIN, UNCONFIRMED_MAX};
use edgemeter_memlog::sink::{ReadingSink, SinkError};
use edgemeter_memlog::ProduceQueue;
use edgemeter_wire::Reading;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Unconfirmed records at most: the shared queue's bound (see there).
pub const PRODUCE_INFLIGHT_MAX: usize = UNCONFIRMED_MAX;

/// The pause when librdkafka's own queue is full and nothing of ours is
/// in flight to wait for instead.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// One record as handed to librdkafka.
#[derive(Debug, Clone)]
struct Record {
    key: String,
    payload: Vec<u8>,
}

type Delivery = BoxFuture<'static, (u64, Result<(), KafkaError>)>;

pub struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
    queue: ProduceQueue<Record>,
    in_flight: FuturesUnordered<Delivery>,
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
            // librdkafka's default, stated so that the simulation's model
            // of it (and the queue's documentation) read the same number.
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        Ok(KafkaProducer {
            producer,
            topic: topic.to_owned(),
            queue: ProduceQueue::new(),
            in_flight: FuturesUnordered::new(),
        })
    }

    /// Records confirmed by the broker so far.
    pub fn delivered(&self) -> u64 {
        self.queue.delivered()
    }

    /// Hands librdkafka every record the queue lets go now. Stops early
    /// when librdkafka refuses one (its queue is full): the record keeps
    /// its place and goes with the next call.
    fn send_ready(&mut self) -> bool {
        while let Some((sequence, record)) = self.queue.poll_send(Instant::now()) {
            let message = FutureRecord::to(&self.topic)
                .key(&record.key)
                .payload(&record.payload);
            match self.producer.send_result(message) {
                Ok(delivery) => {
                    let future = async move {
                        let outcome = match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((error, _))) => Err(error),
                            Err(_) => Err(KafkaError::Canceled),
                        };
                        (sequence, outcome)
                    };
                    self.in_flight.push(future.boxed());
                }
                Err((error, _)) => {
                    if !matches!(
                        error,
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                    ) {
                        tracing::warn!(%error, "record not accepted by librdkafka; retrying");
                    }
                    self.queue.handle_refused(sequence);
                    return false;
                }
            }
        }
        true
    }

    /// Waits for the next thing that can move the queue on: a delivery
    /// outcome, the end of a backoff, or a pause after a refusal.
    async fn wait_for_progress(&mut self, refused: bool) {
        let resume_at = self.queue.poll_timeout();
        tokio::select! {
            Some(outcome) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                self.record_outcome(outcome);
            }
            _ = sleep_until_some(resume_at), if resume_at.is_some() => {}
            _ = tokio::time::sleep(if refused { QUEUE_FULL_PAUSE } else { RESEND_DELAY_MIN }),
                if self.in_flight.is_empty() && resume_at.is_none() => {}
        }
    }

    fn settle_ready(&mut self) {
        while let Some(Some(outcome)) = self.in_flight.next().now_or_never() {
            self.record_outcome(outcome);
        }
    }

    fn record_outcome(&mut self, (sequence, outcome): (u64, Result<(), KafkaError>)) {
        match outcome {
            Ok(()) => self.queue.handle_delivered(sequence, Instant::now()),
            Err(error) => {
                if !self.queue.retrying() {
                    tracing::warn!(%error, "delivery failed; sending it again with backoff, before younger readings");
                }
                self.queue.handle_failed(sequence, Instant::now());
            }
        }
    }

    /// Records not yet confirmed (waiting, in flight or to be sent again):
    /// what [`PRODUCE_INFLIGHT_MAX`] bounds.
    pub fn unconfirmed(&self) -> usize {
        self.queue.unconfirmed()
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl ReadingSink for KafkaProducer {
    async fn publish(&mut self, reading: &Reading) -> Result<(), SinkError> {
        self.settle_ready();
        while !self.queue.may_push() {
            let refused = !self.send_ready();
            self.wait_for_progress(refused).await;
        }
        self.queue.push(Record {
            key: reading.node_id.clone(),
            payload: reading.encode(),
        });
        self.send_ready();
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        loop {
            let refused = !self.send_ready();
            if self.unconfirmed() == 0 {
                return Ok(());
            }
            self.wait_for_progress(refused).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
