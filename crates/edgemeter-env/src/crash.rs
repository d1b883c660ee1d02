//! Crash points: places in edge and cloud logic between two effects, where a
//! crash leaves the most interesting state behind (a tuple written but not
//! sent, a reply received but not recorded).
//!
//! Logic calls [`CrashPoints::reached`] at each point. In deployment no hook
//! is installed and the call is a no-op. The simulation installs a hook that
//! may answer "freeze here": the logic then awaits forever, and the harness
//! crashes the host at its next step, so the crash lands exactly between the
//! two effects.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CrashPoint {
    /// The edge marked a batch sent in SQLite and has not sent it yet.
    EdgeAfterMarkSent,
    /// The edge has a reply and has not recorded the acknowledgement yet.
    EdgeBeforeMarkAcked,
    /// The edge stored closed windows and has not committed the offsets.
    EdgeBeforeOffsetCommit,
    /// The cloud wrote a batch to its cache and has not replied yet.
    CloudAfterCacheWrite,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 4] = [
        CrashPoint::EdgeAfterMarkSent,
        CrashPoint::EdgeBeforeMarkAcked,
        CrashPoint::EdgeBeforeOffsetCommit,
        CrashPoint::CloudAfterCacheWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::EdgeAfterMarkSent => "edge-after-mark-sent",
            CrashPoint::EdgeBeforeMarkAcked => "edge-before-mark-acked",
            CrashPoint::EdgeBeforeOffsetCommit => "edge-before-offset-commit",
            CrashPoint::CloudAfterCacheWrite => "cloud-after-cache-write",
        }
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The hook answers `true` when the host should freeze at this point.
pub type CrashHook = Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>;

#[derive(Clone, Default)]
pub struct CrashPoints {
    hook: Option<CrashHook>,
}

impl fmt::Debug for CrashPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashPoints")
            .field("hooked", &self.hook.is_some())
            .finish()
    }
}

impl CrashPoints {
    pub fn none() -> CrashPoints {
        CrashPoints { hook: None }
    }

    pub fn hooked(hook: CrashHook) -> CrashPoints {
        CrashPoints { hook: Some(hook) }
    }

    /// Freezes forever if the installed hook asks for a crash here.
    pub async fn reached(&self, point: CrashPoint) {
        if let Some(hook) = &self.hook {
            if hook(point) {
                std::future::pending::<()>().await;
            }
        }
    }
}
