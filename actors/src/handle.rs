//! The typed way in for Rust code: the original TypeScript design's helpers (`emitOrchestrationStart`,
//! `emitAgentStart`, …) as methods that send actor messages to the Emitter.
//!
//! Every helper is fire-and-forget, as that design promises ("Event emission
//! failures do NOT break agent execution"): it never blocks, never fails, and
//! a refused event is logged and counted by the Emitter. Callers that need to
//! know the event was accepted (and its seq) use [`EmitterHandle::emit`].

use crate::emitter::{Accepted, Emit, Emitter, Ingest, IngestError, Receipt};
use crate::event::*;
use crate::idempotency::IdempotencyKey;
use crate::protocol::ErrorCode;
use actix::Addr;
use serde_json::{Map, Value};

/// A cheap, cloneable handle to the Emitter for in-process producers.
///
/// # Example
///
/// An Emitter without a store (events are sequenced, buffered for replay and
/// published, not persisted), and two events through the handle: the first
/// waits for its seq, the second is fire-and-forget.
///
/// ```
/// use actix::Actor;
/// use agent_events_actors::emitter::{Emitter, EmitterConfig};
/// use agent_events_actors::event::{AgentEvent, AgentStart, ToolCall};
/// use agent_events_actors::metrics::Metrics;
/// use agent_events_actors::registry::Registry;
/// use agent_events_actors::EmitterHandle;
///
/// actix::System::new().block_on(async {
///     let metrics = Metrics::new();
///     let registry = Registry::new(metrics.clone()).start();
///     let emitter = Emitter::new(EmitterConfig::default(), registry, None, metrics).start();
///     let handle = EmitterHandle::new(emitter).for_conversation("conv-1");
///
///     let start = AgentStart {
///         agent_id: "writer".into(),
///         ..Default::default()
///     };
///     let accepted = handle
///         .emit(AgentEvent::new("exec-1", start))
///         .await
///         .expect("a valid event is accepted");
///     assert_eq!(accepted.seq, Some(1), "the first event of an execution");
///
///     // These helpers never block and never fail; this one gets seq 2.
///     handle.tool_call("exec-1", "writer", "search", "call-1", serde_json::json!({"q": "x"}));
///     let call = ToolCall {
///         agent_id: "writer".into(),
///         tool_name: "search".into(),
///         ..Default::default()
///     };
///     let accepted = handle.emit(AgentEvent::new("exec-1", call)).await.unwrap();
///     assert_eq!(accepted.seq, Some(3), "messages to one actor keep their order");
/// });
/// ```
#[derive(Clone)]
pub struct EmitterHandle {
    emitter: Addr<Emitter>,
    conversation_id: Option<String>,
}

impl EmitterHandle {
    /// A handle sending to `emitter`.
    pub fn new(emitter: Addr<Emitter>) -> Self {
        EmitterHandle {
            emitter,
            conversation_id: None,
        }
    }

    /// The same handle, stamping every event with `conversation_id`.
    pub fn for_conversation(&self, conversation_id: impl Into<String>) -> Self {
        EmitterHandle {
            emitter: self.emitter.clone(),
            conversation_id: Some(conversation_id.into()),
        }
    }

    /// Sends one event and waits until it is accepted and, with a store,
    /// durable (what a 202 means over HTTP); returns its seq.
    pub async fn emit(&self, event: AgentEvent) -> Result<Accepted, IngestError> {
        let receipt = self.ingest(Ingest::new(vec![self.stamp(event)])).await?;
        Ok(receipt.durable().await?[0])
    }

    /// As [`EmitterHandle::emit`], idempotently: the event is named by `key`,
    /// and sending it again under the same key (a retry after a lost answer,
    /// within the idempotency window) answers the seq it already got instead
    /// of storing and delivering it twice. The same key with another event
    /// is refused with `idempotency-key-reused`.
    ///
    /// The key is the caller's: derive it from what makes the event unique
    /// in its work (a run, a step, a tool call), not from a clock, so that
    /// a retry computes the same one.
    ///
    /// ```
    /// use actix::Actor;
    /// use agent_events_actors::emitter::{Emitter, EmitterConfig};
    /// use agent_events_actors::event::{AgentEvent, ToolCall};
    /// use agent_events_actors::idempotency::IdempotencyKey;
    /// use agent_events_actors::metrics::Metrics;
    /// use agent_events_actors::protocol::ErrorCode;
    /// use agent_events_actors::registry::Registry;
    /// use agent_events_actors::EmitterHandle;
    ///
    /// actix::System::new().block_on(async {
    ///     let metrics = Metrics::new();
    ///     let registry = Registry::new(metrics.clone()).start();
    ///     let emitter = Emitter::new(EmitterConfig::default(), registry, None, metrics).start();
    ///     let handle = EmitterHandle::new(emitter);
    ///
    ///     let call = |tool: &str| {
    ///         let fields = ToolCall {
    ///             agent_id: "writer".into(),
    ///             tool_name: tool.into(),
    ///             ..Default::default()
    ///         };
    ///         AgentEvent::new("exec-1", fields)
    ///     };
    ///     let key = IdempotencyKey::new("exec-1:step-4:search").expect("visible ASCII");
    ///     let first = handle.emit_idempotent(key.clone(), call("search")).await.unwrap();
    ///     // The answer was lost, say: the retry gets the same seq, nothing is sent twice.
    ///     let retry = handle.emit_idempotent(key.clone(), call("search")).await.unwrap();
    ///     assert_eq!(first, retry);
    ///     assert_eq!(first.seq, Some(1));
    ///
    ///     let reused = handle.emit_idempotent(key, call("fetch")).await.unwrap_err();
    ///     assert_eq!(reused.code, ErrorCode::IdempotencyKeyReused);
    /// });
    /// ```
    pub async fn emit_idempotent(
        &self,
        key: IdempotencyKey,
        event: AgentEvent,
    ) -> Result<Accepted, IngestError> {
        let receipt = self
            .ingest(Ingest::keyed(key, vec![self.stamp(event)]))
            .await?;
        Ok(receipt.durable().await?[0])
    }

    async fn ingest(&self, batch: Ingest) -> Result<Receipt, IngestError> {
        self.emitter.send(batch).await.map_err(|_| IngestError {
            code: ErrorCode::ShuttingDown,
            index: None,
            validation: None,
            message: "the emitter has stopped".into(),
        })?
    }

    /// Sends one event without waiting (a non-blocking emit).
    pub fn send(&self, event: AgentEvent) {
        self.emitter.do_send(Emit(self.stamp(event)));
    }

    fn stamp(&self, mut event: AgentEvent) -> AgentEvent {
        if event.conversation_id.is_none() {
            event.conversation_id = self.conversation_id.clone();
        }
        event
    }

    fn fire(&self, execution_id: &str, kind: impl Into<EventKind>) {
        self.send(AgentEvent::new(execution_id, kind));
    }

    /// `orchestration-start`: the master orchestrator begins.
    pub fn orchestration_start(&self, execution_id: &str, fields: OrchestrationStart) {
        self.fire(execution_id, fields);
    }

    /// `orchestration-complete`: all departments finished.
    pub fn orchestration_complete(
        &self,
        execution_id: &str,
        status: RunStatus,
        result: Option<Value>,
        metrics: Option<Map<String, Value>>,
    ) {
        let fields = OrchestrationComplete {
            status: Some(status),
            result,
            metrics,
        };
        self.fire(execution_id, fields);
    }

    /// `department-start`: a department head begins its assessment.
    pub fn department_start(&self, execution_id: &str, fields: DepartmentStart) {
        self.fire(execution_id, fields);
    }

    /// `department-complete`: a department finished.
    pub fn department_complete(&self, execution_id: &str, fields: DepartmentComplete) {
        self.fire(execution_id, fields);
    }

    /// `agent-start`: an agent begins.
    pub fn agent_start(&self, execution_id: &str, fields: AgentStart) {
        self.fire(execution_id, fields);
    }

    /// `agent-thinking`: an agent's progress.
    pub fn agent_thinking(&self, execution_id: &str, agent_id: &str, thought: &str, step: u64) {
        let fields = AgentThinking {
            agent_id: agent_id.into(),
            thought: thought.into(),
            step: Some(step),
        };
        self.fire(execution_id, fields);
    }

    /// `agent-complete`: an agent finished.
    pub fn agent_complete(&self, execution_id: &str, fields: AgentComplete) {
        self.fire(execution_id, fields);
    }

    /// `tool-call`: an agent invokes a tool.
    pub fn tool_call(
        &self,
        execution_id: &str,
        agent_id: &str,
        tool_name: &str,
        tool_call_id: &str,
        input: Value,
    ) {
        let fields = ToolCall {
            agent_id: agent_id.into(),
            tool_name: tool_name.into(),
            tool_call_id: Some(tool_call_id.into()),
            input: Some(input),
        };
        self.fire(execution_id, fields);
    }

    /// `tool-result`: a tool call completed.
    pub fn tool_result(&self, execution_id: &str, fields: ToolResult) {
        self.fire(execution_id, fields);
    }

    /// `quality-check`: a quality validation happened.
    pub fn quality_check(&self, execution_id: &str, fields: QualityCheck) {
        self.fire(execution_id, fields);
    }

    /// `review-status`: a department head reviewed a specialist's work.
    pub fn review_status(&self, execution_id: &str, fields: ReviewStatus) {
        self.fire(execution_id, fields);
    }
}
