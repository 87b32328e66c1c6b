//! The event model: the 11 agent event types, their fields and their rules.
//!
//! This is the one place that says what an event is (docs/protocol.md section 1).
//! Everything else — the HTTP ingest, the typed actor messages, the store,
//! the WebSocket frames — goes through [`AgentEvent`] and [`AgentEvent::validate`].
//! It depends on nothing but serde, serde_json and chrono, so that it can be
//! read (and trusted) on its own.
//!
//! Why the common fields sit beside a flattened [`EventKind`] instead of being
//! repeated in every variant: a consumer reads `executionId`, `seq` and
//! `timestamp` the same way whatever the type, and the output JSON stays a
//! single flat object, as docs/protocol.md shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

mod one_pass;
mod timestamp_text;

/// Longest execution or conversation ID accepted (docs/protocol.md 1).
pub const MAX_ID_LEN: usize = 128;

/// One agent event: the fields every event has, and the fields of its type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentEvent {
    /// The execution this event belongs to; required.
    pub execution_id: String,
    /// The conversation the execution belongs to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// When it happened; the broker fills it in when the producer did not.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_timestamp"
    )]
    pub timestamp: Option<DateTime<Utc>>,
    /// Position in the execution: 1, 2, 3 … Set by the broker only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Free-form data the type does not name (`model`, `inputTokens`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The type and its own fields.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The 11 event types with their own fields, tagged by `type` in kebab-case.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// `orchestration-start`: the master orchestrator begins.
    OrchestrationStart(OrchestrationStart),
    /// `orchestration-complete`: all departments finished.
    OrchestrationComplete(OrchestrationComplete),
    /// `department-start`: a department head begins its assessment.
    DepartmentStart(DepartmentStart),
    /// `department-complete`: a department finished all its work.
    DepartmentComplete(DepartmentComplete),
    /// `agent-start`: an agent begins.
    AgentStart(AgentStart),
    /// `agent-thinking`: an agent reports progress.
    AgentThinking(AgentThinking),
    /// `agent-complete`: an agent finished.
    AgentComplete(AgentComplete),
    /// `tool-call`: an agent invokes a tool.
    ToolCall(ToolCall),
    /// `tool-result`: a tool call completed.
    ToolResult(ToolResult),
    /// `quality-check`: a quality validation happened.
    QualityCheck(QualityCheck),
    /// `review-status`: a department head reviewed a specialist's work.
    ReviewStatus(ReviewStatus),
}

/// The master orchestrator begins processing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestrationStart {
    /// The project the run is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The user's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_prompt: Option<String>,
    /// How hard the orchestrator judged the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<Complexity>,
    /// Departments the orchestrator plans to involve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departments: Option<Vec<String>>,
}

/// All departments finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestrationComplete {
    /// How the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// The run's result, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Totals of the run (durations, tokens, cost …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Map<String, Value>>,
}

/// A department head begins its assessment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepartmentStart {
    /// The department's key, e.g. `story`.
    pub department: String,
    /// Its display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_name: Option<String>,
    /// The department head's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// How relevant the department is to the request, 0..1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub relevance: Option<f64>,
}

/// A department finished all its work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepartmentComplete {
    /// The department's key.
    pub department: String,
    /// What it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Value>>,
    /// Its final quality score, 0..100.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub quality_score: Option<f64>,
    /// Milliseconds it took.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub execution_time: Option<f64>,
}

/// An agent begins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentStart {
    /// The agent.
    pub agent_id: String,
    /// Its display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// The department it works for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// What it was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// An agent reports progress (a thinking step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentThinking {
    /// The agent.
    pub agent_id: String,
    /// What it is thinking.
    pub thought: String,
    /// Its step counter, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// An agent finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentComplete {
    /// The agent.
    pub agent_id: String,
    /// The department it worked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// What it produced, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Whether it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds it took.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub execution_time: Option<f64>,
}

/// An agent invokes a tool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolCall {
    /// The calling agent.
    pub agent_id: String,
    /// The tool.
    pub tool_name: String,
    /// Joins this call to its `tool-result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's input, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

/// A tool call completed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolResult {
    /// The calling agent.
    pub agent_id: String,
    /// The tool.
    pub tool_name: String,
    /// The `tool-call` this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The tool's output, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Whether the call succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds it took.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub execution_time: Option<f64>,
}

/// A quality validation happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QualityCheck {
    /// The score, 0..100.
    #[serde(serialize_with = "number::plain")]
    pub quality_score: f64,
    /// The agent whose work was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The department whose work was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Whether the score met the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    /// The score needed to pass, 0..100.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub threshold: Option<f64>,
    /// What the check found wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issues: Option<Vec<String>>,
}

/// A department head reviewed a specialist's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewStatus {
    /// The reviewing department.
    pub department: String,
    /// The verdict.
    pub status: ReviewVerdict,
    /// The reviewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The specialist whose work was reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialist_id: Option<String>,
    /// What the reviewer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// The reviewer's score, 0..100.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "number::option"
    )]
    pub quality_score: Option<f64>,
}

/// `complexity` of an `orchestration-start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Complexity {
    /// `low`: a simple request, in the orchestrator's judgement.
    Low,
    /// `medium`: in between.
    Medium,
    /// `high`: a hard request, in the orchestrator's judgement.
    High,
}

/// `status` of an `orchestration-complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// `success`: the run succeeded.
    Success,
    /// `failed`: the run failed (AG-UI: `RUN_ERROR`).
    Failed,
    /// `partial`: the run succeeded in part.
    Partial,
}

/// `status` of a `review-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReviewVerdict {
    /// `approved`: the work is accepted.
    Approved,
    /// `revision-requested`: the specialist must rework it.
    RevisionRequested,
    /// `rejected`: the work is refused.
    Rejected,
    /// `pending`: the review has not concluded.
    Pending,
}

/// The type of an event without its fields: for filters and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    /// `orchestration-start`: the master orchestrator begins.
    OrchestrationStart,
    /// `orchestration-complete`: all departments finished.
    OrchestrationComplete,
    /// `department-start`: a department head begins its assessment.
    DepartmentStart,
    /// `department-complete`: a department finished all its work.
    DepartmentComplete,
    /// `agent-start`: an agent begins.
    AgentStart,
    /// `agent-thinking`: an agent reports progress.
    AgentThinking,
    /// `agent-complete`: an agent finished.
    AgentComplete,
    /// `tool-call`: an agent invokes a tool.
    ToolCall,
    /// `tool-result`: a tool call completed.
    ToolResult,
    /// `quality-check`: a quality validation happened.
    QualityCheck,
    /// `review-status`: a department head reviewed a specialist's work.
    ReviewStatus,
}

impl EventType {
    /// Every type, in the order of docs/protocol.md.
    pub const ALL: [EventType; 11] = [
        EventType::OrchestrationStart,
        EventType::OrchestrationComplete,
        EventType::DepartmentStart,
        EventType::DepartmentComplete,
        EventType::AgentStart,
        EventType::AgentThinking,
        EventType::AgentComplete,
        EventType::ToolCall,
        EventType::ToolResult,
        EventType::QualityCheck,
        EventType::ReviewStatus,
    ];

    /// The wire name, e.g. `tool-call`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrchestrationStart => "orchestration-start",
            EventType::OrchestrationComplete => "orchestration-complete",
            EventType::DepartmentStart => "department-start",
            EventType::DepartmentComplete => "department-complete",
            EventType::AgentStart => "agent-start",
            EventType::AgentThinking => "agent-thinking",
            EventType::AgentComplete => "agent-complete",
            EventType::ToolCall => "tool-call",
            EventType::ToolResult => "tool-result",
            EventType::QualityCheck => "quality-check",
            EventType::ReviewStatus => "review-status",
        }
    }

    /// The type named `name` on the wire, if there is one.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// A bit of its own, so that a set of types is one `u16`.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rule an event broke; the `rule` of a validation error, stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The event is not a JSON object.
    NotAnObject,
    /// A required field is missing.
    Required,
    /// A field the type does not have (put it in `metadata`).
    UnknownField,
    /// A value of the wrong JSON type.
    WrongType,
    /// A number outside its range.
    Range,
    /// An ID with characters outside `A-Z a-z 0-9 . _ : -` or of the wrong length.
    IdFormat,
    /// A value outside its list (`type`, `status`, `complexity` …).
    Enum,
    /// A timestamp that is not RFC 3339.
    Timestamp,
    /// `seq` sent by a producer; only the broker assigns it.
    SeqNotAllowed,
    /// The serialized event is larger than the configured limit.
    TooLarge,
    /// A JSON value nested deeper than the parser allows, or otherwise unreadable.
    Malformed,
}

impl Rule {
    /// The wire name, e.g. `unknown-field`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NotAnObject => "not-an-object",
            Rule::Required => "required",
            Rule::UnknownField => "unknown-field",
            Rule::WrongType => "wrong-type",
            Rule::Range => "range",
            Rule::IdFormat => "id-format",
            Rule::Enum => "enum",
            Rule::Timestamp => "timestamp",
            Rule::SeqNotAllowed => "seq-not-allowed",
            Rule::TooLarge => "too-large",
            Rule::Malformed => "malformed",
        }
    }
}

/// Why an event was refused: the field, the rule, and words for a person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationError {
    /// The field, as a path (`qualityScore`, `metadata`, `` for the whole event).
    pub field: String,
    /// The rule it broke.
    pub rule: Rule,
    /// A sentence saying what is wrong.
    pub message: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, rule: Rule, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} ({})", self.message, self.rule.as_str())
        } else {
            write!(
                f,
                "field `{}`: {} ({})",
                self.field,
                self.message,
                self.rule.as_str()
            )
        }
    }
}

impl std::error::Error for ValidationError {}

/// Checks an execution or conversation ID against docs/protocol.md's rule.
pub fn validate_id(field: &str, id: &str) -> Result<(), ValidationError> {
    let ok_len = !id.is_empty() && id.len() <= MAX_ID_LEN;
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            Rule::IdFormat,
            format!("must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
        ))
    }
}

/// Why a producer's event text was refused.
#[derive(Debug)]
pub enum ProducerTextError {
    /// It is not JSON.
    Json(serde_json::Error),
    /// It is JSON, but breaks a rule of the event model.
    Invalid(ValidationError),
}

impl AgentEvent {
    /// An event of `kind` for `execution_id`, with nothing else set.
    pub fn new(execution_id: impl Into<String>, kind: impl Into<EventKind>) -> Self {
        AgentEvent {
            execution_id: execution_id.into(),
            conversation_id: None,
            timestamp: None,
            seq: None,
            metadata: None,
            kind: kind.into(),
        }
    }

    /// Sets the conversation.
    pub fn with_conversation(mut self, conversation_id: impl Into<String>) -> Self {
        self.conversation_id = Some(conversation_id.into());
        self
    }

    /// Sets the metadata object.
    pub fn with_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Reads a producer's event from JSON, then checks every rule.
    ///
    /// Producers never set `seq`; an event that carries one is refused. Use
    /// [`AgentEvent::from_stored_json`] for events that come back from the store.
    pub fn from_producer_json(value: Value) -> Result<AgentEvent, ValidationError> {
        let event = Self::from_json(value, false)?;
        event.validate()?;
        Ok(event)
    }

    /// Reads a producer's event from its JSON text, then checks every rule.
    ///
    /// The same answer as parsing the text into a `Value` and calling
    /// [`AgentEvent::from_producer_json`], in one pass when it can be
    /// (`one_pass`): this is the HTTP ingest's reader.
    pub fn from_producer_text(text: &str) -> Result<AgentEvent, ProducerTextError> {
        let event = match one_pass::read(text) {
            Some(event) => event.validate().map(|()| event),
            None => {
                let value = serde_json::from_str(text).map_err(ProducerTextError::Json)?;
                Self::from_producer_json(value)
            }
        };
        event.map_err(ProducerTextError::Invalid)
    }

    /// Reads an event the broker itself wrote (store, Redis), `seq` included.
    pub fn from_stored_json(value: Value) -> Result<AgentEvent, ValidationError> {
        Self::from_json(value, true)
    }

    fn from_json(value: Value, seq_allowed: bool) -> Result<AgentEvent, ValidationError> {
        let Value::Object(mut map) = value else {
            return Err(ValidationError::new(
                "",
                Rule::NotAnObject,
                "an event must be a JSON object",
            ));
        };
        let execution_id = take_string(&mut map, "executionId")?.ok_or_else(|| {
            ValidationError::new("executionId", Rule::Required, "executionId is required")
        })?;
        let conversation_id = take_string(&mut map, "conversationId")?;
        let timestamp = take_string(&mut map, "timestamp")?
            .map(|text| parse_timestamp(&text))
            .transpose()?;
        let seq = match map.remove("seq") {
            None | Some(Value::Null) => None,
            Some(_) if !seq_allowed => {
                return Err(ValidationError::new(
                    "seq",
                    Rule::SeqNotAllowed,
                    "seq is assigned by the broker; remove it",
                ))
            }
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ValidationError::new("seq", Rule::WrongType, "seq must be a positive integer")
            })?),
        };
        let metadata = match map.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                return Err(ValidationError::new(
                    "metadata",
                    Rule::WrongType,
                    "metadata must be a JSON object",
                ))
            }
        };
        let kind = parse_kind(map)?;
        Ok(AgentEvent {
            execution_id,
            conversation_id,
            timestamp,
            seq,
            metadata,
            kind,
        })
    }

    /// Checks the rules serde cannot: ID format, number ranges.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_id("executionId", &self.execution_id)?;
        if let Some(id) = &self.conversation_id {
            validate_id("conversationId", id)?;
        }
        self.kind.validate()
    }

    /// The type of this event.
    pub fn event_type(&self) -> EventType {
        self.kind.event_type()
    }

    /// The agent this event is about, when its type names one.
    pub fn agent_id(&self) -> Option<&str> {
        self.kind.agent_id()
    }

    /// The department this event is about, when its type names one.
    pub fn department(&self) -> Option<&str> {
        self.kind.department()
    }

    /// `timestamp` as RFC 3339 with milliseconds, the broker's output format.
    pub fn timestamp_text(&self) -> Option<String> {
        self.timestamp.map(format_timestamp)
    }
}

impl EventKind {
    /// The type of this event.
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::OrchestrationStart(_) => EventType::OrchestrationStart,
            EventKind::OrchestrationComplete(_) => EventType::OrchestrationComplete,
            EventKind::DepartmentStart(_) => EventType::DepartmentStart,
            EventKind::DepartmentComplete(_) => EventType::DepartmentComplete,
            EventKind::AgentStart(_) => EventType::AgentStart,
            EventKind::AgentThinking(_) => EventType::AgentThinking,
            EventKind::AgentComplete(_) => EventType::AgentComplete,
            EventKind::ToolCall(_) => EventType::ToolCall,
            EventKind::ToolResult(_) => EventType::ToolResult,
            EventKind::QualityCheck(_) => EventType::QualityCheck,
            EventKind::ReviewStatus(_) => EventType::ReviewStatus,
        }
    }

    /// The agent this event is about, when its type names one.
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            EventKind::DepartmentStart(e) => e.agent_id.as_deref(),
            EventKind::AgentStart(e) => Some(&e.agent_id),
            EventKind::AgentThinking(e) => Some(&e.agent_id),
            EventKind::AgentComplete(e) => Some(&e.agent_id),
            EventKind::ToolCall(e) => Some(&e.agent_id),
            EventKind::ToolResult(e) => Some(&e.agent_id),
            EventKind::QualityCheck(e) => e.agent_id.as_deref(),
            EventKind::ReviewStatus(e) => e.agent_id.as_deref(),
            EventKind::OrchestrationStart(_)
            | EventKind::OrchestrationComplete(_)
            | EventKind::DepartmentComplete(_) => None,
        }
    }

    /// The department this event is about, when its type names one.
    pub fn department(&self) -> Option<&str> {
        match self {
            EventKind::DepartmentStart(e) => Some(&e.department),
            EventKind::DepartmentComplete(e) => Some(&e.department),
            EventKind::AgentStart(e) => e.department.as_deref(),
            EventKind::AgentComplete(e) => e.department.as_deref(),
            EventKind::QualityCheck(e) => e.department.as_deref(),
            EventKind::ReviewStatus(e) => Some(&e.department),
            EventKind::OrchestrationStart(_)
            | EventKind::OrchestrationComplete(_)
            | EventKind::AgentThinking(_)
            | EventKind::ToolCall(_)
            | EventKind::ToolResult(_) => None,
        }
    }

    fn validate(&self) -> Result<(), ValidationError> {
        match self {
            EventKind::DepartmentStart(e) => check_range("relevance", e.relevance, 0.0, 1.0),
            EventKind::DepartmentComplete(e) => {
                check_range("qualityScore", e.quality_score, 0.0, 100.0)?;
                check_duration("executionTime", e.execution_time)
            }
            EventKind::AgentComplete(e) => check_duration("executionTime", e.execution_time),
            EventKind::ToolResult(e) => check_duration("executionTime", e.execution_time),
            EventKind::QualityCheck(e) => {
                check_range("qualityScore", Some(e.quality_score), 0.0, 100.0)?;
                check_range("threshold", e.threshold, 0.0, 100.0)
            }
            EventKind::ReviewStatus(e) => check_range("qualityScore", e.quality_score, 0.0, 100.0),
            EventKind::OrchestrationStart(_)
            | EventKind::OrchestrationComplete(_)
            | EventKind::AgentStart(_)
            | EventKind::AgentThinking(_)
            | EventKind::ToolCall(_) => Ok(()),
        }
    }
}

macro_rules! impl_into_kind {
    ($($variant:ident),*) => {
        $(impl From<$variant> for EventKind {
            fn from(fields: $variant) -> EventKind {
                EventKind::$variant(fields)
            }
        })*
    };
}

impl_into_kind!(
    OrchestrationStart,
    OrchestrationComplete,
    DepartmentStart,
    DepartmentComplete,
    AgentStart,
    AgentThinking,
    AgentComplete,
    ToolCall,
    ToolResult,
    QualityCheck,
    ReviewStatus
);

/// RFC 3339 in UTC with milliseconds: the form every timestamp leaves the broker in.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    timestamp_text::with_text(at, str::to_owned)
}

fn serialize_timestamp<S: serde::Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => timestamp_text::with_text(*at, |text| serializer.serialize_str(text)),
        None => serializer.serialize_none(),
    }
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, ValidationError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            ValidationError::new(
                "timestamp",
                Rule::Timestamp,
                "timestamp must be RFC 3339, e.g. 2025-10-01T12:00:00Z",
            )
        })
}

fn take_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ValidationError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ValidationError::new(
            field,
            Rule::WrongType,
            format!("{field} must be a string"),
        )),
    }
}

/// Reads the type-specific fields, turning serde's errors into field + rule.
fn parse_kind(map: Map<String, Value>) -> Result<EventKind, ValidationError> {
    let type_name = match map.get("type") {
        None | Some(Value::Null) => {
            return Err(ValidationError::new(
                "type",
                Rule::Required,
                "type is required",
            ))
        }
        Some(Value::String(name)) => name.clone(),
        Some(_) => {
            return Err(ValidationError::new(
                "type",
                Rule::WrongType,
                "type must be a string",
            ))
        }
    };
    let Some(event_type) = EventType::parse(&type_name) else {
        return Err(ValidationError::new(
            "type",
            Rule::Enum,
            format!("unknown event type `{type_name}`"),
        ));
    };
    let mut map = map;
    map.remove("type");
    // serde_path_to_error keeps the path of a bad field, which an internally
    // tagged enum would lose in its buffering.
    let mut track = serde_path_to_error::Track::new();
    let fields = serde_path_to_error::Deserializer::new(Value::Object(map), &mut track);
    read_kind(event_type, fields)
        .map_err(|err| classify_serde_error(&track.path().to_string(), &err.to_string()))
}

/// Reads the fields of `event_type` from `fields`: the one place that names
/// the struct of each type for reading, whichever reader calls it.
fn read_kind<'de, D: serde::Deserializer<'de>>(
    event_type: EventType,
    fields: D,
) -> Result<EventKind, D::Error> {
    macro_rules! read_as {
        ($($variant:ident),*) => {
            match event_type {
                $(EventType::$variant => $variant::deserialize(fields).map(EventKind::$variant),)*
            }
        };
    }
    read_as!(
        OrchestrationStart,
        OrchestrationComplete,
        DepartmentStart,
        DepartmentComplete,
        AgentStart,
        AgentThinking,
        AgentComplete,
        ToolCall,
        ToolResult,
        QualityCheck,
        ReviewStatus
    )
}

/// serde reports unknown and missing fields in its message rather than its
/// path; its wording (`unknown field `x``, `missing field `y``) has been stable
/// for years, and a test below pins it.
fn classify_serde_error(path: &str, message: &str) -> ValidationError {
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    if let Some(field) = named("unknown field `") {
        return ValidationError::new(
            field,
            Rule::UnknownField,
            "unknown field; put extra data in `metadata`",
        );
    }
    if let Some(field) = named("missing field `") {
        return ValidationError::new(
            field.clone(),
            Rule::Required,
            format!("{field} is required"),
        );
    }
    let field = if path == "." {
        String::new()
    } else {
        path.to_owned()
    };
    let rule = if message.starts_with("unknown variant") {
        Rule::Enum
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        Rule::WrongType
    } else {
        Rule::Malformed
    };
    ValidationError::new(field, rule, message.to_owned())
}

/// Numbers go out as they came in: `87` stays `87`, `87.5` stays `87.5`,
/// rather than every whole number turning into `87.0`.
mod number {
    use serde::Serializer;

    /// Largest integer an f64 holds exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;

    pub fn plain<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.fract() == 0.0 && value.abs() < EXACT {
            serializer.serialize_i64(*value as i64)
        } else {
            serializer.serialize_f64(*value)
        }
    }

    pub fn option<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => plain(v, serializer),
            None => serializer.serialize_none(),
        }
    }
}

fn check_range(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<(), ValidationError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(ValidationError::new(
            field,
            Rule::Range,
            format!("{field} must be between {min} and {max}"),
        )),
        _ => Ok(()),
    }
}

fn check_duration(field: &str, value: Option<f64>) -> Result<(), ValidationError> {
    check_range(field, value, 0.0, f64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<AgentEvent, ValidationError> {
        AgentEvent::from_producer_json(value)
    }

    #[test]
    fn the_seeds_example_is_valid_and_round_trips() {
        let input = json!({"type":"department-start","executionId":"exec-123","department":"story",
            "departmentName":"Story Department","agentId":"story-head-001","relevance":1.0,
            "timestamp":"2025-10-01T12:00:00Z"});
        let event = parse(input).unwrap();
        assert_eq!(event.event_type(), EventType::DepartmentStart);
        assert_eq!(event.agent_id(), Some("story-head-001"));
        assert_eq!(event.department(), Some("story"));
        let out = serde_json::to_value(&event).unwrap();
        assert_eq!(out["type"], "department-start");
        assert_eq!(out["departmentName"], "Story Department");
        assert_eq!(out["timestamp"], "2025-10-01T12:00:00.000Z");
        assert!(out.get("seq").is_none());
    }

    #[test]
    fn a_stored_event_keeps_its_seq() {
        let event = AgentEvent::from_stored_json(
            json!({"type":"agent-start","executionId":"e","agentId":"a","seq":7}),
        )
        .unwrap();
        assert_eq!(event.seq, Some(7));
        assert_eq!(serde_json::to_value(&event).unwrap()["seq"], 7);
    }

    #[test]
    fn errors_name_the_field_and_the_rule() {
        let cases = [
            (json!([1]), "", Rule::NotAnObject),
            (
                json!({"type":"agent-start","agentId":"a"}),
                "executionId",
                Rule::Required,
            ),
            (json!({"executionId":"e"}), "type", Rule::Required),
            (json!({"type":"nope","executionId":"e"}), "type", Rule::Enum),
            (
                json!({"type":"agent-start","executionId":"e"}),
                "agentId",
                Rule::Required,
            ),
            (
                json!({"type":"agent-start","executionId":"e","agentId":"a","colour":1}),
                "colour",
                Rule::UnknownField,
            ),
            (
                json!({"type":"agent-start","executionId":"e","agentId":5}),
                "agentId",
                Rule::WrongType,
            ),
            (
                json!({"type":"agent-start","executionId":"e f","agentId":"a"}),
                "executionId",
                Rule::IdFormat,
            ),
            (
                json!({"type":"agent-start","executionId":"x".repeat(129),"agentId":"a"}),
                "executionId",
                Rule::IdFormat,
            ),
            (
                json!({"type":"agent-start","executionId":"e","conversationId":"","agentId":"a"}),
                "conversationId",
                Rule::IdFormat,
            ),
            (
                json!({"type":"agent-start","executionId":"e","agentId":"a","seq":3}),
                "seq",
                Rule::SeqNotAllowed,
            ),
            (
                json!({"type":"agent-start","executionId":"e","agentId":"a","timestamp":"yesterday"}),
                "timestamp",
                Rule::Timestamp,
            ),
            (
                json!({"type":"agent-start","executionId":"e","agentId":"a","metadata":[1]}),
                "metadata",
                Rule::WrongType,
            ),
            (
                json!({"type":"quality-check","executionId":"e","qualityScore":101}),
                "qualityScore",
                Rule::Range,
            ),
            (
                json!({"type":"quality-check","executionId":"e","qualityScore":-1}),
                "qualityScore",
                Rule::Range,
            ),
            (
                json!({"type":"department-start","executionId":"e","department":"d","relevance":1.5}),
                "relevance",
                Rule::Range,
            ),
            (
                json!({"type":"review-status","executionId":"e","department":"d","status":"meh"}),
                "status",
                Rule::Enum,
            ),
            (
                json!({"type":"orchestration-start","executionId":"e","complexity":"extreme"}),
                "complexity",
                Rule::Enum,
            ),
            (
                json!({"type":"agent-thinking","executionId":"e","agentId":"a","thought":"t","step":-1}),
                "step",
                Rule::WrongType,
            ),
            (
                json!({"type":"tool-result","executionId":"e","agentId":"a","toolName":"t","executionTime":-3}),
                "executionTime",
                Rule::Range,
            ),
        ];
        for (input, field, rule) in cases {
            let err = parse(input.clone()).expect_err(&input.to_string());
            assert_eq!(
                (err.field.as_str(), err.rule),
                (field, rule),
                "{input}: {err}"
            );
        }
    }

    /// One event of each type, in [`EventType::ALL`]'s order, `type` first,
    /// every field of the type set; no common field.
    pub(super) fn samples() -> Vec<Value> {
        vec![
            json!({"type":"orchestration-start","projectId":"p","userPrompt":"u","complexity":"medium","departments":["story"]}),
            json!({"type":"orchestration-complete","status":"partial","result":{"x":1},"metrics":{"tokens":3}}),
            json!({"type":"department-start","department":"d","departmentName":"D","agentId":"a","relevance":0.5}),
            json!({"type":"department-complete","department":"d","outputs":[1,"two"],"qualityScore":87,"executionTime":5234}),
            json!({"type":"agent-start","agentId":"a","agentName":"A","department":"d","prompt":"p"}),
            json!({"type":"agent-thinking","agentId":"a","thought":"hm \"quoted\" \u{e9}","step":2}),
            json!({"type":"agent-complete","agentId":"a","department":"d","output":"o","success":false,"error":"boom","executionTime":1.5}),
            json!({"type":"tool-call","agentId":"a","toolName":"search","toolCallId":"c1","input":{"q":1}}),
            json!({"type":"tool-result","agentId":"a","toolName":"search","toolCallId":"c1","output":[1],"success":true,"error":"","executionTime":3}),
            json!({"type":"quality-check","qualityScore":70,"agentId":"a","department":"d","passed":false,"threshold":80,"issues":["thin"]}),
            json!({"type":"review-status","department":"d","status":"revision-requested","agentId":"h","specialistId":"s","feedback":"f","qualityScore":60}),
        ]
    }

    #[test]
    fn every_type_parses_with_all_its_fields() {
        let samples = samples();
        assert_eq!(samples.len(), EventType::ALL.len());
        for (mut sample, expected) in samples.into_iter().zip(EventType::ALL) {
            sample["executionId"] = json!("exec-1");
            sample["metadata"] = json!({"model":"m"});
            let event = parse(sample.clone()).unwrap_or_else(|e| panic!("{sample}: {e}"));
            assert_eq!(event.event_type(), expected);
            let mut out = serde_json::to_value(&event).unwrap();
            out.as_object_mut().unwrap().remove("timestamp");
            assert_eq!(out, sample, "round trip of {expected}");
        }
    }

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(EventType::parse("Tool-Call"), None);
    }
}
