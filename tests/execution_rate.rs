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
