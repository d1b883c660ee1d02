//! The cloud store's layout in Redis, as `RedisCache` uses it: the key
//! names, the 16 store buckets (one hash tag each), the packing of a
//! bucket's script call and the recent-list entries. They live in
//! [`edgemeter_scripts::layout`], beside the Lua scripts, so that the
//! simulated Redis (`sim-tests`) packs and reads exactly as this crate
//! does without depending on the `redis` crate; this module re-exports
//! them and keeps the one test that needs the Redis Cluster client's own
//! slot function.

pub use edgemeter_scripts::layout::*;

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_cloud::{postal_code_for, state_of, tuple_key, CloudTuple, GermanState};
    use redis::cluster_routing::Slot;

    fn tuple(edge_id: &str, node_id: &str, window_start_ms: i64) -> CloudTuple {
        let postal_code = postal_code_for(node_id);
        CloudTuple {
            key: tuple_key(edge_id, node_id, &window_start_ms.to_string()),
            edge_id: edge_id.into(),
            node_id: node_id.into(),
            window_start_ms: Some(window_start_ms),
            average_w: 1.5,
            samples: 3,
            postal_code,
            state: state_of(postal_code).unwrap(),
            received_ms: 7,
        }
    }

    /// Goal: every key of every script call hashes to one cluster slot,
    /// the slot of its bucket's tag, and different buckets are different
    /// slots. Method: a batch of households of every bucket and two edges
    /// (odd household ids included), split and packed; each call's keys
    /// through the cluster client's own slot function (CRC16 of the hash
    /// tag), plus the readers' keys of each bucket and the heartbeat's
    /// keys for many edge ids.
    #[test]
    fn every_key_of_a_call_is_in_its_buckets_slot() {
        let mut households = edgemeter_wire::bucket::households_in_every_bucket(1);
        households.push("odd {tag} id}:{".to_owned());
        households.push(String::new());
        let mut batch = Vec::new();
        for (number, household) in households.iter().enumerate() {
            for window in 0..3 {
                let edge = if number % 2 == 0 { "edge-a" } else { "edge-b" };
                batch.push(tuple(edge, household, window * 5_000));
            }
        }
        let split = split_by_bucket(&batch);
        assert_eq!(split.len(), STORE_BUCKETS);
        let mut slots = Vec::new();
        for (bucket, indexes) in split {
            let call = store_call(bucket, &batch, indexes, 9, 1);
            let slot = Slot::for_key(format!("{{em-b{bucket:02}}}"));
            for key in &call.keys {
                assert_eq!(Slot::for_key(key), slot, "{key} in bucket {bucket}");
                assert!(key.starts_with(BucketKeys::new(bucket).prefix()));
            }
            // And the keys the readers send to the bucket in one pipeline.
            let keys = BucketKeys::new(bucket);
            let mut read = vec![
                keys.epoch(),
                keys.recent(),
                keys.edges(),
                keys.edge("edge-a"),
            ];
            for state in GermanState::ALL {
                read.push(keys.state(state));
                read.push(keys.state_households(state));
            }
            assert!(
                read.iter().all(|key| Slot::for_key(key) == slot),
                "bucket {bucket}"
            );
            slots.push(slot);
        }
        slots.dedup();
        assert_eq!(slots.len(), STORE_BUCKETS, "one slot per bucket");
        for number in 0..200 {
            let (bucket, keys) = heartbeat_keys(&format!("edge-{number}"));
            let slot = Slot::for_key(BucketKeys::new(bucket).epoch());
            assert!(keys.iter().all(|key| Slot::for_key(key) == slot));
        }
    }
}
