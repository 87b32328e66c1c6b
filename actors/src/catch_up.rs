//! The replay seam, written once: how a subscriber that resumes from a seq
//! catches up on history and goes live without a hole or a repeat. The
//! Session (WebSocket) and the SseStream both keep one [`CatchUp`] per
//! subscription and only say what to do with the events it hands back.
//!
//! # The recipe (Centrifugo's recovery)
//! 1. The subscriber registers with the Registry and holds every live event
//!    that arrives meanwhile ([`CatchUp::on_live`] answers [`Live::Held`]).
//! 2. Once the Registry's `Registered` comes back, every event published
//!    from then on reaches the subscriber live; every event published
//!    before it is in the Emitter's buffer or the store, because the Emitter
//!    buffers before it publishes. So the subscriber reads the history
//!    ([`crate::history::History::read`]) only then.
//! 3. [`CatchUp::finish`] takes the history and gives back the history and
//!    the held events newer than it; from then on a live event at or below
//!    the last seq sent is a duplicate ([`Live::Duplicate`]).
//!
//! # Why a ticket
//! A history read is asynchronous, and a client may unsubscribe and
//! subscribe again to the same execution while one is in flight. The old
//! read's history ends where that read looked, and the events published
//! after it went to the old subscription's held list, which the
//! unsubscribe threw away: applied to the new subscription, it would send
//! it live with a hole between the history and the first event the
//! Registry routed to it. (This is the hole `tests/replay.rs` caught under
//! load: seven events, one commit, skipped.) So each catch-up has a
//! [`Ticket`], a read carries the ticket it was started for, and
//! [`CatchUp::finish`] refuses a history whose ticket is not the current
//! one.
//!
//! # What is de-duplicated
//! Seqs are per execution, so only one execution's seqs can be compared:
//! the [`Floor`]'s. A subscription to an execution has one; a subscription
//! to a conversation has none (its events are routed once per publish and
//! never replayed), unless an SSE client resumed it from an event of one of
//! its executions.

use crate::protocol::PublishedEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Names one catch-up, so that a history read for an older subscription of
/// the same target cannot finish a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Ticket {
    fn next() -> Ticket {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ticket(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The execution whose seqs are de-duplicated, and the last seq of it sent.
#[derive(Debug, Clone)]
pub struct Floor {
    /// The execution.
    pub execution_id: Arc<str>,
    /// Its last seq the client has: anything at or below is a duplicate.
    pub last_seq: u64,
}

impl Floor {
    /// The floor of `execution_id` at `last_seq`.
    pub fn new(execution_id: Arc<str>, last_seq: u64) -> Self {
        Floor {
            execution_id,
            last_seq,
        }
    }

    /// Whether `event` is of this floor's execution.
    fn covers(&self, event: &PublishedEvent) -> bool {
        *self.execution_id == *event.execution_id()
    }
}

enum Phase {
    /// Registering, then reading the history: live events wait here.
    CatchingUp {
        ticket: Ticket,
        held: Vec<Arc<PublishedEvent>>,
    },
    Live,
}

/// What to do with a live event.
#[derive(Debug, PartialEq, Eq)]
pub enum Live {
    /// Send it now.
    Send,
    /// Kept until the history is sent.
    Held,
    /// Already sent (from the history, or live): drop it.
    Duplicate,
}

/// The history and the held events to send, in this order, when a
/// catch-up ends.
#[derive(Debug, Default)]
pub struct Caught {
    /// The replayed history (all of it: the caller applies its filter).
    pub history: Vec<Arc<PublishedEvent>>,
    /// Held live events newer than the history, in order.
    pub held: Vec<Arc<PublishedEvent>>,
}

/// One subscription's place at the replay seam; see the module documentation.
pub struct CatchUp {
    phase: Phase,
    floor: Option<Floor>,
}

impl CatchUp {
    /// A subscription that has just asked to register, de-duplicating by `floor`.
    pub fn new(floor: Option<Floor>) -> Self {
        CatchUp {
            phase: Phase::CatchingUp {
                ticket: Ticket::next(),
                held: Vec::new(),
            },
            floor,
        }
    }

    /// The ticket a history read for this catch-up must carry; `None` once live.
    pub fn ticket(&self) -> Option<Ticket> {
        match &self.phase {
            Phase::CatchingUp { ticket, .. } => Some(*ticket),
            Phase::Live => None,
        }
    }

    /// The de-duplicated execution and its last seq sent, if any.
    pub fn floor(&self) -> Option<&Floor> {
        self.floor.as_ref()
    }

    /// Takes a live event: held while catching up, else sent unless it is a
    /// duplicate. A sent event moves the floor. Allocates nothing but the
    /// held list's growth: this runs once per event per subscriber.
    pub fn on_live(&mut self, event: &Arc<PublishedEvent>) -> Live {
        if let Phase::CatchingUp { held, .. } = &mut self.phase {
            held.push(event.clone());
            return Live::Held;
        }
        self.pass(event)
    }

    /// Ends the catch-up with the history read for `ticket`: the history,
    /// then the held events newer than it. `None` if `ticket` is not this
    /// catch-up's (a read for an older subscription) or it already ended.
    pub fn finish(&mut self, ticket: Ticket, history: Vec<Arc<PublishedEvent>>) -> Option<Caught> {
        if self.ticket() != Some(ticket) {
            return None;
        }
        let Phase::CatchingUp { held, .. } = std::mem::replace(&mut self.phase, Phase::Live) else {
            return None;
        };
        if let (Some(floor), Some(last)) = (&mut self.floor, history.last()) {
            floor.last_seq = floor.last_seq.max(last.seq);
        }
        let held = held
            .into_iter()
            .filter(|event| self.pass(event) == Live::Send)
            .collect();
        Some(Caught { history, held })
    }

    /// Cluster re-sync: seqs of `execution_id` from `from_seq` on are sent
    /// again, and held ones from there are void (the truth follows).
    pub fn resync(&mut self, execution_id: &str, from_seq: u64) {
        let Some(floor) = self
            .floor
            .as_mut()
            .filter(|f| *f.execution_id == *execution_id)
        else {
            return;
        };
        floor.last_seq = floor.last_seq.min(from_seq.saturating_sub(1));
        if let Phase::CatchingUp { held, .. } = &mut self.phase {
            held.retain(|e| e.execution_id() != execution_id || e.seq < from_seq);
        }
    }

    fn pass(&mut self, event: &PublishedEvent) -> Live {
        match &mut self.floor {
            Some(floor) if floor.covers(event) => {
                if event.seq <= floor.last_seq {
                    return Live::Duplicate;
                }
                floor.last_seq = event.seq;
                Live::Send
            }
            _ => Live::Send,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_events::{agent_start as event, seqs};

    fn resuming(after: u64) -> CatchUp {
        CatchUp::new(Some(Floor::new("e".into(), after)))
    }

    #[test]
    fn held_events_follow_the_history_without_a_repeat() {
        let mut seam = resuming(2);
        for seq in 5..=7 {
            assert_eq!(seam.on_live(&event("e", seq)), Live::Held);
        }
        let ticket = seam.ticket().expect("catching up");
        let caught = seam
            .finish(ticket, (3..=6).map(|s| event("e", s)).collect())
            .expect("its own ticket");
        assert_eq!(seqs(&caught.history), [3, 4, 5, 6]);
        assert_eq!(seqs(&caught.held), [7], "5 and 6 came with the history");
        assert_eq!(seam.on_live(&event("e", 7)), Live::Duplicate);
        assert_eq!(seam.on_live(&event("e", 8)), Live::Send);
        assert_eq!(seam.floor().map(|f| f.last_seq), Some(8));
    }

    #[test]
    fn a_history_read_for_an_older_subscription_cannot_finish_a_newer_one() {
        let older = resuming(0);
        let stale = older.ticket().expect("catching up");
        let mut newer = resuming(0);
        assert!(newer.finish(stale, vec![event("e", 1)]).is_none());
        assert!(newer.ticket().is_some(), "still catching up");
        let current = newer.ticket().expect("catching up");
        assert!(newer.finish(current, vec![event("e", 1)]).is_some());
        assert!(
            newer.finish(current, vec![event("e", 1)]).is_none(),
            "once only"
        );
    }

    #[test]
    fn without_a_floor_nothing_is_a_duplicate() {
        let mut seam = CatchUp::new(None);
        let ticket = seam.ticket().expect("catching up");
        seam.on_live(&event("e", 4));
        let caught = seam.finish(ticket, Vec::new()).expect("finish");
        assert_eq!(seqs(&caught.held), [4]);
        assert_eq!(seam.on_live(&event("other", 1)), Live::Send);
        assert_eq!(seam.on_live(&event("e", 1)), Live::Send);
    }

    #[test]
    fn the_floor_counts_only_its_own_execution() {
        let mut seam = resuming(10);
        let ticket = seam.ticket().expect("catching up");
        seam.finish(ticket, Vec::new()).expect("finish");
        assert_eq!(seam.on_live(&event("other", 3)), Live::Send);
        assert_eq!(seam.on_live(&event("e", 3)), Live::Duplicate);
    }

    #[test]
    fn a_resync_moves_the_floor_back_and_voids_held_events_from_there() {
        let mut seam = resuming(0);
        let ticket = seam.ticket().expect("catching up");
        for seq in 1..=4 {
            seam.on_live(&event("e", seq));
        }
        seam.resync("e", 3);
        let caught = seam.finish(ticket, Vec::new()).expect("finish");
        assert_eq!(seqs(&caught.held), [1, 2]);
        seam.resync("e", 2);
        assert_eq!(seam.on_live(&event("e", 2)), Live::Send, "sent again");
    }
}
