//! Shared by the API tests: a fixed data slice with its direct computation,
//! an HTTP helper, a cache wrapper that fails or hangs on demand, a
//! `redis-server` of our own, and the checks every `Cache` must pass through
//! the dashboard (run over the cloud's `MemoryCache` and over `RedisCache`).

#![allow(dead_code)]

pub mod checks;
pub mod fixture;
pub mod http;
pub mod outage_cache;
pub mod redis_server;
