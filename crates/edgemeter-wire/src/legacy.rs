//! The original's data request, JSON `{"id": <int>, "node_id": "<str>",
//! "average": <float>}`, and its text reply `PLZ for id: <id> - PLZ: <digits>`.
//!
//! The original stored "Unknown" when `average` was missing and broke every
//! later dashboard call; here such a request is refused with an error reply.

use crate::frame::{check_size, invalid, DecodeError};
use crate::PostalCode;
use serde::Deserialize;

/// The legacy request carries no window; the cloud keys it by its `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyDataRequest {
    pub id: i64,
    pub node_id: String,
    pub average: f64,
}

#[derive(Deserialize)]
struct RawLegacy {
    id: Option<serde_json::Value>,
    node_id: Option<serde_json::Value>,
    average: Option<serde_json::Value>,
}

impl LegacyDataRequest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({"id": self.id, "node_id": self.node_id, "average": self.average})
            .to_string()
            .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<LegacyDataRequest, DecodeError> {
        check_size(bytes)?;
        let raw: RawLegacy = serde_json::from_slice(bytes)
            .map_err(|error| invalid(format!("not a JSON request: {error}")))?;
        let id = raw
            .id
            .as_ref()
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| invalid("`id` must be an integer"))?;
        let node_id = match raw.node_id {
            Some(serde_json::Value::String(node_id)) => node_id,
            _ => return Err(invalid("`node_id` must be a string")),
        };
        crate::check_id(&node_id).map_err(invalid)?;
        let average = raw
            .average
            .as_ref()
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| invalid("`average` must be a number"))?;
        if !average.is_finite() || average < 0.0 {
            return Err(invalid(format!("`average` {average} is not a power")));
        }
        Ok(LegacyDataRequest {
            id,
            node_id,
            average,
        })
    }

    /// The original's reply, byte for byte.
    pub fn reply(&self, postal_code: PostalCode) -> Vec<u8> {
        format!("PLZ for id: {} - PLZ: {}", self.id, postal_code).into_bytes()
    }
}

/// The error reply to a malformed legacy request. The original sent nothing,
/// which left the sender waiting for NNG's 60-second resend.
pub fn error_reply(reason: &str) -> Vec<u8> {
    format!("ERROR: {reason}").into_bytes()
}

/// Parses `PLZ for id: <id> - PLZ: <digits>`, for clients and tests.
pub fn parse_reply(bytes: &[u8]) -> Option<(i64, PostalCode)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("PLZ for id: ")?;
    let (id, code) = rest.split_once(" - PLZ: ")?;
    Some((id.parse().ok()?, PostalCode::parse(code)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_original_request_and_replies_as_it_did() {
        let request =
            LegacyDataRequest::decode(br#"{"id": 12, "node_id": "abc", "average": 310.5}"#)
                .unwrap();
        assert_eq!(request.id, 12);
        let reply = request.reply(PostalCode::parse("10115").unwrap());
        assert_eq!(reply, b"PLZ for id: 12 - PLZ: 10115");
        assert_eq!(
            parse_reply(&reply),
            Some((12, PostalCode::parse("10115").unwrap()))
        );
    }

    #[test]
    fn refuses_what_the_original_stored_as_unknown() {
        assert!(LegacyDataRequest::decode(br#"{"id": 1, "node_id": "abc"}"#).is_err());
        assert!(
            LegacyDataRequest::decode(br#"{"id": "x", "node_id": "abc", "average": 1}"#).is_err()
        );
        assert!(
            LegacyDataRequest::decode(br#"{"id": 1, "node_id": "abc", "average": -1}"#).is_err()
        );
        assert!(LegacyDataRequest::decode(b"garbage").is_err());
    }
}
