//! The edge's driver: one task that owns the windows, the outbox and the
//! uplink, plus one helper task that reads the bus.
//!
//! Each wake handles one event (a polled batch, a completed request, a
//! timer), then sends what is due: a heartbeat to each cloud node, and
//! batches while any node is connected and the in-flight window has room
//! (the link picks the node for each batch). The order of effects is what
//! makes delivery exactly-once:
//! 1. readings -> closed windows -> SQLite (one transaction) -> Kafka commit,
//!    and the commit never passes the first offset of a window still open.
//!    Closed windows wait in memory for up to `store_interval` so that one
//!    transaction stores many: a crash loses only windows whose readings
//!    are not committed yet, which are read and closed again. The outbox's
//!    store is durable when it returns (the SQLite outbox syncs it): were
//!    it not, a power loss after the commit would lose its windows, or
//!    rebuild one from the tail of its readings;
//! 2. flag 1 in SQLite -> request -> reply -> flag 2 and postal code in SQLite;
//! 3. the cloud stores by tuple identity, so a resend after any crash is harmless;
//! 4. every reply and heartbeat names the cloud store's epochs, one per
//!    store bucket, and each acknowledged tuple records its bucket's; when
//!    one changes (that bucket lost its data), the tuples acknowledged
//!    under none of the current epochs are shipped again
//!    ([`crate::refill`]), and acknowledged tuples are kept for
//!    `ack_retention`, then deleted in chunks;
//! 5. one edge id, one process: the cloud's store leases the id to the
//!    instance that heartbeats ([`EdgeConfig::instance`]). A refused edge
//!    (another live instance holds the id) stops reading the bus,
//!    committing offsets and shipping, keeps heartbeating, says so in its
//!    monitor and in one error line a minute, and resumes once accepted:
//!    two processes committing to one consumer group would interleave its
//!    offsets.
//!
//! Windows close on event time (see [`crate::windows`]). The one exception
//! is the end of the stream: every open window is flushed only when the
//! stream has been quiet for `idle_flush` AND the bus confirms that the
//! consumer has read every partition to its end ([`ReadingsBus::at_end`]).
//! A stalled producer shorter than `idle_flush` therefore changes no
//! average, and a broker or link that does not answer never confirms the
//! end, so it never causes a flush. A reading whose window was closed
//! anyway is kept in table `rejected` as kind `late`, never dropped.

use crate::heartbeat::{Form, HeartbeatForm, LinkState, NodeChange, NodeHeartbeats};
use crate::intake::{IntakeChange, IntakeHealth};
use crate::monitor::bump;
use crate::monitor::OutboxGauges;
use crate::ports::{
    BusError, BusRecord, Channel, CloudLink, LinkError, NewTuple, Outbox, ReadingsBus,
    RejectedRecord, StoreError,
};
use crate::refill::Refill;
use crate::uplink::{PendingBatch, Uplink};
use crate::windows::{window_start_ms, Added, Windows};
use crate::{EdgeConfig, EdgeMonitor};
use edgemeter_env::{Bug, CrashPoint, WallClock};
use edgemeter_wire::sealed::{open_reply, seal_request};
use edgemeter_wire::{
    store_bucket, Ack, Backlog, BatchReply, BucketHeartbeatReply, EdgeKey, HeartbeatReply,
    HeartbeatRequest, PostalCode, ReplyOutcome, TupleAck, TupleOut, TupleOutcome, STORE_BUCKETS,
};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Duration, Instant};
use tracing::{debug, error, info, warn};

/// The most raw bytes kept of one rejected record. Records above the wire
/// limit are refused unparsed; their first bytes are enough to diagnose them.
pub const REJECTED_BYTES_MAX: usize = 64 * 1024;

/// How long to wait before storing again after SQLite failed (disk full, IO
/// error). Consumption stays paused meanwhile; Kafka keeps the data.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How often acknowledged tuples past `ack_retention` are looked for when
/// the last sweep found fewer than a chunk: often enough that a day's
/// tuples go within the day, rare enough to cost nothing.
const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The pause between two sweeps while each deletes a full chunk
/// (`edgemeter_store::RETENTION_CHUNK_ROWS`): the backlog drains without
/// holding up the edge's other writes.
const RETENTION_SWEEP_BUSY: Duration = Duration::from_millis(100);

/// The first and the longest pause after the bus failed.
const BUS_BACKOFF_MIN: Duration = Duration::from_millis(100);
const BUS_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The longest the edge waits for the bus to answer whether it is at the
/// end of every partition. No answer in time counts as "not confirmed" (no
/// flush). The bus bounds its own broker queries below this (`KafkaBus`:
/// 2 s per query); this is the backstop so that a bus which hangs cannot
/// hold up commits for longer.
pub const END_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a refused edge repeats its error line: once a minute keeps an
/// operator informed without flooding the log with one line a heartbeat.
pub const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The idle flush of the planted bug `flush-on-silence`: the old default.
const PLANTED_SILENCE_FLUSH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// The bus task ended on its own: it panicked.
    BusStopped,
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::BusStopped => write!(f, "the bus reader stopped"),
        }
    }
}

impl std::error::Error for EdgeError {}

/// What the bus task reports after each poll.
enum BusEvent {
    Records(Vec<BusRecord>),
    /// The poll returned nothing (the broker had nothing new, or did not
    /// answer in time). `end` is the answer to [`ReadingsBus::at_end`],
    /// asked after the poll when the edge wanted to know.
    Empty {
        end: Option<Result<bool, BusError>>,
    },
    /// The broker could not be reached.
    Unavailable,
}

enum Completion {
    Heartbeat {
        /// The cloud node it went to.
        node: usize,
        result: Result<Vec<u8>, LinkError>,
        /// The version it was sent in.
        form: Form,
    },
    Data {
        request_id: u64,
        result: Result<Vec<u8>, LinkError>,
        /// From the send to the reply (or the failure).
        round_trip: Duration,
    },
}

/// Runs the edge until `shutdown` resolves.
pub async fn run_edge<B, L, O, C>(
    config: EdgeConfig,
    bus: B,
    link: Arc<L>,
    outbox: O,
    clock: C,
    monitor: Arc<EdgeMonitor>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), EdgeError>
where
    B: ReadingsBus,
    L: CloudLink,
    O: Outbox,
    C: WallClock,
{
    let (records_tx, records_rx) = mpsc::channel(config.poll_queue_max);
    // The offsets to commit are a single slot, not a queue: a newer set
    // replaces an older one, so at most one commit ever waits for the bus
    // task, and the newest is never skipped (a queue that is full when the
    // stream goes quiet would leave the last commit undone).
    let (commits_tx, commits_rx) = watch::channel(BTreeMap::new());
    // Set while the edge would flush if the bus confirmed the end: the bus
    // task asks the broker after each empty poll only then.
    let (end_wanted_tx, end_wanted_rx) = watch::channel(false);
    // Set while the cloud refuses this instance: the bus task polls nothing.
    let (bus_paused_tx, bus_paused_rx) = watch::channel(false);
    let bus_task = tokio::spawn(drive_bus(
        bus,
        config.poll_records_max,
        records_tx,
        commits_rx,
        end_wanted_rx,
        bus_paused_rx,
    ));
    let _abort_bus = AbortOnDrop(bus_task);
    let now = Instant::now();
    info!(edge = %config.edge_id, "edge starting");
    let mut edge = EdgeLoop {
        windows: Windows::with_planted(config.windows, config.planted),
        heartbeats: NodeHeartbeats::new(
            now,
            config.heartbeat_interval,
            config.heartbeat_misses_max,
            link.nodes(),
        ),
        heartbeat_forms: (0..link.nodes())
            .map(|_| HeartbeatForm::default())
            .collect(),
        uplink: Uplink::new(
            config.edge_id.clone(),
            config.batch_tuples_max,
            config.inflight_batches_max,
        ),
        config,
        link,
        outbox,
        clock,
        monitor,
        commits_tx,
        end_wanted_tx,
        bus_paused_tx,
        refusal: Refusal::default(),
        consumed_next: BTreeMap::new(),
        committed: BTreeMap::new(),
        pending: PendingStore::default(),
        store_retry_at: None,
        quiet_since: None,
        requests: FuturesUnordered::new(),
        logged_kinds: BTreeSet::new(),
        intake: IntakeHealth::new(now),
        refill: Refill::new(),
        retention_due: now + RETENTION_SWEEP_INTERVAL,
    };
    edge.monitor.set_consuming(true);
    let names = (0..edge.link.nodes()).map(|node| edge.link.node_name(node));
    edge.monitor.set_cloud_nodes(names.collect());
    edge.run(records_rx, shutdown).await
}

/// What waits for the next store: bounded by `store_pending_max` plus one
/// poll's worth, since a poll is windowed whole before the store.
#[derive(Default)]
struct PendingStore {
    tuples: Vec<NewTuple>,
    rejected: Vec<RejectedRecord>,
    /// When the oldest of them started waiting.
    since: Option<Instant>,
}

impl PendingStore {
    fn len(&self) -> usize {
        self.tuples.len() + self.rejected.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the cloud refuses this instance (another live one holds the edge
/// id), and the log line's pacing.
#[derive(Debug, Default)]
struct Refusal {
    /// Since when the heartbeats have been refused; `None` while accepted.
    since: Option<Instant>,
    /// When the refusal was last logged.
    logged_at: Option<Instant>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the bus into a small queue and applies commits. Kept apart so that
/// a slow poll never delays a reply or a heartbeat.
async fn drive_bus<B: ReadingsBus>(
    mut bus: B,
    records_max: usize,
    records_tx: mpsc::Sender<BusEvent>,
    mut commits_rx: watch::Receiver<BTreeMap<i32, i64>>,
    end_wanted_rx: watch::Receiver<bool>,
    mut paused_rx: watch::Receiver<bool>,
) {
    let mut backoff = BUS_BACKOFF_MIN;
    let mut down_logged = false;
    // A commit that failed, tried again after its backoff until one
    // succeeds: after the stream's last records no newer commit comes to
    // cover it, and the group's offsets would stay behind for good.
    let mut failed_commit: Option<(BTreeMap<i32, i64>, Instant)> = None;
    let mut commit_backoff = BUS_BACKOFF_MIN;
    loop {
        let paused = *paused_rx.borrow_and_update();
        let retry_at = failed_commit.as_ref().map(|(_, at)| *at);
        let permit = tokio::select! {
            permit = records_tx.reserve(), if !paused => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            changed = paused_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            changed = commits_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                // Every partition's offset each time: this one supersedes
                // any failed before it.
                let offsets = commits_rx.borrow_and_update().clone();
                if !offsets.is_empty() {
                    commit_backoff = BUS_BACKOFF_MIN;
                    failed_commit = commit(&mut bus, offsets, &mut commit_backoff).await;
                }
                continue;
            }
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                let (offsets, _) = failed_commit.take().expect("a retry is due");
                failed_commit = commit(&mut bus, offsets, &mut commit_backoff).await;
                if failed_commit.is_none() {
                    info!("offset commit went through on a retry");
                }
                continue;
            }
        };
        match bus.poll(records_max).await {
            Ok(records) => {
                if down_logged {
                    info!("broker reachable again");
                    down_logged = false;
                }
                backoff = BUS_BACKOFF_MIN;
                if !records.is_empty() {
                    permit.send(BusEvent::Records(records));
                    continue;
                }
                let end = if *end_wanted_rx.borrow() {
                    Some(ask_end(&mut bus).await)
                } else {
                    None
                };
                permit.send(BusEvent::Empty { end });
            }
            Err(BusError::Unavailable(reason)) => {
                permit.send(BusEvent::Unavailable);
                if !down_logged {
                    warn!(%reason, "broker unavailable; retrying with backoff");
                    down_logged = true;
                }
                sleep(backoff).await;
                backoff = (backoff * 2).min(BUS_BACKOFF_MAX);
            }
        }
    }
}

/// Commits `offsets`; on failure returns them with the time to try again
/// (the backoff doubles up to [`BUS_BACKOFF_MAX`]).
async fn commit<B: ReadingsBus>(
    bus: &mut B,
    offsets: BTreeMap<i32, i64>,
    backoff: &mut Duration,
) -> Option<(BTreeMap<i32, i64>, Instant)> {
    match bus.commit(&offsets).await {
        Ok(()) => None,
        Err(error) => {
            warn!(%error, retry_in = ?*backoff, "offset commit failed; it is tried again unless a newer one covers it");
            let retry_at = Instant::now() + *backoff;
            *backoff = (*backoff * 2).min(BUS_BACKOFF_MAX);
            Some((offsets, retry_at))
        }
    }
}

/// Asks the bus whether it is at the end of every partition, within
/// [`END_QUERY_TIMEOUT`].
async fn ask_end<B: ReadingsBus>(bus: &mut B) -> Result<bool, BusError> {
    match timeout(END_QUERY_TIMEOUT, bus.at_end()).await {
        Ok(answer) => answer,
        Err(_) => Err(BusError::Unavailable(format!(
            "no answer to the end query within {END_QUERY_TIMEOUT:?}"
        ))),
    }
}

struct EdgeLoop<L, O, C> {
    config: EdgeConfig,
    link: Arc<L>,
    outbox: O,
    clock: C,
    monitor: Arc<EdgeMonitor>,
    commits_tx: watch::Sender<BTreeMap<i32, i64>>,
    /// Tells the bus task to ask [`ReadingsBus::at_end`] after empty polls.
    end_wanted_tx: watch::Sender<bool>,
    /// Stops the bus task's polls while the cloud refuses this instance.
    bus_paused_tx: watch::Sender<bool>,
    /// Whether the cloud refuses this instance.
    refusal: Refusal,
    windows: Windows,
    /// One heartbeat per cloud node; the edge ships while any node answers.
    heartbeats: NodeHeartbeats,
    /// Per node, whether its heartbeats carry the backlog (version 3) or
    /// not: during an upgrade the nodes may run different versions.
    heartbeat_forms: Vec<HeartbeatForm>,
    uplink: Uplink,
    /// Per partition, the offset after the newest record read.
    consumed_next: BTreeMap<i32, i64>,
    /// Per partition, the offset last handed to the bus to commit.
    committed: BTreeMap<i32, i64>,
    /// Closed windows and rejected records not in SQLite yet.
    pending: PendingStore,
    /// Set while SQLite refuses writes: when to try again. The edge reads
    /// no more records meanwhile (Kafka keeps them).
    store_retry_at: Option<Instant>,
    /// Since when every poll has come back empty. The open windows are
    /// flushed once this lasts `idle_flush` and the bus confirms it is at
    /// the end of every partition: the stream has stopped. An unreachable
    /// broker, or one that does not answer the end query, is not a quiet
    /// stream, so either restarts the clock: flushing then would close
    /// windows whose readings are still on their way.
    quiet_since: Option<Instant>,
    requests: FuturesUnordered<BoxFuture<'static, Completion>>,
    /// Rejection kinds already logged: each kind is logged once, then counted.
    logged_kinds: BTreeSet<&'static str>,
    /// Whether consumed records become readings.
    intake: IntakeHealth,
    /// The cloud store's epoch and the scan of tuples to ship again.
    refill: Refill,
    /// When to look for acknowledged tuples past their retention.
    retention_due: Instant,
}

impl<L: CloudLink, O: Outbox, C: WallClock> EdgeLoop<L, O, C> {
    async fn run(
        &mut self,
        mut records_rx: mpsc::Receiver<BusEvent>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), EdgeError> {
        tokio::pin!(shutdown);
        loop {
            self.monitor.note_loop_turn();
            self.send_due(Instant::now()).await;
            let wake = self.next_wake();
            let consuming = self.store_retry_at.is_none() && self.refusal.since.is_none();
            tokio::select! {
                _ = &mut shutdown => {
                    info!(edge = %self.config.edge_id, "edge stopping");
                    return Ok(());
                }
                event = records_rx.recv(), if consuming => match event {
                    Some(BusEvent::Records(records)) => {
                        self.quiet_since = None;
                        self.end_wanted_tx.send_if_modified(|wanted| std::mem::replace(wanted, false));
                        self.handle_records(records).await;
                    }
                    Some(BusEvent::Empty { end }) => {
                        self.check_intake();
                        self.handle_quiet_poll(end).await;
                    }
                    Some(BusEvent::Unavailable) => self.quiet_since = None,
                    None => return Err(EdgeError::BusStopped),
                },
                Some(done) = self.requests.next(), if !self.requests.is_empty() => {
                    self.handle_completion(done).await;
                }
                _ = sleep_until(wake) => self.handle_timers().await,
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        if let Some(due) = self.heartbeats.poll_timeout() {
            wake = wake.min(due);
        }
        if let Some(until) = self.uplink.poll_timeout() {
            if until > now {
                wake = wake.min(until);
            }
        }
        if let Some(at) = self.store_due() {
            wake = wake.min(at);
        }
        wake.min(self.retention_due)
    }

    /// When the pending windows must be stored: at the retry time while
    /// SQLite fails, else `store_interval` after the first of them waited.
    fn store_due(&self) -> Option<Instant> {
        self.store_retry_at.or_else(|| {
            self.pending
                .since
                .map(|since| since + self.config.store_interval)
        })
    }

    async fn handle_timers(&mut self) {
        if self.store_due().is_some_and(|due| Instant::now() >= due) {
            self.store_and_commit().await;
        }
        if Instant::now() >= self.retention_due {
            self.sweep_retention();
        }
    }

    /// Deletes one chunk of acknowledged tuples past their retention, and
    /// sets when to look again: soon while chunks come full.
    fn sweep_retention(&mut self) {
        let retention_ms = self.config.ack_retention.as_millis() as i64;
        let cutoff_ms = self.clock.now_ms().saturating_sub(retention_ms);
        let pause = match self.outbox.delete_acked_before(cutoff_ms) {
            Ok(0) => RETENTION_SWEEP_INTERVAL,
            Ok(deleted) => {
                debug!(deleted, "acknowledged tuples past their retention deleted");
                RETENTION_SWEEP_BUSY
            }
            Err(error) => {
                self.store_failed(&error);
                RETENTION_SWEEP_INTERVAL
            }
        };
        self.retention_due = Instant::now() + pause;
    }

    /// An empty poll: closes every open window once the stream has been
    /// quiet for `idle_flush` and the bus confirmed it is at the end of
    /// every partition (`end`, asked when the edge wanted it).
    async fn handle_quiet_poll(&mut self, end: Option<Result<bool, BusError>>) {
        let now = Instant::now();
        let silence_only = self.config.planted.has(Bug::FlushOnSilence);
        let confirmed = match end {
            Some(Ok(at_end)) => at_end,
            Some(Err(error)) => {
                // No answer is not an end: the clock starts again, so the
                // flush needs `idle_flush` more of a broker that answers.
                debug!(%error, "end of the stream not confirmed; no flush");
                self.quiet_since = Some(now);
                false
            }
            None => false,
        };
        let since = *self.quiet_since.get_or_insert(now);
        let idle_flush = if silence_only {
            PLANTED_SILENCE_FLUSH
        } else {
            self.config.idle_flush
        };
        let idle = now.duration_since(since) >= idle_flush;
        let flushable = idle && self.store_retry_at.is_none() && self.windows.open_windows() > 0;
        if flushable && (confirmed || silence_only) {
            let before = self.pending.tuples.len();
            self.windows.close_all(&mut self.pending.tuples);
            self.pending.since.get_or_insert(now);
            info!(
                windows = self.pending.tuples.len() - before,
                "stream idle and read to its end; closing open windows"
            );
            self.end_wanted_tx
                .send_if_modified(|wanted| std::mem::replace(wanted, false));
            // Nothing more is coming to batch with: store now.
            self.store_and_commit().await;
            return;
        }
        let wanted = flushable && !silence_only;
        self.end_wanted_tx
            .send_if_modified(|current| std::mem::replace(current, wanted) != wanted);
    }

    async fn handle_records(&mut self, records: Vec<BusRecord>) {
        assert!(!records.is_empty());
        for record in &records {
            let next = self.consumed_next.entry(record.partition).or_insert(0);
            *next = (*next).max(record.offset + 1);
        }
        if self.config.planted.has(Bug::CommitBeforeDurable) {
            self.commits_tx.send_replace(self.consumed_next.clone());
        }
        let records = if self.config.planted.has(Bug::FirstRecordPerPoll) {
            first_record_per_partition(records)
        } else {
            records
        };
        for record in records {
            bump(&self.monitor.readings, 1);
            let reject = self.window_record(&record);
            self.intake
                .handle_record(reject.as_ref().map(|reject| reject.kind));
            if let Some(reject) = reject {
                self.pending.rejected.push(reject);
            }
        }
        self.check_intake();
        self.windows.close_ready(&mut self.pending.tuples);
        let now = Instant::now();
        if self.pending.is_empty() {
            // Every closed window is stored: the new offsets can be
            // committed as far as the open windows allow.
            self.commit_offsets();
            return;
        }
        self.pending.since.get_or_insert(now);
        let full = self.pending.len() >= self.config.store_pending_max;
        if full && self.store_due().is_none_or(|due| now < due) {
            bump(&self.monitor.pending_bound_stores, 1);
        }
        if full || self.store_due().is_some_and(|due| now >= due) {
            self.store_and_commit().await;
        }
    }

    /// Logs and publishes a change of the intake's verdict: an edge that
    /// consumes and stores nothing says so plainly.
    fn check_intake(&mut self) {
        match self.intake.poll_change(Instant::now()) {
            Some(IntakeChange::AllRejected(alarm)) => {
                self.monitor.set_intake_alarm(true);
                error!(records = alarm.records, "{}", alarm.describe());
            }
            Some(IntakeChange::Recovered) => {
                self.monitor.set_intake_alarm(false);
                info!("records become readings again");
            }
            None => {}
        }
    }

    /// Adds one record to its window; returns it as rejected if it is not a
    /// usable reading.
    fn window_record(&mut self, record: &BusRecord) -> Option<RejectedRecord> {
        let decoded = self
            .config
            .readings
            .decode(&record.payload, record.timestamp_ms);
        let reading = match decoded {
            Ok(reading) => reading,
            Err(error) => return Some(self.reject(record, error.kind(), error.to_string())),
        };
        let ts_ms = if self.config.planted.has(Bug::ArrivalTimeWindows) {
            self.clock.now_ms()
        } else {
            reading.ts_ms
        };
        let power_mw = (reading.power_w * 1000.0).round() as i64;
        let added = self.windows.add(
            &reading.node_id,
            ts_ms,
            power_mw,
            record.partition,
            record.offset,
        );
        match added {
            Added::Counted => {
                bump(&self.monitor.counted, 1);
                None
            }
            Added::Duplicate => {
                bump(&self.monitor.duplicates, 1);
                None
            }
            Added::Late => {
                // Its window is stored (or about to be): the average there
                // stays, and the reading is kept where an operator sees it.
                bump(&self.monitor.late, 1);
                let start = window_start_ms(ts_ms);
                Some(self.reject(
                    record,
                    "late",
                    format!(
                        "window {start} of household {} was closed before this reading (ts {ts_ms}) arrived; not counted",
                        reading.node_id
                    ),
                ))
            }
            Added::OutsideStream => Some(self.reject(
                record,
                "ts_outside_stream",
                format!("ts {ts_ms} is more than a day from the stream"),
            )),
            Added::TooManyHouseholds => Some(self.reject(
                record,
                "too_many_households",
                "household limit reached".to_owned(),
            )),
        }
    }

    fn reject(&mut self, record: &BusRecord, kind: &'static str, reason: String) -> RejectedRecord {
        bump(&self.monitor.rejected, 1);
        if kind != "late" {
            bump(&self.monitor.rejected_invalid, 1);
        }
        if self.logged_kinds.insert(kind) {
            warn!(
                kind,
                %reason,
                partition = record.partition,
                offset = record.offset,
                "record rejected and kept in table rejected (each kind is logged once)"
            );
        }
        let kept = record.payload.len().min(REJECTED_BYTES_MAX);
        RejectedRecord {
            partition: record.partition,
            offset: record.offset,
            payload: record.payload[..kept].to_vec(),
            kind,
            reason,
        }
    }

    /// Stores every pending window and rejected record in one transaction,
    /// then commits the offsets they came from.
    async fn store_and_commit(&mut self) {
        if !self.pending.is_empty() {
            let PendingStore {
                tuples, rejected, ..
            } = &self.pending;
            match self
                .outbox
                .store_closed(tuples, rejected, self.clock.now_ms())
            {
                Ok(outcome) => {
                    bump(&self.monitor.tuples_stored, outcome.inserted as u64);
                    if outcome.inserted > 0 {
                        self.uplink.note_stored();
                    }
                    debug!(
                        inserted = outcome.inserted,
                        already_stored = outcome.already_stored,
                        rejected = rejected.len(),
                        "windows stored"
                    );
                    self.pending = PendingStore::default();
                }
                Err(error) => {
                    self.store_failed(&error);
                    self.store_retry_at = Some(Instant::now() + STORE_RETRY);
                    self.monitor.set_consuming(false);
                    return;
                }
            }
        }
        if self.store_retry_at.take().is_some() {
            info!("store writable again; consuming resumes");
            self.monitor.set_consuming(true);
        }
        self.config
            .crash_points
            .reached(CrashPoint::EdgeBeforeOffsetCommit)
            .await;
        self.commit_offsets();
    }

    fn store_failed(&mut self, error: &StoreError) {
        bump(&self.monitor.store_errors, 1);
        error!(%error, "SQLite refused a write; consuming pauses until it succeeds");
    }

    /// Commits, per partition, up to the first offset an open window needs.
    /// Nothing while the cloud refuses this instance: another process holds
    /// the edge id and commits to the same group.
    fn commit_offsets(&mut self) {
        if self.refusal.since.is_some() {
            return;
        }
        // Closed windows waiting for a store hold readings below the floor
        // the open windows give: committing past them now would lose them
        // in a crash before the store. (The end of a refusal once committed
        // here with windows pending; seed 214 lost three that way.)
        if !self.pending.is_empty() {
            return;
        }
        let mut offsets = BTreeMap::new();
        let skewed = self
            .config
            .planted
            .has(Bug::OffsetArithmeticAcrossPartitions);
        // Only the planted slip needs the partitions by index; a production
        // build (where `skewed` is the constant false) collects nothing.
        let partitions: Vec<i32> = if skewed {
            self.consumed_next.keys().copied().collect()
        } else {
            Vec::new()
        };
        for (index, (&partition, &next)) in self.consumed_next.iter().enumerate() {
            // The planted slip: the floor of the next partition in order.
            let floor_of = if skewed {
                partitions[(index + 1) % partitions.len()]
            } else {
                partition
            };
            let target = self
                .windows
                .commit_floor(floor_of)
                .map_or(next, |floor| floor.min(next));
            if self
                .committed
                .get(&partition)
                .is_none_or(|&done| target > done)
            {
                offsets.insert(partition, target);
            }
        }
        if offsets.is_empty() {
            return;
        }
        debug!(?offsets, "offsets committed");
        self.committed.extend(offsets);
        // Every partition's offset each time: the slot keeps only the newest.
        self.commits_tx.send_replace(self.committed.clone());
    }

    /// Sends the due heartbeats, then batches while connected and allowed.
    async fn send_due(&mut self, now: Instant) {
        // At most one turn per node: `poll_send` marks each it hands out in
        // flight, and a node in flight is not due.
        while let Some(node) = self.heartbeats.poll_send(now) {
            // Read for every heartbeat, sent with it or not: the same read
            // serves `/metrics` (it costs six rows, see the outbox).
            let backlog = self.read_backlog();
            let edge_id = self.config.edge_id.clone();
            let form = self.heartbeat_forms[node].poll_form(now);
            let body = match (form, backlog) {
                // The lease must be renewed whatever the outbox says: an
                // outbox that cannot be read reports an empty backlog.
                (Form::WithInstance, backlog) => HeartbeatRequest::EdgeV4 {
                    edge_id,
                    instance: self.config.instance,
                    backlog: backlog.unwrap_or_default(),
                },
                (Form::WithBacklog, Some(backlog)) => HeartbeatRequest::EdgeV3 { edge_id, backlog },
                // An outbox that cannot be read has no backlog to report.
                _ => HeartbeatRequest::EdgeV2 { edge_id },
            };
            let form = match &body {
                HeartbeatRequest::EdgeV4 { .. } => Form::WithInstance,
                HeartbeatRequest::EdgeV3 { .. } => Form::WithBacklog,
                _ => Form::WithoutBacklog,
            };
            let call = self.call(
                Channel::Heartbeat(node),
                &body.encode(),
                self.config.heartbeat_timeout,
            );
            self.requests.push(Box::pin(async move {
                let result = call.await;
                Completion::Heartbeat { node, result, form }
            }));
        }
        if self.heartbeats.state() != LinkState::Connected || self.refusal.since.is_some() {
            return;
        }
        for _ in 0..self.config.inflight_batches_max {
            if !self.uplink.can_send(now) {
                return;
            }
            if let Some(batch) = self.uplink.take_retry() {
                let (request_id, body) = (batch.request_id, batch.body.clone());
                debug!(request_id, "batch resent");
                self.push_data(request_id, body);
                continue;
            }
            if self.uplink.wants_scan() && self.send_next_batch(now).await {
                continue;
            }
            // New tuples go first; a slot they leave ships tuples again to
            // a cloud that lost them.
            if !self.uplink.can_send(now) || !self.send_reship_batch(now) {
                return;
            }
        }
    }

    /// Reads the outbox's counts, publishes them on the monitor and returns
    /// them as a heartbeat reports them; `None` when SQLite fails (counted
    /// as a store error; the read is tried again at the next heartbeat).
    fn read_backlog(&mut self) -> Option<Backlog> {
        let counts = match self.outbox.status() {
            Ok(counts) => counts,
            Err(error) => {
                bump(&self.monitor.store_errors, 1);
                warn!(%error, "the outbox's counts could not be read; the heartbeat goes without them");
                return None;
            }
        };
        let gauges = OutboxGauges {
            queued: counts.queued,
            sent: counts.sent,
            acked: counts.acked,
            oldest_unacked_queued_ms: counts.oldest_unacked_queued_ms,
        };
        self.monitor.set_outbox(gauges);
        let mut backlog = Backlog {
            queued: counts.queued,
            sent: counts.sent,
            oldest_unacked_age_ms: gauges.oldest_unacked_age_ms(self.clock.now_ms()),
        };
        if backlog.unacked() == 0 {
            // The wire refuses an age with nothing pending.
            backlog.oldest_unacked_age_ms = 0;
        }
        Some(backlog)
    }

    /// Reads the refill's next tuples and ships them again. Returns false
    /// when no pass is under way, it just ended, or SQLite failed.
    fn send_reship_batch(&mut self, now: Instant) -> bool {
        let Some(scan) = self.refill.poll_scan() else {
            return false;
        };
        let limit = self.uplink.batch_tuples_max();
        let tuples = match self
            .outbox
            .acked_not_under(&scan.epochs, scan.after_id, limit)
        {
            Ok(tuples) => tuples,
            Err(error) => {
                self.store_failed(&error);
                self.uplink.pause(now);
                return false;
            }
        };
        let ids: Vec<i64> = tuples.iter().map(|tuple| tuple.tuple_id).collect();
        self.refill.handle_scanned(scan, &ids, limit);
        self.monitor.set_refill_scanning(self.refill.is_scanning());
        if !self.refill.is_scanning() {
            info!(
                passes = self.refill.passes(),
                "refill pass scanned to its end"
            );
        }
        if tuples.is_empty() {
            return false;
        }
        bump(&self.monitor.tuples_reshipped, ids.len() as u64);
        let batch = self.uplink.start_reship(tuples);
        let (request_id, body) = (batch.request_id, batch.body.clone());
        debug!(
            request_id,
            tuples = ids.len(),
            first = ids[0],
            "acknowledged tuples shipped again"
        );
        self.push_data(request_id, body);
        true
    }

    /// Epochs the cloud named for some store buckets (0: not known now):
    /// a change in any starts a refill pass.
    fn note_epochs(&mut self, named: impl IntoIterator<Item = (u16, u64)>) {
        if self.config.planted.has(Bug::NoReshipAfterEpochChange) && self.refill.knows_epochs() {
            return;
        }
        let before = self.refill.knows_epochs();
        let changed = self.refill.handle_epochs(named);
        self.log_epoch_change(before, changed);
    }

    /// The one epoch a cloud of the previous version names: every bucket's.
    fn note_epoch(&mut self, epoch: u64) {
        if self.config.planted.has(Bug::NoReshipAfterEpochChange) && self.refill.knows_epochs() {
            return;
        }
        let before = self.refill.knows_epochs();
        let changed = self.refill.handle_epoch(epoch);
        self.log_epoch_change(before, changed);
    }

    fn log_epoch_change(&mut self, knew_before: bool, changed: bool) {
        if !changed {
            return;
        }
        bump(&self.monitor.refill_passes, 1);
        self.monitor.set_refill_scanning(true);
        let passes = self.refill.passes();
        if knew_before {
            warn!(passes, "a cloud store epoch changed (a bucket lost its data?); shipping acknowledged tuples of the changed buckets again");
        } else {
            info!("cloud store epochs learned; checking what to ship again");
        }
    }

    /// Reads the next tuples beyond the cursor, marks them sent and sends
    /// them. Returns false when there was nothing to send or SQLite failed.
    async fn send_next_batch(&mut self, now: Instant) -> bool {
        let include_sent = !self.config.planted.has(Bug::ForgetSentOnRestart);
        let scanned = self.outbox.unacked_after(
            self.uplink.cursor(),
            self.uplink.batch_tuples_max(),
            include_sent,
        );
        let tuples = match scanned {
            Ok(tuples) => tuples,
            Err(error) => {
                self.store_failed(&error);
                self.uplink.pause(now);
                return false;
            }
        };
        if tuples.is_empty() {
            self.uplink.start_batch(tuples);
            return false;
        }
        let ids: Vec<i64> = tuples.iter().map(|tuple| tuple.tuple_id).collect();
        if let Err(error) = self.outbox.mark_sent(&ids, self.clock.now_ms()) {
            self.store_failed(&error);
            self.uplink.pause(now);
            return false;
        }
        if ids.len() == self.uplink.batch_tuples_max() {
            bump(&self.monitor.full_batches, 1);
        }
        let batch = self
            .uplink
            .start_batch(tuples)
            .expect("the batch is not empty");
        let (request_id, body) = (batch.request_id, batch.body.clone());
        debug!(request_id, tuples = ids.len(), first = ids[0], "batch sent");
        self.config
            .crash_points
            .reached(CrashPoint::EdgeAfterMarkSent)
            .await;
        if self.config.planted.has(Bug::AckBeforeReply) {
            let guessed = PostalCode::parse("00000").expect("five digits");
            let acks: Vec<TupleAck> = ids
                .iter()
                .map(|&tuple_id| TupleAck {
                    ack: Ack {
                        tuple_id,
                        postal_code: guessed,
                    },
                    outcome: TupleOutcome::Stored,
                })
                .collect();
            let unknown = vec![None; acks.len()];
            let _ = self.outbox.mark_acked(&acks, &unknown, self.clock.now_ms());
        }
        self.push_data(request_id, body);
        true
    }

    fn push_data(&mut self, request_id: u64, body: Vec<u8>) {
        bump(&self.monitor.batches_sent, 1);
        let call = self.call(Channel::Data, &body, self.config.request_timeout);
        let started = Instant::now();
        self.requests.push(Box::pin(async move {
            let result = call.await;
            Completion::Data {
                request_id,
                result,
                round_trip: started.elapsed(),
            }
        }));
    }

    /// Takes a replacement key, if one was sent since the last request.
    /// A closed channel keeps the key in force.
    fn refresh_key(&mut self) {
        let Some(updates) = self.config.key_updates.as_mut() else {
            return;
        };
        if !updates.has_changed().unwrap_or(false) {
            return;
        }
        let key = updates.borrow_and_update().clone();
        info!(
            edge = %self.config.edge_id,
            authenticated = key.is_some(),
            "edge key replaced; requests from now on are sealed with it"
        );
        self.config.key = key;
    }

    /// One request, sealed with the edge's key when it has one.
    fn call(
        &mut self,
        channel: Channel,
        body: &[u8],
        limit: Duration,
    ) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send + 'static {
        self.refresh_key();
        let link = self.link.clone();
        let sealed = self.config.key.clone().map(|key| {
            let (sealed, tag) = seal_request(&self.config.edge_id, &key, self.clock.now_ms(), body);
            (sealed, tag, key)
        });
        let plain = body.to_vec();
        async move {
            let Some((sealed, tag, key)) = sealed else {
                return request(&*link, channel, plain, limit).await;
            };
            let reply = request(&*link, channel, sealed, limit).await?;
            open_sealed_reply(&reply, &key, &tag)
        }
    }

    async fn handle_completion(&mut self, done: Completion) {
        let now = Instant::now();
        match done {
            Completion::Heartbeat { node, result, form } => {
                self.handle_heartbeat_reply(now, node, form, result)
            }
            Completion::Data {
                request_id,
                result,
                round_trip,
            } => {
                if result.is_ok() {
                    self.monitor.round_trips.observe(round_trip);
                }
                let batch = self.uplink.complete(request_id);
                self.handle_data_reply(batch, result, now).await;
            }
        }
    }

    /// A heartbeat's answer: the link's state, the form of the next one,
    /// the store epochs it names, and whether this instance is refused.
    fn handle_heartbeat_reply(
        &mut self,
        now: Instant,
        node: usize,
        form: Form,
        result: Result<Vec<u8>, LinkError>,
    ) {
        let answered = result.is_ok();
        let bytes = result.unwrap_or_default();
        let understood = if form == Form::WithInstance {
            match BucketHeartbeatReply::decode(&bytes) {
                Ok(BucketHeartbeatReply::Accepted { epochs }) => {
                    self.set_refused(now, Some(node), false);
                    self.uplink.set_instance(Some(self.config.instance));
                    self.note_epochs((0..STORE_BUCKETS as u16).zip(epochs));
                    true
                }
                Ok(BucketHeartbeatReply::Refused) => {
                    self.set_refused(now, Some(node), true);
                    true
                }
                Err(_) => false,
            }
        } else {
            match HeartbeatReply::decode(&bytes) {
                Ok(reply) => {
                    // A cloud that knows one epoch holds no lease to refuse.
                    self.set_refused(now, Some(node), false);
                    self.uplink.set_instance(None);
                    if let Some(epoch) = reply.epoch {
                        self.note_epoch(epoch);
                    }
                    true
                }
                Err(_) => false,
            }
        };
        if answered {
            if let Some(older) = self.heartbeat_forms[node].handle_reply(now, form, understood) {
                warn!(
                    node = %self.link.node_name(node),
                    ?older,
                    retry_s = crate::heartbeat::BACKLOG_RETRY_INTERVAL.as_secs(),
                    "the cloud does not take this heartbeat version (a cloud of a previous version?); sending an older one, and the newest again later"
                );
            }
        }
        self.note_heartbeat(now, node, understood);
    }

    /// Records node `node`'s heartbeat outcome; logs which node went away
    /// or came back, and the edge's own change.
    fn note_heartbeat(&mut self, now: Instant, node: usize, success: bool) {
        let change = self.heartbeats.handle_result(now, node, success);
        if change.node.is_some() {
            let connected = self.heartbeats.node_state(node) == LinkState::Connected;
            self.monitor.set_cloud_node_connected(node, connected);
        }
        // With one node its change is the edge's: the edge's line says it,
        // as before there were several.
        if let Some(node_change) = change.node.filter(|_| self.heartbeats.nodes() > 1) {
            let name = self.link.node_name(node);
            let connected = self.heartbeats.connected_nodes();
            match node_change {
                NodeChange::Answers => info!(node = %name, connected, "cloud node answers"),
                NodeChange::WentAway => warn!(node = %name, connected, "cloud node went away"),
                NodeChange::CameBack => info!(node = %name, connected, "cloud node came back"),
            }
        }
        if let Some(state) = change.edge {
            let connected = state == LinkState::Connected;
            self.monitor.set_connected(connected);
            if connected {
                info!(edge = %self.config.edge_id, "cloud connected");
            } else {
                warn!(edge = %self.config.edge_id, "cloud disconnected");
            }
        }
    }

    /// Enters or leaves the refused state: the bus task's polls, the
    /// commits and the shipping stop while refused (heartbeats go on); one
    /// error line a minute says so.
    /// `node` is the cloud node whose heartbeat said so, `None` for a data
    /// reply (the link does not say which node answered it).
    fn set_refused(&mut self, now: Instant, node: Option<usize>, refused: bool) {
        match (self.refusal.since, refused) {
            (None, false) => {}
            (Some(since), false) => {
                info!(
                    edge = %self.config.edge_id,
                    refused_ms = now.duration_since(since).as_millis() as u64,
                    "the cloud accepts this edge process again; consuming and shipping resume"
                );
                self.refusal = Refusal::default();
                self.bus_paused_tx.send_replace(false);
                self.monitor.set_refused(false);
                // Offsets held back while refused go out now, as far as
                // the stored windows allow (none while some wait for a
                // store: the store commits them).
                self.commit_offsets();
            }
            (since, true) => {
                if since.is_none() {
                    self.refusal.since = Some(now);
                    self.bus_paused_tx.send_replace(true);
                    self.monitor.set_refused(true);
                }
                let due = self
                    .refusal
                    .logged_at
                    .is_none_or(|at| now.duration_since(at) >= REFUSED_LOG_INTERVAL);
                if due {
                    self.refusal.logged_at = Some(now);
                    error!(
                        edge = %self.config.edge_id,
                        node = %node.map_or_else(|| "(a data reply)".to_owned(), |node| self.link.node_name(node)),
                        instance = format!("{:016x}", self.config.instance),
                        "the cloud refused this edge process: another live process holds edge id {}; not consuming, committing or shipping until it is accepted (two edges started with one id?)",
                        self.config.edge_id
                    );
                }
            }
        }
    }

    async fn handle_data_reply(
        &mut self,
        batch: PendingBatch,
        result: Result<Vec<u8>, LinkError>,
        now: Instant,
    ) {
        let request_id = batch.request_id;
        let reply = match result {
            Ok(bytes) => BatchReply::decode(&bytes).map_err(|error| error.to_string()),
            Err(error) => {
                bump(&self.monitor.batches_failed, 1);
                debug!(request_id, %error, "batch failed");
                if self.config.planted.has(Bug::DropBatchOnLinkError) {
                    self.uplink.pause(now);
                } else {
                    self.uplink.failed(batch, now);
                }
                return;
            }
        };
        let (acks, epochs) = match reply {
            Ok(BatchReply {
                request_id: echoed,
                outcome: ReplyOutcome::StoredUnder { epoch, acks },
                ..
            }) if echoed == request_id && acks_match(&batch.tuples, &acks) => {
                let all = BTreeMap::from_iter((0..STORE_BUCKETS as u16).map(|b| (b, epoch)));
                (acks, all)
            }
            Ok(BatchReply {
                request_id: echoed,
                outcome: ReplyOutcome::StoredInBuckets { epochs, acks },
                ..
            }) if echoed == request_id
                && acks_match(&batch.tuples, &acks)
                && names_every_bucket(&batch.tuples, &epochs) =>
            {
                (acks, epochs)
            }
            Ok(BatchReply {
                outcome: ReplyOutcome::RetryLater(reason),
                ..
            }) => {
                bump(&self.monitor.batches_retry_later, 1);
                warn!(request_id, %reason, "cloud asked to retry the batch later");
                return self.uplink.failed(batch, now);
            }
            Ok(BatchReply {
                outcome: ReplyOutcome::Refused(reason),
                ..
            }) => {
                // The heartbeat decides when this ends; the batch waits.
                self.set_refused(now, None, true);
                debug!(request_id, %reason, "cloud refused the batch: another instance holds the edge id");
                return self.uplink.failed(batch, now);
            }
            other => {
                error!(request_id, reply = ?other, "cloud reply does not answer the batch; resending");
                return self.uplink.failed(batch, now);
            }
        };
        self.config
            .crash_points
            .reached(CrashPoint::EdgeBeforeMarkAcked)
            .await;
        // Each tuple stands under its own bucket's epoch.
        let tuple_epochs: Vec<Option<u64>> = batch
            .tuples
            .iter()
            .map(|tuple| epochs.get(&store_bucket(&tuple.node_id)).copied())
            .collect();
        match self
            .outbox
            .mark_acked(&acks, &tuple_epochs, self.clock.now_ms())
        {
            Ok(outcome) => {
                self.count_acked(request_id, &outcome);
                self.uplink.succeeded();
                self.note_epochs(epochs);
            }
            Err(error) => {
                self.store_failed(&error);
                self.uplink.failed(batch, now);
            }
        }
    }

    fn count_acked(&self, request_id: u64, outcome: &crate::ports::AckOutcome) {
        bump(&self.monitor.tuples_acked, outcome.acked as u64);
        bump(&self.monitor.conflicting_acks, outcome.conflicting as u64);
        bump(
            &self.monitor.value_conflicts,
            outcome.value_conflicts as u64,
        );
        if outcome.conflicting > 0 {
            error!(
                request_id,
                conflicting = outcome.conflicting,
                "cloud sent a different postal code for an acknowledged tuple; kept the first"
            );
        }
        if outcome.value_conflicts > 0 {
            error!(request_id, conflicts = outcome.value_conflicts, "cloud holds other values for tuples of this batch; recorded against them (edgemeter status counts them)");
        }
        debug!(
            request_id,
            acked = outcome.acked,
            repeated = outcome.repeated,
            "batch acked"
        );
    }
}

/// One request with the edge's own deadline on top of the transport's.
async fn request<L: CloudLink>(
    link: &L,
    channel: Channel,
    body: Vec<u8>,
    limit: Duration,
) -> Result<Vec<u8>, LinkError> {
    match timeout(limit, link.request(channel, body)).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::Timeout),
    }
}

fn open_sealed_reply(reply: &[u8], key: &EdgeKey, tag: &[u8; 32]) -> Result<Vec<u8>, LinkError> {
    open_reply(reply, key, tag).map_err(|error| {
        let text = String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned();
        error!(%error, reply = %text, "cloud reply failed authentication");
        LinkError::Unreachable(format!("reply refused: {error}"))
    })
}

/// A version-3 reply must name the epoch of every bucket the batch's
/// tuples are in (and may name no other).
fn names_every_bucket(tuples: &[TupleOut], epochs: &BTreeMap<u16, u64>) -> bool {
    let buckets: BTreeSet<u16> = tuples
        .iter()
        .map(|tuple| store_bucket(&tuple.node_id))
        .collect();
    epochs.keys().copied().eq(buckets)
}

/// A reply must acknowledge exactly the batch's tuples, in order.
fn acks_match(tuples: &[TupleOut], acks: &[TupleAck]) -> bool {
    tuples.len() == acks.len()
        && tuples
            .iter()
            .zip(acks)
            .all(|(tuple, answer)| tuple.tuple_id == answer.ack.tuple_id)
}

/// The original consumer's bug, kept as a planted bug.
fn first_record_per_partition(records: Vec<BusRecord>) -> Vec<BusRecord> {
    let mut seen = BTreeSet::new();
    records
        .into_iter()
        .filter(|record| seen.insert(record.partition))
        .collect()
}
