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
//!
//! A hole at the end counts too: the replay must reach the highest seq the
//! Emitter had released (or passed over) when the buffer was read, since
//! every later event reaches the subscriber live, and none before it does.
//! In a store-once cluster the store may lag that by the store-once
//! writer's few milliseconds (an execution nobody on this node watched is
//! not buffered here: the Emitter keeps only its last seconds, raw), so a
//! replay the store cannot complete yet is read again, a few times over
//! about two and a half seconds, before it is refused.

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
    /// The highest seq released to live delivery (or passed over): the
    /// replay must reach it.
    pub released_seq: u64,
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
        let mut wait = FIRST_STORE_WAIT;
        loop {
            match self.read_once(execution_id.clone(), after_seq).await {
                Err(Read::Behind(_)) if wait <= LAST_STORE_WAIT => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(Read::Behind(gap) | Read::Gap(gap)) => return Err(gap),
                Ok(events) => return Ok(events),
            }
        }
    }

    /// One attempt: the buffer, then the store for what it lacks.
    async fn read_once(
        &self,
        execution_id: Arc<str>,
        after_seq: u64,
    ) -> Result<Vec<Arc<PublishedEvent>>, Read> {
        let buffered = self
            .emitter
            .send(ReadBuffer {
                execution_id: execution_id.clone(),
                after_seq,
            })
            .await
            .map_err(|_| Read::Gap(gap("the broker is stopping")))?;
        if covers(&buffered, after_seq) {
            return Ok(buffered.events);
        }
        let Some(store) = &self.store else {
            if buffered.last_seq == 0 {
                return Ok(Vec::new()); // without a store a counter is never forgotten: nothing yet
            }
            return Err(Read::Gap(gap(&match buffered.oldest_buffered {
                Some(oldest) => format!("events before seq {oldest} are no longer held"),
                None => "the events asked for are no longer held".to_owned(),
            })));
        };
        let older = self
            .read_store(
                store.as_ref(),
                &execution_id,
                after_seq,
                buffered.oldest_buffered,
            )
            .await
            .map_err(Read::Gap)?;
        let joined = join(older, buffered.events);
        check_contiguous(&joined, after_seq, buffered.released_seq).map_err(Read::Behind)?;
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

/// How a read failed: for good, or because the store is behind (worth
/// reading again shortly).
enum Read {
    Gap(ReplayGap),
    Behind(ReplayGap),
}

/// The first wait before the store is read again; doubled up to the last.
const FIRST_STORE_WAIT: std::time::Duration = std::time::Duration::from_millis(10);
/// The last wait: 10 + 20 + … + 1280 ms, about 2.5 s in all.
const LAST_STORE_WAIT: std::time::Duration = std::time::Duration::from_millis(1280);

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

/// Every seq after `after_seq`, without a hole, through `released_seq` at least.
fn check_contiguous(
    events: &[Arc<PublishedEvent>],
    after_seq: u64,
    released_seq: u64,
) -> Result<(), ReplayGap> {
    let expected = (after_seq + 1..).zip(events);
    let missing = match expected.into_iter().find(|(seq, event)| event.seq != *seq) {
        Some((missing, _)) => Some(missing),
        None => {
            let reached = events.last().map_or(after_seq, |e| e.seq);
            (reached < released_seq).then_some(reached + 1)
        }
    };
    match missing {
        Some(missing) => Err(gap(&format!(
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
            released_seq: last_seq,
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
        assert!(check_contiguous(&joined, 2, 8).is_ok());
        assert!(check_contiguous(&joined, 1, 8).is_err());
        let holed = join((3..=4).map(event).collect(), (6..=8).map(event).collect());
        assert!(check_contiguous(&holed, 2, 8).is_err());
    }

    #[test]
    fn a_replay_must_reach_what_was_released() {
        // Seqs up to 6 went live (or were passed over) before the buffer was
        // read; a store that has only up to 4 leaves a hole at the end.
        let stored: Vec<_> = (3..=4).map(event).collect();
        assert!(check_contiguous(&stored, 2, 6).is_err());
        assert!(check_contiguous(&stored, 2, 4).is_ok());
        assert!(
            check_contiguous(&[], 2, 2).is_ok(),
            "nothing released after 2"
        );
        assert!(check_contiguous(&[], 2, 3).is_err());
    }
}
