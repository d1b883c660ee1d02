//! Serves the dashboard crate's REST API and page over HTTP for `cloud` and
//! `demo`, on the cloud's own cache and its view of the edges, and the
//! cloud's `GET /metrics` beside them, to at most [`HTTP_CONNECTIONS_MAX`]
//! connections at once.

use crate::cli::HttpArgs;
use crate::command_error::CommandError;
use crate::shutdown::Shutdown;
use edgemeter_cloud::{Cache, Cloud};
use edgemeter_dashboard::{default_web_dir, router, view_links, DashboardState};
use edgemeter_env::WallClock;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most HTTP connections served at once. Each costs a task and its
/// buffers; an open dashboard page keeps one or two. 256 leave room for
/// many pages and API clients, while a flood of connections cannot take
/// the cloud's memory: past the bound, connections wait in the kernel's
/// listen backlog until one closes.
pub const HTTP_CONNECTIONS_MAX: usize = 256;

/// Binds `--http`, before anything else starts, so a busy port is the
/// first error and the address can be the first log line. Returns the bound
/// address (the real port when `--http` asked for port 0).
pub async fn bind(args: &HttpArgs) -> Result<(TcpListener, SocketAddr), CommandError> {
    let listener = TcpListener::bind(&args.http).await.map_err(|error| {
        CommandError::config(format!(
            "cannot serve the dashboard on {}: {error}; pass another --http ADDR",
            args.http
        ))
    })?;
    let address = listener
        .local_addr()
        .map_err(|error| CommandError::config(format!("--http {}: {error}", args.http)))?;
    Ok((listener, address))
}

/// Where the edgemeter-cloud package installs the page (deploy/README.md).
pub const PACKAGED_WEB_DIR: &str = "/usr/share/edgemeter/web";

/// The page directory: `--web-dir`, else `web/` here, else the checkout's,
/// else the package's ([`PACKAGED_WEB_DIR`]). A checkout that is gone (an
/// installed binary) falls through to the package's.
fn web_dir(args: &HttpArgs) -> PathBuf {
    if let Some(dir) = &args.web_dir {
        return dir.clone();
    }
    let here = PathBuf::from("web");
    if here.join("index.html").is_file() {
        return here;
    }
    let checkout = default_web_dir();
    let packaged = PathBuf::from(PACKAGED_WEB_DIR);
    if !checkout.join("index.html").is_file() && packaged.join("index.html").is_file() {
        return packaged;
    }
    checkout
}

/// Serves the API and the page on `listener` until shutdown.
pub fn serve<C: Cache, W: WallClock>(
    listener: TcpListener,
    cloud: Arc<Cloud<C, W>>,
    args: &HttpArgs,
    shutdown: Shutdown,
) -> Result<(), CommandError> {
    let liveness = {
        let cloud = cloud.clone();
        view_links(move || cloud.edge_views())
    };
    let state = DashboardState::new(cloud.cache().clone(), liveness)
        .with_price_eur_per_kwh(args.price_eur_per_kwh)
        .map_err(|error| CommandError::config(format!("--price-eur-per-kwh: {error}")))?
        .with_web_dir(web_dir(args));
    let metrics = crate::metrics::registry(crate::metrics::CloudMetrics {
        read: Arc::new(move || (cloud.counters(), cloud.edges_connected())),
    });
    let app = router(state).merge(crate::metrics::router(metrics));
    tokio::spawn(async move {
        let listener = BoundedListener::new(listener, HTTP_CONNECTIONS_MAX);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the dashboard server stopped");
        }
    });
    Ok(())
}

/// A TCP listener that accepts a connection only while fewer than its bound
/// are open.
pub struct BoundedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl BoundedListener {
    pub fn new(listener: TcpListener, connections_max: usize) -> BoundedListener {
        assert!(connections_max > 0);
        BoundedListener {
            listener,
            permits: Arc::new(Semaphore::new(connections_max)),
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = PermittedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (PermittedStream, SocketAddr) {
        // The permit first: without one, nothing is accepted, so waiting
        // connections stay in the kernel's backlog, not in our memory.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, address) = axum::serve::Listener::accept(&mut self.listener).await;
        let stream = PermittedStream {
            stream,
            _permit: permit,
        };
        (stream, address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection holding its permit until it is dropped.
pub struct PermittedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for PermittedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PermittedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one request on a kept-alive connection and reads its answer.
    async fn get(stream: &mut TcpStream) -> io::Result<String> {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 1024];
        while !reply.ends_with(b"\r\n\r\nok") {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            reply.extend_from_slice(&chunk[..read]);
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Goal: no more connections are served at once than the bound, and a
    /// waiting one is served as soon as another closes. Method: a bound of
    /// two, two kept-alive connections, and a third that must get no answer
    /// until one of the two is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_bound_wait_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(BoundedListener::new(listener, 2), app).await });

        let mut first = TcpStream::connect(address).await.unwrap();
        let mut second = TcpStream::connect(address).await.unwrap();
        assert!(get(&mut first).await.unwrap().starts_with("HTTP/1.1 200"));
        assert!(get(&mut second).await.unwrap().starts_with("HTTP/1.1 200"));

        let mut third = TcpStream::connect(address).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(500), get(&mut third)).await;
        assert!(
            waiting.is_err(),
            "a third connection was served: {waiting:?}"
        );
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            let mut reply = Vec::new();
            let mut chunk = [0u8; 1024];
            while !reply.ends_with(b"\r\n\r\nok") {
                let read = third.read(&mut chunk).await.unwrap();
                assert!(read > 0, "the waiting connection was closed");
                reply.extend_from_slice(&chunk[..read]);
            }
        })
        .await;
        assert!(served.is_ok(), "the waiting connection was never served");
        assert!(get(&mut second).await.is_ok(), "the second still works");
    }
}
