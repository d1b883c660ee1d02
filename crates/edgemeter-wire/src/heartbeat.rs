//! Heartbeats: the original's bare `heartbeat`, and ours, which names the
//! edge so the cloud can tell which edge went quiet. Both get `ack`.

use crate::frame::{check_size, invalid, put_id, DecodeError, Reader};

pub const HEARTBEAT_MAGIC: [u8; 4] = *b"EMH\x01";
pub const LEGACY_HEARTBEAT: &[u8] = b"heartbeat";
pub const HEARTBEAT_REPLY: &[u8] = b"ack";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatRequest {
    /// The original's request: no edge id.
    Legacy,
    Edge {
        edge_id: String,
    },
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
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<HeartbeatRequest, DecodeError> {
        check_size(bytes)?;
        if bytes == LEGACY_HEARTBEAT {
            return Ok(HeartbeatRequest::Legacy);
        }
        let mut reader = Reader::new(bytes);
        if reader.take(4).ok() != Some(&HEARTBEAT_MAGIC[..]) {
            return Err(invalid("not a heartbeat"));
        }
        let edge_id = reader.id()?;
        reader.finish()?;
        Ok(HeartbeatRequest::Edge { edge_id })
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
}
