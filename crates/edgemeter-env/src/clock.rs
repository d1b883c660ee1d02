//! The wall clock, as milliseconds since the Unix epoch.

use std::sync::Arc;

/// Where logic reads the date. Only stored timestamps (queued, sent,
/// acknowledged, last heartbeat) use it; nothing decides on it.
pub trait WallClock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The operating system's clock, for the real binaries.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the system clock is after 1970");
        since_epoch.as_millis() as i64
    }
}

impl<C: WallClock + ?Sized> WallClock for Arc<C> {
    fn now_ms(&self) -> i64 {
        (**self).now_ms()
    }
}
