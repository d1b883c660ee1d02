//! Shipping bookkeeping: which tuples are in flight, which failed and wait
//! for a resend, where the outbox scan stands, and when to back off. No IO:
//! the driver reads and writes the outbox and the link and reports here.
//!
//! The outbox is streamed with a cursor over row ids (`id > cursor`), never
//! loaded whole. Rows at or below the cursor are either acknowledged, in
//! flight, or waiting in the retry queue; the cursor starts at 0 on every
//! start, so tuples left at flag 1 by a crash are sent again.
//!
//! Batches that ship acknowledged tuples again to a cloud that lost them
//! ([`crate::refill`] keeps their own cursor) share the in-flight window,
//! the retry queue and the backoff with new ones: [`Uplink::start_reship`].

use edgemeter_wire::{BatchRequest, TupleOut, WireVersion};
use std::collections::{BTreeMap, VecDeque};
use tokio::time::{Duration, Instant};

/// The first pause after a failed batch; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between attempts while the cloud keeps failing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One batch as sent: its tuples and its encoded request, kept so a resend
/// sends the same bytes.
#[derive(Debug, Clone)]
pub struct PendingBatch {
    pub request_id: u64,
    pub tuples: Vec<TupleOut>,
    pub body: Vec<u8>,
    /// Acknowledged tuples shipped again after the cloud lost its store.
    pub reship: bool,
}

#[derive(Debug)]
pub struct Uplink {
    edge_id: String,
    batch_tuples_max: usize,
    inflight_batches_max: usize,
    cursor: i64,
    /// Whether rows beyond the cursor may exist. Cleared by a short scan, set
    /// by every store, so an idle edge does not query the outbox in a loop.
    outbox_may_have_more: bool,
    next_request_id: u64,
    in_flight: BTreeMap<u64, PendingBatch>,
    /// Failed batches, sent again before anything new. It never holds more
    /// than the in-flight window, since each entry was in flight before.
    retry: VecDeque<PendingBatch>,
    backoff: Duration,
    paused_until: Option<Instant>,
}

impl Uplink {
    pub fn new(edge_id: String, batch_tuples_max: usize, inflight_batches_max: usize) -> Uplink {
        assert!(
            batch_tuples_max > 0 && batch_tuples_max <= edgemeter_wire::batch::BATCH_TUPLES_MAX
        );
        assert!(inflight_batches_max > 0);
        Uplink {
            edge_id,
            batch_tuples_max,
            inflight_batches_max,
            cursor: 0,
            outbox_may_have_more: true,
            next_request_id: 1,
            in_flight: BTreeMap::new(),
            retry: VecDeque::new(),
            backoff: BACKOFF_MIN,
            paused_until: None,
        }
    }

    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    pub fn batch_tuples_max(&self) -> usize {
        self.batch_tuples_max
    }

    /// Whether a batch may go out now.
    pub fn can_send(&self, now: Instant) -> bool {
        self.in_flight.len() < self.inflight_batches_max
            && self.paused_until.is_none_or(|until| now >= until)
    }

    /// When a paused uplink may send again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.paused_until
    }

    pub fn wants_scan(&self) -> bool {
        self.outbox_may_have_more
    }

    pub fn note_stored(&mut self) {
        self.outbox_may_have_more = true;
    }

    /// The next failed batch to send again, now in flight.
    pub fn take_retry(&mut self) -> Option<&PendingBatch> {
        let batch = self.retry.pop_front()?;
        let request_id = batch.request_id;
        assert!(self.in_flight.insert(request_id, batch).is_none());
        self.in_flight.get(&request_id)
    }

    /// Builds a new batch from scanned tuples and puts it in flight.
    /// `tuples` empty or short means the outbox has nothing more for now.
    pub fn start_batch(&mut self, tuples: Vec<TupleOut>) -> Option<&PendingBatch> {
        assert!(tuples.len() <= self.batch_tuples_max);
        if tuples.len() < self.batch_tuples_max {
            self.outbox_may_have_more = false;
        }
        let last = tuples.last()?;
        assert!(last.tuple_id > self.cursor, "the scan went backwards");
        assert!(tuples
            .windows(2)
            .all(|pair| pair[0].tuple_id < pair[1].tuple_id));
        self.cursor = last.tuple_id;
        Some(self.launch(tuples, false))
    }

    /// Puts a batch of acknowledged tuples in flight again, for a cloud
    /// that lost them. The outbox cursor does not move.
    pub fn start_reship(&mut self, tuples: Vec<TupleOut>) -> &PendingBatch {
        assert!(!tuples.is_empty() && tuples.len() <= self.batch_tuples_max);
        self.launch(tuples, true)
    }

    fn launch(&mut self, tuples: Vec<TupleOut>, reship: bool) -> &PendingBatch {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = BatchRequest {
            version: WireVersion::V2,
            edge_id: self.edge_id.clone(),
            instance: 0,
            request_id,
            tuples,
        };
        let body = request.encode();
        let batch = PendingBatch {
            request_id,
            tuples: request.tuples,
            body,
            reship,
        };
        assert!(self.in_flight.insert(request_id, batch).is_none());
        &self.in_flight[&request_id]
    }

    /// Takes a batch out of flight when its request completes.
    pub fn complete(&mut self, request_id: u64) -> PendingBatch {
        self.in_flight
            .remove(&request_id)
            .expect("a completion for a request not in flight")
    }

    pub fn succeeded(&mut self) {
        self.backoff = BACKOFF_MIN;
        self.paused_until = None;
    }

    /// Queues a failed batch for a resend and pauses sending.
    pub fn failed(&mut self, batch: PendingBatch, now: Instant) {
        self.retry.push_back(batch);
        self.pause(now);
    }

    /// Pauses sending without queueing anything (a dropped batch).
    pub fn pause(&mut self, now: Instant) {
        self.paused_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(tuple_id: i64) -> TupleOut {
        TupleOut {
            tuple_id,
            node_id: "h".into(),
            window_start_ms: 0,
            average_w: 1.0,
            samples: 1,
        }
    }

    #[test]
    fn streams_by_cursor_and_resends_failures_first() {
        let now = Instant::now();
        let mut uplink = Uplink::new("e".into(), 2, 2);
        assert!(uplink.wants_scan());
        let first = uplink
            .start_batch(vec![tuple(1), tuple(2)])
            .unwrap()
            .request_id;
        assert!(uplink.wants_scan(), "a full batch means there may be more");
        let second = uplink.start_batch(vec![tuple(5)]).unwrap().request_id;
        assert!(
            !uplink.wants_scan(),
            "a short batch means the outbox is drained"
        );
        assert_eq!(uplink.cursor(), 5);
        assert!(!uplink.can_send(now), "the in-flight window is full");
        let batch = uplink.complete(first);
        uplink.failed(batch, now);
        assert!(!uplink.can_send(now), "paused after a failure");
        let later = now + BACKOFF_MIN;
        assert!(uplink.can_send(later));
        assert_eq!(uplink.take_retry().unwrap().request_id, first);
        uplink.complete(second);
        uplink.succeeded();
        assert!(uplink.can_send(now));
    }

    /// Goal: the retry queue never holds more than the in-flight window, so
    /// failures cannot pile up batches in memory. Method: a long seeded
    /// sequence of sends, failures and successes, checking after each step.
    #[test]
    fn failed_batches_never_exceed_the_in_flight_window() {
        let inflight_max = 3;
        let mut uplink = Uplink::new("e".into(), 2, inflight_max);
        let mut now = Instant::now();
        let mut next_id = 1;
        let mut seed: u64 = 7;
        let mut outstanding: Vec<u64> = Vec::new();
        let mut failures = 0;
        for _ in 0..10_000 {
            // A small LCG: the same sequence every run, no extra dependency.
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let roll = (seed >> 33) % 4;
            now += BACKOFF_MAX;
            if roll < 2 && uplink.can_send(now) {
                // Resends go first, as the driver sends them.
                if let Some(batch) = uplink.take_retry() {
                    outstanding.push(batch.request_id);
                } else {
                    let batch = uplink.start_batch(vec![tuple(next_id)]).unwrap();
                    outstanding.push(batch.request_id);
                    next_id += 1;
                }
            } else if let Some(request_id) = outstanding.pop() {
                let batch = uplink.complete(request_id);
                if roll == 2 {
                    uplink.failed(batch, now);
                    failures += 1;
                } else {
                    uplink.succeeded();
                }
            }
            assert!(uplink.in_flight.len() <= inflight_max);
            assert!(uplink.in_flight.len() + uplink.retry.len() <= inflight_max);
        }
        assert!(failures > 1_000, "the sequence must exercise failures");
    }

    /// Goal: a reship batch takes a slot of the same in-flight window and
    /// leaves the outbox cursor where it was. Method: a window of two, one
    /// new batch and one reship.
    #[test]
    fn reship_batches_share_the_window_and_leave_the_cursor() {
        let now = Instant::now();
        let mut uplink = Uplink::new("e".into(), 2, 2);
        uplink.start_batch(vec![tuple(9)]).unwrap();
        let reship = uplink.start_reship(vec![tuple(1), tuple(2)]);
        assert!(reship.reship);
        assert_eq!(&reship.body[..4], b"EMQ\x02");
        assert_eq!(uplink.cursor(), 9);
        assert!(!uplink.can_send(now), "the reship took the last slot");
    }

    #[test]
    #[should_panic]
    fn batches_above_the_wire_limit_are_refused_at_construction() {
        Uplink::new("e".into(), edgemeter_wire::batch::BATCH_TUPLES_MAX + 1, 1);
    }

    #[test]
    fn backoff_doubles_to_its_bound() {
        let now = Instant::now();
        let mut uplink = Uplink::new("e".into(), 1, 1);
        for _ in 0..20 {
            uplink.pause(now);
        }
        assert_eq!(uplink.poll_timeout(), Some(now + BACKOFF_MAX));
    }
}
