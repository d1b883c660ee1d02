//! `ProduceQueue`: a producer's ordering and retry decisions, without IO.
//!
//! A producer hands records to its client library (librdkafka) and learns
//! later whether each was delivered. The one rule this type keeps: once a
//! delivery fails, the failed records are sent again before any younger
//! record that has not been handed out yet, in their original order:
//! nothing is handed out while a failure is pending, a failure waits until
//! every record still in flight has settled (a younger one may fail too
//! and then belongs in the resend), and the failed records go back to the
//! front of the queue, oldest first, after a backoff.
//!
//! What this cannot keep, and what Kafka then stores: a younger record
//! already handed out when an older one failed may still be delivered
//! (librdkafka's "message timeout considerations": messages 2 and 3 time
//! out in its queue while the broker is down, 4 and 5 are written when it
//! returns). The resend of 2 and 3 is a new produce and lands after them.
//! So after a delivery failure one household's readings reach the log out
//! of order, by at most what was in flight when the failure came, and a
//! record that timed out in flight may be in the log already (librdkafka's
//! "possibly persisted") and is written again. Kafka itself preserves the
//! order of successful appends per partition, and librdkafka's own
//! retries keep it (idempotence); only a failure reported to us breaks it.
//! Failures come from librdkafka's message timeout ([`DELIVERY_TIMEOUT`],
//! 300 s), so only an outage longer than that reorders anything.
//!
//! The driver calls, in any order: [`ProduceQueue::push`] for a new record
//! (after [`ProduceQueue::may_push`] says the [`UNCONFIRMED_MAX`] bound
//! allows it), [`ProduceQueue::poll_send`] for the next record to hand
//! out, [`ProduceQueue::handle_delivered`] / [`ProduceQueue::handle_failed`]
//! for outcomes, [`ProduceQueue::handle_refused`] when the library would
//! not take a record (its queue is full), and [`ProduceQueue::poll_timeout`]
//! for when to call `poll_send` again. Every input that depends on time
//! carries `now`; the type reads no clock.
//!
//! Two drivers share it: `KafkaProducer` (the `edgemeter households`
//! command, over librdkafka) and the simulation's households host (over a
//! model of librdkafka and the simulated broker). It lives in this crate,
//! not in a crate of its own, because this crate is already the one both
//! sides share for the bus (the demo's `MemLog`, the simulated broker's
//! storage), it does no IO (tokio only for `Instant` and `Notify`), and a
//! crate for one type of 300 lines would add a node to every build graph
//! without separating anything that is not separate already.
use edgemeter_env::{Bug, PlantedBugs};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Unconfirmed records at most (waiting, in flight or failed): a publish
/// waits at the bound. Bounds our memory (a reading is ~130 bytes), while
/// leaving librdkafka plenty to batch: at speed `max` it sends tens of
/// thousands of records a second.
pub const UNCONFIRMED_MAX: usize = 10_000;

/// How long librdkafka tries to deliver one record before it reports the
/// delivery failed (`message.timeout.ms`; librdkafka's default, set
/// explicitly by `KafkaProducer` so that the simulation's model of it
/// reads the same value). Until then librdkafka retries on its own, in
/// order, without duplicates.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// The first pause before failed records are sent again; it doubles.
pub const RESEND_DELAY_MIN: Duration = Duration::from_millis(100);

/// The longest pause before failed records are sent again: a broker back
/// after an outage is written to within this.
pub const RESEND_DELAY_MAX: Duration = Duration::from_secs(5);

/// The pause before the `attempt`-th resend: doubling from
/// [`RESEND_DELAY_MIN`], never above [`RESEND_DELAY_MAX`].
pub fn resend_delay(attempt: u32) -> Duration {
    RESEND_DELAY_MIN
        .saturating_mul(1 << attempt.min(16))
        .min(RESEND_DELAY_MAX)
}

/// Records in publication order, each with its sequence number.
#[derive(Debug)]
pub struct ProduceQueue<T> {
    /// Not handed out yet, oldest first: failed records return to the front.
    waiting: VecDeque<(u64, T)>,
    /// Handed out and not settled, by sequence.
    in_flight: BTreeMap<u64, T>,
    /// Failed and waiting for the records in flight to settle.
    failed: BTreeMap<u64, T>,
    /// While set, nothing is handed out before this time (the backoff).
    resume_at: Option<Instant>,
    /// Consecutive resends without a delivery in between.
    attempt: u32,
    next_sequence: u64,
    delivered: u64,
    planted: PlantedBugs,
}

impl<T: Clone> Default for ProduceQueue<T> {
    fn default() -> Self {
        ProduceQueue::new()
    }
}

impl<T: Clone> ProduceQueue<T> {
    pub fn new() -> ProduceQueue<T> {
        ProduceQueue {
            waiting: VecDeque::new(),
            in_flight: BTreeMap::new(),
            failed: BTreeMap::new(),
            resume_at: None,
            attempt: 0,
            next_sequence: 0,
            delivered: 0,
            planted: PlantedBugs::NONE,
        }
    }

    /// A queue with planted bugs switched on (the simulation's); without
    /// the `planted-bugs` feature they are all off.
    pub fn with_planted(planted: PlantedBugs) -> ProduceQueue<T> {
        ProduceQueue {
            planted,
            ..ProduceQueue::new()
        }
    }

    /// Whether a new record may be pushed: fewer than [`UNCONFIRMED_MAX`]
    /// are unconfirmed. A driver waits for an outcome otherwise.
    pub fn may_push(&self) -> bool {
        self.unconfirmed() < UNCONFIRMED_MAX
    }

    /// Queues a new record behind every other; returns its sequence number.
    pub fn push(&mut self, record: T) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.waiting.push_back((sequence, record));
        sequence
    }

    /// The next record to hand out, or none: the queue is empty, a failure
    /// waits for the records in flight, or the backoff has not passed.
    pub fn poll_send(&mut self, now: Instant) -> Option<(u64, T)> {
        if !self.failed.is_empty() {
            return None;
        }
        if let Some(at) = self.resume_at {
            if now < at {
                return None;
            }
            self.resume_at = None;
        }
        let (sequence, record) = self.waiting.pop_front()?;
        // (The planted slip's queue is out of order by design; a real
        // engineer who wrote it would not have written this check.)
        assert!(
            self.planted.has(Bug::ProducerReordering)
                || self.in_flight.keys().all(|&older| older < sequence),
            "records are handed out in order"
        );
        self.in_flight.insert(sequence, record.clone());
        Some((sequence, record))
    }

    /// When `poll_send` may hand out a record again after a backoff.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resume_at
    }

    /// A delivery succeeded. If it was the last record in flight and an
    /// older one failed meanwhile, the failed records go back now: a
    /// younger record delivered after an older one failed is what an
    /// outage longer than the delivery timeout gives, and the resend must
    /// not wait for a failure that will never come. (It did: the
    /// simulation's households hung there after such an outage.)
    pub fn handle_delivered(&mut self, sequence: u64, now: Instant) {
        let settled = self.in_flight.remove(&sequence);
        assert!(settled.is_some(), "delivery {sequence} was not in flight");
        self.delivered += 1;
        self.attempt = 0;
        if self.in_flight.is_empty() && !self.failed.is_empty() {
            self.requeue_failed(now);
        }
    }

    /// A delivery failed: the record is sent again, before any younger one,
    /// once everything in flight has settled and the backoff has passed.
    pub fn handle_failed(&mut self, sequence: u64, now: Instant) {
        let record = self
            .in_flight
            .remove(&sequence)
            .unwrap_or_else(|| panic!("failure {sequence} was not in flight"));
        self.failed.insert(sequence, record);
        if self.in_flight.is_empty() {
            self.requeue_failed(now);
        }
    }

    /// The library did not take the record just handed out: it goes back
    /// to the front, still ahead of every younger record.
    pub fn handle_refused(&mut self, sequence: u64) {
        let record = self
            .in_flight
            .remove(&sequence)
            .unwrap_or_else(|| panic!("refused {sequence} was not in flight"));
        assert!(
            self.in_flight.keys().all(|&older| older < sequence),
            "only the youngest record handed out can be refused"
        );
        self.waiting.push_front((sequence, record));
    }

    /// Puts every failed record back at the front, oldest first.
    fn requeue_failed(&mut self, now: Instant) {
        assert!(self.in_flight.is_empty());
        let failed = std::mem::take(&mut self.failed);
        if self.planted.has(Bug::ProducerReordering) {
            // The planted slip: the resend queued like any new record,
            // behind the readings that fell due during the outage.
            self.waiting.extend(failed);
            self.resume_at = Some(now + resend_delay(self.attempt));
            self.attempt = self.attempt.saturating_add(1);
            return;
        }
        for (sequence, record) in failed.into_iter().rev() {
            assert!(
                self.waiting
                    .front()
                    .is_none_or(|(next, _)| sequence < *next),
                "a failed record is older than every waiting one"
            );
            self.waiting.push_front((sequence, record));
        }
        self.resume_at = Some(now + resend_delay(self.attempt));
        self.attempt = self.attempt.saturating_add(1);
    }

    /// Records not yet delivered: waiting, in flight or failed.
    pub fn unconfirmed(&self) -> usize {
        self.waiting.len() + self.in_flight.len() + self.failed.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a failure is being retried: true from the first failed
    /// delivery until the resend is handed out.
    pub fn retrying(&self) -> bool {
        !self.failed.is_empty() || self.resume_at.is_some()
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut ProduceQueue<&'static str>, now: Instant) -> Vec<(u64, &'static str)> {
        std::iter::from_fn(|| queue.poll_send(now)).collect()
    }

    #[test]
    fn the_resend_delay_doubles_to_its_cap() {
        assert_eq!(resend_delay(0), RESEND_DELAY_MIN);
        assert_eq!(resend_delay(1), RESEND_DELAY_MIN * 2);
        let delays: Vec<Duration> = (0..100).map(resend_delay).collect();
        assert!(delays.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!(delays.iter().all(|delay| *delay <= RESEND_DELAY_MAX));
        assert_eq!(resend_delay(u32::MAX), RESEND_DELAY_MAX);
    }

    /// Goal: the bug cannot recur: a failed record is sent again
    /// before every younger one, failed records keep their order, and
    /// nothing new goes out while a failure waits for the records in
    /// flight. Method: four records in flight; the second and third fail
    /// while the fourth is still in flight, a fifth is published meanwhile.
    #[test]
    fn failed_records_go_again_before_younger_ones_in_their_order() {
        let now = Instant::now();
        let mut queue = ProduceQueue::new();
        for record in ["a1", "b1", "a2", "b2"] {
            queue.push(record);
        }
        assert_eq!(drain(&mut queue, now).len(), 4);
        queue.handle_delivered(0, now);
        queue.handle_failed(2, now);
        queue.handle_failed(1, now);
        queue.push("a3");
        assert_eq!(
            queue.poll_send(now),
            None,
            "nothing new while a failure waits for record 3"
        );
        assert!(queue.retrying());
        queue.handle_failed(3, now);
        assert_eq!(queue.poll_send(now), None, "the backoff comes first");
        let resume = queue.poll_timeout().expect("a backoff is set");
        assert_eq!(resume, now + RESEND_DELAY_MIN);
        assert_eq!(
            drain(&mut queue, resume),
            vec![(1, "b1"), (2, "a2"), (3, "b2"), (4, "a3")]
        );
        assert_eq!(queue.unconfirmed(), 4);
        assert!(!queue.retrying());
    }

    /// Goal: repeated failures back off further, a delivery resets the
    /// backoff, and a refused record keeps its place.
    #[test]
    fn backoff_grows_with_failures_and_a_refused_record_keeps_its_place() {
        let start = Instant::now();
        let mut queue = ProduceQueue::new();
        queue.push("x");
        queue.push("y");
        let mut now = start;
        for attempt in 0..3 {
            let (sequence, _) = queue.poll_send(now).expect("x goes out");
            assert_eq!(sequence, 0);
            queue.handle_failed(0, now);
            let resume = queue.poll_timeout().unwrap();
            assert_eq!(resume - now, resend_delay(attempt));
            now = resume;
        }
        let (x, _) = queue.poll_send(now).unwrap();
        let (y, _) = queue.poll_send(now).unwrap();
        queue.handle_refused(y);
        queue.handle_delivered(x, now);
        assert_eq!(queue.poll_send(now), Some((1, "y")));
        queue.handle_delivered(1, now);
        assert_eq!((queue.delivered(), queue.unconfirmed()), (2, 0));
        queue.push("z");
        let (z, _) = queue.poll_send(now).unwrap();
        queue.handle_failed(z, now);
        assert_eq!(
            queue.poll_timeout(),
            Some(now + RESEND_DELAY_MIN),
            "the delivery reset the backoff"
        );
    }

    /// Goal: a failure followed by the delivery of every younger record in
    /// flight still sends the failed record again (librdkafka's gap: 2
    /// times out, 3 is written once the broker is back). Method: two in
    /// flight, the older fails, the younger is delivered: the older must
    /// come back after the backoff, ahead of a record pushed meanwhile.
    #[test]
    fn a_failure_overtaken_by_a_delivery_is_still_resent() {
        let now = Instant::now();
        let mut queue = ProduceQueue::new();
        queue.push("old");
        queue.push("young");
        assert_eq!(drain(&mut queue, now).len(), 2);
        queue.handle_failed(0, now);
        queue.push("newer");
        assert_eq!(queue.poll_send(now), None, "waits for the young one");
        queue.handle_delivered(1, now);
        assert!(queue.retrying());
        let resume = queue.poll_timeout().expect("the resend is scheduled");
        assert_eq!(drain(&mut queue, resume), vec![(0, "old"), (2, "newer")]);
        queue.handle_delivered(0, resume);
        queue.handle_delivered(2, resume);
        assert_eq!((queue.delivered(), queue.unconfirmed()), (3, 0));
    }

    /// Goal: the unconfirmed bound counts every record not yet delivered,
    /// the failed ones included. Method: fill to the bound, fail one.
    #[test]
    fn the_bound_counts_failed_records_too() {
        let now = Instant::now();
        let mut queue = ProduceQueue::new();
        while queue.may_push() {
            queue.push(());
        }
        assert_eq!(queue.unconfirmed(), UNCONFIRMED_MAX);
        let (sequence, ()) = queue.poll_send(now).unwrap();
        queue.handle_failed(sequence, now);
        assert!(!queue.may_push(), "a failed record is still unconfirmed");
        assert_eq!(queue.poll_send(now), None, "the backoff holds the resend");
    }
}
