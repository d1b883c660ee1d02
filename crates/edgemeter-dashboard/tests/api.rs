//! The dashboard's API over the cloud's in-memory cache: the shared checks
//! (numbers, resends, all 16 states, 503 when down), plus what does not
//! depend on the cache: the limits, the original's `/api/data` shape, the
//! edge panel's join, errors as JSON, the page's files, and a snapshot of
//! `/api/states` for the fixed slice.

mod support;

use axum::http::{Method, StatusCode};
use edgemeter_cloud::{postal_code_for, state_of, Cache, MemoryCache};
use edgemeter_dashboard::{router, DashboardState, EdgeLink, EdgeLinks};
use std::sync::Arc;
use support::checks::{self, dashboard};
use support::fixture::{fixture_states, fixture_tuples, FIXTURE_EDGES};
use support::http::{call, get, get_ok};
use support::outage_cache::{Outage, OutageCache};

fn memory() -> Arc<OutageCache<MemoryCache>> {
    Arc::new(OutageCache::new(MemoryCache::new()))
}

async fn filled() -> Arc<OutageCache<MemoryCache>> {
    let cache = memory();
    cache.store(&fixture_tuples(), 1).await.expect("store");
    cache
}

#[tokio::test]
async fn a_fresh_cache_gives_sixteen_zero_states() {
    checks::check_empty(memory()).await;
}

#[tokio::test]
async fn numbers_equal_a_direct_computation() {
    checks::check_numbers(memory()).await;
}

#[tokio::test]
async fn resent_tuples_are_counted_once() {
    checks::check_resends(memory()).await;
}

#[tokio::test]
async fn an_unavailable_cache_gives_503_with_its_reason() {
    let cache = filled().await;
    let app = dashboard(Arc::clone(&cache));
    cache.set_outage(Some(Outage::Unavailable("connection refused".into())));
    checks::check_down(&app).await;
    let body = get(&app, "/api/states").await.json();
    assert_eq!(body["error"], "cache_unavailable");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
    // The page comes back as soon as the cache does.
    cache.set_outage(None);
    checks::assert_states_match(&app, &fixture_tuples(), 0.30).await;
}

/// A cache that never answers must not hold the page: the deadline turns it
/// into a 503. Tokio's paused clock jumps to the deadline at once.
#[tokio::test(start_paused = true)]
async fn a_stalled_cache_gives_503_at_the_deadline() {
    let cache = filled().await;
    let app = dashboard(Arc::clone(&cache));
    cache.set_outage(Some(Outage::Stalled));
    checks::check_down(&app).await;
    let body = get(&app, "/api/tuples").await.json();
    assert_eq!(body["error"], "cache_timeout", "{body}");
}

#[tokio::test]
async fn states_snapshot_for_the_fixed_slice() {
    let app = dashboard(filled().await);
    insta::assert_json_snapshot!("states", get_ok(&app, "/api/states").await);
}

#[tokio::test]
async fn the_price_is_configurable() {
    let cache = filled().await;
    let links: EdgeLinks = Arc::new(Vec::new);
    let state = DashboardState::new(cache, links)
        .with_price_eur_per_kwh(0.42)
        .expect("a price");
    let app = router(state);
    checks::assert_states_match(&app, &fixture_tuples(), 0.42).await;
    let entry = &get_ok(&app, "/api/data?limit=1").await[0];
    let want = entry["powerAverage"].as_f64().unwrap() * 8.76 * 0.42;
    assert!(
        checks::close(entry["cost"].as_f64().unwrap(), want),
        "{entry}"
    );
}

#[tokio::test]
async fn tuples_are_bounded_and_bad_limits_are_refused() {
    let app = dashboard(filled().await);
    let default = get_ok(&app, "/api/tuples").await;
    assert_eq!(
        default.as_array().unwrap().len(),
        edgemeter_dashboard::tuples::TUPLES_LIMIT_DEFAULT
    );
    let all = get_ok(&app, "/api/tuples?limit=1000").await;
    assert_eq!(all.as_array().unwrap().len(), fixture_tuples().len());
    let newest = &get_ok(&app, "/api/tuples?limit=1").await[0];
    let last = fixture_tuples().pop().unwrap();
    assert_eq!(newest["key"], last.key);
    assert_eq!(newest["edge_id"], last.edge_id);
    assert_eq!(newest["household_id"], last.node_id);
    assert_eq!(newest["window_start_ms"], last.window_start_ms.unwrap());
    assert_eq!(newest["average_power_w"], last.average_w);
    assert_eq!(newest["postal_code"], last.postal_code.as_str());
    assert_eq!(newest["state"], last.state.name());
    for uri in [
        "/api/tuples?limit=0",
        "/api/tuples?limit=1001",
        "/api/tuples?limit=-3",
        "/api/tuples?limit=ten",
        "/api/data?limit=1001",
    ] {
        let answer = get(&app, uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        let body = answer.json();
        assert_eq!(body["error"], "bad_request", "{uri}");
        assert!(
            body["reason"].as_str().unwrap().contains("1000"),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn data_keeps_the_original_shape_with_stable_states() {
    let app = dashboard(filled().await);
    let first = get_ok(&app, "/api/data").await;
    let entries = first.as_array().unwrap();
    assert_eq!(entries.len(), fixture_tuples().len());
    for entry in entries {
        let fields: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["cityName", "cost", "key", "powerAverage"],
            "{entry}"
        );
        let household = entry["key"].as_str().unwrap().split(':').nth(2).unwrap();
        let state = state_of(postal_code_for(household)).unwrap();
        assert_eq!(entry["cityName"], state.name(), "{entry}");
        let want = entry["powerAverage"].as_f64().unwrap() * 8_760.0 / 1_000.0 * 0.30;
        assert!(
            checks::close(entry["cost"].as_f64().unwrap(), want),
            "{entry}"
        );
    }
    // The original drew a random state per key per call: ours never moves.
    assert_eq!(get_ok(&app, "/api/data").await, first);
}

#[tokio::test]
async fn edges_join_the_cache_with_the_live_links() {
    let cache = filled().await;
    cache
        .record_heartbeat("edge-alpha", 0, 1_700_000_200_000, 1)
        .await
        .unwrap();
    cache
        .record_heartbeat("edge-quiet", 0, 1_700_000_000_000, 1)
        .await
        .unwrap();
    let links: EdgeLinks = Arc::new(|| {
        vec![
            EdgeLink {
                edge_id: "edge-alpha".into(),
                connected: true,
                backlog: Some(edgemeter_wire::Backlog {
                    queued: 10,
                    sent: 2,
                    oldest_unacked_age_ms: 3_000,
                }),
            },
            EdgeLink {
                edge_id: "edge-new".into(),
                connected: true,
                backlog: None,
            },
        ]
    });
    let app = router(DashboardState::new(cache, links));
    let edges = get_ok(&app, "/api/edges").await;
    let ids: Vec<&str> = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["edge_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "edge-alpha",
            "edge-beta",
            "edge-gamma",
            "edge-new",
            "edge-quiet"
        ]
    );
    let alpha = &edges[0];
    assert_eq!(alpha["connected"], true);
    assert_eq!(alpha["backlog_tuples"], 12);
    assert_eq!(alpha["queued_tuples"], 10);
    assert_eq!(alpha["sent_tuples"], 2);
    assert_eq!(alpha["oldest_unacked_age_ms"], 3_000);
    assert_eq!(alpha["last_heartbeat_ms"], 1_700_000_200_000_i64);
    assert_eq!(alpha["tuples"], 40);
    assert_eq!(edges[1]["connected"], false, "no link, not connected");
    assert_eq!(edges[1]["backlog_tuples"], serde_json::Value::Null);
    assert_eq!(edges[3]["tuples"], 0);
    assert_eq!(edges[4]["last_tuple_ms"], serde_json::Value::Null);
    assert_eq!(FIXTURE_EDGES.len(), 3);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = dashboard(memory());
    let missing = get(&app, "/api/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "not_found");
    let post = call(&app, Method::POST, "/api/states").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.json()["error"], "method_not_allowed");
    let traversal = get(&app, "/assets/../Cargo.toml").await;
    assert_ne!(traversal.status, StatusCode::OK);
}

#[tokio::test]
async fn the_page_and_chart_js_are_served_from_this_host() {
    let app = dashboard(memory());
    let page = get(&app, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let policy = page.content_security_policy.clone().expect("a CSP");
    assert!(policy.contains("default-src 'self'") && policy.contains("connect-src 'self'"));
    for asset in [
        "/assets/app.js",
        "/assets/style.css",
        "/assets/chart.umd.js",
    ] {
        assert!(page.text().contains(asset), "index.html loads {asset}");
        let answer = get(&app, asset).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{asset}: {} (run `npm ci` in web/)",
            answer.text()
        );
        assert!(answer.content_type.starts_with("text/"), "{asset}");
    }
    let chart = get(&app, "/assets/chart.umd.js").await.text();
    assert!(
        chart.contains("window.Chart"),
        "the UMD build defines window.Chart"
    );
}

#[tokio::test]
async fn a_missing_web_directory_says_what_is_missing() {
    let links: EdgeLinks = Arc::new(Vec::new);
    let state = DashboardState::new(memory(), links).with_web_dir("/nonexistent/web");
    let app = router(state);
    let answer = get(&app, "/assets/chart.umd.js").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let body = answer.json();
    assert_eq!(body["error"], "asset_missing");
    assert!(
        body["reason"].as_str().unwrap().contains("npm ci"),
        "{body}"
    );
}

/// The page must work without internet: no file it is made of may name
/// another host.
#[test]
fn the_page_names_no_other_host() {
    let web = edgemeter_dashboard::default_web_dir();
    for file in ["index.html", "app.js", "style.css"] {
        let text = std::fs::read_to_string(web.join(file))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        for needle in [
            "http:",
            "https:",
            "src=\"//",
            "href=\"//",
            "url(//",
            "@import",
        ] {
            assert!(!text.contains(needle), "{file} contains {needle}");
        }
    }
}

#[test]
fn the_fixture_leaves_some_states_empty() {
    let states = fixture_states();
    assert!(
        states.len() >= 8,
        "the slice spreads over many states: {states:?}"
    );
    assert!(
        states.len() < 16,
        "and leaves some empty, to show zero rows: {states:?}"
    );
}
