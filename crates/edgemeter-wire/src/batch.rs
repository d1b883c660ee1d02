//! The Rust edge's data request: a versioned batch of tuples, and its reply.
//!
//! Request (big-endian), version 1 or 2 (the same tuples; the version says
//! which reply the edge understands):
//! ```text
//! "EMQ" 0x01|0x02 | edge_id (u8 len + bytes) | request_id u64 | count u16 |
//! count x ( tuple_id i64 | node_id (u8 len + bytes) | window_start_ms i64 |
//!           average_w f64 | samples u32 )
//! ```
//! Reply to a version-1 request:
//! ```text
//! "EMA" 0x01 | request_id u64 | status u8 |
//!   status 0 (stored): count u16 | count x ( tuple_id i64 | postal code 5 ASCII digits )
//!   status 1 (retry later) or 2 (rejected): reason (u16 len + bytes)
//! ```
//! Reply to a version-2 request:
//! ```text
//! "EMA" 0x02 | request_id u64 | status u8 |
//!   status 0 (stored): epoch u64 (non-zero) | count u16 |
//!     count x ( tuple_id i64 | postal code 5 ASCII digits | outcome u8 )
//!     outcome 0: stored (new, or an identical resend); 1: conflict (the
//!     cloud holds another average or sample count for this identity and
//!     kept it)
//!   status 1 (retry later) or 2 (rejected): reason (u16 len + bytes)
//! ```
//! The epoch names the cloud store the batch was written to: a store that
//! lost its data gets a new one, which tells the edge to ship again what it
//! had acknowledged under the old one.
//!
//! A tuple is identified by `(edge_id, node_id, window_start_ms)`, which is
//! what makes a resent batch harmless: the cloud stores each identity once.
//! `tuple_id` is the edge's row id, echoed so the edge can update its rows.

use crate::frame::{check_size, invalid, put_id, put_text, DecodeError, Reader};
use crate::PostalCode;

pub const REQUEST_MAGIC: [u8; 4] = *b"EMQ\x01";
pub const REPLY_MAGIC: [u8; 4] = *b"EMA\x01";
pub const REQUEST_MAGIC_V2: [u8; 4] = *b"EMQ\x02";
pub const REPLY_MAGIC_V2: [u8; 4] = *b"EMA\x02";

/// Which layout a batch request or reply has. A reply has its request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireVersion {
    /// Postal codes only: what EdgeMeter edges before store epochs speak.
    V1,
    /// Postal codes, per-tuple outcomes and the store epoch.
    V2,
}

impl WireVersion {
    fn request_magic(self) -> [u8; 4] {
        match self {
            WireVersion::V1 => REQUEST_MAGIC,
            WireVersion::V2 => REQUEST_MAGIC_V2,
        }
    }

    fn reply_magic(self) -> [u8; 4] {
        match self {
            WireVersion::V1 => REPLY_MAGIC,
            WireVersion::V2 => REPLY_MAGIC_V2,
        }
    }
}

/// The most tuples in one batch. 1,024 tuples keep a request near 150 KiB,
/// far under [`crate::FRAME_BYTES_MAX`], while amortising one SQLite
/// transaction and one Redis round trip over many tuples.
pub const BATCH_TUPLES_MAX: usize = 1024;

/// The most samples one 5-second window can have: one reading per
/// millisecond. Anything above is a corrupt tuple.
pub const WINDOW_SAMPLES_MAX: u32 = 5_000;

/// One tuple as the edge ships it.
#[derive(Debug, Clone, PartialEq)]
pub struct TupleOut {
    pub tuple_id: i64,
    pub node_id: String,
    pub window_start_ms: i64,
    pub average_w: f64,
    pub samples: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    pub version: WireVersion,
    pub edge_id: String,
    pub request_id: u64,
    pub tuples: Vec<TupleOut>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub tuple_id: i64,
    pub postal_code: PostalCode,
}

/// What the cloud did with one tuple of a version-2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleOutcome {
    /// Stored now, or already stored with the same average and samples.
    Stored,
    /// Already stored with another average or sample count: the stored
    /// value is kept, and the difference is reported instead of hidden.
    Conflict,
}

/// One tuple's answer in a version-2 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TupleAck {
    pub ack: Ack,
    pub outcome: TupleOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplyOutcome {
    /// Version 1: every tuple is stored; one ack per tuple, in request order.
    Stored(Vec<Ack>),
    /// Version 2: every tuple is answered, in request order, under the
    /// epoch of the store the batch was written to (never 0).
    StoredUnder { epoch: u64, acks: Vec<TupleAck> },
    /// The cloud could not store the batch now (its cache is down); the
    /// edge keeps the tuples and sends them again.
    RetryLater(String),
    /// The request broke the protocol. Sending it again will not help.
    Rejected(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchReply {
    pub version: WireVersion,
    pub request_id: u64,
    pub outcome: ReplyOutcome,
}

fn check_tuple(tuple: &TupleOut) -> Result<(), String> {
    if !tuple.average_w.is_finite() || tuple.average_w < 0.0 {
        return Err(format!(
            "tuple {} has average {}",
            tuple.tuple_id, tuple.average_w
        ));
    }
    if tuple.samples == 0 || tuple.samples > WINDOW_SAMPLES_MAX {
        return Err(format!(
            "tuple {} has {} samples",
            tuple.tuple_id, tuple.samples
        ));
    }
    if tuple.window_start_ms.rem_euclid(5_000) != 0 {
        return Err(format!(
            "tuple {} window {} is not aligned to 5 s",
            tuple.tuple_id, tuple.window_start_ms
        ));
    }
    Ok(())
}

impl BatchRequest {
    pub fn encode(&self) -> Vec<u8> {
        assert!(!self.tuples.is_empty(), "encoding an empty batch");
        assert!(
            self.tuples.len() <= BATCH_TUPLES_MAX,
            "batch over its limit"
        );
        let mut out = Vec::with_capacity(32 + self.tuples.len() * 112);
        out.extend_from_slice(&self.version.request_magic());
        put_id(&mut out, &self.edge_id);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.extend_from_slice(&(self.tuples.len() as u16).to_be_bytes());
        for tuple in &self.tuples {
            assert!(check_tuple(tuple).is_ok(), "encoding an invalid tuple");
            out.extend_from_slice(&tuple.tuple_id.to_be_bytes());
            put_id(&mut out, &tuple.node_id);
            out.extend_from_slice(&tuple.window_start_ms.to_be_bytes());
            out.extend_from_slice(&tuple.average_w.to_bits().to_be_bytes());
            out.extend_from_slice(&tuple.samples.to_be_bytes());
        }
        assert!(out.len() <= crate::FRAME_BYTES_MAX);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BatchRequest, DecodeError> {
        check_size(bytes)?;
        let mut reader = Reader::new(bytes);
        let version = match reader.take(4)? {
            magic if magic == REQUEST_MAGIC => WireVersion::V1,
            magic if magic == REQUEST_MAGIC_V2 => WireVersion::V2,
            _ => return Err(invalid("not a version-1 or version-2 batch request")),
        };
        let edge_id = reader.id()?;
        let request_id = reader.u64()?;
        let count = reader.u16()? as usize;
        if count == 0 || count > BATCH_TUPLES_MAX {
            return Err(invalid(format!(
                "batch of {count} tuples (1..={BATCH_TUPLES_MAX})"
            )));
        }
        let mut tuples = Vec::with_capacity(count);
        for _ in 0..count {
            let tuple = TupleOut {
                tuple_id: reader.i64()?,
                node_id: reader.id()?,
                window_start_ms: reader.i64()?,
                average_w: reader.f64()?,
                samples: reader.u32()?,
            };
            check_tuple(&tuple).map_err(invalid)?;
            tuples.push(tuple);
        }
        reader.finish()?;
        Ok(BatchRequest {
            version,
            edge_id,
            request_id,
            tuples,
        })
    }
}

impl BatchReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.version.reply_magic());
        out.extend_from_slice(&self.request_id.to_be_bytes());
        match &self.outcome {
            ReplyOutcome::Stored(acks) => {
                assert!(acks.len() <= BATCH_TUPLES_MAX, "reply over its limit");
                assert_eq!(
                    self.version,
                    WireVersion::V1,
                    "acks without outcomes are version 1"
                );
                out.push(0);
                out.extend_from_slice(&(acks.len() as u16).to_be_bytes());
                for ack in acks {
                    out.extend_from_slice(&ack.tuple_id.to_be_bytes());
                    out.extend_from_slice(&ack.postal_code.as_bytes());
                }
            }
            ReplyOutcome::StoredUnder { epoch, acks } => {
                assert!(acks.len() <= BATCH_TUPLES_MAX, "reply over its limit");
                assert_eq!(self.version, WireVersion::V2, "outcomes are version 2");
                assert_ne!(*epoch, 0, "a stored batch has a known epoch");
                out.push(0);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&(acks.len() as u16).to_be_bytes());
                for tuple in acks {
                    out.extend_from_slice(&tuple.ack.tuple_id.to_be_bytes());
                    out.extend_from_slice(&tuple.ack.postal_code.as_bytes());
                    out.push(match tuple.outcome {
                        TupleOutcome::Stored => 0,
                        TupleOutcome::Conflict => 1,
                    });
                }
            }
            ReplyOutcome::RetryLater(reason) => {
                out.push(1);
                put_text(&mut out, reason);
            }
            ReplyOutcome::Rejected(reason) => {
                out.push(2);
                put_text(&mut out, reason);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BatchReply, DecodeError> {
        check_size(bytes)?;
        let mut reader = Reader::new(bytes);
        let version = match reader.take(4)? {
            magic if magic == REPLY_MAGIC => WireVersion::V1,
            magic if magic == REPLY_MAGIC_V2 => WireVersion::V2,
            _ => return Err(invalid("not a version-1 or version-2 batch reply")),
        };
        let request_id = reader.u64()?;
        let outcome = match (reader.u8()?, version) {
            (0, WireVersion::V1) => ReplyOutcome::Stored(decode_acks(&mut reader)?),
            (0, WireVersion::V2) => decode_stored_under(&mut reader)?,
            (1, _) => ReplyOutcome::RetryLater(reader.text()?),
            (2, _) => ReplyOutcome::Rejected(reader.text()?),
            (status, _) => return Err(invalid(format!("unknown reply status {status}"))),
        };
        reader.finish()?;
        Ok(BatchReply {
            version,
            request_id,
            outcome,
        })
    }
}

/// The ack count, checked against its limit before anything is allocated.
fn ack_count(reader: &mut Reader<'_>) -> Result<usize, DecodeError> {
    let count = reader.u16()? as usize;
    if count > BATCH_TUPLES_MAX {
        return Err(invalid(format!("reply of {count} acks")));
    }
    Ok(count)
}

fn decode_ack(reader: &mut Reader<'_>) -> Result<Ack, DecodeError> {
    let tuple_id = reader.i64()?;
    let digits: [u8; 5] = reader.take(5)?.try_into().expect("took five bytes");
    let postal_code =
        PostalCode::from_bytes(digits).ok_or_else(|| invalid("postal code is not five digits"))?;
    Ok(Ack {
        tuple_id,
        postal_code,
    })
}

fn decode_acks(reader: &mut Reader<'_>) -> Result<Vec<Ack>, DecodeError> {
    let count = ack_count(reader)?;
    let mut acks = Vec::with_capacity(count);
    for _ in 0..count {
        acks.push(decode_ack(reader)?);
    }
    Ok(acks)
}

fn decode_stored_under(reader: &mut Reader<'_>) -> Result<ReplyOutcome, DecodeError> {
    let epoch = reader.u64()?;
    if epoch == 0 {
        return Err(invalid("a stored batch names epoch 0"));
    }
    let count = ack_count(reader)?;
    let mut acks = Vec::with_capacity(count);
    for _ in 0..count {
        let ack = decode_ack(reader)?;
        let outcome = match reader.u8()? {
            0 => TupleOutcome::Stored,
            1 => TupleOutcome::Conflict,
            other => return Err(invalid(format!("unknown tuple outcome {other}"))),
        };
        acks.push(TupleAck { ack, outcome });
    }
    Ok(ReplyOutcome::StoredUnder { epoch, acks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tuple(tuple_id: i64) -> TupleOut {
        TupleOut {
            tuple_id,
            node_id: "8c345400feac".into(),
            window_start_ms: 1_577_145_600_000,
            average_w: 249.05,
            samples: 3,
        }
    }

    #[test]
    fn request_round_trips() {
        let request = BatchRequest {
            version: WireVersion::V1,
            edge_id: "edge-1".into(),
            request_id: 7,
            tuples: vec![tuple(1), tuple(2)],
        };
        assert_eq!(BatchRequest::decode(&request.encode()).unwrap(), request);
    }

    #[test]
    fn reply_round_trips() {
        let code = PostalCode::parse("10115").unwrap();
        for outcome in [
            ReplyOutcome::Stored(vec![Ack {
                tuple_id: 1,
                postal_code: code,
            }]),
            ReplyOutcome::RetryLater("cache down".into()),
            ReplyOutcome::Rejected("bad".into()),
        ] {
            let reply = BatchReply {
                version: WireVersion::V1,
                request_id: 9,
                outcome,
            };
            assert_eq!(BatchReply::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn refuses_broken_requests() {
        let good = BatchRequest {
            version: WireVersion::V1,
            edge_id: "e".into(),
            request_id: 1,
            tuples: vec![tuple(1)],
        }
        .encode();
        assert_eq!(
            BatchRequest::decode(&good[..good.len() - 1]),
            Err(DecodeError::Incomplete)
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            BatchRequest::decode(&trailing),
            Err(DecodeError::Invalid(_))
        ));
        let mut empty = good[..4 + 2 + 8].to_vec();
        empty.extend_from_slice(&0u16.to_be_bytes());
        assert!(matches!(
            BatchRequest::decode(&empty),
            Err(DecodeError::Invalid(_))
        ));
        let huge = vec![0u8; crate::FRAME_BYTES_MAX + 1];
        assert!(matches!(
            BatchRequest::decode(&huge),
            Err(DecodeError::TooLarge { .. })
        ));
        // A NaN average is refused even when the layout is intact.
        let mut nan = good.clone();
        let average_at = good.len() - 4 - 8;
        nan[average_at..average_at + 8].copy_from_slice(&f64::NAN.to_bits().to_be_bytes());
        assert!(matches!(
            BatchRequest::decode(&nan),
            Err(DecodeError::Invalid(_))
        ));
    }

    /// Goal: a batch holds at most `BATCH_TUPLES_MAX` tuples on both ends.
    /// Method: a request and a reply that declare one more are refused,
    /// and exactly the limit decodes.
    #[test]
    fn a_batch_over_its_tuple_limit_is_refused() {
        let full = BatchRequest {
            version: WireVersion::V1,
            edge_id: "e".into(),
            request_id: 1,
            tuples: (0..BATCH_TUPLES_MAX as i64).map(tuple).collect(),
        };
        let encoded = full.encode();
        assert!(encoded.len() <= crate::FRAME_BYTES_MAX);
        assert_eq!(BatchRequest::decode(&encoded).unwrap(), full);
        // The count field sits after the magic, the id and the request id.
        let count_at = 4 + 1 + 1 + 8;
        let mut over = encoded.clone();
        over[count_at..count_at + 2].copy_from_slice(&(BATCH_TUPLES_MAX as u16 + 1).to_be_bytes());
        over.extend_from_slice(&encoded[encoded.len() - (encoded.len() - 16) / BATCH_TUPLES_MAX..]);
        let refused = BatchRequest::decode(&over).unwrap_err();
        assert!(
            matches!(&refused, DecodeError::Invalid(reason) if reason.contains("1025 tuples")),
            "{refused:?}"
        );

        let code = PostalCode::parse("10115").unwrap();
        let acks = |count: usize| {
            (0..count as i64)
                .map(|tuple_id| Ack {
                    tuple_id,
                    postal_code: code,
                })
                .collect::<Vec<_>>()
        };
        let reply = BatchReply {
            version: WireVersion::V1,
            request_id: 1,
            outcome: ReplyOutcome::Stored(acks(BATCH_TUPLES_MAX)),
        };
        let encoded = reply.encode();
        assert_eq!(BatchReply::decode(&encoded).unwrap(), reply);
        let mut over = encoded.clone();
        let count_at = 4 + 8 + 1;
        over[count_at..count_at + 2].copy_from_slice(&(BATCH_TUPLES_MAX as u16 + 1).to_be_bytes());
        over.extend_from_slice(&encoded[encoded.len() - 13..]);
        assert!(matches!(
            BatchReply::decode(&over),
            Err(DecodeError::Invalid(reason)) if reason.contains("1025 acks")
        ));
    }

    #[test]
    #[should_panic(expected = "batch over its limit")]
    fn encoding_a_batch_over_its_limit_is_a_bug() {
        BatchRequest {
            version: WireVersion::V1,
            edge_id: "e".into(),
            request_id: 1,
            tuples: (0..=BATCH_TUPLES_MAX as i64).map(tuple).collect(),
        }
        .encode();
    }

    #[test]
    fn a_window_holds_at_most_its_sample_limit() {
        let mut at_limit = tuple(1);
        at_limit.samples = WINDOW_SAMPLES_MAX;
        assert!(check_tuple(&at_limit).is_ok());
        let mut over = tuple(1);
        over.samples = WINDOW_SAMPLES_MAX + 1;
        let bytes = BatchRequest {
            version: WireVersion::V1,
            edge_id: "e".into(),
            request_id: 1,
            tuples: vec![at_limit],
        }
        .encode();
        // Samples are the request's last four bytes.
        let mut forged = bytes.clone();
        let samples_at = forged.len() - 4;
        forged[samples_at..].copy_from_slice(&over.samples.to_be_bytes());
        assert!(BatchRequest::decode(&bytes).is_ok());
        assert!(matches!(
            BatchRequest::decode(&forged),
            Err(DecodeError::Invalid(reason)) if reason.contains("5001 samples")
        ));
    }

    /// Found by the `edge_reply` fuzz target: a reason that is not UTF-8
    /// was repaired on decode, so the reply re-encoded to other bytes.
    #[test]
    fn a_reply_reason_must_be_utf8() {
        let crash = b"EMA\x01\x00\x00\x00\x00\x00\x00\x00\x02\x01\x00\x0acache do\x89\x91";
        assert!(matches!(
            BatchReply::decode(crash),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reply = BatchReply {
            version: WireVersion::V1,
            request_id: 1,
            outcome: ReplyOutcome::RetryLater("é".repeat(40_000)),
        };
        let decoded = BatchReply::decode(&reply.encode()).unwrap();
        let ReplyOutcome::RetryLater(reason) = decoded.outcome else {
            panic!()
        };
        assert_eq!(reason.len(), 65_534);
    }

    /// Goal: the version-2 forms round-trip with their epoch and each
    /// tuple's outcome, and a version-2 reply never names epoch 0.
    #[test]
    fn version_two_round_trips_with_epoch_and_outcomes() {
        let request = BatchRequest {
            version: WireVersion::V2,
            edge_id: "edge-1".into(),
            request_id: 7,
            tuples: vec![tuple(1), tuple(2)],
        };
        let encoded = request.encode();
        assert_eq!(&encoded[..4], b"EMQ\x02");
        assert_eq!(BatchRequest::decode(&encoded).unwrap(), request);
        let code = PostalCode::parse("10115").unwrap();
        let acks = vec![
            TupleAck {
                ack: Ack {
                    tuple_id: 1,
                    postal_code: code,
                },
                outcome: TupleOutcome::Stored,
            },
            TupleAck {
                ack: Ack {
                    tuple_id: 2,
                    postal_code: code,
                },
                outcome: TupleOutcome::Conflict,
            },
        ];
        for outcome in [
            ReplyOutcome::StoredUnder {
                epoch: u64::MAX,
                acks: acks.clone(),
            },
            ReplyOutcome::RetryLater("cache down".into()),
            ReplyOutcome::Rejected("bad".into()),
        ] {
            let reply = BatchReply {
                version: WireVersion::V2,
                request_id: 9,
                outcome,
            };
            let encoded = reply.encode();
            assert_eq!(&encoded[..4], b"EMA\x02");
            assert_eq!(BatchReply::decode(&encoded).unwrap(), reply);
        }
        let stored = BatchReply {
            version: WireVersion::V2,
            request_id: 9,
            outcome: ReplyOutcome::StoredUnder { epoch: 5, acks },
        }
        .encode();
        let epoch_at = 4 + 8 + 1;
        let mut zero = stored.clone();
        zero[epoch_at..epoch_at + 8].copy_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            BatchReply::decode(&zero),
            Err(DecodeError::Invalid(reason)) if reason.contains("epoch 0")
        ));
        let mut unknown = stored.clone();
        *unknown.last_mut().unwrap() = 2;
        assert!(matches!(
            BatchReply::decode(&unknown),
            Err(DecodeError::Invalid(reason)) if reason.contains("outcome 2")
        ));
        assert_eq!(
            BatchReply::decode(&stored[..stored.len() - 1]),
            Err(DecodeError::Incomplete)
        );
        // A version-1 body under a version-2 magic is not a reply.
        let mut v1_body = BatchReply {
            version: WireVersion::V1,
            request_id: 9,
            outcome: ReplyOutcome::Stored(vec![acks_v1(code)]),
        }
        .encode();
        v1_body[3] = 2;
        assert!(BatchReply::decode(&v1_body).is_err());
    }

    fn acks_v1(postal_code: PostalCode) -> Ack {
        Ack {
            tuple_id: 1,
            postal_code,
        }
    }

    /// Goal: a version-2 reply declaring more acks than a batch holds is
    /// refused before anything is allocated for them.
    #[test]
    fn a_version_two_reply_over_its_limit_is_refused() {
        let mut over = REPLY_MAGIC_V2.to_vec();
        over.extend_from_slice(&1u64.to_be_bytes());
        over.push(0);
        over.extend_from_slice(&3u64.to_be_bytes());
        over.extend_from_slice(&(BATCH_TUPLES_MAX as u16 + 1).to_be_bytes());
        assert!(matches!(
            BatchReply::decode(&over),
            Err(DecodeError::Invalid(reason)) if reason.contains("1025 acks")
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = BatchRequest::decode(&bytes);
            if let Ok(reply) = BatchReply::decode(&bytes) {
                prop_assert_eq!(reply.encode(), bytes.clone());
            }
            for magic in [REQUEST_MAGIC, REQUEST_MAGIC_V2, REPLY_MAGIC_V2] {
                let mut prefixed = magic.to_vec();
                prefixed.extend_from_slice(&bytes);
                let _ = BatchRequest::decode(&prefixed);
                if let Ok(reply) = BatchReply::decode(&prefixed) {
                    prop_assert_eq!(reply.encode(), prefixed.clone());
                }
            }
        }
    }
}
