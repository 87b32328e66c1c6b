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

use crate::event::{AgentEvent, ValidationError};
use crate::fallback::{Fallback, Settled};
use crate::history::{BufferedEvents, ReadBuffer};
use crate::idempotency::{self, Answer, Durability, IdempotencyKey, KeyRecord, Keys, Lookup};
use crate::metrics::Metrics;
use crate::notifier::{Notifier, Notify, NotifyDrafts};
use crate::persister::{Backlog, Persist, Persister, Release};
pub use crate::protocol::Accepted;
use crate::protocol::{ErrorCode, PublishedEvent};
use crate::redis_sequencer::{Draft, RedisSequencer, DRAFT_MEMORY_SECS};
pub use crate::redis_subscriber::Sequenced;
use crate::registry::{Publish, Registry, Resync, Watched};
use crate::replay_buffer::ReplayBuffer;
use crate::store::{JournalEntry, Store, StoreError};
use crate::throttle::{Outcome, OverRate, Plan, Throttle};
use actix::prelude::*;
use chrono::Utc;
use futures_util::future::{BoxFuture, FutureExt};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the Emitter bounds what it keeps.
#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// Events kept per execution for replay (the seed's 100).
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

/// One event from Rust code that does not wait for an answer (the seed's
/// non-blocking emit). A refusal is logged and counted, never returned.
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
    conversation_id: Option<String>,
    buffer: ReplayBuffer,
    last_event_at: Instant,
}

impl ExecutionState {
    fn empty() -> Self {
        ExecutionState {
            last_seq: 0,
            settled_seq: 0,
            conversation_id: None,
            buffer: ReplayBuffer::default(),
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
    executions: HashMap<Arc<str>, ExecutionState>,
    /// What all the replay buffers hold, in bytes.
    buffered_bytes: usize,
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
            keys: Keys::new(config.idempotency_window, idempotency::DEFAULT_CACHE_MAX),
            fallback: Fallback::default(),
            republishing: false,
            watched: None,
            config,
            registry,
            storage,
            sequencer: None,
            metrics,
            executions: HashMap::new(),
            buffered_bytes: 0,
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

    /// Only events a producer gave this node are notified: on a single node
    /// those the Persister releases (here), in a cluster those Redis
    /// sequenced for this node (`publish_to_cluster`): every node reads
    /// every event back through `Sequenced`, and only the origin notifies.
    fn notify(&self, events: &[Arc<PublishedEvent>]) {
        if let Some(notifier) = self.notifier.as_ref().filter(|_| !events.is_empty()) {
            notifier.do_send(Notify(events.to_vec()));
        }
    }

    /// The drafts' bodies, kept for the Notifier when there is one (cluster
    /// mode notifies from the drafts the origin published).
    fn notifier_bodies(&self, drafts: &[Draft]) -> Vec<String> {
        match self.notifier {
            Some(_) => drafts.iter().map(|d| d.body.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// Cluster mode: the origin notifies what Redis sequenced for it, with
    /// the seqs it got (after a fallback, the seqs the journal got).
    fn notify_drafts(&self, bodies: Vec<String>, seqs: &[u64]) {
        if let Some(notifier) = self.notifier.as_ref().filter(|_| !bodies.is_empty()) {
            let drafts = bodies.into_iter().zip(seqs.iter().copied()).collect();
            notifier.do_send(NotifyDrafts(drafts));
        }
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

    /// Executions of this batch whose seq counter must first come from the store.
    fn unseeded(&self, events: &[AgentEvent]) -> Vec<String> {
        if self.storage.is_none() {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        events
            .iter()
            .map(|e| e.execution_id.as_str())
            .filter(|id| !self.executions.contains_key(*id) && seen.insert(*id))
            .map(str::to_owned)
            .collect()
    }

    fn seed(&mut self, execution_id: String, last_seq: u64) {
        let state = self
            .executions
            .entry(execution_id.into())
            .or_insert_with(ExecutionState::empty);
        state.last_seq = state.last_seq.max(last_seq);
        state.settled_seq = state.settled_seq.max(last_seq);
    }

    /// Reads the highest stored seq of each execution.
    fn read_seeds(
        &self,
        executions: Vec<String>,
    ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, StoreError>> {
        let store = self.storage.as_ref().map(|s| s.store.clone());
        async move {
            let Some(store) = store else {
                return Ok(Vec::new());
            };
            let mut seeds = Vec::with_capacity(executions.len());
            for execution_id in executions {
                let last_seq = store.last_seq(&execution_id).await?;
                seeds.push((execution_id, last_seq));
            }
            Ok(seeds)
        }
    }

    /// Seeds what must be seeded, then accepts the batch: here on a single
    /// node, through Redis in a cluster. Run as an atomic response (the
    /// mailbox held), so no later batch can overtake this one. `throttled`:
    /// the batch is subject to the per-execution rate (thoughts that waited
    /// for it are not: they were admitted already).
    fn accept(
        &mut self,
        events: Vec<AgentEvent>,
        throttled: bool,
        keyed: Option<Keyed>,
    ) -> ResponseActFuture<Self, Result<Receipt, IngestError>> {
        let unseeded = self.unseeded(&events);
        let seeds = self.read_seeds(unseeded);
        let count = events.len() as u64;
        let accepted = seeds.into_actor(self).then(move |seeds, emitter, _| {
            let seeded = seeds.map(|seeds| {
                for (execution_id, last_seq) in seeds {
                    emitter.seed(execution_id, last_seq);
                }
            });
            let next: ResponseActFuture<Self, Result<Receipt, IngestError>> =
                match (seeded, emitter.sequencer.clone()) {
                    (Err(err), _) => Box::pin(fut::ready(Err(IngestError::whole(
                        ErrorCode::StoreUnavailable,
                        format!("cannot read the last seq from the store: {err}"),
                    )))),
                    (Ok(()), None) => {
                        Box::pin(fut::ready(emitter.ingest(events, throttled, keyed)))
                    }
                    (Ok(()), Some(sequencer)) => {
                        emitter.publish_to_cluster(events, throttled, sequencer, keyed)
                    }
                };
            next
        });
        Box::pin(accepted.map(move |result, emitter, _| {
            if let Err(err) = &result {
                emitter
                    .metrics
                    .events_rejected
                    .with_label_values(&[err.code.as_str()])
                    .inc_by(count);
            }
            result
        }))
    }

    /// A keyed batch: the first attempt's answer if the key is remembered
    /// (here, or in the store on a miss, read with the mailbox held as a
    /// seed is), else accepted as a first attempt whose answer is then
    /// remembered. In a cluster the store is not read: Redis remembers keys
    /// for every node (`publish_to_cluster`).
    fn accept_keyed(
        &mut self,
        key: IdempotencyKey,
        events: Vec<AgentEvent>,
    ) -> ResponseActFuture<Self, Result<Receipt, IngestError>> {
        let fingerprint = idempotency::fingerprint(&events);
        let count = events.len() as u64;
        match self.keys.lookup(&key, &fingerprint) {
            Lookup::Same(answer) => return Box::pin(fut::ready(Ok(Receipt::replay(answer)))),
            Lookup::Different => return self.refuse(key_reused(&key), count),
            Lookup::Miss => {}
        }
        let store = match (&self.storage, &self.sequencer) {
            (Some(storage), None) => Some(storage.store.clone()),
            _ => None,
        };
        let lookup_key = key.as_str().to_owned();
        let read = async move {
            match store {
                Some(store) => store.idempotency_key(&lookup_key).await,
                None => Ok(None),
            }
        };
        let keyed = Keyed { key, fingerprint };
        Box::pin(read.into_actor(self).then(move |stored, emitter, _| {
            let next: ResponseActFuture<Self, Result<Receipt, IngestError>> = match stored {
                Err(err) => emitter.refuse(
                    IngestError::whole(
                        ErrorCode::StoreUnavailable,
                        format!("cannot read the idempotency key from the store: {err}"),
                    ),
                    count,
                ),
                Ok(stored) => {
                    let known = stored.map_or(Lookup::Miss, |record| {
                        emitter.keys.restore(record, &keyed.fingerprint)
                    });
                    match known {
                        Lookup::Same(answer) => Box::pin(fut::ready(Ok(Receipt::replay(answer)))),
                        Lookup::Different => emitter.refuse(key_reused(&keyed.key), count),
                        Lookup::Miss => emitter.accept_first(keyed, events),
                    }
                }
            };
            next
        }))
    }

    /// Refuses a keyed batch before `accept` (which counts its own refusals).
    fn refuse(
        &self,
        err: IngestError,
        count: u64,
    ) -> ResponseActFuture<Self, Result<Receipt, IngestError>> {
        self.metrics
            .events_rejected
            .with_label_values(&[err.code.as_str()])
            .inc_by(count);
        Box::pin(fut::ready(Err(err)))
    }

    /// The first attempt under a key: accepted as any batch, then its answer
    /// is remembered. Until its events are durable, retries share the wait;
    /// if they never become durable, the key is forgotten again.
    fn accept_first(
        &mut self,
        keyed: Keyed,
        events: Vec<AgentEvent>,
    ) -> ResponseActFuture<Self, Result<Receipt, IngestError>> {
        let Keyed { key, fingerprint } = keyed.clone();
        Box::pin(
            self.accept(events, true, Some(keyed))
                .map(move |result, emitter, ctx| {
                    let mut receipt = result?;
                    let durable = receipt
                        .durable
                        .take()
                        .map(|d| idempotency::share(d.into_future()));
                    receipt.durable = durable.clone().map(Durable::Shared);
                    let answer = Answer {
                        accepted: receipt.accepted.clone(),
                        provisional: receipt.provisional,
                        durable: durable.clone(),
                    };
                    let generation = emitter.keys.remember(key.clone(), fingerprint, answer);
                    if let Some(durable) = durable {
                        ctx.spawn(durable.into_actor(emitter).map(move |outcome, emitter, _| {
                            match outcome {
                                Ok(()) => emitter.keys.settled(&key, generation),
                                Err(_) => emitter.keys.forget(&key, generation),
                            }
                        }));
                    }
                    Ok(receipt)
                }),
        )
    }

    /// Removes the store's idempotency keys past the window, beside the mailbox.
    fn expire_keys(&mut self, ctx: &mut Context<Self>) {
        let Some(storage) = self.storage.as_ref() else {
            return;
        };
        let Ok(window) = chrono::TimeDelta::from_std(self.keys.window()) else {
            return;
        };
        let expire = storage.store.expire_idempotency_keys(Utc::now() - window);
        ctx.spawn(
            async move {
                if let Err(err) = expire.await {
                    log::warn!("cannot remove expired idempotency keys: {err}");
                }
            }
            .into_actor(self),
        );
    }

    /// Cluster mode: Redis assigns the seqs; the events come back through the stream.
    fn publish_to_cluster(
        &mut self,
        events: Vec<AgentEvent>,
        throttled: bool,
        sequencer: RedisSequencer,
        keyed: Option<Keyed>,
    ) -> ResponseActFuture<Self, Result<Receipt, IngestError>> {
        let planned = self
            .check_batch(&events)
            .and_then(|()| self.plan(events, throttled));
        let (drafts, plan) = match planned {
            Ok(mut plan) => match self.drafts(&mut plan, &sequencer, keyed.as_ref()) {
                Ok(drafts) => (drafts, plan),
                Err(err) => return Box::pin(fut::ready(Err(err.in_batch(&plan.outcomes)))),
            },
            Err(err) => return Box::pin(fut::ready(Err(err))),
        };
        if self.fallback.is_active() {
            // Older provisional events wait for Redis: nothing may overtake them.
            return self.sequence_provisionally(plan, drafts);
        }
        let bodies = self.notifier_bodies(&drafts);
        let window = self.keys.window().as_secs();
        let claim = keyed.clone();
        let publish = async move {
            if let Some(keyed) = claim {
                match sequencer
                    .claim_key(keyed.key.as_str(), &keyed.fingerprint, window)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Ok(None),
                    Err(e) => return Err((e, drafts)),
                }
            }
            sequencer
                .publish(&drafts)
                .await
                .map(Some)
                .map_err(|e| (e, drafts))
        };
        Box::pin(publish.into_actor(self).then(move |result, emitter, _| {
            let mut plan = plan;
            let next: ResponseActFuture<Self, Result<Receipt, IngestError>> = match result {
                Ok(None) => {
                    let key = keyed.map(|k| k.key).expect("only a keyed batch is claimed");
                    Box::pin(fut::ready(Err(key_reused(&key))))
                }
                Ok(Some(seqs)) => {
                    // Only now is the batch certain: tokens and slots change.
                    emitter.commit(&mut plan);
                    emitter.notify_drafts(bodies, &seqs);
                    Box::pin(fut::ready(Ok(Receipt {
                        accepted: Accepted::of_plan(&plan.outcomes, &seqs),
                        provisional: false,
                        replayed: false,
                        durable: None,
                    })))
                }
                Err((err, drafts)) => {
                    emitter
                        .metrics
                        .cluster
                        .with_label_values(&["publish-failed"])
                        .inc();
                    log::warn!("cannot reach Redis ({err}): sequencing here, provisionally");
                    emitter.sequence_provisionally(plan, drafts)
                }
            };
            next
        }))
    }

    /// Cluster fallback: gives the planned events provisional seqs from this
    /// node's counters, journals them (under their draft IDs), and delivers
    /// them here once journaled; the journal is published when Redis answers.
    /// Without a store there is nowhere to journal: 503 `redis-unavailable`.
    fn sequence_provisionally(
        &mut self,
        mut plan: Plan,
        drafts: Vec<Draft>,
    ) -> ResponseActFuture<Self, Result<Receipt, IngestError>> {
        let Some(storage) = self.storage.clone() else {
            return Box::pin(fut::ready(Err(IngestError::whole(
                ErrorCode::RedisUnavailable,
                "cannot reach Redis to sequence the events, and there is no store to journal them",
            ))));
        };
        let published = match self.sequence(std::mem::take(&mut plan.events)) {
            Ok(published) => published,
            Err(err) => return Box::pin(fut::ready(Err(err.in_batch(&plan.outcomes)))),
        };
        let now = now_nanos();
        let node_id = self.node_id();
        let entries: Vec<JournalEntry> = published
            .iter()
            .zip(drafts)
            .map(|(event, draft)| JournalEntry {
                node_id: node_id.clone(),
                draft_id: draft.id,
                position: self.fallback.next_position(now),
                event: event.clone(),
            })
            .collect();
        let journal = storage.store.journal_add(entries.clone());
        Box::pin(journal.into_actor(self).map(move |result, emitter, _| {
            if let Err(err) = result {
                return Err(IngestError::whole(
                    ErrorCode::StoreUnavailable,
                    format!("Redis is unreachable and the fallback journal failed: {err}"),
                ));
            }
            emitter.commit(&mut plan);
            emitter
                .metrics
                .cluster
                .with_label_values(&["fallback"])
                .inc_by(published.len() as u64);
            emitter.fallback.add(entries);
            emitter.update_fallback_gauge();
            let seqs: Vec<u64> = published.iter().map(|p| p.seq).collect();
            emitter.advance(&published);
            emitter.release(published);
            Ok(Receipt {
                accepted: Accepted::of_plan(&plan.outcomes, &seqs),
                provisional: true,
                replayed: false,
                durable: None,
            })
        }))
    }

    fn node_id(&self) -> String {
        self.sequencer
            .as_ref()
            .map_or_else(String::new, |s| s.node_id().to_owned())
    }

    fn update_fallback_gauge(&self) {
        self.metrics
            .fallback_pending
            .set(self.fallback.len() as i64);
    }

    /// Tries to publish the fallback journal: first a probe of Redis with the
    /// mailbox free (against a Redis that hangs, a held mailbox would stall
    /// every producer for a connect timeout per attempt), then the publish.
    fn republish(&mut self, ctx: &mut Context<Self>) {
        let Some(sequencer) = self.sequencer.clone() else {
            return;
        };
        if self.fallback.is_empty() || self.republishing {
            return;
        }
        self.republishing = true;
        let probe = async move { sequencer.reachable().await };
        ctx.spawn(
            probe
                .into_actor(self)
                .map(|reachable, emitter, ctx| match reachable {
                    Ok(()) => emitter.publish_journal(ctx),
                    Err(err) => {
                        emitter.republishing = false;
                        log::debug!("the fallback journal waits for Redis: {err}");
                    }
                }),
        );
    }

    /// Publishes the fallback journal, oldest first, with the mailbox held
    /// (new events wait, so none overtakes them); settles each event's fate.
    fn publish_journal(&mut self, ctx: &mut Context<Self>) {
        let Some(sequencer) = self.sequencer.clone() else {
            self.republishing = false;
            return;
        };
        let window = self.keys.window().as_secs();
        let drafts: Vec<Draft> = self
            .fallback
            .waiting()
            .take(REPUBLISH_BATCH)
            .map(|pending| {
                let event = &pending.entry.event;
                // Never the provisional seq itself: if it ran ahead of what
                // the cluster handed out, the script would skip seqs. The
                // journal's own order makes a shown event get its seq back
                // when nobody else took it.
                let floor = self
                    .executions
                    .get(event.execution_id())
                    .map_or(0, |s| s.settled_seq);
                let mut body = event.event.clone();
                body.seq = None;
                Draft {
                    id: pending.entry.draft_id.clone(),
                    execution_id: body.execution_id.clone(),
                    floor,
                    body: serde_json::to_string(&body).expect("an event always serializes"),
                    // A keyed batch's draft keeps its retries answered for the window.
                    memory_secs: if pending.entry.draft_id.starts_with("idem:") {
                        window
                    } else {
                        DRAFT_MEMORY_SECS
                    },
                }
            })
            .collect();
        let publish = async move { sequencer.publish(&drafts).await.map(|seqs| (seqs, drafts)) };
        ctx.wait(publish.into_actor(self).then(|result, emitter, _| {
            emitter.republishing = false;
            let published = match result {
                Ok((seqs, drafts)) => emitter.settle(&seqs, drafts),
                Err(err) => {
                    log::debug!("the fallback journal waits for Redis: {err}");
                    Vec::new()
                }
            };
            let store = emitter.storage.as_ref().map(|s| s.store.clone());
            async move {
                let Some(store) = store.filter(|_| !published.is_empty()) else {
                    return;
                };
                if let Err(err) = store.journal_remove(published).await {
                    // Left in the journal, they are published again at the next
                    // start: within DRAFT_MEMORY_SECS that appends nothing,
                    // after it they would repeat. Say so loudly.
                    log::error!("cannot remove published events from the journal: {err}");
                }
            }
            .into_actor(emitter)
        }));
    }

    /// What the script gave the journal's events: confirmed ones stay as they
    /// are, disputed executions re-sync. Returns the draft IDs now in the stream.
    fn settle(&mut self, seqs: &[u64], drafts: Vec<Draft>) -> Vec<String> {
        let (fates, disputes) = self.fallback.settle(seqs);
        let bodies = self.notifier_bodies(&drafts[..fates.len()]);
        self.notify_drafts(bodies, seqs);
        for (execution, from_seq) in disputes {
            self.resync(execution, from_seq);
        }
        self.metrics
            .cluster
            .with_label_values(&["republished"])
            .inc_by(fates.len() as u64);
        let kept = fates.iter().filter(|f| **f == Settled::Confirmed).count();
        log::info!(
            "published {} provisional events to the cluster ({kept} kept their seq)",
            fates.len()
        );
        self.update_fallback_gauge();
        drafts.into_iter().take(fates.len()).map(|d| d.id).collect()
    }

    /// Another node's events took seqs shown here provisionally: from
    /// `from_seq` on, this execution's subscribers start over.
    fn resync(&mut self, execution: Arc<str>, from_seq: u64) {
        let mut conversation_id = None;
        if let Some(state) = self.executions.get_mut(&execution) {
            self.buffered_bytes -= state.buffer.truncate_from(from_seq);
            state.last_seq = state.last_seq.min(from_seq - 1);
            conversation_id = state.conversation_id.clone();
        }
        self.update_buffered_gauge();
        log::warn!(
            "execution `{execution}`: seqs from {from_seq} were taken by another node; \
             its subscribers re-sync"
        );
        self.metrics.cluster.with_label_values(&["resync"]).inc();
        self.registry.do_send(Resync {
            execution_id: execution,
            conversation_id,
            from_seq,
        });
    }

    /// Cluster start: what the journal still holds was live here before the
    /// stop; it goes back into the buffers and waits to be published.
    fn load_journal(&mut self, ctx: &mut Context<Self>) {
        let (Some(storage), Some(_)) = (self.storage.clone(), self.sequencer.as_ref()) else {
            return;
        };
        let node_id = self.node_id();
        let store = storage.store;
        // With the journal, each of its executions' highest stored seq: the
        // floor its events are published with (Redis may have lost its counter).
        let read = async move {
            let entries = store.journal_read(&node_id).await?;
            let mut executions: Vec<String> = entries
                .iter()
                .map(|e| e.event.execution_id().to_owned())
                .collect();
            executions.sort();
            executions.dedup();
            let mut seeds = Vec::with_capacity(executions.len());
            for execution_id in executions {
                let last_seq = store.last_seq(&execution_id).await?;
                seeds.push((execution_id, last_seq));
            }
            Ok::<_, StoreError>((entries, seeds))
        };
        ctx.wait(
            read.into_actor(self)
                .map(|result, emitter, _| match result {
                    Ok((entries, seeds)) if !entries.is_empty() => {
                        log::info!("{} journaled events wait to be published", entries.len());
                        for (execution_id, last_seq) in seeds {
                            emitter.seed(execution_id, last_seq);
                        }
                        let published: Vec<_> = entries.iter().map(|e| e.event.clone()).collect();
                        emitter.advance(&published);
                        emitter.release(published);
                        emitter.fallback.add(entries);
                        emitter.update_fallback_gauge();
                    }
                    Ok(_) => {}
                    Err(err) => log::error!("cannot read the fallback journal: {err}"),
                }),
        );
    }

    /// The batch (checked) as the sequencer's drafts: stamped, with the node's floor.
    /// The events are stamped in place: if Redis cannot be reached they are
    /// sequenced here instead, as they are.
    /// An event of a keyed batch gets a draft ID derived from the key and its
    /// index in the batch (`RedisSequencer::keyed_draft_id` says why).
    fn drafts(
        &self,
        plan: &mut Plan,
        sequencer: &RedisSequencer,
        keyed: Option<&Keyed>,
    ) -> Result<Vec<Draft>, IngestError> {
        let window = self.keys.window().as_secs();
        let outcomes = &plan.outcomes;
        plan.events
            .iter_mut()
            .enumerate()
            .map(|(index, event)| {
                // A thought that waited for its rate belongs to no batch here.
                let in_batch = outcomes.iter().position(|o| *o == Outcome::Now(index));
                let (id, memory_secs) = match (keyed, in_batch) {
                    (Some(keyed), Some(position)) => (
                        RedisSequencer::keyed_draft_id(keyed.key.as_str(), position),
                        window,
                    ),
                    _ => (sequencer.next_draft_id(), DRAFT_MEMORY_SECS),
                };
                let state = self.executions.get(event.execution_id.as_str());
                if event.conversation_id.is_none() {
                    event.conversation_id = state.and_then(|s| s.conversation_id.clone());
                }
                event.timestamp.get_or_insert_with(Utc::now);
                let body = serde_json::to_string(&*event).expect("an event always serializes");
                if body.len() > self.config.max_event_bytes + FRAME_OVERHEAD {
                    return Err(self.too_large(index));
                }
                Ok(Draft {
                    id,
                    floor: state.map_or(0, |s| s.settled_seq),
                    execution_id: event.execution_id.clone(),
                    body,
                    memory_secs,
                })
            })
            .collect()
    }

    fn too_large(&self, index: usize) -> IngestError {
        IngestError::at(
            index,
            ErrorCode::PayloadTooLarge,
            None,
            format!(
                "event is larger than the {} byte limit once serialized",
                self.config.max_event_bytes
            ),
        )
    }

    /// Checks the whole batch before anything is sequenced, so a batch is all or nothing.
    fn check_batch(&self, events: &[AgentEvent]) -> Result<(), IngestError> {
        if !self.accepting {
            return Err(IngestError::whole(
                ErrorCode::ShuttingDown,
                "the broker is shutting down and takes no more events",
            ));
        }
        if let Some(storage) = &self.storage {
            if !storage.backlog.has_room(events.len()) {
                let why = storage
                    .backlog
                    .failing()
                    .unwrap_or_else(|| "the store is behind".into());
                return Err(IngestError::whole(
                    ErrorCode::StoreUnavailable,
                    format!(
                        "{} events wait to be stored ({why}); retry later",
                        storage.backlog.len()
                    ),
                ));
            }
        }
        // Conversations claimed by earlier events of this same batch count too.
        let mut claimed: HashMap<&str, &str> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            event.validate().map_err(|v| {
                let message = v.to_string();
                IngestError::at(index, ErrorCode::InvalidEvent, Some(v), message)
            })?;
            let Some(conversation) = event.conversation_id.as_deref() else {
                continue;
            };
            let known = claimed
                .get(event.execution_id.as_str())
                .copied()
                .or_else(|| {
                    self.executions
                        .get(event.execution_id.as_str())
                        .and_then(|s| s.conversation_id.as_deref())
                });
            match known {
                Some(existing) if existing != conversation => {
                    return Err(IngestError::at(
                        index,
                        ErrorCode::ConversationMismatch,
                        None,
                        format!(
                        "execution `{}` belongs to conversation `{existing}`, not `{conversation}`",
                        event.execution_id
                    ),
                    ))
                }
                _ => {
                    claimed.insert(&event.execution_id, conversation);
                }
            }
        }
        Ok(())
    }

    /// Gives each event its seq, timestamp and conversation, and builds its frame.
    /// An event too large once serialized refuses the batch before any seq is kept.
    fn sequence(
        &mut self,
        events: Vec<AgentEvent>,
    ) -> Result<Vec<Arc<PublishedEvent>>, IngestError> {
        let mut next_seq: HashMap<Arc<str>, u64> = HashMap::new();
        let mut published = Vec::with_capacity(events.len());
        for (index, mut event) in events.into_iter().enumerate() {
            let key = self.key_of(&event.execution_id);
            let state = self.executions.get(&key);
            let seq = next_seq
                .get(&key)
                .copied()
                .unwrap_or_else(|| state.map_or(0, |s| s.last_seq))
                + 1;
            if event.conversation_id.is_none() {
                event.conversation_id = state.and_then(|s| s.conversation_id.clone());
            }
            event.seq = Some(seq);
            event.timestamp.get_or_insert_with(Utc::now);
            let item = PublishedEvent::new(event);
            if item.frame.len() > self.config.max_event_bytes + FRAME_OVERHEAD {
                return Err(self.too_large(index));
            }
            next_seq.insert(key, seq);
            published.push(item);
        }
        Ok(published)
    }

    /// Records sequenced events: counters move, buffers take them.
    fn advance(&mut self, published: &[Arc<PublishedEvent>]) {
        let now = Instant::now();
        for item in published {
            let state = self.state_of(item);
            state.last_seq = state.last_seq.max(item.seq);
            state.last_event_at = now;
            if state.conversation_id.is_none() {
                state.conversation_id = item.event.conversation_id.clone();
            }
        }
        self.metrics.events_in.inc_by(published.len() as u64);
    }

    /// Puts events in their buffers, then sends them to the Registry: in
    /// that order, so a replay never misses an event that went live.
    fn release(&mut self, published: Vec<Arc<PublishedEvent>>) {
        self.release_stored(published, false);
    }

    /// As [`Emitter::release`]; `stored` events of an execution nobody
    /// watches skip the buffer (and empty it): the store replays them to
    /// whoever subscribes later (`registry::Watched` says why).
    fn release_stored(&mut self, published: Vec<Arc<PublishedEvent>>, stored: bool) {
        let capacity = self.config.buffer_size;
        let watched = self.watched.clone();
        // Counted as it changes: recounting every execution per release
        // would cost O(executions) on the hot path.
        let mut buffered_delta: i64 = 0;
        let mut bytes = self.buffered_bytes as isize;
        for item in &published {
            let unwatched = stored
                && watched
                    .as_ref()
                    .is_some_and(|w| !w.contains(item.execution_id()));
            let state = self.state_of(item);
            let was_empty = state.buffer.is_empty();
            state.last_seq = state.last_seq.max(item.seq);
            if unwatched {
                // A partial buffer would answer a replay without the newer
                // events: all of it goes, the store has every one.
                bytes -= state.buffer.clear() as isize;
            } else {
                bytes += state.buffer.push(item.clone(), capacity);
            }
            buffered_delta += i64::from(was_empty) - i64::from(state.buffer.is_empty());
        }
        self.buffered_bytes = bytes as usize;
        self.metrics.executions_buffered.add(buffered_delta);
        self.metrics.buffered_bytes.set(bytes as i64);
        if self.over_byte_budget() {
            self.shed_buffers();
        }
        self.registry.do_send(Publish(published));
    }

    fn over_byte_budget(&self) -> bool {
        let max = self.config.max_buffered_bytes;
        max > 0 && self.buffered_bytes > max
    }

    /// Empties the buffers of the longest idle executions until all of them
    /// hold at most three quarters of `max_buffered_bytes`: the margin makes
    /// this (a sort of the buffered executions) rare under steady load.
    fn shed_buffers(&mut self) {
        let target = self.config.max_buffered_bytes / 4 * 3;
        let mut buffered: Vec<_> = self
            .executions
            .values_mut()
            .filter(|s| !s.buffer.is_empty())
            .collect();
        buffered.sort_by_key(|s| s.last_event_at);
        let mut evicted = 0;
        for state in buffered {
            if self.buffered_bytes <= target {
                break;
            }
            self.buffered_bytes -= state.buffer.clear();
            evicted += 1;
        }
        self.metrics.executions_evicted.inc_by(evicted);
        self.update_buffered_gauge();
    }

    fn state_of(&mut self, item: &PublishedEvent) -> &mut ExecutionState {
        let key = self.key_of(item.execution_id());
        self.executions
            .entry(key)
            .or_insert_with(ExecutionState::empty)
    }

    /// The map's own `Arc<str>` for an execution, so the key is allocated once.
    fn key_of(&self, execution_id: &str) -> Arc<str> {
        self.executions
            .get_key_value(execution_id)
            .map(|(key, _)| key.clone())
            .unwrap_or_else(|| execution_id.into())
    }

    fn ingest(
        &mut self,
        events: Vec<AgentEvent>,
        throttled: bool,
        keyed: Option<Keyed>,
    ) -> Result<Receipt, IngestError> {
        self.check_batch(&events)?;
        let mut plan = self.plan(events, throttled)?;
        let published = self
            .sequence(std::mem::take(&mut plan.events))
            .map_err(|err| err.in_batch(&plan.outcomes))?;
        self.commit(&mut plan);
        let seqs: Vec<u64> = published.iter().map(|p| p.seq).collect();
        let accepted = Accepted::of_plan(&plan.outcomes, &seqs);
        // The key goes to the store in the events' commit.
        let keys: Vec<KeyRecord> = keyed.iter().map(|k| k.record(&accepted)).collect();
        // A batch coalesced whole stores nothing now (but its key): its
        // answer is due at once, not after a commit that has nothing of it
        // (the waiting thought is stored when it goes out, or at shutdown).
        let durable = if published.is_empty() && keys.is_empty() {
            None
        } else {
            self.hand_on(published, true, true, keys)
        };
        Ok(Receipt {
            accepted,
            provisional: false,
            replayed: false,
            durable: durable.map(Durable::Own),
        })
    }

    /// What the per-execution rate makes of a checked batch; changes nothing.
    fn plan(&self, events: Vec<AgentEvent>, throttled: bool) -> Result<Plan, IngestError> {
        if !throttled {
            return Ok(Plan::all_now(events));
        }
        self.throttle.plan(events, Instant::now()).map_err(
            |OverRate {
                 index,
                 execution_id,
             }| {
                let rate = self.config.max_events_per_sec_per_execution;
                IngestError::at(
                    index,
                    ErrorCode::RateLimited,
                    None,
                    format!(
                        "execution `{execution_id}` is over its {rate} events a second \
                         (bursts of {}); agent-thinking is coalesced, other types are \
                         refused: retry with backoff",
                        rate * 2
                    ),
                )
            },
        )
    }

    /// Applies a plan whose batch is accepted: tokens spent, thoughts held or replaced.
    fn commit(&mut self, plan: &mut Plan) {
        self.metrics.thoughts_coalesced.inc_by(plan.superseded);
        self.throttle.commit(plan);
        self.metrics
            .thoughts_waiting
            .set(self.throttle.waiting() as i64);
    }

    /// Sends out the waiting thoughts whose execution has a token again, with
    /// the mailbox held so that no later event of theirs overtakes them.
    fn send_due_thoughts(&mut self, ctx: &mut Context<Self>) {
        if self.throttle.waiting() == 0 {
            return;
        }
        let due = self.throttle.due(Instant::now());
        self.metrics
            .thoughts_waiting
            .set(self.throttle.waiting() as i64);
        if !due.is_empty() {
            ctx.wait(self.accept_untracked(due, false));
        }
    }

    /// Accepts events nobody waits for (in-process `Emit`, released thoughts):
    /// a refusal is logged and counted, never returned.
    fn accept_untracked(
        &mut self,
        events: Vec<AgentEvent>,
        throttled: bool,
    ) -> ResponseActFuture<Self, ()> {
        let count = events.len() as u64;
        Box::pin(
            self.accept(events, throttled, None)
                .map(move |result, emitter, _| {
                    if let Err(err) = result {
                        // The caller is agent work that must not fail because of us.
                        log::warn!("in-process event refused: {}", err.message);
                        let reason = match err.code {
                            ErrorCode::StoreUnavailable => "store-backlog-full",
                            ErrorCode::RateLimited => "in-process-rate-limited",
                            _ => "invalid-in-process-event",
                        };
                        emitter.metrics.drop(reason, count);
                    }
                }),
        )
    }

    /// Records sequenced events and stores them; they go live once stored
    /// (`live_after_commit`) or now. With `wait`, returns what resolves once
    /// they are durable.
    fn hand_on(
        &mut self,
        published: Vec<Arc<PublishedEvent>>,
        wait: bool,
        live_after_commit: bool,
        keys: Vec<KeyRecord>,
    ) -> Option<oneshot::Receiver<Result<(), StoreError>>> {
        self.advance(&published);
        let Some(storage) = self.storage.clone() else {
            self.release(published);
            return None;
        };
        let release_to = match (&self.myself, live_after_commit) {
            // A keyed batch coalesced whole stores only its key: nothing to release.
            _ if published.is_empty() => None,
            (Some(myself), true) => Some(myself.clone().recipient()),
            _ => {
                self.release(published.clone());
                None
            }
        };
        let (ack, durable) = if wait {
            let (ack, durable) = oneshot::channel();
            (Some(ack), Some(durable))
        } else {
            (None, None)
        };
        storage.backlog.add(published.len());
        storage.persister.do_send(Persist {
            events: published,
            ack,
            release_to,
            keys,
        });
        durable
    }

    /// Drops the buffers of idle executions, then of the longest idle beyond the cap.
    fn evict(&mut self) {
        let now = Instant::now();
        let idle = self.config.execution_idle;
        let mut evicted = 0;
        for state in self.executions.values_mut() {
            if !state.buffer.is_empty() && now.duration_since(state.last_event_at) >= idle {
                self.buffered_bytes -= state.buffer.clear();
                evicted += 1;
            }
        }
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
        let mut buffered: Vec<_> = self
            .executions
            .values_mut()
            .filter(|s| !s.buffer.is_empty())
            .collect();
        if buffered.len() > self.config.max_buffered_executions {
            buffered.sort_by_key(|s| s.last_event_at);
            let excess = buffered.len() - self.config.max_buffered_executions;
            for state in buffered.into_iter().take(excess) {
                self.buffered_bytes -= state.buffer.clear();
                evicted += 1;
            }
        }
        self.metrics.executions_evicted.inc_by(evicted);
        self.update_buffered_gauge();
    }

    fn update_buffered_gauge(&self) {
        let buffered = self
            .executions
            .values()
            .filter(|s| !s.buffer.is_empty())
            .count();
        self.metrics.executions_buffered.set(buffered as i64);
        self.metrics.buffered_bytes.set(self.buffered_bytes as i64);
    }
}

/// Bytes the `event` message adds around an event (`{"type":"event",…}`), plus
/// the execution ID it repeats; the size limit is on the event itself.
const FRAME_OVERHEAD: usize = 64 + crate::event::MAX_ID_LEN;

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
        })
    }
}

impl Handler<Sequenced> for Emitter {
    type Result = ();

    fn handle(&mut self, msg: Sequenced, _: &mut Self::Context) {
        let mut arrived = msg.0;
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
        if let (Some(storage), false) = (&self.storage, seen.is_empty()) {
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
        self.hand_on(news, false, false, Vec::new());
    }
}

impl Handler<Release> for Emitter {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Self::Context) {
        self.notify(&msg.events);
        self.release_stored(msg.events, msg.stored);
    }
}

impl Handler<Forget> for Emitter {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Self::Context) {
        for execution_id in msg.0 {
            self.executions.remove(execution_id.as_str());
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
