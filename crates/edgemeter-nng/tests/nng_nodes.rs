//! `NngLink` to several cloud nodes over real NNG on loopback.
//!
//! Goal: each heartbeat reaches its own node; the one data socket spreads
//! requests over every node; and when a node goes away with requests in
//! flight on its pipe, those requests are answered by another node (NNG
//! resends them there), not lost. Method: two `NngServer`s whose handlers
//! sign their replies; node B holds `slow` requests, then is closed while
//! they wait.

use edgemeter_edge::{Channel, CloudLink, LinkError};
use edgemeter_nng::cloud_nodes::CloudNode;
use edgemeter_nng::link::NngLink;
use edgemeter_nng::server::{NngServer, RequestHandler};
use std::sync::Arc;
use std::time::Duration;

/// Replies `NAME:body`; node B sits on `slow` for longer than the test.
struct Signed {
    name: &'static str,
}

impl RequestHandler for Signed {
    async fn handle(&self, _channel: Channel, request: Vec<u8>) -> Vec<u8> {
        if request == b"slow" && self.name == "b" {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let mut reply = format!("{}:", self.name).into_bytes();
        reply.extend_from_slice(&request);
        reply
    }
}

fn node(server: &NngServer) -> CloudNode {
    let ports = server.ports();
    CloudNode {
        host: "127.0.0.1".to_owned(),
        heartbeat_port: ports.heartbeat,
        data_port: ports.data,
    }
}

/// One request with a deadline, as the edge sends them.
async fn ask(link: &NngLink, channel: Channel, body: &[u8]) -> Result<String, LinkError> {
    match tokio::time::timeout(
        Duration::from_secs(20),
        link.request(channel, body.to_vec()),
    )
    .await
    {
        Ok(reply) => reply.map(|bytes| String::from_utf8(bytes).expect("text")),
        Err(_) => Err(LinkError::Timeout),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_spreads_over_the_nodes_and_survives_one_going_away() {
    let server_a = NngServer::start(Arc::new(Signed { name: "a" }), "127.0.0.1", 0, 0).unwrap();
    let server_b = NngServer::start(Arc::new(Signed { name: "b" }), "127.0.0.1", 0, 0).unwrap();
    let (node_a, node_b) = (node(&server_a), node(&server_b));
    let link = Arc::new(NngLink::dial_nodes(&[node_a.clone(), node_b.clone()]).unwrap());
    assert_eq!(link.nodes(), 2);
    assert_eq!(link.node_name(1), node_b.name());
    assert_eq!(
        ask(&link, Channel::Heartbeat(0), b"hb").await.unwrap(),
        "a:hb"
    );
    assert_eq!(
        ask(&link, Channel::Heartbeat(1), b"hb").await.unwrap(),
        "b:hb"
    );

    // The data socket's pipes come up on their own; wait until both have
    // answered, which also shows requests spread over them.
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let replies =
            futures::future::join_all((0..8).map(|_| ask(&link, Channel::Data, b"x"))).await;
        for reply in replies {
            answered_by.insert(reply.unwrap());
        }
        if answered_by.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answered_by,
        ["a:x".to_owned(), "b:x".to_owned()].into(),
        "both nodes take data requests"
    );

    // Requests wait on node B's pipe; node B goes away; node A answers them.
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let link = link.clone();
            tokio::spawn(async move { ask(&link, Channel::Data, b"slow").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stuck = waiting.iter().filter(|task| !task.is_finished()).count();
    assert!(stuck > 0, "some requests must be waiting on node B");
    server_b.close();
    for task in waiting {
        assert_eq!(task.await.unwrap().unwrap(), "a:slow");
    }
    let unanswered = tokio::time::timeout(
        Duration::from_secs(1),
        link.request(Channel::Heartbeat(1), b"hb".to_vec()),
    )
    .await;
    assert!(
        !matches!(unanswered, Ok(Ok(_))),
        "node B's heartbeat goes unanswered: {unanswered:?}"
    );
    assert_eq!(
        ask(&link, Channel::Heartbeat(0), b"hb").await.unwrap(),
        "a:hb"
    );
}
