//! Progress of long runs, for whoever watches them: a bar (count, rate,
//! ETA) drawn with `indicatif` when stderr is a terminal, and a log line
//! every [`PROGRESS_LINE_INTERVAL`] otherwise (a file, a pipe, the
//! journal), where a redrawn bar would be noise.
//!
//! The display only reads a count: the replay's published readings through
//! [`CountingSink`], the edge's reshipped tuples from its monitor. The
//! logic crates count and never draw.

use crate::households::{ReadingSink, SinkError};
use crate::log_output::LogOutput;
use edgemeter_edge::EdgeMonitor;
use edgemeter_wire::Reading;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Between two progress lines in a log: often enough to see a run move,
/// rare enough that a day of reship writes a few thousand lines, not more.
pub const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(5);

/// Between two redraws of the bar. indicatif limits its own redraw rate
/// too; this bounds how often the count is read.
const BAR_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How often the edge looks at its reship counter for a pass to show.
const RESHIP_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How the progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    Lines { interval: Duration },
}

impl Display {
    /// A bar when a person watches stderr, else log lines.
    pub fn for_stderr() -> Display {
        let terminal = std::io::stderr().is_terminal();
        if terminal && LogOutput::detect() == LogOutput::Stderr {
            Display::Bar
        } else {
            Display::Lines {
                interval: PROGRESS_LINE_INTERVAL,
            }
        }
    }
}

/// A sink that counts what it published, for the display.
pub struct CountingSink<S> {
    inner: S,
    published: Arc<AtomicU64>,
}

impl<S: ReadingSink> CountingSink<S> {
    pub fn new(inner: S) -> CountingSink<S> {
        CountingSink {
            inner,
            published: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The count the display reads.
    pub fn published(&self) -> Arc<AtomicU64> {
        self.published.clone()
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: ReadingSink> ReadingSink for CountingSink<S> {
    async fn publish(&mut self, reading: &Reading) -> Result<(), SinkError> {
        self.inner.publish(reading).await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        self.inner.flush().await
    }
}

/// The display of a replay's readings published, of `total`.
pub fn published_progress<S: ReadingSink>(
    sink: &CountingSink<S>,
    total: usize,
    display: Display,
) -> Progress {
    let published = sink.published();
    let count = move || published.load(Ordering::Relaxed);
    Progress::start("readings published", Some(total as u64), count, display)
}

/// A progress display running in its own task until [`Progress::finish`].
pub struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Shows `count()` against `total` (when known), labelled `what`
    /// ("readings published").
    pub fn start(
        what: &'static str,
        total: Option<u64>,
        count: impl Fn() -> u64 + Send + 'static,
        display: Display,
    ) -> Progress {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            match display {
                Display::Bar => draw_bar(what, total, count, stopped).await,
                Display::Lines { interval } => {
                    write_lines(what, total, count, interval, stopped).await
                }
            }
        });
        Progress {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the display after a last update.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

async fn draw_bar(
    what: &'static str,
    total: Option<u64>,
    count: impl Fn() -> u64,
    mut stopped: oneshot::Receiver<()>,
) {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {human_pos}/{human_len} ({percent}%, {rate}, ETA {eta})",
            )
            .expect("a valid template")
            .with_key("rate", write_rate)
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg}: {human_pos} ({rate}, {elapsed})")
                .expect("a valid template")
                .with_key("rate", write_rate),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_message(what);
    let mut ticks = tokio::time::interval(BAR_REFRESH_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticks.tick() => {
                bar.set_position(count());
                if total.is_none() {
                    bar.tick();
                }
            }
        }
    }
    bar.set_position(count());
    bar.finish();
}

/// The rate in whole units per second: indicatif's own `{per_sec}` shows
/// four decimals, noise at these rates.
fn write_rate(state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write) {
    let _ = write!(out, "{:.0}/s", state.per_sec());
}

async fn write_lines(
    what: &'static str,
    total: Option<u64>,
    count: impl Fn() -> u64,
    interval: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let started = Instant::now();
    let mut lines = tokio::time::interval_at(started + interval, interval);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = lines.tick() => {
                let line = progress_line(what, count(), total, started.elapsed());
                tracing::info!(target: "edgemeter::progress", "{line}");
            }
        }
    }
    let line = progress_line(what, count(), total, started.elapsed());
    tracing::info!(target: "edgemeter::progress", "{line}, done");
}

/// One progress line: `readings published: 1200/6000 (20.0%), 240/s,
/// ETA 20s`, or without a total `tuples shipped again: 1200, 240/s, 5s`.
pub fn progress_line(what: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let Some(total) = total else {
        return format!(
            "{what}: {done}, {rate:.0}/s, {}",
            format_duration(elapsed.as_secs())
        );
    };
    let percent = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let left = total.saturating_sub(done);
    let eta = if left == 0 {
        "0s".to_owned()
    } else if rate > 0.0 {
        format_duration((left as f64 / rate).ceil() as u64)
    } else {
        "unknown".to_owned()
    };
    format!("{what}: {done}/{total} ({percent:.1}%), {rate:.0}/s, ETA {eta}")
}

/// `20s`, `3m05s`, `1h02m`.
fn format_duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Shows each reship after a store loss while it runs: it starts when the
/// edge's count of tuples shipped again moves, and ends once the refill
/// pass scanned to its end and the count stood still for a sample. Runs
/// until shutdown.
pub async fn follow_reship(
    monitor: Arc<EdgeMonitor>,
    display: Display,
    shutdown: crate::shutdown::Shutdown,
) {
    let reshipped = |monitor: &EdgeMonitor| monitor.tuples_reshipped.load(Ordering::Relaxed);
    let mut samples = tokio::time::interval(RESHIP_SAMPLE_INTERVAL);
    let mut last = reshipped(&monitor);
    let mut shown: Option<Progress> = None;
    let stopping = shutdown.wait();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => break,
            _ = samples.tick() => {}
        }
        let now = reshipped(&monitor);
        let moved = now != last;
        if moved && shown.is_none() {
            tracing::info!(
                passes = monitor.refill_passes.load(Ordering::Relaxed),
                "shipping acknowledged tuples again to a cloud that lost them"
            );
            let (monitor, base) = (monitor.clone(), last);
            let count = move || reshipped(&monitor).saturating_sub(base);
            shown = Some(Progress::start(
                "tuples shipped again",
                None,
                count,
                display,
            ));
        } else if !moved && !monitor.refill_scanning() {
            if let Some(progress) = shown.take() {
                progress.finish().await;
            }
        }
        last = now;
    }
    if let Some(progress) = shown {
        progress.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_count_rate_and_eta() {
        assert_eq!(
            progress_line(
                "readings published",
                1200,
                Some(6000),
                Duration::from_secs(5)
            ),
            "readings published: 1200/6000 (20.0%), 240/s, ETA 20s"
        );
        assert_eq!(
            progress_line("tuples shipped again", 1200, None, Duration::from_secs(65)),
            "tuples shipped again: 1200, 18/s, 1m05s"
        );
        assert_eq!(
            progress_line("x", 0, Some(10), Duration::ZERO),
            "x: 0/10 (0.0%), 0/s, ETA unknown"
        );
        assert_eq!(
            progress_line("x", 10, Some(10), Duration::from_secs(1)),
            "x: 10/10 (100.0%), 10/s, ETA 0s"
        );
        assert_eq!(format_duration(3720), "1h02m");
    }

    /// Goal: in a log, a line comes every interval and a last one at the
    /// end, each with the count of that moment. Method: a paused clock and
    /// a count the test moves; the lines are read back through the counts
    /// the display asked for.
    #[tokio::test(start_paused = true)]
    async fn lines_come_every_interval_and_at_the_end() {
        let done = Arc::new(AtomicU64::new(0));
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = {
            let (done, asked) = (done.clone(), asked.clone());
            move || {
                let value = done.load(Ordering::Relaxed);
                asked.lock().unwrap().push(value);
                value
            }
        };
        let interval = Duration::from_secs(5);
        let progress = Progress::start("things", Some(100), count, Display::Lines { interval });
        // Half an interval off the display's ticks, so that no count is
        // set at the instant a line reads it.
        tokio::time::sleep(interval / 2).await;
        for step in 1..=3u64 {
            done.store(step * 10, Ordering::Relaxed);
            tokio::time::sleep(interval).await;
        }
        done.store(100, Ordering::Relaxed);
        progress.finish().await;
        assert_eq!(*asked.lock().unwrap(), vec![10, 20, 30, 100]);
    }
}
