//! Heartbeats: the original's bare `heartbeat`, ours, which names the edge
//! so the cloud can tell which edge went quiet, and ours in version 2,
//! whose reply also carries the cloud store's epoch.
//!
//! Requests:
//! ```text
//! "heartbeat"                                 the original's; reply "ack"
//! "EMH" 0x01 | edge_id (u8 len + bytes)       reply "ack"
//! "EMH" 0x02 | edge_id (u8 len + bytes)       reply below
//! ```
//! Version-2 reply (big-endian):
//! ```text
//! "EMK" 0x02 | epoch u64
//! ```
//! The epoch names the cloud's store: it changes when the store lost its
//! data. 0 means "unknown": the cloud could not ask its store in time, and
//! the heartbeat is answered anyway so that a slow store does not make the
//! cloud look dead.

use crate::frame::{check_size, invalid, put_id, DecodeError, Reader};

pub const HEARTBEAT_MAGIC: [u8; 4] = *b"EMH\x01";
pub const HEARTBEAT_MAGIC_V2: [u8; 4] = *b"EMH\x02";
pub const HEARTBEAT_REPLY_MAGIC_V2: [u8; 4] = *b"EMK\x02";
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
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<HeartbeatRequest, DecodeError> {
        check_size(bytes)?;
        if bytes == LEGACY_HEARTBEAT {
            return Ok(HeartbeatRequest::Legacy);
        }
        let mut reader = Reader::new(bytes);
        let magic = reader.take(4).ok();
        let version_two = if magic == Some(&HEARTBEAT_MAGIC[..]) {
            false
        } else if magic == Some(&HEARTBEAT_MAGIC_V2[..]) {
            true
        } else {
            return Err(invalid("not a heartbeat"));
        };
        let edge_id = reader.id()?;
        reader.finish()?;
        Ok(if version_two {
            HeartbeatRequest::EdgeV2 { edge_id }
        } else {
            HeartbeatRequest::Edge { edge_id }
        })
    }

    /// The edge a request names, if any.
    pub fn edge_id(&self) -> Option<&str> {
        match self {
            HeartbeatRequest::Legacy => None,
            HeartbeatRequest::Edge { edge_id } | HeartbeatRequest::EdgeV2 { edge_id } => {
                Some(edge_id)
            }
        }
    }
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
}
