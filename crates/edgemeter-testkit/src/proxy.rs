//! [`LinkProxy`]: a loopback TCP proxy in front of one server port, so that
//! a test can break, stall and cut the connections of a real client (NNG,
//! say) without touching the client or the server.
//!
//! - `reset` closes every open connection (the client sees them end) and
//!   accepts new ones as before: a broken pipe.
//! - `stall` holds bytes both ways: what each direction read stays in its
//!   buffer, nothing more is read, and the connections stay open, so the
//!   kernel's buffers fill and both ends see a silent, live connection.
//! - `cut` closes every connection and refuses new ones (each is accepted
//!   and closed at once): a server that is down.
//! - `heal` ends a stall (held bytes flow on) and a cut.
//!
//! `connections` counts the connections accepted while not cut: a client's
//! redial shows there. Bounded as edgemeter-chaos's proxy is: each
//! direction of a connection owns one buffer of [`BUFFER_BYTES`]; the
//! proxy lives as long as its handle (its tasks stop when it drops).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes read at a time per direction.
pub const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    /// Bumped by a reset or a cut: connections of an older one close.
    generation: u64,
    stalled: bool,
    cut: bool,
}

/// A running proxy; dropping it stops it.
pub struct LinkProxy {
    address: SocketAddr,
    state: watch::Sender<State>,
    connections: Arc<AtomicUsize>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free loopback port and forwards to `target`. Must be
    /// called inside a tokio runtime.
    pub async fn start(target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback port for the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let (state, watching) = watch::channel(State::default());
        let connections = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio::spawn(accept_loop(listener, target, watching, connections.clone()));
        LinkProxy {
            address,
            state,
            connections,
            acceptor,
        }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.state.send_modify(|state| state.generation += 1);
    }

    pub fn stall(&self) {
        self.state.send_modify(|state| state.stalled = true);
    }

    pub fn cut(&self) {
        self.state.send_modify(|state| {
            state.generation += 1;
            state.cut = true;
        });
    }

    pub fn heal(&self) {
        self.state.send_modify(|state| {
            state.stalled = false;
            state.cut = false;
        });
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        // Every connection task ends with the state channel's sender.
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Receiver<State>,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let now = *state.borrow();
        if now.cut {
            drop(client);
            continue;
        }
        connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(forward(client, target, now.generation, state.clone()));
    }
}

async fn forward(
    client: TcpStream,
    target: SocketAddr,
    generation: u64,
    state: watch::Receiver<State>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
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
async fn ended(mut state: watch::Receiver<State>, generation: u64) {
    loop {
        if state.borrow_and_update().generation != generation {
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
    mut state: watch::Receiver<State>,
) {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        let count = match source.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        // Held while stalled; nothing more is read meanwhile.
        while state.borrow_and_update().stalled {
            if state.changed().await.is_err() {
                return;
            }
        }
        if target.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}
