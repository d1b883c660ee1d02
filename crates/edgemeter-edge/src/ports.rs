//! The edge's IO boundary: the readings bus, the link to the cloud and the
//! outbox store. The real implementations (rdkafka, NNG, rusqlite) and the
//! simulated ones (turmoil) live outside this crate and plug in here.

use edgemeter_wire::{TupleAck, TupleOut, STORE_BUCKETS};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

/// One record as the bus delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    /// The record's own timestamp (Kafka's CreateTime or LogAppendTime), in
    /// ms since the epoch, when the bus has one. Only the original's
    /// reading form, which carries no time of its own, reads it.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The broker cannot be reached now; the edge retries with backoff.
    Unavailable(String),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Unavailable(reason) => write!(f, "broker unavailable: {reason}"),
        }
    }
}

impl std::error::Error for BusError {}

/// The stream of household readings, consumed in a group with manual commits.
///
/// The edge drives the bus from one task of its own, so `poll` need not be
/// cancel-safe, but it must return within about a second even when nothing
/// arrives (an empty batch), so that commits are not held up.
pub trait ReadingsBus: Send + 'static {
    /// Returns up to `records_max` records in partition order, or none.
    fn poll(
        &mut self,
        records_max: usize,
    ) -> impl Future<Output = Result<Vec<BusRecord>, BusError>> + Send;

    /// Commits, per partition, the offset of the next record to read. The
    /// group resumes there after a restart.
    fn commit(
        &mut self,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Whether the consumer has read every record the broker holds: for
    /// every partition it reads, its position equals the partition's end
    /// offset (high watermark), freshly asked from the broker. Only
    /// `Ok(true)` lets the edge flush its open windows on silence; `Ok(false)`
    /// means records are still to come, and an error (no answer, a timeout)
    /// means the end could not be confirmed. Must return within a few
    /// seconds, like `poll`.
    fn at_end(&mut self) -> impl Future<Output = Result<bool, BusError>> + Send;
}

/// Which cloud socket a request goes to.
///
/// Heartbeats go to one named cloud node each, so that the edge knows every
/// node's state; data goes to whichever node the link picks, since any node
/// answers any batch (deduplication lives in the shared store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    /// The heartbeat socket of node `index`: its position in the edge's
    /// `--cloud` list, below [`CloudLink::nodes`]. A cloud's server, which
    /// is one node, serves its heartbeat socket as node 0.
    Heartbeat(usize),
    /// The data socket: spread over the nodes by the link, and resent on
    /// another node's pipe when one breaks.
    Data,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// No reply within the edge's request timeout.
    Timeout,
    /// The cloud cannot be reached, or the connection broke.
    Unreachable(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Timeout => write!(f, "request timed out"),
            LinkError::Unreachable(reason) => write!(f, "cloud unreachable: {reason}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Request/reply to the cloud with NNG REQ semantics: the transport may
/// resend a request on its own (after a broken connection or its resend
/// timer), so the cloud can see one request twice. Many requests may be in
/// flight at once; each call is one request.
///
/// A link reaches one or more cloud nodes, numbered from 0 in the order the
/// edge was given them. The defaults describe a link to a single node.
pub trait CloudLink: Send + Sync + 'static {
    /// How many cloud nodes the link reaches: the edge runs one heartbeat
    /// per node, on `Channel::Heartbeat(0..nodes)`. At least 1.
    fn nodes(&self) -> usize {
        1
    }

    /// How the log names node `node` (below [`CloudLink::nodes`]): its
    /// address, as the operator wrote it.
    fn node_name(&self, node: usize) -> String {
        format!("cloud node {node}")
    }

    /// Sends one request on `channel` and waits for its reply.
    fn request(
        &self,
        channel: Channel,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
}

/// Delivery state of a tuple, stored as the `sent` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flag {
    Queued = 0,
    Sent = 1,
    Acked = 2,
}

/// A closed window, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTuple {
    pub node_id: String,
    pub window_start_ms: i64,
    pub average_w: f64,
    pub samples: u32,
}

/// A record that is not a reading, kept with its raw bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Tuples stored for the first time.
    pub inserted: usize,
    /// Tuples whose `(node_id, window_start)` was already stored; the stored
    /// average is kept.
    pub already_stored: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckOutcome {
    pub acked: usize,
    /// Acks for tuples already at flag 2 with the same postal code.
    pub repeated: usize,
    /// Acks for tuples already at flag 2 with a different postal code. The
    /// stored code is kept; this is a cloud bug worth an alarm.
    pub conflicting: usize,
    /// Tuples the cloud answered with a conflict: it holds another average
    /// or sample count for them. Recorded against the tuple (`conflict`).
    pub value_conflicts: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub queued: u64,
    pub sent: u64,
    pub acked: u64,
    /// Every row of table `rejected`, late readings included.
    pub rejected: u64,
    /// The rows of table `rejected` of kind `late`: readings whose window
    /// had been stored already.
    pub late: u64,
    /// Tuples the cloud reported holding other values for.
    pub conflicts: u64,
    /// When the oldest tuple not yet acknowledged (flag 0 or 1) was
    /// queued, in ms since the epoch; `None` when every tuple is
    /// acknowledged. Its age is how far the cloud is behind this edge.
    pub oldest_unacked_queued_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The disk is full or SQLite reported an IO error: stop consuming,
    /// keep serving what is stored, retry later.
    Unavailable(String),
    /// The database is not an EdgeMeter outbox (the original system's, or
    /// not SQLite at all): refused at open, before anything is written.
    Foreign(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(reason) => write!(f, "store unavailable: {reason}"),
            StoreError::Foreign(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for StoreError {}

/// The edge's durable outbox (table `power_averages`). Each method is one
/// transaction. Calls are synchronous: SQLite in WAL mode answers in
/// microseconds, and a thread hop would break the simulation's determinism.
pub trait Outbox: Send + 'static {
    /// Stores closed windows and rejected records in one transaction. A
    /// window already stored is left as it is (`UNIQUE(node_id, window_start)`).
    /// Durable when it returns, power loss included: the edge commits the
    /// readings' Kafka offsets right after.
    fn store_closed(
        &mut self,
        tuples: &[NewTuple],
        rejected: &[RejectedRecord],
        now_ms: i64,
    ) -> Result<StoreOutcome, StoreError>;

    /// Up to `limit` tuples with flag 0 or 1 and `id > after_id`, by id.
    /// `include_sent = false` returns flag-0 tuples only.
    fn unacked_after(
        &mut self,
        after_id: i64,
        limit: usize,
        include_sent: bool,
    ) -> Result<Vec<TupleOut>, StoreError>;

    /// Sets flag 1 and the sent time on tuples still at flag 0 or 1.
    fn mark_sent(&mut self, tuple_ids: &[i64], now_ms: i64) -> Result<(), StoreError>;

    /// Sets flag 2, the postal code and the acknowledged time, and on every
    /// tuple answered (new or already at flag 2) the epoch it was
    /// acknowledged under, `epochs[i]` for `acks[i]` (its store bucket's
    /// epoch; `None`: a cloud that names none), and whether the cloud
    /// reported a conflict for it. A tuple at flag 2 keeps the postal code
    /// it has; a conflict, once recorded, stays.
    fn mark_acked(
        &mut self,
        acks: &[TupleAck],
        epochs: &[Option<u64>],
        now_ms: i64,
    ) -> Result<AckOutcome, StoreError>;

    /// Up to `limit` tuples at flag 2 with `id > after_id` whose recorded
    /// epoch is none of `epochs` (the store buckets' current epochs, 0 for
    /// one not known), or none at all, by id: what the buckets that lost
    /// their data must be sent again. Epochs are random and distinct per
    /// bucket, so a tuple of a bucket that kept its data has its epoch in
    /// the set.
    fn acked_not_under(
        &mut self,
        epochs: &[u64; STORE_BUCKETS],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<TupleOut>, StoreError>;

    /// Deletes acknowledged tuples acknowledged before `cutoff_ms`, at most
    /// one bounded chunk per call; returns how many went.
    fn delete_acked_before(&mut self, cutoff_ms: i64) -> Result<usize, StoreError>;

    /// The counts of tuples at each flag, of rejected records, late
    /// readings and conflicts, and the oldest unacknowledged tuple's
    /// queue time. Cheap enough to call every second: it must cost what
    /// is pending, never a scan of the table (the edge reports it in every
    /// heartbeat and on `/metrics`).
    fn status(&mut self) -> Result<StatusCounts, StoreError>;
}
