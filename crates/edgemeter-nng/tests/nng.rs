//! The NNG link and server against each other on loopback, in process,
//! with stub handlers: round trips on both sockets, many requests in
//! flight and their bounds, a cloud that is down or comes up late,
//! oversized requests and replies, resends, a handler that panics, and a
//! cloud that never replies.

use edgemeter_edge::{Channel, CloudLink, LinkError};
use edgemeter_nng::link::{NngLink, RESEND_INTERVAL};
use edgemeter_nng::server::{NngServer, RequestHandler, SERVER_CONTEXTS_MAX};
use edgemeter_nng::setup::MESSAGE_BYTES_MAX;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Echoes each request with its channel's name in front, after an
/// optional delay; panics on the request `panic`.
struct Echo {
    delay: Duration,
    in_flight: AtomicUsize,
    in_flight_max: AtomicUsize,
    /// Calls of the request `slow the first time`.
    slow_calls: AtomicUsize,
}

impl Echo {
    fn new(delay: Duration) -> Arc<Echo> {
        Arc::new(Echo {
            delay,
            in_flight: AtomicUsize::new(0),
            in_flight_max: AtomicUsize::new(0),
            slow_calls: AtomicUsize::new(0),
        })
    }
}

impl RequestHandler for Echo {
    async fn handle(&self, channel: Channel, request: Vec<u8>) -> Vec<u8> {
        if request == b"huge reply" {
            return vec![b'x'; MESSAGE_BYTES_MAX + 1];
        }
        if request == b"slow the first time" && self.slow_calls.fetch_add(1, Ordering::SeqCst) == 0
        {
            tokio::time::sleep(RESEND_INTERVAL + Duration::from_secs(2)).await;
        }
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
        request(&link, Channel::Heartbeat(0), b"hb").await.unwrap(),
        b"Heartbeat(0):hb"
    );
    assert_eq!(
        request(&link, Channel::Data, b"batch").await.unwrap(),
        b"Data:batch"
    );
}

/// Goal: many requests are served at once, not one after another.
/// Method: 200 requests to a handler that takes 100 ms each; the handler
/// counts how many it runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_are_in_flight_at_once() {
    let handler = Echo::new(Duration::from_millis(100));
    let (_server, link) = start(handler.clone());
    let link = Arc::new(link);
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
    for _ in 0..(edgemeter_nng::server::SERVER_CONTEXTS_MAX + 5) {
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
            > edgemeter_nng::server::SERVER_CONTEXTS_MAX as u64
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
    let outcome = tokio::time::timeout(
        Duration::from_millis(500),
        link.request(Channel::Heartbeat(0), b"hb".to_vec()),
    )
    .await;
    assert!(
        outcome.is_err(),
        "no reply can come from a down cloud: {outcome:?}"
    );
    let _server = NngServer::start(
        Echo::new(Duration::ZERO),
        "127.0.0.1",
        heartbeat_port,
        data_port,
    )
    .unwrap();
    // The abandoned request's context is reused; NNG redials within its
    // reconnect delay, so a few seconds is plenty.
    let reply = request(&link, Channel::Heartbeat(0), b"again")
        .await
        .unwrap();
    assert_eq!(reply, b"Heartbeat(0):again");
}

/// Goal: abandoned requests give their contexts back. Method: abandon far
/// more requests than the pool holds, then one must still go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_free_their_contexts() {
    let (_server, link) = start(Echo::new(Duration::from_millis(300)));
    for _ in 0..(edgemeter_nng::link::INFLIGHT_CONTEXTS_MAX + 20) {
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

/// Goal: a socket runs at most `SERVER_CONTEXTS_MAX` handlers at once,
/// however many requests arrive; the rest wait inside NNG, and are served.
/// Method: three times as many slow requests as contexts, all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_at_most_its_contexts_per_socket() {
    let handler = Echo::new(Duration::from_millis(300));
    let (_server, link) = start(handler.clone());
    let link = Arc::new(link);
    let requests: Vec<_> = (0..3 * SERVER_CONTEXTS_MAX)
        .map(|index| {
            let link = link.clone();
            tokio::spawn(async move {
                let body = format!("request-{index}");
                request(&link, Channel::Data, body.as_bytes()).await
            })
        })
        .collect();
    for handle in requests {
        handle.await.unwrap().expect("every request is served");
    }
    assert_eq!(
        handler.in_flight_max.load(Ordering::SeqCst),
        SERVER_CONTEXTS_MAX
    );
}

/// Goal: a message over `MESSAGE_BYTES_MAX` never reaches the handler (NNG
/// drops it and the connection before buffering it), and the server goes
/// on. Method: a plain REQ socket without the link's own size check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_never_reaches_the_handler() {
    use nng::options::{Options, RecvTimeout};
    let (server, link) = start(Echo::new(Duration::ZERO));
    let data_port = server.ports().data;
    let outcome = tokio::task::spawn_blocking(move || {
        let socket = nng::Socket::new(nng::Protocol::Req0).unwrap();
        socket
            .set_opt::<RecvTimeout>(Some(Duration::from_secs(2)))
            .unwrap();
        socket
            .dial(&format!("tcp://127.0.0.1:{data_port}"))
            .unwrap();
        socket
            .send(&vec![b'x'; MESSAGE_BYTES_MAX + 1][..])
            .map_err(|(_, error)| error)
            .unwrap();
        socket.recv().map(|reply| reply.as_slice().len())
    })
    .await
    .unwrap();
    assert!(outcome.is_err(), "an oversized request was answered");
    assert_eq!(server.counters().requests.load(Ordering::Relaxed), 0);
    assert_eq!(
        request(&link, Channel::Data, b"ok").await.unwrap(),
        b"Data:ok"
    );
}

/// Goal: the edge's link refuses a reply over `MESSAGE_BYTES_MAX` too: a
/// cloud (or whatever answers) cannot make the edge buffer more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_size_limit_never_reaches_the_edge() {
    let (_server, link) = start(Echo::new(Duration::ZERO));
    let outcome = tokio::time::timeout(
        Duration::from_secs(3),
        link.request(Channel::Data, b"huge reply".to_vec()),
    )
    .await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "an oversized reply was delivered"
    );
    assert_eq!(
        request(&link, Channel::Data, b"ok").await.unwrap(),
        b"Data:ok"
    );
}

/// Goal: NNG resends an unanswered request after `RESEND_INTERVAL`, not
/// after its 60-second default, so a request lost inside a cloud that
/// stays up is retried while the edge still waits for it. Method: the
/// handler sits on the first copy longer than the interval; the reply must
/// come from the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_is_resent_after_the_resend_interval() {
    let handler = Echo::new(Duration::ZERO);
    let (_server, link) = start(handler.clone());
    let reply = request(&link, Channel::Data, b"slow the first time")
        .await
        .unwrap();
    assert_eq!(reply, b"Data:slow the first time");
    assert_eq!(
        handler.slow_calls.load(Ordering::SeqCst),
        2,
        "the reply came before the first copy was answered, from the resend"
    );
}

/// Goal: a request that nothing ever answers ends with a timeout from the
/// link itself (the `AIO_TIMEOUT` backstop), even for a caller that sets
/// no timeout of its own. Method: a REP socket that takes the request and
/// never replies, and a link whose backstop is one second instead of 30;
/// the test's own deadline only turns a hang into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_ends_at_the_links_backstop() {
    use nng::options::{Options, RecvTimeout};
    let data_port = free_port();
    let silent = nng::Socket::new(nng::Protocol::Rep0).unwrap();
    silent
        .set_opt::<RecvTimeout>(Some(Duration::from_secs(10)))
        .unwrap();
    silent
        .listen(&format!("tcp://127.0.0.1:{data_port}"))
        .unwrap();
    let received = tokio::task::spawn_blocking(move || {
        let request = silent.recv().map(|message| message.as_slice().to_vec());
        (request, silent)
    });
    let backstop = Duration::from_secs(1);
    let link = NngLink::dial_with_backstop("127.0.0.1", free_port(), data_port, backstop).unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        link.request(Channel::Data, b"never answered".to_vec()),
    )
    .await
    .expect("the link's backstop ends the request on its own");
    assert_eq!(outcome, Err(LinkError::Timeout));
    let (request, _silent) = received.await.unwrap();
    assert_eq!(
        request.expect("the silent server took the request"),
        b"never answered",
        "the request was sent and went unanswered"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
