//! Refilling a cloud that forgot: which store epochs the edge knows, one per
//! store bucket, and where the scan of tuples to ship again stands. No IO:
//! the driver reports every epoch the cloud names (heartbeat and data
//! replies) and each scan's result, and asks here what to scan next.
//!
//! The cloud's store is split into buckets by household
//! ([`edgemeter_wire::bucket`]), and each bucket has an epoch, a random id
//! it gets whenever it has none, so a bucket that lost its data (a Redis
//! flushed or restarted without persistence, one shard of a cluster
//! restarted empty, an empty replica promoted) names a new one. Every tuple
//! is acknowledged under its bucket's epoch, which the outbox records. When
//! the cloud names, for any bucket, an epoch other than the one the edge
//! knows, a pass starts: the outbox is scanned by id from 0 for
//! acknowledged tuples recorded under NONE of the current epochs, in
//! batches, and each is shipped again; its reply records the epoch it is
//! stored under now. Epochs are random and distinct per bucket, so a tuple
//! of a bucket that kept its data has its epoch in the set and stays put:
//! a shard loss ships exactly the tuples of the lost buckets. The edge's
//! first epochs after a start are a change too, since the cloud may have
//! lost its store while the edge was down.
//!
//! A cloud of the previous version names one epoch for its whole store
//! ([`Refill::handle_epoch`]): the edge then holds it as every bucket's,
//! and the rule is the old one.
//!
//! A pass reads the acknowledged rows above its cursor once, in row id
//! order: after a loss that is what is shipped again; after an edge
//! restart with nothing to refill it is one read of the retained rows
//! (`ack_retention` bounds them), in batches.
//!
//! Epochs have no order: a reply that was stored before a loss can arrive
//! after the heartbeat that named the new epoch. The rule stays simple,
//! "the epoch named last is current, and a change restarts the pass", and
//! converges once the replies in flight are in: each pass ships only what
//! is not recorded under a current epoch, and the heartbeat keeps naming
//! the store's real ones.

use edgemeter_wire::STORE_BUCKETS;

#[derive(Debug, Default)]
pub struct Refill {
    /// Each bucket's epoch as the cloud named it last; 0 until it names one.
    epochs: [u64; STORE_BUCKETS],
    /// Tuples with ids at or below this were scanned in the current pass.
    cursor: i64,
    /// Whether the current pass has tuples left to scan.
    scanning: bool,
    /// Passes started, for the log and tests.
    passes: u64,
}

/// What the driver should scan next: acknowledged tuples recorded under
/// none of `epochs` (0 = a bucket not known yet), with ids above
/// `after_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillScan {
    pub epochs: [u64; STORE_BUCKETS],
    pub after_id: i64,
}

impl Refill {
    pub fn new() -> Refill {
        Refill::default()
    }

    /// The epoch the cloud named last for `bucket`, if it named one.
    pub fn epoch_of(&self, bucket: u16) -> Option<u64> {
        let epoch = self.epochs[usize::from(bucket)];
        (epoch != 0).then_some(epoch)
    }

    /// Every bucket's epoch as last named, 0 where none was.
    pub fn epochs(&self) -> [u64; STORE_BUCKETS] {
        self.epochs
    }

    /// Whether the cloud has named any epoch yet.
    pub fn knows_epochs(&self) -> bool {
        self.epochs.iter().any(|&epoch| epoch != 0)
    }

    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Epochs the cloud named for some buckets (a 0 is "not known now" and
    /// changes nothing). Returns true when any differs from the one the
    /// edge knew: a new pass starts from the first tuple.
    pub fn handle_epochs(&mut self, named: impl IntoIterator<Item = (u16, u64)>) -> bool {
        let mut changed = false;
        for (bucket, epoch) in named {
            assert!(usize::from(bucket) < STORE_BUCKETS, "bucket {bucket}");
            let known = &mut self.epochs[usize::from(bucket)];
            if epoch != 0 && *known != epoch {
                *known = epoch;
                changed = true;
            }
        }
        if changed {
            self.cursor = 0;
            self.scanning = true;
            self.passes += 1;
        }
        changed
    }

    /// The one epoch a cloud of the previous version names for its whole
    /// store: every bucket's. Returns true when it is a change.
    pub fn handle_epoch(&mut self, epoch: u64) -> bool {
        assert_ne!(epoch, 0, "0 is the wire's unknown epoch");
        self.handle_epochs((0..STORE_BUCKETS as u16).map(|bucket| (bucket, epoch)))
    }

    /// The next scan of the current pass, if it has tuples left.
    pub fn poll_scan(&self) -> Option<RefillScan> {
        (self.scanning && self.knows_epochs()).then_some(RefillScan {
            epochs: self.epochs,
            after_id: self.cursor,
        })
    }

    /// The tuple ids a scan for `scan` returned, at most `limit` of them,
    /// ascending. Fewer than `limit` ends the pass. A scan made for epochs
    /// that are no longer current is ignored (its pass restarted).
    pub fn handle_scanned(&mut self, scan: RefillScan, tuple_ids: &[i64], limit: usize) {
        assert!(tuple_ids.len() <= limit);
        if self.poll_scan() != Some(scan) {
            return;
        }
        if let Some(&last) = tuple_ids.last() {
            assert!(tuple_ids[0] > self.cursor, "the refill scan went backwards");
            assert!(tuple_ids.windows(2).all(|pair| pair[0] < pair[1]));
            self.cursor = last;
        }
        if tuple_ids.len() < limit {
            self.scanning = false;
        }
    }

    /// Whether a pass is under way.
    pub fn is_scanning(&self) -> bool {
        self.scanning
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(epoch: u64) -> [u64; STORE_BUCKETS] {
        [epoch; STORE_BUCKETS]
    }

    /// Goal: the first epoch and every change start a pass from id 0; the
    /// same epoch again does nothing; a pass walks by cursor and ends on a
    /// short scan. Method: a scripted sequence of epochs and scans, as a
    /// cloud of the previous version names them (one for every bucket).
    #[test]
    fn a_new_epoch_starts_a_pass_that_walks_by_cursor() {
        let mut refill = Refill::new();
        assert_eq!(refill.poll_scan(), None, "no epoch known yet");
        assert!(refill.handle_epoch(5));
        let scan = refill.poll_scan().unwrap();
        assert_eq!(
            scan,
            RefillScan {
                epochs: all(5),
                after_id: 0
            }
        );
        refill.handle_scanned(scan, &[3, 4], 2);
        assert_eq!(refill.poll_scan().unwrap().after_id, 4);
        assert!(!refill.handle_epoch(5), "the same epoch is no change");
        assert_eq!(refill.poll_scan().unwrap().after_id, 4);
        let scan = refill.poll_scan().unwrap();
        refill.handle_scanned(scan, &[9], 2);
        assert_eq!(refill.poll_scan(), None, "a short scan ends the pass");
        assert!(!refill.is_scanning());
        assert!(refill.handle_epoch(6));
        assert_eq!(
            refill.poll_scan(),
            Some(RefillScan {
                epochs: all(6),
                after_id: 0
            }),
            "a change starts over"
        );
        assert_eq!(refill.passes(), 2);
    }

    /// Goal: a scan answered after the epoch changed does not move the new
    /// pass's cursor. Method: a scan taken, an epoch change, its result.
    #[test]
    fn a_scan_for_an_old_epoch_is_ignored() {
        let mut refill = Refill::new();
        refill.handle_epoch(5);
        let stale = refill.poll_scan().unwrap();
        refill.handle_epoch(6);
        refill.handle_scanned(stale, &[1, 2], 2);
        assert_eq!(
            refill.poll_scan(),
            Some(RefillScan {
                epochs: all(6),
                after_id: 0
            })
        );
        // An empty scan of the current pass ends it.
        let scan = refill.poll_scan().unwrap();
        refill.handle_scanned(scan, &[], 2);
        assert_eq!(refill.epoch_of(3), Some(6));
        assert!(!refill.is_scanning());
    }

    /// Goal: per-bucket epochs: all 16 named start a pass; naming them
    /// again does nothing; one bucket's change starts a pass that scans
    /// with every current epoch (the untouched buckets' included, so their
    /// tuples stay put); a 0 ("not known now") changes nothing and keeps
    /// the epoch known before; the same scan after a change is stale.
    /// Method: scripted bucket epochs and scans.
    #[test]
    fn a_change_in_any_bucket_starts_a_pass_with_every_current_epoch() {
        let mut refill = Refill::new();
        let first: [u64; STORE_BUCKETS] = std::array::from_fn(|bucket| 100 + bucket as u64);
        assert!(refill.handle_epochs((0..16).zip(first)));
        assert!(!refill.handle_epochs((0..16).zip(first)), "no change");
        let scan = refill.poll_scan().unwrap();
        assert_eq!(scan.epochs, first);
        refill.handle_scanned(scan, &[], 10);
        assert!(!refill.is_scanning());
        let mut unknown = first;
        unknown[4] = 0;
        assert!(
            !refill.handle_epochs((0..16).zip(unknown)),
            "0 is no change"
        );
        assert_eq!(refill.epoch_of(4), Some(104));
        assert!(!refill.handle_epochs([(4, 104)]));
        assert!(refill.handle_epochs([(4, 7)]), "one bucket renewed");
        let scan = refill.poll_scan().unwrap();
        let mut renewed = first;
        renewed[4] = 7;
        assert_eq!(scan.epochs, renewed);
        assert_eq!(scan.after_id, 0);
        assert!(refill.handle_epochs([(9, 8)]));
        refill.handle_scanned(scan, &[1], 10);
        assert!(refill.is_scanning(), "a stale scan does not end the pass");
        assert_eq!(refill.passes(), 3);
    }

    #[test]
    fn only_some_buckets_known_is_enough_to_scan() {
        let mut refill = Refill::new();
        assert!(refill.handle_epochs([(2, 9)]));
        let scan = refill.poll_scan().unwrap();
        assert_eq!(scan.epochs[2], 9);
        assert_eq!(scan.epochs.iter().filter(|&&epoch| epoch == 0).count(), 15);
        assert_eq!(refill.epoch_of(3), None);
    }
}
