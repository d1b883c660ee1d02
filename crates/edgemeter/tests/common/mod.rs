//! Test helpers: real servers (tansu here, redis-server from
//! `edgemeter-testkit`) and processes of the built `edgemeter` binary, each
//! on free loopback ports (never the machine's standard 6379/9092), each
//! killed when its handle drops.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a server may take to answer after it was started.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

pub use edgemeter_testkit::{free_port, wait_until, Process, RedisServer, Tansu};

/// The built `edgemeter` binary as a [`Process`].
pub fn edgemeter_process(name: &str, args: &[&str], log_dir: &Path) -> Process {
    Process::spawn(
        name,
        Path::new(env!("CARGO_BIN_EXE_edgemeter")),
        args,
        log_dir,
    )
}

/// The workspace's shipped data set.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/gem-house-1h")
}

pub mod cluster;

/// `edgemeter status --json` of an edge database, parsed.
pub fn edge_status(db: &Path) -> serde_json::Value {
    try_edge_status(db).unwrap_or_else(|error| panic!("status failed: {error}"))
}

/// As [`edge_status`], or status's error: an edge that is still creating
/// its database has no tables yet.
pub fn try_edge_status(db: &Path) -> Result<serde_json::Value, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["status", "--json", "--db"])
        .arg(db)
        .stdin(Stdio::null())
        .output()
        .expect("run edgemeter status");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("status prints JSON"))
}

/// Tuples in an edge database at any flag, from `status`.
pub fn tuples_in(status: &serde_json::Value) -> u64 {
    ["queued", "sent", "acked"]
        .iter()
        .map(|key| status[key].as_u64().expect("a count"))
        .sum()
}

/// Sends one request on a fresh NNG REQ socket to the cloud on 127.0.0.1
/// and returns the reply.
pub fn ask(port: u16, request: &[u8]) -> Vec<u8> {
    use nng::options::Options;
    let socket = nng::Socket::new(nng::Protocol::Req0).unwrap();
    socket
        .set_opt::<nng::options::RecvTimeout>(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .set_opt::<nng::options::SendTimeout>(Some(Duration::from_secs(10)))
        .unwrap();
    // Dialled in the background, as the original's edge does: a cloud that
    // is still coming up is redialled until the send timeout, where a
    // synchronous dial fails at once on a refused connection.
    socket
        .dial_async(&format!("tcp://127.0.0.1:{port}"))
        .unwrap();
    socket.send(request).map_err(|(_, error)| error).unwrap();
    socket
        .recv()
        .expect("the cloud replies")
        .as_slice()
        .to_vec()
}

/// Where one `edgemeter cloud` process listens: its two NNG ports and its
/// HTTP port, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct CloudPorts {
    pub heartbeat: u16,
    pub data: u16,
    pub http: u16,
}

impl CloudPorts {
    pub fn free() -> CloudPorts {
        CloudPorts {
            heartbeat: free_port(),
            data: free_port(),
            http: free_port(),
        }
    }

    /// The node as an edge's `--cloud` names it: `HOST:HEARTBEAT:DATA`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}:{}", self.heartbeat, self.data)
    }

    /// Starts `edgemeter cloud` named `name` on these ports, storing where
    /// `store` says (`["--redis", URL]` or `["--redis-cluster", SEEDS]`),
    /// with `extra` arguments (who may talk to it), and waits until all
    /// three ports listen.
    pub fn start(&self, name: &str, store: [&str; 2], extra: &[&str], dir: &Path) -> Process {
        let (heartbeat, data) = (self.heartbeat.to_string(), self.data.to_string());
        let http = format!("127.0.0.1:{}", self.http);
        let mut args = vec![
            "cloud",
            store[0],
            store[1],
            "--listen",
            "127.0.0.1",
            "--heartbeat-port",
            &heartbeat,
            "--data-port",
            &data,
            "--http",
            &http,
        ];
        args.extend_from_slice(extra);
        let cloud = edgemeter_process(name, &args, dir);
        wait_until(
            &format!("{name} to listen"),
            Duration::from_secs(30),
            || {
                [self.heartbeat, self.data, self.http]
                    .iter()
                    .all(|port| TcpStream::connect(("127.0.0.1", *port)).is_ok())
            },
        );
        cloud
    }
}

/// Starts `edgemeter cloud` on `redis` and free loopback ports, with
/// `extra` arguments (who may talk to it), and waits until it listens.
/// Returns it, its heartbeat port and its data port.
pub fn start_cloud(redis: &RedisServer, dir: &Path, extra: &[&str]) -> (Process, u16, u16) {
    let ports = CloudPorts::free();
    let cloud = ports.start("cloud", ["--redis", &redis.url()], extra, dir);
    (cloud, ports.heartbeat, ports.data)
}

/// The tuples `GET /api/states` counts over all 16 states.
pub fn states_tuples(port: u16) -> Result<u64, String> {
    let (_, body) = http_get(port, "/api/states")?;
    let rows: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let rows = rows.as_array().ok_or("not a list")?;
    assert_eq!(rows.len(), 16, "all 16 states, always");
    Ok(rows
        .iter()
        .map(|row| row["tuples"].as_u64().unwrap_or(0))
        .sum())
}

/// One plain HTTP/1.0 GET on loopback: the response's head and body, if
/// its status is 200.
pub fn http_get(port: u16, path: &str) -> Result<(String, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|error| error.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| error.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    Ok((head.to_owned(), body.to_owned()))
}

/// Starts the cluster's edge with `extra` arguments and SIGXFSZ ignored,
/// so that a file-size limit ([`limit_file_size`]) is an error it sees, as
/// on a full disk, not a signal that kills it.
pub fn edge_that_survives_file_limits(cluster: &cluster::Cluster, extra: &[String]) -> Process {
    let mut args = cluster.edge_args();
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::spawn_with(
        "edge",
        Path::new(env!("CARGO_BIN_EXE_edgemeter")),
        &args,
        cluster.dir.path(),
        |command: &mut Command| {
            // SAFETY: signal(2) is async-signal-safe, and an ignored
            // disposition survives exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    )
}

/// Sets the soft file-size limit of process `pid`: `Some(bytes)` or none.
pub fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) reads and writes only the structs passed to it.
    let read = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut current) };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let wanted = libc::rlimit {
        rlim_cur: bytes.unwrap_or(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    // SAFETY: as above.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &wanted, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}
