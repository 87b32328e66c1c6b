//! Analytics over a time window (`GET /api/analytics`): what is asked, what
//! comes back, and the definitions both backends compute alike.
//!
//! The figures are computed by the store (SQL in SQLite, aggregation
//! pipelines in MongoDB); what reaches Rust is one row per group (type,
//! tool, agent, department, bucket), never the events themselves.
//!
//! Definitions, the same in every backend:
//! - **The window** is half-open, `from <= timestamp < to`, on event timestamps.
//! - **Events in the window** are those whose timestamp is in it and that pass
//!   the filters. With `conversation_id`, only that conversation's events.
//!   With `department`, the events *attributed* to it: those naming the
//!   department, and those naming no department whose agent named it in the
//!   same execution (so a story agent's tool calls count for `story`).
//! - **Executions in the window** are those active during it: started before
//!   `to` and with a last event at or after `from`; with the filters, of that
//!   conversation, or with at least one event naming that department.
//!   Duration = end − start of each such execution that has ended.
//! - **Percentiles** are nearest-rank: the p-th percentile of n sorted values
//!   is the value at 1-based rank ⌈p·n/100⌉ ([`nearest_rank`]); none of no values.
//! - **Tools**: calls are `tool-call` events by `toolName`; failures are
//!   `tool-result` events with `success: false`; the failure rate is failures
//!   over results; latency is the `executionTime` (ms) of `tool-result` events.
//! - **Agents** are ranked by their `tool-call` events.
//! - **Quality** is the `qualityScore` of `quality-check` events naming a
//!   department; *below threshold* counts checks whose score is below their
//!   own `threshold`, and the share is of the checks that carry a threshold.
//! - **Reviews**: a *review subject* is one specialist's work in one
//!   department of one execution (`specialistId`, or the department alone
//!   when the event names none). It was *approved on first pass* when its
//!   first `review-status` in the window (by seq) is `approved`; its
//!   *revision rounds* are its `revision-requested` events in the window.

use super::ExecutionStatus;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Most buckets an events-per-second series may have: a day by the minute.
pub const MAX_BUCKETS: u64 = 1440;

/// Buckets of the series when the query does not set a width.
pub const DEFAULT_BUCKETS: u64 = 60;

/// Agents and tools listed, the busiest first.
pub const TOP: usize = 20;

/// The percentiles every latency and duration figure reports.
pub const PERCENTILES: [u64; 2] = [50, 95];

/// What to compute: a window, optional filters, the series' bucket width.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsQuery {
    /// Start of the window (inclusive).
    pub from: DateTime<Utc>,
    /// End of the window (exclusive); after `from`.
    pub to: DateTime<Utc>,
    /// Only this conversation.
    pub conversation_id: Option<String>,
    /// Only what is attributed to this department (see the module docs).
    pub department: Option<String>,
    /// Width of one bucket of the events-per-second series, in seconds (at least 1).
    pub bucket_secs: u64,
}

impl AnalyticsQuery {
    /// The window `[from, to)` with no filter and [`DEFAULT_BUCKETS`] buckets.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> AnalyticsQuery {
        AnalyticsQuery {
            from,
            to,
            conversation_id: None,
            department: None,
            bucket_secs: default_bucket_secs(from, to),
        }
    }

    /// Only this conversation.
    pub fn conversation(mut self, conversation_id: impl Into<String>) -> Self {
        self.conversation_id = Some(conversation_id.into());
        self
    }

    /// Only this department.
    pub fn department(mut self, department: impl Into<String>) -> Self {
        self.department = Some(department.into());
        self
    }

    /// Buckets of `bucket_secs` seconds.
    pub fn bucket_secs(mut self, bucket_secs: u64) -> Self {
        self.bucket_secs = bucket_secs;
        self
    }

    /// Width of a bucket in milliseconds (never 0, so a division by it is safe).
    pub fn bucket_ms(&self) -> i64 {
        i64::try_from(self.bucket_secs.max(1))
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
    }

    /// How many buckets cover the window (the last one may be cut short by `to`).
    pub fn bucket_count(&self) -> u64 {
        let span = (self.to - self.from).num_milliseconds().max(0) as u64;
        span.div_ceil(self.bucket_ms() as u64)
    }

    /// The series with every bucket of the window, from the counts the store
    /// found by bucket index (buckets it did not name had no event).
    pub fn series(&self, counts: &BTreeMap<i64, u64>) -> Vec<RateBucket> {
        let width = self.bucket_ms();
        (0..self.bucket_count() as i64)
            .map(|index| {
                let start = self.from + TimeDelta::milliseconds(index * width);
                let end = (start + TimeDelta::milliseconds(width)).min(self.to);
                let count = counts.get(&index).copied().unwrap_or(0);
                // The last bucket may be shorter: its rate is over its own span.
                let secs = (end - start).num_milliseconds() as f64 / 1000.0;
                RateBucket {
                    start,
                    count,
                    per_second: count as f64 / secs,
                }
            })
            .collect()
    }
}

/// The width that cuts the window into about [`DEFAULT_BUCKETS`] whole seconds.
pub fn default_bucket_secs(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    let span_secs = (to - from).num_seconds().max(1) as u64;
    span_secs.div_ceil(DEFAULT_BUCKETS).max(1)
}

/// The 1-based rank of the `p`-th percentile of `n` sorted values: ⌈p·n/100⌉
/// (at least 1). Both backends fetch the value at this rank.
pub fn nearest_rank(p: u64, n: u64) -> u64 {
    (p * n).div_ceil(100).max(1)
}

/// Everything `GET /api/analytics` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analytics {
    /// Start of the window.
    pub from: DateTime<Utc>,
    /// End of the window (exclusive).
    pub to: DateTime<Utc>,
    /// The conversation filter, if any.
    pub conversation_id: Option<String>,
    /// The department filter, if any.
    pub department: Option<String>,
    /// Width of one bucket of `events.series`.
    pub bucket_secs: u64,
    /// Executions active during the window.
    pub executions: ExecutionFigures,
    /// Events in the window.
    pub events: EventFigures,
    /// Tool calls, failures and latency.
    pub tools: ToolFigures,
    /// The agents with the most tool calls, the busiest first (at most [`TOP`]).
    pub agents: Vec<AgentCalls>,
    /// Quality scores by department.
    pub quality: BTreeMap<String, QualityFigures>,
    /// Review outcomes.
    pub reviews: ReviewFigures,
}

impl Analytics {
    /// The answer for a window with nothing in it; backends fill in what they find.
    pub fn empty(query: &AnalyticsQuery) -> Analytics {
        Analytics {
            from: query.from,
            to: query.to,
            conversation_id: query.conversation_id.clone(),
            department: query.department.clone(),
            bucket_secs: query.bucket_secs,
            executions: ExecutionFigures::from_counts([], Percentiles::default()),
            events: EventFigures::from_counts(query, BTreeMap::new(), &BTreeMap::new()),
            tools: ToolFigures {
                total: ToolStats::counted(None, 0, 0, 0),
                by_tool: Vec::new(),
            },
            agents: Vec::new(),
            quality: BTreeMap::new(),
            reviews: ReviewFigures::default(),
        }
    }
}

/// Executions by status and how long the ended ones took.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionFigures {
    /// Executions active during the window.
    pub total: u64,
    /// By status: every status is listed, zeros included.
    pub by_status: BTreeMap<String, u64>,
    /// Durations (ms) of those that ended.
    pub duration_ms: Percentiles,
}

impl ExecutionFigures {
    /// From counts by status name; statuses not named count 0.
    pub fn from_counts(
        counts: impl IntoIterator<Item = (String, u64)>,
        duration_ms: Percentiles,
    ) -> ExecutionFigures {
        let mut by_status: BTreeMap<String, u64> = [
            ExecutionStatus::Running,
            ExecutionStatus::Success,
            ExecutionStatus::Failed,
            ExecutionStatus::Partial,
        ]
        .into_iter()
        .map(|status| (status.as_str().to_owned(), 0))
        .collect();
        for (status, n) in counts {
            *by_status.entry(status).or_default() += n;
        }
        ExecutionFigures {
            total: by_status.values().sum(),
            by_status,
            duration_ms,
        }
    }
}

/// Nearest-rank percentiles of a set of values.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// The median; `None` without values.
    pub p50: Option<f64>,
    /// The 95th percentile; `None` without values.
    pub p95: Option<f64>,
}

impl Percentiles {
    /// From a count and the values at the ranks of [`PERCENTILES`], in order.
    pub fn from_ranks(count: u64, values: [Option<f64>; 2]) -> Percentiles {
        let [p50, p95] = values;
        Percentiles { count, p50, p95 }
    }
}

/// Counts of the events in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFigures {
    /// Events in the window.
    pub total: u64,
    /// By type name (types with no event are left out).
    pub by_type: BTreeMap<String, u64>,
    /// Events per second over time: every bucket of the window, in order.
    pub series: Vec<RateBucket>,
}

impl EventFigures {
    /// From counts by type and by bucket index (see [`AnalyticsQuery::series`]).
    pub fn from_counts(
        query: &AnalyticsQuery,
        by_type: BTreeMap<String, u64>,
        buckets: &BTreeMap<i64, u64>,
    ) -> EventFigures {
        EventFigures {
            total: by_type.values().sum(),
            series: query.series(buckets),
            by_type,
        }
    }
}

/// One bucket of the events-per-second series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateBucket {
    /// Where the bucket starts.
    pub start: DateTime<Utc>,
    /// Events in it.
    pub count: u64,
    /// `count` over the bucket's seconds inside the window.
    pub per_second: f64,
}

/// Tool figures: all tools together and the busiest ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolFigures {
    /// All tools together.
    #[serde(flatten)]
    pub total: ToolStats,
    /// By tool, most calls first (ties by name), at most [`TOP`].
    pub by_tool: Vec<ToolStats>,
}

/// Calls, failures and latency of one tool (or all, with no name).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolStats {
    /// The tool; absent for the totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// `tool-call` events.
    pub calls: u64,
    /// `tool-result` events.
    pub results: u64,
    /// `tool-result` events with `success: false`.
    pub failures: u64,
    /// `failures / results`; `None` without results.
    pub failure_rate: Option<f64>,
    /// `executionTime` of the results that carry one.
    pub latency_ms: Percentiles,
}

impl ToolStats {
    /// Counts without latency yet; the rate follows from them.
    pub fn counted(tool_name: Option<String>, calls: u64, results: u64, failures: u64) -> Self {
        ToolStats {
            tool_name,
            calls,
            results,
            failures,
            failure_rate: ratio(failures, results),
            latency_ms: Percentiles::default(),
        }
    }
}

/// Sorts tools the way `by_tool` lists them and keeps the first [`TOP`].
pub fn busiest_tools(mut tools: Vec<ToolStats>) -> Vec<ToolStats> {
    tools.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then(b.results.cmp(&a.results))
            .then(a.tool_name.cmp(&b.tool_name))
    });
    tools.truncate(TOP);
    tools
}

/// One agent's tool calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCalls {
    /// The agent.
    pub agent_id: String,
    /// Its `tool-call` events.
    pub calls: u64,
}

/// Quality scores of one department.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualityFigures {
    /// Checks.
    pub count: u64,
    /// Mean score.
    pub avg: f64,
    /// Lowest score.
    pub min: f64,
    /// Highest score.
    pub max: f64,
    /// Checks that carry a `threshold`.
    pub with_threshold: u64,
    /// Checks scored below their own threshold.
    pub below_threshold: u64,
    /// `below_threshold / with_threshold`; `None` when no check has a threshold.
    pub share_below_threshold: Option<f64>,
}

/// Review outcomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewFigures {
    /// `review-status` events by status.
    pub by_status: BTreeMap<String, u64>,
    /// Review subjects (see the module docs).
    pub subjects: u64,
    /// Subjects whose first review approved them.
    pub approved_first_pass: u64,
    /// `approved_first_pass / subjects`; `None` without subjects.
    pub first_pass_rate: Option<f64>,
    /// `revision-requested` events, over all subjects.
    pub revision_rounds: u64,
    /// Subjects by their number of revision rounds (`"0"`, `"1"`, …).
    pub subjects_by_rounds: BTreeMap<u64, u64>,
}

impl ReviewFigures {
    /// From rows `(revision rounds, subjects with that many, of which approved
    /// on first pass)` and the events by status.
    pub fn from_rounds(rows: &[(u64, u64, u64)], by_status: BTreeMap<String, u64>) -> Self {
        let subjects = rows.iter().map(|r| r.1).sum();
        let approved_first_pass = rows.iter().map(|r| r.2).sum();
        ReviewFigures {
            by_status,
            subjects,
            approved_first_pass,
            first_pass_rate: ratio(approved_first_pass, subjects),
            revision_rounds: rows.iter().map(|r| r.0 * r.1).sum(),
            subjects_by_rounds: rows.iter().map(|r| (r.0, r.1)).collect(),
        }
    }
}

/// `part / whole`, or `None` when `whole` is 0.
pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn nearest_rank_is_the_ceiling_of_p_n_over_100() {
        assert_eq!(nearest_rank(50, 1), 1);
        assert_eq!(nearest_rank(50, 4), 2);
        assert_eq!(nearest_rank(50, 5), 3);
        assert_eq!(nearest_rank(95, 4), 4);
        assert_eq!(nearest_rank(95, 20), 19);
        assert_eq!(nearest_rank(95, 21), 20);
        assert_eq!(nearest_rank(50, 0), 1);
    }

    #[test]
    fn the_series_covers_the_window_and_the_last_bucket_is_cut_short() {
        let query = AnalyticsQuery::new(at("2025-10-01T12:00:00Z"), at("2025-10-01T12:00:25Z"))
            .bucket_secs(10);
        assert_eq!(query.bucket_count(), 3);
        let series = query.series(&BTreeMap::from([(0, 5), (2, 10)]));
        let shown: Vec<(String, u64, f64)> = series
            .iter()
            .map(|b| (b.start.to_rfc3339(), b.count, b.per_second))
            .collect();
        assert_eq!(
            shown,
            [
                ("2025-10-01T12:00:00+00:00".to_owned(), 5, 0.5),
                ("2025-10-01T12:00:10+00:00".to_owned(), 0, 0.0),
                ("2025-10-01T12:00:20+00:00".to_owned(), 10, 2.0),
            ]
        );
    }

    #[test]
    fn the_default_bucket_makes_about_sixty() {
        let from = at("2025-10-01T12:00:00Z");
        assert_eq!(default_bucket_secs(from, at("2025-10-01T13:00:00Z")), 60);
        assert_eq!(default_bucket_secs(from, at("2025-10-01T12:00:30Z")), 1);
        assert_eq!(default_bucket_secs(from, at("2025-10-02T12:00:00Z")), 1440);
    }

    #[test]
    fn review_figures_add_up_the_rounds() {
        let figures = ReviewFigures::from_rounds(&[(0, 3, 2), (2, 1, 0)], BTreeMap::new());
        assert_eq!(figures.subjects, 4);
        assert_eq!(figures.approved_first_pass, 2);
        assert_eq!(figures.first_pass_rate, Some(0.5));
        assert_eq!(figures.revision_rounds, 2);
        assert_eq!(figures.subjects_by_rounds, BTreeMap::from([(0, 3), (2, 1)]));
    }
}
