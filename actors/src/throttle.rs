//! The per-execution event rate, and how `agent-thinking` bursts are coalesced.
//!
//! The original design warns against "extremely high frequency (>100/sec per
//! execution)": one runaway agent loop should not flood every subscriber of
//! its execution, nor the store. So each execution gets a token bucket
//! (`max_events_per_sec_per_execution`, bursts of twice that), and the policy
//! when it runs dry depends on what the event is:
//!
//! - **`agent-thinking` is coalesced.** A thought is a progress report that
//!   the next thought replaces, so the newest one wins: it waits (one slot per
//!   execution) until the bucket has a token, and any older thought still
//!   waiting is superseded. The thought that goes out records how many it
//!   replaced in `metadata.coalesced`, so nothing disappears without a trace;
//!   the producer is told `coalesced: true` instead of a seq.
//! - **Every other type is refused** with `rate-limited` (HTTP 429): a tool
//!   call or a quality check is a fact, never silently dropped or merged. A
//!   batch is all or nothing, as everywhere else.
//!
//! Order stays what the producer sent: a thought waiting in the slot goes out
//! before any later event of its execution (without waiting for a token, so
//! a burst can exceed the rate by at most one thought per event).
//!
//! The Emitter owns one [`Throttle`]; [`Throttle::plan`] decides a batch
//! without changing anything, and [`Throttle::commit`] applies the decision
//! once the batch is certain to be accepted, so a batch refused for another
//! reason spends no tokens and supersedes no thought. In a cluster each node
//! limits what its own producers send.

use crate::event::{AgentEvent, EventType};
use crate::limits::Bucket;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Instant;

/// The `metadata` key saying how many older thoughts a thought replaced.
pub const COALESCED_KEY: &str = "coalesced";

/// What became of one event of a planned batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It goes out now, at this position of [`Plan::events`].
    Now(usize),
    /// It is an `agent-thinking` held in its execution's slot: it goes out
    /// later unless a newer thought replaces it first.
    Coalesced,
}

/// The batch refused: an execution is over its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverRate {
    /// The first event of the batch that found no token.
    pub index: usize,
    /// Its execution.
    pub execution_id: String,
}

/// A batch decided by [`Throttle::plan`], to apply with [`Throttle::commit`].
#[derive(Debug)]
pub struct Plan {
    /// The events to sequence now, in order: the batch's own, with any
    /// thought that waited in a slot placed before the first later event of
    /// its execution.
    pub events: Vec<AgentEvent>,
    /// For each event of the batch, in its order, what became of it.
    pub outcomes: Vec<Outcome>,
    /// Waiting thoughts this batch replaced with newer ones.
    pub superseded: u64,
    /// The slots of the executions the batch touched, as they will be.
    slots: HashMap<String, Slot>,
}

impl Plan {
    /// Every event goes out now, in order (no limit, or events already admitted).
    pub fn all_now(batch: Vec<AgentEvent>) -> Self {
        Plan {
            outcomes: (0..batch.len()).map(Outcome::Now).collect(),
            events: batch,
            superseded: 0,
            slots: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    bucket: Bucket,
    /// The newest thought waiting for a token, and how many older ones it replaced.
    waiting: Option<(AgentEvent, u64)>,
}

/// Per-execution token buckets and thought slots; see the module documentation.
#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    burst: f64,
    /// Only executions that are short of tokens or hold a thought: a full
    /// bucket with nothing waiting is dropped by [`Throttle::due`].
    slots: HashMap<String, Slot>,
}

impl Throttle {
    /// `rate` events a second per execution, bursts of twice that; 0: no limit.
    pub fn new(rate: u64) -> Self {
        let rate = rate as f64;
        Throttle {
            rate,
            burst: rate * 2.0,
            slots: HashMap::new(),
        }
    }

    /// Whether there is a limit at all.
    pub fn is_on(&self) -> bool {
        self.rate > 0.0
    }

    /// Decides a batch at `now`, changing nothing.
    pub fn plan(&self, batch: Vec<AgentEvent>, now: Instant) -> Result<Plan, OverRate> {
        if !self.is_on() {
            return Ok(Plan::all_now(batch));
        }
        let mut plan = Plan {
            events: Vec::with_capacity(batch.len()),
            outcomes: Vec::with_capacity(batch.len()),
            superseded: 0,
            slots: HashMap::new(),
        };
        // Tokens the batch's later facts (non-thoughts) will need, per execution:
        // a thought may only take a token that no later fact of its batch needs.
        let mut facts_ahead: HashMap<String, f64> = HashMap::new();
        for event in batch.iter().filter(|e| !is_thought(e)) {
            *facts_ahead.entry(event.execution_id.clone()).or_default() += 1.0;
        }
        for (index, event) in batch.into_iter().enumerate() {
            let slot = plan
                .slots
                .entry(event.execution_id.clone())
                .or_insert_with(|| {
                    self.slots
                        .get(&event.execution_id)
                        .cloned()
                        .unwrap_or_else(|| Slot {
                            bucket: Bucket::new_at(self.rate, self.burst, now),
                            waiting: None,
                        })
                });
            let ahead = facts_ahead.entry(event.execution_id.clone()).or_default();
            if is_thought(&event) {
                let replaced = slot.waiting.take().map_or(0, |(_, n)| n + 1);
                plan.superseded += u64::from(replaced > 0);
                if slot.bucket.available_at(now) - *ahead >= 1.0 {
                    slot.bucket.take_at(1.0, now);
                    plan.outcomes.push(Outcome::Now(plan.events.len()));
                    plan.events.push(with_coalesced(event, replaced));
                } else {
                    slot.waiting = Some((event, replaced));
                    plan.outcomes.push(Outcome::Coalesced);
                }
                continue;
            }
            *ahead -= 1.0;
            if !slot.bucket.take_at(1.0, now) {
                return Err(OverRate {
                    index,
                    execution_id: event.execution_id,
                });
            }
            if let Some((thought, replaced)) = slot.waiting.take() {
                plan.events.push(with_coalesced(thought, replaced));
            }
            plan.outcomes.push(Outcome::Now(plan.events.len()));
            plan.events.push(event);
        }
        Ok(plan)
    }

    /// Applies a plan: its executions' buckets and slots become what it decided.
    pub fn commit(&mut self, plan: &mut Plan) {
        self.slots.extend(plan.slots.drain());
    }

    /// The waiting thoughts whose execution has a token again at `now`, ready
    /// to go out; forgets executions with a full bucket and nothing waiting.
    pub fn due(&mut self, now: Instant) -> Vec<AgentEvent> {
        let mut due = Vec::new();
        self.slots.retain(|_, slot| {
            if slot.waiting.is_some() && slot.bucket.take_at(1.0, now) {
                let (thought, replaced) = slot.waiting.take().expect("checked above");
                due.push(with_coalesced(thought, replaced));
            }
            slot.waiting.is_some() || !slot.bucket.is_full_at(now)
        });
        due
    }

    /// Every waiting thought, tokens or not (the broker is stopping: a thought
    /// the producer was told is coalesced must not be lost).
    pub fn drain(&mut self) -> Vec<AgentEvent> {
        self.slots
            .values_mut()
            .filter_map(|slot| slot.waiting.take())
            .map(|(thought, replaced)| with_coalesced(thought, replaced))
            .collect()
    }

    /// Thoughts waiting in slots now.
    pub fn waiting(&self) -> usize {
        self.slots.values().filter(|s| s.waiting.is_some()).count()
    }
}

fn is_thought(event: &AgentEvent) -> bool {
    event.event_type() == EventType::AgentThinking
}

/// The thought, saying in its metadata how many older thoughts it replaced (if any).
fn with_coalesced(mut thought: AgentEvent, replaced: u64) -> AgentEvent {
    if replaced > 0 {
        thought
            .metadata
            .get_or_insert_with(Map::new)
            .insert(COALESCED_KEY.into(), Value::from(replaced));
    }
    thought
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentThinking, EventKind, ToolCall};
    use std::time::Duration;

    fn thought(execution: &str, text: &str) -> AgentEvent {
        AgentEvent::new(
            execution,
            EventKind::AgentThinking(AgentThinking {
                agent_id: "a1".into(),
                thought: text.into(),
                step: None,
            }),
        )
    }

    fn fact(execution: &str) -> AgentEvent {
        AgentEvent::new(
            execution,
            EventKind::ToolCall(ToolCall {
                agent_id: "a1".into(),
                tool_name: "search".into(),
                ..ToolCall::default()
            }),
        )
    }

    fn thought_text(event: &AgentEvent) -> &str {
        match &event.kind {
            EventKind::AgentThinking(t) => &t.thought,
            _ => panic!("not a thought"),
        }
    }

    fn coalesced(event: &AgentEvent) -> Option<u64> {
        event.metadata.as_ref()?.get(COALESCED_KEY)?.as_u64()
    }

    /// Plans and commits, as the Emitter does.
    fn admit(
        throttle: &mut Throttle,
        batch: Vec<AgentEvent>,
        now: Instant,
    ) -> Result<Plan, OverRate> {
        let mut plan = throttle.plan(batch, now)?;
        throttle.commit(&mut plan);
        Ok(plan)
    }

    #[test]
    fn off_lets_everything_through_in_order() {
        let throttle = Throttle::new(0);
        let plan = throttle
            .plan((0..500).map(|_| fact("e")).collect(), Instant::now())
            .unwrap();
        assert_eq!(plan.events.len(), 500);
        assert_eq!(plan.outcomes[499], Outcome::Now(499));
    }

    #[test]
    fn facts_beyond_the_burst_are_refused_whole_and_spend_nothing() {
        let mut throttle = Throttle::new(2); // bursts of 4
        let now = Instant::now();
        admit(&mut throttle, vec![fact("e"), fact("e"), fact("e")], now).unwrap();
        let refused = throttle.plan(vec![fact("e"), fact("e")], now).unwrap_err();
        assert_eq!(refused.index, 1);
        assert_eq!(refused.execution_id, "e");
        // The refusal took nothing: one token is still there.
        admit(&mut throttle, vec![fact("e")], now).unwrap();
        assert!(throttle.plan(vec![fact("e")], now).is_err());
        // Another execution has its own bucket.
        admit(&mut throttle, vec![fact("other")], now).unwrap();
        // Half a second later one token has come back.
        let later = now + Duration::from_millis(500);
        admit(&mut throttle, vec![fact("e")], later).unwrap();
    }

    #[test]
    fn the_newest_thought_wins_and_counts_what_it_replaced() {
        let mut throttle = Throttle::new(1); // bursts of 2
        let now = Instant::now();
        let first = admit(
            &mut throttle,
            vec![thought("e", "t1"), thought("e", "t2")],
            now,
        )
        .unwrap();
        assert_eq!(first.events.len(), 2);
        let held = admit(
            &mut throttle,
            vec![thought("e", "t3"), thought("e", "t4"), thought("e", "t5")],
            now,
        )
        .unwrap();
        assert!(held.events.is_empty());
        assert_eq!(held.outcomes, vec![Outcome::Coalesced; 3]);
        assert_eq!(held.superseded, 2);
        assert_eq!(throttle.waiting(), 1);
        assert!(throttle.due(now).is_empty(), "no token yet");
        let due = throttle.due(now + Duration::from_secs(1));
        assert_eq!(due.len(), 1);
        assert_eq!(thought_text(&due[0]), "t5");
        assert_eq!(coalesced(&due[0]), Some(2), "t3 and t4 were replaced");
        assert_eq!(throttle.waiting(), 0);
    }

    #[test]
    fn a_waiting_thought_goes_out_before_the_next_fact() {
        let mut throttle = Throttle::new(1);
        let now = Instant::now();
        admit(&mut throttle, vec![fact("e"), thought("e", "t1")], now).unwrap();
        admit(&mut throttle, vec![thought("e", "t2")], now).unwrap();
        let later = now + Duration::from_secs(1);
        let plan = admit(&mut throttle, vec![fact("e")], later).unwrap();
        assert_eq!(plan.events.len(), 2);
        assert_eq!(thought_text(&plan.events[0]), "t2");
        assert_eq!(coalesced(&plan.events[0]), None, "it replaced nothing");
        assert_eq!(plan.outcomes, vec![Outcome::Now(1)]);
        assert_eq!(throttle.waiting(), 0);
    }

    #[test]
    fn a_thought_never_takes_a_token_a_later_fact_of_its_batch_needs() {
        let mut throttle = Throttle::new(1); // bursts of 2
        let plan = admit(
            &mut throttle,
            vec![thought("e", "t1"), fact("e"), fact("e")],
            Instant::now(),
        )
        .unwrap();
        assert_eq!(plan.outcomes[0], Outcome::Coalesced);
        // The waiting thought goes out ahead of the first fact, in order.
        assert_eq!(plan.events.len(), 3);
        assert_eq!(thought_text(&plan.events[0]), "t1");
        assert_eq!(plan.outcomes[1..], [Outcome::Now(1), Outcome::Now(2)]);
    }

    #[test]
    fn drain_returns_every_waiting_thought_and_idle_executions_are_forgotten() {
        let mut throttle = Throttle::new(1);
        let now = Instant::now();
        for execution in ["a", "b"] {
            let batch = (0..3)
                .map(|i| thought(execution, &format!("t{i}")))
                .collect();
            admit(&mut throttle, batch, now).unwrap();
        }
        let mut drained: Vec<_> = throttle
            .drain()
            .iter()
            .map(|t| t.execution_id.clone())
            .collect();
        drained.sort();
        assert_eq!(drained, ["a", "b"]);
        assert!(throttle.due(now + Duration::from_secs(10)).is_empty());
        assert!(
            throttle.slots.is_empty(),
            "full buckets with nothing waiting are dropped"
        );
    }
}
