//! Correctness accounting by `seq`: what each subscriber saw of each
//! execution, what the target acknowledged, and the lost, duplicated and
//! reordered events that follow from the two.
//!
//! The ground truth is the target's own receipts: every 202 names the
//! `(executionId, seq)` of each accepted event. A subscriber that subscribed
//! before the first event was posted must then see exactly those seqs, each
//! once, in increasing order. Anything else is counted, never hidden.

/// Seqs above this are not tracked one by one (a bitset that large would be
/// the tool's own memory problem); they count as unexpected.
const MAX_TRACKED_SEQ: u64 = 1 << 32;

/// What one subscriber saw of one execution.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    /// Bit `seq` is set once `seq` arrived.
    seen: Vec<u64>,
    max_seen: u64,
    pub received: u64,
    pub distinct: u64,
    /// Arrivals of a seq that had already arrived.
    pub duplicates: u64,
    /// First arrivals of a seq below one that had already arrived.
    pub reordered: u64,
    /// Seqs too large to track (or 0, which no target assigns).
    pub untracked: u64,
}

/// What an arrival was, so the caller counts progress only for new events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    New,
    Duplicate,
    Untracked,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> Arrival {
        self.received += 1;
        if seq == 0 || seq >= MAX_TRACKED_SEQ {
            self.untracked += 1;
            return Arrival::Untracked;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= 1 << bit;
        self.distinct += 1;
        if seq < self.max_seen {
            self.reordered += 1;
        }
        self.max_seen = self.max_seen.max(seq);
        Arrival::New
    }

    pub fn contains(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        word < self.seen.len() && self.seen[word] & (1 << (seq % 64)) != 0
    }

    /// Acknowledged seqs (sorted, distinct) that never arrived.
    pub fn lost(&self, acked: &[u64]) -> u64 {
        acked.iter().filter(|&&seq| !self.contains(seq)).count() as u64
    }

    /// Seqs that arrived without having been acknowledged (another
    /// producer's events, or a request whose answer never came).
    pub fn unexpected(&self, acked: &[u64]) -> u64 {
        let expected_seen = acked.len() as u64 - self.lost(acked);
        self.distinct.saturating_sub(expected_seen) + self.untracked
    }
}

/// The seqs the target acknowledged, per execution.
#[derive(Clone, Debug, Default)]
pub struct AckBook {
    per_execution: Vec<Vec<u64>>,
}

/// What the receipts say about the target's sequencing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckCheck {
    /// The same `(executionId, seq)` acknowledged twice.
    pub duplicates: u64,
    /// Seqs missing between 1 and the highest acknowledged one: the target
    /// skipped a number, or stored an event whose answer was lost.
    pub gaps: u64,
}

impl AckBook {
    pub fn new(executions: usize) -> Self {
        AckBook {
            per_execution: vec![Vec::new(); executions],
        }
    }

    pub fn add(&mut self, execution: usize, seq: u64) {
        self.per_execution[execution].push(seq);
    }

    /// Sorts, removes and counts duplicates, and counts gaps. Call once,
    /// after every receipt is in.
    pub fn settle(&mut self) -> AckCheck {
        let mut check = AckCheck::default();
        for seqs in &mut self.per_execution {
            seqs.sort_unstable();
            let before = seqs.len();
            seqs.dedup();
            check.duplicates += (before - seqs.len()) as u64;
            if let Some(&max) = seqs.last() {
                // Fresh executions start at 1 (the tool names them uniquely).
                check.gaps += max.saturating_sub(seqs.len() as u64);
            }
        }
        check
    }

    /// The settled seqs of one execution.
    pub fn acked(&self, execution: usize) -> &[u64] {
        &self.per_execution[execution]
    }

    pub fn total(&self) -> u64 {
        self.per_execution.iter().map(|s| s.len() as u64).sum()
    }
}

/// Totals over every subscriber and execution of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Correctness {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub unexpected: u64,
    /// Subscribers with at least one lost, duplicated or reordered event.
    pub subscribers_affected: u64,
    /// The worst single subscriber's lost events.
    pub max_lost_per_subscriber: u64,
}

impl Correctness {
    /// Adds one subscriber's trackers, `(execution, tracker)`, checked
    /// against the settled book.
    pub fn add_subscriber<'a>(
        &mut self,
        book: &AckBook,
        trackers: impl IntoIterator<Item = (usize, &'a SeqTracker)>,
    ) {
        let (mut lost, mut dup, mut reordered) = (0, 0, 0);
        for (execution, tracker) in trackers {
            let acked = book.acked(execution);
            lost += tracker.lost(acked);
            dup += tracker.duplicates;
            reordered += tracker.reordered;
            self.unexpected += tracker.unexpected(acked);
        }
        self.lost += lost;
        self.duplicated += dup;
        self.reordered += reordered;
        self.max_lost_per_subscriber = self.max_lost_per_subscriber.max(lost);
        if lost + dup + reordered > 0 {
            self.subscribers_affected += 1;
        }
    }

    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0 && self.unexpected == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_delivery_is_clean() {
        let t = tracker(&[1, 2, 3, 4]);
        assert_eq!((t.distinct, t.duplicates, t.reordered), (4, 0, 0));
        assert_eq!(t.lost(&[1, 2, 3, 4]), 0);
        assert_eq!(t.unexpected(&[1, 2, 3, 4]), 0);
    }

    #[test]
    fn a_missing_seq_is_lost() {
        let t = tracker(&[1, 2, 4]);
        assert_eq!(t.lost(&[1, 2, 3, 4]), 1);
        assert_eq!(t.reordered, 0);
    }

    #[test]
    fn a_repeated_seq_is_a_duplicate_not_new() {
        let mut t = tracker(&[1, 2]);
        assert_eq!(t.record(2), Arrival::Duplicate);
        assert_eq!(t.record(3), Arrival::New);
        assert_eq!((t.received, t.distinct, t.duplicates), (4, 3, 1));
        assert_eq!(t.lost(&[1, 2, 3]), 0);
    }

    #[test]
    fn a_late_seq_is_reordered_not_lost() {
        let t = tracker(&[1, 3, 2, 4]);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.lost(&[1, 2, 3, 4]), 0);
        // A late duplicate is a duplicate, not a second reordering.
        let t = tracker(&[1, 3, 2, 2]);
        assert_eq!((t.reordered, t.duplicates), (1, 1));
    }

    #[test]
    fn seqs_nobody_acknowledged_are_unexpected() {
        let t = tracker(&[1, 2, 3, 0, u64::MAX]);
        assert_eq!(t.untracked, 2);
        assert_eq!(t.unexpected(&[1, 2]), 3);
        assert_eq!(t.lost(&[1, 2]), 0);
    }

    #[test]
    fn seqs_across_bitset_words() {
        let seqs: Vec<u64> = (1..=200).collect();
        let t = tracker(&seqs);
        assert_eq!(t.lost(&seqs), 0);
        assert!(t.contains(64) && t.contains(128) && t.contains(200));
        assert!(!t.contains(201) && !t.contains(10_000));
    }

    #[test]
    fn ack_book_finds_duplicates_and_gaps() {
        let mut book = AckBook::new(2);
        for seq in [3, 1, 2, 2] {
            book.add(0, seq);
        }
        for seq in [1, 4] {
            book.add(1, seq);
        }
        let check = book.settle();
        assert_eq!(
            check,
            AckCheck {
                duplicates: 1,
                gaps: 2
            }
        );
        assert_eq!(book.acked(0), &[1, 2, 3]);
        assert_eq!(book.total(), 5);
    }

    #[test]
    fn correctness_totals_per_subscriber() {
        let mut book = AckBook::new(2);
        for seq in 1..=3 {
            book.add(0, seq);
            book.add(1, seq);
        }
        book.settle();
        let clean = tracker(&[1, 2, 3]);
        let lossy = tracker(&[1, 3]);
        let doubled = tracker(&[1, 2, 2, 3]);
        let mut c = Correctness::default();
        c.add_subscriber(&book, [(0, &clean), (1, &clean)]);
        assert!(c.is_clean());
        c.add_subscriber(&book, [(0, &lossy), (1, &doubled)]);
        assert_eq!(
            c,
            Correctness {
                lost: 1,
                duplicated: 1,
                reordered: 0,
                unexpected: 0,
                subscribers_affected: 1,
                max_lost_per_subscriber: 1,
            }
        );
        assert!(!c.is_clean());
    }
}
