//! `GET /api/analytics` over HTTP against the real binary: a small fixture
//! posted with fixed timestamps, its figures (worked out by hand in the
//! comments), the filters, the defaults, the errors and the admin role.

mod common;

use agent_events_actors::auth::{now_secs, sign_hmac, Claims, Role};
use common::{event, Broker};
use serde_json::{json, Value};

/// Two executions in two conversations, 2025-10-01 12:00–12:02 UTC.
///
/// run-1 (conv-a): start 12:00:00, writer/story, search ok 40 ms, search
/// failed 80 ms, quality story 55 (threshold 60), review approved, success
/// at 12:00:30. run-2 (conv-b): start 12:01:00, painter/art, draw ok 20 ms,
/// review revision-requested then approved (still running).
fn fixture() -> Vec<Value> {
    let at = |s: &str| json!(format!("2025-10-01T12:{s}Z"));
    let one = |kind, exec, conv, time: &str, fields: Value| {
        let mut e = event(kind, exec, fields);
        e["conversationId"] = json!(conv);
        e["timestamp"] = at(time);
        e
    };
    let r1 = |kind, time, fields| one(kind, "run-1", "conv-a", time, fields);
    let r2 = |kind, time, fields| one(kind, "run-2", "conv-b", time, fields);
    vec![
        r1("orchestration-start", "00:00", json!({})),
        r1(
            "agent-start",
            "00:05",
            json!({"agentId": "writer", "department": "story"}),
        ),
        r1(
            "tool-call",
            "00:10",
            json!({"agentId": "writer", "toolName": "search"}),
        ),
        r1(
            "tool-result",
            "00:12",
            json!({"agentId": "writer", "toolName": "search", "success": true, "executionTime": 40}),
        ),
        r1(
            "tool-call",
            "00:14",
            json!({"agentId": "writer", "toolName": "search"}),
        ),
        r1(
            "tool-result",
            "00:16",
            json!({"agentId": "writer", "toolName": "search", "success": false, "executionTime": 80}),
        ),
        r1(
            "quality-check",
            "00:20",
            json!({"qualityScore": 55, "threshold": 60, "department": "story"}),
        ),
        r1(
            "review-status",
            "00:25",
            json!({"department": "story", "status": "approved", "specialistId": "writer"}),
        ),
        r1(
            "orchestration-complete",
            "00:30",
            json!({"status": "success"}),
        ),
        r2("orchestration-start", "01:00", json!({})),
        r2(
            "agent-start",
            "01:05",
            json!({"agentId": "painter", "department": "art"}),
        ),
        r2(
            "tool-call",
            "01:10",
            json!({"agentId": "painter", "toolName": "draw"}),
        ),
        r2(
            "tool-result",
            "01:15",
            json!({"agentId": "painter", "toolName": "draw", "success": true, "executionTime": 20}),
        ),
        r2(
            "review-status",
            "01:20",
            json!({"department": "art", "status": "revision-requested", "specialistId": "painter"}),
        ),
        r2(
            "review-status",
            "01:25",
            json!({"department": "art", "status": "approved", "specialistId": "painter"}),
        ),
    ]
}

const WINDOW: &str = "from=2025-10-01T12:00:00Z&to=2025-10-01T12:02:00Z&bucketSecs=60";

async fn analytics(broker: &Broker, query: &str) -> Value {
    let (status, body) = broker.get_json(&format!("/api/analytics?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

async fn refused(broker: &Broker, query: &str) -> String {
    let (status, body) = broker.get_json(&format!("/api/analytics?{query}")).await;
    assert_eq!(status, 400, "{query}: {body}");
    assert_eq!(body["error"]["code"], "bad-request", "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn figures_of_a_posted_fixture() {
    let broker = Broker::start().await;
    broker.post_ok(&json!(fixture())).await;
    let a = analytics(&broker, WINDOW).await;

    assert_eq!(a["from"], "2025-10-01T12:00:00Z");
    assert_eq!(a["bucketSecs"], 60);
    assert_eq!(a["executions"]["total"], 2);
    assert_eq!(
        a["executions"]["byStatus"],
        json!({"running": 1, "success": 1, "failed": 0, "partial": 0})
    );
    // Only run-1 ended: 30 s.
    assert_eq!(
        a["executions"]["durationMs"],
        json!({"count": 1, "p50": 30000.0, "p95": 30000.0})
    );
    assert_eq!(a["events"]["total"], 15);
    assert_eq!(a["events"]["byType"]["review-status"], 3);
    let series: Vec<&Value> = a["events"]["series"].as_array().unwrap().iter().collect();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0]["count"], 9);
    assert_eq!(series[1]["count"], 6);
    assert_eq!(series[1]["perSecond"], 0.1);

    // search 40 and 80 (failed), draw 20: p50 of 20, 40, 80 at rank 2.
    let tools = &a["tools"];
    assert_eq!(
        (tools["calls"].as_u64(), tools["failures"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        tools["latencyMs"],
        json!({"count": 3, "p50": 40.0, "p95": 80.0})
    );
    assert_eq!(tools["byTool"][0]["toolName"], "search");
    assert_eq!(tools["byTool"][0]["failureRate"], 0.5);
    assert_eq!(tools["byTool"][1]["toolName"], "draw");
    assert_eq!(
        a["agents"],
        json!([{"agentId": "writer", "calls": 2}, {"agentId": "painter", "calls": 1}])
    );
    assert_eq!(a["quality"]["story"]["belowThreshold"], 1);
    assert_eq!(a["quality"]["story"]["shareBelowThreshold"], 1.0);
    // run-1's writer approved at once, run-2's painter after one round.
    let reviews = &a["reviews"];
    assert_eq!(reviews["subjects"], 2);
    assert_eq!(reviews["approvedFirstPass"], 1);
    assert_eq!(reviews["revisionRounds"], 1);
    assert_eq!(reviews["subjectsByRounds"], json!({"0": 1, "1": 1}));
}

#[tokio::test]
async fn filters_narrow_the_figures() {
    let broker = Broker::start().await;
    broker.post_ok(&json!(fixture())).await;

    let a = analytics(&broker, &format!("{WINDOW}&conversationId=conv-b")).await;
    assert_eq!(a["conversationId"], "conv-b");
    assert_eq!(a["executions"]["total"], 1);
    assert_eq!(a["events"]["total"], 6);
    assert_eq!(a["agents"], json!([{"agentId": "painter", "calls": 1}]));

    // story: writer's agent-start, 2 calls, 2 results, quality, review.
    let a = analytics(&broker, &format!("{WINDOW}&department=story")).await;
    assert_eq!(a["events"]["total"], 7);
    assert_eq!(a["tools"]["byTool"].as_array().unwrap().len(), 1);
    assert_eq!(a["executions"]["byStatus"]["success"], 1);

    // The second minute only: run-2 is active, run-1 ended at 12:00:30.
    let a = analytics(
        &broker,
        "from=2025-10-01T12:01:00Z&to=2025-10-01T12:02:00Z&bucketSecs=30",
    )
    .await;
    assert_eq!(a["executions"]["total"], 1);
    assert_eq!(a["events"]["total"], 6);
    assert_eq!(a["events"]["series"].as_array().unwrap().len(), 2);

    let a = analytics(&broker, "from=2025-10-01T13:00:00Z&to=2025-10-01T14:00:00Z").await;
    assert_eq!(a["events"]["total"], 0);
    assert_eq!(a["bucketSecs"], 60);
    assert_eq!(
        a["tools"]["latencyMs"],
        json!({"count": 0, "p50": null, "p95": null})
    );
}

#[tokio::test]
async fn the_default_window_is_the_last_hour() {
    let broker = Broker::start().await;
    // No timestamp: the broker stamps it now, inside the default window.
    broker
        .post_event(&event("agent-start", "now-1", json!({"agentId": "a"})))
        .await;
    let a = analytics(&broker, "").await;
    assert_eq!(a["events"]["total"], 1);
    assert_eq!(a["executions"]["byStatus"]["running"], 1);
    let from: chrono::DateTime<chrono::Utc> = a["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<chrono::Utc> = a["to"].as_str().unwrap().parse().unwrap();
    assert_eq!((to - from).num_seconds(), 3600);
    assert_eq!(a["events"]["series"].as_array().unwrap().len(), 60);
}

#[tokio::test]
async fn bad_parameters_are_refused_with_a_reason() {
    let broker = Broker::start().await;
    let message = refused(&broker, "from=2025-10-01T12:00:00Z&to=2025-10-01T11:00:00Z").await;
    assert!(message.contains("from must be before to"), "{message}");
    let message = refused(&broker, "from=yesterday").await;
    assert!(message.contains("RFC 3339"), "{message}");
    let message = refused(
        &broker,
        "from=2025-10-01T00:00:00Z&to=2025-10-02T00:00:00Z&bucketSecs=1",
    )
    .await;
    assert!(message.contains("86400 buckets"), "{message}");
    let message = refused(&broker, "bucketSecs=0").await;
    assert!(message.contains("at least 1"), "{message}");
    let message = refused(&broker, "bucketSecs=-5").await;
    assert!(message.contains("bucketSecs"), "{message}");
    let message = refused(&broker, "window=1h").await;
    assert!(message.contains("window"), "{message}");
}

#[tokio::test]
async fn with_auth_on_the_admin_role_is_needed() {
    const SECRET: &str = "analytics-test-secret-0123456789abcdef";
    let broker = Broker::builder()
        .setting("AUTH_HMAC_SECRET", SECRET)
        .start()
        .await;
    let token = |role: Role| {
        let claims = Claims {
            sub: "analyst".into(),
            exp: now_secs() + 600,
            roles: vec![role],
            executions: vec![],
            conversations: vec![],
        };
        sign_hmac(&claims, SECRET.as_bytes())
    };
    let (status, body) = broker.get_json("/api/analytics").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let path = format!("/api/analytics?token={}", token(Role::Subscriber));
    let (status, body) = broker.get_json(&path).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let path = format!("/api/analytics?token={}", token(Role::Admin));
    let (status, body) = broker.get_json(&path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"]["total"], 0);
}
