//! The store conformance suite: the rules of `store/mod.rs`, checked the same
//! way on every backend.
//!
//! Each rule is a function of an `Arc<dyn Store>`, knowing nothing of the
//! backend. `conformance_suite!` runs every rule on SQLite (a fresh file per
//! test) and on MongoDB (a fresh database per test) when `MONGODB_URI` is set;
//! without it the MongoDB tests say `SKIPPED` on stderr and pass.

use agent_events_actors::event::{
    AgentComplete, AgentEvent, AgentStart, AgentThinking, DepartmentComplete, DepartmentStart,
    EventKind, EventType, OrchestrationComplete, OrchestrationStart, QualityCheck, ReviewStatus,
    ReviewVerdict, RunStatus, ToolCall, ToolResult,
};
use agent_events_actors::idempotency::KeyRecord;
use agent_events_actors::protocol::PublishedEvent;
use agent_events_actors::store::outbox::{DeliveryState, Notification, Outcome, StoredRule};
use agent_events_actors::store::{
    EventQuery, ExecutionQuery, ExecutionStatus, ExecutionSummary, JournalEntry, Retention,
    ScoreSummary, Store,
};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[macro_use]
mod backends;

use backends::{connect_mongodb, database_name, drop_database, mongodb_uri, open_sqlite};

conformance_suite!(
    "conformance":
    appended_events_read_back_in_seq_order,
    appending_again_changes_nothing,
    a_long_batch_with_some_events_stored_counts_only_the_new,
    many_summaries_in_one_append_keep_each_executions_first_fields,
    last_seq_is_the_highest_stored,
    last_seqs_answers_many_executions_in_order,
    each_event_filter_narrows,
    after_seq_pages_through_everything,
    before_seq_bounds_a_replay,
    stats_match_a_hand_counted_execution,
    stats_of_an_unknown_execution_are_none,
    executions_list_newest_first_with_filters,
    executions_cursor_pages_without_gaps_or_repeats,
    status_follows_orchestration_complete,
    a_batch_sums_up_as_its_events_one_by_one,
    retention_keeps_the_newest_by_count,
    retention_removes_executions_idle_too_long,
    retention_without_limits_removes_nothing,
    ping_answers,
    the_journal_keeps_each_nodes_entries_in_order,
    idempotency_keys_are_stored_with_their_events,
    an_idempotency_key_written_again_takes_the_newer_record,
    idempotency_keys_past_a_time_are_expired,
    outbox_enqueue_is_idempotent_by_key,
    outbox_claims_each_due_delivery_once_per_lease,
    outbox_records_delivered_retry_and_dead,
    outbox_dead_letters_are_retried_or_discarded,
    outbox_prunes_only_finished_deliveries,
    outbox_rules_are_stored_replaced_and_deleted,
);

#[tokio::test]
async fn sqlite_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().to_owned();
    everything_survives_a_reopen(open_sqlite(&path), || async move { open_sqlite(&path) }).await;
}

#[tokio::test]
async fn mongodb_keeps_everything_across_a_reconnect() {
    let Some(uri) = mongodb_uri("conformance") else {
        return;
    };
    let database = database_name("reconnect");
    let first = connect_mongodb(&uri, &database).await;
    everything_survives_a_reopen(first, || connect_mongodb(&uri, &database)).await;
    drop_database(&uri, &database).await;
}

#[tokio::test]
async fn sqlite_two_writers_on_one_file_count_each_event_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    two_writers_count_each_event_once(open_sqlite(dir.path()), open_sqlite(dir.path())).await;
}

#[tokio::test]
async fn mongodb_two_writers_on_one_database_count_each_event_once() {
    let Some(uri) = mongodb_uri("conformance") else {
        return;
    };
    let database = database_name("two-writers");
    let (first, second) = (
        connect_mongodb(&uri, &database).await,
        connect_mongodb(&uri, &database).await,
    );
    two_writers_count_each_event_once(first, second).await;
    drop_database(&uri, &database).await;
}

// ---------------------------------------------------------------------------
// Building executions

/// 2025-10-01T12:00:00Z, the protocol's example time; events are placed after it.
fn t0() -> DateTime<Utc> {
    "2025-10-01T12:00:00Z".parse().expect("a timestamp")
}

fn ms(n: i64) -> TimeDelta {
    TimeDelta::milliseconds(n)
}

/// One execution's events, numbered the way the Emitter numbers them: 1, 2, 3 …
struct Run {
    execution_id: String,
    conversation_id: Option<String>,
    start: DateTime<Utc>,
    events: Vec<Arc<PublishedEvent>>,
}

impl Run {
    fn new(execution_id: &str) -> Run {
        Run {
            execution_id: execution_id.into(),
            conversation_id: None,
            start: t0(),
            events: Vec::new(),
        }
    }

    fn in_conversation(mut self, conversation_id: &str) -> Run {
        self.conversation_id = Some(conversation_id.into());
        self
    }

    /// Places the events relative to `start` instead of [`t0`].
    fn starting_at(mut self, start: DateTime<Utc>) -> Run {
        self.start = start;
        self
    }

    /// Adds the next event, `after_ms` after the run's start.
    fn then(mut self, after_ms: i64, kind: impl Into<EventKind>) -> Run {
        let mut event = AgentEvent::new(self.execution_id.clone(), kind);
        event.conversation_id = self.conversation_id.clone();
        event.seq = Some(self.events.len() as u64 + 1);
        event.timestamp = Some(self.start + ms(after_ms));
        self.events.push(PublishedEvent::new(event));
        self
    }

    /// Puts `metadata` on the last event added.
    fn with_metadata(mut self, metadata: serde_json::Map<String, serde_json::Value>) -> Run {
        let last = self.events.pop().expect("an event to annotate");
        let event = last.event.clone().with_metadata(metadata);
        self.events.push(PublishedEvent::new(event));
        self
    }

    /// Seq `first..=last`, for appending in pieces.
    fn seqs(&self, first: u64, last: u64) -> Vec<Arc<PublishedEvent>> {
        self.events[first as usize - 1..last as usize].to_vec()
    }

    fn all(&self) -> Vec<Arc<PublishedEvent>> {
        self.events.clone()
    }

    /// The events as a read should return them.
    fn expected(&self, keep: impl Fn(&AgentEvent) -> bool) -> Vec<AgentEvent> {
        self.events
            .iter()
            .map(|published| published.event.clone())
            .filter(|event| keep(event))
            .collect()
    }

    fn last_seq(&self) -> u64 {
        self.events.len() as u64
    }
}

/// Three events on `run`: started, one agent at work, and ended with the
/// status in `ending` (`None`: still running, so two events).
fn short_run(run: Run, start_ms: i64, ending: Option<Option<RunStatus>>) -> Run {
    let run = run
        .then(start_ms, OrchestrationStart::default())
        .then(start_ms + 10, agent_start("worker", Some("story")));
    match ending {
        Some(status) => run.then(start_ms + 20, complete(status)),
        None => run,
    }
}

fn agent_start(agent: &str, department: Option<&str>) -> AgentStart {
    AgentStart {
        agent_id: agent.into(),
        department: department.map(Into::into),
        ..Default::default()
    }
}

fn thinking(agent: &str, thought: &str) -> AgentThinking {
    AgentThinking {
        agent_id: agent.into(),
        thought: thought.into(),
        step: Some(0),
    }
}

fn tool_call(agent: &str, tool: &str) -> ToolCall {
    ToolCall {
        agent_id: agent.into(),
        tool_name: tool.into(),
        tool_call_id: Some(format!("{agent}-{tool}")),
        input: Some(serde_json::json!({"query": "dragons", "n": 3})),
    }
}

fn tool_result(agent: &str, tool: &str, success: Option<bool>) -> ToolResult {
    ToolResult {
        agent_id: agent.into(),
        tool_name: tool.into(),
        success,
        execution_time: Some(12.5),
        ..Default::default()
    }
}

fn quality(score: f64, department: Option<&str>, agent: Option<&str>) -> QualityCheck {
    QualityCheck {
        quality_score: score,
        department: department.map(Into::into),
        agent_id: agent.map(Into::into),
        ..Default::default()
    }
}

fn review(department: &str, status: ReviewVerdict) -> ReviewStatus {
    ReviewStatus {
        department: department.into(),
        status,
        agent_id: None,
        specialist_id: None,
        feedback: None,
        quality_score: None,
    }
}

fn complete(status: Option<RunStatus>) -> OrchestrationComplete {
    OrchestrationComplete {
        status,
        ..Default::default()
    }
}

/// An execution that touches every event type, two agents and two departments.
fn mixed_run(execution_id: &str) -> Run {
    let mut metadata = serde_json::Map::new();
    metadata.insert("model".into(), "claude".into());
    metadata.insert("costUsd".into(), 0.0125.into());
    Run::new(execution_id)
        .in_conversation("conv-1")
        .then(0, OrchestrationStart::default())
        .then(
            1,
            DepartmentStart {
                department: "story".into(),
                agent_id: Some("head".into()),
                relevance: Some(0.75),
                ..Default::default()
            },
        )
        .then(2, agent_start("writer", Some("story")))
        .then(3, thinking("writer", "plot first"))
        .with_metadata(metadata)
        .then(4, tool_call("writer", "search"))
        .then(5, tool_result("writer", "search", Some(true)))
        .then(6, agent_start("painter", Some("art")))
        .then(7, tool_call("painter", "draw"))
        .then(
            8,
            AgentComplete {
                agent_id: "writer".into(),
                department: Some("story".into()),
                output: Some(serde_json::json!({"chapters": [1, 2]})),
                success: Some(true),
                ..Default::default()
            },
        )
        .then(9, quality(87.5, Some("story"), Some("writer")))
        .then(10, review("story", ReviewVerdict::Approved))
        .then(
            11,
            DepartmentComplete {
                department: "story".into(),
                quality_score: Some(90.0),
                ..Default::default()
            },
        )
        .then(12, complete(Some(RunStatus::Success)))
}

// ---------------------------------------------------------------------------
// Reading helpers

fn all_of(execution_id: &str) -> EventQuery {
    EventQuery::after(execution_id, 0, 10_000)
}

async fn read(store: &Arc<dyn Store>, query: EventQuery) -> Vec<AgentEvent> {
    store.events(query).await.expect("events")
}

async fn summary(store: &Arc<dyn Store>, execution_id: &str) -> Option<ExecutionSummary> {
    let stats = store.execution_stats(execution_id).await.expect("stats");
    stats.map(|stats| stats.summary)
}

async fn list(store: &Arc<dyn Store>, query: ExecutionQuery) -> Vec<String> {
    let listed = store.executions(query).await.expect("executions");
    listed.into_iter().map(|s| s.execution_id).collect()
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn seqs(events: &[AgentEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.seq.expect("a stored event has a seq"))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

// ---------------------------------------------------------------------------
// The rules

async fn appended_events_read_back_in_seq_order(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    let other = short_run(Run::new("exec-b"), 0, None);
    // Two executions in one batch, interleaved, and the rest in a second batch.
    let mut batch = run.seqs(1, 6);
    batch.splice(2..2, other.all());
    store.append(batch).await.expect("append");
    store.append(run.seqs(7, 13)).await.expect("append");

    assert_eq!(read(&store, all_of("exec-a")).await, run.expected(|_| true));
    assert_eq!(
        read(&store, all_of("exec-b")).await,
        other.expected(|_| true)
    );
    assert!(read(&store, all_of("exec-none")).await.is_empty());
}

async fn appending_again_changes_nothing(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    store.append(run.seqs(1, 8)).await.expect("append");
    let stats_before = store.execution_stats("exec-a").await.expect("stats");
    // The same batch again, and a batch that overlaps it.
    store.append(run.seqs(1, 8)).await.expect("append again");
    store.append(run.seqs(5, 8)).await.expect("append overlap");
    assert_eq!(
        store.execution_stats("exec-a").await.expect("stats"),
        stats_before
    );

    store
        .append(run.seqs(5, 13))
        .await
        .expect("append the rest");
    store
        .append(run.all())
        .await
        .expect("append everything again");
    assert_eq!(read(&store, all_of("exec-a")).await, run.expected(|_| true));
    let summary = summary(&store, "exec-a").await.expect("a summary");
    assert_eq!(summary.event_count, 13);
    assert_eq!(summary.last_seq, 13);
    let listed = store
        .executions(ExecutionQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("executions");
    assert_eq!(listed, vec![summary]);
}

/// Batches longer than a store writes in one statement, new events mixed
/// with stored ones, in two executions: each event is stored once and
/// counted once.
async fn a_long_batch_with_some_events_stored_counts_only_the_new(store: Arc<dyn Store>) {
    let long_run = |execution_id: &str| {
        (0..70).fold(Run::new(execution_id), |run, n| {
            run.then(n, thinking("worker", &format!("step {n}")))
        })
    };
    let (a, b) = (long_run("exec-a"), long_run("exec-b"));
    store.append(a.seqs(20, 29)).await.expect("append a middle");
    store.append(b.seqs(1, 3)).await.expect("append b's start");
    let mixed: Vec<_> = a.seqs(1, 50).into_iter().chain(b.seqs(1, 40)).collect();
    store.append(mixed).await.expect("append the mix");
    store.append(a.all()).await.expect("append all of a");
    for (run, stored) in [(&a, 70), (&b, 40)] {
        let id = &run.events[0].event.execution_id;
        let summary = summary(&store, id).await.expect("a summary");
        assert_eq!(
            (summary.event_count, summary.last_seq),
            (stored, stored),
            "{id}"
        );
        let events = read(&store, all_of(id)).await;
        assert_eq!(seqs(&events), (1..=stored).collect::<Vec<_>>(), "{id}");
    }
}

/// Forty executions in each append (a store may fold many summaries in one
/// statement): each takes the conversation its second event names, starts
/// at its earliest event even when that came later, and counts every event
/// once. (An execution never changes conversation: the Emitter refuses it.)
async fn many_summaries_in_one_append_keep_each_executions_first_fields(store: Arc<dyn Store>) {
    let runs: Vec<Run> = (0..40)
        .map(|n| {
            Run::new(&format!("exec-{n:02}"))
                .then(100, thinking("worker", "first, in no conversation yet"))
                .in_conversation(&format!("conv-{n:02}"))
                .then(
                    50,
                    thinking("worker", "earlier, and names the conversation"),
                )
                .then(200, thinking("worker", "the last"))
        })
        .collect();
    for seq in 1..=3 {
        let batch: Vec<_> = runs.iter().flat_map(|run| run.seqs(seq, seq)).collect();
        store.append(batch).await.expect("append");
    }
    for n in 0..40 {
        let id = format!("exec-{n:02}");
        let summary = summary(&store, &id).await.expect("a summary");
        let conversation = format!("conv-{n:02}");
        assert_eq!(
            summary.conversation_id.as_deref(),
            Some(conversation.as_str()),
            "{id}"
        );
        assert_eq!(summary.started_at, t0() + ms(50), "{id}");
        assert_eq!((summary.event_count, summary.last_seq), (3, 3), "{id}");
    }
}

async fn last_seq_is_the_highest_stored(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    assert_eq!(store.last_seq("exec-a").await.expect("last_seq"), 0);
    store.append(run.seqs(1, 4)).await.expect("append");
    assert_eq!(store.last_seq("exec-a").await.expect("last_seq"), 4);
    store.append(run.seqs(5, 13)).await.expect("append");
    assert_eq!(store.last_seq("exec-a").await.expect("last_seq"), 13);
    // A late retry of early events does not move it back.
    store.append(run.seqs(1, 2)).await.expect("append");
    assert_eq!(store.last_seq("exec-a").await.expect("last_seq"), 13);
    assert_eq!(store.last_seq("exec-other").await.expect("last_seq"), 0);
}

/// More executions than one query of the SQLite store holds, stored ones
/// and unknown ones interleaved, answered in the order asked.
async fn last_seqs_answers_many_executions_in_order(store: Arc<dyn Store>) {
    let stored: Vec<String> = (0..1_200).map(|n| format!("exec-{n:04}")).collect();
    let batch: Vec<_> = stored
        .iter()
        .enumerate()
        .flat_map(|(n, id)| short_run(Run::new(id), n as i64, None).seqs(1, 1 + n as u64 % 2))
        .collect();
    store.append(batch).await.expect("append");
    let asked: Vec<String> = stored
        .iter()
        .rev()
        .flat_map(|id| [id.clone(), format!("{id}-unknown")])
        .collect();
    let expected: Vec<(String, u64)> = asked
        .iter()
        .map(|id| {
            let n: u64 = id[5..9].parse().expect("a number");
            let last = if id.ends_with("-unknown") {
                0
            } else {
                1 + n % 2
            };
            (id.clone(), last)
        })
        .collect();
    let answered = store.last_seqs(asked).await.expect("last_seqs");
    assert_eq!(answered, expected);
    assert_eq!(store.last_seqs(Vec::new()).await.expect("none"), vec![]);
}

async fn each_event_filter_narrows(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    store.append(run.all()).await.expect("append");
    store
        .append(short_run(Run::new("exec-b"), 0, Some(None)).all())
        .await
        .expect("append");
    let tools = vec![EventType::ToolCall, EventType::ToolResult];

    let query = EventQuery {
        types: Some(tools.clone()),
        ..all_of("exec-a")
    };
    let expected = run.expected(|e| tools.contains(&e.event_type()));
    assert_eq!(expected.len(), 3);
    assert_eq!(read(&store, query).await, expected);

    let query = EventQuery {
        agent_id: Some("writer".into()),
        ..all_of("exec-a")
    };
    assert_eq!(
        read(&store, query).await,
        run.expected(|e| e.agent_id() == Some("writer"))
    );

    let query = EventQuery {
        department: Some("story".into()),
        ..all_of("exec-a")
    };
    let expected = run.expected(|e| e.department() == Some("story"));
    assert_eq!(expected.len(), 6);
    assert_eq!(read(&store, query).await, expected);

    // All filters at once: each must hold.
    let query = EventQuery {
        types: Some(vec![EventType::AgentStart, EventType::ToolCall]),
        agent_id: Some("painter".into()),
        department: Some("art".into()),
        ..all_of("exec-a")
    };
    assert_eq!(seqs(&read(&store, query).await), vec![7]);

    let query = EventQuery {
        types: Some(vec![]),
        ..all_of("exec-a")
    };
    assert!(read(&store, query).await.is_empty(), "no types: no events");

    let query = EventQuery {
        agent_id: Some("nobody".into()),
        ..all_of("exec-a")
    };
    assert!(read(&store, query).await.is_empty());

    assert_eq!(
        seqs(&read(&store, EventQuery::after("exec-a", 0, 4)).await),
        vec![1, 2, 3, 4]
    );
    assert!(read(&store, EventQuery::after("exec-a", 0, 0))
        .await
        .is_empty());

    // The limit counts events that pass the filters, not events scanned.
    let query = EventQuery {
        agent_id: Some("writer".into()),
        limit: 2,
        ..EventQuery::after("exec-a", 3, 0)
    };
    assert_eq!(seqs(&read(&store, query).await), vec![4, 5]);
}

async fn after_seq_pages_through_everything(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    store.append(run.all()).await.expect("append");
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = read(&store, EventQuery::after("exec-a", after, 5)).await;
        let Some(last) = page.last() else { break };
        after = last.seq.expect("a seq");
        pages.push(page);
        assert!(pages.len() <= 3, "13 events in pages of 5 are 3 pages");
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![5, 5, 3]
    );
    assert_eq!(pages.concat(), run.expected(|_| true));

    // Paging a filtered read: the cursor is the last seq returned.
    let writer = |after| EventQuery {
        agent_id: Some("writer".into()),
        limit: 2,
        ..EventQuery::after("exec-a", after, 0)
    };
    assert_eq!(seqs(&read(&store, writer(0)).await), vec![3, 4]);
    assert_eq!(seqs(&read(&store, writer(4)).await), vec![5, 6]);
    assert_eq!(seqs(&read(&store, writer(6)).await), vec![9, 10]);
    assert!(read(&store, writer(10)).await.is_empty());
    assert!(read(&store, EventQuery::after("exec-a", 13, 5))
        .await
        .is_empty());
}

async fn before_seq_bounds_a_replay(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    store.append(run.all()).await.expect("append");
    let between = |after, before| EventQuery {
        before_seq: Some(before),
        ..EventQuery::after("exec-a", after, 100)
    };
    assert_eq!(seqs(&read(&store, between(2, 6)).await), vec![3, 4, 5]);
    assert_eq!(seqs(&read(&store, between(0, 2)).await), vec![1]);
    assert!(read(&store, between(0, 1)).await.is_empty());
    assert!(read(&store, between(5, 6)).await.is_empty());
    assert_eq!(read(&store, between(0, 1000)).await.len(), 13);
    let filtered = EventQuery {
        types: Some(vec![EventType::ToolCall]),
        ..between(0, 8)
    };
    assert_eq!(seqs(&read(&store, filtered).await), vec![5]);
}

async fn stats_match_a_hand_counted_execution(store: Arc<dyn Store>) {
    // Seq in the comments; figures chosen so that no two of them coincide.
    let run = Run::new("exec-stats")
        .in_conversation("conv-stats")
        .then(0, OrchestrationStart::default()) // 1
        .then(
            1_000,
            DepartmentStart {
                department: "story".into(),
                agent_id: Some("head".into()),
                ..Default::default()
            },
        ) // 2
        .then(2_000, agent_start("writer", Some("story"))) // 3
        .then(3_000, tool_call("writer", "search")) // 4
        .then(4_000, tool_result("writer", "search", Some(true))) // 5
        .then(5_000, tool_call("writer", "search")) // 6
        .then(6_000, tool_result("writer", "search", Some(false))) // 7: failure
        .then(7_000, tool_call("writer", "fetch")) // 8
        .then(7_500, tool_result("writer", "fetch", None)) // 9: no verdict, no failure
        .then(8_000, tool_call("writer", "fetch")) // 10
        .then(8_500, tool_result("writer", "fetch", Some(false))) // 11: failure
        .then(9_000, quality(80.0, Some("story"), Some("writer"))) // 12
        .then(10_000, quality(90.5, Some("story"), None)) // 13
        .then(11_000, quality(70.0, Some("art"), Some("painter"))) // 14
        .then(12_000, quality(99.0, None, None)) // 15: no department, no department score
        .then(13_000, review("story", ReviewVerdict::Approved)) // 16
        .then(14_000, review("story", ReviewVerdict::RevisionRequested)) // 17
        .then(15_000, review("art", ReviewVerdict::Approved)) // 18
        .then(
            16_000,
            DepartmentComplete {
                department: "story".into(),
                quality_score: Some(10.0), // not a quality-check: not in the scores
                ..Default::default()
            },
        ) // 19
        .then(90_250, complete(Some(RunStatus::Partial))); // 20
    store.append(run.all()).await.expect("append");
    let stats = store
        .execution_stats("exec-stats")
        .await
        .expect("stats")
        .expect("stats of a stored execution");

    assert_eq!(
        stats.summary,
        ExecutionSummary {
            execution_id: "exec-stats".into(),
            conversation_id: Some("conv-stats".into()),
            status: ExecutionStatus::Partial,
            started_at: t0(),
            ended_at: Some(t0() + ms(90_250)),
            event_count: 20,
            last_seq: 20,
        }
    );
    assert_eq!(stats.duration_ms, Some(90_250));
    assert_eq!(
        stats.by_type,
        counts(&[
            ("orchestration-start", 1),
            ("department-start", 1),
            ("agent-start", 1),
            ("tool-call", 4),
            ("tool-result", 4),
            ("quality-check", 4),
            ("review-status", 3),
            ("department-complete", 1),
            ("orchestration-complete", 1),
        ])
    );
    assert_eq!(
        stats.by_agent,
        counts(&[("head", 1), ("writer", 10), ("painter", 1)])
    );
    assert_eq!(stats.by_department, counts(&[("story", 7), ("art", 2)]));
    assert_eq!(stats.tool_calls, 4);
    assert_eq!(stats.tool_failures, 2);
    let scores = |count, min, avg, max| ScoreSummary {
        count,
        min,
        avg,
        max,
    };
    assert_eq!(
        stats.quality_by_department,
        BTreeMap::from([
            ("story".to_string(), scores(2, 80.0, 85.25, 90.5)),
            ("art".to_string(), scores(1, 70.0, 70.0, 70.0)),
        ])
    );
    assert_eq!(
        stats.reviews,
        counts(&[("approved", 2), ("revision-requested", 1)])
    );
}

async fn stats_of_an_unknown_execution_are_none(store: Arc<dyn Store>) {
    store
        .append(short_run(Run::new("exec-a"), 0, None).all())
        .await
        .expect("append");
    assert_eq!(store.execution_stats("exec-b").await.expect("stats"), None);
}

/// Five executions whose list order is C, B, D, A, E (B and C start together).
async fn five_executions(store: &Arc<dyn Store>) {
    let in_conversation = |id, conversation| Run::new(id).in_conversation(conversation);
    let runs = [
        short_run(in_conversation("exec-a", "c1"), 1_000, None),
        short_run(
            in_conversation("exec-b", "c2"),
            3_000,
            Some(Some(RunStatus::Success)),
        ),
        short_run(
            in_conversation("exec-c", "c1"),
            3_000,
            Some(Some(RunStatus::Failed)),
        ),
        short_run(in_conversation("exec-d", "c1"), 2_000, Some(None)),
        short_run(Run::new("exec-e"), 0, Some(Some(RunStatus::Partial))),
    ];
    for run in runs {
        store.append(run.all()).await.expect("append");
    }
}

async fn executions_list_newest_first_with_filters(store: Arc<dyn Store>) {
    five_executions(&store).await;
    let query = |conversation: Option<&str>, status: Option<ExecutionStatus>| ExecutionQuery {
        conversation_id: conversation.map(Into::into),
        status,
        before: None,
        limit: 100,
    };
    assert_eq!(
        list(&store, query(None, None)).await,
        ids(&["exec-c", "exec-b", "exec-d", "exec-a", "exec-e"])
    );
    assert_eq!(
        list(&store, query(Some("c1"), None)).await,
        ids(&["exec-c", "exec-d", "exec-a"])
    );
    assert_eq!(
        list(&store, query(None, Some(ExecutionStatus::Success))).await,
        ids(&["exec-b", "exec-d"])
    );
    assert_eq!(
        list(&store, query(Some("c1"), Some(ExecutionStatus::Success))).await,
        ids(&["exec-d"])
    );
    assert_eq!(
        list(&store, query(None, Some(ExecutionStatus::Running))).await,
        ids(&["exec-a"])
    );
    assert!(list(&store, query(Some("c9"), None)).await.is_empty());
    let first_two = ExecutionQuery {
        limit: 2,
        ..query(None, None)
    };
    assert_eq!(list(&store, first_two).await, ids(&["exec-c", "exec-b"]));

    let listed = store
        .executions(query(Some("c2"), None))
        .await
        .expect("list");
    assert_eq!(
        listed,
        vec![ExecutionSummary {
            execution_id: "exec-b".into(),
            conversation_id: Some("c2".into()),
            status: ExecutionStatus::Success,
            started_at: t0() + ms(3_000),
            ended_at: Some(t0() + ms(3_020)),
            event_count: 3,
            last_seq: 3,
        }]
    );
}

async fn executions_cursor_pages_without_gaps_or_repeats(store: Arc<dyn Store>) {
    five_executions(&store).await;
    for (conversation, expected) in [
        (
            None,
            ids(&["exec-c", "exec-b", "exec-d", "exec-a", "exec-e"]),
        ),
        (Some("c1"), ids(&["exec-c", "exec-d", "exec-a"])),
    ] {
        for page_size in [1, 2, 3] {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = store
                    .executions(ExecutionQuery {
                        conversation_id: conversation.map(Into::into),
                        status: None,
                        before: before.clone(),
                        limit: page_size,
                    })
                    .await
                    .expect("a page");
                assert!(page.len() <= page_size);
                let Some(last) = page.last() else { break };
                before = Some((last.started_at, last.execution_id.clone()));
                seen.extend(page.into_iter().map(|s| s.execution_id));
                assert!(seen.len() <= expected.len(), "paging never ends: {seen:?}");
            }
            assert_eq!(seen, expected, "pages of {page_size} in {conversation:?}");
        }
    }
    // A cursor between two executions that started together.
    let after_c = ExecutionQuery {
        before: Some((t0() + ms(3_000), "exec-c".into())),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        list(&store, after_c).await,
        ids(&["exec-b", "exec-d", "exec-a", "exec-e"])
    );
}

async fn status_follows_orchestration_complete(store: Arc<dyn Store>) {
    let endings = [
        (
            "exec-success",
            Some(RunStatus::Success),
            ExecutionStatus::Success,
        ),
        (
            "exec-failed",
            Some(RunStatus::Failed),
            ExecutionStatus::Failed,
        ),
        (
            "exec-partial",
            Some(RunStatus::Partial),
            ExecutionStatus::Partial,
        ),
        ("exec-unsaid", None, ExecutionStatus::Success),
    ];
    for (execution_id, status, expected) in endings {
        let run = short_run(Run::new(execution_id), 0, Some(status));
        store.append(run.seqs(1, 2)).await.expect("append");
        let running = summary(&store, execution_id).await.expect("a summary");
        assert_eq!(running.status, ExecutionStatus::Running, "{execution_id}");
        assert_eq!(running.ended_at, None);
        let stats = store.execution_stats(execution_id).await.expect("stats");
        assert_eq!(stats.expect("stats").duration_ms, None);

        store.append(run.seqs(3, 3)).await.expect("append");
        let ended = summary(&store, execution_id).await.expect("a summary");
        assert_eq!(ended.status, expected, "{execution_id}");
        assert_eq!(ended.ended_at, Some(t0() + ms(20)));
    }

    // The end stored first, then the earlier events: the end still stands, and
    // the start is the earliest timestamp, not the first one stored.
    let run = short_run(Run::new("exec-late"), 500, Some(Some(RunStatus::Failed)));
    store.append(run.seqs(3, 3)).await.expect("append");
    store.append(run.seqs(1, 2)).await.expect("append");
    let late = summary(&store, "exec-late").await.expect("a summary");
    assert_eq!(late.status, ExecutionStatus::Failed);
    assert_eq!(late.started_at, t0() + ms(500));
    assert_eq!(late.ended_at, Some(t0() + ms(520)));
    assert_eq!(late.last_seq, run.last_seq());
    assert_eq!(
        seqs(&read(&store, all_of("exec-late")).await),
        vec![1, 2, 3]
    );
}

/// An execution's summary after one append of many events, some out of
/// order and the end among the first, is what appending them one at a time
/// gives; appending the batch again counts nothing.
async fn a_batch_sums_up_as_its_events_one_by_one(store: Arc<dyn Store>) {
    let order = |run: &Run| {
        let mut events = run.seqs(5, 13);
        events.extend(run.seqs(1, 4));
        events
    };
    let batched = mixed_run("exec-batched");
    store.append(order(&batched)).await.expect("append");
    let single = mixed_run("exec-single");
    for event in order(&single) {
        store.append(vec![event]).await.expect("append");
    }
    let mut expected = summary(&store, "exec-single").await.expect("a summary");
    assert_eq!(expected.event_count, 13);
    assert_eq!(expected.status, ExecutionStatus::Success);
    expected.execution_id = "exec-batched".into();
    assert_eq!(
        summary(&store, "exec-batched").await,
        Some(expected.clone())
    );

    store.append(batched.all()).await.expect("append again");
    assert_eq!(summary(&store, "exec-batched").await, Some(expected));
}

/// Whether an execution is entirely gone: no events, no summary, no stats.
async fn assert_gone(store: &Arc<dyn Store>, execution_id: &str) {
    assert!(
        read(store, all_of(execution_id)).await.is_empty(),
        "{execution_id}"
    );
    assert_eq!(store.last_seq(execution_id).await.expect("last_seq"), 0);
    assert_eq!(summary(store, execution_id).await, None, "{execution_id}");
}

async fn retention_keeps_the_newest_by_count(store: Arc<dyn Store>) {
    five_executions(&store).await;
    let keep_three = Retention {
        max_age: None,
        max_executions: Some(3),
    };
    assert_eq!(
        store
            .apply_retention(keep_three)
            .await
            .expect("retention")
            .len() as u64,
        2
    );
    assert_eq!(
        list(
            &store,
            ExecutionQuery {
                limit: 10,
                ..Default::default()
            }
        )
        .await,
        ids(&["exec-c", "exec-b", "exec-d"])
    );
    assert_gone(&store, "exec-a").await;
    assert_gone(&store, "exec-e").await;
    assert_eq!(read(&store, all_of("exec-d")).await.len(), 3);
    assert_eq!(
        store
            .apply_retention(keep_three)
            .await
            .expect("retention")
            .len() as u64,
        0
    );
}

async fn retention_removes_executions_idle_too_long(store: Arc<dyn Store>) {
    let now = Utc::now();
    let three_hours_ago = now - TimeDelta::hours(3);
    // Old: started and last heard of 3 h ago.
    let old = short_run(
        Run::new("exec-old").starting_at(three_hours_ago),
        0,
        Some(None),
    );
    // Long-running: started 3 h ago, but its last event is a minute old.
    let long = Run::new("exec-long")
        .starting_at(three_hours_ago)
        .then(0, OrchestrationStart::default())
        .then(3 * 3_600_000 - 60_000, thinking("w", "still here"));
    let fresh = Run::new("exec-fresh")
        .starting_at(now - TimeDelta::minutes(5))
        .then(0, OrchestrationStart::default());
    store.append(old.all()).await.expect("append");
    store.append(fresh.all()).await.expect("append");
    // The recent event first, then a late retry of the old one: the
    // execution's last event is still the recent one.
    store.append(long.seqs(2, 2)).await.expect("append");
    store.append(long.seqs(1, 1)).await.expect("append");
    let one_hour = Retention {
        max_age: Some(Duration::from_secs(3600)),
        max_executions: None,
    };
    assert_eq!(
        store
            .apply_retention(one_hour)
            .await
            .expect("retention")
            .len(),
        1
    );
    assert_gone(&store, "exec-old").await;
    assert_eq!(
        list(
            &store,
            ExecutionQuery {
                limit: 10,
                ..Default::default()
            }
        )
        .await,
        ids(&["exec-fresh", "exec-long"])
    );

    // Both limits: whatever either one says goes.
    let both = Retention {
        max_age: Some(Duration::from_secs(30 * 60)),
        max_executions: Some(1),
    };
    assert_eq!(
        store.apply_retention(both).await.expect("retention").len(),
        1
    );
    assert_gone(&store, "exec-long").await;
    assert_eq!(read(&store, all_of("exec-fresh")).await.len(), 1);
}

async fn retention_without_limits_removes_nothing(store: Arc<dyn Store>) {
    five_executions(&store).await;
    let nothing = Retention::default();
    assert_eq!(
        store
            .apply_retention(nothing)
            .await
            .expect("retention")
            .len(),
        0
    );
    let generous = Retention {
        max_age: Some(Duration::from_secs(u64::MAX)),
        max_executions: Some(u64::MAX),
    };
    assert_eq!(
        store
            .apply_retention(generous)
            .await
            .expect("retention")
            .len(),
        0
    );
    assert_eq!(
        list(
            &store,
            ExecutionQuery {
                limit: 10,
                ..Default::default()
            }
        )
        .await
        .len(),
        5
    );
}

async fn ping_answers(store: Arc<dyn Store>) {
    assert!(!store.name().is_empty());
    store.ping().await.expect("ping on a new store");
    store
        .append(short_run(Run::new("exec-a"), 0, None).all())
        .await
        .expect("append");
    store.ping().await.expect("ping after a write");
}

/// Two writers on the same data (two nodes of a cluster on one database)
/// append the same events at the same time, cut into batches differently;
/// then one goes on alone, and retries a stretch: each event is stored and
/// counted once at every stage.
async fn two_writers_count_each_event_once(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let run = (0..80).fold(Run::new("shared"), |run, n| {
        run.then(n, thinking("worker", &format!("step {n}")))
    });
    let append_in = |store: Arc<dyn Store>, seqs: std::ops::RangeInclusive<u64>, size: u64| {
        let last = *seqs.end();
        let batches: Vec<_> = seqs
            .step_by(size as usize)
            .map(|first| run.seqs(first, (first + size - 1).min(last)))
            .collect();
        async move {
            for batch in batches {
                store.append(batch).await.expect("append");
            }
        }
    };
    let each_once = |stage: &'static str, last: u64| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            for store in [&first, &second] {
                let summary = summary(store, "shared").await.expect("a summary");
                assert_eq!(
                    (summary.event_count, summary.last_seq),
                    (last, last),
                    "{stage}"
                );
                let events = read(store, all_of("shared")).await;
                assert_eq!(seqs(&events), (1..=last).collect::<Vec<_>>(), "{stage}");
            }
        }
    };
    tokio::join!(
        append_in(first.clone(), 1..=60, 7),
        append_in(second.clone(), 1..=60, 11)
    );
    each_once("after both writers", 60).await;
    append_in(first.clone(), 61..=80, 5).await;
    each_once("after one writer went on", 80).await;
    second.append(run.seqs(20, 40)).await.expect("append again");
    each_once("after a retried stretch", 80).await;
}

/// Everything written before closing reads back the same after opening again,
/// and writing goes on where it stopped.
async fn everything_survives_a_reopen<R, Fut>(first: Arc<dyn Store>, reopen: R)
where
    R: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let run = mixed_run("exec-a");
    first.append(run.seqs(1, 10)).await.expect("append");
    five_executions(&first).await;
    let key = key_record("before-reopen", "f", &[Some(1), None], t0());
    first
        .append_keyed(Vec::new(), vec![key.clone()])
        .await
        .expect("append a key");
    let stats = first.execution_stats("exec-a").await.expect("stats");
    let everything = ExecutionQuery {
        limit: 100,
        ..Default::default()
    };
    let listed = first.executions(everything.clone()).await.expect("list");
    drop(first);

    let second = reopen().await;
    assert_eq!(
        read(&second, all_of("exec-a")).await,
        run.expected(|e| e.seq <= Some(10))
    );
    assert_eq!(
        second.execution_stats("exec-a").await.expect("stats"),
        stats
    );
    assert_eq!(second.executions(everything).await.expect("list"), listed);
    assert_eq!(second.last_seq("exec-a").await.expect("last_seq"), 10);
    assert_eq!(
        second.idempotency_key("before-reopen").await.expect("read"),
        Some(key)
    );

    second
        .append(run.seqs(11, 13))
        .await
        .expect("append after reopen");
    assert_eq!(
        read(&second, all_of("exec-a")).await,
        run.expected(|_| true)
    );
}

fn key_record(key: &str, fingerprint: &str, seqs: &[Option<u64>], at: DateTime<Utc>) -> KeyRecord {
    KeyRecord {
        key: key.into(),
        fingerprint: fingerprint.into(),
        seqs: seqs.to_vec(),
        created_at: at,
    }
}

async fn idempotency_keys_are_stored_with_their_events(store: Arc<dyn Store>) {
    let run = mixed_run("exec-a");
    let key = key_record("batch-1", "abc", &[Some(1), Some(2), None, Some(3)], t0());
    store
        .append_keyed(run.seqs(1, 3), vec![key.clone()])
        .await
        .expect("append with a key");
    assert_eq!(
        store.idempotency_key("batch-1").await.expect("read"),
        Some(key)
    );
    assert_eq!(store.last_seq("exec-a").await.expect("last_seq"), 3);
    assert_eq!(store.idempotency_key("batch-2").await.expect("read"), None);

    // A batch coalesced whole has no event to store, but its key.
    let alone = key_record("coalesced", "def", &[None], t0() + ms(5));
    store
        .append_keyed(Vec::new(), vec![alone.clone()])
        .await
        .expect("a key alone");
    assert_eq!(
        store.idempotency_key("coalesced").await.expect("read"),
        Some(alone)
    );
    // Keys are names, not patterns.
    assert_eq!(store.idempotency_key("batch-%").await.expect("read"), None);
}

async fn an_idempotency_key_written_again_takes_the_newer_record(store: Arc<dyn Store>) {
    let old = key_record("reused", "old", &[Some(1)], t0());
    store
        .append_keyed(Vec::new(), vec![old])
        .await
        .expect("first");
    let new = key_record("reused", "new", &[Some(7), Some(8)], t0() + ms(90_000));
    store
        .append_keyed(Vec::new(), vec![new.clone()])
        .await
        .expect("again");
    assert_eq!(
        store.idempotency_key("reused").await.expect("read"),
        Some(new)
    );
}

async fn idempotency_keys_past_a_time_are_expired(store: Arc<dyn Store>) {
    let old = key_record("old", "f", &[Some(1)], t0());
    let fresh = key_record("fresh", "f", &[Some(2)], t0() + ms(3_600_000));
    store
        .append_keyed(Vec::new(), vec![old, fresh.clone()])
        .await
        .expect("keys");
    let removed = store
        .expire_idempotency_keys(t0() + ms(1_800_000))
        .await
        .expect("expire");
    assert_eq!(removed, 1);
    assert_eq!(store.idempotency_key("old").await.expect("read"), None);
    assert_eq!(
        store.idempotency_key("fresh").await.expect("read"),
        Some(fresh)
    );
}

async fn the_journal_keeps_each_nodes_entries_in_order(store: Arc<dyn Store>) {
    let run = mixed_run("exec-j");
    let entry = |node: &str, position: u64, event: &Arc<PublishedEvent>| JournalEntry {
        node_id: node.to_owned(),
        draft_id: format!("{node}:{position}"),
        position,
        event: event.clone(),
    };
    let events = run.seqs(1, 4);
    // Written out of order, in two calls, one entry twice, two nodes mixed.
    store
        .journal_add(vec![
            entry("node-a", 30, &events[2]),
            entry("node-b", 10, &events[0]),
            entry("node-a", 10, &events[0]),
        ])
        .await
        .expect("journal_add");
    store
        .journal_add(vec![
            entry("node-a", 20, &events[1]),
            entry("node-a", 30, &events[2]),
        ])
        .await
        .expect("journal_add again");

    let journal = store.journal_read("node-a").await.expect("journal_read");
    let drafts: Vec<&str> = journal.iter().map(|e| e.draft_id.as_str()).collect();
    assert_eq!(drafts, ["node-a:10", "node-a:20", "node-a:30"]);
    let journaled: Vec<AgentEvent> = journal.iter().map(|e| e.event.event.clone()).collect();
    assert_eq!(journaled, run.expected(|e| e.seq <= Some(3)));
    assert_eq!(journal[2].position, 30);
    assert_eq!(journal[2].event.seq, 3, "the provisional seq is kept");

    store
        .journal_remove(vec!["node-a:10".into(), "node-a:30".into(), "none".into()])
        .await
        .expect("journal_remove");
    let left = store.journal_read("node-a").await.expect("journal_read");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].draft_id, "node-a:20");
    let other = store.journal_read("node-b").await.expect("journal_read");
    assert_eq!(other.len(), 1, "another node's journal is its own");
    assert!(store
        .journal_read("node-c")
        .await
        .expect("journal_read")
        .is_empty());
    assert!(
        read(&store, all_of("exec-j")).await.is_empty(),
        "journaled events are not stored events"
    );
}

// ---------------------------------------------------------------------------
// The notification outbox (store/outbox.rs)

/// Now, at the millisecond: what every backend keeps of a time.
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn delivery(execution_id: &str, seq: u64, rule: &str) -> Notification {
    Notification {
        key: format!("{execution_id}:{seq}:{rule}"),
        rule_id: rule.to_owned(),
        execution_id: execution_id.to_owned(),
        seq,
        url: "http://127.0.0.1:9/hook".to_owned(),
        body: format!(r#"{{"executionId":"{execution_id}","seq":{seq}}}"#),
    }
}

/// The counts, without the next due time.
async fn tally_of(store: &Arc<dyn Store>) -> (u64, u64) {
    let counts = store.outbox_counts().await.unwrap();
    (counts.pending, counts.dead)
}

async fn outbox_enqueue_is_idempotent_by_key(store: Arc<dyn Store>) {
    let t0 = now_ms();
    let first = vec![delivery("e", 1, "r"), delivery("e", 2, "r")];
    assert_eq!(store.enqueue(first, t0).await.unwrap(), 2);
    let again = vec![delivery("e", 2, "r"), delivery("e", 2, "other")];
    assert_eq!(store.enqueue(again, t0).await.unwrap(), 1);
    assert_eq!(store.enqueue(Vec::new(), t0).await.unwrap(), 0);
    assert_eq!(tally_of(&store).await, (3, 0));
    // A delivered key stays seen: the same match later is not a second delivery.
    let claimed = store.claim_due(t0, t0 + ms(1000), 10).await.unwrap();
    for d in &claimed {
        store
            .record_attempt(&d.notification.key, Outcome::Delivered, t0)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .enqueue(vec![delivery("e", 1, "r")], t0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(tally_of(&store).await, (0, 0));
}

async fn outbox_claims_each_due_delivery_once_per_lease(store: Arc<dyn Store>) {
    let t0 = now_ms();
    let all = vec![
        delivery("e", 1, "r"),
        delivery("e", 2, "r"),
        delivery("e", 3, "r"),
    ];
    store.enqueue(all.clone(), t0).await.unwrap();
    let next_due =
        |store: Arc<dyn Store>| async move { store.outbox_counts().await.unwrap().next_due };
    assert_eq!(next_due(store.clone()).await, Some(t0));
    // Nothing is due before it was enqueued.
    assert!(store
        .claim_due(t0 - ms(1), t0 + ms(10_000), 10)
        .await
        .unwrap()
        .is_empty());
    let lease = t0 + ms(10_000);
    let first = store.claim_due(t0, lease, 2).await.unwrap();
    let second = store.claim_due(t0, lease, 2).await.unwrap();
    assert_eq!((first.len(), second.len()), (2, 1));
    assert!(store.claim_due(t0, lease, 2).await.unwrap().is_empty());
    assert_eq!(next_due(store.clone()).await, Some(lease));
    let mut keys: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|d| d.notification.key.clone())
        .collect();
    keys.sort();
    assert_eq!(keys, all.iter().map(|d| d.key.clone()).collect::<Vec<_>>());
    let claimed = &first[0];
    let original = all
        .iter()
        .find(|d| d.key == claimed.notification.key)
        .unwrap();
    assert_eq!(claimed.notification.rule_id, "r");
    assert_eq!(claimed.notification.execution_id, "e");
    assert_eq!(claimed.notification.seq, original.seq);
    assert_eq!(claimed.notification.url, original.url);
    assert_eq!(claimed.notification.body, original.body);
    assert_eq!(claimed.state, DeliveryState::Pending);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.next_attempt_at, lease);
    assert_eq!(claimed.created_at, t0);
    // A lease that ended (the claimer crashed) makes them due again, attempt 2.
    let again = store
        .claim_due(lease, lease + ms(10_000), 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|d| d.attempts == 2));
}

async fn outbox_records_delivered_retry_and_dead(store: Arc<dyn Store>) {
    let t0 = now_ms();
    let lease = t0 + ms(60_000);
    store
        .enqueue(
            ["ok", "retry", "dead"]
                .map(|rule| delivery("e", 1, rule))
                .to_vec(),
            t0,
        )
        .await
        .unwrap();
    assert_eq!(store.claim_due(t0, lease, 10).await.unwrap().len(), 3);
    store
        .record_attempt("e:1:ok", Outcome::Delivered, t0)
        .await
        .unwrap();
    let retry_at = t0 + ms(5_000);
    store
        .record_attempt(
            "e:1:retry",
            Outcome::RetryAt(retry_at, "HTTP 500: no".into()),
            t0,
        )
        .await
        .unwrap();
    store
        .record_attempt("e:1:dead", Outcome::Dead("timed out".into()), t0)
        .await
        .unwrap();
    assert_eq!(tally_of(&store).await, (1, 1));
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(counts.next_due, Some(retry_at));
    // The retry is due at its time, not before, and the lease no longer counts.
    assert!(store
        .claim_due(retry_at - ms(1), lease, 10)
        .await
        .unwrap()
        .is_empty());
    let due = store.claim_due(retry_at, lease, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].notification.key, "e:1:retry");
    assert_eq!(due[0].attempts, 2);
    assert_eq!(due[0].last_error.as_deref(), Some("HTTP 500: no"));
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].notification.key, "e:1:dead");
    assert_eq!(dead[0].state, DeliveryState::Dead);
    assert_eq!(dead[0].last_error.as_deref(), Some("timed out"));
    assert_eq!(dead[0].attempts, 1);
    assert!(store.dead_letters(0).await.unwrap().is_empty());
}

async fn outbox_dead_letters_are_retried_or_discarded(store: Arc<dyn Store>) {
    let t0 = now_ms();
    store
        .enqueue((1..=3).map(|seq| delivery("e", seq, "a")).collect(), t0)
        .await
        .unwrap();
    store.claim_due(t0, t0 + ms(1000), 10).await.unwrap();
    for key in ["e:1:a", "e:2:a"] {
        store
            .record_attempt(key, Outcome::Dead("down".into()), t0)
            .await
            .unwrap();
    }
    // Only a dead letter can be retried or discarded.
    assert!(!store.retry_dead("e:3:a", t0).await.unwrap());
    assert!(!store.discard_dead("e:3:a", t0).await.unwrap());
    assert!(!store.retry_dead("nope", t0).await.unwrap());
    let t1 = t0 + ms(2000);
    assert!(store.retry_dead("e:1:a", t1).await.unwrap());
    assert!(store.discard_dead("e:2:a", t1).await.unwrap());
    assert!(!store.discard_dead("e:2:a", t1).await.unwrap());
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(tally_of(&store).await, (2, 0));
    // The retried one is due at once with a fresh count of attempts.
    let due = store.claim_due(t1, t1 + ms(1000), 10).await.unwrap();
    let retried: Vec<_> = due
        .iter()
        .filter(|d| d.notification.key == "e:1:a")
        .collect();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].attempts, 1);
    // A discarded key stays seen.
    assert_eq!(
        store
            .enqueue(vec![delivery("e", 2, "a")], t1)
            .await
            .unwrap(),
        0
    );
}

async fn outbox_prunes_only_finished_deliveries(store: Arc<dyn Store>) {
    let t0 = now_ms();
    let keys = ["e:1:a", "e:2:a", "e:3:a", "e:4:a"];
    store
        .enqueue((1..=4).map(|seq| delivery("e", seq, "a")).collect(), t0)
        .await
        .unwrap();
    store.claim_due(t0, t0 + ms(1000), 10).await.unwrap();
    store
        .record_attempt(keys[0], Outcome::Delivered, t0)
        .await
        .unwrap();
    store
        .record_attempt(keys[1], Outcome::Dead("x".into()), t0)
        .await
        .unwrap();
    store
        .record_attempt(keys[2], Outcome::Dead("x".into()), t0)
        .await
        .unwrap();
    store.discard_dead(keys[2], t0).await.unwrap();
    // keys[3] stays pending.
    assert_eq!(
        store.prune_outbox(t0).await.unwrap(),
        0,
        "nothing older than t0"
    );
    assert_eq!(store.prune_outbox(t0 + ms(1)).await.unwrap(), 2);
    assert_eq!(tally_of(&store).await, (1, 1));
    // Pruned keys are new again; kept ones are not.
    let again = (1..=4).map(|seq| delivery("e", seq, "a")).collect();
    assert_eq!(store.enqueue(again, t0).await.unwrap(), 2);
}

async fn outbox_rules_are_stored_replaced_and_deleted(store: Arc<dyn Store>) {
    assert!(store.rules().await.unwrap().is_empty());
    let rule = |id: &str, body: &str| StoredRule {
        id: id.to_owned(),
        body: body.to_owned(),
    };
    store.put_rule(rule("b", r#"{"v":1}"#)).await.unwrap();
    store.put_rule(rule("a", r#"{"v":1}"#)).await.unwrap();
    store.put_rule(rule("b", r#"{"v":2}"#)).await.unwrap();
    assert_eq!(
        store.rules().await.unwrap(),
        vec![rule("a", r#"{"v":1}"#), rule("b", r#"{"v":2}"#)]
    );
    assert!(store.delete_rule("a").await.unwrap());
    assert!(!store.delete_rule("a").await.unwrap());
    assert_eq!(store.rules().await.unwrap(), vec![rule("b", r#"{"v":2}"#)]);
}
