//! The store: where every accepted event is kept for replay, history and stats.
//!
//! One interface, two real backends chosen by config: [`sqlite`] (embedded,
//! the default, nothing to install) and [`mongo`] (`MONGODB_URI`). Both pass
//! the same conformance suite (`actors/tests/store_conformance.rs`).
//!
//! Rules every backend keeps:
//! - `append` is idempotent by `(executionId, seq)`: writing an event that is
//!   already stored changes nothing (a retry after a fault, or two cluster
//!   nodes storing the same event, is harmless). It returns only once the
//!   events are durable: that is what a 202 promises.
//! - `append` keeps the execution summaries (status, start, end, counts) in
//!   step with the events, in the same commit where the backend allows it.
//! - `append_keyed` stores the batches' idempotency keys
//!   ([`KeyRecord`]) with the events, in the same commit where the backend
//!   allows it (SQLite; MongoDB writes the keys right after the events), so
//!   a 202 means the key is stored too. A key written again replaces the
//!   older record (a key reused after its window). `idempotency_key` reads
//!   one back; `expire_idempotency_keys` removes those past the window.
//! - Reads return events in `seq` order, rebuilt with
//!   [`AgentEvent::from_stored_json`] from the JSON the event was stored as.
//! - Nothing here blocks the actor system: SQLite works on threads of its
//!   own, MongoDB is async.
//!
//! Every store is also the notification [`outbox`] (its rules are there).

pub mod analytics;
pub mod journal;
pub mod keys;
pub mod mongo;
pub mod outbox;
pub mod sqlite;

pub use journal::JournalEntry;
pub use keys::KeyRecord;

use crate::event::{AgentEvent, EventType};
use crate::protocol::PublishedEvent;
use analytics::{Analytics, AnalyticsQuery};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What a store operation returns: a boxed future, so `Store` can be a trait object.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// A store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What went wrong, for logs and `/health` (never contains credentials).
    pub message: String,
}

impl StoreError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// How an execution stands, derived from its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionStatus {
    /// No `orchestration-complete` yet.
    Running,
    /// `orchestration-complete` with status `success` (or none).
    Success,
    /// `orchestration-complete` with status `failed`.
    Failed,
    /// `orchestration-complete` with status `partial`.
    Partial,
}

impl ExecutionStatus {
    /// The wire name, e.g. `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Success => "success",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Partial => "partial",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<ExecutionStatus> {
        [
            ExecutionStatus::Running,
            ExecutionStatus::Success,
            ExecutionStatus::Failed,
            ExecutionStatus::Partial,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// Which events of one execution to read.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    /// The execution.
    pub execution_id: String,
    /// Only events with `seq > after_seq` (0: from the start).
    pub after_seq: u64,
    /// Only events with `seq < before_seq`, when set (replay reads up to the buffer).
    pub before_seq: Option<u64>,
    /// Only these types, when set (an empty list matches nothing, as in a `Filter`).
    pub types: Option<Vec<EventType>>,
    /// Only events whose `agentId` is this, when set.
    pub agent_id: Option<String>,
    /// Only events whose `department` is this, when set.
    pub department: Option<String>,
    /// At most this many events.
    pub limit: usize,
}

impl EventQuery {
    /// Every event of `execution_id` after `after_seq`, up to `limit`.
    pub fn after(execution_id: impl Into<String>, after_seq: u64, limit: usize) -> Self {
        EventQuery {
            execution_id: execution_id.into(),
            after_seq,
            before_seq: None,
            types: None,
            agent_id: None,
            department: None,
            limit,
        }
    }
}

/// One execution as the executions list shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    /// The execution.
    pub execution_id: String,
    /// Its conversation, if any event named one.
    pub conversation_id: Option<String>,
    /// How it stands.
    pub status: ExecutionStatus,
    /// Timestamp of its earliest event.
    pub started_at: DateTime<Utc>,
    /// Timestamp of its `orchestration-complete`, if any.
    pub ended_at: Option<DateTime<Utc>>,
    /// Events stored.
    pub event_count: u64,
    /// Highest seq stored.
    pub last_seq: u64,
}

/// Which executions to list: newest `started_at` first (ties: larger ID first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionQuery {
    /// Only this conversation's executions.
    pub conversation_id: Option<String>,
    /// Only executions in this status.
    pub status: Option<ExecutionStatus>,
    /// Only executions strictly after this position in the order (the cursor
    /// of the previous page: its last item's `started_at` and ID).
    pub before: Option<(DateTime<Utc>, String)>,
    /// At most this many.
    pub limit: usize,
}

/// Minimum, average and maximum of a set of quality scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreSummary {
    /// How many scores.
    pub count: u64,
    /// The lowest.
    pub min: f64,
    /// The mean.
    pub avg: f64,
    /// The highest.
    pub max: f64,
}

/// Statistics of one execution (`GET /api/executions/{id}/stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStats {
    /// The execution and how it stands.
    #[serde(flatten)]
    pub summary: ExecutionSummary,
    /// `ended_at - started_at` in milliseconds, once ended.
    pub duration_ms: Option<i64>,
    /// Events by type name.
    pub by_type: BTreeMap<String, u64>,
    /// Events by `agentId` (events that name an agent).
    pub by_agent: BTreeMap<String, u64>,
    /// Events by `department` (events that name a department).
    pub by_department: BTreeMap<String, u64>,
    /// `tool-call` events.
    pub tool_calls: u64,
    /// `tool-result` events with `success: false`.
    pub tool_failures: u64,
    /// `qualityScore` of `quality-check` events, by department (those that name one).
    pub quality_by_department: BTreeMap<String, ScoreSummary>,
    /// `review-status` events by `status`.
    pub reviews: BTreeMap<String, u64>,
}

/// What retention removes: executions older than an age, beyond a count, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove executions whose latest event is older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many executions (newest `started_at` kept).
    pub max_executions: Option<u64>,
}

/// The store interface; see the module documentation for its rules.
pub trait Store: outbox::Outbox + Send + Sync + 'static {
    /// Short name for logs and `/health`: `sqlite`, `mongodb`.
    fn name(&self) -> &'static str;

    /// Stores a batch (any executions, each in seq order) durably and idempotently.
    fn append(&self, events: Vec<Arc<PublishedEvent>>) -> StoreFuture<()> {
        self.append_keyed(events, Vec::new())
    }

    /// As [`Store::append`], with the idempotency keys of the batches the
    /// events belong to, in the same commit (see the module documentation).
    fn append_keyed(
        &self,
        events: Vec<Arc<PublishedEvent>>,
        keys: Vec<KeyRecord>,
    ) -> StoreFuture<()>;

    /// The stored record of an idempotency key, whatever its age.
    fn idempotency_key(&self, key: &str) -> StoreFuture<Option<KeyRecord>>;

    /// Removes idempotency keys created before `before`; returns how many.
    fn expire_idempotency_keys(&self, before: DateTime<Utc>) -> StoreFuture<u64>;

    /// The highest seq stored for an execution; 0 when it has none.
    fn last_seq(&self, execution_id: &str) -> StoreFuture<u64>;

    /// [`Store::last_seq`] of each execution, in the order given.
    ///
    /// The Emitter seeds every execution of a batch it does not hold, with
    /// its mailbox held: with many executions of few events each, a read per
    /// execution was most of the cost of a batch. A store that can answer in
    /// one round trip overrides this; the default asks one at a time.
    fn last_seqs(&self, execution_ids: Vec<String>) -> StoreFuture<Vec<(String, u64)>> {
        let reads: Vec<_> = execution_ids
            .iter()
            .map(|execution_id| self.last_seq(execution_id))
            .collect();
        Box::pin(async move {
            let mut seeds = Vec::with_capacity(reads.len());
            for (execution_id, read) in execution_ids.into_iter().zip(reads) {
                seeds.push((execution_id, read.await?));
            }
            Ok(seeds)
        })
    }

    /// Events of one execution, in seq order, as the query says.
    fn events(&self, query: EventQuery) -> StoreFuture<Vec<AgentEvent>>;

    /// Statistics of one execution; `None` when it has no stored event.
    fn execution_stats(&self, execution_id: &str) -> StoreFuture<Option<ExecutionStats>>;

    /// Executions, newest first, as the query says.
    fn executions(&self, query: ExecutionQuery) -> StoreFuture<Vec<ExecutionSummary>>;

    /// Removes what the policy says, events and summaries alike; returns the
    /// executions removed (so the broker can forget them in memory too).
    fn apply_retention(&self, policy: Retention) -> StoreFuture<Vec<String>>;

    /// Figures over a time window, computed where the events are (see [`analytics`]).
    fn analytics(&self, query: AnalyticsQuery) -> StoreFuture<Analytics>;

    /// Answers when the store is reachable and writable enough to take events.
    fn ping(&self) -> StoreFuture<()>;

    /// Journals events durably (cluster fallback, see [`journal`]); an entry
    /// whose draft ID is already there is left as it is.
    fn journal_add(&self, entries: Vec<JournalEntry>) -> StoreFuture<()>;

    /// The journal of `node_id`, in `position` order.
    fn journal_read(&self, node_id: &str) -> StoreFuture<Vec<JournalEntry>>;

    /// Removes journal entries by draft ID (they are in the cluster's stream now).
    fn journal_remove(&self, draft_ids: Vec<String>) -> StoreFuture<()>;
}
