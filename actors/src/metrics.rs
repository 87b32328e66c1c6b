//! Counters and gauges shared by every actor: one source for `/admin/stats`
//! (JSON) and `/metrics` (Prometheus text).
//!
//! Why one struct of `prometheus` handles rather than an actor: the counters
//! are touched on the hot path of every event and every delivery; atomic
//! increments cost nothing there, a message to a stats actor would.
//! Every way an event or a connection can be dropped has a counter here, so
//! that no loss is ever silent.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use serde_json::{json, Map, Value};

/// Why a connection or an event was dropped; the `reason` label of `drops`.
pub const DROP_REASONS: [&str; 7] = [
    // a session's queue overflowed: the client is closed with slow-consumer
    "slow-consumer",
    // the frames discarded from that queue when it was closed
    "slow-consumer-frames",
    // a client silent past the heartbeat timeout
    "heartbeat-timeout",
    // an in-process (fire-and-forget) emit that failed validation
    "invalid-in-process-event",
    // an event for a session that was already gone
    "session-gone",
    // an in-process (fire-and-forget) emit refused because the store backlog was full
    "store-backlog-full",
    // an in-process (fire-and-forget) emit over its execution's event rate
    "in-process-rate-limited",
];

/// Why the broker started closing a connection that then had to be reset,
/// because its client did not read the close within `close_timeout`; the
/// `reason` label of `forced_closes`.
pub const FORCED_CLOSE_REASONS: [&str; 8] = [
    // its queue overflowed (also counted in drops)
    "slow-consumer",
    // silent past the heartbeat timeout (also counted in drops)
    "heartbeat-timeout",
    // its token expired
    "token-expired",
    // no token within the auth timeout
    "unauthorized",
    // the broker is stopping
    "shutting-down",
    // a frame the protocol does not allow (too large, not UTF-8, malformed)
    "protocol-error",
    // the client closed its side (a close frame, or the end of its stream) but read nothing more
    "client-close",
    // an AG-UI stream ended because the cluster re-sequenced its execution
    "replay-unavailable",
];

/// What happened on the cluster's stream; the `event` label of `cluster`.
pub const CLUSTER_EVENTS: [&str; 11] = [
    // the stream reader reconnected to Redis after a failure
    "reconnect",
    // an event this node had already passed on (after a reconnect or a restart)
    "duplicate-dropped",
    // missing seqs found in the store and passed on in order
    "gap-filled",
    // missing seqs nobody had: passed on with the hole, subscribers resume with fromSeq
    "gap-unfilled",
    // Redis came back empty: the stream was read from its start again
    "stream-reset",
    // an entry that could not be read as an event
    "unreadable-entry",
    // a producer's publish to Redis failed (the events went to the fallback journal, or 503)
    "publish-failed",
    // events sequenced here, provisionally, while Redis was unreachable
    "fallback",
    // provisional events published to the stream once Redis answered
    "republished",
    // executions whose subscribers were told to re-sync (another node took their seqs)
    "resync",
    // store-once: events of executions nobody on this node watched, passed over unparsed
    "passed-over",
];

/// What happened to notifications; the `outcome` label of `notifications`.
pub const NOTIFY_OUTCOMES: [&str; 5] = [
    // a rule matched and the delivery was added to the outbox (a repeated key is not counted)
    "enqueued",
    // a receiver answered 2xx
    "delivered",
    // an attempt failed and another is scheduled
    "retried",
    // the last attempt failed: the delivery is a dead letter
    "dead-lettered",
    // matched, but the outbox write kept failing (the store was down): never delivered
    "lost",
];

/// The broker's figures.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open client connections (WebSocket and SSE), counted until their
    /// socket is closed, not only while their actor runs.
    pub connections: IntGauge,
    /// Of those, connections the broker is closing whose socket is still
    /// open: waiting for the client to read the close, `close_timeout` at most.
    pub closing_connections: IntGauge,
    /// Connections reset because their client did not read the close in
    /// time, by why they were closing (see [`FORCED_CLOSE_REASONS`]).
    pub forced_closes: IntCounterVec,
    /// Live subscriptions over all connections.
    pub subscriptions: IntGauge,
    /// Executions whose recent events are held in memory.
    pub executions_buffered: IntGauge,
    /// Bytes those buffers hold together (`replay_buffer::weight`).
    pub buffered_bytes: IntGauge,
    /// Events accepted and sequenced.
    pub events_in: IntCounter,
    /// Events refused, by error code.
    pub events_rejected: IntCounterVec,
    /// Event frames handed to client connections.
    pub deliveries: IntCounter,
    /// Events replayed to subscribers that asked with `fromSeq`.
    pub replayed: IntCounter,
    /// Drops, by reason (see [`DROP_REASONS`]).
    pub drops: IntCounterVec,
    /// Error messages sent to clients, by code.
    pub client_errors: IntCounterVec,
    /// Executions whose buffer was dropped to bound memory.
    pub executions_evicted: IntCounter,
    /// Events committed to the store.
    pub events_stored: IntCounter,
    /// Batches committed to the store (group commits).
    pub store_batches: IntCounter,
    /// Store writes that failed and were retried.
    pub store_retries: IntCounter,
    /// Cluster stream events, by kind (see [`CLUSTER_EVENTS`]).
    pub cluster: IntCounterVec,
    /// `agent-thinking` events replaced by a newer thought of their execution
    /// (over its event rate; each replacement is also in the newer thought's metadata).
    pub thoughts_coalesced: IntCounter,
    /// `agent-thinking` events waiting for their execution's rate to allow them.
    pub thoughts_waiting: IntGauge,
    /// Cluster fallback: provisional events journaled here, waiting for Redis.
    pub fallback_pending: IntGauge,
    /// Notifications, by outcome (see [`NOTIFY_OUTCOMES`]).
    pub notifications: IntCounterVec,
    /// Notifications waiting in the outbox (as last counted in the store).
    pub notifications_pending: IntGauge,
    /// Dead letters in the outbox (as last counted in the store).
    pub notifications_dead: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers figures in one registry, named `agent_events_{name}` (and
/// `…_total` for counters).
struct Figures<'a>(&'a Registry);

impl Figures<'_> {
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::new(format!("agent_events_{name}"), help).expect("valid gauge");
        self.0.register(Box::new(g.clone())).expect("unique gauge");
        g
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::new(format!("agent_events_{name}_total"), help).expect("valid counter");
        self.0
            .register(Box::new(c.clone()))
            .expect("unique counter");
        c
    }

    /// A counter by `label`, every one of `values` at zero so they are visible from the start.
    fn labelled(&self, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
        let opts = Opts::new(format!("agent_events_{name}_total"), help);
        let c = IntCounterVec::new(opts, &[label]).expect("valid counter vec");
        self.0
            .register(Box::new(c.clone()))
            .expect("unique counter vec");
        for value in values {
            c.with_label_values(&[*value]);
        }
        c
    }
}

impl Metrics {
    /// Registers every figure, with every label value at zero so they are visible from the start.
    pub fn new() -> Self {
        let registry = Registry::new();
        let figures = Figures(&registry);
        let codes: Vec<&str> = error_codes().collect();
        Metrics {
            connections: figures.gauge(
                "connections",
                "Open client connections (WebSocket and SSE), until their socket closes",
            ),
            closing_connections: figures.gauge(
                "closing_connections",
                "Connections being closed whose socket is still open (close_timeout at most)",
            ),
            forced_closes: figures.labelled(
                "forced_closes",
                "Connections reset after close_timeout because the client did not read the close, by why they were closing",
                "reason",
                &FORCED_CLOSE_REASONS,
            ),
            subscriptions: figures.gauge("subscriptions", "Live subscriptions over all connections"),
            executions_buffered: figures.gauge(
                "executions_buffered",
                "Executions with recent events in memory",
            ),
            buffered_bytes: figures.gauge(
                "buffered_bytes",
                "Bytes held in the replay buffers (frames and parsed events, estimated)",
            ),
            events_in: figures.counter("events_in", "Events accepted and sequenced"),
            events_rejected: figures.labelled(
                "events_rejected",
                "Events refused, by error code (a request refused before the Emitter counts as one)",
                "code",
                &codes,
            ),
            deliveries: figures.counter("deliveries", "Event frames handed to client connections"),
            replayed: figures.counter("replayed", "Events replayed to subscribers with fromSeq"),
            drops: figures.labelled(
                "drops",
                "Connections or events dropped, by reason",
                "reason",
                &DROP_REASONS,
            ),
            client_errors: figures.labelled(
                "client_errors",
                "Error messages sent to clients, by code",
                "code",
                &codes,
            ),
            executions_evicted: figures.counter(
                "executions_evicted",
                "Execution buffers dropped to bound memory",
            ),
            events_stored: figures.counter("events_stored", "Events committed to the store"),
            store_batches: figures.counter("store_batches", "Batches committed to the store"),
            store_retries: figures.counter("store_retries", "Store writes that failed and were retried"),
            cluster: figures.labelled(
                "cluster",
                "Cluster stream events, by kind",
                "event",
                &CLUSTER_EVENTS,
            ),
            thoughts_coalesced: figures.counter(
                "thoughts_coalesced",
                "agent-thinking events replaced by a newer thought (execution over its rate)",
            ),
            thoughts_waiting: figures.gauge(
                "thoughts_waiting",
                "agent-thinking events waiting for their execution's rate",
            ),
            fallback_pending: figures.gauge(
                "fallback_pending",
                "Provisional events journaled while Redis was unreachable, not yet published",
            ),
            notifications: figures.labelled(
                "notifications",
                "Webhook notifications, by outcome",
                "outcome",
                &NOTIFY_OUTCOMES,
            ),
            notifications_pending: figures.gauge(
                "notifications_pending",
                "Webhook notifications waiting in the outbox",
            ),
            notifications_dead: figures.gauge(
                "notifications_dead",
                "Webhook notifications in the dead-letter list",
            ),
            registry,
        }
    }

    /// Counts one drop of `reason` (one of [`DROP_REASONS`]).
    pub fn drop(&self, reason: &str, count: u64) {
        self.drops.with_label_values(&[reason]).inc_by(count);
    }

    /// The figures as Prometheus text.
    pub fn prometheus_text(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    /// The figures as the JSON of `/admin/stats`.
    pub fn snapshot(&self) -> Value {
        json!({
            "connections": self.connections.get(),
            "closingConnections": self.closing_connections.get(),
            "forcedCloses": by_label(&self.forced_closes, FORCED_CLOSE_REASONS),
            "subscriptions": self.subscriptions.get(),
            "executionsBuffered": self.executions_buffered.get(),
            "bufferedBytes": self.buffered_bytes.get(),
            "eventsIn": self.events_in.get(),
            "eventsOut": self.deliveries.get(),
            "replayed": self.replayed.get(),
            "executionsEvicted": self.executions_evicted.get(),
            "eventsStored": self.events_stored.get(),
            "storeBatches": self.store_batches.get(),
            "storeRetries": self.store_retries.get(),
            "eventsRejected": by_label(&self.events_rejected, error_codes()),
            "drops": by_label(&self.drops, DROP_REASONS),
            "clientErrors": by_label(&self.client_errors, error_codes()),
            "cluster": by_label(&self.cluster, CLUSTER_EVENTS),
            "thoughtsCoalesced": self.thoughts_coalesced.get(),
            "thoughtsWaiting": self.thoughts_waiting.get(),
            "fallbackPending": self.fallback_pending.get(),
            "notifications": self.notifications_snapshot(),
        })
    }

    /// Counts by outcome, plus `pending` and `deadLetters` now.
    fn notifications_snapshot(&self) -> Value {
        let mut out = by_label(&self.notifications, NOTIFY_OUTCOMES);
        out["pending"] = json!(self.notifications_pending.get());
        out["deadLetters"] = json!(self.notifications_dead.get());
        out
    }
}

fn by_label<'a>(counters: &IntCounterVec, labels: impl IntoIterator<Item = &'a str>) -> Value {
    let out: Map<String, Value> = labels
        .into_iter()
        .map(|label| {
            (
                label.to_owned(),
                json!(counters.with_label_values(&[label]).get()),
            )
        })
        .collect();
    Value::Object(out)
}

fn error_codes() -> impl Iterator<Item = &'static str> {
    crate::protocol::ErrorCode::ALL.iter().map(|c| c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_show_in_both_views() {
        let metrics = Metrics::new();
        metrics.drop("slow-consumer", 2);
        metrics.events_in.inc();
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot["drops"]["slow-consumer"], 2);
        assert_eq!(snapshot["drops"]["heartbeat-timeout"], 0);
        assert_eq!(snapshot["eventsIn"], 1);
        let text = metrics.prometheus_text();
        assert!(
            text.contains("agent_events_drops_total{reason=\"slow-consumer\"} 2"),
            "{text}"
        );
        assert!(text.contains("agent_events_events_in_total 1"), "{text}");
    }
}
