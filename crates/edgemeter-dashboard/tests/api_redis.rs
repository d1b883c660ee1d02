//! The dashboard's API over `RedisCache`, the cloud's real cache, against a
//! real `redis-server` each test starts on a free loopback port and kills at
//! the end: the numbers equal a direct computation, resends are counted
//! once, all 16 states are present, the answer equals the in-memory cache's
//! for the same slice, and stopping Redis gives a quick 503 with a reason,
//! after which the page recovers when Redis is back.

mod support;

use edgemeter_cloud::{Cache, MemoryCache};
use edgemeter_redis::cache::RedisCache;
use edgemeter_testkit::RedisServer;
use std::sync::Arc;
use support::checks::{self, dashboard};
use support::fixture::fixture_tuples;
use support::http::get_ok;

async fn connect(server: &RedisServer) -> Arc<RedisCache> {
    let cache = RedisCache::connect(&server.url())
        .await
        .expect("our redis-server answers");
    Arc::new(cache)
}

#[tokio::test]
async fn a_fresh_redis_gives_sixteen_zero_states() {
    let server = RedisServer::start();
    checks::check_empty(connect(&server).await).await;
}

#[tokio::test]
async fn numbers_equal_a_direct_computation() {
    let server = RedisServer::start();
    checks::check_numbers(connect(&server).await).await;
}

#[tokio::test]
async fn resent_tuples_are_counted_once() {
    let server = RedisServer::start();
    checks::check_resends(connect(&server).await).await;
}

/// The same slice through Redis and through memory gives the same JSON,
/// byte for byte: so the insta snapshot taken over memory holds for Redis.
#[tokio::test]
async fn redis_and_memory_agree_on_every_endpoint() {
    let server = RedisServer::start();
    let redis = connect(&server).await;
    let memory = Arc::new(MemoryCache::new());
    for batch in fixture_tuples().chunks(50) {
        redis.store(batch, 1).await.expect("redis store");
        memory.store(batch, 1).await.expect("memory store");
    }
    let (over_redis, over_memory) = (dashboard(redis), dashboard(memory));
    for uri in [
        "/api/states",
        "/api/tuples?limit=1000",
        "/api/data",
        "/api/edges",
    ] {
        assert_eq!(
            get_ok(&over_redis, uri).await,
            get_ok(&over_memory, uri).await,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_stopped_redis_gives_503_then_recovers() {
    let mut server = RedisServer::start();
    let cache = connect(&server).await;
    cache.store(&fixture_tuples(), 1).await.expect("store");
    let app = dashboard(Arc::clone(&cache));
    checks::assert_states_match(&app, &fixture_tuples(), 0.30).await;
    server.stop();
    checks::check_down(&app).await;
    // A new, empty Redis on the same port: the same router answers again,
    // without a restart, with 16 states of zeros.
    server.restart();
    let mut answered = false;
    for _ in 0..20 {
        let answer = support::http::get(&app, "/api/states").await;
        if answer.status == axum::http::StatusCode::OK {
            assert_eq!(answer.json().as_array().map(Vec::len), Some(16));
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(answered, "the dashboard answers again once Redis is back");
}
