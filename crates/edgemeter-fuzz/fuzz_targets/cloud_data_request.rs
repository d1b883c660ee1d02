//! The cloud's data socket: arbitrary bytes through the whole request path
//! (sealed envelope, our batch, the original's JSON) into an in-memory cache.
//! Whatever arrives, the cloud must answer without panicking, and a reply
//! must never be empty.
#![no_main]

use edgemeter_cloud::{Cloud, CloudAuth, CloudConfig, MemoryCache};
use edgemeter_env::SystemClock;
use edgemeter_wire::EdgeKey;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn world() -> &'static (tokio::runtime::Runtime, Cloud<MemoryCache, SystemClock>) {
    static WORLD: OnceLock<(tokio::runtime::Runtime, Cloud<MemoryCache, SystemClock>)> =
        OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let auth = CloudAuth::open().with_key("edge-1", EdgeKey::from_bytes([7; 32]));
        let config = CloudConfig { auth, ..CloudConfig::default() };
        (runtime, Cloud::new(config, MemoryCache::new(), SystemClock))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, cloud) = world();
    let reply = runtime.block_on(cloud.handle_data(data));
    assert!(!reply.is_empty());
});
