//! A [`Cache`] wrapper that can be switched to fail or to hang, the way a
//! Redis that is down or wedged would, around any real cache (the cloud's
//! `MemoryCache` in these tests). It adds no behaviour of its own otherwise.

use edgemeter_cloud::{
    Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, HeartbeatRecord, StateTotals,
};
use std::sync::Mutex;

/// How the cache misbehaves while an outage is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outage {
    /// Every call fails at once with this reason, like a refused connection.
    Unavailable(String),
    /// Every call waits forever, like a half-open connection.
    Stalled,
}

pub struct OutageCache<C> {
    inner: C,
    outage: Mutex<Option<Outage>>,
}

impl<C: Cache> OutageCache<C> {
    pub fn new(inner: C) -> Self {
        OutageCache {
            inner,
            outage: Mutex::new(None),
        }
    }

    /// Starts (`Some`) or ends (`None`) an outage.
    pub fn set_outage(&self, outage: Option<Outage>) {
        *self.outage.lock().expect("outage lock") = outage;
    }

    /// Fails or hangs as the current outage says; returns if there is none.
    async fn gate(&self) -> Result<(), CacheError> {
        let outage = self.outage.lock().expect("outage lock").clone();
        match outage {
            None => Ok(()),
            Some(Outage::Unavailable(reason)) => Err(CacheError::Unavailable(reason)),
            Some(Outage::Stalled) => std::future::pending().await,
        }
    }
}

impl<C: Cache> Cache for OutageCache<C> {
    async fn store(
        &self,
        tuples: &[CloudTuple],
        candidate_epoch: u64,
    ) -> Result<CacheWrite, CacheError> {
        self.gate().await?;
        self.inner.store(tuples, candidate_epoch).await
    }

    async fn record_heartbeat(
        &self,
        edge_id: &str,
        instance: u64,
        now_ms: i64,
        candidate_epoch: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        self.gate().await?;
        self.inner
            .record_heartbeat(edge_id, instance, now_ms, candidate_epoch)
            .await
    }

    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        self.gate().await?;
        self.inner.state_totals().await
    }

    async fn recent_tuples(&self, limit: usize) -> Result<Vec<CloudTuple>, CacheError> {
        self.gate().await?;
        self.inner.recent_tuples(limit).await
    }

    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        self.gate().await?;
        self.inner.edges().await
    }
}
