//! Where readings are published: [`ReadingSink`], the one interface the
//! replay (`edgemeter households`, the demo, the mosaik simulator) writes
//! through, implemented by the Kafka producer (`edgemeter-kafka`) and by
//! [`MemLogSink`], the demo's in-process log. It lives here, beside the
//! log and the producer queue, so that neither the binary nor the Kafka
//! adapter owns the other's interface.

use crate::SharedLog;
use edgemeter_wire::Reading;
use std::fmt;
use std::future::Future;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// The in-process log is at its bound; the demo sized it for the data
    /// set, so this is a bug in the sizing.
    Full { records_max: usize },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Full { records_max } => {
                write!(f, "the in-process log is full ({records_max} records)")
            }
        }
    }
}

impl std::error::Error for SinkError {}

/// Where the replayer publishes readings.
pub trait ReadingSink: Send {
    /// Hands one reading to the bus. May wait while too many readings are
    /// unconfirmed; a broker that is down is retried, not reported.
    fn publish(&mut self, reading: &Reading) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Waits until every published reading is confirmed.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The demo's sink: the in-process log the demo's edge consumes.
pub struct MemLogSink {
    log: SharedLog,
}

impl MemLogSink {
    pub fn new(log: SharedLog) -> MemLogSink {
        MemLogSink { log }
    }
}

impl ReadingSink for MemLogSink {
    async fn publish(&mut self, reading: &Reading) -> Result<(), SinkError> {
        self.log
            .append(reading.node_id.as_bytes(), reading.encode())
            .map(|_| ())
            .map_err(|full| SinkError::Full {
                records_max: full.records_max,
            })
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
