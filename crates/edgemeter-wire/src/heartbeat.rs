//! Heartbeats: the original's bare `heartbeat`, ours, which names the edge
//! so the cloud can tell which edge went quiet, ours in version 2, whose
//! reply also carries the cloud store's epoch, ours in version 3, which
//! also tells the cloud the edge's backlog, and ours in version 4, which
//! also names the edge process (`instance`) and is answered with every
//! store bucket's epoch, or with a refusal.
//!
//! Requests (big-endian):
//! ```text
//! "heartbeat"                                 the original's; reply "ack"
//! "EMH" 0x01 | edge_id (u8 len + bytes)       reply "ack"
//! "EMH" 0x02 | edge_id (u8 len + bytes)       reply version 2
//! "EMH" 0x03 | edge_id (u8 len + bytes) | queued u64 | sent u64 |
//!   oldest_unacked_age_ms u64                 reply version 2
//! "EMH" 0x04 | edge_id (u8 len + bytes) | instance u64 | queued u64 |
//!   sent u64 | oldest_unacked_age_ms u64      reply version 3
//! ```
//! `queued` and `sent` are the edge's tuples at flags 0 and 1, and
//! `oldest_unacked_age_ms` how long ago the oldest of them was queued (0
//! when there is none). Version 3 is answered with the version-2 reply:
//! the reply has nothing new to say. `instance` (version 4) is a random
//! non-zero u64 an edge process draws once at its start: the cloud's store
//! holds a lease on the edge id for the instance that heartbeats, so a
//! second process with the same id is refused.
//!
//! Compatibility: a cloud of this version answers all five forms. A cloud
//! of a previous version refuses version 4 (and the one before it version
//! 3) as malformed, with an error reply; an edge of this version then falls
//! back one version at a time (and tries the newest again now and then,
//! see `edgemeter-edge`'s `heartbeat`), so the cloud can be upgraded after
//! its edges.
//!
//! Version-2 reply (big-endian):
//! ```text
//! "EMK" 0x02 | epoch u64
//! ```
//! The epoch names the cloud's store: it changes when the store lost its
//! data. 0 means "unknown": the cloud could not ask its store in time, and
//! the heartbeat is answered anyway so that a slow store does not make the
//! cloud look dead. A cloud with store buckets answers with the digest of
//! the buckets' epochs ([`crate::bucket::epochs_digest`]): any bucket's
//! loss changes it.
//!
//! Version-3 reply (big-endian):
//! ```text
//! "EMK" 0x03 | status u8 | count u8 | count x epoch u64
//!   status 0 (accepted): count = STORE_BUCKETS, the epoch of each bucket
//!     in bucket order, 0 = that bucket's epoch is unknown now
//!   status 1 (refused): count = 0; another live instance holds this edge
//!     id's lease
//! ```

use crate::bucket::STORE_BUCKETS;
use crate::frame::{check_size, invalid, put_id, DecodeError, Reader};

pub const HEARTBEAT_MAGIC: [u8; 4] = *b"EMH\x01";
pub const HEARTBEAT_MAGIC_V2: [u8; 4] = *b"EMH\x02";
pub const HEARTBEAT_MAGIC_V3: [u8; 4] = *b"EMH\x03";
pub const HEARTBEAT_MAGIC_V4: [u8; 4] = *b"EMH\x04";
pub const HEARTBEAT_REPLY_MAGIC_V2: [u8; 4] = *b"EMK\x02";
pub const HEARTBEAT_REPLY_MAGIC_V3: [u8; 4] = *b"EMK\x03";
pub const LEGACY_HEARTBEAT: &[u8] = b"heartbeat";
pub const HEARTBEAT_REPLY: &[u8] = b"ack";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatRequest {
    /// The original's request: no edge id.
    Legacy,
    /// Version 1: answered with `ack`.
    Edge { edge_id: String },
    /// Version 2: answered with a [`HeartbeatReply`].
    EdgeV2 { edge_id: String },
    /// Version 3: version 2 with the edge's backlog; answered with a
    /// [`HeartbeatReply`].
    EdgeV3 { edge_id: String, backlog: Backlog },
    /// Version 4: version 3 with the edge process's instance (non-zero);
    /// answered with a [`BucketHeartbeatReply`].
    EdgeV4 {
        edge_id: String,
        instance: u64,
        backlog: Backlog,
    },
}

/// What an edge still holds for the cloud, as it reports in its heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Tuples queued, not sent yet (flag 0).
    pub queued: u64,
    /// Tuples sent and not acknowledged yet (flag 1).
    pub sent: u64,
    /// How long ago the oldest unacknowledged tuple was queued, in ms; 0
    /// when there is none.
    pub oldest_unacked_age_ms: u64,
}

impl Backlog {
    /// Every tuple not acknowledged yet.
    pub fn unacked(&self) -> u64 {
        self.queued.saturating_add(self.sent)
    }
}

impl HeartbeatRequest {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HeartbeatRequest::Legacy => LEGACY_HEARTBEAT.to_vec(),
            HeartbeatRequest::Edge { edge_id } => {
                let mut out = HEARTBEAT_MAGIC.to_vec();
                put_id(&mut out, edge_id);
                out
            }
            HeartbeatRequest::EdgeV2 { edge_id } => {
                let mut out = HEARTBEAT_MAGIC_V2.to_vec();
                put_id(&mut out, edge_id);
                out
            }
            HeartbeatRequest::EdgeV3 { edge_id, backlog } => {
                let mut out = HEARTBEAT_MAGIC_V3.to_vec();
                put_id(&mut out, edge_id);
                put_backlog(&mut out, backlog);
                out
            }
            HeartbeatRequest::EdgeV4 {
                edge_id,
                instance,
                backlog,
            } => {
                assert_ne!(*instance, 0, "instance 0 is no instance");
                let mut out = HEARTBEAT_MAGIC_V4.to_vec();
                put_id(&mut out, edge_id);
                out.extend_from_slice(&instance.to_be_bytes());
                put_backlog(&mut out, backlog);
                out
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<HeartbeatRequest, DecodeError> {
        check_size(bytes)?;
        if bytes == LEGACY_HEARTBEAT {
            return Ok(HeartbeatRequest::Legacy);
        }
        let mut reader = Reader::new(bytes);
        let magic = reader.take(4).ok();
        let version = match magic {
            Some(magic) if magic == HEARTBEAT_MAGIC => 1,
            Some(magic) if magic == HEARTBEAT_MAGIC_V2 => 2,
            Some(magic) if magic == HEARTBEAT_MAGIC_V3 => 3,
            Some(magic) if magic == HEARTBEAT_MAGIC_V4 => 4,
            _ => return Err(invalid("not a heartbeat")),
        };
        let edge_id = reader.id()?;
        let request = match version {
            1 => HeartbeatRequest::Edge { edge_id },
            2 => HeartbeatRequest::EdgeV2 { edge_id },
            3 => HeartbeatRequest::EdgeV3 {
                edge_id,
                backlog: read_backlog(&mut reader)?,
            },
            _ => {
                let instance = reader.u64()?;
                if instance == 0 {
                    return Err(invalid("a version-4 heartbeat names instance 0"));
                }
                HeartbeatRequest::EdgeV4 {
                    edge_id,
                    instance,
                    backlog: read_backlog(&mut reader)?,
                }
            }
        };
        reader.finish()?;
        Ok(request)
    }

    /// The backlog a request reports (versions 3 and 4).
    pub fn backlog(&self) -> Option<Backlog> {
        match self {
            HeartbeatRequest::EdgeV3 { backlog, .. } | HeartbeatRequest::EdgeV4 { backlog, .. } => {
                Some(*backlog)
            }
            _ => None,
        }
    }

    /// The edge process a request names (version 4 only; never 0).
    pub fn instance(&self) -> Option<u64> {
        match self {
            HeartbeatRequest::EdgeV4 { instance, .. } => Some(*instance),
            _ => None,
        }
    }

    /// Whether the request expects the single-epoch [`HeartbeatReply`]
    /// rather than `ack` (versions 2 and 3).
    pub fn wants_epoch(&self) -> bool {
        matches!(
            self,
            HeartbeatRequest::EdgeV2 { .. } | HeartbeatRequest::EdgeV3 { .. }
        )
    }

    /// Whether the request expects a [`BucketHeartbeatReply`] (version 4).
    pub fn wants_bucket_epochs(&self) -> bool {
        matches!(self, HeartbeatRequest::EdgeV4 { .. })
    }

    /// The edge a request names, if any.
    pub fn edge_id(&self) -> Option<&str> {
        match self {
            HeartbeatRequest::Legacy => None,
            HeartbeatRequest::Edge { edge_id }
            | HeartbeatRequest::EdgeV2 { edge_id }
            | HeartbeatRequest::EdgeV3 { edge_id, .. }
            | HeartbeatRequest::EdgeV4 { edge_id, .. } => Some(edge_id),
        }
    }
}

fn put_backlog(out: &mut Vec<u8>, backlog: &Backlog) {
    out.extend_from_slice(&backlog.queued.to_be_bytes());
    out.extend_from_slice(&backlog.sent.to_be_bytes());
    out.extend_from_slice(&backlog.oldest_unacked_age_ms.to_be_bytes());
}

fn read_backlog(reader: &mut Reader<'_>) -> Result<Backlog, DecodeError> {
    let backlog = Backlog {
        queued: reader.u64()?,
        sent: reader.u64()?,
        oldest_unacked_age_ms: reader.u64()?,
    };
    if backlog.unacked() == 0 && backlog.oldest_unacked_age_ms != 0 {
        return Err(invalid("an age of the oldest tuple with no tuple pending"));
    }
    Ok(backlog)
}

/// The cloud's answer to a version-2 heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The store's epoch, or `None` when the cloud could not tell in time.
    pub epoch: Option<u64>,
}

impl HeartbeatReply {
    pub fn encode(&self) -> Vec<u8> {
        assert_ne!(self.epoch, Some(0), "epoch 0 is the wire's unknown");
        let mut out = HEARTBEAT_REPLY_MAGIC_V2.to_vec();
        out.extend_from_slice(&self.epoch.unwrap_or(0).to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<HeartbeatReply, DecodeError> {
        check_size(bytes)?;
        let mut reader = Reader::new(bytes);
        if reader.take(4)? != HEARTBEAT_REPLY_MAGIC_V2 {
            return Err(invalid("not a version-2 heartbeat reply"));
        }
        let epoch = reader.u64()?;
        reader.finish()?;
        Ok(HeartbeatReply {
            epoch: (epoch != 0).then_some(epoch),
        })
    }
}

/// The cloud's answer to a version-4 heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketHeartbeatReply {
    /// The instance holds the edge id's lease. Each bucket's epoch in
    /// bucket order; 0 where the cloud could not tell in time.
    Accepted { epochs: [u64; STORE_BUCKETS] },
    /// Another live instance holds the edge id's lease: this process must
    /// not consume, commit or ship until it is accepted.
    Refused,
}

impl BucketHeartbeatReply {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = HEARTBEAT_REPLY_MAGIC_V3.to_vec();
        match self {
            BucketHeartbeatReply::Accepted { epochs } => {
                out.push(0);
                out.push(STORE_BUCKETS as u8);
                for epoch in epochs {
                    out.extend_from_slice(&epoch.to_be_bytes());
                }
            }
            BucketHeartbeatReply::Refused => {
                out.push(1);
                out.push(0);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BucketHeartbeatReply, DecodeError> {
        check_size(bytes)?;
        let mut reader = Reader::new(bytes);
        if reader.take(4)? != HEARTBEAT_REPLY_MAGIC_V3 {
            return Err(invalid("not a version-3 heartbeat reply"));
        }
        let status = reader.u8()?;
        let count = usize::from(reader.u8()?);
        let reply = match (status, count) {
            (0, STORE_BUCKETS) => {
                let mut epochs = [0u64; STORE_BUCKETS];
                for epoch in &mut epochs {
                    *epoch = reader.u64()?;
                }
                BucketHeartbeatReply::Accepted { epochs }
            }
            (1, 0) => BucketHeartbeatReply::Refused,
            (0 | 1, count) => {
                return Err(invalid(format!(
                    "heartbeat reply status {status} with {count} epochs"
                )))
            }
            (status, _) => return Err(invalid(format!("unknown heartbeat status {status}"))),
        };
        reader.finish()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_decode() {
        assert_eq!(
            HeartbeatRequest::decode(b"heartbeat").unwrap(),
            HeartbeatRequest::Legacy
        );
        let ours = HeartbeatRequest::Edge {
            edge_id: "edge-7".into(),
        };
        assert_eq!(HeartbeatRequest::decode(&ours.encode()).unwrap(), ours);
        assert!(HeartbeatRequest::decode(b"heartbeat!").is_err());
        assert!(HeartbeatRequest::decode(b"").is_err());
    }

    /// Goal: version 3 round-trips with its backlog, extremes included;
    /// the older forms still decode as themselves beside it; a request cut
    /// short anywhere, or with a byte more, is refused, and so is an age
    /// with nothing pending. Method: encode, decode, and every prefix.
    #[test]
    fn version_three_carries_the_backlog_and_the_old_forms_still_parse() {
        let backlogs = [
            Backlog::default(),
            Backlog {
                queued: 3,
                sent: 1_024,
                oldest_unacked_age_ms: 61_000,
            },
            Backlog {
                queued: u64::MAX,
                sent: u64::MAX,
                oldest_unacked_age_ms: u64::MAX,
            },
        ];
        for backlog in backlogs {
            let request = HeartbeatRequest::EdgeV3 {
                edge_id: "edge-7".into(),
                backlog,
            };
            let encoded = request.encode();
            assert_eq!(&encoded[..4], b"EMH\x03");
            assert_eq!(encoded.len(), 4 + 1 + 6 + 24);
            let decoded = HeartbeatRequest::decode(&encoded).unwrap();
            assert_eq!(decoded, request);
            assert_eq!(decoded.backlog(), Some(backlog));
            assert_eq!(decoded.edge_id(), Some("edge-7"));
            assert!(decoded.wants_epoch());
            for cut in 0..encoded.len() {
                assert!(
                    HeartbeatRequest::decode(&encoded[..cut]).is_err(),
                    "{cut} bytes decoded"
                );
            }
            let mut trailing = encoded.clone();
            trailing.push(0);
            assert!(HeartbeatRequest::decode(&trailing).is_err());
        }
        let mut ageless = HeartbeatRequest::EdgeV3 {
            edge_id: "e".into(),
            backlog: Backlog::default(),
        }
        .encode();
        *ageless.last_mut().unwrap() = 1;
        assert!(HeartbeatRequest::decode(&ageless).is_err());
        // The older forms, byte for byte as older edges send them.
        assert_eq!(
            HeartbeatRequest::decode(b"heartbeat").unwrap(),
            HeartbeatRequest::Legacy
        );
        let v1 = HeartbeatRequest::decode(b"EMH\x01\x06edge-7").unwrap();
        assert_eq!(
            v1,
            HeartbeatRequest::Edge {
                edge_id: "edge-7".into()
            }
        );
        assert!(!v1.wants_epoch() && v1.backlog().is_none());
        let v2 = HeartbeatRequest::decode(b"EMH\x02\x06edge-7").unwrap();
        assert_eq!(
            v2,
            HeartbeatRequest::EdgeV2 {
                edge_id: "edge-7".into()
            }
        );
        assert!(v2.wants_epoch() && v2.backlog().is_none());
        assert!(HeartbeatRequest::decode(b"EMH\x05\x06edge-7").is_err());
    }

    /// Goal: version 2 round-trips on both sides, "unknown" travels as 0,
    /// and broken replies are refused.
    #[test]
    fn version_two_carries_the_epoch() {
        let request = HeartbeatRequest::EdgeV2 {
            edge_id: "edge-7".into(),
        };
        let encoded = request.encode();
        assert_eq!(&encoded[..4], b"EMH\x02");
        assert_eq!(HeartbeatRequest::decode(&encoded).unwrap(), request);
        assert_eq!(request.edge_id(), Some("edge-7"));
        for epoch in [Some(1), Some(u64::MAX), None] {
            let reply = HeartbeatReply { epoch };
            assert_eq!(HeartbeatReply::decode(&reply.encode()).unwrap(), reply);
        }
        let known = HeartbeatReply { epoch: Some(9) }.encode();
        assert_eq!(
            HeartbeatReply::decode(&known[..known.len() - 1]),
            Err(DecodeError::Incomplete)
        );
        let mut trailing = known.clone();
        trailing.push(0);
        assert!(HeartbeatReply::decode(&trailing).is_err());
        assert!(HeartbeatReply::decode(HEARTBEAT_REPLY).is_err());
    }

    /// Goal: version 4 round-trips with its instance and backlog; instance
    /// 0 is refused; a request cut short anywhere, or with a byte more, is
    /// refused; it asks for the bucket reply, not the single epoch.
    /// Method: encode, decode, every prefix, and forged fields.
    #[test]
    fn version_four_carries_the_instance() {
        let request = HeartbeatRequest::EdgeV4 {
            edge_id: "edge-7".into(),
            instance: u64::MAX,
            backlog: Backlog {
                queued: 3,
                sent: 4,
                oldest_unacked_age_ms: 5,
            },
        };
        let encoded = request.encode();
        assert_eq!(&encoded[..4], b"EMH\x04");
        assert_eq!(encoded.len(), 4 + 1 + 6 + 8 + 24);
        let decoded = HeartbeatRequest::decode(&encoded).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(decoded.instance(), Some(u64::MAX));
        assert_eq!(decoded.backlog().unwrap().sent, 4);
        assert!(decoded.wants_bucket_epochs() && !decoded.wants_epoch());
        for cut in 0..encoded.len() {
            assert!(HeartbeatRequest::decode(&encoded[..cut]).is_err(), "{cut}");
        }
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(HeartbeatRequest::decode(&trailing).is_err());
        let mut no_instance = encoded.clone();
        no_instance[11..19].copy_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            HeartbeatRequest::decode(&no_instance),
            Err(DecodeError::Invalid(reason)) if reason.contains("instance 0")
        ));
        let older = HeartbeatRequest::EdgeV3 {
            edge_id: "edge-7".into(),
            backlog: Backlog::default(),
        };
        assert_eq!(older.instance(), None);
        assert!(!older.wants_bucket_epochs());
    }

    /// Goal: the version-3 reply round-trips accepted (with unknown
    /// buckets as 0) and refused; a count other than the status's, an
    /// unknown status, a short or long reply, and the version-2 reply are
    /// refused. Method: encode, decode, and forged bytes.
    #[test]
    fn the_bucket_reply_carries_every_epoch_or_a_refusal() {
        let mut epochs: [u64; STORE_BUCKETS] = std::array::from_fn(|bucket| bucket as u64 + 1);
        epochs[3] = 0;
        epochs[15] = u64::MAX;
        let accepted = BucketHeartbeatReply::Accepted { epochs };
        let encoded = accepted.encode();
        assert_eq!(&encoded[..4], b"EMK\x03");
        assert_eq!(encoded.len(), 4 + 2 + 8 * STORE_BUCKETS);
        assert_eq!(BucketHeartbeatReply::decode(&encoded).unwrap(), accepted);
        let refused = BucketHeartbeatReply::Refused.encode();
        assert_eq!(refused, b"EMK\x03\x01\x00");
        assert_eq!(
            BucketHeartbeatReply::decode(&refused).unwrap(),
            BucketHeartbeatReply::Refused
        );
        for cut in 0..encoded.len() {
            assert!(
                BucketHeartbeatReply::decode(&encoded[..cut]).is_err(),
                "{cut}"
            );
        }
        let mut trailing = encoded.clone();
        trailing.push(0);
        assert!(BucketHeartbeatReply::decode(&trailing).is_err());
        let mut short_count = encoded.clone();
        short_count[5] = STORE_BUCKETS as u8 - 1;
        assert!(BucketHeartbeatReply::decode(&short_count).is_err());
        assert!(BucketHeartbeatReply::decode(b"EMK\x03\x01\x01\0\0\0\0\0\0\0\0").is_err());
        assert!(BucketHeartbeatReply::decode(b"EMK\x03\x02\x00").is_err());
        let single = HeartbeatReply { epoch: Some(9) }.encode();
        assert!(BucketHeartbeatReply::decode(&single).is_err());
        assert!(HeartbeatReply::decode(&encoded).is_err());
    }
}
