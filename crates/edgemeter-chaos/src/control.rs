//! The proxy's control protocol: one command per line, one reply line each
//! (`ok` or `error: ...`). Parsing does no IO.

use std::time::Duration;

/// The longest control line accepted; a longer one is refused and the
/// control connection closed, so a client cannot make us buffer without end.
pub const CONTROL_LINE_BYTES_MAX: usize = 128;

/// The longest stall accepted: a minute is far beyond any NNG timeout we
/// want to provoke, and keeps a typo from wedging a run for hours.
pub const STALL_MS_MAX: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Close every connection and refuse new ones until `heal`.
    Cut,
    /// Stop forwarding bytes (both ways) for this long; connections stay.
    Stall(Duration),
    /// Drop every current connection; new ones are accepted.
    Reset,
    /// Undo `cut` and end any stall.
    Heal,
}

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let mut words = line.split_whitespace();
        let command = match (words.next(), words.next()) {
            (Some("cut"), None) => Command::Cut,
            (Some("reset"), None) => Command::Reset,
            (Some("heal"), None) => Command::Heal,
            (Some("stall"), Some(ms)) => {
                let ms: u64 = ms.parse().map_err(|_| format!("bad stall time {ms:?}"))?;
                if ms == 0 || ms > STALL_MS_MAX {
                    return Err(format!("stall time must be 1..={STALL_MS_MAX} ms"));
                }
                Command::Stall(Duration::from_millis(ms))
            }
            _ => {
                return Err(format!(
                    "unknown command {line:?} (cut, stall MS, reset, heal)"
                ))
            }
        };
        if words.next().is_some() {
            return Err(format!("trailing words in {line:?}"));
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_junk_is_refused() {
        assert_eq!(Command::parse("cut"), Ok(Command::Cut));
        assert_eq!(Command::parse(" heal \n"), Ok(Command::Heal));
        assert_eq!(Command::parse("reset"), Ok(Command::Reset));
        assert_eq!(
            Command::parse("stall 250"),
            Ok(Command::Stall(Duration::from_millis(250)))
        );
        for bad in [
            "",
            "cut now",
            "stall",
            "stall 0",
            "stall -1",
            "stall 60001",
            "KEYS *",
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
