//! What the NNG link and the NNG server share: addresses, ports, the socket
//! options both ends set, and the error a socket that cannot be set up gives.
//!
//! Both ends set their options explicitly rather than trusting NNG's
//! defaults, so that a reader sees every limit and timer in one place.

use std::fmt;
use std::time::Duration;

/// The cloud's heartbeat socket, as in the original system.
pub const HEARTBEAT_PORT_DEFAULT: u16 = 63270;

/// The cloud's data socket, as in the original system.
pub const DATA_PORT_DEFAULT: u16 = 63271;

/// The largest message an NNG socket of ours accepts; NNG closes the
/// connection of a peer that sends more, before buffering it. It is twice
/// [`edgemeter_wire::FRAME_BYTES_MAX`] so that a request just over the frame
/// limit still reaches the cloud, which answers it with an error reply and
/// counts it, while memory per request stays bounded.
pub const MESSAGE_BYTES_MAX: usize = 2 * edgemeter_wire::FRAME_BYTES_MAX;

/// The first delay before NNG redials a peer that went away: short, so that
/// a restarted cloud is found again within a heartbeat or two.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);

/// The longest delay between NNG's redials; it doubles up to this.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// `tcp://host:port`, with an IPv6 literal in brackets.
pub fn tcp_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    }
}

/// An NNG socket that could not be opened, dialed or bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NngSetupError {
    /// The URL the socket was for.
    pub url: String,
    /// What was being done: "open", "dial", "listen", "configure".
    pub action: &'static str,
    pub reason: String,
}

impl NngSetupError {
    pub fn new(url: &str, action: &'static str, error: nng::Error) -> NngSetupError {
        NngSetupError {
            url: url.to_owned(),
            action,
            reason: error.to_string(),
        }
    }
}

impl fmt::Display for NngSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} NNG socket {}: {}",
            self.action, self.url, self.reason
        )?;
        if self.action == "listen" {
            write!(
                f,
                "; is another cloud already listening there? pass --listen ADDR or other --heartbeat-port/--data-port"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for NngSetupError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_literals() {
        assert_eq!(tcp_url("127.0.0.1", 63270), "tcp://127.0.0.1:63270");
        assert_eq!(tcp_url("::1", 1), "tcp://[::1]:1");
        assert_eq!(tcp_url("[::1]", 1), "tcp://[::1]:1");
        assert_eq!(tcp_url("cloud.local", 2), "tcp://cloud.local:2");
    }
}
