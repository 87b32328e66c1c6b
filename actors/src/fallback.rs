//! Cluster fallback: what a node does with its producers' events while Redis
//! is unreachable, and how it hands them to the cluster when Redis returns.
//!
//! The original design promises that "Redis connection errors are logged but
//! don't stop events (falls back to local EventEmitter)". So when the sequencer cannot
//! reach Redis, the Emitter gives the events *provisional* seqs from its own
//! counter (the next after the highest it knows), journals them in the store
//! (that is what the 202 then means: `store/journal.rs`), and delivers them
//! to this node's subscribers. Everything after that goes the same way until
//! the journal is empty again, so an execution's events never overtake each
//! other. The Emitter retries publishing the journal, oldest first, with the
//! same draft IDs (a retry of a publish that did reach Redis appends nothing).
//!
//! **Conflicts.** Another node may have used the same seqs meanwhile: it
//! produced for the same execution during the outage, or only this node was
//! cut off. The rule is deterministic: *the stream's first writer wins*. A
//! provisional event either gets its provisional seq from the script
//! (confirmed), or a later one; and an event of another node may arrive from
//! the stream at a seq this node had shown provisionally. Either way, from
//! the first seq in dispute the execution is **re-synced**: its subscribers
//! here get `{"type":"resync","executionId":…,"fromSeq":N}` (docs/protocol.md,
//! "resync": drop what you hold from N on; what follows from N is the truth),
//! the provisional events from N on leave the replay buffer, and this node's
//! displaced events are published again and get new seqs after the winner's.
//! The trade-off, as Centrifugo's epochs make it: during a split a client may
//! briefly see a seq that is later given to another event, and is told so;
//! nothing acknowledged is lost, and every node converges on one order.
//!
//! This module is the bookkeeping only (no actor, no I/O), owned by the Emitter.

use crate::protocol::PublishedEvent;
use crate::store::JournalEntry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// One provisional event waiting to be in the cluster's stream.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its journal entry (draft ID, position, the event with its provisional seq).
    pub entry: JournalEntry,
    /// Whether subscribers here saw it under its provisional seq. An event
    /// displaced by a conflict is not shown any more: whatever seq it gets
    /// later is news, not a conflict.
    pub shown: bool,
}

/// What became of one published provisional event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// It got its provisional seq: its stream copy must not go live twice.
    Confirmed,
    /// It got another seq: the execution re-syncs from its provisional one.
    Conflict,
    /// It had been displaced already; it arrives from the stream as news.
    Republished,
}

/// The provisional events of one node and what is known of their fate.
#[derive(Debug, Default)]
pub struct Fallback {
    pending: VecDeque<Pending>,
    /// Per execution, the highest confirmed provisional seq: its stream copy
    /// (and those below it) must be stored but not delivered a second time.
    confirmed: HashMap<Arc<str>, u64>,
    last_position: u64,
}

impl Fallback {
    /// Whether events must go the fallback way: something is still waiting,
    /// and nothing may overtake it.
    pub fn is_active(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Provisional events waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A journal position after every one given so far (and after `now_nanos`,
    /// so positions keep growing across restarts).
    pub fn next_position(&mut self, now_nanos: u64) -> u64 {
        self.last_position = (self.last_position + 1).max(now_nanos);
        self.last_position
    }

    /// Takes journaled events as waiting (and shown: they went live here).
    pub fn add(&mut self, entries: impl IntoIterator<Item = JournalEntry>) {
        for entry in entries {
            self.last_position = self.last_position.max(entry.position);
            self.pending.push_back(Pending { entry, shown: true });
        }
    }

    /// Whether events of `execution_id` wait here.
    pub fn holds(&self, execution_id: &str) -> bool {
        self.pending
            .iter()
            .any(|p| p.entry.event.execution_id() == execution_id)
    }

    /// Everything waiting, oldest first (to publish).
    pub fn waiting(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }

    /// Records what the script gave the first `seqs.len()` waiting events and
    /// removes them; returns each one's fate and, per execution, the first
    /// provisional seq in dispute.
    pub fn settle(&mut self, seqs: &[u64]) -> (Vec<Settled>, Vec<(Arc<str>, u64)>) {
        let mut fates = Vec::with_capacity(seqs.len());
        let mut disputes: Vec<(Arc<str>, u64)> = Vec::new();
        for &seq in seqs {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            let event = &pending.entry.event;
            let execution: Arc<str> = event.execution_id().into();
            let disputed = disputes.iter().any(|(x, _)| *x == execution);
            let fate = if !pending.shown {
                Settled::Republished
            } else if seq == event.seq && !disputed {
                let confirmed = self.confirmed.entry(execution).or_default();
                *confirmed = (*confirmed).max(seq);
                Settled::Confirmed
            } else {
                if !disputed {
                    disputes.push((execution, event.seq));
                }
                Settled::Conflict
            };
            fates.push(fate);
        }
        (fates, disputes)
    }

    /// Events read from the stream, checked against what was shown here: an
    /// execution with provisional events shown and still waiting has been
    /// written by another node. Returns, per such execution, its first
    /// provisional seq, and marks its waiting events displaced.
    pub fn disputes(&mut self, arrived: &[Arc<PublishedEvent>]) -> Vec<(Arc<str>, u64)> {
        let mut disputes: Vec<(Arc<str>, u64)> = Vec::new();
        for event in arrived {
            let execution = event.execution_id();
            if disputes.iter().any(|(x, _)| &**x == execution) {
                continue;
            }
            let first_shown = self
                .pending
                .iter()
                .filter(|p| p.shown && p.entry.event.execution_id() == execution)
                .map(|p| p.entry.event.seq)
                .min();
            // Every provisional seq shown for the execution is in dispute: the
            // stream holds another node's events from where this node's began.
            if let Some(first) = first_shown {
                disputes.push((execution.into(), first));
            }
        }
        for (execution, _) in &disputes {
            for pending in &mut self.pending {
                if pending.entry.event.execution_id() == &**execution {
                    pending.shown = false;
                }
            }
        }
        disputes
    }

    /// Whether a stream event is the copy of a confirmed provisional one
    /// (already live here): store it, do not deliver it again.
    pub fn was_live(&mut self, event: &PublishedEvent) -> bool {
        let Some(&confirmed) = self.confirmed.get(event.execution_id()) else {
            return false;
        };
        if event.seq >= confirmed {
            // The last copy has come: nothing more to remember.
            self.confirmed.remove(event.execution_id());
        }
        event.seq <= confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentEvent, AgentStart};

    fn entry(execution: &str, seq: u64, position: u64) -> JournalEntry {
        let mut event = AgentEvent::new(
            execution,
            AgentStart {
                agent_id: format!("a{position}"),
                ..Default::default()
            },
        );
        event.seq = Some(seq);
        JournalEntry {
            node_id: "node-a".into(),
            draft_id: format!("d{position}"),
            position,
            event: PublishedEvent::new(event),
        }
    }

    fn stream_event(execution: &str, seq: u64) -> Arc<PublishedEvent> {
        entry(execution, seq, 999).event
    }

    #[test]
    fn provisional_seqs_that_come_back_unchanged_are_confirmed() {
        let mut fallback = Fallback::default();
        fallback.add([entry("x", 5, 1), entry("x", 6, 2), entry("y", 1, 3)]);
        assert!(fallback.is_active());
        assert!(fallback.holds("x") && fallback.holds("y") && !fallback.holds("z"));
        let (fates, disputes) = fallback.settle(&[5, 6, 1]);
        assert_eq!(fates, vec![Settled::Confirmed; 3]);
        assert!(disputes.is_empty());
        assert!(fallback.is_empty());
        assert!(!fallback.holds("x"));
        // Their stream copies are stored, not delivered again; later ones are news.
        assert!(fallback.was_live(&stream_event("x", 5)));
        assert!(fallback.was_live(&stream_event("x", 6)));
        assert!(!fallback.was_live(&stream_event("x", 7)));
        assert!(fallback.was_live(&stream_event("y", 1)));
    }

    #[test]
    fn a_seq_taken_by_another_node_disputes_the_rest_of_its_execution() {
        let mut fallback = Fallback::default();
        fallback.add([entry("x", 5, 1), entry("x", 6, 2), entry("y", 3, 3)]);
        // Another node had taken 5 and 6: ours come back as 7 and 8.
        let (fates, disputes) = fallback.settle(&[7, 8, 3]);
        assert_eq!(
            fates,
            [Settled::Conflict, Settled::Conflict, Settled::Confirmed]
        );
        assert_eq!(disputes, vec![(Arc::from("x"), 5)]);
        assert!(
            !fallback.was_live(&stream_event("x", 7)),
            "news, not a copy"
        );
    }

    #[test]
    fn once_disputed_an_execution_stays_disputed_within_a_settle() {
        let mut fallback = Fallback::default();
        fallback.add([entry("x", 5, 1), entry("x", 6, 2)]);
        // 5 went elsewhere; 6 happens to come back as 6, but the client's 6
        // follows a 5 that is gone: it re-syncs from 5 all the same.
        let (fates, disputes) = fallback.settle(&[7, 6]);
        assert_eq!(fates, [Settled::Conflict, Settled::Conflict]);
        assert_eq!(disputes, vec![(Arc::from("x"), 5)]);
    }

    #[test]
    fn another_nodes_event_in_the_stream_displaces_what_was_shown() {
        let mut fallback = Fallback::default();
        fallback.add([entry("x", 5, 1), entry("x", 6, 2), entry("y", 2, 3)]);
        let disputes = fallback.disputes(&[stream_event("x", 5), stream_event("x", 6)]);
        assert_eq!(disputes, vec![(Arc::from("x"), 5)]);
        // Displaced events are news whatever seq they get; y is untouched.
        assert!(fallback.disputes(&[stream_event("x", 7)]).is_empty());
        let (fates, disputes) = fallback.settle(&[7, 8, 2]);
        assert_eq!(
            fates,
            [
                Settled::Republished,
                Settled::Republished,
                Settled::Confirmed
            ]
        );
        assert!(disputes.is_empty());
    }

    #[test]
    fn positions_keep_growing() {
        let mut fallback = Fallback::default();
        let first = fallback.next_position(1_000);
        let second = fallback.next_position(1_000);
        assert!(second > first);
        fallback.add([entry("x", 1, 5_000)]);
        assert!(
            fallback.next_position(10) > 5_000,
            "after what the journal holds"
        );
    }
}
