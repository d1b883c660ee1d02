//! The `ReadingsBus` contract (`edgemeter-contract`'s `bus` suite) against
//! the model: `SimBus` over the simulated broker, inside turmoil. The same
//! suite runs against `KafkaBus` and tansu in `crates/edgemeter/tests/
//! contract_bus.rs`; a behaviour that passes there and fails here is a
//! model that drifted from what deploys.
//!
//! The behaviour runs on a client host named as the edge; the broker is
//! the simulation's own host. A fault the behaviour asks for is queued and
//! applied by the loop that steps the simulation, as the world applies its
//! timeline: a stall holds the edge-broker link (as the world's broker
//! stall does), a kill crashes the broker host, and the heal releases or
//! restarts it, with its log kept (the broker's storage outlives its
//! process, as Kafka's does).

use edgemeter_contract::bus::{self, BusFixture};
use sim_tests::broker::{run_broker, BrokerState, BROKER_HOST};
use sim_tests::bus::SimBus;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The client host: the edge's name, so a hold is the world's broker stall.
const EDGE_HOST: &str = "edge";

/// The one topic of the behaviours' broker, by number.
const CONTRACT_TOPIC: u32 = 0;

/// Simulated time a behaviour may take before the run fails.
const SIM_DURATION: Duration = Duration::from_secs(3_600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Stall,
    Kill,
    Heal,
}

/// Faults asked for and not yet applied, and how many were applied.
#[derive(Default)]
struct Faults {
    queued: VecDeque<Fault>,
    applied: usize,
}

struct SimFixture {
    state: BrokerState,
    faults: Arc<Mutex<Faults>>,
}

impl SimFixture {
    /// Queues `fault` and waits, in simulated time, until the stepping
    /// loop applied it.
    async fn apply(&mut self, fault: Fault) {
        let target = {
            let mut faults = self.faults.lock().expect("faults");
            faults.queued.push_back(fault);
            faults.applied + faults.queued.len()
        };
        while self.faults.lock().expect("faults").applied < target {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl BusFixture for SimFixture {
    type Bus = SimBus;

    async fn produce(&mut self, key: &str, payloads: &[Vec<u8>]) {
        self.state.with(|data| {
            for payload in payloads {
                data.logs[CONTRACT_TOPIC as usize]
                    .append(key.as_bytes(), payload.clone())
                    .expect("the log has room");
            }
        });
    }

    async fn consumer(&mut self) -> SimBus {
        // One group for the fixture, as one edge id is one group.
        SimBus::new(CONTRACT_TOPIC, "contract")
    }

    async fn stall_broker(&mut self) {
        self.apply(Fault::Stall).await;
    }

    async fn kill_broker(&mut self) {
        self.apply(Fault::Kill).await;
    }

    async fn heal_broker(&mut self) {
        self.apply(Fault::Heal).await;
    }
}

/// Runs one behaviour of the suite on a fresh simulated broker.
fn run<B, Fut>(behaviour: B)
where
    B: FnOnce(SimFixture) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let state = BrokerState::new(1);
    let faults = Arc::new(Mutex::new(Faults::default()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .tick_duration(Duration::from_millis(10))
        .simulation_duration(SIM_DURATION)
        .build();
    let broker_state = state.clone();
    sim.host(BROKER_HOST, move || run_broker(broker_state.clone()));
    let fixture = SimFixture {
        state,
        faults: faults.clone(),
    };
    // SimBus does no IO until polled, so the behaviour's future may be
    // made here and run on the client host.
    let running = behaviour(fixture);
    sim.client(EDGE_HOST, async move {
        running.await;
        Ok(())
    });
    let mut stalled = false;
    let mut killed = false;
    loop {
        let next = faults.lock().expect("faults").queued.pop_front();
        if let Some(fault) = next {
            match fault {
                Fault::Stall => {
                    sim.hold(EDGE_HOST, BROKER_HOST);
                    stalled = true;
                }
                Fault::Kill => {
                    sim.crash(BROKER_HOST);
                    killed = true;
                }
                Fault::Heal => {
                    if stalled {
                        sim.release(EDGE_HOST, BROKER_HOST);
                        stalled = false;
                    }
                    if killed {
                        sim.bounce(BROKER_HOST);
                        killed = false;
                    }
                }
            }
            faults.lock().expect("faults").applied += 1;
        }
        if sim.step().expect("the behaviour passes") {
            break;
        }
    }
}

#[test]
fn order_within_a_partition() {
    run(|mut fixture| async move { bus::order_within_a_partition(&mut fixture).await });
}

#[test]
fn redelivery_from_the_committed_offset() {
    run(|mut fixture| async move { bus::redelivery_from_the_committed_offset(&mut fixture).await });
}

#[test]
fn an_empty_poll_on_silence() {
    run(|mut fixture| async move { bus::an_empty_poll_on_silence(&mut fixture).await });
}

#[test]
fn a_stalled_broker() {
    run(|mut fixture| async move { bus::a_stalled_broker(&mut fixture).await });
}

#[test]
fn a_dead_broker() {
    run(|mut fixture| async move { bus::a_dead_broker(&mut fixture).await });
}
