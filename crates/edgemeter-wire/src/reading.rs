//! The Kafka record on `power_topic`: one household reading, in one of two
//! forms ([`ReadingForm`]).
//!
//! - EdgeMeter's own (the default): JSON
//!   `{"node_id": "<household id>", "power_value": <watts>, "ts": <ms since epoch>}`,
//!   keyed by household.
//! - The original system's (its mosaik `KafkaAdapter`):
//!   `{"node_id": "household_<id>", "power_value": <the CSV's milliwatts>}`,
//!   with no key and no time field; the time is the Kafka record's own
//!   timestamp. `household_<id>` is the same household as `<id>`.
//!
//! The two are not interchangeable: the field names match, the units and
//! the clock do not, so the edge reads the form its operator names
//! (`edgemeter edge --readings edgemeter|original`). A record of the other
//! form is refused with a reason that names the flag, never misread.
//! Decoding validates every field; what fails is named by a
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
    /// An original-form power above [`POWER_W_MAX`] even read as milliwatts.
    AbsurdPowerMilliwatts(f64),
    /// A record of the other [`ReadingForm`] than the edge reads.
    WrongForm(String),
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
            RecordError::AbsurdPower(_) | RecordError::AbsurdPowerMilliwatts(_) => "absurd_power",
            RecordError::BadTimestamp(_) => "bad_timestamp",
            RecordError::WrongForm(_) => "wrong_form",
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
            RecordError::MissingField("ts") => write!(
                f,
                "missing or mistyped field `ts`; the original's records have none: \
                 is this the original's form? see --readings original"
            ),
            RecordError::MissingField(field) => write!(f, "missing or mistyped field `{field}`"),
            RecordError::BadNodeId(reason) => write!(f, "bad node_id: {reason}"),
            RecordError::NonFinitePower => write!(f, "power_value is not a finite number"),
            RecordError::NegativePower(watts) => write!(f, "power_value {watts} W is negative"),
            RecordError::AbsurdPower(watts) => write!(
                f,
                "power_value {watts} W exceeds {POWER_W_MAX} W; \
                 is this the original's milliwatt form? see --readings original"
            ),
            RecordError::BadTimestamp(reason) => write!(f, "bad ts: {reason}"),
            RecordError::AbsurdPowerMilliwatts(milliwatts) => write!(
                f,
                "power_value {milliwatts} mW is {} W, above {POWER_W_MAX} W",
                milliwatts / 1000.0
            ),
            RecordError::WrongForm(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for RecordError {}

/// A record in the expected types; the node id is borrowed when it has no
/// escapes.
#[derive(Deserialize)]
struct TypedReading<'a> {
    #[serde(borrow)]
    node_id: std::borrow::Cow<'a, str>,
    power_value: f64,
    ts: i64,
}

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
        // Well-formed records, nearly all of them, parse straight into
        // their types, skipping a JSON value per field. Anything else is
        // parsed again field by field to name what is wrong. Both paths
        // run the same checks in the same order, and a property test holds
        // their answers equal.
        match serde_json::from_slice::<TypedReading<'_>>(bytes) {
            Ok(typed) => Ok(Reading {
                node_id: checked_node_id(typed.node_id.into_owned())?,
                power_w: checked_power(typed.power_value)?,
                ts_ms: checked_ts(typed.ts)?,
            }),
            Err(_) => Reading::decode_field_by_field(bytes),
        }
    }

    /// Names the first thing wrong with a record that did not parse into
    /// its types (and decodes one that did: the property test compares).
    fn decode_field_by_field(bytes: &[u8]) -> Result<Reading, RecordError> {
        let raw: RawReading = serde_json::from_slice(bytes)
            .map_err(|error| RecordError::NotJson(error.to_string()))?;
        let node_id = match raw.node_id {
            Some(serde_json::Value::String(id)) => checked_node_id(id)?,
            _ => return Err(RecordError::MissingField("node_id")),
        };
        let power_w = raw
            .power_value
            .as_ref()
            .and_then(serde_json::Value::as_f64)
            .ok_or(RecordError::MissingField("power_value"))?;
        let power_w = checked_power(power_w)?;
        let ts_ms = match raw.ts.as_ref() {
            Some(value) => value
                .as_i64()
                .ok_or_else(|| RecordError::BadTimestamp(format!("{value} is not an integer")))?,
            None => return Err(RecordError::MissingField("ts")),
        };
        Ok(Reading {
            node_id,
            power_w,
            ts_ms: checked_ts(ts_ms)?,
        })
    }
}

/// Which producer's records the edge reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadingForm {
    /// EdgeMeter's own: watts and a `ts` field.
    #[default]
    EdgeMeter,
    /// The original system's: milliwatts, `household_<id>`, the Kafka
    /// record's timestamp as the reading's time.
    Original,
}

impl ReadingForm {
    /// The name `--readings` takes.
    pub fn name(self) -> &'static str {
        match self {
            ReadingForm::EdgeMeter => "edgemeter",
            ReadingForm::Original => "original",
        }
    }

    pub fn from_name(name: &str) -> Option<ReadingForm> {
        [ReadingForm::EdgeMeter, ReadingForm::Original]
            .into_iter()
            .find(|form| form.name() == name)
    }

    /// Decodes one record of this form. `record_ts_ms` is the Kafka
    /// record's timestamp, which only the original's form reads.
    pub fn decode(self, bytes: &[u8], record_ts_ms: Option<i64>) -> Result<Reading, RecordError> {
        match self {
            ReadingForm::EdgeMeter => Reading::decode(bytes),
            ReadingForm::Original => Reading::decode_original(bytes, record_ts_ms),
        }
    }
}

/// The prefix the original's producer puts before a household id.
pub const ORIGINAL_NODE_PREFIX: &str = "household_";

/// The original's record: every field loose, to name what is wrong.
#[derive(Deserialize)]
struct OriginalRecord {
    node_id: Option<serde_json::Value>,
    power_value: Option<serde_json::Value>,
    /// Never in the original's form: its presence means EdgeMeter's.
    ts: Option<serde_json::Value>,
}

impl Reading {
    /// Decodes the original producer's `{"node_id": "household_<id>",
    /// "power_value": <mW>}`, timed by the Kafka record's timestamp.
    pub fn decode_original(
        bytes: &[u8],
        record_ts_ms: Option<i64>,
    ) -> Result<Reading, RecordError> {
        if bytes.len() > RECORD_BYTES_MAX {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        let raw: OriginalRecord = serde_json::from_slice(bytes)
            .map_err(|error| RecordError::NotJson(error.to_string()))?;
        if raw.ts.is_some() {
            return Err(RecordError::WrongForm(
                "the record has a `ts` field, which the original's records never have: \
                 is this EdgeMeter's form? see --readings edgemeter"
                    .to_owned(),
            ));
        }
        let node_id = match raw.node_id {
            Some(serde_json::Value::String(id)) => {
                let id = id
                    .strip_prefix(ORIGINAL_NODE_PREFIX)
                    .map_or(id.clone(), str::to_owned);
                checked_node_id(id)?
            }
            _ => return Err(RecordError::MissingField("node_id")),
        };
        let power_mw = raw
            .power_value
            .as_ref()
            .and_then(serde_json::Value::as_f64)
            .ok_or(RecordError::MissingField("power_value"))?;
        let power_w = checked_power_mw(power_mw)?;
        let ts_ms = record_ts_ms.ok_or_else(|| {
            RecordError::BadTimestamp(
                "the Kafka record has no timestamp, the original form's only clock".to_owned(),
            )
        })?;
        Ok(Reading {
            node_id,
            power_w,
            ts_ms: checked_ts(ts_ms)?,
        })
    }
}

/// [`checked_power`] for a value in milliwatts; the reason names both units.
fn checked_power_mw(power_mw: f64) -> Result<f64, RecordError> {
    if power_mw.is_finite() && power_mw > POWER_W_MAX * 1000.0 {
        return Err(RecordError::AbsurdPowerMilliwatts(power_mw));
    }
    checked_power(power_mw / 1000.0)
}

fn checked_node_id(node_id: String) -> Result<String, RecordError> {
    crate::check_id(&node_id).map_err(RecordError::BadNodeId)?;
    Ok(node_id)
}

/// serde_json cannot represent NaN or infinity, and its parser rejects a
/// huge exponent such as 1e999; the finite check still guards the
/// arithmetic downstream.
fn checked_power(power_w: f64) -> Result<f64, RecordError> {
    if !power_w.is_finite() {
        return Err(RecordError::NonFinitePower);
    }
    if power_w < 0.0 {
        return Err(RecordError::NegativePower(power_w));
    }
    if power_w > POWER_W_MAX {
        return Err(RecordError::AbsurdPower(power_w));
    }
    Ok(power_w)
}

fn checked_ts(ts_ms: i64) -> Result<i64, RecordError> {
    if !(TS_MS_MIN..TS_MS_MAX).contains(&ts_ms) {
        return Err(RecordError::BadTimestamp(format!(
            "{ts_ms} is outside 2000-2100"
        )));
    }
    Ok(ts_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A JSON value of the kinds a field may wrongly hold, or the right one.
    fn field_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            Just(r#""h1""#.to_owned()),
            Just(r#""h\u0031""#.to_owned()),
            Just(r#""a:b""#.to_owned()),
            Just(r#""""#.to_owned()),
            Just("-0".to_owned()),
            Just("1e999".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("1577145601982.0".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0i64..4_200_000_000_000).prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |x| x.is_finite())
                .prop_map(|x| x.to_string()),
            (-10.0f64..200_000.0).prop_map(|x| x.to_string()),
        ]
    }

    /// A record: each field absent, present once or twice, in any order,
    /// sometimes with an unknown field.
    fn record() -> impl Strategy<Value = String> {
        let field = |name: &'static str| {
            prop::collection::vec(field_value(), 0..=2).prop_map(move |values| {
                values
                    .into_iter()
                    .map(|value| format!(r#""{name}":{value}"#))
                    .collect::<Vec<_>>()
            })
        };
        (
            field("node_id"),
            field("power_value"),
            field("ts"),
            prop::option::of(Just(r#""extra":1"#.to_owned())),
            Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
        )
            .prop_map(|(node_ids, powers, timestamps, extra, order)| {
                let mut fields: Vec<String> = node_ids
                    .into_iter()
                    .chain(powers)
                    .chain(timestamps)
                    .chain(extra)
                    .collect();
                let count = fields.len().max(1) as u64;
                fields.rotate_left((order % count) as usize);
                format!("{{{}}}", fields.join(","))
            })
    }

    /// A record whose fields have the right JSON types, so that `decode`
    /// takes its typed path, with values on both sides of every check.
    fn well_typed_record() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just("h1"),
                Just("a:b"),
                Just(""),
                Just("Haushalt_7"),
                Just("h\\u0031")
            ],
            prop_oneof![
                (-10.0f64..200_000.0).prop_map(|x| x.to_string()),
                (0u32..100_001).prop_map(|n| n.to_string()),
                Just("-0".to_owned()),
                Just("100000.0000001".to_owned()),
            ],
            prop_oneof![
                TS_MS_MIN - 2..TS_MS_MIN + 2,
                TS_MS_MAX - 2..TS_MS_MAX + 2,
                TS_MS_MIN..TS_MS_MAX,
                any::<i64>(),
            ],
        )
            .prop_map(|(node_id, power, ts)| {
                format!(r#"{{"node_id":"{node_id}","power_value":{power},"ts":{ts}}}"#)
            })
    }

    proptest! {
        /// Goal: the typed fast path of `decode` gives exactly the answer
        /// of the field-by-field parse, for good records and bad ones.
        #[test]
        fn both_decoding_paths_agree(record in prop_oneof![well_typed_record(), record()]) {
            prop_assert_eq!(
                Reading::decode(record.as_bytes()),
                Reading::decode_field_by_field(record.as_bytes()),
                "{}", record
            );
        }
    }

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

    /// Goal: the original's records read as the same household and power
    /// as ours, timed by the Kafka record, and each form's records are
    /// refused by the other with a reason that names the flag.
    #[test]
    fn the_original_form_reads_with_the_record_time_and_milliwatts() {
        const TS: i64 = 1_577_145_601_982;
        let original = br#"{"node_id": "household_8c3454", "power_value": 249050}"#;
        let reading = ReadingForm::Original.decode(original, Some(TS)).unwrap();
        assert_eq!(
            reading,
            Reading {
                node_id: "8c3454".into(),
                power_w: 249.05,
                ts_ms: TS
            }
        );
        let ours = Reading {
            ts_ms: TS + 1,
            ..reading.clone()
        }
        .encode();
        assert_eq!(
            ReadingForm::EdgeMeter
                .decode(&ours, Some(TS))
                .unwrap()
                .ts_ms,
            TS + 1,
            "our own form keeps its own clock"
        );
        let refused = ReadingForm::Original.decode(&ours, Some(TS)).unwrap_err();
        assert_eq!(refused.kind(), "wrong_form");
        assert!(
            refused.to_string().contains("--readings edgemeter"),
            "{refused}"
        );
        let milliwatts = br#"{"node_id": "household_8c3454", "power_value": 414020}"#;
        let refused = ReadingForm::EdgeMeter
            .decode(milliwatts, Some(TS))
            .unwrap_err();
        assert_eq!(refused.kind(), "absurd_power");
        assert!(
            refused.to_string().contains("--readings original"),
            "{refused}"
        );
        let quiet_house = br#"{"node_id": "household_8c3454", "power_value": 41402}"#;
        let refused = ReadingForm::EdgeMeter
            .decode(quiet_house, Some(TS))
            .unwrap_err();
        assert_eq!(refused.kind(), "missing_field");
        assert!(
            refused.to_string().contains("--readings original"),
            "{refused}"
        );
        let with_ts = br#"{"node_id": "h", "power_value": 414020, "ts": 1577145601982}"#;
        assert_eq!(
            ReadingForm::EdgeMeter
                .decode(with_ts, None)
                .unwrap_err()
                .to_string(),
            "power_value 414020 W exceeds 100000 W; \
             is this the original's milliwatt form? see --readings original"
        );
        let huge = br#"{"node_id": "household_1", "power_value": 100000001}"#;
        let refused = ReadingForm::Original.decode(huge, Some(TS)).unwrap_err();
        assert_eq!(refused.kind(), "absurd_power");
        assert!(refused.to_string().contains("100000.001 W"), "{refused}");
        let untimed = ReadingForm::Original.decode(original, None).unwrap_err();
        assert_eq!(untimed.kind(), "bad_timestamp");
        assert_eq!(
            ReadingForm::Original
                .decode(br#"{"power_value": 1}"#, Some(TS))
                .unwrap_err()
                .kind(),
            "missing_field"
        );
        for form in [ReadingForm::EdgeMeter, ReadingForm::Original] {
            assert_eq!(ReadingForm::from_name(form.name()), Some(form));
        }
        assert_eq!(ReadingForm::from_name("pynng"), None);
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
