//! `edgemeter-testkit` owns what the workspace's tests and benches need to
//! run against a real Redis: a `redis-server` of the test's own, on a free
//! loopback port (never the machine's 6379, which may hold someone else's
//! data), with persistence off, in a directory of its own, killed when its
//! handle drops. Stopping and restarting it is how a test makes Redis go
//! away and come back empty.
//!
//! [`RedisCluster`] (module `cluster`) is the same for a Redis Cluster of
//! three primaries, one of which can be killed and restarted empty.
//! [`Tansu`] is a Kafka-protocol broker of the test's own, and [`Process`]
//! any child process a test starts, killed when its handle drops.
//! [`LinkProxy`] (module `proxy`) is a loopback TCP proxy that breaks,
//! stalls and cuts a real client's connections to a real server.
//!
//! A dev-dependency only: nothing that ships depends on it.

mod cluster;
mod process;
mod proxy;
mod tansu;

pub use cluster::{RedisCluster, CLUSTER_OK_TIMEOUT, NODE_TIMEOUT, PRIMARIES};
pub use process::{wait_until, Process};
pub use proxy::LinkProxy;
pub use tansu::{tansu_binary, tansu_broker_args, tansu_topic_args, Tansu};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was started. A
/// loaded CI machine has taken seconds; a server that needs longer is
/// broken.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between two readiness probes.
const PROBE_PAUSE: Duration = Duration::from_millis(50);

/// The default Redis port, which tests must never use.
const REDIS_DEFAULT_PORT: u16 = 6379;

/// A loopback port the OS reports free now. Another process may take it
/// before the caller binds it; tests accept that small race.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A running (or stopped) `redis-server` of the test's own.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Its working directory; nothing is written there with persistence
    /// off, but Redis wants one, and it must not be shared.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let port = free_port();
        assert_ne!(port, REDIS_DEFAULT_PORT, "never the default Redis port");
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().expect("a directory for redis-server"),
        };
        server.restart();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs, for a bench to read its CPU
    /// time.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port, empty. Stops it first if
    /// it still runs.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn_redis_server(
            self.port,
            self.dir.path(),
            &[],
            "redis-server",
        ));
    }

    /// Kills the server and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A synchronous connection, for a test to look inside.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection()
            .expect("a connection to the test's redis-server")
    }

    pub fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }
}

/// Starts `redis-server` on `port` in `dir` with persistence off and
/// `extra` arguments, and waits until it answers PING; `what` names it in
/// the failure. The one way the testkit starts a server, alone or as a
/// cluster node.
fn spawn_redis_server(port: u16, dir: &Path, extra: &[&str], what: &str) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(extra)
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (apt-get install redis-server; bash ci/test.sh does)");
    let deadline = Instant::now() + START_TIMEOUT;
    while !answers_ping(port) {
        assert!(
            Instant::now() < deadline,
            "{what} on port {port} did not answer PING within {START_TIMEOUT:?}"
        );
        std::thread::sleep(PROBE_PAUSE);
    }
    child
}

/// PING over a raw socket: answers before any client library is
/// involved, so a failure here is the server's.
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a started server answers, a stopped one does not, and a
    /// restarted one answers again, empty. Method: a key written before
    /// the restart, read after it.
    #[test]
    fn a_server_stops_and_restarts_empty() {
        let mut server = RedisServer::start();
        assert_ne!(server.port(), REDIS_DEFAULT_PORT);
        let mut connection = server.connection();
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query::<()>(&mut connection)
            .unwrap();
        server.stop();
        assert!(!answers_ping(server.port()));
        assert!(server.try_connection().is_err());
        server.restart();
        let value: Option<String> = redis::cmd("GET")
            .arg("k")
            .query(&mut server.connection())
            .unwrap();
        assert_eq!(value, None, "a restarted server is empty");
    }
}
