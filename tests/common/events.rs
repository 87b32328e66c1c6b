//! Events to post and how to compare what comes back: constructors (one
//! event, one of each of the 11 types), and JSON checks that know which
//! differences do not count (`1.0` against `1`, a timestamp's trailing
//! zeros). Every suite posts and compares events; none of it needs a broker.

use serde_json::{json, Value};

/// The example event the project started from, exactly as docs/protocol.md 1 prints it.
pub const SEED_EVENT: &str = r#"{"type":"department-start","executionId":"exec-123","department":"story",
 "departmentName":"Story Department","agentId":"story-head-001","relevance":1.0,
 "timestamp":"2025-10-01T12:00:00Z"}"#;

/// An event of `kind` in `execution_id` with these extra fields.
pub fn event(kind: &str, execution_id: &str, fields: Value) -> Value {
    let mut event = json!({"type": kind, "executionId": execution_id});
    event.as_object_mut().unwrap().extend(
        fields
            .as_object()
            .expect("event fields are an object")
            .clone(),
    );
    event
}

/// A small valid event (an `agent-thinking`) carrying `n` in its metadata.
pub fn thinking(execution_id: &str, n: u64) -> Value {
    event(
        "agent-thinking",
        execution_id,
        json!({"agentId": "agent-1", "thought": format!("step {n}"), "step": n, "metadata": {"n": n}}),
    )
}

/// One event of each of the 11 types, with every field its type has, plus
/// the common optional ones (`conversationId`, `timestamp`, `metadata`).
pub fn all_types(execution_id: &str, conversation_id: &str) -> Vec<Value> {
    let specific = [
        json!({"type":"orchestration-start","projectId":"proj-123","userPrompt":"Create a dramatic scene",
            "complexity":"medium","departments":["story","character"]}),
        json!({"type":"orchestration-complete","status":"partial","result":{"scenes":2,"notes":["a"]},
            "metrics":{"durationMs":5234,"costUsd":0.42}}),
        json!({"type":"department-start","department":"story","departmentName":"Story Department",
            "agentId":"story-head-001","relevance":0.75}),
        json!({"type":"department-complete","department":"story","outputs":[{"kind":"outline"},"text"],
            "qualityScore":87.5,"executionTime":5234}),
        json!({"type":"agent-start","agentId":"writer-1","agentName":"Writer","department":"story",
            "prompt":"Write the opening"}),
        json!({"type":"agent-thinking","agentId":"writer-1","thought":"Consider the setting","step":2}),
        json!({"type":"agent-complete","agentId":"writer-1","department":"story","output":{"text":"It was night."},
            "success":false,"error":"ran out of ink","executionTime":1.5}),
        json!({"type":"tool-call","agentId":"writer-1","toolName":"search","toolCallId":"call-1",
            "input":{"q":"noir openings","limit":3}}),
        json!({"type":"tool-result","agentId":"writer-1","toolName":"search","toolCallId":"call-1",
            "output":[{"title":"t"}],"success":true,"error":"","executionTime":12}),
        json!({"type":"quality-check","qualityScore":70,"agentId":"writer-1","department":"story",
            "passed":false,"threshold":80,"issues":["too short","no dialogue"]}),
        json!({"type":"review-status","department":"story","status":"revision-requested","agentId":"story-head-001",
            "specialistId":"writer-1","feedback":"More tension","qualityScore":60}),
    ];
    specific
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            let object = e.as_object_mut().unwrap();
            object.insert("executionId".into(), execution_id.into());
            object.insert("conversationId".into(), conversation_id.into());
            object.insert(
                "timestamp".into(),
                format!("2025-10-01T12:00:{i:02}.250Z").into(),
            );
            object.insert(
                "metadata".into(),
                json!({"model":"claude","inputTokens":100 + i,"outputTokens":20,"costUsd":0.01,
                    "parentAgentId":"orchestrator","durationMs":7}),
            );
            e
        })
        .collect()
}

/// The 11 event type names.
pub const TYPES: [&str; 11] = [
    "orchestration-start",
    "orchestration-complete",
    "department-start",
    "department-complete",
    "agent-start",
    "agent-thinking",
    "agent-complete",
    "tool-call",
    "tool-result",
    "quality-check",
    "review-status",
];

/// JSON equality where numbers compare by value (`1.0` equals `1`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Whether two RFC 3339 UTC timestamps (`…Z`) name the same instant, whatever
/// their number of fractional digits.
pub fn same_instant(a: &str, b: &str) -> bool {
    fn canonical(t: &str) -> Option<(String, String)> {
        let body = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
        let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
        Some((
            seconds.to_owned(),
            fraction.trim_end_matches('0').to_owned(),
        ))
    }
    canonical(a).is_some_and(|x| Some(x) == canonical(b))
}

/// Whether `t` looks like an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS…` with a zone).
pub fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && (b[10] == b'T' || b[10] == b't')
        && [13, 16].iter().all(|&i| b[i] == b':')
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && (t.ends_with('Z') || t.ends_with('z') || t[19..].contains(['+', '-']))
}

/// Asserts that a delivered event is the posted one plus `seq` (= `seq`) and a
/// `timestamp` (the posted one if there was one), and nothing else.
pub fn assert_delivered(posted: &Value, delivered: &Value, seq: u64) {
    assert_eq!(delivered["seq"], seq, "seq of {delivered}");
    let stamp = delivered["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("a delivered event has a timestamp: {delivered}"));
    assert!(is_rfc3339(stamp), "timestamp is RFC 3339: {delivered}");
    if let Some(sent) = posted["timestamp"].as_str() {
        assert!(
            same_instant(sent, stamp),
            "timestamp {sent} came back as {stamp}"
        );
    }
    let mut rest = delivered.as_object().unwrap().clone();
    rest.remove("seq");
    rest.remove("timestamp");
    let mut expected = posted.as_object().unwrap().clone();
    expected.remove("timestamp");
    assert!(
        json_eq(
            &Value::Object(expected.clone()),
            &Value::Object(rest.clone())
        ),
        "delivered event differs from the posted one\n posted:    {}\n delivered: {}",
        Value::Object(expected),
        Value::Object(rest)
    );
}

/// The seqs of a list of events.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}")))
        .collect()
}
