//! The `Cache` contract (`edgemeter-contract`'s `cache` suite) against the
//! model: `SimCache` over the simulated network to the `redis` host, which
//! runs the production Lua scripts in embedded Lua over its simulated
//! keyspace. The same suite runs against `RedisCache` and a real
//! `redis-server` in `crates/edgemeter/tests/contract_cache.rs`; a
//! behaviour that passes there and fails here is a model that drifted
//! from what deploys.
//!
//! The behaviour runs on a client host named as a cloud node. Its raw
//! commands go straight to the host's keyspace (as `redis-cli` on the
//! Redis machine would), and a loss is the world's cache loss: the
//! keyspace emptied and a new run id.

use edgemeter_contract::cache::{self, CacheFixture, Raw};
use sim_tests::cache::SimCache;
use sim_tests::keyspace::Reply;
use sim_tests::redis::{run_redis, CacheWorld, SharedCache, REDIS_HOST};
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

/// The client host: a cloud node's name.
const CLOUD_HOST: &str = "cloud-0";

/// Simulated time a behaviour may take before the run fails.
const SIM_DURATION: Duration = Duration::from_secs(600);

struct SimFixture {
    cache: SimCache,
    world: SharedCache,
}

fn raw(reply: Reply) -> Raw {
    match reply {
        Reply::Nil => Raw::Nil,
        Reply::Integer(value) => Raw::Integer(value),
        Reply::Bulk(bytes) => Raw::Bulk(bytes),
        Reply::Status(text) => Raw::Status(text),
        Reply::Error(text) => Raw::Error(text),
        Reply::Array(items) => Raw::Array(items.into_iter().map(raw).collect()),
    }
}

impl CacheFixture for SimFixture {
    type Cache = SimCache;

    fn cache(&self) -> &SimCache {
        &self.cache
    }

    async fn command(&mut self, args: &[&str]) -> Raw {
        raw(self.world.borrow_mut().command(args))
    }

    async fn lose_data(&mut self) {
        self.world.borrow_mut().lose();
    }
}

/// Runs one behaviour of the suite against a fresh simulated Redis.
fn run<B, Fut>(behaviour: B)
where
    B: FnOnce(SimFixture) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let world: SharedCache = Rc::new(RefCell::new(CacheWorld::default()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .tick_duration(Duration::from_millis(10))
        .simulation_duration(SIM_DURATION)
        .build();
    let host_world = world.clone();
    sim.host(REDIS_HOST, move || run_redis(host_world.clone()));
    let fixture = SimFixture {
        cache: SimCache::new(),
        world,
    };
    // SimCache does no IO until called, so the behaviour's future may be
    // made here and run on the client host.
    let running = behaviour(fixture);
    sim.client(CLOUD_HOST, async move {
        running.await;
        Ok(())
    });
    sim.run().expect("the behaviour passes");
}

#[test]
fn first_write_wins() {
    run(|mut fixture| async move { cache::first_write_wins(&mut fixture).await });
}

#[test]
fn totals_count_each_tuple_once() {
    run(|mut fixture| async move { cache::totals_count_each_tuple_once(&mut fixture).await });
}

#[test]
fn float_totals_are_kept_as_redis_keeps_them() {
    run(|mut fixture| async move {
        cache::float_totals_are_kept_as_redis_keeps_them(&mut fixture).await
    });
}

#[test]
fn a_script_that_fails_midway_keeps_its_earlier_writes() {
    run(|mut fixture| async move {
        cache::a_script_that_fails_midway_keeps_its_earlier_writes(&mut fixture).await
    });
}

#[test]
fn epochs_are_set_once_and_renewed_after_a_loss() {
    run(|mut fixture| async move {
        cache::epochs_are_set_once_and_renewed_after_a_loss(&mut fixture).await
    });
}
