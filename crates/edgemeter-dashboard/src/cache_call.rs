//! The one way a handler asks the cache: with a deadline. A cache that hangs
//! (a half-open TCP connection to Redis, a server stuck on a disk) turns into
//! a 503 with a reason, never into a page that waits forever.

use crate::ApiError;
use edgemeter_cloud::CacheError;
use std::future::Future;
use std::time::Duration;

/// The longest a dashboard call waits for the cache. Every call reads a
/// bounded amount (16 totals, at most a thousand tuples, the edges), which a
/// healthy local Redis answers in about a millisecond; the page polls every
/// 5 s, so 2 s leaves it time to say "unavailable" before its next poll.
pub const CACHE_CALL_MS_MAX: u64 = 2_000;

/// Runs one cache call, mapping its error, or its silence, to an [`ApiError`].
pub async fn bounded<T>(call: impl Future<Output = Result<T, CacheError>>) -> Result<T, ApiError> {
    let deadline = Duration::from_millis(CACHE_CALL_MS_MAX);
    match tokio::time::timeout(deadline, call).await {
        Ok(answer) => answer.map_err(ApiError::from),
        Err(_elapsed) => Err(ApiError::CacheTimeout {
            waited_ms: CACHE_CALL_MS_MAX,
        }),
    }
}
