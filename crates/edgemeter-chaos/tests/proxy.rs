//! The proxy on real loopback sockets. Goal: bytes pass both ways while
//! healthy; `cut` closes live connections and refuses new ones until
//! `heal`; `stall` holds bytes back for its time; `reset` closes live
//! connections but accepts new ones; connections and control lines stay
//! within their bounds. Method: an echo server as the target, a client
//! through the proxy, commands over the control socket.

use edgemeter_chaos::control::CONTROL_LINE_BYTES_MAX;
use edgemeter_chaos::proxy::{self, CONNECTIONS_MAX};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every wait of the test, so a broken proxy fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    address
}

async fn start_proxy(target: SocketAddr) -> (SocketAddr, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addresses = (
        listener.local_addr().unwrap(),
        control.local_addr().unwrap(),
    );
    tokio::spawn(proxy::run(
        listener,
        target,
        control,
        std::future::pending(),
    ));
    addresses
}

async fn command(control: SocketAddr, line: &str) -> String {
    let stream = TcpStream::connect(control).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    let mut reader = BufReader::new(reader);
    tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut reply))
        .await
        .unwrap()
        .unwrap();
    reply.trim().to_owned()
}

/// Sends `bytes` and reads the echo; `None` when the connection is closed.
async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> Option<Vec<u8>> {
    stream.write_all(bytes).await.ok()?;
    let mut echo = vec![0u8; bytes.len()];
    match tokio::time::timeout(STEP_TIMEOUT, stream.read_exact(&mut echo)).await {
        Ok(Ok(_)) => Some(echo),
        Ok(Err(_)) => None,
        Err(_) => panic!("no echo and no close within {STEP_TIMEOUT:?}"),
    }
}

/// Heals the link and checks that a new connection carries bytes again.
async fn heal_and_round_trip(control: SocketAddr, listen: SocketAddr) {
    assert_eq!(command(control, "heal").await, "ok");
    let mut client = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        round_trip(&mut client, b"healed").await.as_deref(),
        Some(&b"healed"[..])
    );
}

#[tokio::test]
async fn cut_stall_reset_and_heal_act_on_the_link() {
    let target = echo_server().await;
    let (listen, control) = start_proxy(target).await;

    let mut client = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        round_trip(&mut client, b"hello").await.as_deref(),
        Some(&b"hello"[..])
    );

    assert_eq!(command(control, "stall 300").await, "ok");
    let started = Instant::now();
    assert_eq!(
        round_trip(&mut client, b"slow").await.as_deref(),
        Some(&b"slow"[..])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the stall held bytes back"
    );

    assert_eq!(command(control, "reset").await, "ok");
    assert_eq!(
        round_trip(&mut client, b"gone").await,
        None,
        "reset closes live connections"
    );
    let mut client = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        round_trip(&mut client, b"again").await.as_deref(),
        Some(&b"again"[..])
    );

    assert_eq!(command(control, "cut").await, "ok");
    assert_eq!(
        round_trip(&mut client, b"cut").await,
        None,
        "cut closes live connections"
    );
    let mut refused = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        round_trip(&mut refused, b"new").await,
        None,
        "cut refuses new ones"
    );

    heal_and_round_trip(control, listen).await;

    assert!(command(control, "stall forever").await.starts_with("error"));
}

/// Goal: at most `CONNECTIONS_MAX` connections are forwarded at once; the
/// next one waits until one of them closes, and is served then. Method:
/// that many clients, each shown to be forwarded by an echo, then one more
/// whose bytes get no echo until a client closes.
#[tokio::test]
async fn a_connection_past_the_bound_waits_until_one_closes() {
    let target = echo_server().await;
    let (listen, _control) = start_proxy(target).await;
    let mut clients = Vec::with_capacity(CONNECTIONS_MAX);
    for _ in 0..CONNECTIONS_MAX {
        let mut client = TcpStream::connect(listen).await.unwrap();
        assert_eq!(
            round_trip(&mut client, b"in").await.as_deref(),
            Some(&b"in"[..])
        );
        clients.push(client);
    }
    // Accepted by the kernel into the listen backlog, not by the proxy.
    let mut waiting = TcpStream::connect(listen).await.unwrap();
    waiting.write_all(b"waiting").await.unwrap();
    let mut echo = [0u8; 7];
    // A negative check: a slow machine can only make it pass wrongly, not
    // fail wrongly.
    let early =
        tokio::time::timeout(Duration::from_millis(500), waiting.read_exact(&mut echo)).await;
    assert!(
        early.is_err(),
        "connection {} was forwarded while {CONNECTIONS_MAX} lived: {early:?}",
        CONNECTIONS_MAX + 1
    );
    drop(clients.pop());
    tokio::time::timeout(STEP_TIMEOUT, waiting.read_exact(&mut echo))
        .await
        .expect("the waiting connection is served once another closes")
        .unwrap();
    assert_eq!(&echo, b"waiting");
    for client in &mut clients {
        assert_eq!(
            round_trip(client, b"still").await.as_deref(),
            Some(&b"still"[..])
        );
    }
}

/// Goal: a control line of `CONTROL_LINE_BYTES_MAX` bytes is obeyed; one
/// byte more is refused, with an error naming the limit, and not obeyed;
/// the proxy goes on serving control clients and connections. Method:
/// commands padded with spaces to the limit and past it (the parser
/// ignores the spaces), each checked by its effect on a connection.
#[tokio::test]
async fn a_control_line_over_its_bound_is_refused_and_the_proxy_goes_on() {
    let target = echo_server().await;
    let (listen, control) = start_proxy(target).await;
    // `command` adds the newline, which counts.
    let padded = |word: &str, bytes: usize| format!("{word:<width$}", width = bytes - 1);

    assert_eq!(
        command(control, &padded("cut", CONTROL_LINE_BYTES_MAX)).await,
        "ok"
    );
    let mut client = TcpStream::connect(listen).await.unwrap();
    assert_eq!(round_trip(&mut client, b"cut").await, None, "the cut holds");

    let refused = command(control, &padded("heal", CONTROL_LINE_BYTES_MAX + 1)).await;
    assert_eq!(
        refused,
        format!("error: line longer than {CONTROL_LINE_BYTES_MAX} bytes")
    );
    let mut client = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        round_trip(&mut client, b"still cut").await,
        None,
        "the refused line was not obeyed"
    );

    heal_and_round_trip(control, listen).await;
}
