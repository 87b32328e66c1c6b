//! `--demo` of the real binary: subscribed to conversation `demo`, a client
//! sees whole simulated executions (`demo-<unix secs>-<n>`) go from
//! `orchestration-start` to `orchestration-complete` with seqs 1..n, no gap,
//! and every one of the 11 event types.

mod common;

use common::{seqs, Broker, TYPES};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for one complete demo execution.
const WHOLE_RUN: Duration = Duration::from_secs(90);

/// Whether `id` is `demo-<unix secs>-<n>` with the seconds within a day of now.
fn is_demo_id(id: &str) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let parts: Vec<&str> = id.split('-').collect();
    let [prefix, secs, n] = parts[..] else {
        return false;
    };
    let number = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<u64>().ok())
            .flatten()
    };
    prefix == "demo"
        && number(n).is_some()
        && number(secs).is_some_and(|secs| secs.abs_diff(now) < 86_400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_whole_executions_with_every_type() {
    let broker = Broker::builder()
        .arg("--demo")
        .setting("DEMO_PACE_MS", 5)
        .start()
        .await;
    let mut client = broker.connect().await;
    let answer = client.subscribe(json!({"conversationId": "demo"})).await;
    assert_eq!(answer["replayed"], 0, "{answer}");

    let mut runs: HashMap<String, Vec<Value>> = HashMap::new();
    let started = Instant::now();
    let complete = loop {
        assert!(
            started.elapsed() < WHOLE_RUN,
            "no demo execution went from start to complete within {WHOLE_RUN:?}; seen: {:?}",
            runs.iter()
                .map(|(id, events)| (id, events.len()))
                .collect::<Vec<_>>()
        );
        let message = client.next_event().await;
        let execution = message["executionId"].as_str().unwrap().to_owned();
        let event = message["event"].clone();
        assert!(
            is_demo_id(&execution),
            "demo execution ids are demo-<secs>-<n>: {execution}"
        );
        assert_eq!(event["conversationId"], "demo", "{event}");
        let run = runs.entry(execution.clone()).or_default();
        run.push(event.clone());
        // Only runs seen from their first event count: we may join mid-run.
        if event["type"] == "orchestration-complete" && run[0]["seq"] == 1 {
            break runs.remove(&execution).unwrap();
        }
    };

    assert_eq!(
        complete[0]["type"], "orchestration-start",
        "{}",
        complete[0]
    );
    let n = complete.len() as u64;
    assert_eq!(
        seqs(&complete),
        (1..=n).collect::<Vec<_>>(),
        "seqs 1..n, in order, no gap"
    );
    let types: BTreeSet<&str> = complete.iter().filter_map(|e| e["type"].as_str()).collect();
    let all: BTreeSet<&str> = TYPES.into_iter().collect();
    assert_eq!(types, all, "a demo execution shows every event type");
    assert!(
        complete.iter().all(|e| e["timestamp"].is_string()),
        "every event is stamped"
    );
}
