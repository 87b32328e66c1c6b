//! Retries under load: several producers post keyed batches, and each
//! retries every batch one to three times, some retries sequentially, some
//! all at once. At the end every execution's stored and delivered seqs are
//! gapless, each batch's events are there exactly once, and every retry got
//! the first attempt's answer.
//!
//! Called from `tests/stress.rs` (`mod common; mod stress { pub mod retries; }`).

use crate::common::{seqs, Broker};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the whole scenario may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The execution every producer also writes to, so batches interleave.
const SHARED: &str = "stress-retry-shared";

/// A small deterministic generator: the scenario is the same on every run,
/// the timing is what varies.
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 29)
}

fn own_execution(producer: usize) -> String {
    format!("stress-retry-{producer}")
}

/// Batch `batch` of `producer`: one to five events, in its own execution
/// and in the shared one, each naming its producer, batch and index.
fn batch_events(producer: usize, batch: usize) -> Vec<Value> {
    let size = 1 + mix(producer as u64, batch as u64) % 5;
    (0..size)
        .map(|index| {
            let execution = if (index + batch as u64) % 3 == 0 {
                SHARED.to_owned()
            } else {
                own_execution(producer)
            };
            json!({
                "type": "agent-thinking",
                "executionId": execution,
                "agentId": format!("producer-{producer}"),
                "thought": format!("batch {batch} event {index}"),
                "metadata": {"p": producer, "b": batch, "i": index},
            })
        })
        .collect()
}

/// What identifies one posted event.
type Id = (u64, u64, u64);

fn id_of(event: &Value) -> Id {
    let m = &event["metadata"];
    let n = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{k} in {event}"));
    (n("p"), n("b"), n("i"))
}

/// Posts every batch of `producer`, each with its retries; returns for each
/// event the (execution, seq) its first receipt gave.
async fn produce(broker: Arc<Broker>, producer: usize, batches: usize) -> Vec<(Id, String, u64)> {
    let mut given = Vec::new();
    for batch in 0..batches {
        let events = batch_events(producer, batch);
        let body = Value::Array(events.clone());
        let key = format!("stress-p{producer}-b{batch}");
        let retries = 1 + mix(batch as u64, producer as u64 + 7) % 3;
        let concurrent = mix(producer as u64 + 3, batch as u64) % 2 == 0;
        let answers: Vec<(u16, Value, bool)> = if concurrent {
            // The first attempt and its retries all at once: one sequences,
            // the others wait for its outcome.
            let posts = (0..=retries).map(|_| {
                let (broker, key, body) = (broker.clone(), key.clone(), body.clone());
                tokio::spawn(async move { broker.post_keyed(&key, &body).await })
            });
            let mut answers = Vec::new();
            for post in posts.collect::<Vec<_>>() {
                answers.push(post.await.expect("a post task"));
            }
            answers
        } else {
            let mut answers = Vec::new();
            for _ in 0..=retries {
                answers.push(broker.post_keyed(&key, &body).await);
            }
            answers
        };
        let first = &answers[0].1;
        for (status, answer, _) in &answers {
            assert_eq!(*status, 202, "{key}: {answer}");
            assert_eq!(answer, first, "{key}: every attempt gets the first answer");
        }
        let replays = answers.iter().filter(|(_, _, replayed)| *replayed).count();
        assert_eq!(
            replays,
            answers.len() - 1,
            "{key}: one first attempt, the rest replays"
        );
        let listed = first["events"].as_array().expect("a receipt");
        assert_eq!(listed.len(), events.len(), "{key}: {first}");
        for (event, item) in events.iter().zip(listed) {
            let seq = item["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{key}: {first}"));
            assert_eq!(item["executionId"], event["executionId"], "{key}: {first}");
            let execution = event["executionId"].as_str().unwrap().to_owned();
            given.push((id_of(event), execution, seq));
        }
    }
    given
}

/// The scenario; panics on any duplicate, gap, loss or differing answer.
pub async fn retried_batches_are_stored_once(producers: usize, batches: usize) {
    let started = Instant::now();
    let broker = Arc::new(Broker::start().await);
    let mut executions: Vec<String> = (0..producers).map(own_execution).collect();
    executions.push(SHARED.to_owned());
    let mut clients = Vec::new();
    for execution in &executions {
        let mut client = broker.connect().await;
        client.subscribe_execution(execution).await;
        clients.push(client);
    }

    let tasks: Vec<_> = (0..producers)
        .map(|p| tokio::spawn(produce(broker.clone(), p, batches)))
        .collect();
    let mut given = Vec::new();
    for task in tasks {
        given.extend(
            tokio::time::timeout(LIMIT, task)
                .await
                .expect("the producers finish within the limit")
                .expect("a producer"),
        );
    }

    // Where each event should be, by the receipts.
    let mut expected: BTreeMap<String, BTreeMap<u64, Id>> = BTreeMap::new();
    for (id, execution, seq) in &given {
        let previous = expected
            .entry(execution.clone())
            .or_default()
            .insert(*seq, *id);
        assert!(previous.is_none(), "{execution} seq {seq} given twice");
    }
    let mut posted = BTreeSet::new();
    for (id, _, _) in &given {
        assert!(posted.insert(*id), "{id:?} answered twice");
    }

    for (execution, client) in executions.iter().zip(&mut clients) {
        let want = expected.remove(execution).unwrap_or_default();
        let count = want.len() as u64;
        let gapless: Vec<u64> = (1..=count).collect();
        assert_eq!(
            want.keys().copied().collect::<Vec<_>>(),
            gapless,
            "{execution}: receipts"
        );

        let stored = broker.stored(execution).await;
        assert_eq!(
            seqs(&stored),
            gapless,
            "{execution}: stored once each, no gap"
        );
        for event in &stored {
            let seq = event["seq"].as_u64().unwrap();
            assert_eq!(
                id_of(event),
                want[&seq],
                "{execution} seq {seq}: the receipt's event"
            );
        }

        let delivered = client.events(count as usize).await;
        assert_eq!(
            seqs(&delivered),
            gapless,
            "{execution}: delivered once each, no gap"
        );
        for event in &delivered {
            assert_eq!(id_of(event), want[&event["seq"].as_u64().unwrap()]);
        }
        // Nothing more was waiting: no duplicate delivery after the last.
        client.ping().await;
    }
    assert!(
        started.elapsed() < LIMIT,
        "the scenario took {:?}",
        started.elapsed()
    );
}
