//! Idempotent publish over HTTP, black-box: a batch posted again under the
//! same `Idempotency-Key` gets the first receipt and is stored and delivered
//! once, also when the retries arrive together or after a `kill -9`; a
//! different batch under a used key is refused with `idempotency-key-reused`;
//! a refused attempt pins nothing; without a key nothing changes.

mod common;

use common::{seqs, thinking, Broker, DataDir};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A batch of `n` thoughts in `execution`, numbered from `first`.
fn batch(execution: &str, first: u64, n: u64) -> Value {
    Value::Array((first..first + n).map(|i| thinking(execution, i)).collect())
}

/// The seqs a 202 answer lists, in order.
fn receipt_seqs(answer: &Value) -> Vec<u64> {
    answer["events"]
        .as_array()
        .unwrap_or_else(|| panic!("a receipt lists events: {answer}"))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("a seq in {e}")))
        .collect()
}

/// The `metadata.n` of stored or delivered thoughts, in order.
fn numbers(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["metadata"]["n"].as_u64().expect("a thought from batch()"))
        .collect()
}

#[tokio::test]
async fn a_retried_batch_gets_the_first_receipt_and_is_stored_and_delivered_once() {
    let broker = Broker::start().await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-retry").await;

    let body = batch("exec-retry", 1, 10);
    let (status, first, replayed) = broker.post_keyed("batch-0001", &body).await;
    assert_eq!(status, 202, "{first}");
    assert!(!replayed, "a first attempt is no replay");
    assert_eq!(receipt_seqs(&first), (1..=10).collect::<Vec<_>>());

    let (status, retry, replayed) = broker.post_keyed("batch-0001", &body).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry, first, "a retry gets the same 202 body");
    assert!(replayed, "the retry's answer says it is the first one's");

    assert_eq!(
        seqs(&broker.stored("exec-retry").await),
        (1..=10).collect::<Vec<_>>()
    );
    // An unkeyed event after the retry: the next thing delivered after the
    // batch is this one, with seq 11, so nothing was delivered twice.
    let marker = broker.post_event(&thinking("exec-retry", 99)).await;
    assert_eq!(marker, 11, "the retry took no seq");
    let delivered = client.events(11).await;
    assert_eq!(seqs(&delivered), (1..=11).collect::<Vec<_>>());
    assert_eq!(numbers(&delivered[..10]), (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_retries_wait_for_the_first_and_share_one_sequencing() {
    let broker = Arc::new(Broker::start().await);
    let body = Arc::new(batch("exec-race", 1, 10));
    let posts: Vec<_> = (0..8)
        .map(|_| {
            let (broker, body) = (broker.clone(), body.clone());
            tokio::spawn(async move { broker.post_keyed("race-key", &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for post in posts {
        let (status, answer, _) = post.await.expect("the post task");
        assert_eq!(status, 202, "{answer}");
        answers.push(answer);
    }
    for answer in &answers {
        assert_eq!(answer, &answers[0], "every attempt gets the same receipt");
    }
    assert_eq!(receipt_seqs(&answers[0]), (1..=10).collect::<Vec<_>>());
    let stored = broker.stored("exec-race").await;
    assert_eq!(
        seqs(&stored),
        (1..=10).collect::<Vec<_>>(),
        "sequenced once"
    );
    assert_eq!(broker.post_event(&thinking("exec-race", 99)).await, 11);
}

#[tokio::test]
async fn a_different_batch_under_a_used_key_is_refused_and_stores_nothing() {
    let broker = Broker::start().await;
    let (status, first, _) = broker
        .post_keyed("reused", &batch("exec-reuse", 1, 3))
        .await;
    assert_eq!(status, 202, "{first}");

    let (status, answer, _) = broker
        .post_keyed("reused", &batch("exec-reuse", 100, 3))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["error"]["code"], "idempotency-key-reused",
        "{answer}"
    );
    let stored = broker.stored("exec-reuse").await;
    assert_eq!(
        numbers(&stored),
        vec![1, 2, 3],
        "the refused batch stored nothing"
    );

    // The first batch is still answered under the key.
    let (status, retry, replayed) = broker
        .post_keyed("reused", &batch("exec-reuse", 1, 3))
        .await;
    assert_eq!((status, replayed), (202, true), "{retry}");
    assert_eq!(retry, first);
}

#[tokio::test]
async fn a_batch_rewritten_with_other_whitespace_and_field_order_is_the_same_batch() {
    let broker = Broker::start().await;
    let mut body = batch("exec-spaced", 1, 2);
    body[0]["metadata"] = json!({"n": 1, "tags": {"a": 1, "b": 2}});
    let (status, first, _) = broker.post_keyed("spaced", &body).await;
    assert_eq!(status, 202, "{first}");
    // The same events, keys (metadata's too) in another order.
    let reordered = json!([
        {"metadata": {"tags": {"b": 2, "a": 1}, "n": 1}, "step": 1, "thought": "step 1",
         "agentId": "agent-1", "executionId": "exec-spaced", "type": "agent-thinking"},
        {"metadata": {"n": 2}, "step": 2, "thought": "step 2", "agentId": "agent-1",
         "executionId": "exec-spaced", "type": "agent-thinking"},
    ]);
    let (status, retry, replayed) = broker.post_keyed("spaced", &reordered).await;
    assert_eq!((status, replayed), (202, true), "{retry}");
    assert_eq!(retry, first);
}

#[tokio::test]
async fn without_a_key_a_repeated_batch_is_a_new_batch() {
    let broker = Broker::start().await;
    let body = batch("exec-plain", 1, 10);
    let first = broker.post_ok(&body).await;
    let second = broker.post_ok(&body).await;
    assert_eq!(receipt_seqs(&first), (1..=10).collect::<Vec<_>>());
    assert_eq!(receipt_seqs(&second), (11..=20).collect::<Vec<_>>());
    assert_eq!(broker.stored("exec-plain").await.len(), 20);
}

#[tokio::test]
async fn a_refused_attempt_does_not_pin_the_key() {
    let broker = Broker::start().await;
    let mut broken = batch("exec-fix", 1, 3);
    broken[1]["step"] = json!("two");
    let (status, answer, _) = broker.post_keyed("fixed-later", &broken).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid-event", "{answer}");

    // The corrected batch under the same key is a first attempt, not a reuse.
    let fixed = batch("exec-fix", 1, 3);
    let (status, first, replayed) = broker.post_keyed("fixed-later", &fixed).await;
    assert_eq!((status, replayed), (202, false), "{first}");
    assert_eq!(receipt_seqs(&first), vec![1, 2, 3]);
    let (status, retry, replayed) = broker.post_keyed("fixed-later", &fixed).await;
    assert_eq!((status, replayed), (202, true), "{retry}");
    assert_eq!(retry, first);
}

#[tokio::test]
async fn a_malformed_key_is_a_bad_request_and_stores_nothing() {
    let broker = Broker::start().await;
    let too_long = "k".repeat(129);
    for key in ["", "with space", too_long.as_str()] {
        let (status, answer, _) = broker.post_keyed(key, &batch("exec-badkey", 1, 1)).await;
        assert_eq!(status, 400, "key {key:?}: {answer}");
        assert_eq!(
            answer["error"]["code"], "bad-request",
            "key {key:?}: {answer}"
        );
    }
    assert!(broker.stored("exec-badkey").await.is_empty());
    let longest = "k".repeat(128);
    let (status, answer, _) = broker
        .post_keyed(&longest, &batch("exec-badkey", 1, 1))
        .await;
    assert_eq!(status, 202, "128 characters is a key: {answer}");
}

#[tokio::test]
async fn coalesced_items_of_a_retry_are_the_first_answers() {
    // One event a second, bursts of two: of five thoughts, three coalesce.
    let broker = Broker::builder()
        .setting("MAX_EVENTS_PER_SEC_PER_EXECUTION", 1)
        .start()
        .await;
    let body = batch("exec-coalesce", 1, 5);
    let (status, first, _) = broker.post_keyed("thoughts", &body).await;
    assert_eq!(status, 202, "{first}");
    let coalesced = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["coalesced"] == true)
        .count();
    assert!(coalesced > 0, "the rate coalesced some: {first}");
    let (status, retry, replayed) = broker.post_keyed("thoughts", &body).await;
    assert_eq!((status, replayed), (202, true), "{retry}");
    assert_eq!(retry, first, "the same seqs and the same coalesced items");
}

#[tokio::test]
async fn a_key_is_forgotten_after_its_window() {
    let broker = Broker::builder()
        .setting("IDEMPOTENCY_WINDOW_SECS", 1)
        .start()
        .await;
    let body = batch("exec-window", 1, 2);
    let (status, first, _) = broker.post_keyed("short-lived", &body).await;
    assert_eq!(status, 202, "{first}");
    let (status, within, replayed) = broker.post_keyed("short-lived", &body).await;
    assert_eq!(
        (status, replayed),
        (202, true),
        "within the window: {within}"
    );
    assert_eq!(within, first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, later, replayed) = broker.post_keyed("short-lived", &body).await;
    assert_eq!((status, replayed), (202, false), "{later}");
    assert_eq!(
        receipt_seqs(&later),
        vec![3, 4],
        "past the window it is a new batch"
    );
}

#[tokio::test]
async fn a_key_survives_kill_9_and_a_restart() {
    let dir = DataDir::new();
    let body = batch("exec-crash", 1, 10);
    let first = {
        let mut broker = Broker::builder().data_dir(dir.path()).start().await;
        let (status, first, _) = broker.post_keyed("before-crash", &body).await;
        assert_eq!(status, 202, "{first}");
        broker.signal(libc::SIGKILL);
        broker.wait_exit(Duration::from_secs(10)).await;
        first
    };
    let broker = Broker::builder().data_dir(dir.path()).start().await;
    let (status, retry, replayed) = broker.post_keyed("before-crash", &body).await;
    assert_eq!((status, replayed), (202, true), "{retry}");
    assert_eq!(retry, first, "the same seqs after the restart");
    assert_eq!(
        seqs(&broker.stored("exec-crash").await),
        (1..=10).collect::<Vec<_>>()
    );
    let (status, answer, _) = broker
        .post_keyed("before-crash", &batch("exec-crash", 50, 1))
        .await;
    assert_eq!(
        status, 422,
        "the stored key still names its batch: {answer}"
    );
    assert_eq!(broker.post_event(&thinking("exec-crash", 99)).await, 11);
}
