//! The scenarios: presets of one or more run shapes, each run against the
//! broker and the baseline in turn and compared.

use crate::report::{self, Goal};
use crate::run;
use crate::shape::{Overrides, Shape};
use crate::system;
use crate::target::{Kind, StartOptions, Target};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

/// One run shape of a scenario, with what it is judged on.
pub struct Step {
    pub shape: Shape,
    pub goal: Option<Goal>,
    /// The metrics this step is about (keys of [`report::METRICS`]).
    pub headline: &'static [&'static str],
}

pub const NAMES: &[&str] = &["fanout", "paced", "ingest", "idle", "scaling", "custom"];

/// Broker limits a load generator trips by being one client address, and
/// their defaults (config/default.toml). A shape that needs more raises
/// them for the broker child; the report lists what was set.
const BROKER_MAX_SUBSCRIPTIONS: usize = 128;
const BROKER_MAX_CONNECTIONS: usize = 20_000;
const BROKER_MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// Bursts may be twice the per-second figure.
const BROKER_MESSAGE_BURST: usize = 2 * 50;

/// Open files the tool needs besides its subscribers (producers, the
/// target's pipes, the runtime).
const SPARE_FILES: u64 = 256;

/// Producers of the flat-out scenarios (fan-out, scaling).
const FLAT_OUT_PRODUCERS: usize = 32;

/// The steps of a named scenario.
pub fn preset(name: &str) -> Result<Vec<Step>, String> {
    let step = |shape: Shape, goal, headline| Step {
        shape,
        goal,
        headline,
    };
    Ok(match name {
        "custom" => vec![step(Shape::default(), None, &["deliveriesPerSec", "p99Ms"])],
        // Fan-out throughput: every event to 100 subscribers.
        "fanout" => vec![step(
            Shape {
                label: "fanout".into(),
                subscribers: 1000,
                executions: 10,
                // Enough requests in flight that the broker's group commit
                // (a 202 waits for SQLite's fsync) does not hide its fan-out:
                // with 8, the broker idled a fifth of the time between
                // commits (PERFORMANCE.md, "Requests in flight").
                producers: FLAT_OUT_PRODUCERS,
                batch: 10,
                events: 20_000,
                ..Shape::default()
            },
            Some(Goal::DeliveriesRatioAtLeast(0.8)),
            &["deliveriesPerSec", "p99Ms", "targetCpuSeconds"],
        )],
        // Latency at a steady, moderate rate: single events, each its own POST.
        "paced" => vec![step(
            Shape {
                label: "paced".into(),
                subscribers: 1000,
                executions: 10,
                // The broker answers a POST once SQLite committed it (a few
                // ms): enough requests in flight to hold the pace anyway.
                producers: 64,
                batch: 1,
                events: 20_000,
                rate: Some(2000.0),
                window: 0,
                ..Shape::default()
            },
            Some(Goal::P99RatioAtMost(2.0)),
            &["p99Ms", "p50Ms", "targetCpuSeconds"],
        )],
        // Ingest alone: batches of 100 over 100 executions, nobody listening.
        "ingest" => vec![step(
            Shape {
                label: "ingest".into(),
                subscribers: 0,
                executions: 100,
                producers: 8,
                batch: 100,
                events: 200_000,
                ..Shape::default()
            },
            Some(Goal::IngestAtLeast(50_000.0)),
            &["ingestPerSec", "targetCpuSeconds"],
        )],
        // Memory per idle connection; one event per execution afterwards
        // proves every connection still works.
        "idle" => vec![step(
            Shape {
                label: "idle".into(),
                subscribers: 10_000,
                executions: 100,
                producers: 1,
                batch: 100,
                events: 100,
                idle_settle: Some(Duration::from_secs(2)),
                timeout: Duration::from_secs(180),
                connect_concurrency: 256,
                ..Shape::default()
            },
            Some(Goal::RssPerConnectionRatioAtMost(1.5)),
            &["rssPerConnectionBytes", "peakRssBytes"],
        )],
        "scaling" => scaling(),
        other => {
            return Err(format!(
                "unknown scenario `{other}` (one of {})",
                NAMES.join(", ")
            ))
        }
    })
}

/// Subscribers 100 → 1,000 → 10,000 on 10 executions, then executions
/// 100 → 1,000 → 10,000 under 1,000 subscribers. Each step posts about a
/// million deliveries' worth of events (at most 100,000 events), flat-out.
fn scaling() -> Vec<Step> {
    let series = [
        (100, 10),
        (1_000, 10),
        (10_000, 10),
        (1_000, 100),
        (1_000, 1_000),
        (1_000, 10_000),
    ];
    series
        .into_iter()
        .map(|(subscribers, executions)| {
            let mut shape = Shape {
                label: format!("scaling subscribers={subscribers} executions={executions}"),
                subscribers,
                executions,
                producers: FLAT_OUT_PRODUCERS,
                batch: 10,
                timeout: Duration::from_secs(180),
                connect_concurrency: 256,
                ..Shape::default()
            };
            let per_event = (subscribers * shape.per_connection() / executions).max(1) as u64;
            shape.events = (1_000_000 / per_event).clamp(2 * executions as u64, 100_000);
            Step {
                shape,
                goal: None,
                headline: &[
                    "deliveriesPerSec",
                    "p99Ms",
                    "targetCpuSeconds",
                    "rssPerConnectionBytes",
                ],
            }
        })
        .collect()
}

/// What `run` was asked to do.
pub struct Options {
    pub scenario: String,
    pub targets: Vec<Kind>,
    /// A running target instead of children (`--url`), and its pid.
    pub url: Option<SocketAddr>,
    /// More nodes of that cluster (`--also-url`).
    pub also: Vec<SocketAddr>,
    pub pid: Option<u32>,
    pub start: StartOptions,
    pub overrides: Overrides,
    pub load_placement: String,
}

/// Runs every step against every target. True when every run was clean.
pub async fn execute(options: Options) -> Result<bool, String> {
    let mut steps = preset(&options.scenario)?;
    for step in &mut steps {
        options.overrides.apply(&mut step.shape);
        step.shape.check()?;
    }
    let wanted = steps
        .iter()
        .map(|s| (s.shape.subscribers + s.shape.producers) as u64 + SPARE_FILES)
        .max()
        .unwrap_or(SPARE_FILES);
    let files = match system::raise_nofile(wanted) {
        Ok(limit) => limit,
        Err(advice) => {
            eprintln!("warning: {advice}");
            system::nofile_limit()
        }
    };
    let mut all_ok = true;
    for step in &steps {
        let shape = &step.shape;
        let mut reports = Vec::new();
        for &kind in &options.targets {
            let needed = (shape.subscribers + shape.producers) as u64 + SPARE_FILES;
            let outcome = if needed > files {
                Err(format!(
                    "{} connections need about {needed} open files but the limit is {files}: \
                     run `ulimit -n {needed}` (as root if the hard limit is lower) and try again",
                    shape.subscribers
                ))
            } else {
                run_one(&options, kind, shape).await
            };
            match outcome {
                Ok(report) => {
                    println!("{}", report.to_json());
                    eprint!("{}", report.summary());
                    all_ok &= report.ok();
                    reports.push(report);
                }
                Err(error) => {
                    all_ok = false;
                    eprintln!(
                        "── {} · {} · COULD NOT RUN: {error}",
                        shape.label,
                        kind.name()
                    );
                    let line = json!({
                        "kind": "error",
                        "scenario": options.scenario,
                        "label": shape.label,
                        "target": kind.name(),
                        "error": error,
                    });
                    println!("{line}");
                }
            }
        }
        if options.targets.len() == 2 {
            let find = |k: Kind| reports.iter().find(|r| r.target == k);
            let (line, text) = report::compare(
                find(Kind::Broker),
                find(Kind::Baseline),
                &shape.label,
                &options.scenario,
                step.headline,
                step.goal,
            );
            println!("{line}");
            eprint!("{text}");
        }
    }
    Ok(all_ok)
}

/// Settings for the broker child so that it measures its work, not its
/// per-client limits: every connection of this tool comes from 127.0.0.1,
/// and all its producers share that address.
fn broker_settings(shape: &Shape) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut set = |key: &str, value: String| env.push((format!("AGENT_EVENTS_{key}"), value));
    // The producers' rate limit is per address: here it would cap the
    // whole tool, and the ingest scenario would measure the limiter.
    set("MAX_EVENTS_PER_SEC_PER_PRODUCER", "1000000000".into());
    // Flat-out scenarios push far past the original design's 100 a second per execution:
    // measuring capacity means the per-execution policy is off.
    set("MAX_EVENTS_PER_SEC_PER_EXECUTION", "0".into());
    let connections = shape.subscribers + shape.producers + 16;
    if connections > BROKER_MAX_CONNECTIONS_PER_IP {
        set("MAX_CONNECTIONS_PER_IP", connections.to_string());
    }
    if connections > BROKER_MAX_CONNECTIONS {
        set("MAX_CONNECTIONS", connections.to_string());
    }
    let per_connection = shape.per_connection();
    if per_connection > BROKER_MAX_SUBSCRIPTIONS {
        set("MAX_SUBSCRIPTIONS", per_connection.to_string());
    }
    if per_connection > BROKER_MESSAGE_BURST {
        // Each subscriber sends all its subscribes at once.
        set("MAX_MESSAGES_PER_SEC", per_connection.to_string());
    }
    env
}

async fn run_one(
    options: &Options,
    kind: Kind,
    shape: &Shape,
) -> Result<report::RunReport, String> {
    let mut target = match options.url {
        Some(addr) => Target::external(kind, addr, options.pid).with_nodes(&options.also),
        None => {
            let mut env = broker_settings(shape);
            env.extend(options.start.env.iter().cloned());
            let start = StartOptions {
                broker_bin: options.start.broker_bin.clone(),
                env,
                cpu: options.start.cpu,
                baseline_fault: options.start.baseline_fault,
            };
            Target::start(kind, &start).await?
        }
    };
    eprintln!(
        "── {} · {}: running on {} ({})",
        shape.label,
        kind.name(),
        target.addr,
        target.placement
    );
    let result = run::run(
        &mut target,
        shape,
        &options.scenario,
        &options.load_placement,
    )
    .await;
    let result = result.map_err(|e| {
        let tail = target.log_tail();
        if tail.is_empty() {
            e
        } else {
            format!("{e}\n   the target's last output:\n{tail}")
        }
    });
    target.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_a_valid_shape() {
        for name in NAMES {
            for step in preset(name).unwrap() {
                step.shape.check().unwrap();
                assert!(!step.headline.is_empty());
            }
        }
        assert!(preset("nope").is_err());
    }

    #[test]
    fn broker_limits_are_raised_only_where_the_shape_needs_it() {
        let keys = |shape: &Shape| -> Vec<String> {
            broker_settings(shape).into_iter().map(|(k, _)| k).collect()
        };
        let small = Shape::default();
        assert_eq!(
            keys(&small),
            [
                "AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_PRODUCER",
                "AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_EXECUTION"
            ]
        );
        let idle = &preset("idle").unwrap()[0].shape;
        assert!(keys(idle).contains(&"AGENT_EVENTS_MAX_CONNECTIONS_PER_IP".to_owned()));
        let wide = Shape {
            subscribers: 10,
            executions: 2000,
            ..Shape::default()
        };
        let settings = broker_settings(&wide);
        assert!(settings.contains(&("AGENT_EVENTS_MAX_SUBSCRIPTIONS".into(), "200".into())));
        assert!(settings.contains(&("AGENT_EVENTS_MAX_MESSAGES_PER_SEC".into(), "200".into())));
    }

    #[test]
    fn the_scaling_series_covers_both_axes() {
        let steps = scaling();
        let axes: Vec<(usize, usize)> = steps
            .iter()
            .map(|s| (s.shape.subscribers, s.shape.executions))
            .collect();
        assert!(axes.contains(&(100, 10)) && axes.contains(&(10_000, 10)));
        assert!(axes.contains(&(1_000, 10_000)));
        for step in &steps {
            // Every execution gets events, and no step is endless.
            assert!(step.shape.events >= step.shape.executions as u64);
            assert!(step.shape.events <= 100_000);
        }
    }
}
