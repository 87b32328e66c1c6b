//! The DepartmentHead actor: runs one department of one execution. It staffs
//! specialists, checks and reviews their work, sends weak work back for
//! revision, and reports the department's outcome to the orchestrator.
//!
//! One head (and one agent per specialist) lives per department and
//! execution; each stops by itself once nobody holds its address and its
//! work is answered.

use super::agent::{Agent, AgentReport, PerformTask, ReviseWork};
use super::{mean, millis_since, rounded, score, Department, Execution, Prng, Specialist};
use super::{Tally, Trouble};
use crate::event::{AgentComplete, AgentStart, DepartmentComplete, DepartmentStart, QualityCheck};
use crate::event::{ReviewStatus, ReviewVerdict};
use actix::prelude::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Instant;

/// Run the department; answered once its `department-complete` is emitted.
#[derive(Message)]
#[rtype(result = "DepartmentReport")]
pub(crate) struct RunDepartment {
    /// Which department.
    pub department: &'static Department,
    /// How relevant it is to the request, 0..1.
    pub relevance: f64,
    /// The unhappy paths the orchestrator planned for it.
    pub trouble: Trouble,
    /// The user's request.
    pub brief: &'static str,
}

/// How a department's work ended.
#[derive(Debug, Clone)]
pub(crate) struct DepartmentReport {
    /// The department's key.
    pub department: &'static str,
    /// Whether every specialist's work was approved.
    pub approved: bool,
    /// The mean of the final quality scores, 0..100.
    pub quality_score: f64,
    /// What the department's work cost.
    pub tally: Tally,
}

/// Relevance from which a head staffs its whole team rather than its first
/// specialist: a marginal department should not cost as much as a central one.
const FULL_TEAM_RELEVANCE: f64 = 0.75;
/// Revision rounds a head asks for before it rejects the work, so that a
/// stubborn draft cannot hold the execution forever.
const MAX_REVISION_ROUNDS: u64 = 2;

/// The DepartmentHead actor; see the module documentation.
pub(crate) struct DepartmentHead {
    execution: Execution,
    prng: Prng,
}

impl DepartmentHead {
    /// A head working on `execution`.
    pub fn new(execution: Execution, prng: Prng) -> DepartmentHead {
        DepartmentHead { execution, prng }
    }

    /// Starts an agent per specialist the department's relevance calls for.
    fn staff(&mut self, msg: &RunDepartment) -> Vec<Assignment> {
        let specialists = &msg.department.specialists;
        let size = if msg.relevance >= FULL_TEAM_RELEVANCE {
            specialists.len()
        } else {
            1
        };
        let team = &specialists[..size];
        team.iter()
            .enumerate()
            .map(|(index, specialist)| {
                let agent = Agent::new(
                    self.execution.clone(),
                    msg.department,
                    specialist,
                    self.prng.fork(),
                );
                Assignment {
                    agent_id: agent.id().to_owned(),
                    agent: agent.start(),
                    specialist,
                    trouble: share(msg.trouble, index, team.len()),
                    prng: self.prng.fork(),
                }
            })
            .collect()
    }
}

/// The part of the department's trouble that falls to its `index`th specialist
/// of `size`. Tool trouble goes to the first and the weak draft to the last,
/// so that in a team of two a broken tool never swallows the revision.
fn share(trouble: Trouble, index: usize, size: usize) -> Trouble {
    Trouble {
        flaky_tool: trouble.flaky_tool && index == 0,
        broken_tool: trouble.broken_tool && index == 0,
        weak_draft: trouble.weak_draft && index + 1 == size,
    }
}

impl Actor for DepartmentHead {
    type Context = Context<Self>;
}

impl Handler<RunDepartment> for DepartmentHead {
    type Result = ResponseFuture<DepartmentReport>;

    fn handle(&mut self, msg: RunDepartment, _: &mut Self::Context) -> Self::Result {
        let team = self.staff(&msg);
        let office = Office {
            execution: self.execution.clone(),
            department: msg.department,
            head_id: format!("{}-head-001", msg.department.key),
        };
        Box::pin(office.run(msg.relevance, msg.brief, team))
    }
}

/// One specialist at work for the department.
struct Assignment {
    agent: Addr<Agent>,
    agent_id: String,
    specialist: &'static Specialist,
    trouble: Trouble,
    /// For the head's own draws about this specialist's work.
    prng: Prng,
}

/// How one specialist's work ended, after every review round.
struct Outcome {
    approved: bool,
    quality: f64,
    /// Its entry in the department's `outputs`.
    output: Value,
    tally: Tally,
}

/// What a head needs while it runs its department, apart from the actor.
struct Office {
    execution: Execution,
    department: &'static Department,
    head_id: String,
}

impl Office {
    async fn run(self, relevance: f64, brief: &str, team: Vec<Assignment>) -> DepartmentReport {
        let started = Instant::now();
        let (emitter, id, head) = (
            &self.execution.emitter,
            self.execution.id.as_str(),
            self.head_id.as_str(),
        );
        let department = self.department;
        emitter.department_start(
            id,
            DepartmentStart {
                department: department.key.into(),
                department_name: Some(department.name.into()),
                agent_id: Some(head.into()),
                relevance: Some(relevance),
            },
        );
        let prompt = format!("Coordinate the {} for: {brief}", department.name);
        let start = AgentStart {
            agent_id: head.into(),
            agent_name: Some(format!("{} Head", department.name)),
            department: Some(department.key.into()),
            prompt: Some(prompt),
        };
        emitter.agent_start(id, start);
        self.execution.pause(1).await;
        let roles: Vec<&str> = team.iter().map(|a| a.specialist.role).collect();
        let plan = format!("Relevance {relevance:.2}: assigning {}", roles.join(", "));
        emitter.agent_thinking(id, head, &plan, 0);
        let outcomes = join_all(team.into_iter().map(|a| self.supervise(a, brief))).await;
        let approved = outcomes.iter().filter(|o| o.approved).count();
        let summary = format!(
            "{approved} of {} deliverables approved; compiling the department's output",
            outcomes.len()
        );
        emitter.agent_thinking(id, head, &summary, 1);
        self.execution.pause(1).await;
        self.report(&outcomes, started)
    }

    /// Sends one specialist to work, then checks and reviews each draft until
    /// it is approved, rejected, or out of revision rounds.
    async fn supervise(&self, assignment: Assignment, brief: &str) -> Outcome {
        let Assignment {
            agent,
            agent_id,
            specialist,
            trouble,
            mut prng,
        } = assignment;
        let task = PerformTask {
            task: format!("Produce the {} for: {brief}", specialist.deliverable),
            bar: self.department.threshold,
            trouble,
        };
        let mut tally = Tally::default();
        let mut answer = agent.send(task).await;
        loop {
            let report = match answer {
                Ok(report) => report,
                Err(err) => return self.lost(&agent_id, err, tally),
            };
            tally.absorb(&report.tally);
            let issues = self.check(&agent_id, &report, &mut prng);
            self.execution.pause(1).await;
            let verdict = self.verdict(&report, tally.revisions);
            let feedback = feedback(specialist, verdict, &issues, tally.revisions);
            self.review(&agent_id, verdict, report.quality, feedback);
            if verdict != ReviewVerdict::RevisionRequested {
                return outcome(&agent_id, verdict, report, tally);
            }
            tally.revisions += 1;
            self.execution.pause(1).await;
            let feedback = issues.join("; ");
            answer = agent.send(ReviseWork { feedback }).await;
        }
    }

    /// Emits the `quality-check` of a draft; returns what it found wrong.
    fn check(&self, agent_id: &str, report: &AgentReport, prng: &mut Prng) -> Vec<String> {
        let passed = self.passes(report);
        let issues = match &report.error {
            Some(error) => vec![format!("No usable output: {error}")],
            None if passed => Vec::new(),
            None => self.issues(prng),
        };
        let check = QualityCheck {
            quality_score: report.quality,
            agent_id: Some(agent_id.into()),
            department: Some(self.department.key.into()),
            passed: Some(passed),
            threshold: Some(self.department.threshold),
            issues: (!issues.is_empty()).then(|| issues.clone()),
        };
        self.execution
            .emitter
            .quality_check(&self.execution.id, check);
        issues
    }

    fn passes(&self, report: &AgentReport) -> bool {
        report.success && report.quality >= self.department.threshold
    }

    /// One or two of the department's usual issues.
    fn issues(&self, prng: &mut Prng) -> Vec<String> {
        let all = &self.department.issues;
        let first = prng.below(all.len());
        let count = prng.count(1, 2) as usize;
        (0..count)
            .map(|i| all[(first + i) % all.len()].to_owned())
            .collect()
    }

    fn verdict(&self, report: &AgentReport, revisions: u64) -> ReviewVerdict {
        if self.passes(report) {
            ReviewVerdict::Approved
        } else if report.success && revisions < MAX_REVISION_ROUNDS {
            ReviewVerdict::RevisionRequested
        } else {
            ReviewVerdict::Rejected
        }
    }

    /// Emits the `review-status` of a draft.
    fn review(&self, agent_id: &str, verdict: ReviewVerdict, quality: f64, feedback: String) {
        let review = ReviewStatus {
            department: self.department.key.into(),
            status: verdict,
            agent_id: Some(self.head_id.clone()),
            specialist_id: Some(agent_id.into()),
            feedback: Some(feedback),
            quality_score: Some(quality),
        };
        self.execution
            .emitter
            .review_status(&self.execution.id, review);
    }

    /// An agent that stopped answering: its work counts as rejected.
    fn lost(&self, agent_id: &str, err: MailboxError, tally: Tally) -> Outcome {
        log::warn!(
            "demo agent {agent_id} of {} did not answer: {err}",
            self.execution.id
        );
        Outcome {
            approved: false,
            quality: 0.0,
            output: json!({"agentId": agent_id, "approved": false, "error": err.to_string()}),
            tally,
        }
    }

    /// Emits the head's `agent-complete` and the `department-complete`.
    fn report(&self, outcomes: &[Outcome], started: Instant) -> DepartmentReport {
        let (emitter, id) = (&self.execution.emitter, self.execution.id.as_str());
        let approved = outcomes.iter().filter(|o| o.approved).count();
        let all_approved = approved == outcomes.len();
        let quality_score = rounded(mean(outcomes.iter().map(|o| o.quality)), 1);
        let elapsed = millis_since(started);
        let rejected = outcomes.len() - approved;
        emitter.agent_complete(
            id,
            AgentComplete {
                agent_id: self.head_id.clone(),
                department: Some(self.department.key.into()),
                output: Some(json!({"approved": approved, "deliverables": outcomes.len()})),
                success: Some(all_approved),
                error: (!all_approved).then(|| format!("{rejected} deliverable(s) rejected")),
                execution_time: Some(elapsed),
            },
        );
        emitter.department_complete(
            id,
            DepartmentComplete {
                department: self.department.key.into(),
                outputs: Some(outcomes.iter().map(|o| o.output.clone()).collect()),
                quality_score: Some(quality_score),
                execution_time: Some(elapsed),
            },
        );
        log::debug!(
            "demo {id}: {} done, quality {quality_score}, {approved}/{} approved",
            self.department.key,
            outcomes.len()
        );
        DepartmentReport {
            department: self.department.key,
            approved: all_approved,
            quality_score,
            tally: outcomes.iter().map(|o| &o.tally).sum(),
        }
    }
}

/// What a reviewer writes for `verdict`.
fn feedback(
    specialist: &Specialist,
    verdict: ReviewVerdict,
    issues: &[String],
    revisions: u64,
) -> String {
    match verdict {
        ReviewVerdict::Approved if revisions == 0 => {
            format!(
                "Approved: the {} is ready to hand on",
                specialist.deliverable
            )
        }
        ReviewVerdict::Approved => "Approved: the revision addresses every note".to_owned(),
        ReviewVerdict::RevisionRequested => format!("Please revise: {}", issues.join("; ")),
        ReviewVerdict::Rejected | ReviewVerdict::Pending => {
            format!("Rejected: {}", issues.join("; "))
        }
    }
}

/// A specialist's final verdict, as the department reports it.
fn outcome(agent_id: &str, verdict: ReviewVerdict, report: AgentReport, tally: Tally) -> Outcome {
    let approved = verdict == ReviewVerdict::Approved;
    let output = json!({
        "agentId": agent_id,
        "approved": approved,
        "qualityScore": score(report.quality),
        "revisions": tally.revisions,
        "work": report.output,
    });
    Outcome {
        approved,
        quality: report.quality,
        output,
        tally,
    }
}
