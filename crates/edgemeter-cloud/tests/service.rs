//! The cloud service against an in-memory cache and a failing one: the
//! reply follows the write, resends are harmless, both wire forms work, and
//! bad input gets an error reply.

use edgemeter_cloud::INSTANCE_LEASE;
use edgemeter_cloud::{
    postal_code_for, Cache, CacheError, CacheWrite, CloudTuple, EdgeRecord, HeartbeatRecord,
    MemoryCache, StateTotals,
};
use edgemeter_cloud::{Cloud, CloudConfig};
use edgemeter_env::SystemClock;
use edgemeter_wire::bucket::epochs_digest;
use edgemeter_wire::legacy::parse_reply;
use edgemeter_wire::{
    store_bucket, Backlog, BatchReply, BatchRequest, BucketHeartbeatReply, HeartbeatReply,
    HeartbeatRequest, ReplyOutcome, TupleOut, TupleOutcome, WireVersion, STORE_BUCKETS,
};
use std::collections::{BTreeMap, BTreeSet};

fn batch(edge_id: &str, request_id: u64, windows: &[i64]) -> Vec<u8> {
    batch_of(WireVersion::V1, edge_id, request_id, windows, 100.0)
}

fn batch_of(
    version: WireVersion,
    edge_id: &str,
    request_id: u64,
    windows: &[i64],
    average_base_w: f64,
) -> Vec<u8> {
    BatchRequest {
        version,
        edge_id: edge_id.into(),
        instance: if version == WireVersion::V3 { 1 } else { 0 },
        request_id,
        tuples: windows
            .iter()
            .enumerate()
            .map(|(index, window)| TupleOut {
                tuple_id: index as i64 + 1,
                node_id: "house-1".into(),
                window_start_ms: *window,
                average_w: average_base_w + index as f64,
                samples: 2,
            })
            .collect(),
    }
    .encode()
}

fn cloud() -> Cloud<MemoryCache, SystemClock> {
    Cloud::new(CloudConfig::default(), MemoryCache::new(), SystemClock)
}

#[tokio::test]
async fn a_resent_batch_gets_the_same_codes_and_is_stored_once() {
    let cloud = cloud();
    let request = batch("edge-a", 1, &[0, 5_000]);
    let first = BatchReply::decode(&cloud.handle_data(&request).await).unwrap();
    let again = BatchReply::decode(&cloud.handle_data(&request).await).unwrap();
    assert_eq!(first.outcome, again.outcome);
    let ReplyOutcome::Stored(acks) = first.outcome else {
        panic!("not stored: {first:?}")
    };
    assert_eq!(acks.len(), 2);
    assert!(acks
        .iter()
        .all(|ack| ack.postal_code == postal_code_for("house-1")));
    assert_eq!(cloud.cache().len(), 2);
    assert_eq!(cloud.counters().tuples_stored, 2);
    assert_eq!(cloud.counters().tuples_repeated, 2);
    let totals = cloud.cache().state_totals().await.unwrap();
    assert_eq!(
        totals.iter().map(|t| t.tuples).sum::<u64>(),
        2,
        "a resend is not recounted"
    );
}

#[tokio::test]
async fn two_edges_never_collide() {
    let cloud = cloud();
    cloud.handle_data(&batch("edge-a", 1, &[0])).await;
    cloud.handle_data(&batch("edge-b", 1, &[0])).await;
    let keys: Vec<String> = cloud.cache().snapshot().into_keys().collect();
    assert_eq!(
        keys,
        vec!["tuple:edge-a:house-1:0", "tuple:edge-b:house-1:0"]
    );
}

#[tokio::test]
async fn answers_the_original_wire_form() {
    let cloud = cloud();
    assert_eq!(cloud.handle_heartbeat(b"heartbeat").await, b"ack");
    let request = br#"{"id": 5, "node_id": "abc", "average": 1.5}"#;
    let reply = cloud.handle_data(request).await;
    let text = String::from_utf8(reply.clone()).unwrap();
    assert!(text.starts_with("PLZ for id: 5 - PLZ: "), "{text}");
    let (id, code) = parse_reply(&reply).unwrap();
    assert_eq!((id, code), (5, postal_code_for("abc")));
    assert_eq!(
        cloud.handle_data(request).await,
        reply,
        "a resend gets the same code"
    );
    assert_eq!(cloud.cache().len(), 1);
}

#[tokio::test]
async fn bad_input_gets_an_error_reply_and_is_counted() {
    let cloud = cloud();
    let reply = cloud.handle_data(br#"{"id": 1, "node_id": "abc"}"#).await;
    assert!(reply.starts_with(b"ERROR: "));
    let reply = cloud.handle_data(b"EMQ\x01garbage").await;
    let decoded = BatchReply::decode(&reply).unwrap();
    assert!(matches!(decoded.outcome, ReplyOutcome::Rejected(_)));
    assert!(cloud
        .handle_heartbeat(b"hello")
        .await
        .starts_with(b"ERROR: "));
    assert_eq!(cloud.counters().malformed, 3);
    assert!(cloud.cache().is_empty());
}

/// A cache that is always down.
struct DownCache;

impl Cache for DownCache {
    async fn store(&self, _: &[CloudTuple], _: u64) -> Result<CacheWrite, CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn record_heartbeat(
        &self,
        _: &str,
        _: u64,
        _: i64,
        _: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn recent_tuples(&self, _: usize) -> Result<Vec<CloudTuple>, CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn no_postal_code_without_a_cache_write() {
    let cloud = Cloud::new(CloudConfig::default(), DownCache, SystemClock);
    let reply = BatchReply::decode(&cloud.handle_data(&batch("e", 3, &[0])).await).unwrap();
    assert_eq!(reply.request_id, 3);
    assert!(
        matches!(reply.outcome, ReplyOutcome::RetryLater(_)),
        "{reply:?}"
    );
    let legacy = cloud
        .handle_data(br#"{"id": 1, "node_id": "abc", "average": 2}"#)
        .await;
    assert!(legacy.starts_with(b"ERROR: "));
    assert_eq!(
        cloud.handle_heartbeat(b"heartbeat").await,
        b"ack",
        "the cloud itself is alive"
    );
    assert_eq!(cloud.counters().cache_errors, 2);
}

/// A cache whose every call hangs, as a Redis that accepts connections and
/// never answers.
struct StalledCache;

impl Cache for StalledCache {
    async fn store(&self, _: &[CloudTuple], _: u64) -> Result<CacheWrite, CacheError> {
        std::future::pending().await
    }
    async fn record_heartbeat(
        &self,
        _: &str,
        _: u64,
        _: i64,
        _: u64,
    ) -> Result<HeartbeatRecord, CacheError> {
        std::future::pending().await
    }
    async fn state_totals(&self) -> Result<Vec<StateTotals>, CacheError> {
        std::future::pending().await
    }
    async fn recent_tuples(&self, _: usize) -> Result<Vec<CloudTuple>, CacheError> {
        std::future::pending().await
    }
    async fn edges(&self) -> Result<Vec<EdgeRecord>, CacheError> {
        std::future::pending().await
    }
}

/// Goal: a cache that never answers cannot make the cloud look dead: the
/// heartbeat waits for its cache record at most `HEARTBEAT_RECORD_TIMEOUT`
/// (200 ms), then is answered. Method: paused time, and a minute's bound
/// on the whole call so that a missing timeout fails instead of hanging.
#[tokio::test(start_paused = true)]
async fn a_stalled_cache_does_not_hold_up_heartbeats() {
    let cloud = Cloud::new(CloudConfig::default(), StalledCache, SystemClock);
    let started = tokio::time::Instant::now();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        cloud.handle_heartbeat(b"heartbeat"),
    )
    .await
    .expect("the heartbeat was held up by the cache");
    assert_eq!(reply, b"ack");
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(200));
}

/// Goal: a version-2 batch is answered under the cache's epoch, the same
/// one a version-2 heartbeat reports, and a version-1 batch still gets its
/// version-1 reply. A cache that lost its data answers with a new epoch.
#[tokio::test]
async fn version_two_replies_carry_the_store_epoch() {
    let cloud = cloud();
    let heartbeat = HeartbeatRequest::EdgeV2 {
        edge_id: "edge-a".into(),
    }
    .encode();
    let before = HeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat).await)
        .unwrap()
        .epoch
        .expect("the cache answered");
    let reply = BatchReply::decode(
        &cloud
            .handle_data(&batch_of(WireVersion::V2, "edge-a", 1, &[0, 5_000], 100.0))
            .await,
    )
    .unwrap();
    assert_eq!(reply.version, WireVersion::V2);
    let ReplyOutcome::StoredUnder { epoch, acks } = reply.outcome else {
        panic!("not stored: {reply:?}")
    };
    assert_eq!(epoch, before);
    assert_eq!(acks.len(), 2);
    assert!(acks.iter().all(|ack| ack.outcome == TupleOutcome::Stored));
    let old = BatchReply::decode(&cloud.handle_data(&batch("edge-a", 2, &[10_000])).await).unwrap();
    assert!(matches!(old.outcome, ReplyOutcome::Stored(_)), "{old:?}");
    assert_eq!(cloud.handle_heartbeat(b"heartbeat").await, b"ack");
    cloud.cache().lose();
    let after = HeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat).await)
        .unwrap()
        .epoch
        .unwrap();
    assert_ne!(after, before, "a lost store has a new epoch");
}

/// Goal: a resend with another average is a conflict: answered as one,
/// counted, and the stored tuple is kept. An identical resend is not.
#[tokio::test]
async fn a_conflicting_resend_is_answered_counted_and_not_stored() {
    let cloud = cloud();
    let first = batch_of(WireVersion::V2, "edge-a", 1, &[0, 5_000], 100.0);
    cloud.handle_data(&first).await;
    let again = BatchReply::decode(&cloud.handle_data(&first).await).unwrap();
    let ReplyOutcome::StoredUnder { acks, .. } = again.outcome else {
        panic!("{again:?}")
    };
    assert!(acks.iter().all(|ack| ack.outcome == TupleOutcome::Stored));
    assert_eq!(cloud.counters().conflicts, 0);
    let changed = batch_of(WireVersion::V2, "edge-a", 2, &[0, 10_000], 7.0);
    let reply = BatchReply::decode(&cloud.handle_data(&changed).await).unwrap();
    let ReplyOutcome::StoredUnder { acks, .. } = reply.outcome else {
        panic!("{reply:?}")
    };
    let outcomes: Vec<TupleOutcome> = acks.iter().map(|ack| ack.outcome).collect();
    assert_eq!(outcomes, [TupleOutcome::Conflict, TupleOutcome::Stored]);
    assert_eq!(cloud.counters().conflicts, 1);
    assert_eq!(
        cloud.cache().snapshot()["tuple:edge-a:house-1:0"].average_w,
        100.0
    );
    // A version-1 edge is answered as before, and the conflict still counts.
    let changed_v1 = batch_of(WireVersion::V1, "edge-a", 3, &[5_000], 7.0);
    let reply = BatchReply::decode(&cloud.handle_data(&changed_v1).await).unwrap();
    assert!(matches!(reply.outcome, ReplyOutcome::Stored(_)));
    assert_eq!(cloud.counters().conflicts, 2);
}

mod authenticated {
    use super::*;
    use edgemeter_cloud::{CloudAuth, EdgeKeys};
    use edgemeter_env::WallClock;
    use edgemeter_wire::sealed::{open_reply, seal_request};
    use edgemeter_wire::EdgeKey;

    fn key(byte: u8) -> EdgeKey {
        EdgeKey::from_bytes([byte; 32])
    }

    fn strict_cloud() -> Cloud<MemoryCache, SystemClock> {
        let auth = CloudAuth {
            allow_unauthenticated: false,
            ..CloudAuth::open().with_key("edge-a", key(1))
        };
        Cloud::new(
            CloudConfig {
                auth,
                ..CloudConfig::default()
            },
            MemoryCache::new(),
            SystemClock,
        )
    }

    #[tokio::test]
    async fn a_sealed_batch_is_stored_and_its_reply_proves_the_cloud() {
        let cloud = strict_cloud();
        let (sealed, tag) = seal_request(
            "edge-a",
            &key(1),
            SystemClock.now_ms(),
            &batch("edge-a", 1, &[0]),
        );
        let reply = cloud.handle_data(&sealed).await;
        let body =
            open_reply(&reply, &key(1), &tag).expect("the reply is sealed with the edge's key");
        assert!(matches!(
            BatchReply::decode(&body).unwrap().outcome,
            ReplyOutcome::Stored(_)
        ));
        assert_eq!(cloud.cache().len(), 1);
    }

    /// Goal: replacing the keys while the cloud serves takes effect on the
    /// next request: the new key is served, the replaced one refused, and
    /// an edge left out of the new map is refused too. Method: one cloud,
    /// sealed batches before and after [`Cloud::replace_keys`].
    #[tokio::test]
    async fn replaced_keys_take_effect_on_the_next_request() {
        let cloud = strict_cloud();
        let stored = |reply: &[u8], key: &EdgeKey, tag: &[u8; 32]| {
            let body = open_reply(reply, key, tag).expect("a sealed reply");
            matches!(
                BatchReply::decode(&body).unwrap().outcome,
                ReplyOutcome::Stored(_)
            )
        };
        let send = |edge: &str, with: u8, request_id: u64| {
            seal_request(
                edge,
                &key(with),
                SystemClock.now_ms(),
                &batch(edge, request_id, &[0]),
            )
        };
        let (old, tag) = send("edge-a", 1, 1);
        assert!(stored(&cloud.handle_data(&old).await, &key(1), &tag));
        let (early, _) = send("edge-a", 2, 2);
        assert!(cloud
            .handle_data(&early)
            .await
            .starts_with(b"ERROR: unauthenticated"));

        let mut rotated = EdgeKeys::new();
        rotated.insert("edge-a".into(), key(2));
        rotated.insert("edge-b".into(), key(3));
        assert_eq!(cloud.replace_keys(rotated), 1, "one edge had a key before");
        assert_eq!(cloud.keys().len(), 2);
        let (new, tag) = send("edge-a", 2, 3);
        assert!(stored(&cloud.handle_data(&new).await, &key(2), &tag));
        let (other, tag) = send("edge-b", 3, 1);
        assert!(stored(&cloud.handle_data(&other).await, &key(3), &tag));
        let (stale, _) = send("edge-a", 1, 4);
        assert!(cloud
            .handle_data(&stale)
            .await
            .starts_with(b"ERROR: unauthenticated"));

        cloud.replace_keys(EdgeKeys::new());
        let (left_out, _) = send("edge-b", 3, 2);
        assert!(cloud
            .handle_data(&left_out)
            .await
            .starts_with(b"ERROR: unauthenticated"));
        assert_eq!(cloud.counters().unauthenticated, 3);
    }

    #[tokio::test]
    async fn nothing_unproven_reaches_the_cache() {
        let cloud = strict_cloud();
        let now = SystemClock.now_ms();
        // The original's form and an unsealed batch: refused while the switch is off.
        assert!(cloud
            .handle_data(br#"{"id": 1, "node_id": "abc", "average": 2}"#)
            .await
            .starts_with(b"ERROR: unauthenticated"));
        assert!(cloud
            .handle_data(&batch("edge-a", 1, &[0]))
            .await
            .starts_with(b"ERROR: unauthenticated"));
        assert!(cloud
            .handle_heartbeat(b"heartbeat")
            .await
            .starts_with(b"ERROR: unauthenticated"));
        // A wrong key, an unknown edge, a replay from long ago, and an edge
        // writing under another edge's name.
        let (wrong_key, _) = seal_request("edge-a", &key(2), now, &batch("edge-a", 1, &[0]));
        let (unknown, _) = seal_request("edge-x", &key(1), now, &batch("edge-x", 1, &[0]));
        let (stale, _) = seal_request(
            "edge-a",
            &key(1),
            now - 3_600_000,
            &batch("edge-a", 1, &[0]),
        );
        for request in [wrong_key, unknown, stale] {
            assert!(cloud
                .handle_data(&request)
                .await
                .starts_with(b"ERROR: unauthenticated"));
        }
        let (impostor, tag) = seal_request("edge-a", &key(1), now, &batch("edge-b", 1, &[0]));
        let reply = open_reply(&cloud.handle_data(&impostor).await, &key(1), &tag).unwrap();
        assert!(matches!(
            BatchReply::decode(&reply).unwrap().outcome,
            ReplyOutcome::Rejected(_)
        ));
        assert!(cloud.cache().is_empty());
        assert_eq!(cloud.counters().unauthenticated, 6);
    }

    /// Goal: with `--keys` and `--allow-unauthenticated` both on, an
    /// unsealed request naming the keyed edge is refused, counted and kept
    /// from the cache, in both versions and on both sockets, while edges
    /// without keys, the original's form and the keyed edge's sealed
    /// requests are served. Method: the issue's forgery, then the rest.
    #[tokio::test]
    async fn mixed_mode_is_not_a_back_door() {
        let auth = CloudAuth::open().with_key("edge-a", key(1));
        assert!(auth.allow_unauthenticated);
        let cloud = Cloud::new(
            CloudConfig {
                auth,
                ..CloudConfig::default()
            },
            MemoryCache::new(),
            SystemClock,
        );
        for version in [WireVersion::V1, WireVersion::V2] {
            let forged = batch_of(version, "edge-a", 1, &[0, 5_000], 1.0);
            assert!(cloud
                .handle_data(&forged)
                .await
                .starts_with(b"ERROR: unauthenticated: edge edge-a has a key"));
        }
        for heartbeat in [
            HeartbeatRequest::Edge {
                edge_id: "edge-a".into(),
            },
            HeartbeatRequest::EdgeV2 {
                edge_id: "edge-a".into(),
            },
        ] {
            assert!(cloud
                .handle_heartbeat(&heartbeat.encode())
                .await
                .starts_with(b"ERROR: unauthenticated"));
        }
        assert!(cloud.cache().is_empty(), "nothing forged reached the cache");
        assert!(
            cloud.edge_liveness().is_empty(),
            "no forged heartbeat counted"
        );
        assert_eq!(cloud.counters().unauthenticated, 4);
        assert_eq!(
            cloud
                .counters()
                .refused_for(edgemeter_cloud::RefusalReason::KeyedEdgeUnsealed),
            4
        );

        let (sealed, tag) = seal_request(
            "edge-a",
            &key(1),
            SystemClock.now_ms(),
            &batch("edge-a", 2, &[0]),
        );
        let body = open_reply(&cloud.handle_data(&sealed).await, &key(1), &tag).unwrap();
        assert!(matches!(
            BatchReply::decode(&body).unwrap().outcome,
            ReplyOutcome::Stored(_)
        ));
        let open = BatchReply::decode(&cloud.handle_data(&batch("edge-b", 1, &[0])).await).unwrap();
        assert!(matches!(open.outcome, ReplyOutcome::Stored(_)));
        let legacy = cloud
            .handle_data(br#"{"id": 1, "node_id": "abc", "average": 2}"#)
            .await;
        assert!(legacy.starts_with(b"PLZ for id: 1"));
        assert_eq!(cloud.handle_heartbeat(b"heartbeat").await, b"ack");
        assert_eq!(cloud.cache().len(), 3);
        assert_eq!(cloud.counters().unauthenticated, 4);
    }
}

/// Goal: a version-3 heartbeat is answered with the version-2 reply and
/// its backlog is kept for the edge, replaced by the next heartbeat (and
/// forgotten by one without a backlog); versions 1 and 2 and the
/// original's plain heartbeat are still answered as before; a malformed
/// heartbeat is refused and counted under its reason. Method: each form
/// against one cloud, then its edge views and counters.
#[tokio::test]
async fn version_three_heartbeats_report_the_backlog_beside_the_old_forms() {
    use edgemeter_cloud::RefusalReason;
    use edgemeter_wire::Backlog;
    let cloud = cloud();
    let backlog = Backlog {
        queued: 12,
        sent: 3,
        oldest_unacked_age_ms: 4_500,
    };
    let v3 = |backlog| {
        HeartbeatRequest::EdgeV3 {
            edge_id: "edge-a".into(),
            backlog,
        }
        .encode()
    };
    let reply = HeartbeatReply::decode(&cloud.handle_heartbeat(&v3(backlog)).await).unwrap();
    assert!(reply.epoch.is_some());
    let views = cloud.edge_views();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].alive, views[0].backlog), (true, Some(backlog)));
    let drained = Backlog::default();
    cloud.handle_heartbeat(&v3(drained)).await;
    assert_eq!(cloud.edge_views()[0].backlog, Some(drained));
    let v2 = HeartbeatRequest::EdgeV2 {
        edge_id: "edge-a".into(),
    }
    .encode();
    assert!(HeartbeatReply::decode(&cloud.handle_heartbeat(&v2).await).is_ok());
    assert_eq!(cloud.edge_views()[0].backlog, None);
    let v1 = HeartbeatRequest::Edge {
        edge_id: "edge-b".into(),
    }
    .encode();
    assert_eq!(cloud.handle_heartbeat(&v1).await, b"ack");
    assert_eq!(cloud.handle_heartbeat(b"heartbeat").await, b"ack");
    assert_eq!(cloud.edges_connected(), 3, "edge-a, edge-b and legacy");
    let mut cut = v3(backlog);
    cut.pop();
    assert!(cloud.handle_heartbeat(&cut).await.starts_with(b"ERROR"));
    let counters = cloud.counters();
    assert_eq!(counters.refused_for(RefusalReason::Malformed), 1);
    assert_eq!(counters.refused.iter().sum::<u64>(), 1);
    assert_eq!(counters.heartbeats, 5);
}

/// A wall clock the test moves by hand, for the lease's expiry.
#[derive(Clone, Default)]
struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    fn advance_ms(&self, by_ms: i64) {
        self.0.fetch_add(by_ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl edgemeter_env::WallClock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn heartbeat_v4(instance: u64) -> Vec<u8> {
    HeartbeatRequest::EdgeV4 {
        edge_id: "edge-a".into(),
        instance,
        backlog: Backlog::default(),
    }
    .encode()
}

/// One tuple of each of `households`, in a version-3 batch of `instance`.
fn batch_v3(instance: u64, request_id: u64, households: &[&str]) -> Vec<u8> {
    BatchRequest {
        version: WireVersion::V3,
        edge_id: "edge-a".into(),
        instance,
        request_id,
        tuples: households
            .iter()
            .enumerate()
            .map(|(index, node_id)| TupleOut {
                tuple_id: index as i64 + 1,
                node_id: (*node_id).into(),
                window_start_ms: 5_000 * request_id as i64,
                average_w: 10.0,
                samples: 1,
            })
            .collect(),
    }
    .encode()
}

/// Goal: where an older edge expects one epoch (heartbeat versions 2 and
/// 3, batch version 2) the cloud answers the digest of the 16 bucket
/// epochs, the same from heartbeats and batches, from a fresh cloud's very
/// first batch on; a version-4 heartbeat names the 16 epochs themselves
/// and a version-3 batch the epochs of exactly the buckets it wrote; the
/// loss of one bucket changes that bucket's epoch only, and the digest.
/// Method: a cloud over a memory cache, every form, one bucket lost.
#[tokio::test]
async fn older_edges_get_the_digest_and_newer_ones_every_bucket() {
    let cloud = cloud();
    // The very first request is a version-2 batch: the cloud knows no
    // bucket's epoch yet and must still name the full digest.
    let reply = BatchReply::decode(
        &cloud
            .handle_data(&batch_of(WireVersion::V2, "edge-a", 1, &[0], 1.0))
            .await,
    )
    .unwrap();
    let ReplyOutcome::StoredUnder { epoch: first, .. } = reply.outcome else {
        panic!("{reply:?}")
    };
    let digest = epochs_digest(&cloud.cache().epochs()).expect("every bucket has an epoch");
    assert_eq!(first, digest);
    for heartbeat in [
        HeartbeatRequest::EdgeV2 {
            edge_id: "edge-a".into(),
        },
        HeartbeatRequest::EdgeV3 {
            edge_id: "edge-a".into(),
            backlog: Backlog::default(),
        },
    ] {
        let reply = HeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat.encode()).await);
        assert_eq!(reply.unwrap().epoch, Some(digest), "{heartbeat:?}");
    }
    let accepted = BucketHeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat_v4(7)).await);
    assert_eq!(
        accepted.unwrap(),
        BucketHeartbeatReply::Accepted {
            epochs: cloud.cache().epochs()
        }
    );
    let (kept, lost) = two_buckets();
    let reply = BatchReply::decode(&cloud.handle_data(&batch_v3(7, 2, &[&kept, &lost])).await);
    let ReplyOutcome::StoredInBuckets { epochs, acks } = reply.unwrap().outcome else {
        panic!("not stored")
    };
    let before = cloud.cache().epochs();
    let bucket = |node_id: &str| store_bucket(node_id);
    let named = |node_id: &str| (bucket(node_id), before[usize::from(bucket(node_id))]);
    assert_eq!(epochs, BTreeMap::from([named(&kept), named(&lost)]));
    assert_eq!(acks.len(), 2);

    cloud.cache().lose_buckets(&BTreeSet::from([bucket(&lost)]));
    let reply = BucketHeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat_v4(7)).await);
    let BucketHeartbeatReply::Accepted { epochs: after } = reply.unwrap() else {
        panic!("refused")
    };
    for index in 0..STORE_BUCKETS {
        let changed = after[index] != before[index];
        assert_eq!(
            changed,
            index == usize::from(bucket(&lost)),
            "bucket {index}"
        );
        assert_ne!(after[index], 0);
    }
    let heartbeat = HeartbeatRequest::EdgeV2 {
        edge_id: "edge-a".into(),
    };
    let reply = HeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat.encode()).await);
    let new_digest = reply.unwrap().epoch.unwrap();
    assert_ne!(new_digest, digest, "one bucket's loss changes the digest");
    assert_eq!(Some(new_digest), epochs_digest(&after));
}

/// Two households whose tuples live in different buckets.
fn two_buckets() -> (String, String) {
    let kept = "house-1".to_owned();
    let lost = (0..)
        .map(|index| format!("house-{index}"))
        .find(|node_id| store_bucket(node_id) != store_bucket(&kept))
        .unwrap();
    (kept, lost)
}

/// Goal: one edge id, one process (the design's section 3): the first
/// instance is accepted and keeps renewing; a second instance is refused,
/// its heartbeats and its version-3 batches alike, for as long as the
/// first heartbeats, and stores nothing; once the first is quiet for one
/// lease, the second (a restarted edge) is accepted and the first is
/// refused. An older edge's heartbeat is never refused. Method: a cloud
/// over a memory cache with a hand-moved clock.
#[tokio::test]
async fn a_second_instance_is_refused_until_the_lease_runs_out() {
    let clock = ManualClock::default();
    clock.advance_ms(1_000_000);
    let cloud = Cloud::new(CloudConfig::default(), MemoryCache::new(), clock.clone());
    let beat = |instance| {
        let cloud = &cloud;
        async move {
            BucketHeartbeatReply::decode(&cloud.handle_heartbeat(&heartbeat_v4(instance)).await)
                .unwrap()
        }
    };
    let (first, second) = (0x1111, 0x2222);
    assert!(matches!(
        beat(first).await,
        BucketHeartbeatReply::Accepted { .. }
    ));
    let lease_ms = INSTANCE_LEASE.as_millis() as i64;
    for _ in 0..3 * lease_ms / 1_000 {
        clock.advance_ms(1_000);
        assert!(matches!(
            beat(first).await,
            BucketHeartbeatReply::Accepted { .. }
        ));
        assert_eq!(beat(second).await, BucketHeartbeatReply::Refused);
    }
    let refused = BatchReply::decode(&cloud.handle_data(&batch_v3(second, 1, &["h"])).await);
    assert!(matches!(refused.unwrap().outcome, ReplyOutcome::Refused(_)));
    assert!(cloud.cache().is_empty(), "a refused batch stores nothing");
    let stored = BatchReply::decode(&cloud.handle_data(&batch_v3(first, 1, &["h"])).await);
    assert!(matches!(
        stored.unwrap().outcome,
        ReplyOutcome::StoredInBuckets { .. }
    ));
    let older = HeartbeatRequest::EdgeV2 {
        edge_id: "edge-a".into(),
    };
    let reply = HeartbeatReply::decode(&cloud.handle_heartbeat(&older.encode()).await);
    assert!(reply.unwrap().epoch.is_some(), "an older edge is answered");

    // The first edge stops; just short of one lease the id is still held.
    clock.advance_ms(lease_ms - 1);
    assert_eq!(beat(second).await, BucketHeartbeatReply::Refused);
    clock.advance_ms(1);
    assert!(matches!(
        beat(second).await,
        BucketHeartbeatReply::Accepted { .. }
    ));
    let stored = BatchReply::decode(&cloud.handle_data(&batch_v3(second, 2, &["h"])).await);
    assert!(matches!(
        stored.unwrap().outcome,
        ReplyOutcome::StoredInBuckets { .. }
    ));
    assert_eq!(beat(first).await, BucketHeartbeatReply::Refused);
    assert!(cloud.counters().instances_refused >= 5);
}
