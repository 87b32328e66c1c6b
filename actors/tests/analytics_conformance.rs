//! The analytics conformance suite: `Store::analytics` on one fixture data
//! set, checked against figures worked out by hand (in the comments beside
//! each expectation), the same way on every backend: SQLite always, MongoDB
//! when `MONGODB_URI` is set.
//!
//! The fixture, all on 2025-10-01 (UTC), window 12:00–12:10 unless a test says otherwise:
//!
//! | exec | conv | events (time: what) |
//! |---|---|---|
//! | E1 | c1 | 12:00:00 start · :10 agent-start writer/story · :20 call search · :30 result search ok 100 ms · :40 call search · :50 result search FAILED 300 ms · 12:01:00 quality story 80 (threshold 70) · :10 review story/writer revision-requested · :20 review story/writer approved · 12:02:00 complete success |
//! | E2 | c1 | 12:03:00 start · :05 agent-start painter/art · :10 call render · :15 result render ok 200 ms · :20 call search · :25 result search ok 50 ms · :30 quality art 60 (threshold 70) · :35 review art/painter approved · 12:04:00 complete failed |
//! | E3 | c2 | 12:05:00 start · :10 agent-start editor/story · :20 call search · :30 result search FAILED 500 ms · :40 quality story 90 (no threshold) · :50 review story/editor rejected · :55 review revision-requested · :58 review approved (still running) |
//! | E4 | c2 | 11:50:00 start · :10 call search by bot · :20 result search 1000 ms · 11:51:00 complete partial (before the window) |
//! | E5 | c1 | 12:09:30 start · :40 agent-start critic/story · 12:10:00 call search · :05 result search 700 ms · 12:11:00 complete success (ends after the window) |

use agent_events_actors::event::{
    AgentEvent, AgentStart, EventKind, OrchestrationComplete, OrchestrationStart, QualityCheck,
    ReviewStatus, ReviewVerdict, RunStatus, ToolCall, ToolResult,
};
use agent_events_actors::protocol::PublishedEvent;
use agent_events_actors::store::analytics::{
    AgentCalls, Analytics, AnalyticsQuery, Percentiles, QualityFigures,
};
use agent_events_actors::store::Store;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[macro_use]
mod backends;

conformance_suite!(
    "analytics conformance":
    the_whole_window_matches_the_hand_computed_figures,
    the_window_bounds_are_half_open,
    a_conversation_filter_keeps_its_executions_only,
    a_department_filter_attributes_agents_events,
    an_empty_window_has_zero_figures,
);

// ---------------------------------------------------------------------------
// The fixture

/// 2025-10-01 at `hms` (`"12:00:10"`), UTC.
fn at(hms: &str) -> DateTime<Utc> {
    format!("2025-10-01T{hms}Z").parse().expect("a time")
}

/// Builds events numbered 1, 2, 3 … per execution, as the Emitter would.
#[derive(Default)]
struct Fixture {
    events: Vec<Arc<PublishedEvent>>,
    seqs: HashMap<String, u64>,
}

impl Fixture {
    fn add(&mut self, execution: &str, conversation: &str, hms: &str, kind: impl Into<EventKind>) {
        let seq = self.seqs.entry(execution.to_owned()).or_default();
        *seq += 1;
        let mut event = AgentEvent::new(execution, kind).with_conversation(conversation);
        event.seq = Some(*seq);
        event.timestamp = Some(at(hms));
        self.events.push(PublishedEvent::new(event));
    }
}

fn start() -> OrchestrationStart {
    OrchestrationStart::default()
}

fn complete(status: RunStatus) -> OrchestrationComplete {
    OrchestrationComplete {
        status: Some(status),
        ..Default::default()
    }
}

fn agent(agent: &str, department: &str) -> AgentStart {
    AgentStart {
        agent_id: agent.into(),
        department: Some(department.into()),
        ..Default::default()
    }
}

fn call(agent: &str, tool: &str) -> ToolCall {
    ToolCall {
        agent_id: agent.into(),
        tool_name: tool.into(),
        ..Default::default()
    }
}

fn result(agent: &str, tool: &str, success: bool, ms: f64) -> ToolResult {
    ToolResult {
        agent_id: agent.into(),
        tool_name: tool.into(),
        success: Some(success),
        execution_time: Some(ms),
        ..Default::default()
    }
}

fn quality(department: &str, score: f64, threshold: Option<f64>) -> QualityCheck {
    QualityCheck {
        quality_score: score,
        department: Some(department.into()),
        threshold,
        ..Default::default()
    }
}

fn review(department: &str, specialist: &str, status: ReviewVerdict) -> ReviewStatus {
    ReviewStatus {
        department: department.into(),
        status,
        agent_id: None,
        specialist_id: Some(specialist.into()),
        feedback: None,
        quality_score: None,
    }
}

/// The table of the module docs, appended in two batches.
async fn store_fixture(store: &Arc<dyn Store>) {
    use ReviewVerdict::{Approved, Rejected, RevisionRequested};
    let mut f = Fixture::default();
    f.add("E1", "c1", "12:00:00", start());
    f.add("E1", "c1", "12:00:10", agent("writer", "story"));
    f.add("E1", "c1", "12:00:20", call("writer", "search"));
    f.add(
        "E1",
        "c1",
        "12:00:30",
        result("writer", "search", true, 100.0),
    );
    f.add("E1", "c1", "12:00:40", call("writer", "search"));
    f.add(
        "E1",
        "c1",
        "12:00:50",
        result("writer", "search", false, 300.0),
    );
    f.add("E1", "c1", "12:01:00", quality("story", 80.0, Some(70.0)));
    f.add(
        "E1",
        "c1",
        "12:01:10",
        review("story", "writer", RevisionRequested),
    );
    f.add("E1", "c1", "12:01:20", review("story", "writer", Approved));
    f.add("E1", "c1", "12:02:00", complete(RunStatus::Success));

    f.add("E2", "c1", "12:03:00", start());
    f.add("E2", "c1", "12:03:05", agent("painter", "art"));
    f.add("E2", "c1", "12:03:10", call("painter", "render"));
    f.add(
        "E2",
        "c1",
        "12:03:15",
        result("painter", "render", true, 200.0),
    );
    f.add("E2", "c1", "12:03:20", call("painter", "search"));
    f.add(
        "E2",
        "c1",
        "12:03:25",
        result("painter", "search", true, 50.0),
    );
    f.add("E2", "c1", "12:03:30", quality("art", 60.0, Some(70.0)));
    f.add("E2", "c1", "12:03:35", review("art", "painter", Approved));
    f.add("E2", "c1", "12:04:00", complete(RunStatus::Failed));

    f.add("E3", "c2", "12:05:00", start());
    f.add("E3", "c2", "12:05:10", agent("editor", "story"));
    f.add("E3", "c2", "12:05:20", call("editor", "search"));
    f.add(
        "E3",
        "c2",
        "12:05:30",
        result("editor", "search", false, 500.0),
    );
    f.add("E3", "c2", "12:05:40", quality("story", 90.0, None));
    f.add("E3", "c2", "12:05:50", review("story", "editor", Rejected));
    f.add(
        "E3",
        "c2",
        "12:05:55",
        review("story", "editor", RevisionRequested),
    );
    f.add("E3", "c2", "12:05:58", review("story", "editor", Approved));

    f.add("E4", "c2", "11:50:00", start());
    f.add("E4", "c2", "11:50:10", call("bot", "search"));
    f.add(
        "E4",
        "c2",
        "11:50:20",
        result("bot", "search", true, 1000.0),
    );
    f.add("E4", "c2", "11:51:00", complete(RunStatus::Partial));

    f.add("E5", "c1", "12:09:30", start());
    f.add("E5", "c1", "12:09:40", agent("critic", "story"));
    f.add("E5", "c1", "12:10:00", call("critic", "search"));
    f.add(
        "E5",
        "c1",
        "12:10:05",
        result("critic", "search", true, 700.0),
    );
    f.add("E5", "c1", "12:11:00", complete(RunStatus::Success));

    let second = f.events.split_off(20);
    store.append(f.events).await.expect("append");
    store.append(second).await.expect("append");
}

// ---------------------------------------------------------------------------
// Expectations

fn window(from: &str, to: &str) -> AnalyticsQuery {
    AnalyticsQuery::new(at(from), at(to)).bucket_secs(60)
}

async fn analytics(store: &Arc<dyn Store>, query: AnalyticsQuery) -> Analytics {
    store.analytics(query).await.expect("analytics")
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn statuses(running: u64, success: u64, failed: u64, partial: u64) -> BTreeMap<String, u64> {
    counts(&[
        ("running", running),
        ("success", success),
        ("failed", failed),
        ("partial", partial),
    ])
}

fn pct(count: u64, p50: f64, p95: f64) -> Percentiles {
    Percentiles {
        count,
        p50: Some(p50),
        p95: Some(p95),
    }
}

fn series(a: &Analytics) -> Vec<u64> {
    a.events.series.iter().map(|b| b.count).collect()
}

/// `(name, calls, results, failures, failure rate, latency)` per tool.
type ToolRow = (String, u64, u64, u64, Option<f64>, Percentiles);

fn tools(a: &Analytics) -> Vec<ToolRow> {
    a.tools
        .by_tool
        .iter()
        .map(|t| {
            let name = t.tool_name.clone().expect("a listed tool has a name");
            let row = (t.calls, t.results, t.failures, t.failure_rate);
            (name, row.0, row.1, row.2, row.3, t.latency_ms.clone())
        })
        .collect()
}

fn agents(pairs: &[(&str, u64)]) -> Vec<AgentCalls> {
    pairs
        .iter()
        .map(|(agent_id, calls)| AgentCalls {
            agent_id: agent_id.to_string(),
            calls: *calls,
        })
        .collect()
}

fn rounds(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
    pairs.iter().copied().collect()
}

// ---------------------------------------------------------------------------
// The rules

async fn the_whole_window_matches_the_hand_computed_figures(store: Arc<dyn Store>) {
    store_fixture(&store).await;
    let a = analytics(&store, window("12:00:00", "12:10:00")).await;

    // Active: E1 (success), E2 (failed), E3 (running), E5 (success, ends
    // later); E4 ended before the window.
    assert_eq!(a.executions.total, 4);
    assert_eq!(a.executions.by_status, statuses(1, 2, 1, 0));
    // Durations 120 s (E1), 60 s (E2), 90 s (E5): sorted 60, 90, 120;
    // p50 at rank ⌈1.5⌉ = 2, p95 at rank ⌈2.85⌉ = 3.
    assert_eq!(a.executions.duration_ms, pct(3, 90_000.0, 120_000.0));

    // 10 (E1) + 9 (E2) + 8 (E3) + 2 (E5, before 12:10:00) = 29.
    assert_eq!(a.events.total, 29);
    assert_eq!(
        a.events.by_type,
        counts(&[
            ("orchestration-start", 4),
            ("agent-start", 4),
            ("tool-call", 5),
            ("tool-result", 5),
            ("quality-check", 3),
            ("review-status", 6),
            ("orchestration-complete", 2),
        ])
    );
    // Minute buckets: E1 6, 3, 1; E2 8, 1; E3 8; nothing; E5 2 in the last.
    assert_eq!(series(&a), [6, 3, 1, 8, 1, 8, 0, 0, 0, 2]);
    assert_eq!(a.events.series[3].start, at("12:03:00"));
    assert_eq!(a.events.series[3].per_second, 8.0 / 60.0);

    // search: 4 calls, results 100, 300 (failed), 50, 500 (failed): sorted
    // 50, 100, 300, 500; p50 rank 2, p95 rank ⌈3.8⌉ = 4. render: one, 200.
    assert_eq!(
        tools(&a),
        [
            ("search".into(), 4, 4, 2, Some(0.5), pct(4, 100.0, 500.0)),
            ("render".into(), 1, 1, 0, Some(0.0), pct(1, 200.0, 200.0)),
        ]
    );
    // All: 50, 100, 200, 300, 500; p50 rank ⌈2.5⌉ = 3, p95 rank ⌈4.75⌉ = 5.
    let total = &a.tools.total;
    assert_eq!((total.calls, total.results, total.failures), (5, 5, 2));
    assert_eq!(total.failure_rate, Some(0.4));
    assert_eq!(total.latency_ms, pct(5, 200.0, 500.0));
    // Ties by name.
    assert_eq!(
        a.agents,
        agents(&[("painter", 2), ("writer", 2), ("editor", 1)])
    );

    // story: 80 (threshold 70, not below) and 90 (no threshold); art: 60 < 70.
    let quality = |count, avg, min, max, with, below, share| QualityFigures {
        count,
        avg,
        min,
        max,
        with_threshold: with,
        below_threshold: below,
        share_below_threshold: share,
    };
    assert_eq!(
        a.quality,
        BTreeMap::from([
            (
                "art".to_owned(),
                quality(1, 60.0, 60.0, 60.0, 1, 1, Some(1.0))
            ),
            (
                "story".to_owned(),
                quality(2, 85.0, 80.0, 90.0, 1, 0, Some(0.0))
            ),
        ])
    );

    // Subjects: E1 writer (revision first, 1 round), E2 painter (approved
    // first, 0), E3 editor (rejected first, 1 round).
    let r = &a.reviews;
    assert_eq!(
        r.by_status,
        counts(&[("approved", 3), ("revision-requested", 2), ("rejected", 1)])
    );
    assert_eq!((r.subjects, r.approved_first_pass), (3, 1));
    assert_eq!(r.first_pass_rate, Some(1.0 / 3.0));
    assert_eq!(r.revision_rounds, 2);
    assert_eq!(r.subjects_by_rounds, rounds(&[(0, 1), (1, 2)]));
}

async fn the_window_bounds_are_half_open(store: Arc<dyn Store>) {
    store_fixture(&store).await;
    // 12:03:00 (E2's start) is in, 12:05:00 (E3's start) is out; E1's last
    // event (12:02:00) is before it, so E1 is not active.
    let a = analytics(&store, window("12:03:00", "12:05:00")).await;
    assert_eq!(a.executions.by_status, statuses(0, 0, 1, 0));
    assert_eq!(a.executions.duration_ms, pct(1, 60_000.0, 60_000.0));
    assert_eq!(a.events.total, 9);
    assert_eq!(series(&a), [8, 1]);
    // 200 (render) and 50 (search): sorted 50, 200; p50 rank 1, p95 rank 2.
    assert_eq!(a.tools.total.latency_ms, pct(2, 50.0, 200.0));
    assert_eq!(a.tools.total.failure_rate, Some(0.0));
    assert_eq!(a.agents, agents(&[("painter", 2)]));
    assert_eq!(a.reviews.approved_first_pass, 1);
    assert_eq!(a.reviews.subjects_by_rounds, rounds(&[(0, 1)]));

    // A window that only E4 (11:50–11:51) falls in.
    let a = analytics(&store, window("11:30:00", "12:00:00")).await;
    assert_eq!(a.executions.by_status, statuses(0, 0, 0, 1));
    assert_eq!(a.events.total, 4);
    assert_eq!(a.agents, agents(&[("bot", 1)]));
    assert_eq!(a.tools.total.latency_ms, pct(1, 1000.0, 1000.0));
}

async fn a_conversation_filter_keeps_its_executions_only(store: Arc<dyn Store>) {
    store_fixture(&store).await;
    let a = analytics(&store, window("12:00:00", "12:10:00").conversation("c1")).await;
    // E1, E2, E5 of c1; E3 is c2.
    assert_eq!(a.executions.by_status, statuses(0, 2, 1, 0));
    assert_eq!(a.executions.duration_ms, pct(3, 90_000.0, 120_000.0));
    assert_eq!(a.events.total, 21);
    assert_eq!(series(&a), [6, 3, 1, 8, 1, 0, 0, 0, 0, 2]);
    // search without E3's 500: 100, 300, 50; render 200.
    assert_eq!(
        tools(&a),
        [
            (
                "search".into(),
                3,
                3,
                1,
                Some(1.0 / 3.0),
                pct(3, 100.0, 300.0)
            ),
            ("render".into(), 1, 1, 0, Some(0.0), pct(1, 200.0, 200.0)),
        ]
    );
    assert_eq!((a.reviews.subjects, a.reviews.approved_first_pass), (2, 1));
    assert_eq!(a.quality.keys().collect::<Vec<_>>(), ["art", "story"]);
    assert_eq!(a.quality["story"].count, 1);

    let a = analytics(&store, window("12:00:00", "12:10:00").conversation("c2")).await;
    assert_eq!(a.executions.by_status, statuses(1, 0, 0, 0));
    assert_eq!(a.events.total, 8);
    assert_eq!(a.executions.duration_ms, Percentiles::default());
}

async fn a_department_filter_attributes_agents_events(store: Arc<dyn Store>) {
    store_fixture(&store).await;
    let a = analytics(&store, window("12:00:00", "12:10:00").department("story")).await;
    // E1, E3 and E5 have an event naming story; E2 is art only.
    assert_eq!(a.executions.by_status, statuses(1, 2, 0, 0));
    // 120 s (E1) and 90 s (E5): p50 rank 1, p95 rank 2.
    assert_eq!(a.executions.duration_ms, pct(2, 90_000.0, 120_000.0));
    // E1: agent-start, 2 calls, 2 results (writer is story's), quality, 2
    // reviews = 8; E3: 7 alike; E5: critic's agent-start = 1. Starts and
    // completions name neither a department nor an agent.
    assert_eq!(a.events.total, 16);
    assert_eq!(
        a.events.by_type,
        counts(&[
            ("agent-start", 3),
            ("tool-call", 3),
            ("tool-result", 3),
            ("quality-check", 2),
            ("review-status", 5),
        ])
    );
    // search by writer (100, 300 failed) and editor (500 failed).
    assert_eq!(
        tools(&a),
        [(
            "search".into(),
            3,
            3,
            2,
            Some(2.0 / 3.0),
            pct(3, 300.0, 500.0)
        )]
    );
    assert_eq!(a.agents, agents(&[("writer", 2), ("editor", 1)]));
    assert_eq!(a.quality.keys().collect::<Vec<_>>(), ["story"]);
    assert_eq!((a.reviews.subjects, a.reviews.approved_first_pass), (2, 0));
    assert_eq!(a.reviews.revision_rounds, 2);

    let a = analytics(&store, window("12:00:00", "12:10:00").department("art")).await;
    assert_eq!(a.executions.by_status, statuses(0, 0, 1, 0));
    // painter's agent-start, 2 calls, 2 results, quality, review.
    assert_eq!(a.events.total, 7);
    assert_eq!(a.tools.total.latency_ms, pct(2, 50.0, 200.0));
}

async fn an_empty_window_has_zero_figures(store: Arc<dyn Store>) {
    store_fixture(&store).await;
    let a = analytics(&store, window("13:00:00", "13:05:00")).await;
    assert_eq!(a.executions.total, 0);
    assert_eq!(a.executions.by_status, statuses(0, 0, 0, 0));
    assert_eq!(a.executions.duration_ms, Percentiles::default());
    assert_eq!(a.events.total, 0);
    assert!(a.events.by_type.is_empty());
    assert_eq!(series(&a), [0, 0, 0, 0, 0]);
    assert_eq!(a.tools.total.calls, 0);
    assert_eq!(a.tools.total.failure_rate, None);
    assert_eq!(a.tools.total.latency_ms, Percentiles::default());
    assert!(a.tools.by_tool.is_empty() && a.agents.is_empty() && a.quality.is_empty());
    assert_eq!(a.reviews.subjects, 0);
    assert_eq!(a.reviews.first_pass_rate, None);
    // An unknown conversation empties even a busy window.
    let a = analytics(
        &store,
        window("12:00:00", "12:10:00").conversation("nobody"),
    )
    .await;
    assert_eq!((a.events.total, a.executions.total), (0, 0));
}
