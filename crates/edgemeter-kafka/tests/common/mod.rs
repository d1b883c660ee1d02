//! What the Kafka tests share: a tansu of the test's own holding readings
//! the production producer published, and readings to publish.

#![allow(dead_code)]

use edgemeter_kafka::KafkaProducer;
use edgemeter_memlog::sink::ReadingSink;
pub use edgemeter_testkit::Tansu;
use std::path::Path;

/// A tansu of the test's own (in `dir`) whose `power_topic` holds
/// `readings`, published by the production producer and flushed; test
/// logs go to the test's output when `TEST_LOG` sets a filter. Returns the
/// broker and the readings the producer saw delivered.
pub async fn broker_with_readings(
    dir: &Path,
    readings: &[edgemeter_wire::Reading],
) -> (Tansu, u64) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
        .with_test_writer()
        .try_init();
    let broker = Tansu::start(dir);
    let mut producer = KafkaProducer::connect(&broker.address(), "power_topic")
        .await
        .unwrap();
    for reading in readings {
        producer.publish(reading).await.unwrap();
    }
    producer.flush().await.unwrap();
    let delivered = producer.delivered();
    (broker, delivered)
}

/// `count` readings of seven households taking turns, 100 ms apart.
pub fn house_readings(count: usize) -> Vec<edgemeter_wire::Reading> {
    (0..count)
        .map(|index| edgemeter_wire::Reading {
            node_id: format!("house-{}", index % 7),
            power_w: index as f64,
            ts_ms: 1_577_145_600_000 + index as i64 * 100,
        })
        .collect()
}
