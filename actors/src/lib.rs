//! The event model and the actors of the agent-events broker.
//!
//! A map of the crate, in the order an event travels:
//!
//! - [`event`]: the 11 event types and their rules. Depends on nothing else here.
//! - [`handle`]: the typed way in for Rust code ([`EmitterHandle`]).
//! - [`emitter`]: the Emitter actor: validate, `seq`, `timestamp`, per-execution buffer.
//! - [`persister`]: the Persister actor: group commit to the store, acks once durable.
//! - [`redis_link`]: cluster mode: one Redis server or a Redis Cluster, behind one connection.
//! - [`cluster_keys`]: cluster mode: the Redis keys, and the stream partition of each execution.
//! - [`redis_sequencer`]: cluster mode: `seq` assigned and the event appended in Redis, atomically.
//! - [`fallback`]: cluster mode: provisional seqs while Redis is unreachable, and re-syncs after.
//! - [`redis_subscriber`]: the Redis-subscriber actor: reads the cluster's stream into this node.
//! - [`cluster_stream`]: cluster mode: what the stream's readers share (lanes, connection, entries).
//! - [`stream_store`]: cluster mode with a shared store: each event stored once, by a consumer group.
//! - [`registry`]: the Registry actor: subscriptions, and fan-out to sessions.
//! - [`session`]: the Session actor, one per WebSocket connection.
//! - [`ws_frame`]: the WebSocket frames the broker writes, each event's encoded once.
//! - [`send_queue`]: a connection's byte-counted outbound queue, and the response body that drains it.
//! - [`notifier`]: the Notifier actor: webhooks for events that match a rule, from a stored outbox.
//! - [`notify_rule`]: notification rules and their matching (pure).
//! - [`webhook`]: one signed webhook POST, and its signature.
//! - [`sse_stream`]: the SseStream actor, one per Server-Sent Events response.
//! - [`history`]: where a `fromSeq` replay reads the events a client missed.
//! - [`catch_up`]: the replay seam, once for the Session and the SseStream: hold, replay, go live.
//! - [`replay_buffer`]: one execution's recent events in memory, and their weight in bytes.
//! - [`protocol`]: the WebSocket messages, error codes and close codes.
//! - [`filter`]: subscription filters by type, agent and department.
//! - [`ag_ui`]: how our event types map to AG-UI protocol events.
//! - [`store`]: the store interface and its SQLite and MongoDB backends.
//! - [`auth`]: tokens (JWT) and what they grant.
//! - [`backoff`]: the retry schedule the Persister and the Redis-subscriber share.
//! - [`throttle`]: the per-execution event rate, and how `agent-thinking` bursts are coalesced.
//! - [`limits`]: connection permits and token buckets that keep one client from starving the rest.
//! - [`metrics`]: the figures behind `/admin/stats` and `/metrics`.
//! - [`demo`]: orchestrator, department-head and agent actors that emit realistic runs.
//!
//! See ARCHITECTURE.md at the repository root for the path of one event.

#![warn(missing_docs)]

pub mod ag_ui;
pub mod auth;
pub mod backoff;
pub mod catch_up;
pub mod cluster_keys;
pub mod cluster_stream;
pub mod demo;
pub mod emitter;
pub mod event;
pub mod fallback;
pub mod filter;
pub mod handle;
pub mod history;
pub mod id_map;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod notifier;
pub mod notify_rule;
pub mod persister;
pub mod protocol;
pub mod redis_link;
pub mod redis_sequencer;
pub mod redis_subscriber;
pub mod registry;
pub mod replay_buffer;
pub mod send_queue;
pub mod session;
pub mod socket;
pub mod sse_stream;
pub mod store;
pub mod stream_store;
pub mod throttle;
pub mod webhook;
pub mod ws_frame;

pub use handle::EmitterHandle;
