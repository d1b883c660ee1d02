//! Store buckets: the fixed partition of the cloud's store by household.
//!
//! Every tuple of one household, whichever edge ships it, lives in one of
//! [`STORE_BUCKETS`] buckets, chosen by [`store_bucket`] from the
//! household's id. A bucket is the unit the store loses and renews: each
//! has its own epoch, so a shard of a Redis Cluster restarted empty renews
//! the epochs of its buckets only, and the edges ship again exactly the
//! tuples of those buckets. In Redis each bucket is one hash tag
//! ([`bucket_hash_tag`]), so all its keys are in one cluster slot and a
//! batch splits into at most [`STORE_BUCKETS`] single-slot script calls.
//!
//! The edge, the cloud and the simulation all call this one function: the
//! bucket is never sent on the wire for a tuple, it is recomputed, so the
//! two ends cannot disagree. Changing the function or the count moves
//! tuples between buckets, which makes every edge reship what it holds
//! once (correct, only wider); keep both fixed.

/// How many buckets the store has. 16 keeps a batch within 16 single-slot
/// calls, the heartbeat reply within 16 epochs (133 bytes), and spreads
/// well over the 3 to 6 primaries a deployment runs. It is a wire value:
/// the heartbeat reply's epoch count must equal it.
pub const STORE_BUCKETS: usize = 16;

const _: () = assert!(STORE_BUCKETS > 0 && STORE_BUCKETS <= u8::MAX as usize);
const _: () = assert!(STORE_BUCKETS.is_power_of_two());

/// The FNV-1a 64-bit offset basis and prime.
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `state`.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// The bucket of a household: FNV-1a 64 over its id's bytes, mod
/// [`STORE_BUCKETS`].
pub fn store_bucket(node_id: &str) -> u16 {
    let bucket = fnv1a(FNV_OFFSET_BASIS, node_id.as_bytes()) % STORE_BUCKETS as u64;
    assert!(bucket < STORE_BUCKETS as u64);
    bucket as u16
}

/// `per_bucket` household ids (`house-N`) in each of the
/// [`STORE_BUCKETS`] buckets, bucket by bucket: what tests and benches
/// that must touch every bucket store. Panics if the first 100,000 ids do
/// not fill every bucket.
pub fn households_in_every_bucket(per_bucket: usize) -> Vec<String> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); STORE_BUCKETS];
    for number in 0..100_000 {
        let id = format!("house-{number}");
        let bucket = &mut found[usize::from(store_bucket(&id))];
        if bucket.len() < per_bucket {
            bucket.push(id);
        }
        if found.iter().all(|bucket| bucket.len() == per_bucket) {
            return found.into_iter().flatten().collect();
        }
    }
    panic!("not {per_bucket} households in every bucket");
}

/// The Redis hash tag of a bucket, `{em-bNN}` with NN = 00..15: every key
/// of the bucket carries it, so the bucket is one cluster slot.
pub fn bucket_hash_tag(bucket: u16) -> String {
    assert!(
        usize::from(bucket) < STORE_BUCKETS,
        "bucket {bucket} out of range"
    );
    format!("{{em-b{bucket:02}}}")
}

/// One epoch standing for all the buckets' epochs, for edges that know a
/// single store epoch (heartbeat versions 2 and 3, batch version 2): FNV-1a
/// 64 over the epochs in bucket order, never 0 (the wire's unknown). Any
/// bucket's change changes it, so such an edge ships again everything it
/// holds when any bucket is renewed: correct, only wider. `None` when a
/// bucket's epoch is unknown (0): a digest of a partial view would name a
/// store that does not exist.
pub fn epochs_digest(epochs: &[u64; STORE_BUCKETS]) -> Option<u64> {
    if epochs.contains(&0) {
        return None;
    }
    let mut state = FNV_OFFSET_BASIS;
    for epoch in epochs {
        state = fnv1a(state, &epoch.to_be_bytes());
    }
    // 0 is the wire's unknown; one value of 2^64 moves to 1.
    Some(state.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the bucket is FNV-1a 64 mod 16, stable across releases (it is
    /// a wire value). Method: the published FNV-1a test vectors, then ids
    /// of the shipped data set's form spread over every bucket.
    #[test]
    fn the_bucket_is_fnv1a_mod_sixteen() {
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(store_bucket("a"), 0xc);
        assert_eq!(store_bucket("foobar"), 0x8);
        let mut seen = [0u32; STORE_BUCKETS];
        for household in 0..1_000 {
            seen[usize::from(store_bucket(&format!("household_{household}")))] += 1;
        }
        assert!(seen.iter().all(|&count| count > 20), "{seen:?}");
        assert_eq!(seen.iter().sum::<u32>(), 1_000);
    }

    #[test]
    fn hash_tags_name_each_bucket_once() {
        assert_eq!(bucket_hash_tag(0), "{em-b00}");
        assert_eq!(bucket_hash_tag(15), "{em-b15}");
        let tags: std::collections::BTreeSet<String> =
            (0..STORE_BUCKETS as u16).map(bucket_hash_tag).collect();
        assert_eq!(tags.len(), STORE_BUCKETS);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_bucket_past_the_count_is_a_bug() {
        bucket_hash_tag(STORE_BUCKETS as u16);
    }

    /// Goal: the digest changes with any one bucket's epoch, is never 0,
    /// and is unknown while any bucket is. Method: one epoch changed at a
    /// time, and a 0 in each place.
    #[test]
    fn the_digest_follows_every_bucket() {
        let epochs: [u64; STORE_BUCKETS] = std::array::from_fn(|bucket| 100 + bucket as u64);
        let digest = epochs_digest(&epochs).unwrap();
        assert_ne!(digest, 0);
        assert_eq!(epochs_digest(&epochs), Some(digest), "deterministic");
        for bucket in 0..STORE_BUCKETS {
            let mut changed = epochs;
            changed[bucket] = 7;
            assert_ne!(epochs_digest(&changed), Some(digest), "bucket {bucket}");
            changed[bucket] = 0;
            assert_eq!(epochs_digest(&changed), None, "bucket {bucket}");
        }
    }
}
