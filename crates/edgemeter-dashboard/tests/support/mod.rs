//! Shared by the API tests: a fixed data slice with its direct computation,
//! an HTTP helper, a cache wrapper that fails or hangs on demand, and the
//! checks every `Cache` must pass through the dashboard (run over the
//! cloud's `MemoryCache` and over `RedisCache`, against a `redis-server`
//! from `edgemeter-testkit`).

#![allow(dead_code)]

pub mod checks;
pub mod fixture;
pub mod http;
pub mod outage_cache;
