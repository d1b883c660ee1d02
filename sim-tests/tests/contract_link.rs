//! The `CloudLink` contract (`edgemeter-contract`'s `link` suite) against
//! the model: `SimLink` over turmoil TCP, inside a simulation. The same
//! suite runs against `NngLink` and NNG REP servers in `crates/edgemeter/
//! tests/contract_link.rs`; a behaviour that passes there and fails here is
//! a model that drifted from what deploys.
//!
//! The behaviour runs on a client host named as the edge; each node is a
//! host serving both link ports with the framing of `cloud_host.rs` (a
//! reply tagged with its request id, a probe of the link's TCP model
//! echoed at once) and the suite's rules ([`Served`]). Breaking a node's
//! pipes closes them from the node (the peer sees them end, as through a
//! proxy's reset); a stall holds the edge-node link (bytes held, not
//! dropped), a kill crashes the node's host and the heal releases or
//! restarts it. turmoil faults need the `Sim`, so they are queued and
//! applied by the loop that steps the simulation.

use edgemeter_contract::link::{self, LinkFixture, Served};
use edgemeter_edge::Channel;
use sim_tests::link::{LinkStats, LinkTimers, SimLink, DATA_PORT, HEARTBEAT_PORT, PROBE_ID};
use sim_tests::net::{read_frame, write_frame};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use turmoil::net::{TcpListener, TcpStream};

const EDGE_HOST: &str = "edge";

/// The nodes every behaviour runs against: two, so that resends may go to
/// another node and a node may die while the other serves.
const NODES: usize = 2;

/// Simulated time a behaviour may take before the run fails.
const SIM_DURATION: Duration = Duration::from_secs(600);

fn node_host(node: usize) -> String {
    format!("cloud-{node}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Stall(usize),
    Kill(usize),
    Heal(usize),
}

#[derive(Default)]
struct Faults {
    queued: VecDeque<Fault>,
    applied: usize,
}

/// What the node hosts share with the fixture: the suite's counters, the
/// data connections each node accepted that carried a request, and one
/// watch per node whose bump closes its open connections.
struct Shared {
    served: Served,
    data_connections: Mutex<Vec<usize>>,
    breaks: Vec<watch::Sender<u64>>,
}

struct SimFixture {
    shared: Arc<Shared>,
    faults: Arc<Mutex<Faults>>,
}

impl SimFixture {
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

impl LinkFixture for SimFixture {
    type Link = SimLink;

    fn nodes(&self) -> usize {
        NODES
    }

    fn served(&self) -> &Served {
        &self.shared.served
    }

    async fn link(&mut self, resend: Duration) -> SimLink {
        let nodes = (0..NODES).map(node_host).collect();
        let timers = LinkTimers {
            resend,
            ..LinkTimers::default()
        };
        SimLink::start_with(nodes, Arc::new(LinkStats::default()), timers)
    }

    fn data_connections(&self, node: usize) -> usize {
        self.shared.data_connections.lock().expect("connections")[node]
    }

    async fn break_pipes(&mut self, node: usize) {
        self.shared.breaks[node].send_modify(|count| *count += 1);
    }

    async fn stall(&mut self, node: usize) {
        self.apply(Fault::Stall(node)).await;
    }

    async fn kill(&mut self, node: usize) {
        self.apply(Fault::Kill(node)).await;
    }

    async fn heal(&mut self, node: usize) {
        self.apply(Fault::Heal(node)).await;
    }
}

/// One node's software: both ports, each connection served until it ends
/// or the node's pipes are broken.
async fn serve_node(node: usize, shared: Arc<Shared>) -> turmoil::Result {
    let heartbeat = TcpListener::bind(("0.0.0.0", HEARTBEAT_PORT)).await?;
    let data = TcpListener::bind(("0.0.0.0", DATA_PORT)).await?;
    tokio::task::spawn_local(accept(
        heartbeat,
        node,
        Channel::Heartbeat(0),
        shared.clone(),
    ));
    accept(data, node, Channel::Data, shared).await
}

async fn accept(
    listener: TcpListener,
    node: usize,
    channel: Channel,
    shared: Arc<Shared>,
) -> turmoil::Result {
    loop {
        let (stream, _) = listener.accept().await?;
        let mut broken = shared.breaks[node].subscribe();
        broken.mark_unchanged();
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            tokio::select! {
                () = serve_connection(stream, node, channel, shared) => {}
                _ = broken.changed() => {}
            }
        });
    }
}

async fn serve_connection(stream: TcpStream, node: usize, channel: Channel, shared: Arc<Shared>) {
    let (mut reader, mut writer) = stream.into_split();
    let mut counted = false;
    while let Ok(Some(frame)) = read_frame(&mut reader).await {
        if frame.len() < 8 {
            return;
        }
        if frame[..8] != PROBE_ID.to_be_bytes() {
            if channel == Channel::Data && !counted {
                counted = true;
                shared.data_connections.lock().expect("connections")[node] += 1;
            }
            let Some(reply) = shared.served.take(node, channel, &frame[8..]) else {
                continue;
            };
            let mut tagged = frame[..8].to_vec();
            tagged.extend_from_slice(&reply);
            if write_frame(&mut writer, &tagged).await.is_err() {
                return;
            }
        } else if write_frame(&mut writer, &frame).await.is_err() {
            return;
        }
    }
}

/// Runs one behaviour against fresh nodes.
fn run<B, Fut>(behaviour: B)
where
    B: FnOnce(SimFixture) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let shared = Arc::new(Shared {
        served: Served::default(),
        data_connections: Mutex::new(vec![0; NODES]),
        breaks: (0..NODES).map(|_| watch::channel(0).0).collect(),
    });
    let faults = Arc::new(Mutex::new(Faults::default()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .tick_duration(Duration::from_millis(10))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .simulation_duration(SIM_DURATION)
        .build();
    for node in 0..NODES {
        let shared = shared.clone();
        sim.host(node_host(node), move || serve_node(node, shared.clone()));
    }
    let fixture = SimFixture {
        shared,
        faults: faults.clone(),
    };
    let running = behaviour(fixture);
    sim.client(EDGE_HOST, async move {
        running.await;
        Ok(())
    });
    let mut stalled = [false; NODES];
    let mut killed = [false; NODES];
    loop {
        let next = faults.lock().expect("faults").queued.pop_front();
        if let Some(fault) = next {
            match fault {
                Fault::Stall(node) => {
                    sim.hold(EDGE_HOST, node_host(node));
                    stalled[node] = true;
                }
                Fault::Kill(node) => {
                    sim.crash(node_host(node));
                    killed[node] = true;
                }
                Fault::Heal(node) => {
                    if stalled[node] {
                        sim.release(EDGE_HOST, node_host(node));
                        stalled[node] = false;
                    }
                    if killed[node] {
                        sim.bounce(node_host(node));
                        killed[node] = false;
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
fn a_resend_after_the_pipe_breaks() {
    run(|mut fixture| async move { link::a_resend_after_the_pipe_breaks(&mut fixture).await });
}

#[test]
fn a_resend_after_the_resend_timer() {
    run(|mut fixture| async move { link::a_resend_after_the_resend_timer(&mut fixture).await });
}

#[test]
fn a_stalled_connection() {
    run(|mut fixture| async move { link::a_stalled_connection(&mut fixture).await });
}

#[test]
fn heartbeats_on_their_own_channel() {
    run(|mut fixture| async move { link::heartbeats_on_their_own_channel(&mut fixture).await });
}
