//! The Orchestrator actor: plans each execution, hands every involved
//! department to a head of its own, and reports the run's status and metrics.

use super::department_head::{DepartmentHead, DepartmentReport, RunDepartment};
use super::{mean, millis_since, rounded, score, DemoConfig, Department, Execution, Prng, Project};
use super::{Tally, Trouble, DEPARTMENTS, PROJECTS};
use crate::event::{OrchestrationStart, RunStatus};
use crate::EmitterHandle;
use actix::prelude::*;
use futures_util::future::join_all;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Run one execution; answered with its status once its
/// `orchestration-complete` has been sent to the Emitter.
///
/// Every event of the run is sent before the answer, and the Emitter's mailbox
/// is one queue: a message sent to the Emitter after the answer (a
/// `ReadBuffer`, say) finds the whole execution sequenced.
#[derive(Message)]
#[rtype(result = "RunStatus")]
pub struct RunExecution {
    /// The execution's ID; a fresh one, since seqs continue where an ID left off.
    pub execution_id: String,
}

/// Start the next execution of the continuous run.
#[derive(Message)]
#[rtype(result = "()")]
struct NextExecution {
    /// Whether its end starts the next one. An overlapping execution is not
    /// chained, which keeps the overlap to a couple at a time.
    chained: bool,
}

/// Chance that a chained execution gets company: a second one starting
/// while it runs, so that a viewer sees two executions interleave.
const OVERLAP_CHANCE: f64 = 0.3;
/// Executions at once at most in the continuous run.
const MAX_IN_FLIGHT: usize = 2;
/// Beats between the end of one chained execution and the start of the next,
/// so that a viewer can read the end of a run.
const GAP_BEATS: u32 = 6;
/// Beats into a chained execution before an overlapping one starts.
const OVERLAP_DELAY_BEATS: u32 = 8;
/// Departments below this relevance sit the execution out.
const MIN_RELEVANCE: f64 = 0.4;
/// Fewest departments in an execution, whatever the relevance: when one
/// fails, another is left to show a revision round.
const MIN_DEPARTMENTS: usize = 2;
/// How far a department's relevance drifts from the project's base.
const RELEVANCE_JITTER: f64 = 0.08;
/// Chance the lead department fails, which fails the run.
const LEAD_FAILURE_CHANCE: f64 = 0.07;
/// Chance another department fails, which makes the run partial.
const OTHER_FAILURE_CHANCE: f64 = 0.13;

/// The Orchestrator actor; see the module documentation.
pub struct Orchestrator {
    emitter: EmitterHandle,
    pace: Duration,
    /// Executions it is still to start on its own; `None`: no end.
    remaining: Option<u64>,
    /// Executions it started on its own, the `<n>` of their IDs.
    launched: u64,
    /// Executions running now, whoever asked for them.
    in_flight: usize,
    prng: Prng,
}

impl Orchestrator {
    /// An orchestrator sending through `emitter`, paced and seeded by `config`.
    pub(crate) fn new(emitter: EmitterHandle, config: DemoConfig) -> Orchestrator {
        Orchestrator {
            emitter,
            pace: config.pace,
            remaining: config.executions,
            launched: 0,
            in_flight: 0,
            prng: Prng::new(config.seed),
        }
    }

    /// Draws the plan of an execution and returns the run, counted in flight until it ends.
    fn launch(&mut self, execution_id: String) -> ResponseActFuture<Self, RunStatus> {
        let execution = Execution {
            emitter: self.emitter.clone(),
            id: execution_id,
            pace: self.pace,
        };
        let plan = Plan::draw(&mut self.prng);
        self.in_flight += 1;
        let run = conduct(execution, plan)
            .into_actor(self)
            .map(|status, act, _| {
                act.in_flight -= 1;
                status
            });
        Box::pin(run)
    }

    /// Takes one execution off the continuous run's budget; false when it is spent.
    fn take_one(&mut self) -> bool {
        match &mut self.remaining {
            Some(0) => false,
            Some(left) => {
                *left -= 1;
                true
            }
            None => true,
        }
    }
}

impl Actor for Orchestrator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(NextExecution { chained: true });
    }
}

impl Handler<RunExecution> for Orchestrator {
    type Result = ResponseActFuture<Self, RunStatus>;

    fn handle(&mut self, msg: RunExecution, _: &mut Self::Context) -> Self::Result {
        self.launch(msg.execution_id)
    }
}

impl Handler<NextExecution> for Orchestrator {
    type Result = ();

    fn handle(&mut self, msg: NextExecution, ctx: &mut Self::Context) {
        if !msg.chained && self.in_flight >= MAX_IN_FLIGHT {
            return;
        }
        if !self.take_one() {
            if msg.chained && self.launched > 0 {
                log::info!("demo: started all {} executions", self.launched);
            }
            return;
        }
        self.launched += 1;
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let id = format!("demo-{seconds}-{}", self.launched);
        if msg.chained && self.prng.chance(OVERLAP_CHANCE) {
            ctx.notify_later(
                NextExecution { chained: false },
                self.pace * OVERLAP_DELAY_BEATS,
            );
        }
        let run = self.launch(id).map(move |_, act, ctx| {
            if msg.chained {
                ctx.notify_later(NextExecution { chained: true }, act.pace * GAP_BEATS);
            }
        });
        ctx.spawn(run);
    }
}

/// Everything drawn about an execution before it starts.
struct Plan {
    project: &'static Project,
    /// The involved departments, most relevant (the lead) first.
    assignments: Vec<Assignment>,
}

/// A department's part in an execution.
struct Assignment {
    department: &'static Department,
    relevance: f64,
    trouble: Trouble,
    /// For its head.
    prng: Prng,
}

impl Plan {
    fn draw(prng: &mut Prng) -> Plan {
        let project = prng.pick(&PROJECTS);
        let mut ranked: Vec<(&'static Department, f64)> = DEPARTMENTS
            .iter()
            .zip(project.relevance)
            .map(|(department, base)| {
                let drifted = base + prng.between(-RELEVANCE_JITTER, RELEVANCE_JITTER);
                (department, rounded(drifted.clamp(0.0, 1.0), 2))
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let involved = ranked
            .iter()
            .enumerate()
            .take_while(|(index, (_, relevance))| {
                *index < MIN_DEPARTMENTS || *relevance >= MIN_RELEVANCE
            })
            .count();
        ranked.truncate(involved);
        let troubles = draw_troubles(prng, involved);
        let assignments = ranked
            .into_iter()
            .zip(troubles)
            .map(|((department, relevance), trouble)| Assignment {
                department,
                relevance,
                trouble,
                prng: prng.fork(),
            })
            .collect();
        Plan {
            project,
            assignments,
        }
    }
}

/// Troubles for `count` departments, the lead first: in every execution one
/// tool call fails and one draft goes back for revision, and now and then a
/// department fails outright.
fn draw_troubles(prng: &mut Prng, count: usize) -> Vec<Trouble> {
    let mut troubles = vec![Trouble::default(); count];
    let roll = prng.unit();
    let failing = if roll < LEAD_FAILURE_CHANCE {
        Some(0)
    } else if roll < LEAD_FAILURE_CHANCE + OTHER_FAILURE_CHANCE {
        Some(1 + prng.below(count - 1))
    } else {
        None
    };
    if let Some(index) = failing {
        troubles[index].broken_tool = true;
    }
    // A failing department rejects its work instead of revising it.
    let revisers: Vec<usize> = (0..count).filter(|&i| Some(i) != failing).collect();
    troubles[*prng.pick(&revisers)].weak_draft = true;
    troubles[prng.below(count)].flaky_tool = true;
    troubles
}

/// Plays one execution: start, departments in parallel, complete.
async fn conduct(execution: Execution, plan: Plan) -> RunStatus {
    let started = Instant::now();
    let (emitter, id) = (&execution.emitter, execution.id.as_str());
    let project = plan.project;
    log::info!("demo execution {id} started: {}", project.id);
    let departments = plan
        .assignments
        .iter()
        .map(|a| a.department.key.to_owned())
        .collect();
    emitter.orchestration_start(
        id,
        OrchestrationStart {
            project_id: Some(project.id.into()),
            user_prompt: Some(project.prompt.into()),
            complexity: Some(project.complexity),
            departments: Some(departments),
        },
    );
    execution.pause(2).await;
    let mut pending = Vec::new();
    for assignment in plan.assignments {
        let key = assignment.department.key;
        let head = DepartmentHead::new(execution.clone(), assignment.prng).start();
        let request = head.send(RunDepartment {
            department: assignment.department,
            relevance: assignment.relevance,
            trouble: assignment.trouble,
            brief: project.prompt,
        });
        pending.push(async move { request.await.unwrap_or_else(|err| unanswered(key, err)) });
        // Heads start a beat apart, as a real orchestrator dispatches them.
        execution.pause(1).await;
    }
    let reports = join_all(pending).await;
    let status = verdict(&reports);
    let metrics = metrics(&reports, started);
    emitter.orchestration_complete(id, status, Some(result(project, &reports)), Some(metrics));
    log::info!("demo execution {id} finished: {status:?}");
    status
}

/// The run's status: it fails with its lead department (the first report),
/// and is partial when another department fails.
fn verdict(reports: &[DepartmentReport]) -> RunStatus {
    match reports.iter().position(|r| !r.approved) {
        None => RunStatus::Success,
        Some(0) => RunStatus::Failed,
        Some(_) => RunStatus::Partial,
    }
}

/// A head that stopped answering: its department counts as failed.
fn unanswered(department: &'static str, err: MailboxError) -> DepartmentReport {
    log::warn!("demo department head of {department} did not answer: {err}");
    DepartmentReport {
        department,
        approved: false,
        quality_score: 0.0,
        tally: Tally::default(),
    }
}

/// The `result` of `orchestration-complete`: what each department delivered.
fn result(project: &Project, reports: &[DepartmentReport]) -> Value {
    let approved = reports.iter().filter(|r| r.approved).count();
    let departments: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "department": r.department,
                "approved": r.approved,
                "qualityScore": score(r.quality_score),
            })
        })
        .collect();
    json!({
        "projectId": project.id,
        "summary": format!("{approved} of {} departments approved", reports.len()),
        "departments": departments,
    })
}

/// The `metrics` of `orchestration-complete`: the run's totals.
fn metrics(reports: &[DepartmentReport], started: Instant) -> Map<String, Value> {
    let total: Tally = reports.iter().map(|r| &r.tally).sum();
    let quality = mean(reports.iter().map(|r| r.quality_score));
    let mut metrics = total.to_metrics();
    metrics.insert("durationMs".into(), json!(millis_since(started) as u64));
    metrics.insert("departments".into(), json!(reports.len()));
    metrics.insert("averageQuality".into(), score(rounded(quality, 1)));
    metrics
}
