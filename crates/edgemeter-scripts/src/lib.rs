//! `edgemeter-scripts`: the cloud store's Redis layout and its Lua scripts,
//! the one source that `RedisCache` (crate `edgemeter`) sends to Redis and
//! that the simulated Redis (`sim-tests`) runs in its embedded Lua 5.1, so
//! the simulation runs the deployed bytes rather than a re-implementation.
//!
//! The crate has no IO and no `redis` dependency: it is text and pure
//! functions, so the logic and simulation crates may use it.
//!
//! # Layout
//! - [`layout`]: key names, the split of a batch into store buckets, the
//!   packing of each bucket's store call (KEYS and ARGV in the script's
//!   order) and the recent-list entries.
//! - The scripts, each the shared `bucket_epoch` function
//!   (`lua/bucket_epoch.lua`) followed by its body: [`STORE_SCRIPT`],
//!   [`EPOCH_SCRIPT`], [`HEARTBEAT_SCRIPT`].
//! - [`planted`] (feature `planted-bugs` only): variants of the scripts
//!   with a realistic slip each, for the harness's planted bugs. Production
//!   builds do not enable the feature, so no variant's text is compiled in.

pub mod layout;

#[cfg(feature = "planted-bugs")]
pub mod planted;

/// Expands to the Lua every script that names a bucket's epoch starts with:
/// `bucket_epoch(key, candidate)` returns the bucket's epoch, setting it
/// from the candidate when it is missing AND when the Redis server is not
/// the one that set it. The epoch key holds `<epoch>:<run id>`, and a
/// server's run id is new at every start and on every node promoted in a
/// failover. Either may have lost writes Redis had acknowledged while the
/// epoch key survived: AOF `everysec` loses up to a second in a crash, a
/// snapshot loses what came after it, and an asynchronous replica lacks
/// the primary's latest writes. Renewing the epoch then makes the edges
/// ship again every tuple the bucket held under the old one, which the
/// store takes once (NX), so exactly what was lost comes back. A restart
/// that lost nothing costs that reship too: correctness does not depend on
/// telling the two apart. Reading the run id in the script keeps it atomic
/// with the write it labels.
macro_rules! bucket_epoch_lua {
    () => {
        include_str!("lua/bucket_epoch.lua")
    };
}

/// Inserts each new tuple of one bucket and moves the bucket's totals for
/// the new ones only. Every key it touches is in KEYS, all of one slot:
/// epoch, recent list, edges set, then per state its hash and households
/// set, then per edge its hash, then per tuple its key.
/// ARGV: candidate epoch, recent bound, stamp, the counts of states, edges,
/// groups and tuples; then the edge ids; then per group (one household of
/// one edge) its state number, edge number, household, latest received
/// ms, tuple count and the sum of its averages; then per tuple its stored
/// value, group tag (the group's number from 1) and index in the batch.
/// [`layout::store_call`] packs them. Returns the number inserted, the
/// bucket's epoch (a string), the call-local 0-based indexes of the
/// conflicting tuples and, for each, the value stored under its key.
///
/// The tag is looked up as a string, so a tuple costs no `tonumber`.
/// Tuples stay in batch order, the order the recent list shows them in. A
/// group's sum counts every tuple; only when some of them were stored
/// before is it summed again from the new ones' values, in batch order, so
/// the totals are exactly what adding each new average gives.
///
/// A command that fails (a key of the wrong type) aborts the script where
/// it stands, as Redis does: the writes before it stay, nothing is rolled
/// back. The cloud answers the edge "retry later"; the resend then finds
/// the tuples stored and counts them no more.
pub const STORE_SCRIPT: &str = concat!(bucket_epoch_lua!(), include_str!("lua/store.lua"));

/// A bucket's epoch, renewed from the candidate as `bucket_epoch` says.
/// KEYS: the bucket's epoch. ARGV: the candidate.
pub const EPOCH_SCRIPT: &str = concat!(bucket_epoch_lua!(), include_str!("lua/epoch.lua"));

/// An edge's heartbeat in its own bucket, with the instance lease (one id,
/// one live edge): the bucket's epoch as [`EPOCH_SCRIPT`] sets it; then,
/// unless another instance holds the lease, the lease is taken or renewed
/// for this instance and the heartbeat time and the edge id are recorded.
/// Instance "0" (an older edge, which names none) takes no lease and is
/// never refused: its protocol has no way to be.
/// KEYS: epoch, edges set, edge hash, lease. ARGV: candidate epoch, edge
/// id, now ms, instance, lease ms. Returns the epoch and 1 if refused.
pub const HEARTBEAT_SCRIPT: &str = concat!(bucket_epoch_lua!(), include_str!("lua/heartbeat.lua"));

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: every script starts with the shared epoch function and names
    /// KEYS and ARGV as the layout packs them; the store script touches
    /// the totals only through the keys the layout names.
    #[test]
    fn each_script_starts_with_the_epoch_function() {
        for script in [STORE_SCRIPT, EPOCH_SCRIPT, HEARTBEAT_SCRIPT] {
            assert!(script.starts_with("\nlocal function bucket_epoch(key, candidate)"));
            assert!(script.contains("bucket_epoch(KEYS[1], ARGV[1])"));
        }
        assert!(STORE_SCRIPT.contains("redis.call('HINCRBYFLOAT', state_key, 'average_sum_w'"));
    }
}
