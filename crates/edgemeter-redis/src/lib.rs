//! `edgemeter-redis` is the cloud's `Cache` in Redis or a Redis Cluster.
//!
//! - [`layout`]: the key names, the 16 store buckets (one hash tag each)
//!   and the packing of the script calls, without IO.
//! - [`cache`]: [`RedisCache`], one Lua script call per store bucket a batch
//!   touches, on a single server or a cluster.
//!
//! The simulation runs the same Lua scripts against its simulated Redis;
//! `edgemeter-contract`'s cache suite holds the two to the same behaviour.

pub mod cache;
pub mod layout;

pub use cache::RedisCache;
