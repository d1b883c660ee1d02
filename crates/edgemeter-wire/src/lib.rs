//! `edgemeter-wire` is the only place where EdgeMeter's message layouts are
//! defined. Both ends of every link encode and decode with these types, so a
//! layout cannot drift between sender and receiver.
//!
//! # Layout
//! - [`reading`]: the Kafka record on `power_topic` (JSON), in EdgeMeter's
//!   form or the original's ([`ReadingForm`]).
//! - [`frame`]: the byte cursor and limits shared by the binary messages.
//! - [`postal`]: a validated five-digit German postal code.
//! - [`bucket`]: the store's buckets: which bucket a household's tuples
//!   live in, each bucket's Redis hash tag, and the digest of the buckets'
//!   epochs that older edges see as one store epoch.
//! - [`batch`]: the Rust edge's versioned, batched data request and its reply.
//! - [`heartbeat`]: heartbeat requests (ours in four versions and the
//!   original's) and their replies: the version-2 one with the store
//!   epoch, the version-3 one with every bucket's epoch or a refusal.
//! - [`legacy`]: the original's JSON data request and its text reply.
//! - [`request`]: tells the two data-request forms apart on one socket.
//! - [`sealed`]: the authenticated envelope around any request and its reply.
//!
//! This crate never performs IO, reads a clock or spawns. Every decoder
//! checks sizes before it allocates, so a peer cannot choose our memory use.

pub mod batch;
pub mod bucket;
pub mod frame;
pub mod heartbeat;
pub mod legacy;
pub mod postal;
pub mod reading;
pub mod request;
pub mod sealed;

pub use batch::{
    Ack, BatchReply, BatchRequest, ReplyOutcome, TupleAck, TupleOut, TupleOutcome, WireVersion,
};
pub use bucket::{store_bucket, STORE_BUCKETS};
pub use frame::{DecodeError, FRAME_BYTES_MAX};
pub use heartbeat::{Backlog, BucketHeartbeatReply, HeartbeatReply, HeartbeatRequest};
pub use legacy::LegacyDataRequest;
pub use postal::PostalCode;
pub use reading::{Reading, ReadingForm, RecordError, POWER_W_MAX};
pub use request::DataRequest;
pub use sealed::{AuthError, EdgeKey};

/// The most bytes an edge or household id may have. Ids are keys in SQLite
/// and Redis; the data set's ids are 64 hex digits.
pub const ID_BYTES_MAX: usize = 128;

/// Checks an edge or household id: 1 to [`ID_BYTES_MAX`] bytes of ASCII
/// letters, digits, `-`, `_` or `.`, so that it is safe inside a Redis key
/// separated by `:` and inside a log line.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("id is empty");
    }
    if id.len() > ID_BYTES_MAX {
        return Err("id is longer than 128 bytes");
    }
    // Byte by byte through a table: every allowed character is one ASCII
    // byte, and every byte of a multi-byte character is outside ASCII, so
    // this is the character check without decoding UTF-8. Each reading's
    // id passes here; the table is a third of the work of `chars()`.
    if !id.bytes().all(|byte| ID_BYTE_ALLOWED[usize::from(byte)]) {
        return Err("id has a character outside [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Which bytes an id may contain.
const ID_BYTE_ALLOWED: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let c = byte as u8;
        allowed[byte] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        byte += 1;
    }
    allowed
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("8c345400feac9da8").is_ok());
        assert!(check_id("edge-1.a_b").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a:b").is_err());
        assert!(check_id(&"a".repeat(129)).is_err());
        assert!(check_id(&"a".repeat(128)).is_ok());
        assert!(check_id("hä").is_err(), "non-ASCII letters are refused");
    }

    /// Goal: the byte table allows exactly the characters the rule names.
    /// Method: every character of the first 1,024 code points, alone.
    #[test]
    fn the_byte_table_is_the_character_rule() {
        for c in (0..1024u32).filter_map(char::from_u32) {
            let rule = c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
            assert_eq!(check_id(c.encode_utf8(&mut [0; 4])).is_ok(), rule, "{c:?}");
        }
    }
}
