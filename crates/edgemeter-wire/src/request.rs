//! One data socket serves two request forms: ours starts with the three
//! magic bytes `EMQ` of [`crate::batch::REQUEST_MAGIC`] (then its version,
//! 1, 2 or 3); anything else is read as the original's JSON.

use crate::batch::REQUEST_MAGIC;
use crate::{BatchRequest, DecodeError, LegacyDataRequest};

#[derive(Debug, Clone, PartialEq)]
pub enum DataRequest {
    Batch(BatchRequest),
    Legacy(LegacyDataRequest),
}

impl DataRequest {
    pub fn decode(bytes: &[u8]) -> Result<DataRequest, DecodeError> {
        if bytes.starts_with(&REQUEST_MAGIC[..3]) {
            return BatchRequest::decode(bytes).map(DataRequest::Batch);
        }
        LegacyDataRequest::decode(bytes).map(DataRequest::Legacy)
    }
}
