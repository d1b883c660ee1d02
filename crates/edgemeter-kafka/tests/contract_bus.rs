//! The `ReadingsBus` contract (`edgemeter-contract`'s `bus` suite) against
//! what deploys: `KafkaBus` over rdkafka and a real tansu broker. The same
//! suite runs against the model, `SimBus`, in `sim-tests/tests/
//! contract_bus.rs`; a behaviour that passes here and fails there is a
//! model that drifted from what deploys.
//!
//! Each behaviour gets a broker of its own. Records are produced with
//! rdkafka's producer, keyed, and flushed before the behaviour goes on; a
//! stall is a SIGSTOP of tansu (its connections stay open), a kill is a
//! SIGKILL, and the heal a SIGCONT or a restart on the same port and
//! storage.

mod common;

use common::Tansu;
use edgemeter_contract::bus::{self, BusFixture};
use edgemeter_kafka::bus::KafkaBus;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::Duration;

const TOPIC: &str = "contract_topic";

/// The partitions of the behaviours' topic: several, so that order within
/// a partition is what is checked, not order overall.
const PARTITIONS: u32 = 3;

struct KafkaFixture {
    _dir: tempfile::TempDir,
    tansu: Tansu,
    stalled: bool,
    killed: bool,
}

impl KafkaFixture {
    fn start() -> KafkaFixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let tansu = Tansu::start(dir.path());
        tansu.create_topic(TOPIC, PARTITIONS);
        KafkaFixture {
            _dir: dir,
            tansu,
            stalled: false,
            killed: false,
        }
    }
}

impl BusFixture for KafkaFixture {
    type Bus = KafkaBus;

    async fn produce(&mut self, key: &str, payloads: &[Vec<u8>]) {
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.tansu.address())
            .create()
            .expect("a producer");
        for payload in payloads {
            producer
                .send(BaseRecord::to(TOPIC).key(key).payload(payload))
                .map_err(|(error, _)| error)
                .expect("queued");
        }
        producer
            .flush(Duration::from_secs(30))
            .expect("the broker took the records");
    }

    async fn consumer(&mut self) -> KafkaBus {
        // One edge id for the fixture, so one consumer group.
        KafkaBus::connect(&self.tansu.address(), "contract", TOPIC)
            .await
            .expect("the bus connects")
    }

    async fn stall_broker(&mut self) {
        self.tansu.stall();
        self.stalled = true;
    }

    async fn kill_broker(&mut self) {
        self.tansu.kill();
        self.killed = true;
    }

    async fn heal_broker(&mut self) {
        if self.stalled {
            self.tansu.resume();
            self.stalled = false;
        }
        if self.killed {
            self.tansu.restart();
            self.killed = false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_within_a_partition() {
    bus::order_within_a_partition(&mut KafkaFixture::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_from_the_committed_offset() {
    bus::redelivery_from_the_committed_offset(&mut KafkaFixture::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_poll_on_silence() {
    bus::an_empty_poll_on_silence(&mut KafkaFixture::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker() {
    bus::a_stalled_broker(&mut KafkaFixture::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker() {
    bus::a_dead_broker(&mut KafkaFixture::start()).await;
}
