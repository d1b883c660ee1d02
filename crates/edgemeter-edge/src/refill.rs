//! Refilling a cloud that forgot: which store epoch the edge knows, and
//! where the scan of tuples to ship again stands. No IO: the driver
//! reports every epoch the cloud names (heartbeat and data replies) and
//! each scan's result, and asks here what to scan next.
//!
//! The cloud's store has an epoch, a random id it gets whenever it has
//! none, so a store that lost its data (flushed, restarted without
//! persistence, an empty replica promoted) names a new one. Every tuple is
//! acknowledged under an epoch, which the outbox records. When the cloud
//! names an epoch other than the one the edge knows, a pass starts: the
//! outbox is scanned by id from 0 for acknowledged tuples recorded under
//! another epoch, in batches, and each is shipped again; its reply records
//! the epoch it is stored under now. The edge's first epoch after a start
//! is a change too, since the cloud may have lost its store while the edge
//! was down.
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
//! is not recorded under the current epoch, and the heartbeat keeps naming
//! the store's real one.

#[derive(Debug, Default)]
pub struct Refill {
    /// The store epoch the cloud named last; `None` until it names one.
    epoch: Option<u64>,
    /// Tuples with ids at or below this were scanned in the current pass.
    cursor: i64,
    /// Whether the current pass has tuples left to scan.
    scanning: bool,
    /// Passes started, for the log and tests.
    passes: u64,
}

/// What the driver should scan next: acknowledged tuples not recorded
/// under `epoch`, with ids above `after_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillScan {
    pub epoch: u64,
    pub after_id: i64,
}

impl Refill {
    pub fn new() -> Refill {
        Refill::default()
    }

    /// The store epoch the cloud named last.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// An epoch the cloud named. Returns true when it is not the one the
    /// edge knew: a new pass starts from the first tuple.
    pub fn handle_epoch(&mut self, epoch: u64) -> bool {
        assert_ne!(epoch, 0, "0 is the wire's unknown epoch");
        if self.epoch == Some(epoch) {
            return false;
        }
        self.epoch = Some(epoch);
        self.cursor = 0;
        self.scanning = true;
        self.passes += 1;
        true
    }

    /// The next scan of the current pass, if it has tuples left.
    pub fn poll_scan(&self) -> Option<RefillScan> {
        let epoch = self.epoch?;
        self.scanning.then_some(RefillScan {
            epoch,
            after_id: self.cursor,
        })
    }

    /// The tuple ids a scan for `scan` returned, at most `limit` of them,
    /// ascending. Fewer than `limit` ends the pass. A scan made for an
    /// epoch that is no longer current is ignored (its pass restarted).
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

    /// Goal: the first epoch and every change start a pass from id 0; the
    /// same epoch again does nothing; a pass walks by cursor and ends on a
    /// short scan. Method: a scripted sequence of epochs and scans.
    #[test]
    fn a_new_epoch_starts_a_pass_that_walks_by_cursor() {
        let mut refill = Refill::new();
        assert_eq!(refill.poll_scan(), None, "no epoch known yet");
        assert!(refill.handle_epoch(5));
        let scan = refill.poll_scan().unwrap();
        assert_eq!(
            scan,
            RefillScan {
                epoch: 5,
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
                epoch: 6,
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
                epoch: 6,
                after_id: 0
            })
        );
        // An empty scan of the current pass ends it.
        let scan = refill.poll_scan().unwrap();
        refill.handle_scanned(scan, &[], 2);
        assert_eq!(refill.epoch(), Some(6));
        assert!(!refill.is_scanning());
    }
}
