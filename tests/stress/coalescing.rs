//! Coalescing under concurrent producers: many producers post batches of
//! thoughts, some with a fact among them, to a few executions at a rate
//! the per-execution limit must coalesce. No answer may claim a failure
//! (no 5xx: a 503 there once came for batches that were later stored); a
//! batch is accepted (202) or refused whole for its fact (429); and what
//! went out adds up: every accepted event got a seq, waited and went out,
//! or was replaced and counted, and each subscriber got every seq once.

use super::load::Dice;
use crate::common::{self, Broker};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const EXECUTIONS: [&str; 3] = ["stress-rate-a", "stress-rate-b", "stress-rate-c"];
const PER_BATCH: u64 = 20;

/// What one producer posted and was answered.
#[derive(Default)]
struct Posted {
    /// Events of accepted batches.
    accepted: u64,
    /// Seqs of accepted facts, by execution.
    facts: Vec<(&'static str, u64)>,
}

/// `producers` producers post `batches` batches each; the broker's rate is
/// `per_sec` events a second per execution (bursts of twice that).
pub async fn coalescing_under_concurrent_producers(producers: u64, batches: u64, per_sec: u64) {
    let broker = Broker::builder()
        .setting("MAX_EVENTS_PER_SEC_PER_EXECUTION", per_sec)
        .start()
        .await;
    let broker = Arc::new(broker);
    let mut watchers = Vec::new();
    for execution in EXECUTIONS {
        let mut watcher = broker.connect().await;
        watcher.subscribe_execution(execution).await;
        watchers.push(watcher);
    }
    let posting = (0..producers).map(|p| tokio::spawn(produce(broker.clone(), p, batches)));
    let mut accepted = 0;
    let mut facts = Vec::new();
    for posted in futures_util::future::join_all(posting).await {
        let posted = posted.expect("a producer failed");
        accepted += posted.accepted;
        facts.extend(posted.facts);
    }
    // Every waiting thought went out, and everything sequenced is stored.
    let stats = broker
        .wait_for_stats("no thought waiting, all stored", |s| {
            s["thoughtsWaiting"] == 0 && s["eventsStored"] == s["eventsIn"]
        })
        .await;
    let replaced = stats["thoughtsCoalesced"]
        .as_u64()
        .expect("thoughtsCoalesced");
    let went_out = accepted - replaced;
    // Each watcher reads its execution to its last seq; together they must
    // hold every event that went out, each once and in order.
    let mut delivered = BTreeMap::new();
    let mut total = 0;
    for (execution, mut watcher) in EXECUTIONS.into_iter().zip(watchers) {
        let last = last_seq(&broker, execution).await;
        let events = watcher.events(last as usize).await;
        assert_eq!(
            common::seqs(&events),
            (1..=last).collect::<Vec<_>>(),
            "{execution}"
        );
        watcher.ping().await; // nothing beyond the store's last
        delivered.insert(execution, events);
        total += last;
    }
    assert_eq!(
        total, went_out,
        "{accepted} accepted, {replaced} replaced: {stats}"
    );
    for (execution, seq) in facts {
        let event = &delivered[execution][seq as usize - 1];
        assert_eq!(event["type"], "tool-call", "{execution} seq {seq}: {event}");
    }
}

async fn produce(broker: Arc<Broker>, producer: u64, batches: u64) -> Posted {
    let mut dice = Dice::new(producer + 100);
    let mut posted = Posted::default();
    for b in 0..batches {
        let execution = EXECUTIONS[dice.below(EXECUTIONS.len() as u64) as usize];
        let with_fact = dice.below(4) == 0;
        let first = (producer * batches + b) * PER_BATCH;
        let batch: Vec<Value> = (first..first + PER_BATCH)
            .map(|n| match (with_fact, n - first) {
                (true, 0) => common::event(
                    "tool-call",
                    execution,
                    json!({"agentId": "agent-1", "toolName": "search", "metadata": {"n": n}}),
                ),
                _ => common::thinking(execution, n),
            })
            .collect();
        let (status, answer) = broker.post(&Value::Array(batch)).await;
        match status {
            202 => {
                posted.accepted += PER_BATCH;
                let items = answer["events"].as_array().expect("events");
                if with_fact {
                    let seq = items[0]["seq"].as_u64().expect("a fact is never coalesced");
                    posted.facts.push((execution, seq));
                }
                for item in items {
                    assert!(
                        item["seq"].is_u64() || item["coalesced"] == true,
                        "{answer}"
                    );
                }
            }
            429 if with_fact => {
                assert_eq!(answer["error"]["code"], "rate-limited", "{answer}");
            }
            _ => panic!("producer {producer} batch {b}: {status} {answer}"),
        }
    }
    posted
}

async fn last_seq(broker: &Broker, execution: &str) -> u64 {
    let (status, stats) = broker
        .get_json(&format!("/api/executions/{execution}/stats"))
        .await;
    assert_eq!(status, 200, "{stats}");
    stats["lastSeq"].as_u64().expect("lastSeq")
}
