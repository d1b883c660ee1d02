//! A small TCP proxy for one port pair: every connection accepted on the
//! listen address is forwarded to the target, and the control socket can
//! cut, stall, reset and heal the link ([`crate::control`]).
//!
//! Bounded at the door: at most [`CONNECTIONS_MAX`] connections live at
//! once (a semaphore permit is taken before each accept and moved into the
//! connection's task), and each direction of a connection owns one buffer
//! of [`BUFFER_BYTES`].

use crate::control::{Command, CONTROL_LINE_BYTES_MAX};
use crate::link_state::LinkState;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// Connections alive at once. The edge opens a handful of NNG pipes (one
/// per socket, redialled after a break), and each Kafka client two or three
/// (bootstrap, broker, group coordinator); 64 leaves room for redials
/// racing closes, and beyond it new connections wait in the listen backlog.
pub const CONNECTIONS_MAX: usize = 64;

/// Bytes read at a time per direction: one batch frame of the edge fits in
/// a few reads, and 64 connections × 2 directions stay at 8 MiB.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// How long a control client may take to send its line before it is
/// dropped; the control loop serves one client at a time.
pub const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept (out of file descriptors, say), so the loop
/// does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

const _: () = assert!(CONNECTIONS_MAX > 0 && BUFFER_BYTES >= 1024);

/// Runs the proxy until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    target: SocketAddr,
    control: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let (state_sender, state_receiver) = watch::channel(LinkState::default());
    tokio::select! {
        () = accept_loop(listener, target, state_receiver) => {}
        () = control_loop(control, state_sender) => {}
        () = shutdown => {}
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Receiver<LinkState>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                eprintln!("edgemeter-chaos proxy: accept failed: {error}");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let now = *state.borrow();
        if now.cut {
            // Refused: closed at once, as a cut link would.
            drop(client);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            forward(client, target, now.generation, state).await;
            drop(permit);
        });
    }
}

/// Forwards one connection until either side closes or the link state
/// ends it (a cut or a reset).
async fn forward(
    client: TcpStream,
    target: SocketAddr,
    generation: u64,
    state: watch::Receiver<LinkState>,
) {
    let server = match TcpStream::connect(target).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("edgemeter-chaos proxy: cannot reach {target}: {error}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_reader, client_writer) = client.into_split();
    let (server_reader, server_writer) = server.into_split();
    tokio::select! {
        () = ended(state.clone(), generation) => {}
        () = pump(client_reader, server_writer, state.clone()) => {}
        () = pump(server_reader, client_writer, state) => {}
    }
}

/// Resolves when a connection of `generation` must close.
async fn ended(mut state: watch::Receiver<LinkState>, generation: u64) {
    loop {
        if state.borrow_and_update().ends(generation) {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction; returns at EOF or on an error.
async fn pump(
    mut source: impl AsyncRead + Unpin,
    mut target: impl AsyncWrite + Unpin,
    state: watch::Receiver<LinkState>,
) {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let count = match source.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        assert!(count <= BUFFER_BYTES);
        wait_while_stalled(state.clone()).await;
        if target.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}

/// Returns once no stall is in force (it ended, or `heal` lifted it).
async fn wait_while_stalled(mut state: watch::Receiver<LinkState>) {
    loop {
        let until = state.borrow_and_update().stalled_until;
        let Some(until) = until.filter(|until| *until > Instant::now()) else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// Serves control clients one at a time: a line in, a line out.
async fn control_loop(control: TcpListener, state: watch::Sender<LinkState>) {
    loop {
        let stream = match control.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("edgemeter-chaos proxy: control accept failed: {error}");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        if tokio::time::timeout(CONTROL_READ_TIMEOUT, serve_control(stream, &state))
            .await
            .is_err()
        {
            eprintln!("edgemeter-chaos proxy: a control client was too slow; dropped");
        }
    }
}

/// Handles the lines of one control client until it closes.
async fn serve_control(stream: TcpStream, state: &watch::Sender<LinkState>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    loop {
        let mut line = String::new();
        let limit = CONTROL_LINE_BYTES_MAX as u64 + 1;
        match (&mut reader).take(limit).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(count) if count > CONTROL_LINE_BYTES_MAX => {
                let refusal = format!("error: line longer than {CONTROL_LINE_BYTES_MAX} bytes\n");
                let _ = writer.write_all(refusal.as_bytes()).await;
                return;
            }
            Ok(_) => {}
        }
        let reply = match Command::parse(&line) {
            Ok(command) => {
                state.send_modify(|link| *link = link.apply(command, Instant::now()));
                eprintln!("edgemeter-chaos proxy: {command:?}");
                "ok\n".to_owned()
            }
            Err(error) => format!("error: {error}\n"),
        };
        if writer.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
