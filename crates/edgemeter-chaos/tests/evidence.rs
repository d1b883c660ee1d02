//! The checker's walk of a real Redis, a redis-server of the test's own on
//! a free loopback port (never 6379): it reads every tuple key within its
//! limits, and refuses a Redis with more keys, or needing more SCAN rounds,
//! than those limits rather than reading on.

use edgemeter_chaos::evidence::{cloud_tuples, ScanLimits, SCAN_COUNT, TUPLE_PATTERN};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Connection attempts while the server starts, 50 ms apart: 10 s in all.
const READY_ATTEMPTS_MAX: u32 = 200;
const READY_PAUSE: Duration = Duration::from_millis(50);

/// A redis-server with persistence off, killed when dropped.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        assert_ne!(port, 6379, "never the default Redis port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let server = RedisServer { port, child };
        for _ in 0..READY_ATTEMPTS_MAX {
            let answered = server
                .try_connection()
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if answered.is_ok() {
                return server;
            }
            std::thread::sleep(READY_PAUSE);
        }
        panic!("redis-server did not answer on port {port} within 10 s");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    /// Stores `count` keys under the tuple pattern, and one key outside it
    /// that the walk must not count.
    fn fill(&self, count: usize) {
        let prefix = TUPLE_PATTERN.trim_end_matches('*');
        let mut command = redis::cmd("MSET");
        for number in 0..count {
            command.arg(format!("{prefix}{number}")).arg("not a tuple");
        }
        command.arg("em:edges").arg("not a tuple key");
        let mut connection = self.try_connection().expect("the test's redis-server");
        command.query::<()>(&mut connection).unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Goal: the walk reads up to its key limit and refuses one key more,
/// with an error naming the limit. Method: 20 tuple keys, walked with a
/// limit of 20 and of 19.
#[test]
fn the_walk_refuses_more_tuple_keys_than_its_limit() {
    let redis = RedisServer::start();
    redis.fill(20);
    let limits = |keys_max| ScanLimits {
        keys_max,
        ..ScanLimits::default()
    };
    let (tuples, malformed) = cloud_tuples(&redis.url(), limits(20)).unwrap();
    assert_eq!(
        (tuples.len(), malformed.len()),
        (0, 20),
        "every key under the pattern, none outside it"
    );
    let error = cloud_tuples(&redis.url(), limits(19)).unwrap_err();
    assert!(error.contains("more tuple keys than 19"), "{error}");
}

/// Goal: the walk stops after its SCAN round limit instead of following
/// the cursor on. Method: keys enough for several rounds of `SCAN_COUNT`,
/// walked with a limit of two rounds, then with the checker's limits.
#[test]
fn the_walk_refuses_more_scan_rounds_than_its_limit() {
    let redis = RedisServer::start();
    let keys = 5 * SCAN_COUNT;
    redis.fill(keys);
    let two_rounds = ScanLimits {
        rounds_max: 2,
        ..ScanLimits::default()
    };
    let error = cloud_tuples(&redis.url(), two_rounds).unwrap_err();
    assert!(error.contains("within 2 rounds"), "{error}");
    let (_, malformed) = cloud_tuples(&redis.url(), ScanLimits::default()).unwrap();
    assert_eq!(malformed.len(), keys);
}
