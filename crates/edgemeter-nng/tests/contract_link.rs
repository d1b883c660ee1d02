//! The `CloudLink` contract (`edgemeter-contract`'s `link` suite) against
//! what deploys: `NngLink` (NNG REQ sockets) and `NngServer` (NNG REP) on
//! loopback. The same suite runs against the model, `SimLink`, in
//! `sim-tests/tests/contract_link.rs`; a behaviour that passes here and
//! fails there is a model that drifted from what deploys.
//!
//! Each node is an `NngServer` whose handler follows the suite's rules
//! ([`Served`]); a swallowed request is a handler that never returns, so
//! its context never replies. Every port of every node sits behind a
//! [`LinkProxy`] of its own, which is how the faults are made: a break is
//! a reset of the node's proxies, a stall holds their bytes, a kill cuts
//! them (connections closed, new ones refused). The link's resend time is
//! the suite's, set with `NngLink::dial_nodes_with_timers`.

use edgemeter_contract::link::{self, LinkFixture, Served};
use edgemeter_edge::Channel;
use edgemeter_nng::cloud_nodes::CloudNode;
use edgemeter_nng::link::{NngLink, AIO_TIMEOUT};
use edgemeter_nng::server::{NngServer, RequestHandler};
use edgemeter_testkit::LinkProxy;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Two nodes, as in the model's runner.
const NODES: usize = 2;

struct NodeHandler {
    node: usize,
    served: Arc<Served>,
}

impl RequestHandler for NodeHandler {
    fn handle(
        &self,
        channel: Channel,
        request: Vec<u8>,
    ) -> impl std::future::Future<Output = Vec<u8>> + Send {
        let answer = self.served.take(self.node, channel, &request);
        async move {
            match answer {
                Some(reply) => reply,
                // A reply that never comes: the context stays busy.
                None => std::future::pending().await,
            }
        }
    }
}

struct Node {
    _server: NngServer,
    heartbeat: LinkProxy,
    data: LinkProxy,
}

impl Node {
    fn proxies(&self) -> [&LinkProxy; 2] {
        [&self.heartbeat, &self.data]
    }
}

struct NngFixture {
    served: Arc<Served>,
    nodes: Vec<Node>,
}

impl NngFixture {
    async fn start() -> NngFixture {
        let served = Arc::new(Served::default());
        let mut nodes = Vec::new();
        for node in 0..NODES {
            let handler = Arc::new(NodeHandler {
                node,
                served: served.clone(),
            });
            let server = NngServer::start(handler, "127.0.0.1", 0, 0).expect("server starts");
            let ports = server.ports();
            let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            nodes.push(Node {
                heartbeat: LinkProxy::start(at(ports.heartbeat)).await,
                data: LinkProxy::start(at(ports.data)).await,
                _server: server,
            });
        }
        NngFixture { served, nodes }
    }
}

impl LinkFixture for NngFixture {
    type Link = NngLink;

    fn nodes(&self) -> usize {
        NODES
    }

    fn served(&self) -> &Served {
        &self.served
    }

    async fn link(&mut self, resend: Duration) -> NngLink {
        let nodes: Vec<CloudNode> = self
            .nodes
            .iter()
            .map(|node| CloudNode {
                host: "127.0.0.1".to_owned(),
                heartbeat_port: node.heartbeat.port(),
                data_port: node.data.port(),
            })
            .collect();
        NngLink::dial_nodes_with_timers(&nodes, resend, AIO_TIMEOUT).expect("the link dials")
    }

    fn data_connections(&self, node: usize) -> usize {
        self.nodes[node].data.connections()
    }

    async fn break_pipes(&mut self, node: usize) {
        for proxy in self.nodes[node].proxies() {
            proxy.reset();
        }
    }

    async fn stall(&mut self, node: usize) {
        for proxy in self.nodes[node].proxies() {
            proxy.stall();
        }
    }

    async fn kill(&mut self, node: usize) {
        for proxy in self.nodes[node].proxies() {
            proxy.cut();
        }
    }

    async fn heal(&mut self, node: usize) {
        for proxy in self.nodes[node].proxies() {
            proxy.heal();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_the_pipe_breaks() {
    link::a_resend_after_the_pipe_breaks(&mut NngFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_the_resend_timer() {
    link::a_resend_after_the_resend_timer(&mut NngFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection() {
    link::a_stalled_connection(&mut NngFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_on_their_own_channel() {
    link::heartbeats_on_their_own_channel(&mut NngFixture::start().await).await;
}
