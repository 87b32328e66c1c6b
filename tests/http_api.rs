//! The HTTP side of the real binary: `POST /api/events` answers with the
//! seqs it gave, `/health` reports a status, `/admin/stats` counters follow
//! connections, subscriptions and events in and out, `/metrics` exposes the
//! same figures to Prometheus, and `/api/ws` describes the protocol as JSON.

mod common;

use common::{thinking, Broker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_answers_with_the_seqs_given() {
    let broker = Broker::start().await;
    let answer = broker
        .post_ok(&json!([
            thinking("exec-p1", 0),
            thinking("exec-p2", 0),
            thinking("exec-p1", 1)
        ]))
        .await;
    assert_eq!(
        answer,
        json!({"accepted": 3, "events": [
            {"executionId": "exec-p1", "seq": 1},
            {"executionId": "exec-p2", "seq": 1},
            {"executionId": "exec-p1", "seq": 2}
        ]})
    );
    assert_eq!(broker.post_event(&thinking("exec-p1", 2)).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_status() {
    let broker = Broker::start().await;
    let (status, content_type, body) = broker.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let health: serde_json::Value = serde_json::from_str(&body).expect("/health is JSON");
    assert!(
        health["status"].as_str().is_some_and(|s| !s.is_empty()),
        "/health has a status: {health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_follow_connections_subscriptions_and_events() {
    let broker = Broker::start().await;
    let stats = broker.stats().await;
    for key in [
        "connections",
        "subscriptions",
        "eventsIn",
        "eventsOut",
        "replayed",
        "executionsBuffered",
    ] {
        assert_eq!(stats[key], 0, "{key} at start: {stats}");
    }
    for key in ["eventsRejected", "drops", "clientErrors"] {
        assert!(stats[key].is_object(), "{key} is an object: {stats}");
    }
    for reason in ["slow-consumer", "slow-consumer-frames", "heartbeat-timeout"] {
        assert_eq!(stats["drops"][reason], 0, "drops.{reason}: {stats}");
    }

    let mut first = broker.connect().await;
    let mut second = broker.connect().await;
    broker
        .wait_for_stats("2 connections", |s| s["connections"] == 2)
        .await;
    first.subscribe_execution("exec-s").await;
    second.subscribe_execution("exec-s").await;
    second.subscribe_execution("exec-t").await;
    broker
        .wait_for_stats("3 subscriptions", |s| s["subscriptions"] == 3)
        .await;

    for n in 0..3 {
        broker.post_event(&thinking("exec-s", n)).await;
    }
    let stats = broker.stats().await;
    assert_eq!(stats["eventsIn"], 3, "{stats}");
    assert_eq!(stats["executionsBuffered"], 1, "{stats}");
    first.events(3).await;
    second.events(3).await;
    let stats = broker.stats().await;
    assert_eq!(
        stats["eventsOut"], 6,
        "two clients got 3 events each: {stats}"
    );

    first
        .send_json(&json!({"type": "unsubscribe", "executionId": "exec-s"}))
        .await;
    first.expect_type("unsubscribed").await;
    broker
        .wait_for_stats("2 subscriptions after an unsubscribe", |s| {
            s["subscriptions"] == 2
        })
        .await;

    second.close().await;
    let stats = broker
        .wait_for_stats("1 connection and no subscription after a close", |s| {
            s["connections"] == 1 && s["subscriptions"] == 0
        })
        .await;
    assert_eq!(stats["eventsIn"], 3, "{stats}");
    first.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_the_counters_to_prometheus() {
    let broker = Broker::start().await;
    let _client = broker.connect().await;
    for n in 0..2 {
        broker.post_event(&thinking("exec-m", n)).await;
    }
    let (status, content_type, text) = broker.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let lines: Vec<&str> = text.lines().collect();
    for line in [
        "agent_events_events_in_total 2",
        "agent_events_connections 1",
    ] {
        assert!(lines.contains(&line), "/metrics lacks `{line}`:\n{text}");
    }
    for name in [
        "agent_events_subscriptions",
        "agent_events_drops_total",
        "agent_events_events_rejected_total",
        "agent_events_client_errors_total",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(name)),
            "/metrics lacks {name}:\n{text}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("agent_events_drops_total{") && l.contains("slow-consumer")),
        "drops are labelled by reason:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ws_describes_the_protocol() {
    let broker = Broker::start().await;
    let (status, content_type, body) = broker.get("/api/ws").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let description: serde_json::Value = serde_json::from_str(&body).expect("/api/ws is JSON");
    assert!(description.is_object(), "{description}");
    for word in ["subscribe", "fromSeq", "slow-consumer", "tool-call"] {
        assert!(
            body.contains(word),
            "/api/ws does not mention {word}: {body}"
        );
    }
}
/// Every GET route answers HEAD with the GET's status and no body, as HTTP
/// asks (`curl -I`, health checks, link checkers): once `/` gave 404.
#[tokio::test]
async fn get_routes_answer_head_with_the_same_status_and_no_body() {
    let broker = Broker::start().await;
    broker.post_event(&thinking("exec-head", 1)).await;
    for path in [
        "/",
        "/health",
        "/api/openapi.json",
        "/api/executions/exec-head/events",
        "/api/executions/exec-head/stats",
        "/api/executions/nothing-here/stats",
        "/admin/stats",
    ] {
        let (get, _) = broker.request("GET", path, None, None).await;
        let (head, body) = broker.request("HEAD", path, None, None).await;
        assert_eq!(head, get, "HEAD {path}");
        assert_eq!(body, json!(""), "HEAD {path} sent a body");
    }
}
