//! The WebSocket protocol (docs/protocol.md section 2): what clients send, what the
//! broker answers, the stable error codes and close codes.
//!
//! Parsing a client frame never panics and never fails without a code: every
//! way a frame can be wrong maps to one [`ErrorCode`], so a client can react to
//! the code and a person can read the message.

use crate::event::{validate_id, AgentEvent, EventType};
use crate::filter::Filter;
use crate::ws_frame;
use bytes::Bytes;
use bytestring::ByteString;
use serde::Serialize;
use serde_json::{Map, Value};
use std::ops::Range;
use std::sync::Arc;

/// Stable error codes, sent in `{"type":"error","code":…}` and in HTTP error bodies.
///
/// The code tells the client what to do: fix the request (`bad-*`, `invalid-*`,
/// `unknown-*`, `too-many-*`, `*-too-large`), resume with `fromSeq`
/// (`slow-consumer`, `shutting-down`, `heartbeat-timeout`), or retry later
/// (`store-unavailable`, `internal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame or body is not JSON.
    BadJson,
    /// The message `type` is missing or not one the broker knows.
    UnknownType,
    /// A message field is missing, of the wrong type, or not allowed.
    BadRequest,
    /// An execution or conversation ID is missing.
    MissingId,
    /// An ID breaks the charset or length rule.
    InvalidId,
    /// An event broke a rule of docs/protocol.md 1 (the body names field and rule).
    InvalidEvent,
    /// A binary WebSocket frame; the protocol is JSON text only.
    BinaryNotSupported,
    /// A text frame larger than the configured message limit.
    FrameTooLarge,
    /// An HTTP body or batch larger than its limit.
    PayloadTooLarge,
    /// The connection already has as many subscriptions as allowed.
    TooManySubscriptions,
    /// The connection is already subscribed to that execution or conversation.
    AlreadySubscribed,
    /// `fromSeq` points before the oldest event the broker can still replay.
    ReplayUnavailable,
    /// The client read too slowly; it is closed and may resume with `fromSeq`.
    SlowConsumer,
    /// The client was silent longer than the heartbeat timeout.
    HeartbeatTimeout,
    /// The broker is shutting down; reconnect elsewhere or later and resume.
    ShuttingDown,
    /// An event names a different conversation than its execution already has.
    ConversationMismatch,
    /// The store cannot take more events right now; retry later.
    StoreUnavailable,
    /// No such execution (HTTP 404).
    NotFound,
    /// Cluster mode cannot reach Redis to sequence the event; retry later.
    RedisUnavailable,
    /// No valid token where one is required (HTTP 401).
    Unauthorized,
    /// The token does not allow this (HTTP 403; WebSocket: not subscribed).
    Forbidden,
    /// The token expired; send a fresh one, or reconnect with one and resume.
    TokenExpired,
    /// The request's Origin is not allowed (cross-site WebSocket hijacking).
    OriginNotAllowed,
    /// Too many events or messages per second; slow down and retry.
    RateLimited,
    /// Too many connections in total or from this address.
    TooManyConnections,
    /// Something failed inside the broker; the message says what.
    Internal,
    /// An `Idempotency-Key` already names a different batch (HTTP 422).
    IdempotencyKeyReused,
}

impl ErrorCode {
    /// Every code, for the documentation endpoint and docs/reference.md.
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadRequest,
        ErrorCode::MissingId,
        ErrorCode::InvalidId,
        ErrorCode::InvalidEvent,
        ErrorCode::BinaryNotSupported,
        ErrorCode::FrameTooLarge,
        ErrorCode::PayloadTooLarge,
        ErrorCode::TooManySubscriptions,
        ErrorCode::AlreadySubscribed,
        ErrorCode::ReplayUnavailable,
        ErrorCode::SlowConsumer,
        ErrorCode::HeartbeatTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::ConversationMismatch,
        ErrorCode::StoreUnavailable,
        ErrorCode::NotFound,
        ErrorCode::RedisUnavailable,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TokenExpired,
        ErrorCode::OriginNotAllowed,
        ErrorCode::RateLimited,
        ErrorCode::TooManyConnections,
        ErrorCode::Internal,
        ErrorCode::IdempotencyKeyReused,
    ];

    /// The wire name, e.g. `slow-consumer`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::MissingId => "missing-id",
            ErrorCode::InvalidId => "invalid-id",
            ErrorCode::InvalidEvent => "invalid-event",
            ErrorCode::BinaryNotSupported => "binary-not-supported",
            ErrorCode::FrameTooLarge => "frame-too-large",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::TooManySubscriptions => "too-many-subscriptions",
            ErrorCode::AlreadySubscribed => "already-subscribed",
            ErrorCode::ReplayUnavailable => "replay-unavailable",
            ErrorCode::SlowConsumer => "slow-consumer",
            ErrorCode::HeartbeatTimeout => "heartbeat-timeout",
            ErrorCode::ShuttingDown => "shutting-down",
            ErrorCode::ConversationMismatch => "conversation-mismatch",
            ErrorCode::StoreUnavailable => "store-unavailable",
            ErrorCode::NotFound => "not-found",
            ErrorCode::RedisUnavailable => "redis-unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::OriginNotAllowed => "origin-not-allowed",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::TooManyConnections => "too-many-connections",
            ErrorCode::Internal => "internal",
            ErrorCode::IdempotencyKeyReused => "idempotency-key-reused",
        }
    }

    /// What a client should do on this code, in a few words (docs and `/api/ws`).
    pub fn advice(self) -> &'static str {
        match self {
            ErrorCode::SlowConsumer | ErrorCode::HeartbeatTimeout | ErrorCode::ShuttingDown => {
                "connection closed: reconnect with backoff and resubscribe with fromSeq"
            }
            ErrorCode::StoreUnavailable
            | ErrorCode::RedisUnavailable
            | ErrorCode::RateLimited
            | ErrorCode::TooManyConnections
            | ErrorCode::Internal => "retry later with backoff",
            ErrorCode::TokenExpired => "refresh the token, then reconnect and resume with fromSeq",
            ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::OriginNotAllowed => {
                "get a token (or origin) that allows this; do not retry as is"
            }
            ErrorCode::IdempotencyKeyReused => {
                "a retry must repeat the same events; send a new batch under a new key"
            }
            ErrorCode::ReplayUnavailable => {
                "read the missing events over HTTP, then resubscribe with fromSeq = the last one read"
            }
            _ => "fix the request; the connection stays open",
        }
    }

    /// The WebSocket close code sent when this error ends a connection.
    ///
    /// As in Centrifugo, ranges say what to do: 4000–4499 mean "reconnect and
    /// resume with `fromSeq`", 4500–4999 "do not reconnect without a change".
    pub fn close_code(self) -> u16 {
        match self {
            ErrorCode::SlowConsumer => 4000,
            ErrorCode::HeartbeatTimeout => 4001,
            ErrorCode::TokenExpired => 4002,
            ErrorCode::Unauthorized => 4501,
            ErrorCode::ShuttingDown => 1001,
            _ => 4500,
        }
    }
}

/// What a client asked for with a `subscribe` or `unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One execution.
    Execution(Arc<str>),
    /// Every execution of a conversation.
    Conversation(Arc<str>),
}

impl Target {
    /// The JSON field naming this target (`executionId` or `conversationId`).
    pub fn field(&self) -> &'static str {
        match self {
            Target::Execution(_) => "executionId",
            Target::Conversation(_) => "conversationId",
        }
    }

    /// The ID.
    pub fn id(&self) -> &str {
        match self {
            Target::Execution(id) | Target::Conversation(id) => id,
        }
    }

    fn insert_into(&self, object: &mut Map<String, Value>) {
        object.insert(self.field().into(), Value::String(self.id().into()));
    }
}

/// A message from a client, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Start receiving events of a target.
    Subscribe {
        /// The execution or conversation.
        target: Target,
        /// Replay events with `seq` greater than this first (executions only).
        from_seq: Option<u64>,
        /// Only events that pass this filter.
        filter: Filter,
    },
    /// Stop receiving events of a target.
    Unsubscribe {
        /// The execution or conversation.
        target: Target,
    },
    /// Application-level ping, answered with `pong`.
    Ping,
    /// A token for this connection (first, or a fresh one before expiry).
    Auth {
        /// The JWT.
        token: String,
    },
}

/// A client message that could not be used: the code, words, and the target if known.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    /// The stable code.
    pub code: ErrorCode,
    /// Words for a person.
    pub message: String,
}

impl ClientError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
        }
    }
}

/// Every field a `subscribe` may carry; any other is a `bad-request`.
pub const SUBSCRIBE_FIELDS: [&str; 7] = [
    "type",
    "executionId",
    "conversationId",
    "fromSeq",
    "types",
    "agentId",
    "department",
];
/// Every field an `unsubscribe` may carry.
pub const UNSUBSCRIBE_FIELDS: [&str; 3] = ["type", "executionId", "conversationId"];

/// Every field an `auth` may carry.
pub const AUTH_FIELDS: [&str; 2] = ["type", "token"];

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<ClientMessage, ClientError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ClientError::new(ErrorCode::BadJson, format!("not JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(ClientError::new(
                ErrorCode::BadJson,
                "a message must be a JSON object",
            ));
        };
        match object.get("type").and_then(Value::as_str) {
            Some("subscribe") => parse_subscribe(&object),
            Some("unsubscribe") => {
                reject_unknown_fields(&object, &UNSUBSCRIBE_FIELDS)?;
                Ok(ClientMessage::Unsubscribe {
                    target: parse_target(&object)?,
                })
            }
            Some("ping") => Ok(ClientMessage::Ping),
            Some("auth") => {
                reject_unknown_fields(&object, &AUTH_FIELDS)?;
                match object.get("token") {
                    Some(Value::String(token)) => Ok(ClientMessage::Auth {
                        token: token.clone(),
                    }),
                    _ => Err(ClientError::new(
                        ErrorCode::BadRequest,
                        "auth needs a string `token`",
                    )),
                }
            }
            Some(other) => Err(ClientError::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown message type `{other}`; expected subscribe, unsubscribe, ping or auth"
                ),
            )),
            None => Err(ClientError::new(
                ErrorCode::UnknownType,
                "a message needs a string `type`",
            )),
        }
    }
}

fn parse_subscribe(object: &Map<String, Value>) -> Result<ClientMessage, ClientError> {
    reject_unknown_fields(object, &SUBSCRIBE_FIELDS)?;
    let target = parse_target(object)?;
    let from_seq = match object.get("fromSeq") {
        None | Some(Value::Null) => None,
        Some(value) => Some(value.as_u64().ok_or_else(|| {
            ClientError::new(ErrorCode::BadRequest, "fromSeq must be an integer >= 0")
        })?),
    };
    if from_seq.is_some() && matches!(target, Target::Conversation(_)) {
        return Err(ClientError::new(
            ErrorCode::BadRequest,
            "fromSeq works with executionId only (seq is per execution)",
        ));
    }
    let types = match object.get("types") {
        None | Some(Value::Null) => None,
        Some(Value::Array(names)) => Some(parse_types(names)?),
        Some(_) => {
            return Err(ClientError::new(
                ErrorCode::BadRequest,
                "types must be an array of event type names",
            ))
        }
    };
    let filter = Filter::new(
        types,
        optional_string(object, "agentId")?,
        optional_string(object, "department")?,
    );
    Ok(ClientMessage::Subscribe {
        target,
        from_seq,
        filter,
    })
}

fn parse_types(names: &[Value]) -> Result<Vec<EventType>, ClientError> {
    names
        .iter()
        .map(|name| {
            name.as_str().and_then(EventType::parse).ok_or_else(|| {
                ClientError::new(
                    ErrorCode::BadRequest,
                    format!("types: `{name}` is not an event type"),
                )
            })
        })
        .collect()
}

fn reject_unknown_fields(object: &Map<String, Value>, known: &[&str]) -> Result<(), ClientError> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(ClientError::new(
            ErrorCode::BadRequest,
            format!("unknown field `{key}`; allowed: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn optional_string(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ClientError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ClientError::new(
            ErrorCode::BadRequest,
            format!("{field} must be a string"),
        )),
    }
}

fn parse_target(object: &Map<String, Value>) -> Result<Target, ClientError> {
    let execution = optional_string(object, "executionId")?;
    let conversation = optional_string(object, "conversationId")?;
    let (field, id, target): (_, _, fn(Arc<str>) -> Target) = match (execution, conversation) {
        (Some(id), None) => ("executionId", id, Target::Execution),
        (None, Some(id)) => ("conversationId", id, Target::Conversation),
        (None, None) => {
            return Err(ClientError::new(
                ErrorCode::MissingId,
                "executionId or conversationId is required",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(ClientError::new(
                ErrorCode::BadRequest,
                "give executionId or conversationId, not both",
            ))
        }
    };
    validate_id(field, &id).map_err(|e| ClientError::new(ErrorCode::InvalidId, e.to_string()))?;
    Ok(target(id.into()))
}

/// Room reserved for an event's frame before serializing it: most events
/// fit, and a larger one grows the buffer as it is written.
const FRAME_CAPACITY: usize = 512;

/// An event after the broker accepted it: sequenced, stamped, and serialized
/// once as the `event` message every subscriber receives.
///
/// Why the frame is built here, once: a fan-out to a thousand sessions then
/// clones a reference-counted buffer a thousand times instead of running
/// serde a thousand times. The WebSocket frame around it is the same for
/// every subscriber too (see [`crate::ws_frame`]), so it is encoded here as
/// well, in the same buffer: `frame` is the tail of `wire`.
#[derive(Debug)]
pub struct PublishedEvent {
    /// The event, with `seq` and `timestamp` set.
    pub event: AgentEvent,
    /// Its `seq`, copied out of `event` for the hot path.
    pub seq: u64,
    /// `{"type":"event","executionId":…,"event":{…}}`, ready to send.
    pub frame: ByteString,
    /// `frame` as a WebSocket text frame, header included: what a Session writes.
    pub wire: Bytes,
    /// Where the event's own JSON lies in `frame`: what the store keeps.
    event_json: Range<usize>,
}

impl PublishedEvent {
    /// Wraps an event that has its `seq` and `timestamp`, building its frame.
    ///
    /// # Panics
    /// If `event.seq` is unset: only sequenced events are published.
    pub fn new(event: AgentEvent) -> Arc<PublishedEvent> {
        let seq = event.seq.expect("a published event has a seq");
        // `{"type":"event","executionId":…,"event":…}`, written by hand so
        // that the event's own JSON is known to lie between `start` and `end`.
        let (mut start, mut end) = (0, 0);
        let (wire, header_len) = ws_frame::text_with(FRAME_CAPACITY, |buffer| {
            let payload_start = buffer.len();
            buffer.extend_from_slice(br#"{"type":"event","executionId":"#);
            serde_json::to_writer(&mut *buffer, &event.execution_id).expect("a string serializes");
            buffer.extend_from_slice(br#","event":"#);
            start = buffer.len() - payload_start;
            serde_json::to_writer(&mut *buffer, &event).expect("an event always serializes");
            end = buffer.len() - payload_start;
            buffer.push(b'}');
        });
        let frame =
            ByteString::try_from(wire.slice(header_len..)).expect("serde_json writes UTF-8");
        Arc::new(PublishedEvent {
            event,
            seq,
            frame,
            wire,
            event_json: start..end,
        })
    }

    /// The event's own JSON, as `serde_json::to_string(&self.event)` would
    /// write it: a slice of the frame, serialized once for the store too.
    pub fn event_json(&self) -> &str {
        &self.frame[self.event_json.clone()]
    }

    /// The execution this event belongs to.
    pub fn execution_id(&self) -> &str {
        &self.event.execution_id
    }
}

/// `{"type":"connected","clientId":…}`.
pub fn connected_frame(client_id: &str) -> ByteString {
    frame(serde_json::json!({"type": "connected", "clientId": client_id}))
}

/// `{"type":"resync","executionId":…,"fromSeq":N}`: drop what you hold of
/// the execution from seq N on; the events that follow replace it.
pub fn resync_frame(execution_id: &str, from_seq: u64) -> ByteString {
    frame(serde_json::json!({"type": "resync", "executionId": execution_id, "fromSeq": from_seq}))
}

/// `{"type":"subscribed","executionId"|"conversationId":…,"replayed":N}`.
pub fn subscribed_frame(target: &Target, replayed: usize) -> ByteString {
    let mut object = Map::new();
    object.insert("type".into(), "subscribed".into());
    target.insert_into(&mut object);
    object.insert("replayed".into(), replayed.into());
    frame(Value::Object(object))
}

/// `{"type":"unsubscribed","executionId"|"conversationId":…}`.
pub fn unsubscribed_frame(target: &Target) -> ByteString {
    let mut object = Map::new();
    object.insert("type".into(), "unsubscribed".into());
    target.insert_into(&mut object);
    frame(Value::Object(object))
}

/// `{"type":"authenticated","expiresAt":…}`: a token was accepted.
pub fn authenticated_frame(expires_at: std::time::SystemTime) -> ByteString {
    let expires: chrono::DateTime<chrono::Utc> = expires_at.into();
    frame(
        serde_json::json!({"type": "authenticated", "expiresAt": crate::event::format_timestamp(expires)}),
    )
}

/// `{"type":"pong"}`.
pub fn pong_frame() -> ByteString {
    frame(serde_json::json!({"type": "pong"}))
}

/// `{"type":"error","code":…,"message":…}`, naming the target when there is one.
pub fn error_frame(code: ErrorCode, message: &str, target: Option<&Target>) -> ByteString {
    let mut object = Map::new();
    object.insert("type".into(), "error".into());
    object.insert("code".into(), code.as_str().into());
    object.insert("message".into(), message.into());
    if let Some(target) = target {
        target.insert_into(&mut object);
    }
    frame(Value::Object(object))
}

fn frame(value: Value) -> ByteString {
    value.to_string().into()
}

/// Where an accepted event landed: an item of a producer's receipt (the
/// 202's `events`, `EmitterHandle::emit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The seq it was given; `None` for an `agent-thinking` coalesced by its
    /// execution's rate limit (it goes out later, or a newer thought that
    /// counts it in `metadata.coalesced` goes out instead).
    pub seq: Option<u64>,
}

/// Events for the unit tests of the modules that pass them around.
#[cfg(test)]
pub(crate) mod test_events {
    use super::PublishedEvent;
    use crate::event::{AgentEvent, AgentStart};
    use std::sync::Arc;

    /// An `agent-start` of `execution` with `seq`, stamped now: an event
    /// whose execution and seq are all that matters.
    pub(crate) fn agent_start(execution: &str, seq: u64) -> Arc<PublishedEvent> {
        PublishedEvent::new(agent_start_event(execution, seq))
    }

    /// The same event before it is published, for a test to change first.
    pub(crate) fn agent_start_event(execution: &str, seq: u64) -> AgentEvent {
        let mut event = AgentEvent::new(
            execution,
            AgentStart {
                agent_id: "a".into(),
                ..Default::default()
            },
        );
        event.seq = Some(seq);
        event.timestamp = Some(chrono::Utc::now());
        event
    }

    /// The seqs of `events`, in order.
    pub(crate) fn seqs(events: &[Arc<PublishedEvent>]) -> Vec<u64> {
        events.iter().map(|event| event.seq).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        ClientMessage::parse(text).unwrap_err().code
    }

    #[test]
    fn the_seeds_subscribe_parses() {
        let msg =
            ClientMessage::parse(r#"{"type": "subscribe", "executionId": "exec-123"}"#).unwrap();
        assert_eq!(
            msg,
            ClientMessage::Subscribe {
                target: Target::Execution("exec-123".into()),
                from_seq: None,
                filter: Filter::default(),
            }
        );
    }

    #[test]
    fn subscribe_with_replay_and_filters() {
        let msg = ClientMessage::parse(
            r#"{"type":"subscribe","executionId":"e","fromSeq":5,"types":["tool-call"],"agentId":"a","department":"d"}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe {
            from_seq, filter, ..
        } = msg
        else {
            panic!("not a subscribe")
        };
        assert_eq!(from_seq, Some(5));
        assert_eq!(
            filter,
            Filter::new(
                Some(vec![EventType::ToolCall]),
                Some("a".into()),
                Some("d".into())
            )
        );
    }

    #[test]
    fn every_bad_input_has_its_code() {
        assert_eq!(code_of("{nope"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code_of(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"executionId":"e"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"type":"subscribe"}"#), ErrorCode::MissingId);
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":"a b"}"#),
            ErrorCode::InvalidId
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":""}"#),
            ErrorCode::InvalidId
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":7}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":"e","conversationId":"c"}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","conversationId":"c","fromSeq":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":"e","fromSeq":-1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":"e","types":["x"]}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code_of(r#"{"type":"subscribe","executionId":"e","fromseq":1}"#),
            ErrorCode::BadRequest
        );
        assert_eq!(code_of(r#"{"type":"unsubscribe"}"#), ErrorCode::MissingId);
    }

    #[test]
    fn the_event_frame_is_the_seeds_message() {
        let mut event = AgentEvent::from_producer_json(
            serde_json::json!({"type":"agent-start","executionId":"exec-123","agentId":"a"}),
        )
        .unwrap();
        event.seq = Some(1);
        let published = PublishedEvent::new(event);
        let value: Value = serde_json::from_str(&published.frame).unwrap();
        assert_eq!(value["type"], "event");
        assert_eq!(value["executionId"], "exec-123");
        assert_eq!(value["event"]["seq"], 1);
        assert_eq!(value["event"]["type"], "agent-start");
        assert_eq!(
            published.event_json(),
            serde_json::to_string(&published.event).unwrap()
        );
        assert_eq!(&published.wire[2..], published.frame.as_bytes());
    }

    #[test]
    fn escaped_text_keeps_the_event_json_in_place() {
        let mut event = AgentEvent::from_producer_json(serde_json::json!({
            "type": "agent-thinking", "executionId": "exec-1", "agentId": "a",
            "thought": "a \"quoted\" line\nand another, é}",
        }))
        .unwrap();
        event.seq = Some(7);
        let published = PublishedEvent::new(event);
        let value: Value = serde_json::from_str(&published.frame).unwrap();
        assert_eq!(
            value["event"]["thought"],
            "a \"quoted\" line\nand another, é}"
        );
        assert_eq!(
            published.event_json(),
            serde_json::to_string(&published.event).unwrap()
        );
    }

    #[test]
    fn close_codes_group_by_what_to_do() {
        for code in ErrorCode::ALL {
            let close = code.close_code();
            assert!(close == 1001 || (4000..5000).contains(&close), "{code:?}");
        }
        assert_eq!(ErrorCode::SlowConsumer.close_code(), 4000);
    }
}
