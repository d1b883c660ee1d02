//! The Rust edge's data request: a versioned batch of tuples, and its reply.
//!
//! Request (big-endian), version 1, 2 or 3 (the same tuples; the version
//! says which reply the edge understands, and version 3 names the edge
//! process):
//! ```text
//! "EMQ" 0x01|0x02 | edge_id (u8 len + bytes) | request_id u64 | count u16 |
//! count x ( tuple_id i64 | node_id (u8 len + bytes) | window_start_ms i64 |
//!           average_w f64 | samples u32 )
//! "EMQ" 0x03 | edge_id (u8 len + bytes) | instance u64 (non-zero) |
//!   request_id u64 | count u16 | count x ( the same tuple )
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
//! Reply to a version-3 request:
//! ```text
//! "EMA" 0x03 | request_id u64 | status u8 |
//!   status 0 (stored): buckets u8 (1..=16) |
//!     buckets x ( bucket u8 | epoch u64 (non-zero) ), buckets ascending |
//!     count u16 | count x ( tuple_id i64 | postal code | outcome u8 )
//!   status 1 (retry later), 2 (rejected) or 3 (refused: another live
//!     instance holds the edge id): reason (u16 len + bytes)
//! ```
//! The epoch names the cloud store the batch was written to: a store that
//! lost its data gets a new one, which tells the edge to ship again what it
//! had acknowledged under the old one. Version 3 names one epoch per store
//! bucket the batch touched ([`crate::bucket`]), which is the epoch each of
//! its tuples is stored under (a tuple's bucket is that of its household);
//! version 2 names the digest of all the buckets' epochs.
//!
//! Compatibility: a cloud of this version answers all three versions. A
//! cloud of the previous version refuses version 3 as malformed, with a
//! version-1 rejection: an edge speaks version 3 only to a cloud that
//! answered its version-4 heartbeat.
//!
//! A tuple is identified by `(edge_id, node_id, window_start_ms)`, which is
//! what makes a resent batch harmless: the cloud stores each identity once.
//! `tuple_id` is the edge's row id, echoed so the edge can update its rows.

use crate::bucket::STORE_BUCKETS;
use crate::frame::{check_size, invalid, put_id, put_text, DecodeError, Reader};
use crate::PostalCode;
use std::collections::BTreeMap;

pub const REQUEST_MAGIC: [u8; 4] = *b"EMQ\x01";
pub const REPLY_MAGIC: [u8; 4] = *b"EMA\x01";
pub const REQUEST_MAGIC_V2: [u8; 4] = *b"EMQ\x02";
pub const REPLY_MAGIC_V2: [u8; 4] = *b"EMA\x02";
pub const REQUEST_MAGIC_V3: [u8; 4] = *b"EMQ\x03";
pub const REPLY_MAGIC_V3: [u8; 4] = *b"EMA\x03";

/// Which layout a batch request or reply has. A reply has its request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireVersion {
    /// Postal codes only: what EdgeMeter edges before store epochs speak.
    V1,
    /// Postal codes, per-tuple outcomes and the store epoch.
    V2,
    /// The edge's instance; per-bucket store epochs and a refusal.
    V3,
}

impl WireVersion {
    fn request_magic(self) -> [u8; 4] {
        match self {
            WireVersion::V1 => REQUEST_MAGIC,
            WireVersion::V2 => REQUEST_MAGIC_V2,
            WireVersion::V3 => REQUEST_MAGIC_V3,
        }
    }

    fn reply_magic(self) -> [u8; 4] {
        match self {
            WireVersion::V1 => REPLY_MAGIC,
            WireVersion::V2 => REPLY_MAGIC_V2,
            WireVersion::V3 => REPLY_MAGIC_V3,
        }
    }

    /// The version a magic names, request or reply.
    fn of_magic(magic: &[u8], request: bool) -> Option<WireVersion> {
        [WireVersion::V1, WireVersion::V2, WireVersion::V3]
            .into_iter()
            .find(|version| {
                let own = if request {
                    version.request_magic()
                } else {
                    version.reply_magic()
                };
                magic == own
            })
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
    /// The edge process (version 3, non-zero); 0 in versions 1 and 2,
    /// which do not carry it.
    pub instance: u64,
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
    /// Version 3: every tuple is answered, in request order; `epochs`
    /// names, for each bucket the batch touched, the epoch its tuples are
    /// stored under (never 0).
    StoredInBuckets {
        epochs: BTreeMap<u16, u64>,
        acks: Vec<TupleAck>,
    },
    /// The request broke the protocol. Sending it again will not help.
    Rejected(String),
    /// Version 3: another live instance holds this edge id's lease. The
    /// edge keeps the tuples and waits until its heartbeats are accepted.
    Refused(String),
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
        let mut out = Vec::with_capacity(40 + self.tuples.len() * 112);
        out.extend_from_slice(&self.version.request_magic());
        put_id(&mut out, &self.edge_id);
        if self.version == WireVersion::V3 {
            assert_ne!(self.instance, 0, "a version-3 batch names its instance");
            out.extend_from_slice(&self.instance.to_be_bytes());
        } else {
            assert_eq!(self.instance, 0, "only version 3 carries an instance");
        }
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
        let Some(version) = WireVersion::of_magic(reader.take(4)?, true) else {
            return Err(invalid("not a version-1, 2 or 3 batch request"));
        };
        let edge_id = reader.id()?;
        let instance = match version {
            WireVersion::V3 => match reader.u64()? {
                0 => return Err(invalid("a version-3 batch names instance 0")),
                instance => instance,
            },
            _ => 0,
        };
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
            instance,
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
                put_tuple_acks(&mut out, acks);
            }
            ReplyOutcome::StoredInBuckets { epochs, acks } => {
                assert!(acks.len() <= BATCH_TUPLES_MAX, "reply over its limit");
                assert_eq!(self.version, WireVersion::V3, "bucket epochs are version 3");
                assert!(!epochs.is_empty() && epochs.len() <= STORE_BUCKETS);
                out.push(0);
                out.push(epochs.len() as u8);
                for (&bucket, &epoch) in epochs {
                    assert!(usize::from(bucket) < STORE_BUCKETS, "bucket {bucket}");
                    assert_ne!(epoch, 0, "a stored bucket has a known epoch");
                    out.push(bucket as u8);
                    out.extend_from_slice(&epoch.to_be_bytes());
                }
                put_tuple_acks(&mut out, acks);
            }
            ReplyOutcome::RetryLater(reason) => {
                out.push(1);
                put_text(&mut out, reason);
            }
            ReplyOutcome::Rejected(reason) => {
                out.push(2);
                put_text(&mut out, reason);
            }
            ReplyOutcome::Refused(reason) => {
                assert_eq!(self.version, WireVersion::V3, "refusals are version 3");
                out.push(3);
                put_text(&mut out, reason);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BatchReply, DecodeError> {
        check_size(bytes)?;
        let mut reader = Reader::new(bytes);
        let Some(version) = WireVersion::of_magic(reader.take(4)?, false) else {
            return Err(invalid("not a version-1, 2 or 3 batch reply"));
        };
        let request_id = reader.u64()?;
        let outcome = match (reader.u8()?, version) {
            (0, WireVersion::V1) => ReplyOutcome::Stored(decode_acks(&mut reader)?),
            (0, WireVersion::V2) => decode_stored_under(&mut reader)?,
            (0, WireVersion::V3) => decode_stored_in_buckets(&mut reader)?,
            (1, _) => ReplyOutcome::RetryLater(reader.text()?),
            (2, _) => ReplyOutcome::Rejected(reader.text()?),
            (3, WireVersion::V3) => ReplyOutcome::Refused(reader.text()?),
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

fn put_tuple_acks(out: &mut Vec<u8>, acks: &[TupleAck]) {
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

fn decode_stored_under(reader: &mut Reader<'_>) -> Result<ReplyOutcome, DecodeError> {
    let epoch = reader.u64()?;
    if epoch == 0 {
        return Err(invalid("a stored batch names epoch 0"));
    }
    let acks = decode_tuple_acks(reader)?;
    Ok(ReplyOutcome::StoredUnder { epoch, acks })
}

/// The bucket epochs of a version-3 reply: 1 to [`STORE_BUCKETS`] of them,
/// ascending by bucket (so each once, and the encoding is canonical),
/// none 0.
fn decode_stored_in_buckets(reader: &mut Reader<'_>) -> Result<ReplyOutcome, DecodeError> {
    let count = usize::from(reader.u8()?);
    if count == 0 || count > STORE_BUCKETS {
        return Err(invalid(format!("a stored batch names {count} buckets")));
    }
    let mut epochs = BTreeMap::new();
    for _ in 0..count {
        let bucket = u16::from(reader.u8()?);
        let epoch = reader.u64()?;
        if usize::from(bucket) >= STORE_BUCKETS {
            return Err(invalid(format!("bucket {bucket} out of range")));
        }
        if epochs
            .last_key_value()
            .is_some_and(|(&last, _)| last >= bucket)
        {
            return Err(invalid("buckets not ascending"));
        }
        if epoch == 0 {
            return Err(invalid(format!("bucket {bucket} stored under epoch 0")));
        }
        epochs.insert(bucket, epoch);
    }
    let acks = decode_tuple_acks(reader)?;
    Ok(ReplyOutcome::StoredInBuckets { epochs, acks })
}

fn decode_tuple_acks(reader: &mut Reader<'_>) -> Result<Vec<TupleAck>, DecodeError> {
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
    Ok(acks)
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
            instance: 0,
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
            instance: 0,
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
            instance: 0,
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
            instance: 0,
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
            instance: 0,
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
            instance: 0,
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
            for magic in [REQUEST_MAGIC, REQUEST_MAGIC_V2, REQUEST_MAGIC_V3, REPLY_MAGIC_V2, REPLY_MAGIC_V3] {
                let mut prefixed = magic.to_vec();
                prefixed.extend_from_slice(&bytes);
                let _ = BatchRequest::decode(&prefixed);
                if let Ok(reply) = BatchReply::decode(&prefixed) {
                    prop_assert_eq!(reply.encode(), prefixed.clone());
                }
            }
        }
    }

    fn answers(outcomes: &[TupleOutcome]) -> Vec<TupleAck> {
        let code = PostalCode::parse("10115").unwrap();
        outcomes
            .iter()
            .enumerate()
            .map(|(index, &outcome)| TupleAck {
                ack: Ack {
                    tuple_id: index as i64 + 1,
                    postal_code: code,
                },
                outcome,
            })
            .collect()
    }

    /// Goal: version 3 round-trips with its instance, its bucket epochs
    /// and every status, the refusal included; instance 0, a bucket out of
    /// range, buckets out of order, an epoch 0, no bucket at all and a
    /// refusal under an older version are refused; the older versions
    /// still decode beside it. Method: encode, decode, every prefix, and
    /// forged bytes at the fields' offsets.
    #[test]
    fn version_three_round_trips_with_instance_and_bucket_epochs() {
        let request = BatchRequest {
            version: WireVersion::V3,
            edge_id: "edge-1".into(),
            instance: u64::MAX,
            request_id: 7,
            tuples: vec![tuple(1), tuple(2)],
        };
        let encoded = request.encode();
        assert_eq!(&encoded[..4], b"EMQ\x03");
        assert_eq!(BatchRequest::decode(&encoded).unwrap(), request);
        for cut in 0..encoded.len() {
            assert!(BatchRequest::decode(&encoded[..cut]).is_err(), "{cut}");
        }
        let instance_at = 4 + 1 + 6;
        let mut no_instance = encoded.clone();
        no_instance[instance_at..instance_at + 8].copy_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            BatchRequest::decode(&no_instance),
            Err(DecodeError::Invalid(reason)) if reason.contains("instance 0")
        ));
        let epochs = BTreeMap::from([(0, 5), (7, u64::MAX), (15, 1)]);
        let acks = answers(&[TupleOutcome::Stored, TupleOutcome::Conflict]);
        for outcome in [
            ReplyOutcome::StoredInBuckets {
                epochs: epochs.clone(),
                acks: acks.clone(),
            },
            ReplyOutcome::RetryLater("cache down".into()),
            ReplyOutcome::Rejected("bad".into()),
            ReplyOutcome::Refused("another instance".into()),
        ] {
            let reply = BatchReply {
                version: WireVersion::V3,
                request_id: 9,
                outcome,
            };
            let encoded = reply.encode();
            assert_eq!(&encoded[..4], b"EMA\x03");
            assert_eq!(BatchReply::decode(&encoded).unwrap(), reply);
        }
        let stored = BatchReply {
            version: WireVersion::V3,
            request_id: 9,
            outcome: ReplyOutcome::StoredInBuckets { epochs, acks },
        }
        .encode();
        for cut in 0..stored.len() {
            assert!(BatchReply::decode(&stored[..cut]).is_err(), "{cut}");
        }
        // Status at 12, bucket count at 13, then (bucket, epoch) at 14.
        let forge = |at: usize, bytes: &[u8]| {
            let mut forged = stored.clone();
            forged[at..at + bytes.len()].copy_from_slice(bytes);
            BatchReply::decode(&forged)
        };
        assert!(forge(13, &[0]).is_err(), "no bucket");
        assert!(forge(13, &[17]).is_err(), "more buckets than there are");
        assert!(forge(14, &[16]).is_err(), "bucket out of range");
        assert!(forge(23, &[0]).is_err(), "bucket 0 after bucket 0");
        assert!(forge(15, &0u64.to_be_bytes()).is_err(), "epoch 0");
        let refusal = BatchReply {
            version: WireVersion::V3,
            request_id: 9,
            outcome: ReplyOutcome::Refused("x".into()),
        }
        .encode();
        let mut old_refusal = refusal.clone();
        old_refusal[3] = 2;
        assert!(
            BatchReply::decode(&old_refusal).is_err(),
            "refusals are version 3"
        );
        // The older versions, as older edges send them, still decode.
        let v2 = BatchRequest {
            version: WireVersion::V2,
            edge_id: "edge-1".into(),
            instance: 0,
            request_id: 7,
            tuples: vec![tuple(1)],
        };
        assert_eq!(BatchRequest::decode(&v2.encode()).unwrap(), v2);
        assert_eq!(&v2.encode()[..4], b"EMQ\x02");
    }

    #[test]
    #[should_panic(expected = "only version 3 carries an instance")]
    fn an_instance_in_an_older_version_is_a_bug() {
        BatchRequest {
            version: WireVersion::V2,
            edge_id: "e".into(),
            instance: 3,
            request_id: 1,
            tuples: vec![tuple(1)],
        }
        .encode();
    }
}
