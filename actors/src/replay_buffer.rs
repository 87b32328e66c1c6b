//! One execution's most recent events, kept in memory for replay, and what
//! they weigh; and the bookkeeping of all executions' buffers together
//! ([`BufferedBytes`]): their total against `max_buffered_bytes`, and which
//! buffers give way first when memory must be freed.
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
use std::ops::SubAssign;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What all the buffers weigh together, and the limit they are kept under.
///
/// It does not own the buffers (each lives with its execution's state, in
/// the Emitter): every call that may empty some is given them all, each
/// with when its execution last had an event (the longest idle give way
/// first), and takes what it frees off the total. Subtracting (`-=`) takes
/// off what a buffer freed elsewhere (a truncation).
#[derive(Debug, Default)]
pub struct BufferedBytes {
    total: usize,
    /// `max_buffered_bytes`; 0: no limit.
    max: usize,
}

impl BufferedBytes {
    /// Nothing buffered yet, under a limit of `max` bytes (0: none).
    pub fn new(max: usize) -> Self {
        BufferedBytes { total: 0, max }
    }

    /// What all the buffers hold, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Applies a change in what the buffers hold (a push's, a clear's).
    pub fn change(&mut self, delta: isize) {
        self.total = (self.total as isize + delta) as usize;
    }

    /// Whether the buffers together hold more than the limit.
    pub fn over_budget(&self) -> bool {
        self.max > 0 && self.total > self.max
    }

    /// Empties the buffers of the longest idle executions until all of them
    /// hold at most three quarters of the limit: the margin makes this (a
    /// sort of the buffered executions) rare under steady load. Returns how
    /// many buffers it emptied.
    pub fn shed<'a>(&mut self, buffers: impl Iterator<Item = Aged<'a>>) -> u64 {
        let target = self.max / 4 * 3;
        let mut held = held(buffers);
        held.sort_by_key(|(_, at)| *at);
        let mut emptied = 0;
        for (buffer, _) in held {
            if self.total <= target {
                break;
            }
            self.total -= buffer.clear();
            emptied += 1;
        }
        emptied
    }

    /// Empties the buffers of executions without an event for `idle` at
    /// `now`; returns how many.
    pub fn empty_idle<'a>(
        &mut self,
        buffers: impl Iterator<Item = Aged<'a>>,
        now: Instant,
        idle: Duration,
    ) -> u64 {
        let idle = held(buffers)
            .into_iter()
            .filter(|(_, at)| now.duration_since(*at) >= idle);
        self.empty(idle)
    }

    /// Beyond `max_held` buffers that hold events, empties those of the
    /// longest idle executions; returns how many.
    pub fn keep_at_most<'a>(
        &mut self,
        buffers: impl Iterator<Item = Aged<'a>>,
        max_held: usize,
    ) -> u64 {
        let mut held = held(buffers);
        if held.len() <= max_held {
            return 0;
        }
        let excess = held.len() - max_held;
        held.sort_by_key(|(_, at)| *at);
        self.empty(held.into_iter().take(excess))
    }

    /// Empties every buffer of `buffers`; returns how many.
    fn empty<'a>(&mut self, buffers: impl Iterator<Item = Aged<'a>>) -> u64 {
        let mut emptied = 0;
        for (buffer, _) in buffers {
            self.total -= buffer.clear();
            emptied += 1;
        }
        emptied
    }
}

impl SubAssign<usize> for BufferedBytes {
    fn sub_assign(&mut self, freed: usize) {
        self.total -= freed;
    }
}

/// One execution's buffer, and when the execution last had an event.
pub type Aged<'a> = (&'a mut ReplayBuffer, Instant);

/// The buffers that hold events, in the order given.
fn held<'a>(buffers: impl Iterator<Item = Aged<'a>>) -> Vec<Aged<'a>> {
    buffers.filter(|(buffer, _)| !buffer.is_empty()).collect()
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

    /// An execution's state as far as the bookkeeping sees it.
    struct State {
        buffer: ReplayBuffer,
        last_event_at: Instant,
    }

    fn aged(states: &mut [State]) -> impl Iterator<Item = Aged<'_>> {
        states.iter_mut().map(|s| (&mut s.buffer, s.last_event_at))
    }

    /// Executions whose last events were `ages_ms` ago, each buffer holding
    /// one event of `thought` (none for an empty `thought`), and the books
    /// over them under `max` bytes.
    fn executions(
        ages_ms: &[u64],
        thought: &str,
        max: usize,
    ) -> (Vec<State>, BufferedBytes, Instant) {
        let now = Instant::now() + Duration::from_secs(60);
        let mut books = BufferedBytes::new(max);
        let states = ages_ms
            .iter()
            .map(|&age| {
                let mut buffer = ReplayBuffer::default();
                if !thought.is_empty() {
                    books.change(buffer.push(event(1, thought), 10));
                }
                let last_event_at = now - Duration::from_millis(age);
                State {
                    buffer,
                    last_event_at,
                }
            })
            .collect();
        (states, books, now)
    }

    fn held_ages(states: &[State], now: Instant) -> Vec<u64> {
        let held = states.iter().filter(|s| !s.buffer.is_empty());
        held.map(|s| now.duration_since(s.last_event_at).as_millis() as u64)
            .collect()
    }

    #[test]
    fn shedding_empties_the_longest_idle_until_three_quarters_of_the_limit() {
        let one = weight(&event(1, "x"));
        // Four buffers of one event each over a limit of three: 3/4 of it
        // holds two, so the two longest idle (400 and 300 ms) go.
        let (mut states, mut books, now) = executions(&[300, 100, 400, 200], "x", 3 * one);
        assert!(books.over_budget(), "{books:?}");
        assert_eq!(books.shed(aged(&mut states)), 2);
        assert_eq!(held_ages(&states, now), vec![100, 200]);
        assert_eq!(books.total(), 2 * one);
        assert!(!books.over_budget());
    }

    #[test]
    fn without_a_limit_nothing_is_ever_over_budget() {
        let (_, books, _) = executions(&[1, 2, 3], &"x".repeat(10_000), 0);
        assert!(books.total() > 30_000);
        assert!(!books.over_budget());
    }

    #[test]
    fn idle_buffers_are_emptied_and_the_total_follows() {
        let one = weight(&event(1, "x"));
        let (mut states, mut books, now) = executions(&[50, 1_500, 999, 1_000], "x", 0);
        let idle = Duration::from_secs(1);
        assert_eq!(books.empty_idle(aged(&mut states), now, idle), 2);
        assert_eq!(held_ages(&states, now), vec![50, 999]);
        assert_eq!(books.total(), 2 * one);
        // Empty buffers are not counted again.
        assert_eq!(books.empty_idle(aged(&mut states), now, Duration::ZERO), 2);
        assert_eq!(books.total(), 0);
        assert_eq!(books.empty_idle(aged(&mut states), now, Duration::ZERO), 0);
    }

    #[test]
    fn beyond_the_cap_the_longest_idle_lose_their_buffers() {
        let one = weight(&event(1, "x"));
        let (mut states, mut books, now) = executions(&[30, 10, 40, 20], "x", 0);
        assert_eq!(books.keep_at_most(aged(&mut states), 4), 0, "at the cap");
        assert_eq!(books.keep_at_most(aged(&mut states), 1), 3);
        assert_eq!(held_ages(&states, now), vec![10]);
        assert_eq!(books.total(), one);
        books -= states[1].buffer.truncate_from(1);
        assert_eq!(books.total(), 0);
        let (mut empty, mut books, _) = executions(&[1, 2], "", 0);
        assert_eq!(books.keep_at_most(aged(&mut empty), 0), 0, "nothing held");
    }
}
