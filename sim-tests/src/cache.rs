//! `SimCache`: the cloud's [`Cache`] over the simulated network to the
//! `redis` host, as the Redis client is in deployment.
//!
//! Each call borrows a connection from a small pool (or dials a new one),
//! makes one request under [`CACHE_CALL_TIMEOUT`], and returns the
//! connection only if the exchange completed; any error or timeout drops it
//! and answers [`CacheError::Unavailable`]. A store whose reply was lost may
//! still have been applied, which the cache's set-if-absent write makes
//! harmless when the edge sends the tuples again. An error Redis answered
//! (a script that failed midway) is [`CacheError::Unavailable`] too, as
//! `RedisCache` maps every Redis error.
//!
//! Each store carries a stamp for the recent list, made here as
//! `RedisCache` makes it on the client: the clock in microseconds (here
//! the simulated one), strictly increasing per client.

use crate::net::{call, connect};
use crate::redis::{RedisReply, RedisRequest, REDIS_HOST, REDIS_PORT};
use edgemeter_cloud::{
    Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, HeartbeatRecord, StateTotals,
    StoredConflict,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use turmoil::net::TcpStream;

/// The longest one cache request may take. The cloud answers the edge only
/// after the write, and the edge's request timeout is 5 s: a cache call
/// must fail well before that so the reply can say "retry later".
pub const CACHE_CALL_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Cache requests in flight at once (and so connections open). The cloud
/// serves at most a few batches at a time per edge.
pub const CACHE_CONNECTIONS_MAX: usize = 16;

/// A pooled connection unused for this long is closed rather than reused:
/// the redis host closes connections idle for 30 s, and a stale one would
/// fail the next request for nothing.
pub const POOL_IDLE_MAX: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct SimCache {
    idle: Mutex<Vec<(TcpStream, Instant)>>,
    slots: Arc<Semaphore>,
    /// The last stamp handed to a store.
    last_stamp: AtomicU64,
}

impl Default for SimCache {
    fn default() -> Self {
        SimCache::new()
    }
}

impl SimCache {
    pub fn new() -> SimCache {
        SimCache {
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(CACHE_CONNECTIONS_MAX)),
            last_stamp: AtomicU64::new(0),
        }
    }

    /// `RedisCache`'s stamp: the clock, or one past the last stamp.
    fn next_stamp(&self) -> u64 {
        let now_us = turmoil::sim_elapsed().unwrap_or_default().as_micros() as u64;
        let previous = self
            .last_stamp
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now_us.max(last + 1))
            })
            .expect("the update always succeeds");
        now_us.max(previous + 1)
    }

    async fn request(&self, request: RedisRequest) -> Result<RedisReply, CacheError> {
        let _slot = self.slots.acquire().await.expect("never closed");
        let unavailable = |reason: String| CacheError::Unavailable(reason);
        let pooled = self.idle.lock().expect("pool lock").pop();
        let fresh = pooled.filter(|(_, used)| used.elapsed() < POOL_IDLE_MAX);
        let mut stream = match fresh {
            Some((stream, _)) => stream,
            None => connect(REDIS_HOST, REDIS_PORT)
                .await
                .map_err(|error| unavailable(format!("connect: {error}")))?,
        };
        let bytes = call(&mut stream, &request.encode(), CACHE_CALL_TIMEOUT)
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        let reply = RedisReply::decode(&bytes).map_err(|error| unavailable(error.to_string()))?;
        self.idle
            .lock()
            .expect("pool lock")
            .push((stream, Instant::now()));
        Ok(reply)
    }
}

fn unexpected(reply: RedisReply) -> CacheError {
    match reply {
        RedisReply::Error(text) => CacheError::Unavailable(format!("redis: {text}")),
        other => CacheError::Unavailable(format!("unexpected reply {other:?}")),
    }
}

impl Cache for SimCache {
    async fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        let request = RedisRequest::Store {
            tuples: tuples.to_vec(),
            candidate_epoch,
            stamp: self.next_stamp(),
        };
        match self.request(request).await? {
            RedisReply::Stored(result) => Ok(CacheWrite {
                inserted: result.inserted as usize,
                existing: result.existing as usize,
                epochs: result.epochs,
                conflicts: result
                    .conflicts
                    .into_iter()
                    .map(|(index, stored)| StoredConflict {
                        index: index as usize,
                        stored,
                    })
                    .collect(),
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn record_heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        let request = RedisRequest::Heartbeat {
            edge_id: edge_id.to_owned(),
            instance,
            now_ms,
            candidate_epoch,
        };
        match self.request(request).await? {
            RedisReply::Heartbeat(record) => Ok(record),
            other => Err(unexpected(other)),
        }
    }

    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        match self.request(RedisRequest::StateTotals).await? {
            RedisReply::Totals(totals) => Ok(totals),
            other => Err(unexpected(other)),
        }
    }

    async fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, CacheError> {
        let limit = limit.min(u32::MAX as usize) as u32;
        match self.request(RedisRequest::Recent { limit }).await? {
            RedisReply::Tuples(tuples) => Ok(tuples),
            other => Err(unexpected(other)),
        }
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        match self.request(RedisRequest::Edges).await? {
            RedisReply::Edges(edges) => Ok(edges),
            other => Err(unexpected(other)),
        }
    }
}
