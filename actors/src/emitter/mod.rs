//! The Emitter actor: the one way into the broker for every event.
//!
//! It validates, assigns `seq` (1, 2, 3 … per execution), fills `timestamp`,
//! keeps the last N events of each execution in memory for replay, and hands
//! each batch to the Registry for fan-out. Because one actor does this, the
//! order in which it handles batches *is* the order of every execution: no
//! lock, no race, and the buffer and the fan-out always agree.
//!
//! Memory is bounded three ways: each execution keeps at most `buffer_size`
//! events; executions idle longer than `execution_idle` (or beyond
//! `max_buffered_executions`, oldest first) lose their buffer; and when all
//! buffers together pass `max_buffered_bytes`, the longest idle lose theirs
//! until they are back under three quarters of it (`replay_buffer.rs` says
//! why bytes). A seq must
//! never be reused: with a store, a forgotten execution's counter is seeded
//! again from the store's highest seq before its next event; without one, the
//! counter (a few bytes) is kept for the life of the process.
//!
//! With a store, accepted events go to the Persister, which releases them
//! back ([`Release`]) once committed (at once while the store is failing);
//! only then do they enter the buffer and go to the Registry. Why: a seq a
//! client has seen must be in the store, or a crash would hand it out again
//! (persister.rs says more). The caller gets a [`Receipt`] that resolves once
//! its events are durable; the Emitter itself never waits for the store,
//! except to seed a counter, which it does with its mailbox held
//! (`ctx.wait`) so that no later event can overtake.
//!
//! # The folder
//! This file holds the actor, its messages and handlers (eviction on its
//! timer among them); the rest follows the event: `ingest.rs` ( check,
//! seed, plan, sequence, hand to the Persister), `release.rs` (committed:
//! buffer, then Registry), and `cluster.rs` (Redis sequencing, the
//! fallback journal and re-sync), which a single node never enters. Which
//! buffers give way to bound memory is `replay_buffer.rs`'s `BufferedBytes`.

mod cluster;
mod ingest;
mod release;

use crate::event::{AgentEvent, ValidationError};
use crate::fallback::{Fallback, Settled};
use crate::history::{BufferedEvents, ReadBuffer};
use crate::id_map::{id_map, IdMap};
use crate::idempotency::{self, Answer, Durability, IdempotencyKey, KeyRecord, Keys, Lookup};
use crate::metrics::Metrics;
use crate::notifier::{Notifier, Notify, NotifyDrafts};
use crate::persister::{Backlog, Persist, Persister, Release};
pub use crate::protocol::Accepted;
use crate::protocol::{ErrorCode, PublishedEvent};
use crate::redis_sequencer::{Draft, RedisSequencer, DRAFT_MEMORY_SECS};
pub use crate::redis_subscriber::{RawEntry, Sequenced, Storing};
use crate::registry::{Publish, Registry, Resync, Watched};
use crate::replay_buffer::{Aged, BufferedBytes, ReplayBuffer};
use crate::store::{JournalEntry, Store, StoreError};
use crate::throttle::{Outcome, OverRate, Plan, Throttle};
use actix::prelude::*;
use chrono::Utc;
use futures_util::future::{BoxFuture, FutureExt};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the Emitter bounds what it keeps.
#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// Events kept per execution for replay (100 by default).
    pub buffer_size: usize,
    /// Executions with a buffer at most; beyond it, the longest idle lose theirs.
    pub max_buffered_executions: usize,
    /// An execution with no event for this long loses its buffer.
    pub execution_idle: Duration,
    /// Bytes all buffers may hold together (as `replay_buffer::weight`
    /// reckons them); 0: no limit.
    pub max_buffered_bytes: usize,
    /// Largest event accepted, serialized, in bytes.
    pub max_event_bytes: usize,
    /// Events a second per execution from this node's producers (bursts of
    /// twice that); 0: no limit. See `throttle.rs` for the policy.
    pub max_events_per_sec_per_execution: u64,
    /// How long an idempotency key is remembered (`idempotency.rs`).
    pub idempotency_window: Duration,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        EmitterConfig {
            buffer_size: 100,
            max_buffered_executions: 10_000,
            execution_idle: Duration::from_secs(3600),
            max_buffered_bytes: 64 * 1024 * 1024,
            max_event_bytes: 64 * 1024,
            max_events_per_sec_per_execution: 100,
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a batch was refused. Nothing of a refused batch is sequenced.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestError {
    /// The stable code.
    pub code: ErrorCode,
    /// Which event of the batch, from 0, when one event is at fault.
    pub index: Option<usize>,
    /// The broken rule, for `invalid-event`.
    pub validation: Option<ValidationError>,
    /// Words for a person.
    pub message: String,
}

impl IngestError {
    fn whole(code: ErrorCode, message: impl Into<String>) -> Self {
        IngestError {
            code,
            index: None,
            validation: None,
            message: message.into(),
        }
    }

    fn at(
        index: usize,
        code: ErrorCode,
        validation: Option<ValidationError>,
        message: String,
    ) -> Self {
        IngestError {
            code,
            index: Some(index),
            validation,
            message,
        }
    }

    /// The error with its `index` counted in the posted batch instead of in
    /// the plan (`Plan::events`), where a thought that waited for its
    /// execution's rate may stand before the batch's own events. An error
    /// about that waiting thought names no event of the batch.
    fn in_batch(mut self, outcomes: &[Outcome]) -> Self {
        if let Some(planned) = self.index {
            self.index = outcomes
                .iter()
                .position(|outcome| *outcome == Outcome::Now(planned));
        }
        self
    }
}

impl Accepted {
    /// What became of each event of a planned batch, given the seqs of the
    /// events that went out now.
    fn of_plan(outcomes: &[Outcome], seqs: &[u64]) -> Vec<Accepted> {
        outcomes
            .iter()
            .map(|outcome| Accepted {
                seq: match outcome {
                    Outcome::Now(position) => Some(seqs[*position]),
                    Outcome::Coalesced => None,
                },
            })
            .collect()
    }
}

/// What the Emitter accepted, and how to wait until it is stored.
pub struct Receipt {
    /// The seqs given, in the order of the batch.
    pub accepted: Vec<Accepted>,
    /// Cluster fallback: Redis was unreachable, the seqs are this node's
    /// provisional ones and the events are journaled here (`fallback.rs`).
    pub provisional: bool,
    /// The answer of an earlier attempt under the same idempotency key:
    /// nothing was sequenced for this one.
    pub replayed: bool,
    durable: Option<Durable>,
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("accepted", &self.accepted)
            .field("provisional", &self.provisional)
            .field("replayed", &self.replayed)
            .field("pending", &self.durable.is_some())
            .finish()
    }
}

/// What resolves once a receipt's events are durable: the Persister's ack,
/// or, for a keyed batch, that ack shared with the retries that wait for it.
enum Durable {
    Own(oneshot::Receiver<Result<(), StoreError>>),
    Shared(Durability),
}

impl Durable {
    fn into_future(self) -> BoxFuture<'static, Result<(), StoreError>> {
        match self {
            Durable::Own(ack) => async move {
                ack.await.unwrap_or_else(|_| {
                    Err(StoreError::new(
                        "the broker stopped before the events were stored",
                    ))
                })
            }
            .boxed(),
            Durable::Shared(shared) => shared.boxed(),
        }
    }
}

impl Receipt {
    /// Waits until the events are durable (at once when there is no store).
    pub async fn durable(self) -> Result<Vec<Accepted>, IngestError> {
        let Some(durable) = self.durable else {
            return Ok(self.accepted);
        };
        match durable.into_future().await {
            Ok(()) => Ok(self.accepted),
            Err(err) => Err(IngestError::whole(ErrorCode::StoreUnavailable, err.message)),
        }
    }

    /// A retry's receipt: the first attempt's answer.
    fn replay(answer: Answer) -> Self {
        Receipt {
            accepted: answer.accepted,
            provisional: answer.provisional,
            replayed: true,
            durable: answer.durable.map(Durable::Shared),
        }
    }
}

/// A batch of events to accept together, in order: all or none.
///
/// With a `key`, the batch is idempotent (`idempotency.rs`): while the key
/// is remembered, sending the same batch again answers the first attempt's
/// receipt (`replayed`) and sequences nothing; a different batch under the
/// key is refused with `idempotency-key-reused`.
#[derive(Message)]
#[rtype(result = "Result<Receipt, IngestError>")]
pub struct Ingest {
    /// The events, in order.
    pub events: Vec<AgentEvent>,
    /// The batch's idempotency key, if the producer gave one.
    pub key: Option<IdempotencyKey>,
}

impl Ingest {
    /// A batch without an idempotency key.
    pub fn new(events: Vec<AgentEvent>) -> Self {
        Ingest { events, key: None }
    }

    /// A batch named by `key`: its retries are answered, not sequenced again.
    pub fn keyed(key: IdempotencyKey, events: Vec<AgentEvent>) -> Self {
        Ingest {
            events,
            key: Some(key),
        }
    }
}

/// A keyed batch on its way through the Emitter: its key and fingerprint.
#[derive(Clone)]
struct Keyed {
    key: IdempotencyKey,
    fingerprint: String,
}

impl Keyed {
    fn record(&self, accepted: &[Accepted]) -> KeyRecord {
        KeyRecord {
            key: self.key.as_str().to_owned(),
            fingerprint: self.fingerprint.clone(),
            seqs: accepted.iter().map(|a| a.seq).collect(),
            created_at: Utc::now(),
        }
    }
}

/// One event from Rust code that does not wait for an answer (the non-blocking
/// emit of the original TypeScript design). A refusal is logged and counted, never returned.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit(pub AgentEvent);

/// Retention removed these executions from the store: forget them here too,
/// so they are gone from every API, replay included.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Vec<String>);

/// Stop accepting events: every later `Ingest` gets `shutting-down`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

struct ExecutionState {
    last_seq: u64,
    /// Cluster mode: the highest seq known from the stream or the store, never
    /// a provisional one. The floor sent to the script: a floor above what
    /// the cluster really handed out would make it skip seqs (a hole).
    settled_seq: u64,
    /// The highest seq released to the Registry or, with store-once, passed
    /// over (`cluster.rs`): a replay must reach it, every later event
    /// reaches a new subscriber live.
    released_seq: u64,
    conversation_id: Option<String>,
    buffer: ReplayBuffer,
    /// Store-once: what was passed over in the last [`PASSED_KEEP`] (at
    /// most `buffer_size` entries), raw; while it holds anything the buffer
    /// is empty. A replay parses them from here, so that it does not wait
    /// for the store-once writer to have stored them (`cluster.rs`).
    passed: std::collections::VecDeque<(Instant, RawEntry)>,
    last_event_at: Instant,
}

/// Every execution's buffer, with when the execution last had an event, for
/// the bookkeeping of all buffers ([`BufferedBytes`]).
fn aged(executions: &mut IdMap<Arc<str>, ExecutionState>) -> impl Iterator<Item = Aged<'_>> {
    executions
        .values_mut()
        .map(|s| (&mut s.buffer, s.last_event_at))
}

impl ExecutionState {
    /// Drops what was passed over longer than [`PASSED_KEEP`] ago.
    fn forget_passed(&mut self, now: Instant) {
        while self
            .passed
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > PASSED_KEEP)
        {
            self.passed.pop_front();
        }
    }

    fn empty() -> Self {
        ExecutionState {
            last_seq: 0,
            settled_seq: 0,
            released_seq: 0,
            conversation_id: None,
            buffer: ReplayBuffer::default(),
            passed: std::collections::VecDeque::new(),
            last_event_at: Instant::now(),
        }
    }
}

/// The store side of the Emitter: where events go to be kept.
#[derive(Clone)]
pub struct Storage {
    /// Seeds seq counters of executions the Emitter does not hold.
    pub store: Arc<dyn Store>,
    /// Writes accepted events.
    pub persister: Addr<Persister>,
    /// What is accepted but not yet stored.
    pub backlog: Arc<Backlog>,
}

/// The Emitter actor; see the module documentation.
pub struct Emitter {
    config: EmitterConfig,
    registry: Addr<Registry>,
    storage: Option<Storage>,
    /// In cluster mode, where seqs come from; `None` on a single node.
    sequencer: Option<RedisSequencer>,
    metrics: Metrics,
    executions: IdMap<Arc<str>, ExecutionState>,
    /// What all the replay buffers hold, in bytes, against `max_buffered_bytes`.
    buffered_bytes: BufferedBytes,
    /// The per-execution event rate, and thoughts waiting for it.
    throttle: Throttle,
    /// Cluster mode: events sequenced here while Redis was unreachable.
    fallback: Fallback,
    /// A publish of the fallback journal is under way.
    republishing: bool,
    /// Executions with a subscriber of their own; `None`: buffer them all.
    watched: Option<Arc<Watched>>,
    accepting: bool,
    /// This actor's own address, for the Persister to release events to.
    myself: Option<Addr<Emitter>>,
    /// Gets this node's committed events for webhooks; `None`: no notifications.
    notifier: Option<Addr<Notifier>>,
    /// Recent idempotency keys and the answers they got.
    keys: Keys,
}

impl Emitter {
    /// An Emitter that publishes to `registry` and, if given, stores through `storage`.
    pub fn new(
        config: EmitterConfig,
        registry: Addr<Registry>,
        storage: Option<Storage>,
        metrics: Metrics,
    ) -> Self {
        Emitter {
            throttle: Throttle::new(config.max_events_per_sec_per_execution),
            buffered_bytes: BufferedBytes::new(config.max_buffered_bytes),
            keys: Keys::new(config.idempotency_window, idempotency::DEFAULT_CACHE_MAX),
            fallback: Fallback::default(),
            republishing: false,
            watched: None,
            config,
            registry,
            storage,
            sequencer: None,
            metrics,
            executions: id_map(),
            accepting: true,
            myself: None,
            notifier: None,
        }
    }

    /// Sends this node's committed events to the Notifier (fire-and-forget).
    pub fn with_notifier(mut self, notifier: Addr<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Buffers only the executions someone watches, when their events are
    /// stored (single node; the Registry keeps `watched`).
    pub fn with_watched(mut self, watched: Arc<Watched>) -> Self {
        self.watched = Some(watched);
        self
    }

    /// Cluster mode: seqs come from Redis, and events come back through [`Sequenced`].
    pub fn with_sequencer(mut self, sequencer: RedisSequencer) -> Self {
        self.sequencer = Some(sequencer);
        self
    }
}

/// Bytes the `event` message adds around an event (`{"type":"event",…}`), plus
/// the execution ID it repeats; the size limit is on the event itself.
const FRAME_OVERHEAD: usize = 64 + crate::event::MAX_ID_LEN;

/// How long a store-once node keeps what it passed over, raw, for replays:
/// far longer than the store-once writer lags behind the stream, so a replay
/// rarely needs the store for the newest events; its memory follows the
/// cluster's event rate over this long, not the number of executions.
const PASSED_KEEP: Duration = Duration::from_secs(5);

/// How often the Emitter looks for buffers to drop.
const EVICTION_INTERVAL: Duration = Duration::from_secs(10);

/// How often the store's idempotency keys past the window are removed.
const KEY_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);

/// `idempotency-key-reused`: the key names another batch.
fn key_reused(key: &IdempotencyKey) -> IngestError {
    IngestError::whole(
        ErrorCode::IdempotencyKeyReused,
        format!(
            "the Idempotency-Key `{key}` was used for a different batch; \
             a retry must send the same events, a new batch needs a new key"
        ),
    )
}

/// How often a node in fallback tries to publish its journal to Redis.
const REPUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Journal events published per round trip, so one round stays short.
const REPUBLISH_BATCH: usize = 500;

/// Nanoseconds since the Unix epoch: journal positions grow across restarts.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How often waiting thoughts are looked at: the longest a coalesced thought
/// waits beyond its token (at the default 100 a second, a token every 10 ms).
const THOUGHT_INTERVAL: Duration = Duration::from_millis(50);

impl Actor for Emitter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Producers wait on `send`; a mailbox of 16 would make them queue
        // behind each other for no reason, the Emitter's work per batch is short.
        ctx.set_mailbox_capacity(1024);
        self.myself = Some(ctx.address());
        ctx.run_interval(EVICTION_INTERVAL, |emitter, _| {
            emitter.evict();
            emitter.keys.trim();
        });
        ctx.run_interval(KEY_EXPIRY_INTERVAL, |emitter, ctx| emitter.expire_keys(ctx));
        ctx.run_interval(THOUGHT_INTERVAL, |emitter, ctx| {
            emitter.send_due_thoughts(ctx)
        });
        self.load_journal(ctx);
        ctx.run_interval(REPUBLISH_INTERVAL, |emitter, ctx| emitter.republish(ctx));
    }
}

impl Emitter {
    /// Drops the buffers of idle executions, then of the longest idle beyond the cap.
    fn evict(&mut self) {
        let now = Instant::now();
        for state in self.executions.values_mut() {
            state.forget_passed(now);
        }
        let idle = self.config.execution_idle;
        let mut evicted = self
            .buffered_bytes
            .empty_idle(aged(&mut self.executions), now, idle);
        if self.storage.is_some() {
            // The store knows every counter: an idle execution can be forgotten
            // whole, unless its events wait in the fallback journal (its
            // settled seq is their publish floor).
            // (Their buffers were emptied above: nothing to subtract.)
            let fallback = &self.fallback;
            self.executions.retain(|id, state| {
                now.duration_since(state.last_event_at) < idle || fallback.holds(id)
            });
        }
        let cap = self.config.max_buffered_executions;
        evicted += self
            .buffered_bytes
            .keep_at_most(aged(&mut self.executions), cap);
        self.metrics.executions_evicted.inc_by(evicted);
        self.update_buffered_gauge();
    }

    /// Sets the gauges of the buffers: how many executions hold events, and their bytes.
    fn update_buffered_gauge(&self) {
        let held = self.executions.values().filter(|s| !s.buffer.is_empty());
        self.metrics.executions_buffered.set(held.count() as i64);
        let bytes = self.buffered_bytes.total();
        self.metrics.buffered_bytes.set(bytes as i64);
    }
}

impl Handler<Ingest> for Emitter {
    type Result = AtomicResponse<Self, Result<Receipt, IngestError>>;

    fn handle(&mut self, msg: Ingest, _: &mut Self::Context) -> Self::Result {
        match msg.key {
            None => AtomicResponse::new(self.accept(msg.events, true, None)),
            Some(key) => AtomicResponse::new(self.accept_keyed(key, msg.events)),
        }
    }
}

impl Handler<Emit> for Emitter {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Emit, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.accept_untracked(vec![msg.0], true))
    }
}

impl Handler<ReadBuffer> for Emitter {
    type Result = MessageResult<ReadBuffer>;

    fn handle(&mut self, msg: ReadBuffer, _: &mut Self::Context) -> Self::Result {
        let Some(state) = self.executions.get(&msg.execution_id) else {
            return MessageResult(BufferedEvents::default());
        };
        if let Some((_, oldest)) = state.passed.front() {
            // Passed over: the recent events are here, raw (the buffer is empty).
            let events = state
                .passed
                .iter()
                .filter(|(_, e)| e.seq > msg.after_seq)
                .filter_map(|(_, e)| e.parse().ok().map(PublishedEvent::new))
                .collect();
            return MessageResult(BufferedEvents {
                events,
                last_seq: state.last_seq,
                oldest_buffered: Some(oldest.seq),
                released_seq: state.released_seq,
            });
        }
        let events = state
            .buffer
            .iter()
            .filter(|e| e.seq > msg.after_seq)
            .cloned()
            .collect();
        MessageResult(BufferedEvents {
            events,
            last_seq: state.last_seq,
            oldest_buffered: state.buffer.oldest_seq(),
            released_seq: state.released_seq,
        })
    }
}

impl Handler<Sequenced> for Emitter {
    type Result = ();

    fn handle(&mut self, msg: Sequenced, _: &mut Self::Context) {
        let Sequenced(mut arrived, storing, unparsed) = msg;
        if !unparsed.is_empty() {
            arrived.extend(self.pass_over(unparsed));
        }
        for event in &arrived {
            let state = self.state_of(event);
            state.settled_seq = state.settled_seq.max(event.seq);
        }
        if self.fallback.is_active() {
            for (execution, from_seq) in self.fallback.disputes(&arrived) {
                self.resync(execution, from_seq);
            }
        }
        // Copies of provisional events confirmed at their seq were live here
        // already: they are stored, not delivered again.
        let (seen, news): (Vec<_>, Vec<_>) = arrived
            .drain(..)
            .partition(|event| self.fallback.was_live(event));
        let store_here = storing == Storing::Here;
        if let (Some(storage), false, true) = (&self.storage, seen.is_empty(), store_here) {
            storage.backlog.add(seen.len());
            storage.persister.do_send(Persist {
                events: seen,
                ack: None,
                release_to: None,
                keys: Vec::new(),
            });
        }
        // A cluster 202 means "in Redis" (docs/cluster.md), and Redis keeps the seq
        // counter: these go live at once and nobody waits for the store.
        if store_here {
            self.hand_on(news, false, false, Vec::new());
        } else {
            // Stored once per cluster by the store-once writers.
            self.advance(&news);
            self.release(news);
        }
    }
}

impl Handler<Release> for Emitter {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        // Empty: only acks, of events released before (`persister.rs`).
        if !msg.events.is_empty() {
            self.notify(&msg.events);
            self.release_stored(msg.events, msg.stored);
        }
        // After the Registry has the events in its mailbox (`persister.rs`).
        Release::answer(msg.acks);
    }
}

impl Handler<Forget> for Emitter {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Self::Context) {
        for execution_id in msg.0 {
            if let Some(state) = self.executions.remove(execution_id.as_str()) {
                // Its buffer goes with it: so must its bytes from the budget's total.
                self.buffered_bytes -= state.buffer.bytes();
            }
        }
        self.update_buffered_gauge();
    }
}

impl Handler<StopAccepting> for Emitter {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: StopAccepting, _: &mut Self::Context) -> Self::Result {
        // Thoughts still waiting were answered `coalesced`: they go out (and
        // are stored) before the door closes; answering after that lets the
        // caller's next step (flushing the Persister) cover them.
        let waiting = self.throttle.drain();
        let sent: ResponseActFuture<Self, ()> = if waiting.is_empty() {
            Box::pin(fut::ready(()))
        } else {
            self.accept_untracked(waiting, false)
        };
        AtomicResponse::new(Box::pin(sent.map(|(), emitter, _| {
            emitter.accepting = false;
            emitter.metrics.thoughts_waiting.set(0);
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_the_event_of_the_posted_batch_not_of_the_plan() {
        // The plan: a thought that waited for its rate first, then the
        // batch's first and third events; its second was coalesced.
        let outcomes = [Outcome::Now(1), Outcome::Coalesced, Outcome::Now(2)];
        let at = |index| IngestError::at(index, ErrorCode::PayloadTooLarge, None, String::new());
        assert_eq!(at(1).in_batch(&outcomes).index, Some(0));
        assert_eq!(at(2).in_batch(&outcomes).index, Some(2));
        assert_eq!(
            at(0).in_batch(&outcomes).index,
            None,
            "the waiting thought is no event of the batch"
        );
        let whole = IngestError::whole(ErrorCode::ShuttingDown, "");
        assert_eq!(whole.in_batch(&outcomes).index, None);
    }
}
