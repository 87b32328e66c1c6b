//! Property tests: whatever a producer or a client sends, the event
//! validator and the protocol parser answer with a value or a stable error,
//! never a panic; and a valid event survives its own serialization.

use agent_events_actors::event::{AgentEvent, EventType};
use agent_events_actors::protocol::{ClientMessage, ErrorCode};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Field names the model knows, so generated objects reach deep into it.
const FIELDS: &[&str] = &[
    "type",
    "executionId",
    "conversationId",
    "timestamp",
    "seq",
    "metadata",
    "agentId",
    "thought",
    "step",
    "department",
    "relevance",
    "qualityScore",
    "status",
    "toolName",
    "input",
    "output",
    "success",
    "issues",
    "threshold",
    "fromSeq",
    "types",
    "token",
    "executionTime",
    "outputs",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("exec-1".to_owned()),
            Just("tool-call".to_owned()),
            Just("2025-10-01T12:00:00Z".to_owned()),
            ".{0,20}".prop_map(|s: String| s),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..8).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_json_is_an_event_or_a_named_rule(value in any_json()) {
        match AgentEvent::from_producer_json(value) {
            Ok(event) => prop_assert!(event.seq.is_none(), "producers never set seq"),
            Err(err) => prop_assert!(!err.message.is_empty()),
        }
    }

    #[test]
    fn any_typed_object_is_an_event_or_a_named_rule(kind in prop::sample::select(EventType::ALL.to_vec()), fields in any_json()) {
        let mut object = match fields { Value::Object(map) => map, _ => Map::new() };
        object.insert("type".into(), json!(kind.as_str()));
        object.insert("executionId".into(), json!("exec-1"));
        if let Ok(event) = AgentEvent::from_producer_json(Value::Object(object)) {
            // What was accepted serializes and reads back to the same event.
            let again = AgentEvent::from_producer_json(serde_json::to_value(&event).unwrap());
            prop_assert_eq!(again.ok(), Some(event));
        }
    }

    #[test]
    fn any_text_is_a_message_or_a_stable_code(text in ".{0,200}") {
        if let Err(err) = ClientMessage::parse(&text) {
            prop_assert!(ErrorCode::ALL.contains(&err.code));
            prop_assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn any_json_message_is_a_message_or_a_stable_code(value in any_json()) {
        if let Err(err) = ClientMessage::parse(&value.to_string()) {
            prop_assert!(ErrorCode::ALL.contains(&err.code));
        }
    }

    #[test]
    fn invalid_utf8_read_lossily_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = ClientMessage::parse(&text);
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            let _ = AgentEvent::from_producer_json(value);
        }
    }
}

#[test]
fn deeply_nested_json_is_refused_not_overflowed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = ClientMessage::parse(&deep).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadJson);
}
