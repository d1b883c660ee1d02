//! The NNG link and server against each other on loopback, in process,
//! with stub handlers: round trips on both sockets, many requests in
//! flight, a cloud that is down or comes up late, oversized requests and a
//! handler that panics.

use edgemeter::nng_link::NngLink;
use edgemeter::nng_server::{NngServer, RequestHandler};
use edgemeter_edge::{Channel, CloudLink, LinkError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Echoes each request with its channel's name in front, after an
/// optional delay; panics on the request `panic`.
struct Echo {
    delay: Duration,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
}

impl Echo {
    fn new(delay: Duration) -> Arc<Echo> {
        Arc::new(Echo {
            delay,
            in_flight: AtomicUsize::new(0),
            in_flight_max: AtomicUsize::new(0),
        })
    }
}

impl RequestHandler for Echo {
    async fn handle(&self, channel: Channel, request: Vec<u8>) -> Vec<u8> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight_max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if request == b"panic" {
            panic!("the stub handler panics on request");
        }
        let mut reply = format!("{channel:?}:").into_bytes();
        reply.extend_from_slice(&request);
        reply
    }
}

fn start(handler: Arc<Echo>) -> (NngServer, NngLink) {
    let server = NngServer::start(handler, "127.0.0.1", 0, 0).expect("server starts");
    let ports = server.ports();
    assert_ne!(ports.heartbeat, 0);
    assert_ne!(ports.heartbeat, ports.data);
    let link = NngLink::dial("127.0.0.1", ports.heartbeat, ports.data).expect("link dials");
    (server, link)
}

/// The edge wraps every request in its own timeout; so do these tests.
async fn request(link: &NngLink, channel: Channel, body: &[u8]) -> Result<Vec<u8>, LinkError> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        link.request(channel, body.to_vec()),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(LinkError::Timeout),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_socket_answers_its_own_requests() {
    let (_server, link) = start(Echo::new(Duration::ZERO));
    assert_eq!(
        request(&link, Channel::Heartbeat, b"hb").await.unwrap(),
        b"Heartbeat:hb"
    );
    assert_eq!(
        request(&link, Channel::Data, b"batch").await.unwrap(),
        b"Data:batch"
    );
}

/// Goal: many requests are served at once, not one after another.
/// Method: 200 requests to a handler that takes 100 ms each; one at a time
/// they would take 20 s, concurrently well under 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_are_in_flight_at_once() {
    let handler = Echo::new(Duration::from_millis(100));
    let (_server, link) = start(handler.clone());
    let link = Arc::new(link);
    let started = Instant::now();
    let requests: Vec<_> = (0..200)
        .map(|index| {
            let link = link.clone();
            tokio::spawn(async move {
                let body = format!("request-{index}");
                let reply = request(&link, Channel::Data, body.as_bytes())
                    .await
                    .unwrap();
                assert_eq!(
                    reply,
                    format!("Data:{body}").into_bytes(),
                    "replies must not cross"
                );
            })
        })
        .collect();
    for handle in requests {
        handle.await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(handler.in_flight_max.load(Ordering::SeqCst) >= 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_frame_limit_is_refused_before_sending() {
    let (server, link) = start(Echo::new(Duration::ZERO));
    let oversized = vec![b'x'; edgemeter_wire::FRAME_BYTES_MAX + 1];
    let error = request(&link, Channel::Data, &oversized).await.unwrap_err();
    assert!(
        matches!(error, LinkError::Unreachable(ref reason) if reason.contains("frame limit")),
        "{error:?}"
    );
    assert_eq!(server.counters().requests.load(Ordering::Relaxed), 0);
    // The link still works afterwards.
    assert_eq!(
        request(&link, Channel::Data, b"ok").await.unwrap(),
        b"Data:ok"
    );
}

/// Goal: a handler that panics costs one error reply, not a context.
/// Method: more panicking requests than the server has contexts, then a
/// normal one, which must still be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_gets_an_error_reply_and_the_server_goes_on() {
    let (server, link) = start(Echo::new(Duration::ZERO));
    for _ in 0..(edgemeter::nng_server::SERVER_CONTEXTS_MAX + 5) {
        let reply = request(&link, Channel::Data, b"panic").await.unwrap();
        assert!(
            reply.starts_with(b"ERROR"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(
        request(&link, Channel::Data, b"fine").await.unwrap(),
        b"Data:fine"
    );
    assert!(
        server.counters().handler_panics.load(Ordering::Relaxed)
            > edgemeter::nng_server::SERVER_CONTEXTS_MAX as u64
    );
}

/// Goal: a cloud that is down is a timeout, not a hang or a crash, and a
/// cloud that comes up later is found by NNG's redial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_cloud_times_out_and_a_late_one_is_found() {
    let heartbeat_port = free_port();
    let data_port = free_port();
    let link = NngLink::dial("127.0.0.1", heartbeat_port, data_port)
        .expect("dialing a down cloud is fine");
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_millis(500),
        link.request(Channel::Heartbeat, b"hb".to_vec()),
    )
    .await;
    assert!(
        outcome.is_err(),
        "no reply can come from a down cloud: {outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let _server = NngServer::start(
        Echo::new(Duration::ZERO),
        "127.0.0.1",
        heartbeat_port,
        data_port,
    )
    .unwrap();
    // The abandoned request's context is reused; NNG redials within its
    // reconnect delay, so a few seconds is plenty.
    let reply = request(&link, Channel::Heartbeat, b"again").await.unwrap();
    assert_eq!(reply, b"Heartbeat:again");
}

/// Goal: abandoned requests give their contexts back. Method: abandon far
/// more requests than the pool holds, then one must still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_free_their_contexts() {
    let (_server, link) = start(Echo::new(Duration::from_millis(300)));
    for _ in 0..(edgemeter::nng_link::INFLIGHT_CONTEXTS_MAX + 20) {
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1),
            link.request(Channel::Data, b"slow".to_vec()),
        )
        .await;
        assert!(abandoned.is_err());
    }
    assert_eq!(
        request(&link, Channel::Data, b"last").await.unwrap(),
        b"Data:last"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
