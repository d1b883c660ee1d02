//! The `Cache` contract (`edgemeter-contract`'s `cache` suite) against what
//! deploys: `RedisCache` on a real `redis-server` (the testkit's, on a free
//! port, persistence off). The same suite runs against the model, the
//! simulated Redis running the same Lua scripts, in `sim-tests/tests/
//! contract_cache.rs`; a behaviour that passes here and fails there is a
//! model that drifted from what deploys.
//!
//! Raw commands go over a synchronous connection of their own; a loss is
//! a restart of the server on the same port, empty, with a new run id.

use edgemeter_contract::cache::{self, CacheFixture, Raw};
use edgemeter_redis::cache::RedisCache;
use edgemeter_testkit::RedisServer;

struct RedisFixture {
    server: RedisServer,
    cache: RedisCache,
}

impl RedisFixture {
    async fn start() -> RedisFixture {
        let server = RedisServer::start();
        let cache = RedisCache::connect(&server.url()).await.expect("connects");
        RedisFixture { server, cache }
    }
}

fn raw(value: redis::Value) -> Raw {
    match value {
        redis::Value::Nil => Raw::Nil,
        redis::Value::Int(value) => Raw::Integer(value),
        redis::Value::BulkString(bytes) => Raw::Bulk(bytes),
        redis::Value::SimpleString(text) => Raw::Status(text),
        redis::Value::Okay => Raw::Status("OK".to_owned()),
        redis::Value::Array(items) => Raw::Array(items.into_iter().map(raw).collect()),
        other => Raw::Error(format!("{other:?}")),
    }
}

impl CacheFixture for RedisFixture {
    type Cache = RedisCache;

    fn cache(&self) -> &RedisCache {
        &self.cache
    }

    async fn command(&mut self, args: &[&str]) -> Raw {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        let mut connection = self.server.connection();
        match command.query::<redis::Value>(&mut connection) {
            Ok(value) => raw(value),
            Err(error) => Raw::Error(error.to_string()),
        }
    }

    async fn lose_data(&mut self) {
        self.server.restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_write_wins() {
    cache::first_write_wins(&mut RedisFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_count_each_tuple_once() {
    cache::totals_count_each_tuple_once(&mut RedisFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_totals_are_kept_as_redis_keeps_them() {
    cache::float_totals_are_kept_as_redis_keeps_them(&mut RedisFixture::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_fails_midway_keeps_its_earlier_writes() {
    cache::a_script_that_fails_midway_keeps_its_earlier_writes(&mut RedisFixture::start().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_are_set_once_and_renewed_after_a_loss() {
    cache::epochs_are_set_once_and_renewed_after_a_loss(&mut RedisFixture::start().await).await;
}
