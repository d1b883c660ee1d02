//! The edge's reply decoders: a batch reply (versions 1 and 2) and a
//! version-2 heartbeat reply, sealed or not. A reply that decodes must
//! encode back to the same bytes (no two readings of one reply).
#![no_main]

use edgemeter_wire::sealed::open_reply;
use edgemeter_wire::{BatchReply, EdgeKey, HeartbeatReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = BatchReply::decode(data) {
        assert_eq!(reply.encode(), data);
    }
    if let Ok(reply) = HeartbeatReply::decode(data) {
        assert_eq!(reply.encode(), data);
    }
    let key = EdgeKey::from_bytes([7; 32]);
    if let Ok(body) = open_reply(data, &key, &[0; 32]) {
        let _ = BatchReply::decode(&body);
        let _ = HeartbeatReply::decode(&body);
    }
});
