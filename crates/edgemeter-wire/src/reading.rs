//! The Kafka record on `power_topic`: one household reading, as JSON
//! `{"node_id": "<household id>", "power_value": <watts>, "ts": <ms since epoch>}`.
//!
//! The layout is the original's, so its producers and ours are
//! interchangeable. Decoding validates every field; what fails is named by a
//! [`RecordError`] kind so that the edge can count and keep it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest power a household reading may claim. German household
/// connections are fused at 63 A on three phases (about 43 kW); a reading
/// above 100 kW is a broken meter or a broken producer.
pub const POWER_W_MAX: f64 = 100_000.0;

/// The largest Kafka record we parse. A reading is under 200 bytes.
pub const RECORD_BYTES_MAX: usize = 4096;

/// One household reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub node_id: String,
    /// Total active power in watts.
    #[serde(rename = "power_value")]
    pub power_w: f64,
    /// Event time in milliseconds since the Unix epoch.
    #[serde(rename = "ts")]
    pub ts_ms: i64,
}

/// Why a record is not a reading. The kind names the counter it goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordError {
    TooLarge(usize),
    NotJson(String),
    MissingField(&'static str),
    BadNodeId(&'static str),
    NonFinitePower,
    NegativePower(f64),
    AbsurdPower(f64),
    BadTimestamp(String),
}

impl RecordError {
    /// A short stable name for counters and the `rejected` table.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::TooLarge(_) => "too_large",
            RecordError::NotJson(_) => "not_json",
            RecordError::MissingField(_) => "missing_field",
            RecordError::BadNodeId(_) => "bad_node_id",
            RecordError::NonFinitePower => "non_finite_power",
            RecordError::NegativePower(_) => "negative_power",
            RecordError::AbsurdPower(_) => "absurd_power",
            RecordError::BadTimestamp(_) => "bad_timestamp",
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::TooLarge(bytes) => {
                write!(f, "record of {bytes} bytes exceeds {RECORD_BYTES_MAX}")
            }
            RecordError::NotJson(error) => write!(f, "not a JSON object: {error}"),
            RecordError::MissingField(field) => write!(f, "missing or mistyped field `{field}`"),
            RecordError::BadNodeId(reason) => write!(f, "bad node_id: {reason}"),
            RecordError::NonFinitePower => write!(f, "power_value is not a finite number"),
            RecordError::NegativePower(watts) => write!(f, "power_value {watts} W is negative"),
            RecordError::AbsurdPower(watts) => {
                write!(f, "power_value {watts} W exceeds {POWER_W_MAX} W")
            }
            RecordError::BadTimestamp(reason) => write!(f, "bad ts: {reason}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// The loose shape: every field optional and untyped, so a wrong field gives
/// a precise error instead of serde's generic one.
#[derive(Deserialize)]
struct RawReading {
    node_id: Option<serde_json::Value>,
    power_value: Option<serde_json::Value>,
    ts: Option<serde_json::Value>,
}

/// Milliseconds since the epoch of 2000-01-01 and 2100-01-01: a timestamp
/// outside is not a smart-meter reading.
const TS_MS_MIN: i64 = 946_684_800_000;
const TS_MS_MAX: i64 = 4_102_444_800_000;

impl Reading {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.power_w.is_finite(), "encoding a non-finite power");
        serde_json::to_vec(self).expect("a reading always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Reading, RecordError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let raw: RawReading = serde_json::from_slice(bytes)
            .map_err(|error| RecordError::NotJson(error.to_string()))?;
        let node_id = match raw.node_id {
            Some(serde_json::Value::String(id)) => id,
            _ => return Err(RecordError::MissingField("node_id")),
        };
        crate::check_id(&node_id).map_err(RecordError::BadNodeId)?;
        // serde_json cannot represent NaN or infinity, but a huge exponent
        // such as 1e999 is rejected by the parser; a finite check still
        // guards the arithmetic below.
        let power_w = raw
            .power_value
            .as_ref()
            .and_then(serde_json::Value::as_f64)
            .ok_or(RecordError::MissingField("power_value"))?;
        if !power_w.is_finite() {
            return Err(RecordError::NonFinitePower);
        }
        if power_w < 0.0 {
            return Err(RecordError::NegativePower(power_w));
        }
        if power_w > POWER_W_MAX {
            return Err(RecordError::AbsurdPower(power_w));
        }
        let ts_ms = match raw.ts.as_ref() {
            Some(value) => value
                .as_i64()
                .ok_or_else(|| RecordError::BadTimestamp(format!("{value} is not an integer")))?,
            None => return Err(RecordError::MissingField("ts")),
        };
        if !(TS_MS_MIN..TS_MS_MAX).contains(&ts_ms) {
            return Err(RecordError::BadTimestamp(format!(
                "{ts_ms} is outside 2000-2100"
            )));
        }
        Ok(Reading {
            node_id,
            power_w,
            ts_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_original_layout() {
        let reading = Reading {
            node_id: "abc".into(),
            power_w: 249.05,
            ts_ms: 1_577_145_601_982,
        };
        let bytes = reading.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"node_id":"abc","power_value":249.05,"ts":1577145601982}"#
        );
        assert_eq!(Reading::decode(&bytes).unwrap(), reading);
    }

    #[test]
    fn names_what_is_wrong() {
        let kind = |text: &str| Reading::decode(text.as_bytes()).unwrap_err().kind();
        assert_eq!(kind("not json"), "not_json");
        assert_eq!(
            kind(r#"{"power_value":1,"ts":1577145601982}"#),
            "missing_field"
        );
        assert_eq!(
            kind(r#"{"node_id":"a","ts":1577145601982}"#),
            "missing_field"
        );
        assert_eq!(kind(r#"{"node_id":"a","power_value":1}"#), "missing_field");
        assert_eq!(
            kind(r#"{"node_id":"a:b","power_value":1,"ts":1577145601982}"#),
            "bad_node_id"
        );
        assert_eq!(
            kind(r#"{"node_id":"a","power_value":-1,"ts":1577145601982}"#),
            "negative_power"
        );
        assert_eq!(
            kind(r#"{"node_id":"a","power_value":1e9,"ts":1577145601982}"#),
            "absurd_power"
        );
        assert_eq!(
            kind(r#"{"node_id":"a","power_value":"1","ts":1577145601982}"#),
            "missing_field"
        );
        assert_eq!(
            kind(r#"{"node_id":"a","power_value":1,"ts":5}"#),
            "bad_timestamp"
        );
        assert_eq!(
            kind(r#"{"node_id":"a","power_value":1,"ts":1.5}"#),
            "bad_timestamp"
        );
        assert_eq!(kind(&" ".repeat(RECORD_BYTES_MAX + 1)), "too_large");
    }
}
