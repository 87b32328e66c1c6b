//! Where a replay (`subscribe` with `fromSeq`) reads the events it missed.
//!
//! One seam for every source of history: the Emitter's in-memory buffer for
//! the recent past, the store for anything older. The Session never knows
//! where a past event came from.
//!
//! Why the result is checked for holes rather than trusted: the buffer and
//! the store are read at two moments, and the store may lag the buffer by a
//! batch. A replay is either every seq after `fromSeq` with none missing, or
//! a [`ReplayGap`] the client is told about; never a silent hole.

use crate::protocol::PublishedEvent;
use crate::store::{EventQuery, Store};
use actix::prelude::*;
use std::sync::Arc;

/// The buffered events of an execution with `seq > after_seq`: what a
/// replay asks the Emitter (which holds the buffers) first.
#[derive(Message)]
#[rtype(result = "BufferedEvents")]
pub struct ReadBuffer {
    /// The execution.
    pub execution_id: Arc<str>,
    /// Events after this seq.
    pub after_seq: u64,
}

/// What the buffer holds of an execution after a given seq.
#[derive(Debug, Default)]
pub struct BufferedEvents {
    /// The events, in seq order.
    pub events: Vec<Arc<PublishedEvent>>,
    /// The highest seq the execution has reached (0: none yet).
    pub last_seq: u64,
    /// The lowest seq still in the buffer, if any.
    pub oldest_buffered: Option<u64>,
}

/// `fromSeq` asks for events that cannot be replayed without a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayGap {
    /// Why, in words for the client.
    pub reason: String,
}

/// Reads past events of an execution.
#[derive(Clone)]
pub struct History {
    /// The Emitter, which holds the buffers; a `Recipient`, so that the
    /// history (which the Emitter's messages import) names no actor type.
    emitter: Recipient<ReadBuffer>,
    store: Option<Arc<dyn Store>>,
    max_replay: usize,
}

impl History {
    /// History from the Emitter's buffer and, when there is one, the store;
    /// a replay longer than `max_replay` events is refused (read it over HTTP).
    pub fn new(
        emitter: Recipient<ReadBuffer>,
        store: Option<Arc<dyn Store>>,
        max_replay: usize,
    ) -> Self {
        History {
            emitter,
            store,
            max_replay,
        }
    }

    /// Every event of `execution_id` with `seq > after_seq`, in order and
    /// without a hole, or the gap that makes that impossible.
    pub async fn read(
        &self,
        execution_id: Arc<str>,
        after_seq: u64,
    ) -> Result<Vec<Arc<PublishedEvent>>, ReplayGap> {
        let buffered = self
            .emitter
            .send(ReadBuffer {
                execution_id: execution_id.clone(),
                after_seq,
            })
            .await
            .map_err(|_| gap("the broker is stopping"))?;
        if covers(&buffered, after_seq) {
            return Ok(buffered.events);
        }
        let Some(store) = &self.store else {
            if buffered.last_seq == 0 {
                return Ok(Vec::new()); // without a store a counter is never forgotten: nothing yet
            }
            return Err(gap(&match buffered.oldest_buffered {
                Some(oldest) => format!("events before seq {oldest} are no longer held"),
                None => "the events asked for are no longer held".to_owned(),
            }));
        };
        let older = self
            .read_store(
                store.as_ref(),
                &execution_id,
                after_seq,
                buffered.oldest_buffered,
            )
            .await?;
        let joined = join(older, buffered.events);
        check_contiguous(&joined, after_seq)?;
        Ok(joined)
    }

    async fn read_store(
        &self,
        store: &dyn Store,
        execution_id: &str,
        after_seq: u64,
        before_seq: Option<u64>,
    ) -> Result<Vec<Arc<PublishedEvent>>, ReplayGap> {
        let mut query = EventQuery::after(execution_id, after_seq, self.max_replay + 1);
        query.before_seq = before_seq;
        let events = store
            .events(query)
            .await
            .map_err(|err| gap(&format!("the store cannot be read: {err}")))?;
        if events.len() > self.max_replay {
            return Err(gap(&format!(
                "more than {} events to replay; read them with GET /api/executions/{execution_id}/events",
                self.max_replay
            )));
        }
        Ok(events.into_iter().map(PublishedEvent::new).collect())
    }
}

/// Whether the buffer alone holds every event after `after_seq`.
fn covers(buffered: &BufferedEvents, after_seq: u64) -> bool {
    buffered.last_seq > 0 && buffered.last_seq <= after_seq
        || buffered
            .oldest_buffered
            .is_some_and(|oldest| oldest <= after_seq + 1)
}

/// The store's events, then the buffer's newer ones.
fn join(
    older: Vec<Arc<PublishedEvent>>,
    buffered: Vec<Arc<PublishedEvent>>,
) -> Vec<Arc<PublishedEvent>> {
    let last_stored = older.last().map_or(0, |e| e.seq);
    let mut joined = older;
    joined.extend(buffered.into_iter().filter(|e| e.seq > last_stored));
    joined
}

fn check_contiguous(events: &[Arc<PublishedEvent>], after_seq: u64) -> Result<(), ReplayGap> {
    let expected = (after_seq + 1..).zip(events);
    match expected.into_iter().find(|(seq, event)| event.seq != *seq) {
        Some((missing, _)) => Err(gap(&format!(
            "seq {missing} is not available yet (the store is behind); retry shortly"
        ))),
        None => Ok(()),
    }
}

fn gap(reason: &str) -> ReplayGap {
    ReplayGap {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentEvent, AgentStart};

    fn event(seq: u64) -> Arc<PublishedEvent> {
        let mut e = AgentEvent::new(
            "e",
            AgentStart {
                agent_id: "a".into(),
                ..Default::default()
            },
        );
        e.seq = Some(seq);
        PublishedEvent::new(e)
    }

    fn buffered(seqs: std::ops::RangeInclusive<u64>, last_seq: u64) -> BufferedEvents {
        let events: Vec<_> = seqs.map(event).collect();
        BufferedEvents {
            oldest_buffered: events.first().map(|e| e.seq),
            events,
            last_seq,
        }
    }

    #[test]
    fn the_buffer_covers_what_it_holds_and_nothing_older() {
        assert!(covers(&buffered(5..=9, 9), 4));
        assert!(covers(&buffered(5..=9, 9), 7));
        assert!(
            covers(&buffered(5..=9, 9), 9),
            "nothing newer: empty replay"
        );
        assert!(!covers(&buffered(5..=9, 9), 3));
        // Nothing buffered (unknown or evicted execution): only the store can tell.
        assert!(!covers(&BufferedEvents::default(), 0));
    }

    #[test]
    fn store_and_buffer_join_without_overlap_and_holes_are_refused() {
        let joined = join((3..=6).map(event).collect(), (5..=8).map(event).collect());
        let seqs: Vec<u64> = joined.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5, 6, 7, 8]);
        assert!(check_contiguous(&joined, 2).is_ok());
        assert!(check_contiguous(&joined, 1).is_err());
        let holed = join((3..=4).map(event).collect(), (6..=8).map(event).collect());
        assert!(check_contiguous(&holed, 2).is_err());
    }
}
