//! The `Cache` contract: what the cloud relies on from its store, for the
//! simulated Redis (the `redis` host of `sim-tests`, running the production
//! Lua scripts in embedded Lua over a simulated keyspace, reached through
//! `SimCache`) and the real one (`RedisCache` on a `redis-server`) alike.
//!
//! The behaviours, each a function below:
//! - a tuple's first write wins; a resend that differs is a conflict that
//!   reports the stored values and keeps them ([`first_write_wins`]);
//! - totals count each tuple once, however often it is resent, alone or
//!   beside new tuples of its household ([`totals_count_each_tuple_once`]);
//! - the per-state sums are what Redis's HINCRBYFLOAT keeps, digit for
//!   digit (long-double sums, "%.17Lf" with the zeros cut), which is not
//!   what adding f64s and printing them gives
//!   ([`float_totals_are_kept_as_redis_keeps_them`]);
//! - a script that fails midway (a key of the wrong type planted in the
//!   keyspace) fails the call and leaves behind exactly the writes made
//!   before the failing command, nothing rolled back
//!   ([`a_script_that_fails_midway_keeps_its_earlier_writes`]);
//! - every bucket's epoch is set once, from its own candidate, and renewed
//!   after the server lost its data
//!   ([`epochs_are_set_once_and_renewed_after_a_loss`]).
//!
//! The fixture reaches the keyspace with raw commands, as `redis-cli`
//! would, to plant keys and to look at what a failed script left.

use edgemeter_cloud::{
    bucket_epoch_candidate, postal_code_for, state_of, tuple_key, Cache, CacheError, CloudTuple,
    StateTotals,
};
use edgemeter_scripts::layout::{store_bucket, BucketKeys, STORE_BUCKETS};
use std::future::Future;
use std::time::Duration;

/// A raw command's reply, as RESP2 has them.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Nil,
    Integer(i64),
    Bulk(Vec<u8>),
    Status(String),
    Error(String),
    Array(Vec<Raw>),
}

impl Raw {
    fn text(&self) -> Option<String> {
        match self {
            Raw::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

/// Calls a behaviour retries after the server lost its data, while the
/// client reconnects: a reconnection takes a few attempts at most.
pub const RECONNECT_CALLS_MAX: usize = 20;

/// The world around one cache implementation: its server, and a way to
/// reach the server's keyspace and to make it lose its data.
pub trait CacheFixture {
    type Cache: Cache;

    /// The cache under test, connected to the fixture's server.
    fn cache(&self) -> &Self::Cache;

    /// Runs one command outside any script, as a client sends it.
    fn command(&mut self, args: &[&str]) -> impl Future<Output = Raw>;

    /// The server restarts empty (no persistence), with a new run id.
    fn lose_data(&mut self) -> impl Future<Output = ()>;
}

/// A tuple of `edge_id` for `node_id`'s window at `window_start_ms`.
pub fn tuple(edge_id: &str, node_id: &str, window_start_ms: i64, average_w: f64) -> CloudTuple {
    let postal_code = postal_code_for(node_id);
    CloudTuple {
        key: tuple_key(edge_id, node_id, &window_start_ms.to_string()),
        edge_id: edge_id.into(),
        node_id: node_id.into(),
        window_start_ms: Some(window_start_ms),
        average_w,
        samples: 3,
        postal_code,
        state: state_of(postal_code).expect("every household's code has a state"),
        received_ms: 1_700_000_000_000 + window_start_ms / 1_000,
    }
}

fn redis_key(tuple: &CloudTuple) -> String {
    BucketKeys::new(store_bucket(&tuple.node_id)).tuple(&tuple.key)
}

/// Households of distinct buckets, `count` of them.
fn households_of_distinct_buckets(count: usize) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; STORE_BUCKETS];
    for number in 0..10_000 {
        let id = format!("house-{number}");
        found[usize::from(store_bucket(&id))].get_or_insert(id);
    }
    let found: Vec<String> = found.into_iter().flatten().take(count).collect();
    assert_eq!(found.len(), count, "households of {count} buckets");
    found
}

fn sum_of(totals: &[StateTotals]) -> (u64, u64, f64) {
    totals
        .iter()
        .fold((0, 0, 0.0), |(tuples, households, sum), t| {
            (
                tuples + t.tuples,
                households + t.households,
                sum + t.average_sum_w,
            )
        })
}

/// Retries `call` while the cache is unavailable (a client reconnecting
/// after the server restarted), up to [`RECONNECT_CALLS_MAX`] times.
async fn retrying<T, F, Fut>(mut call: F, what: &str) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CacheError>>,
{
    let mut last = None;
    for _ in 0..RECONNECT_CALLS_MAX {
        match call().await {
            Ok(value) => return value,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: still failing after {RECONNECT_CALLS_MAX} calls: {last:?}");
}

/// NX: the first write of a key wins. A resend with other values answers
/// a conflict naming the stored values, and the stored tuple is what every
/// reader shows afterwards.
pub async fn first_write_wins<F: CacheFixture>(fixture: &mut F) {
    let first = tuple("edge-a", "house-1", 0, 1.5);
    let written = fixture
        .cache()
        .store(std::slice::from_ref(&first), 7)
        .await
        .expect("stored");
    assert_eq!((written.inserted, written.existing), (1, 0));
    assert!(written.conflicts.is_empty());
    let again = fixture
        .cache()
        .store(std::slice::from_ref(&first), 7)
        .await
        .expect("resent");
    assert_eq!((again.inserted, again.existing), (0, 1));
    assert!(again.conflicts.is_empty(), "an equal resend is no conflict");
    let mut differing = first.clone();
    differing.average_w = 9.0;
    differing.samples = 4;
    let other = tuple("edge-a", "house-1", 5_000, 2.0);
    let conflict = fixture
        .cache()
        .store(&[other.clone(), differing], 7)
        .await
        .expect("stored");
    assert_eq!((conflict.inserted, conflict.existing), (1, 1));
    assert_eq!(conflict.conflicts.len(), 1);
    assert_eq!(conflict.conflicts[0].index, 1, "the batch index");
    assert_eq!(conflict.conflicts[0].stored, Some((1.5, 3)));
    let stored = fixture.command(&["GET", &redis_key(&first)]).await;
    assert_eq!(stored, Raw::Bulk(first.stored_value().into_bytes()));
    let recent = fixture.cache().recent_tuples(10).await.expect("read");
    assert_eq!(recent, vec![other, first], "newest first, as first stored");
}

/// Totals move for new tuples only: a whole resend moves nothing, and a
/// batch mixing resent and new tuples of one household (one group of the
/// store call) moves them by the new ones alone.
pub async fn totals_count_each_tuple_once<F: CacheFixture>(fixture: &mut F) {
    let households = households_of_distinct_buckets(3);
    let batch: Vec<CloudTuple> = (0..12)
        .map(|index| {
            let household = &households[index % households.len()];
            tuple(
                "edge-a",
                household,
                index as i64 * 5_000,
                index as f64 + 0.25,
            )
        })
        .collect();
    let first = fixture.cache().store(&batch, 3).await.expect("stored");
    assert_eq!(first.inserted, 12);
    let resent = fixture.cache().store(&batch, 3).await.expect("resent");
    assert_eq!((resent.inserted, resent.existing), (0, 12));
    let mut mixed = batch[6..].to_vec();
    mixed.extend((12..15).map(|index| {
        let household = &households[index % households.len()];
        tuple(
            "edge-a",
            household,
            index as i64 * 5_000,
            index as f64 + 0.25,
        )
    }));
    let written = fixture.cache().store(&mixed, 3).await.expect("stored");
    assert_eq!((written.inserted, written.existing), (3, 6));
    let totals = fixture.cache().state_totals().await.expect("read");
    let (tuples, household_count, sum) = sum_of(&totals);
    assert_eq!(tuples, 15);
    assert_eq!(household_count, 3);
    let expected: f64 = (0..15).map(|index| index as f64 + 0.25).sum();
    assert!((sum - expected).abs() < 1e-9, "{sum} W, not {expected} W");
    let edges = fixture.cache().edges().await.expect("read");
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].tuples, 15);
    assert_eq!(
        fixture
            .cache()
            .recent_tuples(100)
            .await
            .expect("read")
            .len(),
        15
    );
}

/// The sum kept for a state is HINCRBYFLOAT's text: a store of 0.1, then
/// one of 0.2, leave "0.10000000000000001", then "0.30000000000000002"
/// (the script sends each sum as "%.17g", Redis adds the long doubles and
/// writes 17 decimals), where the f64 sum would print 0.30000000000000004.
/// The reader parses the text back to the nearest f64.
pub async fn float_totals_are_kept_as_redis_keeps_them<F: CacheFixture>(fixture: &mut F) {
    let first = tuple("edge-a", "house-1", 0, 0.1);
    fixture
        .cache()
        .store(std::slice::from_ref(&first), 3)
        .await
        .expect("stored");
    let state_key = BucketKeys::new(store_bucket("house-1")).state(first.state);
    let held = fixture
        .command(&["HGET", &state_key, "average_sum_w"])
        .await;
    assert_eq!(held.text().as_deref(), Some("0.10000000000000001"));
    fixture
        .cache()
        .store(&[tuple("edge-a", "house-1", 5_000, 0.2)], 3)
        .await
        .expect("stored");
    let held = fixture
        .command(&["HGET", &state_key, "average_sum_w"])
        .await;
    assert_eq!(held.text().as_deref(), Some("0.30000000000000002"));
    let (_, _, sum) = sum_of(&fixture.cache().state_totals().await.expect("read"));
    assert_eq!(sum, "0.30000000000000002".parse::<f64>().expect("a number"));
}

/// A command that fails inside the store script (a key of the wrong type)
/// fails the call, and what the script wrote before it stays: the bucket's
/// epoch and the tuples set before the failing command are held, the
/// totals, edge records and recent entries after it are not. The resend,
/// once the key is fixed, finds the tuples stored and so never counts
/// them: the totals stay short, exactly as on a real Redis.
pub async fn a_script_that_fails_midway_keeps_its_earlier_writes<F: CacheFixture>(fixture: &mut F) {
    let held = tuple("edge-a", "house-1", 0, 4.0);
    let keys = BucketKeys::new(store_bucket("house-1"));
    let state_key = keys.state(held.state);
    assert_eq!(
        fixture.command(&["SET", &state_key, "planted"]).await,
        Raw::Status("OK".into())
    );
    let failed = fixture.cache().store(std::slice::from_ref(&held), 3).await;
    assert!(
        failed.is_err(),
        "a failed script fails the call: {failed:?}"
    );
    let stored = fixture.command(&["GET", &redis_key(&held)]).await;
    assert_eq!(
        stored,
        Raw::Bulk(held.stored_value().into_bytes()),
        "written before the failure"
    );
    let epoch = fixture.command(&["GET", &keys.epoch()]).await.text();
    assert!(epoch.is_some(), "the epoch was set first");
    assert_eq!(
        fixture.command(&["LLEN", &keys.recent()]).await,
        Raw::Integer(0)
    );
    assert_eq!(
        fixture.command(&["TYPE", &keys.edge("edge-a")]).await,
        Raw::Status("none".into())
    );
    assert_eq!(
        fixture
            .command(&["TYPE", &keys.state_households(held.state)])
            .await,
        Raw::Status("none".into())
    );
    // Its second tuple at a key planted as a hash: the first tuple of the
    // call is written, then GET on the hash fails the script.
    let second = [
        tuple("edge-a", "house-1", 5_000, 5.0),
        tuple("edge-a", "house-1", 10_000, 6.0),
    ];
    fixture.command(&["DEL", &state_key]).await;
    fixture
        .command(&["HSET", &redis_key(&second[1]), "field", "planted"])
        .await;
    assert!(fixture.cache().store(&second, 3).await.is_err());
    assert_eq!(
        fixture.command(&["GET", &redis_key(&second[0])]).await,
        Raw::Bulk(second[0].stored_value().into_bytes())
    );
    assert_eq!(
        fixture.command(&["TYPE", &state_key]).await,
        Raw::Status("none".into()),
        "no totals moved"
    );
    fixture.command(&["DEL", &redis_key(&second[1])]).await;
    let mut all = vec![held];
    all.extend(second);
    let resent = fixture.cache().store(&all, 3).await.expect("stored");
    assert_eq!((resent.inserted, resent.existing), (1, 2));
    let (tuples, households, sum) = sum_of(&fixture.cache().state_totals().await.expect("read"));
    assert_eq!(
        (tuples, households, sum),
        (1, 1, 6.0),
        "only the last is counted"
    );
}

/// Each bucket's epoch is set once, from the bucket's own candidate, by the
/// first heartbeat or write; later candidates change nothing; the epoch key
/// holds `<epoch>:<run id>` (40 hex digits). After the server lost its
/// data every bucket's epoch is set anew from the next candidate.
pub async fn epochs_are_set_once_and_renewed_after_a_loss<F: CacheFixture>(fixture: &mut F) {
    let first = fixture
        .cache()
        .record_heartbeat("edge-a", 1, 1_000, 5)
        .await
        .expect("recorded");
    assert!(!first.refused);
    for bucket in 0..STORE_BUCKETS as u16 {
        assert_eq!(
            first.epochs[usize::from(bucket)],
            bucket_epoch_candidate(5, bucket),
            "bucket {bucket}"
        );
    }
    let later = fixture
        .cache()
        .record_heartbeat("edge-a", 1, 2_000, 9)
        .await
        .expect("recorded");
    assert_eq!(later.epochs, first.epochs, "set once");
    let held = tuple("edge-a", "house-1", 0, 1.0);
    let bucket = store_bucket("house-1");
    let written = fixture
        .cache()
        .store(std::slice::from_ref(&held), 11)
        .await
        .expect("stored");
    assert_eq!(
        written.epochs.get(&bucket),
        Some(&first.epochs[usize::from(bucket)])
    );
    let text = fixture
        .command(&["GET", &BucketKeys::new(bucket).epoch()])
        .await
        .text()
        .expect("an epoch key");
    let (epoch, run_id) = text.split_once(':').expect("<epoch>:<run id>");
    assert_eq!(epoch, first.epochs[usize::from(bucket)].to_string());
    assert_eq!(run_id.len(), 40);
    assert!(run_id.bytes().all(|byte| byte.is_ascii_hexdigit()));

    fixture.lose_data().await;
    let renewed = retrying(
        || fixture.cache().record_heartbeat("edge-a", 1, 3_000, 9),
        "a heartbeat after the loss",
    )
    .await;
    for bucket in 0..STORE_BUCKETS as u16 {
        assert_eq!(
            renewed.epochs[usize::from(bucket)],
            bucket_epoch_candidate(9, bucket),
            "bucket {bucket} renewed"
        );
    }
    let totals = fixture.cache().state_totals().await.expect("read");
    assert_eq!(sum_of(&totals).0, 0, "the data went with the server");
    let written = fixture.cache().store(&[held], 13).await.expect("stored");
    assert_eq!(written.inserted, 1, "stored again after the loss");
    assert_eq!(
        written.epochs.get(&bucket),
        Some(&renewed.epochs[usize::from(bucket)])
    );
}
