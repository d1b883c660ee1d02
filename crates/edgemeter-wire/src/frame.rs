//! The byte cursor and size limits shared by the binary messages.
//!
//! Decoding is two-phase in spirit: every read checks that the bytes are
//! there before it takes them, and every length is checked against its limit
//! before anything is allocated.

use std::fmt;

/// The largest request or reply on any edge-cloud socket. A full batch
/// ([`crate::batch::BATCH_TUPLES_MAX`] tuples of at most ~170 bytes) fits
/// with room to spare; anything larger is refused unread.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

/// Why bytes did not decode into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the message does.
    Incomplete,
    /// The message is larger than its limit.
    TooLarge { bytes: usize, limit: usize },
    /// The bytes are complete but break the layout.
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => write!(f, "message is truncated"),
            DecodeError::TooLarge { bytes, limit } => {
                write!(f, "message of {bytes} bytes exceeds the limit of {limit}")
            }
            DecodeError::Invalid(reason) => write!(f, "invalid message: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(reason.into())
}

/// Reads fixed-width big-endian fields off a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    pub(crate) fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .position
            .checked_add(count)
            .ok_or(DecodeError::Incomplete)?;
        if end > self.bytes.len() {
            return Err(DecodeError::Incomplete);
        }
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let bytes: [u8; 4] = self.take(4)?.try_into().expect("took four bytes");
        Ok(u32::from_be_bytes(bytes))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().expect("took eight bytes");
        Ok(u64::from_be_bytes(bytes))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }

    pub(crate) fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// A string with a one-byte length prefix, checked as an id.
    pub(crate) fn id(&mut self) -> Result<String, DecodeError> {
        let length = self.u8()? as usize;
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes).map_err(|_| invalid("id is not UTF-8"))?;
        crate::check_id(text).map_err(invalid)?;
        Ok(text.to_owned())
    }

    /// A UTF-8 string with a two-byte length prefix. Invalid UTF-8 is
    /// refused rather than repaired, so that one reply has one reading.
    pub(crate) fn text(&mut self) -> Result<String, DecodeError> {
        let length = self.u16()? as usize;
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| invalid("text is not UTF-8"))
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.position != self.bytes.len() {
            return Err(invalid(format!(
                "{} trailing bytes",
                self.bytes.len() - self.position
            )));
        }
        Ok(())
    }
}

/// Appends fixed-width big-endian fields.
pub(crate) fn put_id(out: &mut Vec<u8>, id: &str) {
    assert!(crate::check_id(id).is_ok(), "encoding an invalid id {id:?}");
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
}

/// Appends a string with a two-byte length prefix, cut at a character
/// boundary if it is longer than the prefix can say.
pub(crate) fn put_text(out: &mut Vec<u8>, text: &str) {
    let mut length = text.len().min(u16::MAX as usize);
    while !text.is_char_boundary(length) {
        length -= 1;
    }
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..length]);
}

pub(crate) fn check_size(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            bytes: bytes.len(),
            limit: FRAME_BYTES_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::{open_reply, open_request, seal_reply, seal_request, AuthError};
    use crate::{
        BatchReply, BatchRequest, DataRequest, EdgeKey, HeartbeatReply, HeartbeatRequest,
        LegacyDataRequest,
    };

    fn too_large<T: std::fmt::Debug>(decoded: Result<T, DecodeError>) -> bool {
        matches!(
            decoded,
            Err(DecodeError::TooLarge {
                bytes,
                limit: FRAME_BYTES_MAX
            }) if bytes == FRAME_BYTES_MAX + 1
        )
    }

    /// Goal: no decoder a peer can reach reads past the frame limit.
    /// Method: one byte over the limit must be refused as too large by each;
    /// at the limit each must get past the size check to its layout checks.
    #[test]
    fn every_decoder_refuses_a_frame_over_the_limit() {
        let over = vec![b' '; FRAME_BYTES_MAX + 1];
        assert!(too_large(BatchRequest::decode(&over)));
        assert!(too_large(BatchReply::decode(&over)));
        assert!(too_large(HeartbeatRequest::decode(&over)));
        assert!(too_large(HeartbeatReply::decode(&over)));
        assert!(too_large(LegacyDataRequest::decode(&over)));
        assert!(too_large(DataRequest::decode(&over)));
        let key = EdgeKey::from_bytes([1; 32]);
        assert!(matches!(
            open_request(&over, |_| Some(key.clone()), 0, 1),
            Err(AuthError::Malformed(DecodeError::TooLarge { .. }))
        ));
        assert!(matches!(
            open_reply(&over, &key, &[0; 32]),
            Err(AuthError::Malformed(DecodeError::TooLarge { .. }))
        ));

        let at_limit = vec![b' '; FRAME_BYTES_MAX];
        assert!(matches!(
            BatchRequest::decode(&at_limit),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            LegacyDataRequest::decode(&at_limit),
            Err(DecodeError::Invalid(_))
        ));
        // A sealed message whose envelope pushes it over the limit is refused
        // as a whole, even though its body alone would fit.
        let (sealed, tag) = seal_request("edge-1", &key, 0, &at_limit);
        assert!(matches!(
            open_request(&sealed, |_| Some(key.clone()), 0, 1),
            Err(AuthError::Malformed(DecodeError::TooLarge { .. }))
        ));
        let reply = seal_reply(&key, &tag, &at_limit);
        assert!(matches!(
            open_reply(&reply, &key, &tag),
            Err(AuthError::Malformed(DecodeError::TooLarge { .. }))
        ));
    }
}
