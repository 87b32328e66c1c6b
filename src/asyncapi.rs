//! `GET /api/ws`: the WebSocket protocol as an AsyncAPI 3.0 document.
//!
//! Built from the Rust types so that it cannot drift from what the broker
//! does: event payloads from the event model's serde derives
//! ([`crate::schema`]), event types from [`EventType::ALL`], error codes and
//! close codes from [`ErrorCode::ALL`], the fields a `subscribe` may carry
//! from [`SUBSCRIBE_FIELDS`]. The tests below hold the hand-written parts
//! (the message shapes) against the frames the broker really builds, and
//! tests/api-spec validates the whole with `@asyncapi/parser`.

use crate::schema;
use agent_events_actors::event::EventType;
use agent_events_actors::protocol::{ErrorCode, AUTH_FIELDS, SUBSCRIBE_FIELDS, UNSUBSCRIBE_FIELDS};
use serde_json::{json, Map, Value};

/// The WebSocket paths; both speak the same protocol (`/` is the original design's).
const CHANNELS: [(&str, &str); 2] = [("root", "/"), ("ws", "/ws")];

/// Messages a client sends, by name.
const CLIENT_MESSAGES: [&str; 4] = ["subscribe", "unsubscribe", "ping", "auth"];

/// Messages the broker sends, by name.
const SERVER_MESSAGES: [&str; 8] = [
    "connected",
    "subscribed",
    "unsubscribed",
    "event",
    "resync",
    "error",
    "pong",
    "authenticated",
];

/// Codes that end the connection they are sent on, with their close code
/// (the session's `close_with` calls; every other code leaves it open).
const CLOSING: [ErrorCode; 5] = [
    ErrorCode::SlowConsumer,
    ErrorCode::HeartbeatTimeout,
    ErrorCode::ShuttingDown,
    ErrorCode::TokenExpired,
    ErrorCode::Unauthorized,
];

/// The AsyncAPI document.
pub fn document() -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    for (key, address) in CHANNELS {
        let messages: Map<String, Value> = CLIENT_MESSAGES
            .iter()
            .chain(&SERVER_MESSAGES)
            .map(|name| {
                (
                    name.to_string(),
                    json!({"$ref": format!("#/components/messages/{name}")}),
                )
            })
            .collect();
        channels.insert(
            key.into(),
            json!({
                "address": address,
                "title": format!("WebSocket at {address}"),
                "description": "One JSON text message per frame. Binary frames are refused \
                    (`binary-not-supported`); a frame over max_frame_bytes closes with 1009.",
                "messages": messages,
                "bindings": {"ws": {
                    "method": "GET",
                    "query": {
                        "type": "object",
                        "properties": {"token": {"type": "string",
                            "description": "a JWT, for clients that cannot set headers"}},
                    },
                    "bindingVersion": "0.1.0",
                }},
            }),
        );
        let refs = |names: &[&str]| -> Vec<Value> {
            names
                .iter()
                .map(|name| json!({"$ref": format!("#/channels/{key}/messages/{name}")}))
                .collect()
        };
        operations.insert(
            format!("{key}ClientMessages"),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{key}")},
                "summary": "What a client sends; each is answered or refused with an `error`.",
                "messages": refs(&CLIENT_MESSAGES),
            }),
        );
        operations.insert(
            format!("{key}ServerMessages"),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{key}")},
                "summary": "What the broker sends: answers, events, re-syncs and errors.",
                "messages": refs(&SERVER_MESSAGES),
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "agent-events WebSocket protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Real-time events of multi-agent orchestrations. Subscribe to an \
                execution (with `fromSeq` to replay what you missed) or a conversation, and \
                receive `event` messages in seq order. docs/protocol.md is the prose contract; the \
                HTTP API is at /api/openapi.json.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "localhost:3001",
                "protocol": "ws",
                "description": "The broker (WS_PORT, default 3001). With auth on, send a token \
                    at the upgrade (Authorization: Bearer, the subprotocol `bearer.<jwt>`, or \
                    ?token=) or as the first message (`auth`).",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/queryToken"},
                ],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages(),
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "queryToken": {"type": "httpApiKey", "name": "token", "in": "query"},
            },
        },
    })
}

/// `{"$ref": "#/components/schemas/<name>"}`.
fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schema name of an event type: `tool-call` → `ToolCall`.
pub fn event_schema_name(event_type: EventType) -> String {
    event_type
        .as_str()
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The schemas both documents share: IDs, event types, error codes, events.
pub fn schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert("Id".into(), schema::id_schema());
    schemas.insert(
        "EventType".into(),
        json!({"type": "string", "enum": EventType::ALL.map(EventType::as_str)}),
    );
    schemas.insert(
        "ErrorCode".into(),
        json!({"type": "string", "enum": ErrorCode::ALL.map(ErrorCode::as_str)}),
    );
    for event_type in EventType::ALL {
        let mut event = schema::event_schema(event_type, true);
        event["description"] = json!(format!("A `{event_type}` event as the broker sends it."));
        schemas.insert(event_schema_name(event_type), event);
    }
    let one_of: Vec<Value> = EventType::ALL
        .into_iter()
        .map(|t| schema_ref(&event_schema_name(t)))
        .collect();
    schemas.insert(
        "AgentEvent".into(),
        json!({"description": "Any event, told apart by `type`.", "oneOf": one_of}),
    );
    schemas
}

/// A message whose payload is an object of `properties`, `required` among them.
fn message(name: &str, summary: &str, properties: Value, required: &[&str]) -> Value {
    let mut properties = properties;
    properties["type"] = json!({"type": "string", "const": name});
    let mut required: Vec<&str> = required.to_vec();
    required.insert(0, "type");
    json!({
        "name": name,
        "title": name,
        "summary": summary,
        "payload": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        },
    })
}

/// The `executionId`/`conversationId` pair of a message naming a target.
fn target_properties() -> Value {
    json!({
        "executionId": schema_ref("Id"),
        "conversationId": schema_ref("Id"),
    })
}

/// Every message, client and server, by name.
fn messages() -> Map<String, Value> {
    client_messages()
        .into_iter()
        .chain(server_messages())
        .map(|m| (m["name"].as_str().expect("a name").to_owned(), m))
        .collect()
}

/// The messages a client sends.
fn client_messages() -> [Value; 4] {
    [
        subscribe(),
        targeted(message(
            "unsubscribe",
            "Stop receiving a target's events.",
            client_fields(&UNSUBSCRIBE_FIELDS),
            &[],
        )),
        message(
            "ping",
            "Application-level ping; answered with `pong`.",
            json!({}),
            &[],
        ),
        message(
            "auth",
            "A JWT for this connection: first, or a fresh one before the current one expires. \
             Answered with `authenticated`.",
            client_fields(&AUTH_FIELDS),
            &["token"],
        ),
    ]
}

/// The messages the broker sends.
fn server_messages() -> [Value; 8] {
    [
        message(
            "connected",
            "The first message on every connection.",
            json!({"clientId": {"type": "string"}}),
            &["clientId"],
        ),
        targeted(message(
            "subscribed",
            "A subscription is in force; `replayed` events were sent before this message.",
            json!({
                "executionId": schema_ref("Id"),
                "conversationId": schema_ref("Id"),
                "replayed": {"type": "integer", "minimum": 0},
            }),
            &["replayed"],
        )),
        targeted(message(
            "unsubscribed",
            "A subscription ended.",
            target_properties(),
            &[],
        )),
        message(
            "event",
            "One event of a subscribed execution, in seq order, each once.",
            json!({
                "executionId": schema_ref("Id"),
                "event": schema_ref("AgentEvent"),
            }),
            &["executionId", "event"],
        ),
        message(
            "resync",
            "Cluster fallback: drop what you hold of the execution from seq `fromSeq` on; the \
             events that follow replace it.",
            json!({
                "executionId": schema_ref("Id"),
                "fromSeq": {"type": "integer", "minimum": 0},
            }),
            &["executionId", "fromSeq"],
        ),
        error_message(),
        message("pong", "The answer to `ping`.", json!({}), &[]),
        message(
            "authenticated",
            "A token was accepted.",
            json!({"expiresAt": {"type": "string", "format": "date-time"}}),
            &["expiresAt"],
        ),
    ]
}

/// `subscribe`, with an example of a resume.
fn subscribe() -> Value {
    let mut subscribe = targeted(message(
        "subscribe",
        "Start receiving the events of an execution or of every execution of a conversation.",
        client_fields(&SUBSCRIBE_FIELDS),
        &[],
    ));
    subscribe["examples"] = json!([
        {"name": "resume", "payload": {"type": "subscribe", "executionId": "exec-123", "fromSeq": 41}},
    ]);
    subscribe
}

/// `error`, with what its close codes mean and every code.
fn error_message() -> Value {
    let mut error = message(
        "error",
        "A refused message, or the reason the connection is about to close.",
        json!({
            "code": schema_ref("ErrorCode"),
            "message": {"type": "string"},
            "executionId": schema_ref("Id"),
            "conversationId": schema_ref("Id"),
        }),
        &["code", "message"],
    );
    error["description"] = json!(
        "Close codes say what to do: 1001 the broker is shutting down, reconnect and resume \
         with fromSeq; 1009 frame larger than max_frame_bytes; 4000-4499 reconnect with backoff \
         and resume with fromSeq (4002: refresh the token first); 4500-4999 do not reconnect \
         without changing the request. `x-error-codes` lists every code with its advice, and \
         the close code for those that end the connection."
    );
    error["x-error-codes"] = error_codes();
    error
}

/// A message that names exactly one of `executionId` and `conversationId`.
fn targeted(mut message: Value) -> Value {
    message["payload"]["oneOf"] = json!([
        {"required": ["executionId"]},
        {"required": ["conversationId"]},
    ]);
    message
}

/// The schemas of the fields a client message may carry: the parser's own
/// list of allowed fields (`protocol::SUBSCRIBE_FIELDS`, …), so a field the
/// parser starts accepting appears here (untyped until described below).
fn client_fields(allowed: &[&str]) -> Value {
    let fields: Map<String, Value> = allowed
        .iter()
        .filter(|field| **field != "type")
        .map(|field| (field.to_string(), client_field(field)))
        .collect();
    Value::Object(fields)
}

/// The schema of one field of a client message.
fn client_field(field: &str) -> Value {
    match field {
        "executionId" | "conversationId" => schema_ref("Id"),
        "fromSeq" => json!({"type": "integer", "minimum": 0,
            "description": "executions only: first replay every stored event with seq > fromSeq, then go live"}),
        "types" => json!({"type": "array", "items": schema_ref("EventType"),
            "description": "only events of these types"}),
        "agentId" => json!({"type": "string", "description": "only events of this agent"}),
        "department" => json!({"type": "string", "description": "only events of this department"}),
        "token" => json!({"type": "string", "description": "a JWT"}),
        _ => json!({}),
    }
}

/// Every error code with its advice and, when it ends the connection, its close code.
pub fn error_codes() -> Value {
    ErrorCode::ALL
        .iter()
        .map(|code| {
            json!({
                "code": code.as_str(),
                "advice": code.advice(),
                "closeCode": CLOSING.contains(code).then(|| code.close_code()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_events_actors::event::AgentEvent;
    use agent_events_actors::protocol::{self, PublishedEvent, Target};
    use std::collections::BTreeSet;

    #[test]
    fn lists_every_type_and_code() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["EventType"]["enum"].as_array().unwrap().len(), 11);
        for event_type in EventType::ALL {
            let schema = &schemas[event_schema_name(event_type)];
            assert_eq!(schema["properties"]["type"]["const"], event_type.as_str());
        }
        assert_eq!(
            schemas["AgentEvent"]["oneOf"].as_array().unwrap().len(),
            EventType::ALL.len()
        );
        let codes = doc["components"]["messages"]["error"]["x-error-codes"]
            .as_array()
            .unwrap();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(schemas["ErrorCode"]["enum"]
                .as_array()
                .unwrap()
                .contains(&json!(code.as_str())));
        }
        let slow = codes.iter().find(|c| c["code"] == "slow-consumer").unwrap();
        assert_eq!(slow["closeCode"], 4000);
        let bad = codes.iter().find(|c| c["code"] == "bad-json").unwrap();
        assert!(bad["closeCode"].is_null());
        // Every message the channels name is defined, and no other.
        let messages = doc["components"]["messages"].as_object().unwrap();
        assert_eq!(
            messages.len(),
            CLIENT_MESSAGES.len() + SERVER_MESSAGES.len()
        );
        for name in CLIENT_MESSAGES.iter().chain(&SERVER_MESSAGES) {
            assert_eq!(messages[*name]["name"], *name);
        }
    }

    #[test]
    fn client_messages_allow_exactly_the_fields_the_parser_allows() {
        let doc = document();
        let messages = &doc["components"]["messages"];
        for (name, allowed) in [
            ("subscribe", &SUBSCRIBE_FIELDS[..]),
            ("unsubscribe", &UNSUBSCRIBE_FIELDS[..]),
            ("auth", &AUTH_FIELDS[..]),
            ("ping", &["type"][..]),
        ] {
            let documented: BTreeSet<&str> = messages[name]["payload"]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(documented, allowed.iter().copied().collect(), "{name}");
            for (field, schema) in messages[name]["payload"]["properties"].as_object().unwrap() {
                assert_ne!(
                    schema,
                    &json!({}),
                    "{name}.{field} has no schema: describe it"
                );
            }
            // The documented example of each message parses.
            let example = match name {
                "subscribe" => messages[name]["examples"][0]["payload"].to_string(),
                "auth" => r#"{"type":"auth","token":"t"}"#.into(),
                "unsubscribe" => r#"{"type":"unsubscribe","executionId":"e"}"#.into(),
                _ => r#"{"type":"ping"}"#.into(),
            };
            assert!(
                protocol::ClientMessage::parse(&example).is_ok(),
                "{example}"
            );
        }
    }

    /// Checks `frame` against a message's payload schema: its `type`, its
    /// required fields, no field the schema lacks.
    fn conforms(doc: &Value, frame: &str) {
        let frame: Value = serde_json::from_str(frame).unwrap();
        let name = frame["type"].as_str().unwrap();
        assert!(SERVER_MESSAGES.contains(&name), "{name} is undocumented");
        let payload = &doc["components"]["messages"][name]["payload"];
        let properties = payload["properties"].as_object().unwrap();
        for key in frame.as_object().unwrap().keys() {
            assert!(
                properties.contains_key(key),
                "{name}: {key} is undocumented"
            );
        }
        for required in payload["required"].as_array().unwrap() {
            assert!(
                frame.get(required.as_str().unwrap()).is_some(),
                "{name} lacks {required}"
            );
        }
    }

    #[test]
    fn server_frames_match_their_documented_messages() {
        let doc = document();
        let target = Target::Execution("exec-1".into());
        conforms(&doc, &protocol::connected_frame("c1"));
        conforms(&doc, &protocol::subscribed_frame(&target, 3));
        conforms(&doc, &protocol::unsubscribed_frame(&target));
        conforms(&doc, &protocol::resync_frame("exec-1", 7));
        conforms(&doc, &protocol::pong_frame());
        conforms(
            &doc,
            &protocol::authenticated_frame(std::time::SystemTime::now()),
        );
        conforms(
            &doc,
            &protocol::error_frame(ErrorCode::Forbidden, "no", Some(&target)),
        );
        let mut event = AgentEvent::from_producer_json(json!({
            "type": "tool-call", "executionId": "exec-1", "agentId": "a", "toolName": "t",
            "timestamp": "2025-01-01T00:00:00Z",
        }))
        .unwrap();
        event.seq = Some(1);
        let published = PublishedEvent::new(event);
        conforms(&doc, &published.frame);
        // The event inside: every field it carries is in its type's schema.
        let frame: Value = serde_json::from_str(&published.frame).unwrap();
        let schema = &doc["components"]["schemas"]["ToolCall"];
        for key in frame["event"].as_object().unwrap().keys() {
            assert!(schema["properties"].get(key).is_some(), "{key}");
        }
        for required in schema["required"].as_array().unwrap() {
            assert!(frame["event"].get(required.as_str().unwrap()).is_some());
        }
    }

    #[test]
    fn closing_codes_carry_the_close_code_the_session_sends() {
        for code in CLOSING {
            let close = code.close_code();
            assert!(close == 1001 || (4000..5000).contains(&close), "{code:?}");
        }
        assert_eq!(
            event_schema_name(EventType::OrchestrationStart),
            "OrchestrationStart"
        );
    }
}
