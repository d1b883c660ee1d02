//! What every `Cache` must give through the dashboard, written once and run
//! against each cache: the numbers equal a direct computation over the
//! stored tuples, resends are not counted twice, all 16 states are always
//! there, and a cache that is down gives a quick 503 with a reason.

use super::fixture::{expected_states, fixture_tuples, FIXTURE_EDGES};
use super::http::{get, get_ok};
use axum::http::StatusCode;
use axum::Router;
use edgemeter_cloud::{Cache, CacheWrite, CloudTuple, GermanState};
use edgemeter_dashboard::cache_call::CACHE_CALL_MS_MAX;
use edgemeter_dashboard::{router, DashboardState, EdgeLinks};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn dashboard<C: Cache>(cache: Arc<C>) -> Router {
    let links: EdgeLinks = Arc::new(Vec::new);
    router(DashboardState::new(cache, links))
}

/// Relative closeness; exact for the fixture, but a cache that stores sums
/// as decimal text (Redis) may round the last bit.
pub fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

/// `/api/states` must equal [`expected_states`] over `stored`, row by row.
pub async fn assert_states_match(app: &Router, stored: &[edgemeter_cloud::CloudTuple], price: f64) {
    let rows = get_ok(app, "/api/states").await;
    let rows = rows.as_array().expect("a list");
    let expected = expected_states(stored, price);
    assert_eq!(rows.len(), 16, "all 16 states, always");
    for (row, (state, households, tuples, average, kwh, cost)) in rows.iter().zip(expected) {
        assert_eq!(row["state"], state.name());
        assert_eq!(row["households"], households, "{state} households");
        assert_eq!(row["tuples"], tuples, "{state} tuples");
        for (field, want) in [
            ("avg_power_w", average),
            ("annual_kwh", kwh),
            ("annual_cost_eur", cost),
        ] {
            let got = row[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{state} {field} is a number"));
            assert!(close(got, want), "{state} {field}: got {got}, want {want}");
        }
    }
}

/// A fresh cache: 16 rows of zeros, empty lists, never an error.
pub async fn check_empty<C: Cache>(cache: Arc<C>) {
    let app = dashboard(cache);
    let rows = get_ok(&app, "/api/states").await;
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["state"].as_str().unwrap())
        .collect();
    let all: Vec<&str> = GermanState::ALL.iter().map(|state| state.name()).collect();
    assert_eq!(names, all);
    for row in rows.as_array().unwrap() {
        assert_eq!(
            (row["households"].as_u64(), row["tuples"].as_u64()),
            (Some(0), Some(0)),
            "{row}"
        );
        assert_eq!(row["annual_kwh"].as_f64(), Some(0.0), "{row}");
    }
    assert_eq!(get_ok(&app, "/api/tuples").await, Value::Array(vec![]));
    assert_eq!(get_ok(&app, "/api/data").await, Value::Array(vec![]));
    assert_eq!(get_ok(&app, "/api/edges").await, Value::Array(vec![]));
}

/// Checks that a write names an epoch (never 0) for exactly the buckets of
/// its batch, then drops them, so a write compares equal whatever epochs
/// the cache under test draws (one per bucket, or one per Redis).
fn without_epochs(mut write: CacheWrite, batch: &[CloudTuple]) -> CacheWrite {
    let buckets: std::collections::BTreeSet<u16> = batch
        .iter()
        .map(|tuple| edgemeter_wire::store_bucket(&tuple.node_id))
        .collect();
    assert!(write.epochs.keys().copied().eq(buckets), "{write:?}");
    assert!(write.epochs.values().all(|&epoch| epoch != 0));
    write.epochs.clear();
    write
}

/// Stores the fixture in batches and compares every number with the direct
/// computation, then the per-edge counts and the latest tuples.
pub async fn check_numbers<C: Cache>(cache: Arc<C>) {
    let tuples = fixture_tuples();
    for batch in tuples.chunks(32) {
        let write = cache.store(batch, 1).await.expect("store");
        assert_eq!(
            without_epochs(write, batch),
            CacheWrite {
                inserted: batch.len(),
                existing: 0,
                epochs: Default::default(),
                conflicts: Vec::new(),
            }
        );
    }
    let app = dashboard(Arc::clone(&cache));
    assert_states_match(&app, &tuples, 0.30).await;
    let edges = get_ok(&app, "/api/edges").await;
    for edge in FIXTURE_EDGES {
        let want = tuples.iter().filter(|tuple| tuple.edge_id == edge).count() as u64;
        let row = edges
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["edge_id"] == edge)
            .expect(edge);
        assert_eq!(row["tuples"].as_u64(), Some(want), "{edge}");
        let last = tuples
            .iter()
            .filter(|tuple| tuple.edge_id == edge)
            .map(|tuple| tuple.received_ms)
            .max();
        assert_eq!(row["last_tuple_ms"].as_i64(), last, "{edge}");
    }
    let latest = get_ok(&app, "/api/tuples?limit=7").await;
    let keys: Vec<&str> = latest
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = tuples
        .iter()
        .rev()
        .take(7)
        .map(|tuple| tuple.key.as_str())
        .collect();
    assert_eq!(keys, want, "the latest tuples, newest first");
}

/// Stores the fixture, then resends all of it in other batch shapes (and a
/// batch holding one tuple twice): nothing may be counted again.
pub async fn check_resends<C: Cache>(cache: Arc<C>) {
    let tuples = fixture_tuples();
    cache.store(&tuples[..60], 1).await.expect("first half");
    let overlap = cache
        .store(&tuples[40..], 1)
        .await
        .expect("overlapping resend");
    assert_eq!(
        without_epochs(overlap, &tuples[40..]),
        CacheWrite {
            inserted: 60,
            existing: 20,
            epochs: Default::default(),
            conflicts: Vec::new(),
        }
    );
    for batch in tuples.rchunks(17) {
        let write = cache.store(batch, 1).await.expect("resend");
        assert_eq!(
            without_epochs(write, batch),
            CacheWrite {
                inserted: 0,
                existing: batch.len(),
                epochs: Default::default(),
                conflicts: Vec::new(),
            }
        );
    }
    let twice = [tuples[3].clone(), tuples[3].clone()];
    assert_eq!(
        without_epochs(cache.store(&twice, 1).await.expect("twice"), &twice),
        CacheWrite {
            inserted: 0,
            existing: 2,
            epochs: Default::default(),
            conflicts: Vec::new(),
        }
    );
    let app = dashboard(Arc::clone(&cache));
    assert_states_match(&app, &tuples, 0.30).await;
    let edges = get_ok(&app, "/api/edges").await;
    let total: u64 = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["tuples"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        tuples.len() as u64,
        "per-edge counts are not inflated"
    );
    let latest = get_ok(&app, "/api/tuples?limit=1000").await;
    let mut keys = HashSet::new();
    for row in latest.as_array().unwrap() {
        assert!(
            keys.insert(row["key"].as_str().unwrap().to_owned()),
            "{} listed twice",
            row["key"]
        );
    }
    assert_eq!(keys.len(), tuples.len());
}

/// With the cache down (`app` built over it), every API call answers 503
/// with a reason well within the call deadline plus a margin: no hang.
pub async fn check_down(app: &Router) {
    for uri in ["/api/states", "/api/tuples", "/api/edges", "/api/data"] {
        let started = Instant::now();
        let answer = get(app, uri).await;
        let waited = started.elapsed();
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            answer.text()
        );
        let body = answer.json();
        let kind = body["error"].as_str().unwrap_or_default();
        assert!(
            kind == "cache_unavailable" || kind == "cache_timeout",
            "{uri}: {body}"
        );
        assert!(
            !body["reason"].as_str().unwrap_or_default().is_empty(),
            "{uri}: {body}"
        );
        assert_eq!(body["status"], 503);
        assert!(
            waited < Duration::from_millis(CACHE_CALL_MS_MAX) + Duration::from_secs(1),
            "{uri} took {waited:?}"
        );
    }
}
