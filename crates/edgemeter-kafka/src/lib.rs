//! `edgemeter-kafka` carries EdgeMeter's readings over Kafka (tansu in the
//! tests, any Kafka-protocol broker in deployment) with rdkafka:
//!
//! - [`bus`]: [`KafkaBus`], the edge's `ReadingsBus`: a consumer group,
//!   manual commits of what the edge stored, end-of-partition confirmation
//!   and consumer lag.
//! - [`producer`]: [`KafkaProducer`], the households' idempotent sink,
//!   driving the shared `ProduceQueue` (`edgemeter-memlog`) over
//!   librdkafka.
//!
//! The simulation replaces both with models (`sim-tests`' `SimBus` and
//! households host, the latter on the same `ProduceQueue`);
//! `edgemeter-contract`'s bus suite holds `SimBus` and [`KafkaBus`] to the
//! same behaviour (`tests/contract_bus.rs` here).

pub mod bus;
pub mod producer;

pub use bus::KafkaBus;
pub use producer::KafkaProducer;
