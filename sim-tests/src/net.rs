//! Length-prefixed frames over turmoil TCP, shared by every simulated
//! protocol (broker, link, Redis), and the connect helper with its timeout.
//!
//! turmoil's TCP never retransmits: a segment dropped by a partition leaves a
//! gap that stalls the stream forever, and a write can wait forever for
//! flow-control credit. So every read, write and connect in the simulation
//! runs under a timeout chosen by its caller; nothing here waits unbounded
//! except [`read_frame`], which callers wrap.
//!
//! A frame is `u32 length | body`, written with one `write_all` so that it
//! travels as one segment. A clean EOF before a frame is `Ok(None)`; an EOF
//! inside a frame is an error.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use turmoil::net::TcpStream;

/// The largest frame body. A link frame carries an 8-byte request id plus
/// one `edgemeter-wire` message of at most `FRAME_BYTES_MAX`; broker and
/// Redis frames are bounded by their own batch limits well below this.
pub const FRAME_BYTES_MAX: usize = edgemeter_wire::FRAME_BYTES_MAX + 1024;

/// How long a connect may take. A partitioned link refuses at once in
/// turmoil; a held one would wait, and this bounds that.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, body: &[u8]) -> io::Result<()> {
    if body.len() > FRAME_BYTES_MAX {
        return Err(crate::codec::invalid(format!(
            "frame of {} bytes exceeds {FRAME_BYTES_MAX}",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    writer.write_all(&frame).await
}

/// Reads one frame; `None` on a clean EOF between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let first = reader.read(&mut header).await?;
    if first == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut header[first..]).await?;
    let length = u32::from_be_bytes(header) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(crate::codec::invalid(format!(
            "frame of {length} bytes exceeds {FRAME_BYTES_MAX}"
        )));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Connects to `host:port` on the simulated network within [`CONNECT_TIMEOUT`].
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// One request and its reply on a connection used by one caller at a time.
/// Any error or timeout leaves the connection in an unknown state: the
/// caller must drop it.
pub async fn call(stream: &mut TcpStream, request: &[u8], limit: Duration) -> io::Result<Vec<u8>> {
    let exchange = async {
        write_frame(stream, request).await?;
        read_frame(stream)
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"))
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time")),
    }
}
