//! The link to systemd when it runs the binary as a `Type=notify` service:
//! `READY=1` once a command's sockets are bound and its store is open,
//! `STOPPING=1` when it shuts down, and `WATCHDOG=1` pings while its main
//! loop makes progress.
//!
//! Everything goes through the `sd-notify` crate, which sends nothing when
//! `NOTIFY_SOCKET` is unset: outside systemd these calls do nothing.
//!
//! The watchdog pings only when the caller's progress probe says the main
//! loop moved since the last check (the edge: its loop's turn counter; the
//! cloud: its heartbeat sweeps). A free-running timer would keep pinging
//! while the loop is stuck in a call, and systemd would never restart it.

use crate::shutdown::Shutdown;
use sd_notify::NotifyState;
use std::time::Duration;

/// The shortest interval between two watchdog checks, whatever
/// `WATCHDOG_USEC` says: a tiny value set by hand must not turn the check
/// into a busy loop.
pub const WATCHDOG_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// Tells systemd the service is ready. A failure to tell it is logged, not
/// fatal: systemd then fails the start on its own timeout, which says more
/// than an exit here would.
pub fn notify_ready() {
    notify(NotifyState::Ready, "READY=1");
}

/// Tells systemd the service is stopping, so that `systemctl status` shows
/// it while the last writes finish.
pub fn notify_stopping() {
    notify(NotifyState::Stopping, "STOPPING=1");
}

fn notify(state: NotifyState<'_>, name: &str) {
    if let Err(error) = sd_notify::notify(&[state]) {
        tracing::warn!(%error, "cannot tell systemd {name}");
    }
}

/// How often to check for progress and ping: half the watchdog period
/// systemd asked for (`WATCHDOG_USEC`), as sd_watchdog_enabled(3)
/// recommends, so that one late check does not miss the deadline. `None`
/// when systemd asked for no watchdog.
pub fn watchdog_check_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(check_interval)
}

fn check_interval(period: Duration) -> Duration {
    (period / 2).max(WATCHDOG_CHECK_INTERVAL_MIN)
}

/// Pings systemd's watchdog every `interval` at which `advanced` reports
/// progress since its previous call, until shutdown. `ping` sends one ping
/// (the real one is [`ping_watchdog`]; tests count).
pub async fn run_watchdog(
    interval: Duration,
    mut advanced: impl FnMut() -> bool,
    mut ping: impl FnMut(),
    shutdown: Shutdown,
) {
    assert!(interval >= WATCHDOG_CHECK_INTERVAL_MIN);
    // The first check one interval after the start, not at once: at once
    // the loop has had no time to turn, and the check would warn of a
    // stall on every start.
    let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // A late check must not be followed by a burst that pings for checks
    // whose progress was never seen.
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = shutdown.wait();
    tokio::pin!(stopping);
    let mut stalled_logged = false;
    loop {
        tokio::select! {
            _ = &mut stopping => return,
            _ = checks.tick() => {
                if advanced() {
                    ping();
                    stalled_logged = false;
                } else if !stalled_logged {
                    tracing::warn!(?interval, "the main loop made no progress since the last watchdog check; not pinging");
                    stalled_logged = true;
                }
            }
        }
    }
}

/// Sends one `WATCHDOG=1`.
pub fn ping_watchdog() {
    notify(NotifyState::Watchdog, "WATCHDOG=1");
}

/// Starts the watchdog task when systemd asked for one, with `turns`
/// reading a counter that advances with the main loop.
pub fn spawn_watchdog(
    mut turns: impl FnMut() -> u64 + Send + 'static,
    shutdown: Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_check_interval()?;
    tracing::info!(
        ?interval,
        "systemd watchdog enabled; pinging while the main loop turns"
    );
    let mut last = turns();
    let advanced = move || {
        let now = turns();
        let moved = now != last;
        last = now;
        moved
    };
    Some(tokio::spawn(run_watchdog(
        interval,
        advanced,
        ping_watchdog,
        shutdown,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn the_check_runs_at_half_the_period_with_a_floor() {
        assert_eq!(
            check_interval(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            check_interval(Duration::from_millis(10)),
            WATCHDOG_CHECK_INTERVAL_MIN
        );
    }

    /// Goal: pings follow the loop's progress, not the clock. Method: a
    /// paused clock and a turn counter that the test moves for the first
    /// three checks only; after that, checks keep coming but pings stop.
    #[tokio::test(start_paused = true)]
    async fn pings_stop_when_the_loop_stops() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let turns = Arc::new(AtomicU64::new(0));
        let pings = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs(1);
        let task = {
            let (turns, pings) = (turns.clone(), pings.clone());
            let mut last = 0;
            tokio::spawn(run_watchdog(
                interval,
                move || {
                    let now = turns.load(Ordering::Relaxed);
                    let moved = now != last;
                    last = now;
                    moved
                },
                move || {
                    pings.fetch_add(1, Ordering::Relaxed);
                },
                shutdown,
            ))
        };
        // No check before one interval has passed.
        tokio::time::sleep(interval / 2).await;
        assert_eq!(pings.load(Ordering::Relaxed), 0, "pinged without progress");
        for expected in 1..=3 {
            turns.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(interval).await;
            assert_eq!(pings.load(Ordering::Relaxed), expected);
        }
        tokio::time::sleep(interval * 5).await;
        assert_eq!(pings.load(Ordering::Relaxed), 3, "pinged while stuck");
        turns.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(interval).await;
        assert_eq!(pings.load(Ordering::Relaxed), 4, "no ping after recovery");
        trigger.fire();
        task.await.unwrap();
    }
}
