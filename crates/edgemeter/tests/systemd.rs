//! The real binary under a stand-in for systemd: `NOTIFY_SOCKET` names a
//! Unix datagram socket the test binds, as systemd does for a
//! `Type=notify` service, and `WATCHDOG_USEC` asks for watchdog pings.
//! Also `JOURNAL_STREAM`, which selects the journal as the log's target.
//!
//! Each test reads the datagrams the binary sends; when `READY=1` comes,
//! the ports it promised must answer at that moment, not a moment later.

mod common;

use common::{free_port, Process, RedisServer, Tansu};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The backstop for a message to arrive: far above a start on a loaded
/// machine, so that only a binary that never sends it fails.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// The watchdog period the tests ask for: pings come every half of it.
const WATCHDOG_USEC: &str = "1000000";

/// Watchdog pings to wait for after `READY=1`.
const PINGS_MIN: usize = 3;

/// The stand-in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { socket }
    }

    /// The next datagram's lines, or `None` when none came within the
    /// backstop. `process` is checked meanwhile: one that exited fails.
    fn next(&self, process: &mut Process) -> Vec<String> {
        let deadline = Instant::now() + MESSAGE_TIMEOUT;
        let mut buffer = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buffer) {
                Ok(length) => {
                    let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    return text.lines().map(str::to_owned).collect();
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => panic!("reading the notify socket: {error}"),
            }
            if let Some(status) = process.try_status() {
                panic!(
                    "{} exited ({status}):\n{}",
                    process.name,
                    process.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no notification within {MESSAGE_TIMEOUT:?}; log:\n{}",
                process.log_tail()
            );
        }
    }

    /// Waits for `READY=1`; returns what came before it.
    fn until_ready(&self, process: &mut Process) -> Vec<String> {
        let mut before = Vec::new();
        loop {
            let lines = self.next(process);
            if lines.iter().any(|line| line == "READY=1") {
                return before;
            }
            before.extend(lines);
        }
    }

    /// Waits for [`PINGS_MIN`] `WATCHDOG=1`, and returns every line seen.
    fn pings(&self, process: &mut Process) -> Vec<String> {
        let mut seen = Vec::new();
        while seen.iter().filter(|line| *line == "WATCHDOG=1").count() < PINGS_MIN {
            seen.extend(self.next(process));
        }
        seen
    }
}

fn spawn_notified(name: &str, args: &[&str], dir: &Path, notify: &Path) -> Process {
    Process::spawn_with(
        name,
        Path::new(env!("CARGO_BIN_EXE_edgemeter")),
        args,
        dir,
        |command| {
            command
                .env("NOTIFY_SOCKET", notify)
                .env("WATCHDOG_USEC", WATCHDOG_USEC)
                .env_remove("WATCHDOG_PID")
                .env_remove("JOURNAL_STREAM");
        },
    )
}

/// One HTTP GET on a fresh connection; returns the status line.
fn http_status_line(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the HTTP port answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.lines().next().unwrap_or_default().to_owned()
}

/// Goal: the cloud says READY=1 only once its NNG and HTTP sockets listen,
/// and then pings the watchdog. Method: at the moment READY=1 is read,
/// connect to both NNG ports and GET the REST API; then count pings.
#[test]
fn the_cloud_is_ready_once_nng_and_http_listen_and_pings_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let notify_path = dir.path().join("notify.sock");
    let notify = NotifySocket::bind(&notify_path);
    let (heartbeat, data, http) = (free_port(), free_port(), free_port());
    let (heartbeat_arg, data_arg) = (heartbeat.to_string(), data.to_string());
    let http_arg = format!("127.0.0.1:{http}");
    let redis_url = redis.url();
    let mut cloud = spawn_notified(
        "cloud",
        &[
            "cloud",
            "--redis",
            &redis_url,
            "--listen",
            "127.0.0.1",
            "--heartbeat-port",
            &heartbeat_arg,
            "--data-port",
            &data_arg,
            "--http",
            &http_arg,
            "--allow-unauthenticated",
        ],
        dir.path(),
        &notify_path,
    );
    let before = notify.until_ready(&mut cloud);
    for port in [heartbeat, data] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "READY=1 came before NNG port {port} listened"
        );
    }
    let status = http_status_line(http, "/api/edges");
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "READY=1 came before the REST API answered: {status:?}"
    );
    assert!(
        !before.iter().any(|line| line == "WATCHDOG=1"),
        "watchdog pings before READY=1: {before:?}"
    );
    let seen = notify.pings(&mut cloud);
    assert!(
        seen.iter().all(|line| line == "WATCHDOG=1"),
        "unexpected notifications: {seen:?}"
    );
}

/// Goal: the edge says READY=1 only once its outbox is open and its status
/// socket answers, and then pings the watchdog while its loop turns.
/// Method: at the moment READY=1 is read, ask the status socket (as
/// `edgemeter status` does) and check the answer is the running edge's;
/// then count pings. No cloud runs: the edge's loop turns regardless.
#[test]
fn the_edge_is_ready_once_its_outbox_and_status_socket_answer_and_pings_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let notify_path = dir.path().join("notify.sock");
    let notify = NotifySocket::bind(&notify_path);
    let db = dir.path().join("edge.db");
    let (heartbeat, data) = (free_port().to_string(), free_port().to_string());
    let kafka = broker.address();
    let db_arg = db.to_str().unwrap();
    let mut edge = spawn_notified(
        "edge",
        &[
            "edge",
            "--kafka",
            &kafka,
            "--cloud",
            "127.0.0.1",
            "--heartbeat-port",
            &heartbeat,
            "--data-port",
            &data,
            "--db",
            db_arg,
            "--edge-id",
            "edge-notify",
        ],
        dir.path(),
        &notify_path,
    );
    notify.until_ready(&mut edge);
    let socket = dir.path().join("edge.db.status.sock");
    assert!(
        UnixStream::connect(&socket).is_ok(),
        "READY=1 came before the status socket listened"
    );
    let status = common::edge_status(&db);
    assert_eq!(
        status["edge"]["running"], true,
        "READY=1 came before the status socket answered: {status}"
    );
    let seen = notify.pings(&mut edge);
    assert!(
        seen.iter().all(|line| line == "WATCHDOG=1"),
        "unexpected notifications: {seen:?}"
    );
}

/// Goal: the log goes to the journal when JOURNAL_STREAM names the
/// process's stderr, and only then. Method: the stderr given to the binary
/// is a file whose device and inode the test knows. This machine may have
/// no journald: then the binary must say it falls back to stderr, which
/// proves it took the journal path; with a journald, the formatted lines
/// must be missing from the file.
#[test]
fn journal_stream_naming_our_stderr_selects_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, stream: Option<String>| -> String {
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let metadata = file.metadata().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgemeter"));
        // `status` on a missing database: it logs nothing and fails fast,
        // after the log is set up.
        command
            .args(["--log", "debug", "status", "--db"])
            .arg(dir.path().join("missing.db"))
            .stdin(std::process::Stdio::null())
            .stderr(file);
        match stream {
            Some(stream) => command.env("JOURNAL_STREAM", stream),
            None => command.env(
                "JOURNAL_STREAM",
                format!("{}:{}", metadata.dev(), metadata.ino()),
            ),
        };
        command.status().unwrap();
        std::fs::read_to_string(&log).unwrap()
    };
    let journald = Path::new("/run/systemd/journal/socket").exists();
    let ours = run("ours", None);
    if journald {
        println!("journald present: checking the log left stderr");
        assert!(
            !ours.contains("cannot log to the journal"),
            "journald is here but was not used:\n{ours}"
        );
    } else {
        println!("no journald on this machine: checking the journal was tried");
        assert!(
            ours.contains("cannot log to the journal"),
            "JOURNAL_STREAM named our stderr but the journal was not tried:\n{ours}"
        );
    }
    let other = run("other", Some("1:1".to_owned()));
    assert!(
        !other.contains("journal"),
        "a JOURNAL_STREAM that is not our stderr selected the journal:\n{other}"
    );
}
