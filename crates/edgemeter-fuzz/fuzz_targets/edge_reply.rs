//! The edge's reply decoders: a batch reply, sealed or not. A reply that
//! decodes must encode back to the same bytes (no two readings of one reply).
#![no_main]

use edgemeter_wire::sealed::open_reply;
use edgemeter_wire::{BatchReply, EdgeKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = BatchReply::decode(data) {
        assert_eq!(reply.encode(), data);
    }
    let key = EdgeKey::from_bytes([7; 32]);
    if let Ok(body) = open_reply(data, &key, &[0; 32]) {
        let _ = BatchReply::decode(&body);
    }
});
