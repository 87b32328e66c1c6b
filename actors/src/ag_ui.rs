//! The AG-UI view of an execution: how each of our 11 event types becomes
//! AG-UI protocol events (the schema of the npm package `@ag-ui/core` 1.0).
//!
//! Pure functions: one of our events in, its AG-UI events out, with no state
//! carried from one event to the next. That is what lets a stream resume in
//! the middle of a run (`Last-Event-ID`) and produce exactly what an
//! uninterrupted stream would have: every ID below is derived from the event
//! itself (execution, seq, and the producer's `toolCallId`), never counted.
//!
//! | ours | AG-UI |
//! |---|---|
//! | `orchestration-start` | `RUN_STARTED` |
//! | `orchestration-complete` | `RUN_FINISHED` (status `success`, `partial` or none), `RUN_ERROR` (status `failed`) |
//! | `department-start` / `-complete` | `STEP_STARTED` / `STEP_FINISHED`, `stepName` = department |
//! | `tool-call` | `TOOL_CALL_START`, `TOOL_CALL_ARGS` (`delta` = the input as JSON), `TOOL_CALL_END` |
//! | `tool-result` | `TOOL_CALL_RESULT` |
//! | `agent-thinking` | `REASONING_START`, `REASONING_MESSAGE_START`, `REASONING_MESSAGE_CONTENT`, `REASONING_MESSAGE_END`, `REASONING_END` |
//! | `agent-start`, `agent-complete`, `quality-check`, `review-status` | `CUSTOM`, `name` = our type, `value` = our event |
//!
//! Every AG-UI event carries `timestamp` (milliseconds since the epoch, from
//! ours). The first AG-UI event made from one of ours carries that event,
//! whole, as `rawEvent` (the protocol's field for "the provider-native event
//! this one was translated from"), so nothing of ours is lost: agent,
//! department, metadata, a `partial` status. `CUSTOM` events carry it as
//! `value` instead. `docs/ag-ui.md` is the same table with examples.

use crate::event::{AgentEvent, EventKind, RunStatus, ToolCall, ToolResult};
use serde_json::{json, Map, Value};

/// The AG-UI event types this mapping produces, as `@ag-ui/core` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgUiType {
    /// `RUN_STARTED`: from our `orchestration-start`.
    RunStarted,
    /// `RUN_FINISHED`: from an `orchestration-complete` that did not fail.
    RunFinished,
    /// `RUN_ERROR`: from a failed `orchestration-complete`.
    RunError,
    /// `STEP_STARTED`: from `department-start`.
    StepStarted,
    /// `STEP_FINISHED`: from `department-complete`.
    StepFinished,
    /// `TOOL_CALL_START`: a tool call begins.
    ToolCallStart,
    /// `TOOL_CALL_ARGS`: the tool call's input.
    ToolCallArgs,
    /// `TOOL_CALL_END`: the end of the tool call's arguments.
    ToolCallEnd,
    /// `TOOL_CALL_RESULT`: the tool's output.
    ToolCallResult,
    /// `REASONING_START`: the first of five from one `agent-thinking`.
    ReasoningStart,
    /// `REASONING_MESSAGE_START`: one thought begins.
    ReasoningMessageStart,
    /// `REASONING_MESSAGE_CONTENT`: the thought's text.
    ReasoningMessageContent,
    /// `REASONING_MESSAGE_END`: the thought ends.
    ReasoningMessageEnd,
    /// `REASONING_END`: the last of five from one `agent-thinking`.
    ReasoningEnd,
    /// `CUSTOM`: `agent-start`, `agent-complete`, `quality-check`, `review-status`, carried whole.
    Custom,
}

impl AgUiType {
    /// The wire name, e.g. `TOOL_CALL_START`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgUiType::RunStarted => "RUN_STARTED",
            AgUiType::RunFinished => "RUN_FINISHED",
            AgUiType::RunError => "RUN_ERROR",
            AgUiType::StepStarted => "STEP_STARTED",
            AgUiType::StepFinished => "STEP_FINISHED",
            AgUiType::ToolCallStart => "TOOL_CALL_START",
            AgUiType::ToolCallArgs => "TOOL_CALL_ARGS",
            AgUiType::ToolCallEnd => "TOOL_CALL_END",
            AgUiType::ToolCallResult => "TOOL_CALL_RESULT",
            AgUiType::ReasoningStart => "REASONING_START",
            AgUiType::ReasoningMessageStart => "REASONING_MESSAGE_START",
            AgUiType::ReasoningMessageContent => "REASONING_MESSAGE_CONTENT",
            AgUiType::ReasoningMessageEnd => "REASONING_MESSAGE_END",
            AgUiType::ReasoningEnd => "REASONING_END",
            AgUiType::Custom => "CUSTOM",
        }
    }
}

/// The AG-UI events of one of ours, in order; never empty.
pub fn map_event(event: &AgentEvent) -> Vec<Value> {
    let mut mapped = match &event.kind {
        EventKind::OrchestrationStart(_) => vec![run_started(event)],
        EventKind::OrchestrationComplete(c) => vec![run_ended(event, c.status, c.result.as_ref())],
        EventKind::DepartmentStart(d) => vec![step(AgUiType::StepStarted, &d.department)],
        EventKind::DepartmentComplete(d) => vec![step(AgUiType::StepFinished, &d.department)],
        EventKind::ToolCall(call) => tool_call(event, call),
        EventKind::ToolResult(result) => vec![tool_result(event, result)],
        EventKind::AgentThinking(t) => reasoning(event, &t.thought),
        EventKind::AgentStart(_)
        | EventKind::AgentComplete(_)
        | EventKind::QualityCheck(_)
        | EventKind::ReviewStatus(_) => vec![custom(event)],
    };
    stamp(event, &mut mapped);
    mapped
}

/// `threadId`: the conversation, or the execution itself when it has none.
pub fn thread_id(event: &AgentEvent) -> &str {
    event
        .conversation_id
        .as_deref()
        .unwrap_or(&event.execution_id)
}

/// `runId`: the execution.
pub fn run_id(event: &AgentEvent) -> &str {
    &event.execution_id
}

/// A `messageId` made from the event's execution and seq, and what the
/// message is (`reasoning`, `tool-result`): the same event always gets the
/// same ID, on every stream and every resume. `/` cannot occur in an
/// execution ID, so the parts never run together.
pub fn message_id(event: &AgentEvent, what: &str) -> String {
    format!(
        "{}/{}/{what}",
        event.execution_id,
        event.seq.unwrap_or_default()
    )
}

/// The `toolCallId` of a `tool-call` or `tool-result`.
///
/// With the producer's `toolCallId`, it is that ID scoped by the execution:
/// AG-UI scopes tool calls by thread (our conversation), where several
/// executions may reuse a producer's IDs (the demo's agents do), and the
/// call and its result still meet. Without one, it is made from the event's
/// own execution and seq; a `tool-result` without one then names no call we
/// emitted, because linking it to its call would need state this pure
/// mapping does not keep.
pub fn tool_call_id(event: &AgentEvent, producer_id: Option<&str>) -> String {
    match producer_id {
        Some(id) => format!("{}/tool-call/{id}", event.execution_id),
        None => message_id(event, "tool-call"),
    }
}

fn typed(kind: AgUiType, fields: Value) -> Value {
    let mut object = Map::new();
    object.insert("type".into(), kind.as_str().into());
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Value::Object(object)
}

fn run_started(event: &AgentEvent) -> Value {
    typed(
        AgUiType::RunStarted,
        json!({"threadId": thread_id(event), "runId": run_id(event)}),
    )
}

/// `RUN_ERROR` for a failed run; `RUN_FINISHED` otherwise, because `partial`
/// (some departments delivered) is still a run that ended normally, and
/// AG-UI's outcomes (`success`, `interrupt`, `cancelled`) have nothing
/// closer. The `partial` status stays readable in `rawEvent`.
fn run_ended(event: &AgentEvent, status: Option<RunStatus>, result: Option<&Value>) -> Value {
    if status == Some(RunStatus::Failed) {
        return typed(
            AgUiType::RunError,
            json!({"message": failure_message(result), "code": "failed"}),
        );
    }
    let mut finished = typed(
        AgUiType::RunFinished,
        json!({"threadId": thread_id(event), "runId": run_id(event), "outcome": {"type": "success"}}),
    );
    // The schema refuses a null result: leave it out instead.
    if let Some(result) = result.filter(|r| !r.is_null()) {
        finished["result"] = result.clone();
    }
    finished
}

/// Words for `RUN_ERROR.message`: the result's own if it has some.
fn failure_message(result: Option<&Value>) -> String {
    let words = match result {
        Some(Value::String(text)) => Some(text.as_str()),
        Some(Value::Object(object)) => ["error", "message"]
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_str)),
        _ => None,
    };
    words.unwrap_or("the orchestration failed").to_owned()
}

fn step(kind: AgUiType, department: &str) -> Value {
    typed(kind, json!({ "stepName": department }))
}

fn tool_call(event: &AgentEvent, call: &ToolCall) -> Vec<Value> {
    let id = tool_call_id(event, call.tool_call_id.as_deref());
    // No input means no arguments: "{}" keeps the concatenated arguments a
    // JSON document, which is what AG-UI clients parse at TOOL_CALL_END.
    let args = call
        .input
        .as_ref()
        .map_or_else(|| "{}".to_owned(), Value::to_string);
    vec![
        typed(
            AgUiType::ToolCallStart,
            json!({"toolCallId": id, "toolCallName": call.tool_name}),
        ),
        typed(
            AgUiType::ToolCallArgs,
            json!({"toolCallId": id, "delta": args}),
        ),
        typed(AgUiType::ToolCallEnd, json!({ "toolCallId": id })),
    ]
}

fn tool_result(event: &AgentEvent, result: &ToolResult) -> Value {
    typed(
        AgUiType::ToolCallResult,
        json!({
            "messageId": message_id(event, "tool-result"),
            "toolCallId": tool_call_id(event, result.tool_call_id.as_deref()),
            "content": tool_result_content(result),
            "role": "tool",
        }),
    )
}

/// What the tool returned, as text: the output as JSON (a string output as
/// is), else the error, else nothing.
fn tool_result_content(result: &ToolResult) -> String {
    match (&result.output, &result.error) {
        (Some(Value::String(text)), _) => text.clone(),
        (Some(output), _) => output.to_string(),
        (None, Some(error)) => error.clone(),
        (None, None) => String::new(),
    }
}

/// One thought is one whole reasoning message: start, content, end.
fn reasoning(event: &AgentEvent, thought: &str) -> Vec<Value> {
    let id = message_id(event, "reasoning");
    vec![
        typed(AgUiType::ReasoningStart, json!({ "messageId": id })),
        typed(
            AgUiType::ReasoningMessageStart,
            json!({"messageId": id, "role": "reasoning"}),
        ),
        typed(
            AgUiType::ReasoningMessageContent,
            json!({"messageId": id, "delta": thought}),
        ),
        typed(AgUiType::ReasoningMessageEnd, json!({ "messageId": id })),
        typed(AgUiType::ReasoningEnd, json!({ "messageId": id })),
    ]
}

fn custom(event: &AgentEvent) -> Value {
    typed(
        AgUiType::Custom,
        json!({"name": event.event_type().as_str(), "value": original(event)}),
    )
}

fn original(event: &AgentEvent) -> Value {
    serde_json::to_value(event).expect("an event always serializes")
}

/// Adds `timestamp` to each, and `rawEvent` to the first unless it is a `CUSTOM`.
fn stamp(event: &AgentEvent, mapped: &mut [Value]) {
    if let Some(at) = event.timestamp {
        for value in mapped.iter_mut() {
            value["timestamp"] = at.timestamp_millis().into();
        }
    }
    if let Some(first) = mapped.first_mut() {
        if first["type"] != AgUiType::Custom.as_str() {
            first["rawEvent"] = original(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        AgentComplete, AgentStart, AgentThinking, DepartmentComplete, DepartmentStart,
        OrchestrationComplete, OrchestrationStart, QualityCheck, ReviewStatus, ReviewVerdict,
    };
    use chrono::DateTime;

    fn sequenced(kind: impl Into<EventKind>, seq: u64) -> AgentEvent {
        let mut event = AgentEvent::new("exec-1", kind).with_conversation("conv-9");
        event.seq = Some(seq);
        event.timestamp = DateTime::from_timestamp_millis(1_759_320_000_250);
        event
    }

    fn types(mapped: &[Value]) -> Vec<&str> {
        mapped.iter().map(|v| v["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn a_run_starts_and_finishes_in_its_thread() {
        let started = map_event(&sequenced(OrchestrationStart::default(), 1));
        assert_eq!(types(&started), ["RUN_STARTED"]);
        assert_eq!(started[0]["threadId"], "conv-9");
        assert_eq!(started[0]["runId"], "exec-1");
        assert_eq!(started[0]["timestamp"], 1_759_320_000_250i64);
        assert_eq!(started[0]["rawEvent"]["type"], "orchestration-start");

        for status in [None, Some(RunStatus::Success), Some(RunStatus::Partial)] {
            let complete = OrchestrationComplete {
                status,
                result: Some(json!({"scenes": 2})),
                ..Default::default()
            };
            let finished = map_event(&sequenced(complete, 9));
            assert_eq!(types(&finished), ["RUN_FINISHED"], "{status:?}");
            assert_eq!(finished[0]["outcome"], json!({"type": "success"}));
            assert_eq!(finished[0]["result"], json!({"scenes": 2}));
            assert_eq!(finished[0]["runId"], "exec-1");
        }
    }

    #[test]
    fn a_failed_run_is_a_run_error_with_the_results_words() {
        let failed = |result| OrchestrationComplete {
            status: Some(RunStatus::Failed),
            result,
            ..Default::default()
        };
        let error = map_event(&sequenced(
            failed(Some(json!({"error": "out of budget"}))),
            9,
        ));
        assert_eq!(types(&error), ["RUN_ERROR"]);
        assert_eq!(error[0]["message"], "out of budget");
        assert_eq!(error[0]["code"], "failed");
        let bare = map_event(&sequenced(failed(None), 9));
        assert_eq!(bare[0]["message"], "the orchestration failed");
        let null_result = OrchestrationComplete {
            result: Some(Value::Null),
            ..Default::default()
        };
        let finished = map_event(&sequenced(null_result, 9));
        assert!(finished[0].get("result").is_none(), "{}", finished[0]);
    }

    #[test]
    fn the_thread_is_the_execution_without_a_conversation() {
        let mut event = sequenced(OrchestrationStart::default(), 1);
        event.conversation_id = None;
        assert_eq!(map_event(&event)[0]["threadId"], "exec-1");
    }

    #[test]
    fn departments_are_steps() {
        let start = DepartmentStart {
            department: "story".into(),
            ..Default::default()
        };
        let complete = DepartmentComplete {
            department: "story".into(),
            ..Default::default()
        };
        let started = map_event(&sequenced(start, 2));
        let finished = map_event(&sequenced(complete, 3));
        assert_eq!(types(&started), ["STEP_STARTED"]);
        assert_eq!(types(&finished), ["STEP_FINISHED"]);
        assert_eq!(started[0]["stepName"], "story");
        assert_eq!(finished[0]["stepName"], "story");
    }

    #[test]
    fn a_tool_call_opens_and_closes_and_its_result_meets_it() {
        let call = ToolCall {
            agent_id: "writer-1".into(),
            tool_name: "search".into(),
            tool_call_id: Some("call-1".into()),
            input: Some(json!({"q": "noir"})),
        };
        let mapped = map_event(&sequenced(call, 4));
        assert_eq!(
            types(&mapped),
            ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
        );
        assert_eq!(mapped[0]["toolCallName"], "search");
        assert_eq!(mapped[1]["delta"], r#"{"q":"noir"}"#);
        assert!(mapped
            .iter()
            .all(|v| v["toolCallId"] == "exec-1/tool-call/call-1"));
        assert_eq!(mapped[0]["rawEvent"]["agentId"], "writer-1");
        assert!(mapped[1].get("rawEvent").is_none(), "raw once per event");

        let result = ToolResult {
            agent_id: "writer-1".into(),
            tool_name: "search".into(),
            tool_call_id: Some("call-1".into()),
            output: Some(json!([{"title": "t"}])),
            ..Default::default()
        };
        let answered = map_event(&sequenced(result, 5));
        assert_eq!(types(&answered), ["TOOL_CALL_RESULT"]);
        assert_eq!(answered[0]["toolCallId"], mapped[0]["toolCallId"]);
        assert_eq!(answered[0]["messageId"], "exec-1/5/tool-result");
        assert_eq!(answered[0]["content"], r#"[{"title":"t"}]"#);
        assert_eq!(answered[0]["role"], "tool");
    }

    #[test]
    fn tool_ids_without_the_producers_come_from_execution_and_seq() {
        let call = ToolCall {
            agent_id: "a".into(),
            tool_name: "t".into(),
            ..Default::default()
        };
        let mapped = map_event(&sequenced(call, 7));
        assert_eq!(mapped[0]["toolCallId"], "exec-1/7/tool-call");
        assert_eq!(mapped[1]["delta"], "{}", "no input: no arguments");
        let failed = ToolResult {
            agent_id: "a".into(),
            tool_name: "t".into(),
            error: Some("timeout".into()),
            success: Some(false),
            ..Default::default()
        };
        let answered = map_event(&sequenced(failed, 8));
        assert_eq!(answered[0]["toolCallId"], "exec-1/8/tool-call");
        assert_eq!(answered[0]["content"], "timeout");
        // The same event maps to the same IDs every time.
        assert_eq!(
            map_event(&sequenced(ToolCall::default(), 7))[0]["toolCallId"],
            "exec-1/7/tool-call"
        );
    }

    #[test]
    fn a_thought_is_one_whole_reasoning_message() {
        let thinking = AgentThinking {
            agent_id: "writer-1".into(),
            thought: "Consider the setting".into(),
            step: Some(2),
        };
        let mapped = map_event(&sequenced(thinking, 6));
        assert_eq!(
            types(&mapped),
            [
                "REASONING_START",
                "REASONING_MESSAGE_START",
                "REASONING_MESSAGE_CONTENT",
                "REASONING_MESSAGE_END",
                "REASONING_END"
            ]
        );
        assert!(mapped
            .iter()
            .all(|v| v["messageId"] == "exec-1/6/reasoning"));
        assert_eq!(mapped[1]["role"], "reasoning");
        assert_eq!(mapped[2]["delta"], "Consider the setting");
        assert!(mapped
            .iter()
            .all(|v| v["timestamp"] == 1_759_320_000_250i64));
    }

    #[test]
    fn the_rest_are_custom_events_carrying_ours() {
        let review = ReviewStatus {
            department: "story".into(),
            status: ReviewVerdict::Approved,
            agent_id: None,
            specialist_id: None,
            feedback: None,
            quality_score: None,
        };
        let kinds: [EventKind; 4] = [
            AgentStart {
                agent_id: "a".into(),
                ..Default::default()
            }
            .into(),
            AgentComplete {
                agent_id: "a".into(),
                ..Default::default()
            }
            .into(),
            QualityCheck {
                quality_score: 80.0,
                ..Default::default()
            }
            .into(),
            review.into(),
        ];
        for kind in kinds {
            let event = sequenced(kind, 3);
            let mapped = map_event(&event);
            assert_eq!(types(&mapped), ["CUSTOM"]);
            assert_eq!(mapped[0]["name"], event.event_type().as_str());
            assert_eq!(mapped[0]["value"], serde_json::to_value(&event).unwrap());
            assert!(
                mapped[0].get("rawEvent").is_none(),
                "value already holds it"
            );
        }
    }
}
