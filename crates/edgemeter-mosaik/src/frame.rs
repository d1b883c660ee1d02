//! One mosaik message: `u32` big-endian length, then that many bytes of
//! JSON `[type, id, content]`. A request's content is `[function, args,
//! kwargs]`; a success reply's is the function's return value; a failure
//! reply's is an error text. Sizes are checked before anything is kept.

use serde_json::Value;
use std::fmt;

/// The largest message taken from mosaik: its own packet limit (10 MiB,
/// `max_packet_size` of its simulator connections). A `step` carries the
/// inputs of every connected entity, which stays far below.
pub const MESSAGE_BYTES_MAX: usize = 10 * 1024 * 1024;

pub const REQUEST: u8 = 0;
pub const SUCCESS: u8 = 1;
pub const FAILURE: u8 = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: u64,
        function: String,
        args: Vec<Value>,
        kwargs: serde_json::Map<String, Value>,
    },
    Success {
        id: u64,
        value: Value,
    },
    Failure {
        id: u64,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The length prefix names more than [`MESSAGE_BYTES_MAX`].
    TooLarge(usize),
    /// Not `[type, id, content]` of a known type.
    Invalid(String),
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::TooLarge(bytes) => write!(
                f,
                "mosaik message of {bytes} bytes exceeds {MESSAGE_BYTES_MAX}"
            ),
            MessageError::Invalid(reason) => write!(f, "not a mosaik message: {reason}"),
        }
    }
}

impl std::error::Error for MessageError {}

/// The body length a 4-byte header announces, refused above the bound.
pub fn body_length(header: [u8; 4]) -> Result<usize, MessageError> {
    let length = u32::from_be_bytes(header) as usize;
    if length > MESSAGE_BYTES_MAX {
        return Err(MessageError::TooLarge(length));
    }
    Ok(length)
}

impl Message {
    /// The message with its length prefix, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let value = match self {
            Message::Request {
                id,
                function,
                args,
                kwargs,
            } => serde_json::json!([REQUEST, id, [function, args, kwargs]]),
            Message::Success { id, value } => serde_json::json!([SUCCESS, id, value]),
            Message::Failure { id, error } => serde_json::json!([FAILURE, id, error]),
        };
        let body = serde_json::to_vec(&value).expect("a JSON value encodes");
        assert!(
            body.len() <= MESSAGE_BYTES_MAX,
            "reply over the message bound"
        );
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Message, MessageError> {
        if body.len() > MESSAGE_BYTES_MAX {
            return Err(MessageError::TooLarge(body.len()));
        }
        let invalid = |reason: &str| MessageError::Invalid(reason.to_owned());
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| MessageError::Invalid(error.to_string()))?;
        let Value::Array(mut parts) = value else {
            return Err(invalid("not a JSON array"));
        };
        if parts.len() != 3 {
            return Err(invalid("not three parts"));
        }
        let content = parts.pop().expect("three parts");
        let id = parts[1]
            .as_u64()
            .ok_or_else(|| invalid("id is not an integer"))?;
        match parts[0].as_u64() {
            Some(0) => {
                let Value::Array(call) = content else {
                    return Err(invalid(
                        "a request's content is not [function, args, kwargs]",
                    ));
                };
                let mut call = call.into_iter();
                let function = match call.next() {
                    Some(Value::String(function)) => function,
                    _ => return Err(invalid("a request names no function")),
                };
                let args = match call.next() {
                    Some(Value::Array(args)) => args,
                    None => Vec::new(),
                    _ => return Err(invalid("a request's args are not a list")),
                };
                let kwargs = match call.next() {
                    Some(Value::Object(kwargs)) => kwargs,
                    None => serde_json::Map::new(),
                    _ => return Err(invalid("a request's kwargs are not an object")),
                };
                Ok(Message::Request {
                    id,
                    function,
                    args,
                    kwargs,
                })
            }
            Some(1) => Ok(Message::Success { id, value: content }),
            Some(2) => Ok(Message::Failure {
                id,
                error: content.as_str().unwrap_or_default().to_owned(),
            }),
            _ => Err(invalid("unknown message type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_decodes_and_a_reply_encodes_with_its_length() {
        let body = br#"[0, 7, ["step", [10, {}, 299], {}]]"#;
        let Message::Request {
            id, function, args, ..
        } = Message::decode(body).unwrap()
        else {
            panic!("a request");
        };
        assert_eq!((id, function.as_str(), args.len()), (7, "step", 3));
        let reply = Message::Success {
            id: 7,
            value: serde_json::json!(12),
        }
        .encode();
        assert_eq!(&reply[..4], &(reply.len() as u32 - 4).to_be_bytes());
        assert_eq!(
            Message::decode(&reply[4..]).unwrap(),
            Message::Success {
                id: 7,
                value: serde_json::json!(12)
            }
        );
    }

    #[test]
    fn bad_messages_are_named() {
        for bad in [
            &b"{}"[..],
            b"[0, 1]",
            b"[9, 1, 2]",
            b"[0, -1, []]",
            b"[0, 1, [3]]",
            b"nope",
        ] {
            assert!(
                matches!(Message::decode(bad), Err(MessageError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            body_length((MESSAGE_BYTES_MAX as u32 + 1).to_be_bytes()),
            Err(MessageError::TooLarge(MESSAGE_BYTES_MAX + 1))
        );
        assert_eq!(body_length(5u32.to_be_bytes()), Ok(5));
    }
}
