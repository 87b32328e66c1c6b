//! One execution's most recent events, kept in memory for replay, and what
//! they weigh.
//!
//! # Why count bytes
//! A buffer holds at most `buffer_size` events, but events differ in size
//! by three orders of magnitude (a short thought, a 64 KiB tool result), so
//! a count alone does not bound memory: 10,000 executions of 100 events each
//! can be a hundred megabytes or sixty gigabytes. Each buffer therefore
//! knows what its events weigh ([`weight`]), and the Emitter keeps the total under
//! `max_buffered_bytes` by emptying the buffers of the longest idle
//! executions first. An emptied buffer costs a replay nothing it needs: with
//! a store the replay reads the store instead; without one, a client asking
//! for what is gone is told so (`replay-unavailable`), as for any buffer
//! that rolled over.

use crate::protocol::PublishedEvent;
use std::collections::VecDeque;
use std::sync::Arc;

/// The recent events of one execution, oldest first.
#[derive(Default)]
pub struct ReplayBuffer {
    events: VecDeque<Arc<PublishedEvent>>,
    bytes: usize,
}

/// What an event is reckoned to weigh in a buffer: its frame, plus
/// [`EVENT_OVERHEAD`] for the parsed event and the bookkeeping beside it.
/// An estimate to bound memory with, not an exact figure.
pub fn weight(event: &PublishedEvent) -> usize {
    event.wire.len() + EVENT_OVERHEAD
}

/// Memory a buffered event takes besides its frame: the parsed event (its
/// strings and metadata map), the `PublishedEvent` and their allocations.
/// From the scaling series (PERFORMANCE.md): about 1.5 KiB of RSS per
/// buffered event whose frame is about 300 bytes.
pub const EVENT_OVERHEAD: usize = 1024;

impl ReplayBuffer {
    /// Adds `event` at the end, dropping the oldest beyond `capacity`
    /// events; returns the change in bytes.
    pub fn push(&mut self, event: Arc<PublishedEvent>, capacity: usize) -> isize {
        let mut delta = 0;
        if capacity == 0 {
            return delta;
        }
        if self.events.len() == capacity {
            if let Some(oldest) = self.events.pop_front() {
                delta -= weight(&oldest) as isize;
            }
        }
        delta += weight(&event) as isize;
        self.events.push_back(event);
        self.bytes = self.bytes.saturating_add_signed(delta);
        delta
    }

    /// Empties the buffer (and frees its memory); returns the bytes freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.bytes;
        *self = ReplayBuffer::default();
        freed
    }

    /// Keeps only the events below `seq`; returns the bytes freed.
    pub fn truncate_from(&mut self, seq: u64) -> usize {
        let before = self.bytes;
        self.events.retain(|e| e.seq < seq);
        self.bytes = self.events.iter().map(|e| weight(e)).sum();
        before - self.bytes
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The bytes of the events held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The oldest seq held.
    pub fn oldest_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// The events held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PublishedEvent>> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AgentEvent;

    fn event(seq: u64, thought: &str) -> Arc<PublishedEvent> {
        let mut event = AgentEvent::from_producer_json(serde_json::json!({
            "type": "agent-thinking", "executionId": "e", "agentId": "a", "thought": thought,
        }))
        .unwrap();
        event.seq = Some(seq);
        PublishedEvent::new(event)
    }

    #[test]
    fn bytes_follow_what_is_held() {
        let mut buffer = ReplayBuffer::default();
        let (one, two, three) = (event(1, "a"), event(2, "bb"), event(3, &"c".repeat(500)));
        let (w1, w2, w3) = (weight(&one), weight(&two), weight(&three));
        assert_eq!(buffer.push(one, 2), w1 as isize);
        assert_eq!(buffer.push(two, 2), w2 as isize);
        // Full: the oldest goes.
        assert_eq!(buffer.push(three, 2), w3 as isize - w1 as isize);
        assert_eq!(buffer.bytes(), w2 + w3);
        assert_eq!(buffer.oldest_seq(), Some(2));
        assert_eq!(buffer.truncate_from(3), w3);
        assert_eq!(buffer.bytes(), w2);
        assert_eq!(buffer.clear(), w2);
        assert!(buffer.is_empty());
        assert_eq!(buffer.bytes(), 0);
        assert_eq!(
            buffer.push(event(4, "d"), 0),
            0,
            "a capacity of 0 keeps nothing"
        );
        assert!(buffer.is_empty());
    }
}
