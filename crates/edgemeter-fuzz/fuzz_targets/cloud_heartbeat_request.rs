//! The cloud's heartbeat socket: arbitrary bytes must get `ack`, a
//! version-2 reply or an error reply, never a panic.
#![no_main]

use edgemeter_cloud::{Cloud, CloudConfig, MemoryCache};
use edgemeter_env::SystemClock;
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
        (runtime, Cloud::new(CloudConfig::default(), MemoryCache::new(), SystemClock))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, cloud) = world();
    let reply = runtime.block_on(cloud.handle_heartbeat(data));
    let version_two = edgemeter_wire::HeartbeatReply::decode(&reply).is_ok();
    assert!(reply == b"ack" || version_two || reply.starts_with(b"ERROR: "));
});
