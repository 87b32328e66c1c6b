//! The per-execution event rate (`max_events_per_sec_per_execution`): facts
//! over the rate are refused whole with 429 `rate-limited`; `agent-thinking`
//! is coalesced, the newest thought going out with the count it replaced in
//! `metadata.coalesced`; a thought still waiting at shutdown is stored.

mod common;

use common::{event, thinking, Broker};
use serde_json::{json, Value};

fn tool_call(execution_id: &str, n: u64) -> Value {
    event(
        "tool-call",
        execution_id,
        json!({"agentId": "agent-1", "toolName": "search", "metadata": {"n": n}}),
    )
}

#[tokio::test]
async fn facts_over_the_execution_rate_are_refused_whole_and_counted() {
    // 1 a second, bursts of 2: no refill to speak of while the test runs.
    let broker = Broker::builder()
        .setting("MAX_EVENTS_PER_SEC_PER_EXECUTION", 1)
        .start()
        .await;
    let mut watcher = broker.connect().await;
    watcher.subscribe_execution("busy").await;

    let three: Vec<Value> = (1..=3).map(|n| tool_call("busy", n)).collect();
    let (status, answer) = broker.post(&Value::Array(three)).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"]["code"], "rate-limited", "{answer}");
    assert_eq!(
        answer["error"]["index"], 2,
        "the third found no token: {answer}"
    );

    // Nothing of the refused batch was sequenced or spent: two still fit.
    let two: Vec<Value> = (1..=2).map(|n| tool_call("busy", n)).collect();
    let answer = broker.post_ok(&Value::Array(two)).await;
    assert_eq!(answer["events"][0]["seq"], 1, "{answer}");
    assert_eq!(answer["events"][1]["seq"], 2, "{answer}");
    let (status, _) = broker.post(&tool_call("busy", 3)).await;
    assert_eq!(status, 429);

    // Another execution has its own rate.
    assert_eq!(broker.post_event(&tool_call("calm", 1)).await, 1);

    let delivered = watcher.events(2).await;
    assert_eq!(common::seqs(&delivered), [1, 2]);
    let stats = broker.stats().await;
    assert_eq!(
        stats["eventsRejected"]["rate-limited"], 4,
        "3 + 1 events: {stats}"
    );
}

#[tokio::test]
async fn thoughts_over_the_rate_are_coalesced_newest_wins() {
    // 5 a second, bursts of 10.
    let broker = Broker::builder()
        .setting("MAX_EVENTS_PER_SEC_PER_EXECUTION", 5)
        .start()
        .await;
    let mut watcher = broker.connect().await;
    watcher.subscribe_execution("chatty").await;

    let thoughts: Vec<Value> = (1..=20).map(|n| thinking("chatty", n)).collect();
    let answer = broker.post_ok(&Value::Array(thoughts)).await;
    assert_eq!(answer["accepted"], 20, "{answer}");
    let answered = answer["events"].as_array().unwrap();
    for (i, item) in answered.iter().enumerate() {
        if i < 10 {
            assert_eq!(item["seq"], i as u64 + 1, "{answer}");
        } else {
            assert_eq!(item["seq"], Value::Null, "{answer}");
            assert_eq!(item["coalesced"], true, "{answer}");
        }
    }

    // The first ten, then the newest thought once a token comes back,
    // saying it replaced the nine between.
    let delivered = watcher.events(11).await;
    assert_eq!(common::seqs(&delivered), (1..=11).collect::<Vec<_>>());
    let last = &delivered[10];
    assert_eq!(last["step"], 20, "the newest thought wins: {last}");
    assert_eq!(last["metadata"]["coalesced"], 9, "{last}");
    assert_eq!(
        last["metadata"]["n"], 20,
        "its own metadata is kept: {last}"
    );
    assert_eq!(delivered[9]["metadata"].get("coalesced"), None);

    let stats = broker
        .wait_for_stats("no thought waiting", |s| s["thoughtsWaiting"] == 0)
        .await;
    assert_eq!(stats["thoughtsCoalesced"], 9, "{stats}");
    assert_eq!(stats["eventsRejected"]["rate-limited"], 0, "{stats}");
    let (_, _, metrics) = broker.get("/metrics").await;
    assert!(
        metrics.contains("agent_events_thoughts_coalesced_total 9"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_thought_waiting_at_shutdown_is_stored_and_delivered() {
    // 1 a second, bursts of 2: the next token comes a second after the burst,
    // far later than the shutdown below.
    let mut broker = Broker::builder()
        .setting("MAX_EVENTS_PER_SEC_PER_EXECUTION", 1)
        .start()
        .await;
    let mut watcher = broker.connect().await;
    watcher.subscribe_execution("late").await;
    let thoughts: Vec<Value> = (1..=5).map(|n| thinking("late", n)).collect();
    let answer = broker.post_ok(&Value::Array(thoughts)).await;
    assert_eq!(answer["events"][4]["coalesced"], true, "{answer}");
    let stats = broker.stats().await;
    assert_eq!(stats["thoughtsWaiting"], 1, "{stats}");
    assert_eq!(stats["thoughtsCoalesced"], 2, "{stats}");

    broker.signal(libc::SIGTERM);
    // Seen means stored: the thought reaches the client only once committed.
    let (messages, close) = watcher.until_close().await;
    assert_eq!(close, Some(1001), "{messages:?}");
    let events: Vec<Value> = messages
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["event"].clone())
        .collect();
    assert_eq!(common::seqs(&events), [1, 2, 3]);
    assert_eq!(events[2]["step"], 5, "{events:?}");
    assert_eq!(events[2]["metadata"]["coalesced"], 2, "{events:?}");
    let status = broker.wait_exit(common::STEP).await;
    assert!(status.success(), "{status:?}\n{}", broker.output());
}

/// A batch coalesced whole has nothing to wait for: its 202 comes at once.
/// It used to wait on a commit that held none of its events and, when the
/// Persister found nothing to write, got 503 `store-unavailable` ("the
/// broker stopped…") though its thought was later stored and delivered.
/// Eight producers post twelve batches of fifty thoughts each to one
/// execution at the default rate; every POST must be accepted, and what
/// went out must add up: each thought got a seq at once, went out later
/// (the one waiting), or was replaced and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_coalesced_whole_are_accepted_at_once_under_concurrent_producers() {
    const EXECUTION: &str = "coalesced-whole";
    const PRODUCERS: u64 = 8;
    const BATCHES: u64 = 12;
    const PER_BATCH: u64 = 50;
    // The default rate (100 a second, bursts of 200), which the harness turns off.
    let broker = Broker::builder()
        .setting("MAX_EVENTS_PER_SEC_PER_EXECUTION", 100)
        .start()
        .await;
    let broker = std::sync::Arc::new(broker);
    let mut watcher = broker.connect().await;
    watcher.subscribe_execution(EXECUTION).await;

    let posting = (0..PRODUCERS).map(|producer| {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for batch in 0..BATCHES {
                let first = (producer * BATCHES + batch) * PER_BATCH;
                let thoughts: Vec<Value> = (first..first + PER_BATCH)
                    .map(|n| thinking(EXECUTION, n))
                    .collect();
                answers.push(broker.post(&Value::Array(thoughts)).await);
            }
            answers
        })
    });
    let mut given_now = Vec::new();
    for producer in futures_util::future::join_all(posting).await {
        for (status, answer) in producer.expect("producer") {
            assert_eq!(status, 202, "{answer}");
            for item in answer["events"].as_array().expect("events") {
                match item["seq"].as_u64() {
                    Some(seq) => given_now.push(seq),
                    None => assert_eq!(item["coalesced"], true, "{answer}"),
                }
            }
        }
    }
    let stats = broker
        .wait_for_stats("no thought waiting", |s| s["thoughtsWaiting"] == 0)
        .await;
    // Each thought got a seq at once, went out later (the waiting one), or
    // was replaced and counted: what reaches the watcher adds up to it all.
    let replaced = stats["thoughtsCoalesced"]
        .as_u64()
        .expect("thoughtsCoalesced");
    let last_seq = PRODUCERS * BATCHES * PER_BATCH - replaced;
    given_now.sort_unstable();
    given_now.dedup();
    assert!(given_now.last() <= Some(&last_seq), "{stats}");
    let delivered = watcher.events(last_seq as usize).await;
    assert_eq!(common::seqs(&delivered), (1..=last_seq).collect::<Vec<_>>());
    let (_, more) = broker.post(&thinking(EXECUTION, 0)).await;
    let next = more["events"][0]["seq"].as_u64();
    assert!(
        next.is_none_or(|seq| seq == last_seq + 1),
        "nothing went out uncounted: {more} after {last_seq}"
    );
}
