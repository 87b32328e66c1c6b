//! What happens once a batch is committed (or must go live while the store
//! fails): into the execution's replay buffer, then to the Registry, in
//! that order, so that a replay never misses an event that went live. The
//! buffers' weight against `max_buffered_bytes` and which of them give way
//! is `replay_buffer.rs`'s [`BufferedBytes`].

use super::*;

impl Emitter {
    /// Only events a producer gave this node are notified: on a single node
    /// those the Persister releases (here), in a cluster those Redis
    /// sequenced for this node (`publish_to_cluster`): every node reads
    /// every event back through `Sequenced`, and only the origin notifies.
    pub(super) fn notify(&self, events: &[Arc<PublishedEvent>]) {
        if let Some(notifier) = self.notifier.as_ref().filter(|_| !events.is_empty()) {
            notifier.do_send(Notify(events.to_vec()));
        }
    }

    /// Puts events in their buffers, then sends them to the Registry: in
    /// that order, so a replay never misses an event that went live.
    pub(super) fn release(&mut self, published: Vec<Arc<PublishedEvent>>) {
        self.release_stored(published, false);
    }

    /// As [`Emitter::release`]; `stored` events of an execution nobody
    /// watches skip the buffer (and empty it): the store replays them to
    /// whoever subscribes later (`registry::Watched` says why).
    pub(super) fn release_stored(&mut self, published: Vec<Arc<PublishedEvent>>, stored: bool) {
        let capacity = self.config.buffer_size;
        let watched = self.watched.clone();
        // Counted as it changes: recounting every execution per release
        // would cost O(executions) on the hot path.
        let mut buffered_delta: i64 = 0;
        let mut bytes: isize = 0;
        for item in &published {
            let unwatched = stored
                && watched
                    .as_ref()
                    .is_some_and(|w| !w.contains(item.execution_id()));
            let state = self.state_of(item);
            let was_empty = state.buffer.is_empty();
            // Watched again after it was passed over: what is kept of that
            // goes into the buffer first, in order.
            for (_, entry) in state.passed.drain(..) {
                if let Ok(event) = entry.parse() {
                    bytes += state.buffer.push(PublishedEvent::new(event), capacity);
                }
            }
            state.last_seq = state.last_seq.max(item.seq);
            state.released_seq = state.released_seq.max(item.seq);
            if unwatched {
                // A partial buffer would answer a replay without the newer
                // events: all of it goes, the store has every one.
                bytes -= state.buffer.clear() as isize;
            } else {
                bytes += state.buffer.push(item.clone(), capacity);
            }
            buffered_delta += i64::from(was_empty) - i64::from(state.buffer.is_empty());
        }
        self.buffered_bytes.change(bytes);
        self.metrics.executions_buffered.add(buffered_delta);
        self.metrics
            .buffered_bytes
            .set(self.buffered_bytes.total() as i64);
        if self.buffered_bytes.over_budget() {
            self.shed_buffers();
        }
        self.registry.do_send(Publish(published));
    }

    /// Empties the buffers of the longest idle executions until all of them
    /// hold at most three quarters of `max_buffered_bytes`.
    fn shed_buffers(&mut self) {
        let evicted = self.buffered_bytes.shed(aged(&mut self.executions));
        self.metrics.executions_evicted.inc_by(evicted);
        self.update_buffered_gauge();
    }

    pub(super) fn state_of(&mut self, item: &PublishedEvent) -> &mut ExecutionState {
        let key = self.key_of(item.execution_id());
        self.executions
            .entry(key)
            .or_insert_with(ExecutionState::empty)
    }

    /// The map's own `Arc<str>` for an execution, so the key is allocated once.
    pub(super) fn key_of(&self, execution_id: &str) -> Arc<str> {
        self.executions
            .get_key_value(execution_id)
            .map(|(key, _)| key.clone())
            .unwrap_or_else(|| execution_id.into())
    }
}
