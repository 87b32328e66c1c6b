//! The single-node path, in the order an event travels: a batch is
//! checked whole, its executions' counters are seeded from the store (with
//! the mailbox held, so nothing overtakes), the per-execution rate plans it,
//! the seqs are given, and the events go to the Persister, whose commit
//! answers the producer. Keyed batches (`Idempotency-Key`) are answered from
//! the first attempt here too.

use super::*;

impl Emitter {
    /// Executions of this batch whose seq counter must first come from the store.
    pub(super) fn unseeded(&self, events: &[AgentEvent]) -> Vec<String> {
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

    pub(super) fn seed(&mut self, execution_id: String, last_seq: u64) {
        let state = self
            .executions
            .entry(execution_id.into())
            .or_insert_with(ExecutionState::empty);
        state.last_seq = state.last_seq.max(last_seq);
        state.settled_seq = state.settled_seq.max(last_seq);
    }

    /// Reads the highest stored seq of each execution.
    pub(super) fn read_seeds(
        &self,
        executions: Vec<String>,
    ) -> impl std::future::Future<Output = Result<Vec<(String, u64)>, StoreError>> {
        let read = match &self.storage {
            Some(storage) if !executions.is_empty() => Some(storage.store.last_seqs(executions)),
            _ => None,
        };
        async move {
            match read {
                Some(read) => read.await,
                None => Ok(Vec::new()),
            }
        }
    }

    /// Seeds what must be seeded, then accepts the batch: here on a single
    /// node, through Redis in a cluster. Run as an atomic response (the
    /// mailbox held), so no later batch can overtake this one. `throttled`:
    /// the batch is subject to the per-execution rate (thoughts that waited
    /// for it are not: they were admitted already).
    pub(super) fn accept(
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
    pub(super) fn accept_keyed(
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
    pub(super) fn refuse(
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
    pub(super) fn accept_first(
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
    pub(super) fn expire_keys(&mut self, ctx: &mut Context<Self>) {
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

    pub(super) fn too_large(&self, index: usize) -> IngestError {
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
    pub(super) fn check_batch(&self, events: &[AgentEvent]) -> Result<(), IngestError> {
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
        let mut claimed: IdMap<&str, &str> = id_map();
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
    pub(super) fn sequence(
        &mut self,
        events: Vec<AgentEvent>,
    ) -> Result<Vec<Arc<PublishedEvent>>, IngestError> {
        let mut next_seq: IdMap<Arc<str>, u64> = id_map();
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
    pub(super) fn advance(&mut self, published: &[Arc<PublishedEvent>]) {
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

    pub(super) fn ingest(
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
    pub(super) fn plan(
        &self,
        events: Vec<AgentEvent>,
        throttled: bool,
    ) -> Result<Plan, IngestError> {
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
    pub(super) fn commit(&mut self, plan: &mut Plan) {
        self.metrics.thoughts_coalesced.inc_by(plan.superseded);
        self.throttle.commit(plan);
        self.metrics
            .thoughts_waiting
            .set(self.throttle.waiting() as i64);
    }

    /// Sends out the waiting thoughts whose execution has a token again, with
    /// the mailbox held so that no later event of theirs overtakes them.
    pub(super) fn send_due_thoughts(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn accept_untracked(
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
    pub(super) fn hand_on(
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
}
