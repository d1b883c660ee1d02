//! The running edge's live state, served on a Unix domain socket next to its
//! database (`<db>.status.sock`), and the `status` command's client for it.
//!
//! Why a socket and not a file: the state that matters most, "consumption
//! paused because SQLite refused a write", is true exactly when the disk is
//! full, so the edge cannot write it anywhere on disk. A socket needs no
//! space. It also tells `status` whether an edge is running at all.
//!
//! The protocol is one line each way: the client sends `status\n`, the edge
//! answers one JSON object and closes. The server answers one connection at
//! a time, reads at most [`REQUEST_BYTES_MAX`] bytes, and gives each
//! exchange [`EXCHANGE_TIMEOUT`]: a stuck or hostile client costs at most
//! that, and the edge itself never waits on it (the server is its own task
//! and only reads the edge's atomic counters). A bad request is answered
//! with an error object, counted and logged once.

use crate::command_error::CommandError;
use crate::shutdown::Shutdown;
use edgemeter_edge::{CloudNodeState, EdgeCounters, EdgeMonitor};
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Appended to the database path to name the socket.
pub const SOCKET_SUFFIX: &str = ".status.sock";

/// The one request the server knows, without its newline.
pub const REQUEST: &str = "status";

/// The most bytes of a request the server reads. `status\n` is 7; anything
/// longer is not ours and is refused without reading further.
pub const REQUEST_BYTES_MAX: usize = 64;

/// The most bytes of a reply the client reads. A reply is about 400 bytes;
/// the bound keeps a wrong program on the socket from filling our memory.
pub const REPLY_BYTES_MAX: usize = 16 * 1024;

/// How long the server gives one connection to send its request and take
/// the reply. Long enough for any local client, short enough that a client
/// that connects and says nothing delays the next one by at most this.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `status` waits for the edge to answer before it reports the
/// edge as not answering. Above [`EXCHANGE_TIMEOUT`], so that one stuck
/// client ahead in the queue does not make a running edge look dead.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest socket path Linux accepts: `sun_path` is 108 bytes with the
/// terminating NUL.
pub const SOCKET_PATH_BYTES_MAX: usize = 107;

/// The pause after a failed `accept` (out of file descriptors, say), so
/// that a persistent error does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

const _: () = assert!(CLIENT_TIMEOUT.as_millis() > EXCHANGE_TIMEOUT.as_millis());
const _: () = assert!(REQUEST.len() < REQUEST_BYTES_MAX);

/// `<db>.status.sock`.
pub fn socket_path(db: &Path) -> PathBuf {
    let mut path = OsString::from(db.as_os_str());
    path.push(SOCKET_SUFFIX);
    PathBuf::from(path)
}

/// The bound socket of a running edge. Dropping it removes the socket file,
/// so a clean exit leaves nothing behind.
#[derive(Debug)]
pub struct StatusSocket {
    listener: StdUnixListener,
    path: PathBuf,
}

impl StatusSocket {
    /// Binds `<db>.status.sock`. A socket left by an edge that crashed is
    /// replaced; a socket a live edge answers on is an error (two edges on
    /// one database), and so is any other file at that path.
    pub fn bind(db: &Path) -> Result<StatusSocket, CommandError> {
        let path = socket_path(db);
        let length = path.as_os_str().len();
        if length > SOCKET_PATH_BYTES_MAX {
            return Err(CommandError::config(format!(
                "the edge's status socket {} would be {length} bytes long, over the {SOCKET_PATH_BYTES_MAX} a Unix socket path may have; pass a shorter --db path",
                path.display()
            )));
        }
        remove_stale(&path, db)?;
        let listener = StdUnixListener::bind(&path).map_err(|error| {
            CommandError::config(format!(
                "cannot create the edge's status socket {}: {error}; check the permissions of the --db directory",
                path.display()
            ))
        })?;
        listener.set_nonblocking(true).map_err(|error| {
            CommandError::config(format!("status socket {}: {error}", path.display()))
        })?;
        Ok(StatusSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers `status` requests with the monitor's state until `shutdown`.
    /// Must run inside a tokio runtime.
    pub async fn serve(
        self,
        edge_id: String,
        monitor: Arc<EdgeMonitor>,
        counters: Arc<ServerCounters>,
        shutdown: Shutdown,
    ) {
        let listener = match self.listener.try_clone().and_then(UnixListener::from_std) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "status socket unusable; `status` will not see this edge");
                return;
            }
        };
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "status socket accept failed; retrying");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
            };
            // One exchange at a time, each bounded: the queue of waiting
            // clients is the kernel's listen backlog, not our memory.
            let mut state = live_state(&edge_id, &monitor.snapshot());
            state["cloud_nodes"] = cloud_nodes_state(&monitor.cloud_nodes());
            let exchange = answer(stream, &state, &counters);
            if tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
                .await
                .is_err()
            {
                counters.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a socket nobody listens on any more; refuses to touch anything
/// else at that path.
fn remove_stale(path: &Path, db: &Path) -> Result<(), CommandError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(CommandError::config(format!(
                "cannot inspect {}: {error}",
                path.display()
            )))
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(CommandError::config(format!(
            "{} exists and is not the edge's status socket; move it away or pass another --db",
            path.display()
        )));
    }
    match StdUnixStream::connect(path) {
        Ok(_) => Err(CommandError::config(format!(
            "an edge is already running on {} (it answers on {}); stop it first or pass another --db",
            db.display(),
            path.display()
        ))),
        Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing the status socket of an edge that did not exit cleanly");
            std::fs::remove_file(path).map_err(|error| {
                CommandError::config(format!("cannot remove {}: {error}", path.display()))
            })
        }
        Err(error) => Err(CommandError::config(format!(
            "cannot check the status socket {}: {error}",
            path.display()
        ))),
    }
}

/// What the server counts, for its tests and its log.
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub answered: AtomicU64,
    pub bad_requests: AtomicU64,
    pub timeouts: AtomicU64,
}

/// Reads one request line (at most [`REQUEST_BYTES_MAX`] bytes) and
/// answers it.
async fn answer(stream: UnixStream, state: &serde_json::Value, counters: &ServerCounters) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::with_capacity(REQUEST_BYTES_MAX);
    let mut limited = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
    if limited.read_until(b'\n', &mut line).await.is_err() {
        return;
    }
    let reply = if line.strip_suffix(b"\n") == Some(REQUEST.as_bytes()) {
        counters.answered.fetch_add(1, Ordering::Relaxed);
        state.clone()
    } else {
        if counters.bad_requests.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                bytes = line.len(),
                "status socket: a request that is not `status`; answered with an error (logged once, then counted)"
            );
        }
        serde_json::json!({"error": "unknown request; send `status` and a newline"})
    };
    let mut bytes = reply.to_string().into_bytes();
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
    let _ = write.shutdown().await;
}

/// The live state of a running edge, as `status --json` shows it under `edge`.
pub fn live_state(edge_id: &str, counters: &EdgeCounters) -> serde_json::Value {
    serde_json::json!({
        "running": true,
        "edge_id": edge_id,
        "pid": std::process::id(),
        "consuming": counters.consuming,
        "refused": counters.refused,
        "intake_alarm": counters.intake_alarm,
        "connected": counters.connected,
        "store_errors": counters.store_errors,
        "readings": counters.readings,
        "records_rejected": counters.rejected,
        "readings_late": counters.late,
        "readings_duplicate": counters.duplicates,
        "tuples_stored": counters.tuples_stored,
        "tuples_acked": counters.tuples_acked,
        "batches_sent": counters.batches_sent,
        "batches_failed": counters.batches_failed,
        "acks_conflicting": counters.conflicting_acks,
        "tuples_conflicting": counters.value_conflicts,
        "tuples_reshipped": counters.tuples_reshipped,
        "refill_passes": counters.refill_passes,
    })
}

/// Each cloud node and whether it answers, as `status --json` shows it
/// under `edge.cloud_nodes`: `[{"node": NAME, "connected": BOOL}, ...]`.
pub fn cloud_nodes_state(nodes: &[CloudNodeState]) -> serde_json::Value {
    nodes
        .iter()
        .map(|node| serde_json::json!({"node": node.name, "connected": node.connected}))
        .collect()
}

/// Asks the edge serving `<db>.status.sock` for its live state. Returns
/// `{"running": false}` when nothing answers there, with an `error` when
/// something answered wrongly.
pub fn query(db: &Path, timeout: Duration) -> serde_json::Value {
    let path = socket_path(db);
    let mut stream = match StdUnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(error) => {
            let nobody = matches!(
                error.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused
            );
            return if nobody {
                serde_json::json!({"running": false})
            } else {
                not_running(format!("cannot connect to {}: {error}", path.display()))
            };
        }
    };
    match exchange(&mut stream, timeout) {
        Ok(state) => state,
        Err(reason) => not_running(format!("{}: {reason}", path.display())),
    }
}

fn not_running(error: String) -> serde_json::Value {
    serde_json::json!({"running": false, "error": error})
}

fn exchange(stream: &mut StdUnixStream, timeout: Duration) -> Result<serde_json::Value, String> {
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| error.to_string())?;
    stream
        .write_all(format!("{REQUEST}\n").as_bytes())
        .map_err(|error| format!("no answer: {error}"))?;
    let mut reply = Vec::new();
    stream
        .take(REPLY_BYTES_MAX as u64 + 1)
        .read_to_end(&mut reply)
        .map_err(|error| format!("no answer: {error}"))?;
    if reply.len() > REPLY_BYTES_MAX {
        return Err(format!("the answer exceeds {REPLY_BYTES_MAX} bytes"));
    }
    let state: serde_json::Value =
        serde_json::from_slice(&reply).map_err(|error| format!("not a status answer: {error}"))?;
    if state.get("running") != Some(&serde_json::Value::Bool(true)) {
        return Err(format!("not a status answer: {state}"));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown;

    /// A monitor behind a served socket in a temp dir.
    struct Served {
        _dir: tempfile::TempDir,
        db: PathBuf,
        monitor: Arc<EdgeMonitor>,
        counters: Arc<ServerCounters>,
        _stop: shutdown::ShutdownTrigger,
    }

    fn serve() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let socket = StatusSocket::bind(&db).unwrap();
        let monitor = Arc::new(EdgeMonitor::new());
        let counters = Arc::new(ServerCounters::default());
        let (stop, stopped) = shutdown::channel();
        tokio::spawn(socket.serve("edge-7".into(), monitor.clone(), counters.clone(), stopped));
        Served {
            _dir: dir,
            db,
            monitor,
            counters,
            _stop: stop,
        }
    }

    /// `query` blocks; tests run it off the runtime's threads.
    async fn ask(db: &Path) -> serde_json::Value {
        let db = db.to_owned();
        tokio::task::spawn_blocking(move || query(&db, Duration::from_secs(10)))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_edge_answers_with_its_live_state() {
        let served = serve();
        served.monitor.readings.fetch_add(5, Ordering::Relaxed);
        served.monitor.store_errors.fetch_add(2, Ordering::Relaxed);
        let state = ask(&served.db).await;
        assert_eq!(state["running"], true);
        assert_eq!(state["edge_id"], "edge-7");
        assert_eq!(state["readings"], 5);
        assert_eq!(state["store_errors"], 2);
        // A monitor no edge has started yet is not consuming.
        assert_eq!(state["consuming"], false);
        assert_eq!(state["connected"], false);
        assert_eq!(served.counters.answered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn nothing_listening_reads_as_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let state = query(&db, Duration::from_secs(1));
        assert_eq!(state, serde_json::json!({"running": false}));
        // A socket left by a crashed edge: nobody accepts on it.
        drop(StdUnixListener::bind(socket_path(&db)).unwrap());
        assert!(socket_path(&db).exists());
        let state = query(&db, Duration::from_secs(1));
        assert_eq!(state, serde_json::json!({"running": false}));
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_clean_exit_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        drop(StdUnixListener::bind(socket_path(&db)).unwrap());
        let socket = StatusSocket::bind(&db).expect("a stale socket is replaced");
        assert_eq!(socket.path(), socket_path(&db));
        drop(socket);
        assert!(!socket_path(&db).exists(), "removed on a clean exit");
    }

    #[test]
    fn a_second_edge_on_the_same_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let _first = StatusSocket::bind(&db).unwrap();
        let error = StatusSocket::bind(&db).unwrap_err().to_string();
        assert!(error.contains("already running"), "{error}");
        assert!(socket_path(&db).exists(), "the live edge keeps its socket");
    }

    #[test]
    fn another_file_at_the_socket_path_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        std::fs::write(socket_path(&db), b"precious").unwrap();
        let error = StatusSocket::bind(&db).unwrap_err().to_string();
        assert!(error.contains("not the edge's status socket"), "{error}");
        assert_eq!(std::fs::read(socket_path(&db)).unwrap(), b"precious");
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d".repeat(SOCKET_PATH_BYTES_MAX));
        let error = StatusSocket::bind(&db).unwrap_err().to_string();
        assert!(
            error.contains("shorter --db") && error.contains(&SOCKET_PATH_BYTES_MAX.to_string()),
            "{error}"
        );
        // Just within the limit binds.
        let base = dir.path().as_os_str().len() + 1 + SOCKET_SUFFIX.len();
        let db = dir.path().join("d".repeat(SOCKET_PATH_BYTES_MAX - base));
        assert_eq!(socket_path(&db).as_os_str().len(), SOCKET_PATH_BYTES_MAX);
        StatusSocket::bind(&db).expect("a path of exactly the limit binds");
    }

    /// Goal: bad input costs one error reply and a counter, and the server
    /// goes on. Method: an unknown request, a request far over the size
    /// limit, and a client that says nothing; then a good request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_and_silent_clients_do_not_stop_the_server() {
        let served = serve();
        let path = socket_path(&served.db);
        let raw = |request: Vec<u8>| {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut stream = StdUnixStream::connect(&path).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                // The server may close before it read everything we send.
                let _ = stream.write_all(&request);
                let mut reply = String::new();
                let _ = stream.read_to_string(&mut reply);
                reply
            })
        };
        let unknown = raw(b"stats\n".to_vec()).await.unwrap();
        assert!(unknown.contains("unknown request"), "{unknown}");
        let oversized = raw(vec![b's'; 100 * REQUEST_BYTES_MAX]).await.unwrap();
        assert!(oversized.contains("unknown request"), "{oversized}");
        assert_eq!(served.counters.bad_requests.load(Ordering::Relaxed), 2);

        let silent = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let state = ask(&served.db).await;
        assert_eq!(state["running"], true, "{state}");
        drop(silent);
        assert_eq!(served.counters.answered.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_wrong_answer_is_not_taken_for_a_running_edge() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let listener = StdUnixListener::bind(socket_path(&db)).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 7];
            stream.read_exact(&mut request).unwrap();
            stream.write_all(&vec![b'x'; REPLY_BYTES_MAX + 10]).unwrap();
        });
        let state = query(&db, Duration::from_secs(10));
        server.join().unwrap();
        assert_eq!(state["running"], false);
        assert!(
            state["error"].as_str().unwrap().contains("exceeds"),
            "{state}"
        );
    }
}
