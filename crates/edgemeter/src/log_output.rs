//! Where log lines go: to the systemd journal when systemd connected our
//! stderr to it, else to stderr as formatted text.
//!
//! systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose
//! output goes to the journal. The variable is inherited by children whose
//! stderr may go elsewhere, so, as systemd.exec(5) advises, it counts only
//! when it names the stderr this process has. Writing to the journal's
//! native socket keeps each event's fields (level, target, `edge`, ...)
//! as journal fields instead of one flattened text line.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    Journal,
    Stderr,
}

impl LogOutput {
    /// The journal when `JOURNAL_STREAM` names our stderr, else stderr.
    pub fn detect() -> LogOutput {
        match std::env::var("JOURNAL_STREAM") {
            Ok(stream) if stream_is_stderr(&stream) => LogOutput::Journal,
            _ => LogOutput::Stderr,
        }
    }
}

/// Whether `stream` (`<device>:<inode>`, both decimal) is this process's
/// stderr.
fn stream_is_stderr(stream: &str) -> bool {
    let Some((device, inode)) = parse_stream(stream) else {
        return false;
    };
    let stderr = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => return false,
    };
    stderr
        .metadata()
        .is_ok_and(|metadata| metadata.dev() == device && metadata.ino() == inode)
}

fn parse_stream(stream: &str) -> Option<(u64, u64)> {
    let (device, inode) = stream.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

/// Installs the global subscriber with `filter`, on the journal or stderr.
/// A journal that cannot be reached falls back to stderr, which systemd
/// still collects.
pub fn init(filter: EnvFilter) -> LogOutput {
    if LogOutput::detect() == LogOutput::Journal {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal.with_syslog_identifier("edgemeter".to_owned());
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal)
                    .init();
                return LogOutput::Journal;
            }
            Err(error) => {
                eprintln!("edgemeter: cannot log to the journal ({error}); logging to stderr");
            }
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr is a file on a full
        // disk) is lost, not reported on stderr, which would panic: the
        // edge must outlive a full disk and resume when space returns.
        .log_internal_errors(false)
        .init();
    LogOutput::Stderr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_values_parse() {
        assert_eq!(parse_stream("8:12345"), Some((8, 12345)));
        for bad in ["", "8", "8:", ":1", "a:1", "1:b", "1:2:3"] {
            assert_eq!(parse_stream(bad), None, "{bad} parsed");
        }
    }

    /// Goal: only our own stderr's identity selects the journal. Method: the
    /// test's stderr's real device and inode match; a different inode and
    /// garbage do not.
    #[test]
    fn only_our_stderr_counts_as_the_journal_stream() {
        let fd = std::io::stderr().as_fd().try_clone_to_owned().unwrap();
        let metadata = std::fs::File::from(fd).metadata().unwrap();
        let ours = format!("{}:{}", metadata.dev(), metadata.ino());
        assert!(stream_is_stderr(&ours));
        let other = format!("{}:{}", metadata.dev(), metadata.ino().wrapping_add(1));
        assert!(!stream_is_stderr(&other));
        assert!(!stream_is_stderr("garbage"));
    }
}
