//! `edgemeter households --mosaik ADDR`: the household replay as a mosaik
//! simulator. mosaik starts the command with the address of its own socket
//! (`%(addr)s` in the scenario's `sim_config`), and the simulator dials it.
//! Then each message is a call: the simulator's state
//! ([`edgemeter_mosaik::Simulator`]) answers it, the readings it returns are
//! handed to the Kafka producer in order, and the reply goes back. `stop`
//! flushes the producer and ends the command.
//!
//! This module only moves bytes: what a call means is in `edgemeter-mosaik`.

use crate::households::{ReadingSink, SinkError};
use edgemeter_mosaik::frame::body_length;
use edgemeter_mosaik::{Message, Simulator};
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the first connection to mosaik may take: mosaik waits for its
/// simulators for its own start timeout (10 s by default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Adapter inputs refused are logged one by one up to this many, then only
/// counted: a broken foreign simulator must not flood the log.
const REFUSED_LOGGED_MAX: u64 = 10;

#[derive(Debug)]
pub enum MosaikError {
    Connect { addr: String, reason: String },
    Connection(String),
    Sink(SinkError),
}

impl fmt::Display for MosaikError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MosaikError::Connect { addr, reason } => write!(
                f,
                "cannot reach mosaik at {addr}: {reason}; mosaik passes its address as %(addr)s \
                 in the scenario's sim_config (\"cmd\": \"edgemeter households --mosaik %(addr)s ...\")"
            ),
            MosaikError::Connection(reason) => write!(f, "mosaik connection: {reason}"),
            MosaikError::Sink(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for MosaikError {}

/// What one co-simulation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CosimOutcome {
    pub calls: u64,
    pub published: u64,
    pub refused: u64,
}

/// Serves mosaik's calls until it says `stop` (or closes the connection).
pub async fn serve<S: ReadingSink>(
    addr: &str,
    mut simulator: Simulator,
    sink: &mut S,
) -> Result<CosimOutcome, MosaikError> {
    let connecting = TcpStream::connect(addr);
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| MosaikError::Connect {
            addr: addr.to_owned(),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        })?
        .map_err(|error| MosaikError::Connect {
            addr: addr.to_owned(),
            reason: error.to_string(),
        })?;
    tracing::info!(addr, "connected to mosaik");
    let mut outcome = CosimOutcome::default();
    while let Some(message) = read_message(&mut stream).await? {
        let Message::Request {
            id,
            function,
            args,
            kwargs,
        } = message
        else {
            // Replies come only to requests of ours, and we make none.
            continue;
        };
        outcome.calls += 1;
        let answer = simulator.handle(&function, &args, &kwargs);
        for reason in &answer.refused {
            outcome.refused += 1;
            if outcome.refused <= REFUSED_LOGGED_MAX {
                tracing::warn!(%reason, "adapter input refused, nothing published");
            }
        }
        for reading in &answer.publish {
            sink.publish(reading).await.map_err(MosaikError::Sink)?;
            outcome.published += 1;
        }
        if answer.stop {
            break;
        }
        let reply = match answer.reply {
            Some(Ok(value)) => Message::Success { id, value },
            Some(Err(error)) => {
                tracing::warn!(function, %error, "mosaik call failed");
                Message::Failure { id, error }
            }
            None => Message::Success {
                id,
                value: serde_json::Value::Null,
            },
        };
        stream
            .write_all(&reply.encode())
            .await
            .map_err(|error| MosaikError::Connection(error.to_string()))?;
    }
    sink.flush().await.map_err(MosaikError::Sink)?;
    tracing::info!(
        calls = outcome.calls,
        published = outcome.published,
        refused = outcome.refused,
        "mosaik stopped the co-simulation"
    );
    Ok(outcome)
}

/// One message, or `None` on a clean close between messages.
async fn read_message(stream: &mut TcpStream) -> Result<Option<Message>, MosaikError> {
    let broken = |error: std::io::Error| MosaikError::Connection(error.to_string());
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(broken(error)),
    }
    let length = body_length(header).map_err(|error| MosaikError::Connection(error.to_string()))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.map_err(broken)?;
    Message::decode(&body)
        .map(Some)
        .map_err(|error| MosaikError::Connection(error.to_string()))
}
