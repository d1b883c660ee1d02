//! `CommandError`: why a subcommand stopped. Each variant prints as one
//! line that names the thing that failed and, for start-up failures, the
//! fix; `main` prints it and exits non-zero.

use crate::households::SinkError;
use edgemeter_data::DataError;
use edgemeter_edge::{EdgeError, StoreError};
use edgemeter_kafka::bus::BrokerSetupError;
use edgemeter_nng::setup::NngSetupError;
use edgemeter_redis::cache::RedisSetupError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub enum CommandError {
    Data(DataError),
    Broker(BrokerSetupError),
    Redis(RedisSetupError),
    Nng(NngSetupError),
    Store {
        path: PathBuf,
        error: StoreError,
    },
    Edge(EdgeError),
    Sink(SinkError),
    /// The mosaik co-simulation could not be joined or broke off.
    Mosaik(crate::mosaik_link::MosaikError),
    /// `demo --exit-when-done` saw no acknowledgement for too long.
    Stalled {
        acked: u64,
        expected: u64,
        waited: Duration,
    },
    /// A task of ours ended in a way it never should (a panic).
    TaskFailed(String),
    /// A setting or a file named on the command line is wrong or missing;
    /// the text names it and the fix.
    Config(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Data(error) => error.fmt(f),
            CommandError::Broker(error) => error.fmt(f),
            CommandError::Redis(error) => error.fmt(f),
            CommandError::Nng(error) => error.fmt(f),
            CommandError::Store {
                path,
                error: error @ StoreError::Foreign(_),
            } => write!(f, "edge database {}: {error}", path.display()),
            CommandError::Store { path, error } => write!(
                f,
                "edge database {}: {error}; check the path and its directory's permissions, or pass another --db",
                path.display()
            ),
            CommandError::Edge(error) => write!(f, "the edge stopped: {error}"),
            CommandError::Sink(error) => write!(f, "publishing readings failed: {error}"),
            CommandError::Mosaik(error) => error.fmt(f),
            CommandError::Stalled {
                acked,
                expected,
                waited,
            } => write!(
                f,
                "no progress for {waited:?}: {acked} of {expected} tuples acknowledged; see the log above"
            ),
            CommandError::TaskFailed(reason) => write!(f, "internal task failed: {reason}"),
            CommandError::Config(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for CommandError {}

impl From<DataError> for CommandError {
    fn from(error: DataError) -> Self {
        CommandError::Data(error)
    }
}

impl From<BrokerSetupError> for CommandError {
    fn from(error: BrokerSetupError) -> Self {
        CommandError::Broker(error)
    }
}

impl From<RedisSetupError> for CommandError {
    fn from(error: RedisSetupError) -> Self {
        CommandError::Redis(error)
    }
}

impl From<NngSetupError> for CommandError {
    fn from(error: NngSetupError) -> Self {
        CommandError::Nng(error)
    }
}

impl From<EdgeError> for CommandError {
    fn from(error: EdgeError) -> Self {
        CommandError::Edge(error)
    }
}

impl From<crate::mosaik_link::MosaikError> for CommandError {
    fn from(error: crate::mosaik_link::MosaikError) -> CommandError {
        CommandError::Mosaik(error)
    }
}

impl From<SinkError> for CommandError {
    fn from(error: SinkError) -> Self {
        CommandError::Sink(error)
    }
}

impl CommandError {
    pub fn config(reason: impl Into<String>) -> CommandError {
        CommandError::Config(reason.into())
    }

    pub fn store(path: &std::path::Path) -> impl FnOnce(StoreError) -> CommandError + '_ {
        move |error| CommandError::Store {
            path: path.to_owned(),
            error,
        }
    }
}
