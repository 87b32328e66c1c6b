//! Cluster mode: Redis gives the seqs (`redis_sequencer.rs`) and the
//! events come back through the stream (`Sequenced`). While Redis is
//! unreachable the node sequences provisionally, journals in the store and
//! publishes the journal, oldest first, when Redis answers
//! (`fallback.rs` says why and how conflicts re-sync subscribers).

use super::*;

impl Emitter {
    /// The drafts' bodies, kept for the Notifier when there is one (cluster
    /// mode notifies from the drafts the origin published).
    pub(super) fn notifier_bodies(&self, drafts: &[Draft]) -> Vec<String> {
        match self.notifier {
            Some(_) => drafts.iter().map(|d| d.body.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// Cluster mode: the origin notifies what Redis sequenced for it, with
    /// the seqs it got (after a fallback, the seqs the journal got).
    pub(super) fn notify_drafts(&self, bodies: Vec<String>, seqs: &[u64]) {
        if let Some(notifier) = self.notifier.as_ref().filter(|_| !bodies.is_empty()) {
            let drafts = bodies.into_iter().zip(seqs.iter().copied()).collect();
            notifier.do_send(NotifyDrafts(drafts));
        }
    }

    /// Store-once: the stream's entries the Redis-subscriber did not parse,
    /// because nobody here watched their executions when it read them.
    /// Decided again here, per execution, in this mailbox's order: an
    /// execution still unwatched (and no fallback under way, which compares
    /// events) is passed over: its seqs move on, its buffer empties (a
    /// buffer with a hole would answer a replay wrongly), the entry is kept
    /// raw for [`PASSED_KEEP`] (a replay parses it from there), and nothing
    /// goes to the Registry. Returns the others, parsed, to be released as
    /// usual.
    ///
    /// Why the replay seam stays exact: the Registry marks an execution
    /// watched before it answers `Registered`, and the subscriber's history
    /// read (`ReadBuffer`) comes after that answer. So an entry handled
    /// before the mark is passed over and counted in `released_seq`, which
    /// the history must reach: from the raw entries kept here, and for
    /// anything older from the store, which it waits for should the
    /// store-once writer lag; an entry handled after the mark is released
    /// and reaches the subscriber live.
    pub(super) fn pass_over(&mut self, entries: Vec<RawEntry>) -> Vec<Arc<PublishedEvent>> {
        let mut wanted: IdMap<String, bool> = id_map();
        let mut parsed = Vec::new();
        let (mut passed, mut freed, mut emptied) = (0u64, 0isize, 0i64);
        let now = Instant::now();
        for entry in entries {
            let wants = match wanted.get(&entry.execution_id) {
                Some(wants) => *wants,
                None => {
                    let wants = self.fallback.is_active()
                        || self
                            .watched
                            .as_ref()
                            .is_none_or(|w| w.wants(&entry.execution_id));
                    wanted.insert(entry.execution_id.clone(), wants);
                    wants
                }
            };
            if wants {
                match entry.parse() {
                    Ok(event) => parsed.push(PublishedEvent::new(event)),
                    Err(why) => {
                        log::error!(
                            "stream entry {}:{} unreadable: {why}",
                            entry.execution_id,
                            entry.seq
                        );
                        self.metrics
                            .cluster
                            .with_label_values(&["unreadable-entry"])
                            .inc();
                    }
                }
                continue;
            }
            let key = self.key_of(&entry.execution_id);
            let state = self
                .executions
                .entry(key)
                .or_insert_with(ExecutionState::empty);
            state.last_seq = state.last_seq.max(entry.seq);
            state.settled_seq = state.settled_seq.max(entry.seq);
            state.released_seq = state.released_seq.max(entry.seq);
            state.last_event_at = now;
            if state.conversation_id.is_none() {
                state.conversation_id = entry.conversation_id();
            }
            if !state.buffer.is_empty() {
                freed += state.buffer.clear() as isize;
                emptied += 1;
            }
            state.passed.push_back((now, entry));
            state.forget_passed(now);
            while state.passed.len() > self.config.buffer_size {
                state.passed.pop_front();
            }
            passed += 1;
        }
        if passed > 0 {
            self.buffered_bytes.change(-freed);
            self.metrics.executions_buffered.sub(emptied);
            self.metrics
                .buffered_bytes
                .set(self.buffered_bytes.total() as i64);
            self.metrics.events_in.inc_by(passed);
            self.metrics
                .cluster
                .with_label_values(&["passed-over"])
                .inc_by(passed);
        }
        parsed
    }

    /// Cluster mode: Redis assigns the seqs; the events come back through the stream.
    pub(super) fn publish_to_cluster(
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
    pub(super) fn sequence_provisionally(
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

    pub(super) fn node_id(&self) -> String {
        self.sequencer
            .as_ref()
            .map_or_else(String::new, |s| s.node_id().to_owned())
    }

    pub(super) fn update_fallback_gauge(&self) {
        self.metrics
            .fallback_pending
            .set(self.fallback.len() as i64);
    }

    /// Tries to publish the fallback journal: first a probe of Redis with the
    /// mailbox free (against a Redis that hangs, a held mailbox would stall
    /// every producer for a connect timeout per attempt), then the publish.
    pub(super) fn republish(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn publish_journal(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn settle(&mut self, seqs: &[u64], drafts: Vec<Draft>) -> Vec<String> {
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
    pub(super) fn resync(&mut self, execution: Arc<str>, from_seq: u64) {
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
    pub(super) fn load_journal(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn drafts(
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
}
