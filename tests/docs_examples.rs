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

// ---- end of the page's blocks

use agent_events_actors::event::{AgentEvent, AgentStart};

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
