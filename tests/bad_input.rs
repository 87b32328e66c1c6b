//! Bad input, through the real binary: every malformed WebSocket message
//! gets an `error` with its stable code while the connection stays usable and
//! other clients' streams go on undisturbed; a frame above the frame limit
//! closes only its own connection (1009); every invalid HTTP event is refused
//! with the field and rule it broke, and a batch with one bad event is refused
//! whole.

mod common;

use common::{event, seqs, thinking, Broker, Client};
use serde_json::{json, Value};
use std::collections::HashMap;

/// A bystander subscribed to `exec-by` that must keep receiving every event.
struct Bystander {
    client: Client,
    next_seq: u64,
}

impl Bystander {
    async fn new(broker: &Broker) -> Bystander {
        let mut client = broker.connect().await;
        client.subscribe_execution("exec-by").await;
        Bystander {
            client,
            next_seq: 1,
        }
    }

    /// Posts one event to `exec-by`; the bystander must receive exactly it, next.
    async fn still_served(&mut self, broker: &Broker) {
        let seq = broker.post_event(&thinking("exec-by", self.next_seq)).await;
        assert_eq!(seq, self.next_seq);
        let message = self.client.next_event().await;
        assert_eq!(
            message["event"]["seq"], self.next_seq,
            "bystander: {message}"
        );
        self.next_seq += 1;
    }
}

enum Bad {
    Text(String),
    Binary,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_message_gets_its_code_and_the_connection_stays_usable() {
    let broker = Broker::builder()
        .setting("MAX_MESSAGE_BYTES", 1024)
        .setting("MAX_FRAME_BYTES", 8192)
        .setting("MAX_SUBSCRIPTIONS", 2)
        .start()
        .await;
    let mut bystander = Bystander::new(&broker).await;
    let mut client = broker.connect().await;

    let text = |s: &str| Bad::Text(s.to_owned());
    let long_id = "x".repeat(129);
    let oversized = json!({"type": "ping", "pad": "p".repeat(2000)}).to_string();
    let cases = [
        (text("{nope"), "bad-json"),
        (text("[1,2]"), "bad-json"),
        (text(r#""a string""#), "bad-json"),
        (text(""), "bad-json"),
        (text(r#"{"type":"dance"}"#), "unknown-type"),
        (text(r#"{"executionId":"exec-1"}"#), "unknown-type"),
        (text(r#"{"type":7}"#), "unknown-type"),
        (text(r#"{"type":"subscribe"}"#), "missing-id"),
        (text(r#"{"type":"unsubscribe"}"#), "missing-id"),
        (
            text(r#"{"type":"subscribe","executionId":"a b"}"#),
            "invalid-id",
        ),
        (
            text(r#"{"type":"subscribe","executionId":""}"#),
            "invalid-id",
        ),
        (
            text(&format!(
                r#"{{"type":"subscribe","executionId":"{long_id}"}}"#
            )),
            "invalid-id",
        ),
        (
            text(r#"{"type":"subscribe","conversationId":"conv/1"}"#),
            "invalid-id",
        ),
        (
            text(r#"{"type":"unsubscribe","executionId":"é"}"#),
            "invalid-id",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","conversationId":"c"}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","conversationId":"c","fromSeq":1}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","fromSeq":-1}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","fromSeq":"3"}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","types":["not-a-type"]}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","types":"tool-call"}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","colour":"red"}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":7}"#),
            "bad-request",
        ),
        (
            text(r#"{"type":"subscribe","executionId":"e","agentId":5}"#),
            "bad-request",
        ),
        (Bad::Binary, "binary-not-supported"),
        (Bad::Text(oversized), "frame-too-large"),
    ];
    let mut expected_counts: HashMap<&str, u64> = HashMap::new();
    for (input, code) in &cases {
        match input {
            Bad::Text(t) => client.send_text(t.clone()).await,
            Bad::Binary => client.send_binary(b"{\"type\":\"ping\"}".to_vec()).await,
        }
        let error = client.expect_error(code).await;
        assert!(error.get("clientId").is_none(), "{error}");
        client.ping().await;
        bystander.still_served(&broker).await;
        *expected_counts.entry(code).or_default() += 1;
    }

    // Subscription limits (MAX_SUBSCRIPTIONS = 2).
    client.subscribe_execution("exec-a").await;
    client
        .send_json(&json!({"type": "subscribe", "executionId": "exec-a"}))
        .await;
    client.expect_error("already-subscribed").await;
    client.ping().await;
    client.subscribe(json!({"conversationId": "conv-b"})).await;
    client
        .send_json(&json!({"type": "subscribe", "executionId": "exec-c"}))
        .await;
    client.expect_error("too-many-subscriptions").await;
    client.ping().await;
    bystander.still_served(&broker).await;
    client
        .send_json(&json!({"type": "unsubscribe", "conversationId": "conv-b"}))
        .await;
    client.expect_type("unsubscribed").await;
    client.subscribe_execution("exec-c").await;
    *expected_counts.entry("already-subscribed").or_default() += 1;
    *expected_counts.entry("too-many-subscriptions").or_default() += 1;

    // The subscriptions made after all that deliver.
    broker.post_event(&thinking("exec-a", 1)).await;
    broker.post_event(&thinking("exec-c", 1)).await;
    let delivered: Vec<Value> = client.events(2).await;
    assert_eq!(delivered[0]["executionId"], "exec-a");
    assert_eq!(delivered[1]["executionId"], "exec-c");
    bystander.still_served(&broker).await;
    bystander.client.ping().await;

    let stats = broker.stats().await;
    for (code, count) in expected_counts {
        assert_eq!(
            stats["clientErrors"][code], count,
            "clientErrors.{code} in {stats}"
        );
    }
    assert_eq!(stats["connections"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_above_the_frame_limit_closes_only_its_connection() {
    let broker = Broker::builder()
        .setting("MAX_MESSAGE_BYTES", 1024)
        .setting("MAX_FRAME_BYTES", 8192)
        .start()
        .await;
    let mut bystander = Bystander::new(&broker).await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-big").await;

    client.send_text("x".repeat(20_000)).await;
    let (before, code) = client.until_close().await;
    assert_eq!(
        code,
        Some(1009),
        "close code; messages before it: {before:?}"
    );
    for message in &before {
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(message["code"], "frame-too-large", "{message}");
    }

    bystander.still_served(&broker).await;
    bystander.client.ping().await;
    broker
        .wait_for_stats("connections 1 and subscriptions 1", |s| {
            s["connections"] == 1 && s["subscriptions"] == 1
        })
        .await;
}

/// Posts `body`; it must be refused with 400 `invalid-event` naming `field` and `rule`.
async fn assert_invalid(broker: &Broker, body: &Value, field: &str, rule: &str, index: u64) {
    let (status, answer) = broker.post(body).await;
    assert_eq!(status, 400, "{body} answered {answer}");
    let error = &answer["error"];
    assert_eq!(error["code"], "invalid-event", "{body} answered {answer}");
    assert_eq!(error["rule"], rule, "{body} answered {answer}");
    if !field.is_empty() {
        assert_eq!(error["field"], field, "{body} answered {answer}");
    }
    assert_eq!(error["index"], index, "{body} answered {answer}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body} answered {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_refused_naming_field_and_rule() {
    let broker = Broker::start().await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-bad").await;
    let x = "exec-bad";
    let cases = [
        (event("agent-start", x, json!({})), "agentId", "required"),
        (
            json!({"type": "agent-start", "agentId": "a"}),
            "executionId",
            "required",
        ),
        (
            json!({"executionId": x, "agentId": "a"}),
            "type",
            "required",
        ),
        (
            event("agent-thinking", x, json!({"agentId": "a"})),
            "thought",
            "required",
        ),
        (
            event("review-status", x, json!({"department": "d"})),
            "status",
            "required",
        ),
        (
            event("agent-start", x, json!({"agentId": "a", "colour": "red"})),
            "colour",
            "unknown-field",
        ),
        (
            event("quality-check", x, json!({"qualityScore": 101})),
            "qualityScore",
            "range",
        ),
        (
            event("quality-check", x, json!({"qualityScore": -1})),
            "qualityScore",
            "range",
        ),
        (
            event(
                "department-start",
                x,
                json!({"department": "d", "relevance": 1.5}),
            ),
            "relevance",
            "range",
        ),
        (
            event("agent-start", "exec bad", json!({"agentId": "a"})),
            "executionId",
            "id-format",
        ),
        (
            event("agent-start", &"x".repeat(129), json!({"agentId": "a"})),
            "executionId",
            "id-format",
        ),
        (
            event(
                "agent-start",
                x,
                json!({"agentId": "a", "conversationId": "c d"}),
            ),
            "conversationId",
            "id-format",
        ),
        (event("nope", x, json!({})), "type", "enum"),
        (
            event(
                "review-status",
                x,
                json!({"department": "d", "status": "meh"}),
            ),
            "status",
            "enum",
        ),
        (
            event("orchestration-start", x, json!({"complexity": "extreme"})),
            "complexity",
            "enum",
        ),
        (
            event("agent-start", x, json!({"agentId": "a", "seq": 3})),
            "seq",
            "seq-not-allowed",
        ),
        (
            event("agent-start", x, json!({"agentId": 5})),
            "agentId",
            "wrong-type",
        ),
        (
            event("agent-start", x, json!({"agentId": "a", "metadata": [1]})),
            "metadata",
            "wrong-type",
        ),
        (
            event(
                "agent-start",
                x,
                json!({"agentId": "a", "timestamp": "yesterday"}),
            ),
            "timestamp",
            "timestamp",
        ),
        (json!([42]), "", "not-an-object"),
    ];
    for (body, field, rule) in &cases {
        assert_invalid(&broker, body, field, rule, 0).await;
    }

    let stats = broker.stats().await;
    assert_eq!(stats["eventsIn"], 0, "{stats}");
    assert_eq!(
        stats["eventsRejected"]["invalid-event"],
        cases.len(),
        "{stats}"
    );

    // Nothing was sequenced or delivered: the next good event is seq 1 and the first message.
    let good = thinking(x, 1);
    assert_eq!(broker.post_event(&good).await, 1);
    assert_eq!(client.next_event_body().await["seq"], 1);
    client.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused() {
    let broker = Broker::start().await;
    for body in [r#"{"type":"#, "not json", r#"{"type":"agent-start"}}"#] {
        let (status, answer) = broker.post_raw(body).await;
        assert_eq!(status, 400, "{body:?} answered {answer}");
        assert_eq!(
            answer["error"]["code"], "bad-json",
            "{body:?} answered {answer}"
        );
    }
    // Above the default 64 KiB event limit.
    let mut huge = thinking("exec-huge", 1);
    huge["metadata"] = json!({"blob": "b".repeat(70_000)});
    let (status, answer) = broker.post(&huge).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload-too-large", "{answer}");

    let stats = broker.stats().await;
    assert_eq!(stats["eventsIn"], 0, "{stats}");
    assert_eq!(broker.post_event(&thinking("exec-huge", 1)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_event_is_refused_whole() {
    let broker = Broker::start().await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-batch").await;
    client.subscribe_execution("exec-batch-2").await;

    let bad = event("quality-check", "exec-batch", json!({"qualityScore": 250}));
    let batch = json!([thinking("exec-batch", 1), thinking("exec-batch-2", 1), bad]);
    assert_invalid(&broker, &batch, "qualityScore", "range", 2).await;

    let mut huge = thinking("exec-batch-2", 2);
    huge["metadata"] = json!({"blob": "b".repeat(70_000)});
    let (status, answer) = broker.post(&json!([thinking("exec-batch", 1), huge])).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload-too-large", "{answer}");

    let stats = broker.stats().await;
    assert_eq!(stats["eventsIn"], 0, "{stats}");
    assert_eq!(stats["eventsOut"], 0, "{stats}");

    // The same batch without its bad event goes through, from seq 1.
    let answer = broker
        .post_ok(&json!([
            thinking("exec-batch", 7),
            thinking("exec-batch-2", 8)
        ]))
        .await;
    assert_eq!(
        answer,
        json!({"accepted": 2, "events": [
            {"executionId": "exec-batch", "seq": 1},
            {"executionId": "exec-batch-2", "seq": 1}
        ]})
    );
    let first = client.events(2).await;
    assert_eq!(seqs(&first), vec![1, 1]);
    assert_eq!(
        first[0]["metadata"]["n"], 7,
        "the first event delivered is the good batch's"
    );
    assert_eq!(first[1]["metadata"]["n"], 8);
    client.ping().await;
}

/// A body trickled and never finished gets 400 `bad-request` once
/// `request_body_timeout_ms` has passed (the head timeout ends at the
/// head), and the broker goes on serving everyone else meanwhile.
#[tokio::test]
async fn a_body_that_never_finishes_is_refused_after_the_body_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::builder()
        .setting("REQUEST_BODY_TIMEOUT_MS", 300)
        .start()
        .await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .expect("connect");
    let head = "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"type\":";
    slow.write_all(head.as_bytes()).await.expect("write");
    // Meanwhile another producer is served as usual.
    let seq = broker.post_event(&thinking("exec-body-timeout", 1)).await;
    assert_eq!(seq, 1);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(common::STEP, async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("bad-request") {
            let n = slow.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within {:?}", common::STEP);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("did not arrive within 300 ms"), "{text}");
    assert_eq!(
        broker.stats().await["eventsRejected"]["bad-request"],
        1,
        "counted"
    );
}
