//! What a run reports: one JSON line for scripts, a readable summary for
//! people, and the broker/baseline comparison with the project's goals.

use crate::accounting::{AckCheck, Correctness};
use crate::histogram::Percentiles;
use crate::shape::Shape;
use crate::system::Memory;
use crate::target::Kind;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub struct RunReport {
    pub scenario: String,
    pub target: Kind,
    pub shape: Shape,
    pub target_placement: String,
    /// Settings the broker child got beyond its defaults.
    pub target_settings: Vec<(String, String)>,
    pub load_placement: String,
    pub planned: u64,
    pub sent: u64,
    pub acked: u64,
    pub http_errors: u64,
    pub first_http_error: Option<String>,
    /// From the first send to the last 202.
    pub ingest_time: Duration,
    pub expected_deliveries: u64,
    pub delivered: u64,
    /// From the first send to the last delivery.
    pub delivery_time: Duration,
    /// Nanoseconds, from `metadata.sentAtNs` to arrival.
    pub latency: Percentiles,
    pub max_producer_lag: Duration,
    pub correctness: Correctness,
    pub ack_check: AckCheck,
    pub disconnects: u64,
    pub first_disconnect: Option<String>,
    pub error_codes: BTreeMap<String, u64>,
    pub unparsed: u64,
    pub memory_before: Option<Memory>,
    pub memory_with_connections: Option<Memory>,
    pub peak_rss: Option<u64>,
    pub memory_end: Option<Memory>,
    pub timed_out: bool,
    pub target_exit: Option<String>,
    /// From the first send to the end of the drain.
    pub active: Duration,
    /// CPU time the target and this tool used while active.
    pub target_cpu: Option<Duration>,
    pub load_cpu: Option<Duration>,
    /// CPUs this tool may run on (1 when pinned).
    pub load_cores: usize,
    pub elapsed: Duration,
}

/// How far behind schedule a paced producer may fall before the run's pace
/// counts as not held.
const MAX_PACE_LAG: Duration = Duration::from_millis(100);

/// Share of its core above which the load generator counts as saturated.
const SATURATED: f64 = 0.9;

fn per_sec(n: u64, time: Duration) -> Option<f64> {
    (n > 0 && !time.is_zero()).then(|| n as f64 / time.as_secs_f64())
}

fn utilisation(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64()
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl RunReport {
    /// Everything the tool checks held: nothing lost, doubled, reordered or
    /// refused, no connection dropped, the target alive, no bound hit.
    pub fn ok(&self) -> bool {
        self.correctness.is_clean()
            && self.ack_check == AckCheck::default()
            && self.http_errors == 0
            && self.acked == self.sent
            && self.delivered >= self.expected_deliveries
            && self.disconnects == 0
            && self.error_codes.is_empty()
            && self.unparsed == 0
            && !self.timed_out
            && self.target_exit.is_none()
    }

    /// Paced runs: whether the producers kept to the schedule. If not, the
    /// target answered too slowly for the producers in flight, latencies
    /// are measured at a lower rate than asked, and the report says so.
    pub fn pace_held(&self) -> Option<bool> {
        self.shape
            .rate
            .map(|_| self.max_producer_lag <= MAX_PACE_LAG)
    }

    /// Whether this tool was the bottleneck: when it kept its core(s)
    /// busy, the target's figures are lower bounds.
    pub fn load_saturated(&self) -> bool {
        self.load_cpu.is_some_and(|cpu| {
            utilisation(cpu, self.active) > SATURATED * self.load_cores.max(1) as f64
        })
    }

    pub fn ingest_per_sec(&self) -> Option<f64> {
        per_sec(self.acked, self.ingest_time)
    }

    pub fn deliveries_per_sec(&self) -> Option<f64> {
        per_sec(self.delivered, self.delivery_time)
    }

    /// (RSS with the connections open − RSS before) / connections.
    pub fn rss_per_connection(&self) -> Option<f64> {
        let (before, with) = (self.memory_before?, self.memory_with_connections?);
        (self.shape.subscribers > 0)
            .then(|| (with.rss as f64 - before.rss as f64) / self.shape.subscribers as f64)
    }

    /// A metric by its key in comparisons (see [`METRICS`]).
    pub fn metric(&self, key: &str) -> Option<f64> {
        let with_subscribers = self.shape.subscribers > 0 && self.latency.count > 0;
        match key {
            "deliveriesPerSec" => self.deliveries_per_sec(),
            "ingestPerSec" => self.ingest_per_sec(),
            "p50Ms" => with_subscribers.then(|| ms(self.latency.p50)),
            "p99Ms" => with_subscribers.then(|| ms(self.latency.p99)),
            "maxMs" => with_subscribers.then(|| ms(self.latency.max)),
            "rssPerConnectionBytes" => self.rss_per_connection(),
            "targetCpuSeconds" => self.target_cpu.map(|d| d.as_secs_f64()),
            "peakRssBytes" => self.peak_rss.map(|b| b as f64),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        let s = &self.shape;
        json!({
            "kind": "run",
            "scenario": self.scenario,
            "label": s.label,
            "target": self.target.name(),
            "ok": self.ok(),
            "shape": {
                "subscribers": s.subscribers,
                "executions": s.executions,
                "subscriptionsPerConnection": s.per_connection(),
                "producers": s.producers,
                "batch": s.batch,
                "events": s.events,
                "rate": s.rate,
                "durationS": s.duration.map(|d| d.as_secs_f64()),
                "window": s.window,
                "payloadBytes": s.payload_bytes,
                "idleSettleS": s.idle_settle.map(|d| d.as_secs_f64()),
            },
            "placement": {"target": self.target_placement, "load": self.load_placement},
            "targetSettings": self
                .target_settings
                .iter()
                .cloned()
                .collect::<BTreeMap<String, String>>(),
            "ingest": {
                "planned": self.planned,
                "sent": self.sent,
                "acked": self.acked,
                "httpErrors": self.http_errors,
                "firstHttpError": self.first_http_error,
                "seconds": self.ingest_time.as_secs_f64(),
                "eventsPerSec": self.ingest_per_sec(),
                "maxProducerLagMs": self.max_producer_lag.as_secs_f64() * 1e3,
                "paceHeld": self.pace_held(),
            },
            "delivery": {
                "expected": self.expected_deliveries,
                "delivered": self.delivered,
                "seconds": self.delivery_time.as_secs_f64(),
                "perSec": self.deliveries_per_sec(),
            },
            "latencyMs": {
                "samples": self.latency.count,
                "p50": ms(self.latency.p50),
                "p99": ms(self.latency.p99),
                "max": ms(self.latency.max),
            },
            "correctness": {
                "ok": self.ok(),
                "lost": self.correctness.lost,
                "duplicated": self.correctness.duplicated,
                "reordered": self.correctness.reordered,
                "unexpected": self.correctness.unexpected,
                "subscribersAffected": self.correctness.subscribers_affected,
                "maxLostPerSubscriber": self.correctness.max_lost_per_subscriber,
                "ackDuplicates": self.ack_check.duplicates,
                "ackGaps": self.ack_check.gaps,
                "disconnects": self.disconnects,
                "firstDisconnect": self.first_disconnect,
                "errorCodes": self.error_codes,
                "unparsedFrames": self.unparsed,
            },
            "memory": {
                "beforeBytes": self.memory_before.map(|m| m.rss),
                "withConnectionsBytes": self.memory_with_connections.map(|m| m.rss),
                "perConnectionBytes": self.rss_per_connection(),
                "peakRssBytes": self.peak_rss,
                "hwmBytes": self.memory_end.map(|m| m.hwm),
            },
            "cpu": {
                "activeSeconds": self.active.as_secs_f64(),
                "targetSeconds": self.target_cpu.map(|d| d.as_secs_f64()),
                "loadSeconds": self.load_cpu.map(|d| d.as_secs_f64()),
                "targetUtilisation": self.target_cpu.map(|d| utilisation(d, self.active)),
                "loadUtilisation": self.load_cpu.map(|d| utilisation(d, self.active)),
                "loadSaturated": self.load_saturated(),
            },
            "timedOut": self.timed_out,
            "targetExit": self.target_exit,
            "elapsedS": self.elapsed.as_secs_f64(),
        })
    }

    /// The report in words, a line per aspect: what ran where, ingest,
    /// deliveries and latency, correctness, memory, CPU, then warnings.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        self.write_heading(&mut out);
        self.write_throughput(&mut out);
        self.write_correctness(&mut out);
        let _ = writeln!(out, "   memory      {}", self.memory_line());
        self.write_cpu(&mut out);
        self.write_warnings(&mut out);
        out
    }

    fn write_heading(&self, out: &mut String) {
        let verdict = if self.ok() { "ok" } else { "PROBLEMS" };
        let _ = writeln!(
            out,
            "── {} · {} · {verdict}",
            self.shape.label,
            self.target.name()
        );
        let _ = writeln!(out, "   {}", self.shape.describe());
        let _ = writeln!(
            out,
            "   target {}; load generator {}",
            self.target_placement, self.load_placement
        );
        if !self.target_settings.is_empty() {
            let settings: Vec<String> = self
                .target_settings
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "   settings    {}", settings.join(" "));
        }
    }

    fn write_throughput(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "   ingest      {} events/s  ({}/{} acked, {} in failed requests{})",
            number(self.ingest_per_sec()),
            self.acked,
            self.sent,
            self.http_errors,
            self.first_http_error
                .as_ref()
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        );
        if self.shape.subscribers == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "   deliveries  {} /s  ({}/{})",
            number(self.deliveries_per_sec()),
            self.delivered,
            self.expected_deliveries
        );
        let _ = writeln!(
            out,
            "   latency     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples{})",
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
            self.latency.count,
            if self.shape.rate.is_some() {
                format!(
                    "; producers at most {:.1} ms behind schedule",
                    self.max_producer_lag.as_secs_f64() * 1e3
                )
            } else {
                String::new()
            }
        );
    }

    fn write_correctness(&self, out: &mut String) {
        let c = &self.correctness;
        let _ = writeln!(
            out,
            "   correctness {} lost, {} duplicated, {} reordered, {} unexpected ({} subscribers affected); receipts: {} duplicate, {} gaps; {} disconnects{}{}",
            c.lost,
            c.duplicated,
            c.reordered,
            c.unexpected,
            c.subscribers_affected,
            self.ack_check.duplicates,
            self.ack_check.gaps,
            self.disconnects,
            self.first_disconnect
                .as_ref()
                .map(|d| format!(" (first: {d})"))
                .unwrap_or_default(),
            if self.error_codes.is_empty() {
                String::new()
            } else {
                format!("; error frames {:?}", self.error_codes)
            }
        );
    }

    fn memory_line(&self) -> String {
        let (Some(before), Some(peak)) = (self.memory_before, self.peak_rss) else {
            return "unknown (no pid: pass --pid with --url)".into();
        };
        let per_conn = self
            .rss_per_connection()
            .map(|b| format!(", {} per connection", bytes(b)))
            .unwrap_or_default();
        format!(
            "before {}, with connections {}{per_conn}, peak {} (VmHWM {})",
            bytes(before.rss as f64),
            self.memory_with_connections
                .map(|m| bytes(m.rss as f64))
                .unwrap_or_else(|| "?".into()),
            bytes(peak as f64),
            self.memory_end
                .map(|m| bytes(m.hwm as f64))
                .unwrap_or_else(|| "?".into())
        )
    }

    fn write_cpu(&self, out: &mut String) {
        let cpu = |d: Option<Duration>| match d {
            Some(d) => format!(
                "{:.2} s ({:.0}% of one core)",
                d.as_secs_f64(),
                100.0 * utilisation(d, self.active)
            ),
            None => "?".into(),
        };
        let _ = writeln!(
            out,
            "   cpu         target {}, load generator {}, over {:.2} s",
            cpu(self.target_cpu),
            cpu(self.load_cpu),
            self.active.as_secs_f64()
        );
    }

    fn write_warnings(&self, out: &mut String) {
        if self.load_saturated() {
            let _ = writeln!(
                out,
                "   LOAD GENERATOR SATURATED: it used over {:.0}% of its {} core(s); the target may be faster than these figures",
                100.0 * SATURATED,
                self.load_cores
            );
        }
        if self.pace_held() == Some(false) {
            let _ = writeln!(
                out,
                "   PACE NOT HELD: producers fell {:.0} ms behind schedule (the target answered too slowly for {} producers); latencies are for a lower rate",
                self.max_producer_lag.as_secs_f64() * 1e3,
                self.shape.producers
            );
        }
        if self.timed_out {
            let _ = writeln!(out, "   TIMED OUT after {:.1}s", self.elapsed.as_secs_f64());
        }
        if let Some(exit) = &self.target_exit {
            let _ = writeln!(out, "   the target EXITED during the run: {exit}");
        }
    }
}

/// A figure the project wants the broker to reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    DeliveriesRatioAtLeast(f64),
    P99RatioAtMost(f64),
    IngestAtLeast(f64),
    RssPerConnectionRatioAtMost(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::DeliveriesRatioAtLeast(r) => format!("deliveries/s >= {r}x baseline"),
            Goal::P99RatioAtMost(r) => format!("p99 latency <= {r}x baseline"),
            Goal::IngestAtLeast(n) => format!("ingest >= {n} events/s"),
            Goal::RssPerConnectionRatioAtMost(r) => {
                format!("memory per idle connection <= {r}x baseline")
            }
        }
    }

    /// The measured value and whether it meets the goal; `None` when a
    /// figure is missing.
    fn judge(self, broker: &RunReport, baseline: Option<&RunReport>) -> Option<(f64, bool)> {
        let ratio = |key: &str| Some(broker.metric(key)? / baseline?.metric(key)?);
        match self {
            Goal::DeliveriesRatioAtLeast(r) => ratio("deliveriesPerSec").map(|v| (v, v >= r)),
            Goal::P99RatioAtMost(r) => ratio("p99Ms").map(|v| (v, v <= r)),
            Goal::IngestAtLeast(n) => broker.ingest_per_sec().map(|v| (v, v >= n)),
            Goal::RssPerConnectionRatioAtMost(r) => {
                ratio("rssPerConnectionBytes").map(|v| (v, v <= r))
            }
        }
    }
}

/// Metrics a comparison can show: key, words, unit.
pub const METRICS: &[(&str, &str, &str)] = &[
    ("deliveriesPerSec", "deliveries/s", "/s"),
    ("ingestPerSec", "ingest events/s", "/s"),
    ("p50Ms", "latency p50", "ms"),
    ("p99Ms", "latency p99", "ms"),
    ("maxMs", "latency max", "ms"),
    ("rssPerConnectionBytes", "RSS per connection", "B"),
    ("peakRssBytes", "peak RSS", "B"),
    ("targetCpuSeconds", "target CPU time", "s"),
];

/// The broker/baseline comparison of one step: a JSON line and its text.
/// `headline` names the metrics this scenario is about, first the one its
/// goal is judged on.
pub fn compare(
    broker: Option<&RunReport>,
    baseline: Option<&RunReport>,
    label: &str,
    scenario: &str,
    headline: &[&str],
    goal: Option<Goal>,
) -> (Value, String) {
    let mut rows = Vec::new();
    let mut text = format!("══ {label}: broker / baseline\n");
    for &(key, words, unit) in METRICS {
        let b = broker.and_then(|r| r.metric(key));
        let base = baseline.and_then(|r| r.metric(key));
        if b.is_none() && base.is_none() {
            continue;
        }
        let ratio = match (b, base) {
            (Some(b), Some(base)) if base != 0.0 => Some(b / base),
            _ => None,
        };
        rows.push(json!({"metric": key, "broker": b, "baseline": base, "ratio": ratio}));
        let _ = writeln!(
            text,
            "   {words:<20} {:>14} / {:<14} = {}",
            value(b, unit),
            value(base, unit),
            ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "?".into())
        );
    }
    let correct = |r: Option<&RunReport>| r.map(RunReport::ok);
    let _ = writeln!(
        text,
        "   {:<20} broker {}, baseline {}",
        "correct",
        yes_no(correct(broker)),
        yes_no(correct(baseline))
    );
    let goal_json = goal.map(|g| {
        let judged = broker.and_then(|b| g.judge(b, baseline));
        let _ = writeln!(
            text,
            "   {:<20} {}: {}",
            "goal",
            g.text(),
            match judged {
                Some((v, met)) => format!("{v:.2} ({})", if met { "met" } else { "NOT MET" }),
                None => "cannot tell (a figure is missing)".into(),
            }
        );
        json!({"text": g.text(), "value": judged.map(|j| j.0), "met": judged.map(|j| j.1)})
    });
    let line = json!({
        "kind": "comparison",
        "scenario": scenario,
        "label": label,
        "headline": headline,
        "rows": rows,
        "correct": {"broker": correct(broker), "baseline": correct(baseline)},
        "goal": goal_json,
    });
    (line, text)
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not run",
    }
}

/// A figure in its unit, for people.
pub fn value(v: Option<f64>, unit: &str) -> String {
    match (v, unit) {
        (None, _) => "?".into(),
        (Some(v), "B") => bytes(v),
        (Some(v), "ms") => format!("{v:.2} ms"),
        (Some(v), "s") => format!("{v:.2} s"),
        (Some(v), _) => number(Some(v)),
    }
}

pub fn number(v: Option<f64>) -> String {
    let Some(v) = v else { return "?".into() };
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn bytes(b: f64) -> String {
    let abs = b.abs();
    if abs >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1048576.0)
    } else if abs >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: Kind, delivered: u64, p99_ms: u64) -> RunReport {
        RunReport {
            scenario: "fanout".into(),
            target,
            shape: Shape {
                subscribers: 10,
                ..Shape::default()
            },
            target_placement: String::new(),
            target_settings: Vec::new(),
            load_placement: String::new(),
            planned: 100,
            sent: 100,
            acked: 100,
            http_errors: 0,
            first_http_error: None,
            ingest_time: Duration::from_secs(1),
            expected_deliveries: delivered,
            delivered,
            delivery_time: Duration::from_secs(1),
            latency: Percentiles {
                count: delivered,
                p50: 1_000_000,
                p99: p99_ms * 1_000_000,
                max: p99_ms * 2_000_000,
            },
            max_producer_lag: Duration::ZERO,
            correctness: Correctness::default(),
            ack_check: AckCheck::default(),
            disconnects: 0,
            first_disconnect: None,
            error_codes: BTreeMap::new(),
            unparsed: 0,
            memory_before: Some(Memory {
                rss: 1000,
                hwm: 1000,
            }),
            memory_with_connections: Some(Memory {
                rss: 11_000,
                hwm: 11_000,
            }),
            peak_rss: Some(20_000),
            memory_end: None,
            timed_out: false,
            target_exit: None,
            active: Duration::from_secs(1),
            target_cpu: Some(Duration::from_millis(500)),
            load_cpu: None,
            load_cores: 1,
            elapsed: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_clean_run_is_ok_and_any_problem_is_not() {
        assert!(report(Kind::Broker, 1000, 5).ok());
        let mut lossy = report(Kind::Broker, 1000, 5);
        lossy.correctness.lost = 1;
        assert!(!lossy.ok());
        let mut short = report(Kind::Broker, 1000, 5);
        short.delivered = 999;
        assert!(!short.ok());
        let mut refused = report(Kind::Broker, 1000, 5);
        refused.acked = 90;
        assert!(!refused.ok());
        let mut dropped = report(Kind::Broker, 1000, 5);
        dropped.disconnects = 1;
        assert!(!dropped.ok());
    }

    #[test]
    fn figures_per_second_and_per_connection() {
        let r = report(Kind::Broker, 1000, 5);
        assert_eq!(r.deliveries_per_sec(), Some(1000.0));
        assert_eq!(r.rss_per_connection(), Some(1000.0));
        assert_eq!(r.metric("p99Ms"), Some(5.0));
    }

    #[test]
    fn comparison_ratios_and_goals() {
        let broker = report(Kind::Broker, 700, 30);
        let baseline = report(Kind::Baseline, 1000, 10);
        let (line, text) = compare(
            Some(&broker),
            Some(&baseline),
            "fanout",
            "fanout",
            &["deliveriesPerSec"],
            Some(Goal::DeliveriesRatioAtLeast(0.8)),
        );
        let row = &line["rows"][0];
        assert_eq!(row["metric"], "deliveriesPerSec");
        assert!((row["ratio"].as_f64().unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(line["goal"]["met"], false);
        assert!(text.contains("NOT MET"), "{text}");
        let p99 = Goal::P99RatioAtMost(2.0).judge(&broker, Some(&baseline));
        assert_eq!(p99, Some((3.0, false)));
        let ingest = Goal::IngestAtLeast(50.0).judge(&broker, None);
        assert_eq!(ingest, Some((100.0, true)));
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(number(Some(1234567.4)), "1,234,567");
        assert_eq!(number(Some(999.0)), "999");
        assert_eq!(bytes(2048.0), "2.0 KiB");
        assert_eq!(value(Some(1.234), "ms"), "1.23 ms");
    }
}
