//! The demo's executions, read back from the Emitter's buffer: every run is
//! gapless, complete and joined up, alone or beside another.

use actix::prelude::*;
use agent_events_actors::demo::{self, DemoConfig, Orchestrator, RunExecution};
use agent_events_actors::emitter::{Emitter, EmitterConfig};
use agent_events_actors::event::{AgentEvent, EventKind, EventType, ReviewVerdict, RunStatus};
use agent_events_actors::history::ReadBuffer;
use agent_events_actors::metrics::Metrics;
use agent_events_actors::registry::Registry;
use agent_events_actors::EmitterHandle;
use futures_util::future::join;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const CONVERSATION: &str = "demo-test";

/// An Emitter, and a demo orchestrator that runs only what it is asked to.
struct Demo {
    emitter: Addr<Emitter>,
    orchestrator: Addr<Orchestrator>,
}

impl Demo {
    fn start(seed: u64) -> Demo {
        let metrics = Metrics::new();
        let registry = Registry::new(metrics.clone()).start();
        let config = EmitterConfig {
            buffer_size: 10_000,
            ..Default::default()
        };
        let emitter = Emitter::new(config, registry, None, metrics).start();
        let config = DemoConfig {
            pace: Duration::from_millis(1),
            executions: Some(0),
            conversation_id: CONVERSATION.into(),
            seed,
        };
        let orchestrator = demo::start(EmitterHandle::new(emitter.clone()), config);
        Demo {
            emitter,
            orchestrator,
        }
    }

    /// Runs one execution to its end; returns its status and every event it emitted.
    async fn run(&self, execution_id: &str) -> (RunStatus, Vec<AgentEvent>) {
        let run = RunExecution {
            execution_id: execution_id.into(),
        };
        let status = self
            .orchestrator
            .send(run)
            .await
            .expect("orchestrator answers");
        (status, self.events(execution_id).await)
    }

    async fn events(&self, execution_id: &str) -> Vec<AgentEvent> {
        let read = ReadBuffer {
            execution_id: execution_id.into(),
            after_seq: 0,
        };
        let buffered = self.emitter.send(read).await.expect("emitter answers");
        assert_eq!(
            buffered.last_seq,
            buffered.events.len() as u64,
            "the buffer lost events"
        );
        buffered.events.iter().map(|p| p.event.clone()).collect()
    }
}

/// Checks everything a monitor relies on in one execution's events.
fn assert_well_formed(execution_id: &str, status: RunStatus, events: &[AgentEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.expect("seq")).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "{execution_id}: seqs"
    );
    for event in events {
        assert_eq!(event.execution_id, execution_id);
        assert_eq!(event.conversation_id.as_deref(), Some(CONVERSATION));
    }
    let first = events.first().expect("events").event_type();
    assert_eq!(
        first,
        EventType::OrchestrationStart,
        "{execution_id}: first event"
    );
    let last = &events.last().unwrap().kind;
    let EventKind::OrchestrationComplete(complete) = last else {
        panic!("{execution_id}: last event is {:?}", last.event_type());
    };
    assert_eq!(complete.status, Some(status), "{execution_id}: status");
    let metrics = complete.metrics.as_ref().expect("metrics");
    for key in [
        "durationMs",
        "toolCalls",
        "failedToolCalls",
        "revisions",
        "costUsd",
    ] {
        assert!(
            metrics.contains_key(key),
            "{execution_id}: metrics lack {key}"
        );
    }
    let types: HashSet<EventType> = events.iter().map(AgentEvent::event_type).collect();
    for t in EventType::ALL {
        assert!(types.contains(&t), "{execution_id}: no {t}");
    }
    assert_tool_calls_join(execution_id, events);
    assert_starts_precede_completes(execution_id, events);
    assert_unhappy_paths(execution_id, status, events);
}

/// Every tool-result answers an earlier tool-call of the same agent and tool.
fn assert_tool_calls_join(execution_id: &str, events: &[AgentEvent]) {
    let mut calls = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::ToolCall(call) => {
                let id = call.tool_call_id.clone().expect("toolCallId on tool-call");
                let caller = (call.agent_id.clone(), call.tool_name.clone());
                assert!(
                    calls.insert(id, caller).is_none(),
                    "{execution_id}: toolCallId reused"
                );
            }
            EventKind::ToolResult(result) => {
                let id = result
                    .tool_call_id
                    .as_ref()
                    .expect("toolCallId on tool-result");
                let caller = calls
                    .get(id)
                    .unwrap_or_else(|| panic!("{execution_id}: result for unknown call {id}"));
                assert_eq!(caller, &(result.agent_id.clone(), result.tool_name.clone()));
            }
            _ => {}
        }
    }
}

/// Departments and agents start before they complete, and every start completes.
fn assert_starts_precede_completes(execution_id: &str, events: &[AgentEvent]) {
    let mut departments: HashMap<&str, u32> = HashMap::new();
    let mut agents: HashMap<&str, i32> = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::DepartmentStart(start) => {
                let starts = departments.entry(&start.department).or_default();
                assert_eq!(
                    *starts, 0,
                    "{execution_id}: {} started twice",
                    start.department
                );
                *starts = 1;
            }
            EventKind::DepartmentComplete(done) => {
                let open = departments.get_mut(done.department.as_str());
                let open = open.unwrap_or_else(|| {
                    panic!(
                        "{execution_id}: {} completed before it started",
                        done.department
                    )
                });
                assert_eq!(
                    *open, 1,
                    "{execution_id}: {} completed twice",
                    done.department
                );
                *open = 2;
            }
            EventKind::AgentStart(start) => *agents.entry(&start.agent_id).or_default() += 1,
            EventKind::AgentComplete(done) => {
                let open = agents
                    .get_mut(done.agent_id.as_str())
                    .expect("agent started");
                assert!(
                    *open > 0,
                    "{execution_id}: {} completed more than it started",
                    done.agent_id
                );
                *open -= 1;
            }
            _ => {}
        }
    }
    assert!(
        departments.values().all(|&state| state == 2),
        "{execution_id}: {departments:?}"
    );
    assert!(
        agents.values().all(|&open| open == 0),
        "{execution_id}: {agents:?}"
    );
}

/// A failed tool call, a failed quality check, a revision that ends approved;
/// and rejected work exactly when the run did not fully succeed.
fn assert_unhappy_paths(execution_id: &str, status: RunStatus, events: &[AgentEvent]) {
    let failed_tool = events.iter().any(|e| {
        matches!(&e.kind, EventKind::ToolResult(r) if r.success == Some(false) && r.error.is_some())
    });
    assert!(failed_tool, "{execution_id}: no failed tool-result");
    let failed_check = events.iter().any(|e| {
        matches!(&e.kind, EventKind::QualityCheck(q)
            if q.passed == Some(false) && q.threshold.is_some_and(|t| q.quality_score < t)
                && q.issues.as_ref().is_some_and(|i| !i.is_empty()))
    });
    assert!(
        failed_check,
        "{execution_id}: no failed quality-check with issues"
    );
    let mut verdicts: HashMap<&str, Vec<ReviewVerdict>> = HashMap::new();
    for event in events {
        if let EventKind::ReviewStatus(review) = &event.kind {
            let specialist = review.specialist_id.as_deref().expect("specialistId");
            verdicts.entry(specialist).or_default().push(review.status);
        }
    }
    let revised_then_approved = verdicts.values().any(|v| {
        v.first() == Some(&ReviewVerdict::RevisionRequested)
            && v.last() == Some(&ReviewVerdict::Approved)
    });
    assert!(
        revised_then_approved,
        "{execution_id}: no revision round ending in approval: {verdicts:?}"
    );
    let rejected = verdicts
        .values()
        .flatten()
        .any(|v| *v == ReviewVerdict::Rejected);
    assert_eq!(
        rejected,
        status != RunStatus::Success,
        "{execution_id}: {status:?} but {verdicts:?}"
    );
}

#[actix_rt::test]
async fn every_execution_is_gapless_complete_and_joined_up() {
    let demo = Demo::start(20251001);
    let mut statuses = Vec::new();
    let mut usage_reported = false;
    for n in 1..=20 {
        let execution_id = format!("exec-{n}");
        let (status, events) = demo.run(&execution_id).await;
        assert_well_formed(&execution_id, status, &events);
        statuses.push(status);
        usage_reported |= events.iter().any(|e| {
            let metadata = e.metadata.as_ref();
            metadata.is_some_and(|m| m.contains_key("model") && m.contains_key("inputTokens"))
        });
    }
    assert!(statuses.contains(&RunStatus::Success), "{statuses:?}");
    assert!(
        statuses.iter().any(|s| *s != RunStatus::Success),
        "{statuses:?}"
    );
    assert!(usage_reported, "no event carried model usage in metadata");
}

#[actix_rt::test]
async fn concurrent_executions_each_keep_their_own_seqs() {
    let demo = Demo::start(7);
    let ((status_a, a), (status_b, b)) = join(demo.run("exec-a"), demo.run("exec-b")).await;
    assert_well_formed("exec-a", status_a, &a);
    assert_well_formed("exec-b", status_b, &b);
    // They really ran at once: each started before the other finished.
    let span = |events: &[AgentEvent]| (events[0].timestamp, events[events.len() - 1].timestamp);
    let ((a_start, a_end), (b_start, b_end)) = (span(&a), span(&b));
    assert!(
        a_start < b_end && b_start < a_end,
        "the executions did not overlap"
    );
}

#[actix_rt::test]
async fn the_same_seed_gives_the_same_execution() {
    let (first, second) = (Demo::start(99), Demo::start(99));
    let ((_, a), (_, b)) = join(first.run("exec-1"), second.run("exec-1")).await;
    assert_eq!(content(&a), content(&b));
}

/// The events without what depends on timing (seq, timestamps, durations),
/// sorted, since concurrent departments interleave differently each time.
fn content(events: &[AgentEvent]) -> Vec<String> {
    let mut content: Vec<String> = events
        .iter()
        .map(|event| {
            let mut value = serde_json::to_value(event).unwrap();
            let object = value.as_object_mut().unwrap();
            for key in ["seq", "timestamp", "executionTime"] {
                object.remove(key);
            }
            for nested in ["metadata", "metrics"] {
                if let Some(Value::Object(inner)) = object.get_mut(nested) {
                    inner.remove("durationMs");
                }
            }
            value.to_string()
        })
        .collect();
    content.sort();
    content
}
