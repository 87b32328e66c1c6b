//! The tool end to end, against its own baseline: a tiny scenario must come
//! out clean, and a baseline told to drop, double or swap frames must be
//! caught. Nothing here asserts a timing; every run is bounded by its own
//! `--timeout`.

use serde_json::Value;
use std::process::Command;

/// 5 subscribers on 2 executions (3 on one, 2 on the other), 200 events.
const SUBSCRIBERS: u64 = 5;
const EVENTS: u64 = 200;
const DELIVERIES: u64 = 3 * (EVENTS / 2) + 2 * (EVENTS / 2);

/// Runs the tool against the baseline; its exit success and the run's JSON line.
fn run_baseline(extra: &[&str]) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_agent-events-load"))
        .args(["run", "--target", "baseline", "--no-pin", "--timeout", "30"])
        .args([
            "--subscribers",
            &SUBSCRIBERS.to_string(),
            "--executions",
            "2",
        ])
        .args([
            "--events",
            &EVENTS.to_string(),
            "--batch",
            "5",
            "--producers",
            "2",
        ])
        .args(extra)
        .output()
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let runs: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "run")
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "one run line expected; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (output.status.success(), runs.into_iter().next().unwrap())
}

fn count(run: &Value, path: &[&str]) -> u64 {
    let mut v = run;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {run}"))
}

#[test]
fn a_tiny_run_against_the_baseline_is_clean() {
    let (success, run) = run_baseline(&[]);
    assert!(success, "exit status says a problem: {run}");
    assert_eq!(run["ok"], true, "{run}");
    assert_eq!(count(&run, &["ingest", "acked"]), EVENTS);
    assert_eq!(count(&run, &["delivery", "expected"]), DELIVERIES);
    assert_eq!(count(&run, &["delivery", "delivered"]), DELIVERIES);
    assert_eq!(count(&run, &["latencyMs", "samples"]), DELIVERIES);
    for key in [
        "lost",
        "duplicated",
        "reordered",
        "unexpected",
        "disconnects",
    ] {
        assert_eq!(count(&run, &["correctness", key]), 0, "{key}: {run}");
    }
    assert_eq!(count(&run, &["correctness", "ackGaps"]), 0);
    assert!(run["memory"]["peakRssBytes"].as_u64().unwrap() > 0, "{run}");
}

#[test]
fn lost_events_are_caught() {
    let (success, run) = run_baseline(&["--baseline-fault", "drop:7", "--drain-stall", "1"]);
    assert!(!success, "a lossy target must fail the run: {run}");
    assert_eq!(run["ok"], false);
    assert!(count(&run, &["correctness", "lost"]) > 0, "{run}");
    assert_eq!(count(&run, &["correctness", "duplicated"]), 0, "{run}");
}

#[test]
fn duplicated_events_are_caught() {
    let (success, run) = run_baseline(&["--baseline-fault", "dup:7"]);
    assert!(!success, "{run}");
    assert!(count(&run, &["correctness", "duplicated"]) > 0, "{run}");
    assert_eq!(count(&run, &["correctness", "lost"]), 0, "{run}");
}

#[test]
fn reordered_events_are_caught() {
    let (success, run) = run_baseline(&["--baseline-fault", "reorder:7"]);
    assert!(!success, "{run}");
    assert!(count(&run, &["correctness", "reordered"]) > 0, "{run}");
}
