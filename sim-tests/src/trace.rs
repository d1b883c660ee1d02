//! The per-seed trace: a tracing subscriber that stamps every line with
//! simulated time and the host it ran on, and collects the lines in memory
//! (and optionally as JSON lines in a file). Installed as the thread's
//! default for the duration of one seed, so two seeds on two threads never
//! mix, and byte-identical traces mean identical runs.
//!
//! Lines carry no wall-clock time, thread id or address that differs
//! between runs; the per-seed database path is written nowhere.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tracing::level_filters::LevelFilter;
use tracing::Dispatch;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

thread_local! {
    /// The harness's simulated time, for lines logged outside any host.
    static HARNESS_NOW_MS: Cell<u64> = const { Cell::new(0) };
}

/// Sets the simulated time the harness is at (between steps).
pub fn set_harness_now(now_ms: u64) {
    HARNESS_NOW_MS.with(|cell| cell.set(now_ms));
}

/// Stamps lines with simulated seconds: the host's own time inside a host,
/// the harness's time between steps. Text lines pad it to a column; JSON
/// lines do not.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimTime {
    padded: bool,
}

impl FormatTime for SimTime {
    fn format_time(&self, writer: &mut Writer<'_>) -> std::fmt::Result {
        let ms = turmoil::sim_elapsed()
            .map(|elapsed| elapsed.as_millis() as u64)
            .unwrap_or_else(|| HARNESS_NOW_MS.with(Cell::get));
        if self.padded {
            write!(writer, "{:>6}.{:03}s", ms / 1000, ms % 1000)
        } else {
            write!(writer, "{}.{:03}", ms / 1000, ms % 1000)
        }
    }
}

/// Lines written so far, shared with the subscriber's writer.
#[derive(Debug, Clone, Default)]
pub struct TraceBuffer {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl TraceBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("trace lock")).into_owned()
    }
}

pub struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("trace lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for TraceBuffer {
    type Writer = BufferWriter;

    fn make_writer(&'a self) -> BufferWriter {
        BufferWriter(self.bytes.clone())
    }
}

/// What the trace keeps: the edge and cloud at debug (each batch sent,
/// stored and acknowledged), the link's pipe events, the harness's faults
/// and findings; turmoil's own per-message tracing only when it warns.
///
/// `EDGEMETER_SIM_LOG` (e.g. `info,turmoil=trace`) replaces this filter, for
/// digging into one replay; it is read once per seed, outside the simulation.
fn targets() -> Targets {
    if let Some(targets) = std::env::var("EDGEMETER_SIM_LOG")
        .ok()
        .and_then(|text| text.parse().ok())
    {
        return targets;
    }
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("edgemeter_edge", LevelFilter::DEBUG)
        .with_target("edgemeter_cloud", LevelFilter::DEBUG)
        .with_target("edgemeter_store", LevelFilter::DEBUG)
        .with_target("sim::link", LevelFilter::DEBUG)
        .with_target("turmoil", LevelFilter::WARN)
        // turmoil enters an INFO span `node{name=...}` around each host's
        // tick: enabling it prefixes every line with the host it ran on.
        .with_target("turmoil::sim", LevelFilter::INFO)
}

/// A subscriber writing text lines into `buffer` and, with `json`, JSON
/// lines into that file.
pub fn dispatch(buffer: &TraceBuffer, json: Option<&Path>) -> io::Result<Dispatch> {
    let text = tracing_subscriber::fmt::layer()
        .with_timer(SimTime { padded: true })
        .with_ansi(false)
        .with_writer(buffer.clone());
    let json_layer = match json {
        Some(path) => {
            let file = Arc::new(Mutex::new(File::create(path)?));
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_timer(SimTime { padded: false })
                    .with_writer(move || JsonFile(file.clone())),
            )
        }
        None => None,
    };
    let subscriber = tracing_subscriber::registry()
        .with(text.with_filter(targets()))
        .with(json_layer.map(|layer| layer.with_filter(targets())));
    Ok(Dispatch::new(subscriber))
}

use tracing_subscriber::Layer as _;

pub struct JsonFile(Arc<Mutex<File>>);

impl Write for JsonFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("json trace lock").write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().expect("json trace lock").flush()
    }
}
