//! The authenticated envelope. An edge proves who it is on every request,
//! and the cloud proves its reply, with HMAC-SHA256 under the edge's own
//! 32-byte secret key:
//!
//! ```text
//! request: "EMS" 0x01 | edge_id (u8 len + bytes) | sent_ms i64 | body_len u32 | body | tag[32]
//!          tag = HMAC(key, "edgemeter request v1" | every byte before the tag)
//! reply:   "EMS" 0x02 | body_len u32 | body | tag[32]
//!          tag = HMAC(key, "edgemeter reply v1" | request tag | body_len | body)
//! ```
//! The reply's tag covers the request's tag, so a reply cannot be replayed
//! to another request. `sent_ms` is the edge's wall clock: the cloud refuses
//! requests outside a window around its own clock, so a captured request
//! cannot be replayed later. Inside the window a replay is a resend, which
//! every request tolerates (NNG itself resends), so it changes nothing.
//! The body is any request of the other modules, unchanged.

use crate::frame::{check_size, invalid, put_id, DecodeError, Reader};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

pub const SEALED_REQUEST_MAGIC: [u8; 4] = *b"EMS\x01";
pub const SEALED_REPLY_MAGIC: [u8; 4] = *b"EMS\x02";
pub const TAG_BYTES: usize = 32;
pub const KEY_BYTES: usize = 32;

const REQUEST_DOMAIN: &[u8] = b"edgemeter request v1";
const REPLY_DOMAIN: &[u8] = b"edgemeter reply v1";

type HmacSha256 = Hmac<Sha256>;

/// An edge's secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct EdgeKey([u8; KEY_BYTES]);

impl fmt::Debug for EdgeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EdgeKey(..)")
    }
}

impl EdgeKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> EdgeKey {
        EdgeKey(bytes)
    }

    /// Parses 64 hex digits, as written in key files and the environment.
    pub fn from_hex(text: &str) -> Result<EdgeKey, String> {
        let text = text.trim();
        if text.len() != KEY_BYTES * 2 {
            return Err(format!(
                "a key is {} hex digits, not {}",
                KEY_BYTES * 2,
                text.len()
            ));
        }
        let mut bytes = [0u8; KEY_BYTES];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let pair = &text[index * 2..index * 2 + 2];
            *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hex"))?;
        }
        Ok(EdgeKey(bytes))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn mac(&self, domain: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(domain);
        mac
    }
}

/// Why a sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Malformed(DecodeError),
    /// The request names an edge the cloud has no key for.
    UnknownEdge(String),
    /// The tag does not match: a forged or corrupted message, or a wrong key.
    BadTag,
    /// `sent_ms` lies outside the accepted window around the cloud's clock.
    OutsideWindow {
        skew_ms: i64,
    },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed(error) => write!(f, "malformed sealed message: {error}"),
            AuthError::UnknownEdge(edge_id) => write!(f, "no key for edge {edge_id:?}"),
            AuthError::BadTag => write!(f, "authentication tag does not match"),
            AuthError::OutsideWindow { skew_ms } => {
                write!(
                    f,
                    "request time is {skew_ms} ms away from the cloud's clock"
                )
            }
        }
    }
}

impl std::error::Error for AuthError {}

pub fn is_sealed_request(bytes: &[u8]) -> bool {
    bytes.starts_with(&SEALED_REQUEST_MAGIC)
}

/// A request whose tag checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedRequest {
    pub edge_id: String,
    pub sent_ms: i64,
    pub body: Vec<u8>,
    /// Binds the reply to this request: pass it to [`seal_reply`].
    pub tag: [u8; TAG_BYTES],
}

/// Seals `body` for `edge_id`; returns the message and its tag, which the
/// edge keeps to check the reply.
pub fn seal_request(
    edge_id: &str,
    key: &EdgeKey,
    sent_ms: i64,
    body: &[u8],
) -> (Vec<u8>, [u8; TAG_BYTES]) {
    let mut out = Vec::with_capacity(body.len() + 64 + edge_id.len());
    out.extend_from_slice(&SEALED_REQUEST_MAGIC);
    put_id(&mut out, edge_id);
    out.extend_from_slice(&sent_ms.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    let mut mac = key.mac(REQUEST_DOMAIN);
    mac.update(&out);
    let tag: [u8; TAG_BYTES] = mac.finalize().into_bytes().into();
    out.extend_from_slice(&tag);
    (out, tag)
}

/// Checks a sealed request with the key of the edge it names, and its time
/// against `now_ms` within `window_ms` either way.
pub fn open_request(
    bytes: &[u8],
    key_for: impl FnOnce(&str) -> Option<EdgeKey>,
    now_ms: i64,
    window_ms: i64,
) -> Result<OpenedRequest, AuthError> {
    check_size(bytes).map_err(AuthError::Malformed)?;
    if bytes.len() < TAG_BYTES + 4 {
        return Err(AuthError::Malformed(DecodeError::Incomplete));
    }
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
    let mut reader = Reader::new(signed);
    if reader.take(4).map_err(AuthError::Malformed)? != SEALED_REQUEST_MAGIC {
        return Err(AuthError::Malformed(invalid("not a sealed request")));
    }
    let edge_id = reader.id().map_err(AuthError::Malformed)?;
    let sent_ms = reader.i64().map_err(AuthError::Malformed)?;
    let length = reader.u32().map_err(AuthError::Malformed)? as usize;
    let body = reader.take(length).map_err(AuthError::Malformed)?.to_vec();
    reader.finish().map_err(AuthError::Malformed)?;
    let key = key_for(&edge_id).ok_or_else(|| AuthError::UnknownEdge(edge_id.clone()))?;
    let mut mac = key.mac(REQUEST_DOMAIN);
    mac.update(signed);
    // Constant-time comparison: the tag leaks nothing through timing.
    mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
    let skew_ms = sent_ms.saturating_sub(now_ms);
    // `unsigned_abs`: a skew saturated to `i64::MIN` has no `abs`; with
    // overflow checks off (release) it wrapped to itself and passed.
    if skew_ms.unsigned_abs() > window_ms.max(0) as u64 {
        return Err(AuthError::OutsideWindow { skew_ms });
    }
    Ok(OpenedRequest {
        edge_id,
        sent_ms,
        body,
        tag: tag.try_into().expect("split at the tag length"),
    })
}

fn reply_mac(key: &EdgeKey, request_tag: &[u8; TAG_BYTES], length_and_body: &[u8]) -> HmacSha256 {
    let mut mac = key.mac(REPLY_DOMAIN);
    mac.update(request_tag);
    mac.update(length_and_body);
    mac
}

pub fn seal_reply(key: &EdgeKey, request_tag: &[u8; TAG_BYTES], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 40);
    out.extend_from_slice(&SEALED_REPLY_MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    let tag = reply_mac(key, request_tag, &out[4..])
        .finalize()
        .into_bytes();
    out.extend_from_slice(&tag);
    out
}

/// Checks the cloud's reply to the request that had `request_tag`.
pub fn open_reply(
    bytes: &[u8],
    key: &EdgeKey,
    request_tag: &[u8; TAG_BYTES],
) -> Result<Vec<u8>, AuthError> {
    check_size(bytes).map_err(AuthError::Malformed)?;
    if bytes.len() < TAG_BYTES + 8 || !bytes.starts_with(&SEALED_REPLY_MAGIC) {
        return Err(AuthError::Malformed(invalid("not a sealed reply")));
    }
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
    let mut reader = Reader::new(&signed[4..]);
    let length = reader.u32().map_err(AuthError::Malformed)? as usize;
    let body = reader.take(length).map_err(AuthError::Malformed)?.to_vec();
    reader.finish().map_err(AuthError::Malformed)?;
    reply_mac(key, request_tag, &signed[4..])
        .verify_slice(tag)
        .map_err(|_| AuthError::BadTag)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EdgeKey {
        EdgeKey::from_bytes([byte; KEY_BYTES])
    }

    #[test]
    fn a_sealed_round_trip_checks_out() {
        let (sealed, tag) = seal_request("edge-1", &key(7), 1_000, b"payload");
        assert!(is_sealed_request(&sealed));
        let opened = open_request(&sealed, |_| Some(key(7)), 1_500, 60_000).unwrap();
        assert_eq!(opened.edge_id, "edge-1");
        assert_eq!(opened.body, b"payload");
        assert_eq!(opened.tag, tag);
        let reply = seal_reply(&key(7), &tag, b"answer");
        assert_eq!(open_reply(&reply, &key(7), &tag).unwrap(), b"answer");
    }

    #[test]
    fn forgery_wrong_keys_and_old_requests_are_refused() {
        let (sealed, tag) = seal_request("edge-1", &key(7), 1_000, b"payload");
        let refused = |bytes: &[u8], key_byte: u8, now: i64| {
            open_request(bytes, |_| Some(key(key_byte)), now, 60_000).unwrap_err()
        };
        assert_eq!(refused(&sealed, 8, 1_000), AuthError::BadTag);
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            refused(&flipped, 7, 1_000),
            AuthError::BadTag | AuthError::Malformed(_)
        ));
        assert_eq!(
            refused(&sealed, 7, 100_000),
            AuthError::OutsideWindow { skew_ms: -99_000 }
        );
        assert_eq!(
            open_request(&sealed, |_| None, 1_000, 60_000).unwrap_err(),
            AuthError::UnknownEdge("edge-1".into())
        );
        assert!(matches!(
            refused(&sealed[..10], 7, 1_000),
            AuthError::Malformed(_)
        ));
        // A reply bound to another request, or under another key, is refused.
        let reply = seal_reply(&key(7), &tag, b"answer");
        assert_eq!(
            open_reply(&reply, &key(7), &[0; TAG_BYTES]),
            Err(AuthError::BadTag)
        );
        assert_eq!(open_reply(&reply, &key(9), &tag), Err(AuthError::BadTag));
    }

    /// Goal: the seal window holds on both sides, to the extremes.
    /// Method: requests stamped just inside and just outside the window
    /// before and after the cloud's clock, and at the ends of `i64` (a
    /// skew that saturates to `i64::MIN` once wrapped to itself in
    /// `abs` and passed in a release build).
    #[test]
    fn the_window_holds_on_both_sides() {
        let open_at = |sent_ms: i64, now_ms: i64| {
            let (sealed, _) = seal_request("edge-1", &key(7), sent_ms, b"payload");
            open_request(&sealed, |_| Some(key(7)), now_ms, 60_000).map(|_| ())
        };
        let now = 1_577_145_600_000;
        assert_eq!(open_at(now - 60_000, now), Ok(()));
        assert_eq!(open_at(now + 60_000, now), Ok(()));
        assert_eq!(
            open_at(now - 60_001, now),
            Err(AuthError::OutsideWindow { skew_ms: -60_001 })
        );
        assert_eq!(
            open_at(now + 60_001, now),
            Err(AuthError::OutsideWindow { skew_ms: 60_001 })
        );
        assert_eq!(
            open_at(i64::MIN, now),
            Err(AuthError::OutsideWindow { skew_ms: i64::MIN })
        );
        assert_eq!(
            open_at(i64::MAX, -now),
            Err(AuthError::OutsideWindow { skew_ms: i64::MAX })
        );
    }

    #[test]
    fn keys_parse_from_hex_and_hide_in_debug() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let parsed = EdgeKey::from_hex(hex).unwrap();
        assert_eq!(parsed.to_hex(), hex);
        assert_eq!(format!("{parsed:?}"), "EdgeKey(..)");
        assert!(EdgeKey::from_hex("abc").is_err());
        assert!(EdgeKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
