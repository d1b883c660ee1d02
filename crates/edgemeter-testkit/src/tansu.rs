//! How to run tansu, the Kafka-protocol broker the tests and benches
//! start: where its binary is, the arguments of a broker on one loopback
//! URL, and [`Tansu`], a broker of the test's own on a free port whose log
//! the test reads in its assertions.

use crate::process::{wait_until, Process};
use crate::{free_port, START_TIMEOUT};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary: `TANSU_BIN`, else `~/.cargo/bin/tansu`, else the
/// first on `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    let on_path = std::env::var_os("PATH").map(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|path| path.exists())
    });
    on_path.flatten().unwrap_or_else(|| {
        panic!(
            "tansu not found: set TANSU_BIN or run `cargo install tansu --features dynostore,libsql --locked` \
             (bash ci/test.sh does)"
        )
    })
}

/// The arguments of `tansu broker` listening on `url` (`tcp://HOST:PORT`).
///
/// SQLite storage, not `memory://`: tansu 0.6's memory engine answers a
/// fetch only with batches that start at or after the fetch offset, so a
/// consumer resuming at a committed offset inside a producer batch never
/// gets the rest of that batch (tansu-storage `dynostore.rs`, `fetch`). The
/// SQL engines fetch record by record and resume exactly.
pub fn tansu_broker_args(url: &str) -> Vec<String> {
    // Relative to the broker's working directory: tansu 0.6 prefixes even
    // an absolute path with it.
    let storage = "sqlite://tansu.db".to_owned();
    [
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        &storage,
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// The arguments of `tansu topic create` for `topic` with `partitions`,
/// on the broker at `url`.
pub fn tansu_topic_args(url: &str, topic: &str, partitions: u32) -> Vec<String> {
    [
        "topic",
        "create",
        topic,
        "--broker",
        url,
        "--partitions",
        &partitions.to_string(),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// A tansu Kafka-protocol broker with SQLite storage on a free port,
/// with `power_topic` created with three partitions.
pub struct Tansu {
    pub port: u16,
    process: Process,
    /// The broker's working directory, where its storage lives.
    dir: PathBuf,
}

impl Tansu {
    pub fn start(dir: &Path) -> Tansu {
        let port = free_port();
        let broker = Tansu {
            port,
            process: Tansu::spawn(port, dir),
            dir: dir.to_owned(),
        };
        broker.wait_for_connections();
        broker.create_topic("power_topic", 3);
        broker
    }

    fn spawn(port: u16, dir: &Path) -> Process {
        let url = format!("tcp://127.0.0.1:{port}");
        let args = tansu_broker_args(&url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Process::spawn(&format!("tansu-{port}"), &tansu_binary(), &args, dir)
    }

    fn wait_for_connections(&self) {
        wait_until("tansu to accept connections", START_TIMEOUT, || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// SIGKILL, as a crash or a power cut of the broker's host would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the broker again on the same port and the same storage, after
    /// [`Tansu::kill`]. Its topics and committed offsets are still there.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = Tansu::spawn(self.port, &self.dir);
        self.wait_for_connections();
    }

    /// SIGSTOP: the broker freezes with its connections open, as a stalled
    /// host or a long GC pause would; [`Tansu::resume`] undoes it.
    pub fn stall(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Tansu::stall`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.process.pid().expect("tansu is running");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let result = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(result, 0, "signal {signal} to tansu");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let output = Command::new(tansu_binary())
                .args(tansu_topic_args(&broker, topic, partitions))
                .stdin(Stdio::null())
                .output()
                .expect("run tansu topic create");
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu topic create failed: {}{}\nbroker log:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
