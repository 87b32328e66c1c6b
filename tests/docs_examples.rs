//! The Rust example of docs/getting-started.md ("Emit from a Rust
//! orchestrator"), word for word, compiled and run: tests/docs/run-docs.mjs
//! fails if the page's blocks are not found in this file as they are written
//! there, so the page cannot show code that does not build or work.

use agent_events_actors::event::{DepartmentStart, OrchestrationStart, RunStatus};
use agent_events_actors::EmitterHandle;

fn run(events: &EmitterHandle) {
    let events = events.for_conversation("conv-9");
    events.orchestration_start(
        "exec-123",
        OrchestrationStart {
            user_prompt: Some("Create a dramatic scene".into()),
            ..Default::default()
        },
    );
    events.department_start(
        "exec-123",
        DepartmentStart {
            department: "story".into(),
            relevance: Some(1.0),
            ..Default::default()
        },
    );
    events.tool_call(
        "exec-123",
        "story-head-001",
        "search",
        "call-1",
        serde_json::json!({"q": "act 2"}),
    );
    events.orchestration_complete("exec-123", RunStatus::Success, None, None);
}

use actix::Actor;
use agent_events_actors::emitter::{Emitter, EmitterConfig};
use agent_events_actors::metrics::Metrics;
use agent_events_actors::registry::Registry;

fn start_emitter() -> EmitterHandle {
    let metrics = Metrics::new();
    let registry = Registry::new(metrics.clone()).start();
    let emitter = Emitter::new(EmitterConfig::default(), registry, None, metrics).start();
    EmitterHandle::new(emitter)
}

use agent_events_actors::emitter::IngestError;
use agent_events_actors::event::{AgentEvent, ToolResult};
use agent_events_actors::idempotency::IdempotencyKey;

async fn report(events: &EmitterHandle, step: u32) -> Result<u64, IngestError> {
    let key = IdempotencyKey::new(format!("exec-123:step-{step}:result")).expect("visible ASCII");
    let result = ToolResult {
        agent_id: "story-head-001".into(),
        tool_name: "search".into(),
        success: Some(true),
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        let event = AgentEvent::new("exec-123", result.clone());
        match events.emit_idempotent(key.clone(), event).await {
            Ok(accepted) => return Ok(accepted.seq.expect("only thoughts coalesce")),
            Err(err) if err.code.advice().starts_with("retry") && attempt < 3 => attempt += 1,
            Err(err) => return Err(err),
        }
    }
}

// ---- end of the page's blocks

/// `report` under the same step twice (a caller that lost the first answer)
/// gets one seq and stores one event; the next step gets the next seq.
#[test]
fn an_idempotent_report_is_sequenced_once() {
    actix::System::new().block_on(async {
        let events = start_emitter();
        let first = report(&events, 1).await.expect("accepted");
        let again = report(&events, 1).await.expect("the first answer");
        assert_eq!((first, again), (1, 1));
        assert_eq!(report(&events, 2).await.expect("accepted"), 2);
    });
}

use agent_events_actors::event::AgentStart;

/// `run` sends four events without waiting; an `emit` after them on the same
/// handle (the same Emitter mailbox, in order) must get seq 5.
#[test]
fn the_getting_started_orchestrator_emits_in_order() {
    actix::System::new().block_on(async {
        let events = start_emitter();
        run(&events);
        let accepted = events
            .emit(AgentEvent::new(
                "exec-123",
                AgentStart {
                    agent_id: "story-head-001".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("the emitter accepts the event");
        assert_eq!(
            accepted.seq,
            Some(5),
            "the four events of run() came first, in order"
        );
    });
}
