//! The Agent actor: one specialist of one department in one execution, which
//! thinks, calls tools and drafts its deliverable, and revises it on request.

use super::{
    display_name, millis_since, rounded, Department, Execution, Prng, Specialist, Tally, Trouble,
};
use crate::event::{AgentComplete, AgentEvent, AgentStart, ToolResult};
use actix::prelude::*;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Produce a first draft; answered once its `agent-complete` is emitted.
#[derive(Message)]
#[rtype(result = "AgentReport")]
pub(crate) struct PerformTask {
    /// What the department head asks for.
    pub task: String,
    /// The department's quality threshold: the bar the agent aims at.
    pub bar: f64,
    /// The unhappy paths this agent is to walk.
    pub trouble: Trouble,
}

/// Rework the last draft after a review; answered once its `agent-complete` is emitted.
#[derive(Message)]
#[rtype(result = "AgentReport")]
pub(crate) struct ReviseWork {
    /// What the reviewer asked for.
    pub feedback: String,
}

/// How one run of an agent ended.
#[derive(Debug, Clone)]
pub(crate) struct AgentReport {
    /// Whether it produced its deliverable.
    pub success: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// The draft's quality as a check scores it, 0..100.
    pub quality: f64,
    /// What it produced (`null` when it failed).
    pub output: Value,
    /// What the run cost.
    pub tally: Tally,
}

/// Chance that a tool call fails on its first attempt beyond the planned
/// trouble: real tools time out now and then.
const TOOL_FAILURE_CHANCE: f64 = 0.08;
/// Chance that a first draft falls short of the bar on its own.
const WEAK_DRAFT_CHANCE: f64 = 0.12;
/// Chance that `agent-complete` carries the model usage in `metadata`: not
/// every runner reports it, and a monitor must cope with both.
const USAGE_REPORT_CHANCE: f64 = 0.7;
/// Attempts at one tool call: a careful runner retries once, then gives up.
const TOOL_ATTEMPTS: u32 = 2;
/// The best score any draft reaches.
const MAX_QUALITY: f64 = 98.0;
/// Models, with their price in USD per million input and output tokens.
const MODELS: [(&str, f64, f64); 3] = [
    ("anthropic/claude-sonnet-4.5", 3.0, 15.0),
    ("openai/gpt-4.1-mini", 0.4, 1.6),
    ("google/gemini-2.5-flash", 0.3, 2.5),
];
/// How tool calls fail.
const TOOL_ERRORS: [&str; 4] = [
    "upstream timeout after 30s",
    "rate limited (429), retry after 2s",
    "invalid response: truncated JSON",
    "connection reset by peer",
];

/// The Agent actor; see the module documentation.
pub(crate) struct Agent {
    execution: Execution,
    id: String,
    department: &'static Department,
    specialist: &'static Specialist,
    prng: Prng,
    /// The next `step` of `agent-thinking`: one agent's steps count on across
    /// its revisions.
    next_step: u64,
    /// Numbers this agent's tool calls, so that every `toolCallId` is unique
    /// in the execution.
    next_call: u64,
    /// The current draft's number, 0 before the first.
    draft: u32,
    /// The current draft's quality.
    quality: f64,
    /// The bar of the task, which a revision always clears.
    bar: f64,
}

impl Agent {
    /// A specialist of `department` working on `execution`.
    pub fn new(
        execution: Execution,
        department: &'static Department,
        specialist: &'static Specialist,
        prng: Prng,
    ) -> Agent {
        Agent {
            execution,
            id: format!("{}-{}-001", department.key, specialist.role),
            department,
            specialist,
            prng,
            next_step: 0,
            next_call: 0,
            draft: 0,
            quality: 0.0,
            bar: 0.0,
        }
    }

    /// Its agent ID, e.g. `story-plot-architect-001`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Draws the first draft: a thought and a tool call per tool, a last thought.
    fn first_draft(&mut self, msg: PerformTask) -> Script {
        self.bar = msg.bar;
        let mut script = self.script(msg.task.clone());
        let input = json!({"brief": msg.task, "deliverable": self.specialist.deliverable});
        let work = self.specialist.tools.iter().zip(self.specialist.thoughts);
        for (index, (&tool, thought)) in work.enumerate() {
            self.think(&mut script, thought);
            // The planned trouble hits the first tool: that is where a run stalls.
            let trouble = if index == 0 {
                msg.trouble
            } else {
                Trouble::default()
            };
            if let Err(error) = self.use_tool(&mut script, tool, input.clone(), trouble) {
                return self.give_up(script, tool, error);
            }
        }
        self.think(&mut script, self.specialist.thoughts[2]);
        let weak = msg.trouble.weak_draft || self.prng.chance(WEAK_DRAFT_CHANCE);
        self.quality = if weak {
            self.bar - self.prng.between(4.0, 14.0)
        } else {
            (self.bar + self.prng.between(2.0, 17.0)).min(MAX_QUALITY)
        };
        self.finish_draft(script)
    }

    /// Draws a revision: read the feedback, rework with the second tool, improve.
    fn revision(&mut self, msg: ReviseWork) -> Script {
        let deliverable = self.specialist.deliverable;
        let mut script = self.script(format!("Revise the {deliverable}: {}", msg.feedback));
        self.think(&mut script, format!("Reading the review: {}", msg.feedback));
        let tool = self.specialist.tools[1];
        let input = json!({"feedback": msg.feedback, "draft": self.draft});
        if let Err(error) = self.use_tool(&mut script, tool, input, Trouble::default()) {
            return self.give_up(script, tool, error);
        }
        let next = self.draft + 1;
        self.think(
            &mut script,
            format!("Reworking the {deliverable} into draft {next}"),
        );
        // A revision clears the bar, so that a review round ends in approval.
        let improved = self.quality + self.prng.between(6.0, 14.0);
        let floor = self.bar + self.prng.between(2.0, 8.0);
        self.quality = improved.max(floor).min(MAX_QUALITY);
        self.finish_draft(script)
    }

    /// A script for one run, with its model usage drawn.
    fn script(&mut self, prompt: String) -> Script {
        let usage = Usage::draw(&mut self.prng);
        let tally = Tally {
            agent_runs: 1,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: usage.cost_usd,
            ..Tally::default()
        };
        Script {
            prompt,
            steps: Vec::new(),
            outcome: Err("no draft yet".into()),
            quality: 0.0,
            usage,
            tally,
        }
    }

    fn think(&mut self, script: &mut Script, thought: impl Into<String>) {
        script.steps.push(Step::Think {
            step: self.next_step,
            thought: thought.into(),
        });
        self.next_step += 1;
    }

    /// Calls `tool`, retrying once after a failure; `Err` when every attempt failed.
    fn use_tool(
        &mut self,
        script: &mut Script,
        tool: &'static str,
        input: Value,
        trouble: Trouble,
    ) -> Result<(), String> {
        let mut attempt = 1;
        loop {
            let flaky =
                attempt == 1 && (trouble.flaky_tool || self.prng.chance(TOOL_FAILURE_CHANCE));
            let fails = trouble.broken_tool || flaky;
            let result = if fails {
                Err(self.prng.pick(&TOOL_ERRORS).to_string())
            } else {
                Ok(json!({"source": tool, "items": self.prng.count(3, 12)}))
            };
            self.next_call += 1;
            script.tally.tool_calls += 1;
            script.tally.failed_tool_calls += u64::from(fails);
            script.steps.push(Step::Call(PlannedCall {
                tool,
                call_id: format!("tc-{}-{}", self.id, self.next_call),
                input: input.clone(),
                result: result.clone(),
                beats: self.prng.count(1, 3) as u32,
            }));
            match result {
                Ok(_) => return Ok(()),
                Err(error) if attempt == TOOL_ATTEMPTS => {
                    return Err(format!("{tool} failed {attempt} times: {error}"))
                }
                Err(error) => self.think(script, format!("{tool} failed ({error}); retrying once")),
            }
            attempt += 1;
        }
    }

    fn give_up(&mut self, mut script: Script, tool: &str, error: String) -> Script {
        let deliverable = self.specialist.deliverable;
        self.think(
            &mut script,
            format!("Cannot produce the {deliverable} without {tool}; reporting the failure"),
        );
        script.quality = rounded(self.prng.between(15.0, 40.0), 0);
        script.outcome = Err(error);
        script
    }

    fn finish_draft(&mut self, mut script: Script) -> Script {
        self.quality = rounded(self.quality, 0);
        self.draft += 1;
        script.quality = self.quality;
        script.outcome = Ok(json!({
            "deliverable": self.specialist.deliverable,
            "draft": self.draft,
            "artifact": format!("{}/{}/v{}", self.department.key, self.specialist.role, self.draft),
        }));
        script
    }

    fn play(&self, script: Script) -> ResponseFuture<AgentReport> {
        Box::pin(script.play(self.execution.clone(), self.id.clone(), self.department.key))
    }
}

impl Actor for Agent {
    type Context = Context<Self>;
}

impl Handler<PerformTask> for Agent {
    type Result = ResponseFuture<AgentReport>;

    fn handle(&mut self, msg: PerformTask, _: &mut Self::Context) -> Self::Result {
        let script = self.first_draft(msg);
        self.play(script)
    }
}

impl Handler<ReviseWork> for Agent {
    type Result = ResponseFuture<AgentReport>;

    fn handle(&mut self, msg: ReviseWork, _: &mut Self::Context) -> Self::Result {
        let script = self.revision(msg);
        self.play(script)
    }
}

/// One run of an agent, drawn in full before it is played at the execution's
/// pace: the randomness stays apart from the timing.
struct Script {
    /// The `prompt` of its `agent-start`.
    prompt: String,
    steps: Vec<Step>,
    /// The deliverable, or why there is none.
    outcome: Result<Value, String>,
    quality: f64,
    usage: Usage,
    tally: Tally,
}

enum Step {
    Think { step: u64, thought: String },
    Call(PlannedCall),
}

/// A tool call and the result it will get.
struct PlannedCall {
    tool: &'static str,
    call_id: String,
    input: Value,
    result: Result<Value, String>,
    /// How many beats the tool takes.
    beats: u32,
}

impl Script {
    async fn play(self, execution: Execution, agent_id: String, department: &str) -> AgentReport {
        let started = Instant::now();
        let (emitter, id) = (&execution.emitter, execution.id.as_str());
        let start = AgentStart {
            agent_name: Some(display_name(&agent_id)),
            agent_id: agent_id.clone(),
            department: Some(department.into()),
            prompt: Some(self.prompt.clone()),
        };
        emitter.agent_start(id, start);
        for step in self.steps {
            execution.pause(1).await;
            match step {
                Step::Think { step, thought } => {
                    emitter.agent_thinking(id, &agent_id, &thought, step)
                }
                Step::Call(call) => call.play(&execution, &agent_id).await,
            }
        }
        execution.pause(1).await;
        let elapsed = millis_since(started);
        let (output, error) = split(self.outcome);
        let complete = AgentComplete {
            agent_id,
            department: Some(department.into()),
            output: output.clone(),
            success: Some(error.is_none()),
            error: error.clone(),
            execution_time: Some(elapsed),
        };
        match self.usage.metadata(elapsed) {
            Some(usage) => emitter.send(AgentEvent::new(id, complete).with_metadata(usage)),
            None => emitter.agent_complete(id, complete),
        }
        AgentReport {
            success: error.is_none(),
            error,
            quality: self.quality,
            output: output.unwrap_or(Value::Null),
            tally: self.tally,
        }
    }
}

impl PlannedCall {
    async fn play(self, execution: &Execution, agent_id: &str) {
        let (emitter, id) = (&execution.emitter, execution.id.as_str());
        emitter.tool_call(id, agent_id, self.tool, &self.call_id, self.input);
        let started = Instant::now();
        execution.pause(self.beats).await;
        let (output, error) = split(self.result);
        let result = ToolResult {
            agent_id: agent_id.into(),
            tool_name: self.tool.into(),
            tool_call_id: Some(self.call_id),
            success: Some(error.is_none()),
            output,
            error,
            execution_time: Some(millis_since(started)),
        };
        emitter.tool_result(id, result);
    }
}

/// `output` and `error` of an event, from a result.
fn split(result: Result<Value, String>) -> (Option<Value>, Option<String>) {
    match result {
        Ok(output) => (Some(output), None),
        Err(error) => (None, Some(error)),
    }
}

/// What one run's model calls used.
struct Usage {
    model: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    /// Whether the runner reports it in `metadata`.
    reported: bool,
}

impl Usage {
    fn draw(prng: &mut Prng) -> Usage {
        let &(model, input_price, output_price) = prng.pick(&MODELS);
        let input_tokens = prng.count(900, 4200);
        let output_tokens = prng.count(250, 1600);
        let cost = (input_tokens as f64 * input_price + output_tokens as f64 * output_price) / 1e6;
        Usage {
            model,
            input_tokens,
            output_tokens,
            cost_usd: rounded(cost, 6),
            reported: prng.chance(USAGE_REPORT_CHANCE),
        }
    }

    /// The usage in docs/protocol.md's `metadata` keys, when it is reported.
    fn metadata(&self, duration_ms: f64) -> Option<Map<String, Value>> {
        if !self.reported {
            return None;
        }
        let keys = [
            ("model", json!(self.model)),
            ("inputTokens", json!(self.input_tokens)),
            ("outputTokens", json!(self.output_tokens)),
            ("costUsd", json!(self.cost_usd)),
            ("durationMs", json!(duration_ms as u64)),
        ];
        Some(keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}
