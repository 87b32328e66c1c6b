//! Security: protected mode, tokens (who may watch, produce, administer),
//! expiry of open connections, Origins and CORS, and secrets kept out of logs.

mod common;

use agent_events_actors::auth::{now_secs, sign_hmac, Claims, Role};
use common::{event, Broker};
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "integration-test-secret-0123456789abcdef";

fn token(roles: &[Role], executions: &[&str], conversations: &[&str], ttl_secs: i64) -> String {
    let claims = Claims {
        sub: "tester".into(),
        exp: (now_secs() as i64 + ttl_secs) as u64,
        roles: roles.to_vec(),
        executions: executions.iter().map(|s| s.to_string()).collect(),
        conversations: conversations.iter().map(|s| s.to_string()).collect(),
    };
    sign_hmac(&claims, SECRET.as_bytes())
}

async fn secured_broker() -> Broker {
    Broker::builder()
        .setting("AUTH_HMAC_SECRET", SECRET)
        .setting("AUTH_TIMEOUT_MS", 400)
        .start()
        .await
}

/// An HTTP request with an optional bearer token: (status, body).
async fn request(
    broker: &Broker,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    broker.request(method, path, bearer, body).await
}

/// A WebSocket upgrade that must be refused: its HTTP status.
async fn refused_upgrade(broker: &Broker, path: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{}{path}", broker.port)
        .into_client_request()
        .expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
    }
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("upgrade timed out");
    match attempt {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade at {path} was accepted"),
    }
}

#[test]
fn without_auth_the_broker_refuses_to_listen_beyond_loopback() {
    let data_dir = std::env::temp_dir().join(format!("ae-protected-{}", std::process::id()));
    let output = std::process::Command::new(common::bin())
        .env("BIND_ADDR", "0.0.0.0")
        .env("WS_PORT", "0")
        .env("DATA_DIR", &data_dir)
        .env_remove("AGENT_EVENTS_AUTH_HMAC_SECRET")
        .output()
        .expect("run the broker");
    let _ = std::fs::remove_dir_all(&data_dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not start: {stderr}");
    assert!(
        stderr.contains("AGENT_EVENTS_AUTH_HMAC_SECRET"),
        "it says how to turn auth on: {stderr}"
    );
}

#[tokio::test]
async fn a_token_for_one_execution_cannot_watch_another() {
    let broker = secured_broker().await;
    let watcher = token(&[Role::Subscriber], &["exec-a", "team:*"], &["conv-1"], 60);
    let mut client = broker.connect_path(&format!("/?token={watcher}")).await;
    client.subscribe_execution("exec-a").await;
    client.subscribe_execution("team:7").await;
    client.subscribe(json!({"conversationId": "conv-1"})).await;
    client
        .send_json(&json!({"type": "subscribe", "executionId": "exec-b"}))
        .await;
    let refused = client.expect_error("forbidden").await;
    assert_eq!(refused["executionId"], "exec-b");
    client
        .send_json(&json!({"type": "subscribe", "conversationId": "conv-2"}))
        .await;
    client.expect_error("forbidden").await;

    // What it may watch still flows; what it may not never arrives.
    let producer = token(&[Role::Producer], &[], &[], 60);
    for execution in ["exec-b", "exec-a"] {
        let body = event("agent-start", execution, json!({"agentId": "a"}));
        let (status, answer) =
            request(&broker, "POST", "/api/events", Some(&producer), Some(body)).await;
        assert_eq!(status, 202, "{answer}");
    }
    let delivered = client.next_event().await;
    assert_eq!(
        delivered["executionId"], "exec-a",
        "exec-b must never arrive first: {delivered}"
    );
}

#[tokio::test]
async fn a_connection_without_a_token_must_authenticate_in_time() {
    let broker = secured_broker().await;
    let mut late = broker.connect().await;
    late.send_json(&json!({"type": "subscribe", "executionId": "exec-a"}))
        .await;
    late.expect_error("unauthorized").await;
    let (messages, code) = late.until_close().await;
    assert_eq!(code, Some(4501), "closed for want of a token: {messages:?}");
    assert!(
        messages.iter().any(|m| m["code"] == "unauthorized"),
        "{messages:?}"
    );

    let mut prompt = broker.connect().await;
    let watcher = token(&[Role::Subscriber], &["exec-a"], &[], 60);
    prompt
        .send_json(&json!({"type": "auth", "token": watcher}))
        .await;
    let answer = prompt.expect_type("authenticated").await;
    assert!(answer["expiresAt"].is_string(), "{answer}");
    prompt.subscribe_execution("exec-a").await;
    prompt
        .send_json(&json!({"type": "auth", "token": "forged.token.value"}))
        .await;
    prompt.expect_error("unauthorized").await;
    prompt.ping().await;
}

#[tokio::test]
async fn an_expired_token_closes_the_connection_unless_refreshed() {
    let broker = secured_broker().await;
    let short = token(&[Role::Subscriber], &["exec-a"], &[], 2);
    let mut expiring = broker.connect_path(&format!("/?token={short}")).await;
    expiring.subscribe_execution("exec-a").await;
    let mut refreshed = broker.connect_path(&format!("/?token={short}")).await;
    refreshed.subscribe_execution("exec-a").await;
    let fresh = token(&[Role::Subscriber], &["exec-a"], &[], 60);
    refreshed
        .send_json(&json!({"type": "auth", "token": fresh}))
        .await;
    refreshed.expect_type("authenticated").await;

    let (messages, code) = expiring.until_close().await;
    assert_eq!(code, Some(4002), "{messages:?}");
    assert!(
        messages.iter().any(|m| m["code"] == "token-expired"),
        "{messages:?}"
    );
    // The refreshed one outlives the old expiry and still answers.
    refreshed.ping().await;
    let expired = token(&[Role::Subscriber], &["exec-a"], &[], -10);
    assert_eq!(
        refused_upgrade(&broker, &format!("/?token={expired}"), None).await,
        401
    );
}

#[tokio::test]
async fn bad_signatures_and_foreign_origins_are_refused_at_the_upgrade() {
    let broker = secured_broker().await;
    let forged = sign_hmac(
        &Claims {
            sub: "mallory".into(),
            exp: now_secs() + 60,
            roles: vec![Role::Admin],
            executions: vec![],
            conversations: vec![],
        },
        b"not-the-broker-secret-0123456789abcdef",
    );
    assert_eq!(
        refused_upgrade(&broker, &format!("/?token={forged}"), None).await,
        401
    );
    let watcher = token(&[Role::Subscriber], &["exec-a"], &[], 60);
    let path = format!("/ws?token={watcher}");
    assert_eq!(
        refused_upgrade(&broker, &path, Some("https://evil.example")).await,
        403
    );

    let listed = Broker::builder()
        .setting("ALLOWED_ORIGINS", "https://app.example")
        .start()
        .await;
    assert_eq!(
        refused_upgrade(&listed, "/", Some("https://evil.example")).await,
        403
    );
    let (status, _) = request(&listed, "GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn each_route_needs_its_role_and_tokens_never_reach_the_log() {
    let broker = secured_broker().await;
    let admin = token(&[Role::Admin], &[], &[], 60);
    let producer = token(&[Role::Producer], &["p-*"], &[], 60);
    let watcher = token(&[Role::Subscriber], &["p-1"], &[], 60);
    let body = || Some(event("agent-start", "p-1", json!({"agentId": "a"})));

    assert_eq!(
        request(&broker, "POST", "/api/events", None, body())
            .await
            .0,
        401
    );
    let (status, answer) = request(&broker, "POST", "/api/events", Some(&watcher), body()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{answer}"
    );
    assert_eq!(
        request(&broker, "POST", "/api/events", Some(&producer), body())
            .await
            .0,
        202
    );
    let elsewhere = Some(event("agent-start", "q-1", json!({"agentId": "a"})));
    let (status, answer) =
        request(&broker, "POST", "/api/events", Some(&producer), elsewhere).await;
    assert_eq!(
        (status, answer["error"]["index"].as_u64()),
        (403, Some(0)),
        "{answer}"
    );

    for path in [
        "/admin/stats",
        "/metrics",
        "/api/executions",
        "/api/executions/p-1/events",
        "/api/executions/p-1/stats",
    ] {
        assert_eq!(
            request(&broker, "GET", path, None, None).await.0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            request(&broker, "GET", path, Some(&producer), None).await.0,
            403,
            "{path} as producer"
        );
        assert_eq!(
            request(&broker, "GET", path, Some(&admin), None).await.0,
            200,
            "{path} as admin"
        );
    }
    for path in ["/health", "/api/ws"] {
        assert_eq!(
            request(&broker, "GET", path, None, None).await.0,
            200,
            "{path} is public"
        );
    }
    let log = broker.output();
    for secret in [&admin, &producer, &watcher, &SECRET.to_owned()] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let broker = Broker::builder()
        .setting("ALLOWED_ORIGINS", "https://app.example")
        .start()
        .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, broker.url("/api/events"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("preflight");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    // A client that is not a browser sends no Origin and is not affected.
    let mut plain = broker.connect().await;
    plain.ping().await;
}

#[tokio::test]
async fn each_limit_trips_with_its_code_and_its_counter() {
    let broker = Broker::builder()
        .setting("MAX_CONNECTIONS_PER_IP", 2)
        .setting("MAX_MESSAGES_PER_SEC", 5)
        .setting("MAX_EVENTS_PER_SEC_PER_PRODUCER", 10)
        .start()
        .await;
    // Connections per address: the third is refused before the upgrade.
    let mut flooder = broker.connect().await;
    let mut bystander = broker.connect().await;
    assert_eq!(refused_upgrade(&broker, "/", None).await, 503);

    // A flood of messages is dropped with one `rate-limited`; others are not disturbed.
    bystander.subscribe_execution("calm").await;
    for _ in 0..40 {
        flooder.send_json(&json!({"type": "ping"})).await;
    }
    let mut answers = Vec::new();
    while let Some(common::Frame::Json(message)) =
        flooder.recv_within(Duration::from_millis(300)).await
    {
        answers.push(message);
    }
    let pongs = answers.iter().filter(|m| m["type"] == "pong").count();
    let limited = answers
        .iter()
        .filter(|m| m["code"] == "rate-limited")
        .count();
    assert!(
        (1..=10).contains(&pongs),
        "the burst was answered, the rest dropped: {answers:?}"
    );
    assert_eq!(
        limited, 1,
        "told once, not once per dropped message: {answers:?}"
    );

    // Producers: a batch over the rate is refused whole with 429.
    let batch: Vec<Value> = (0..25)
        .map(|i| event("agent-start", "calm", json!({"agentId": format!("a{i}")})))
        .collect();
    let (status, answer) = broker.post(&Value::Array(batch)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (429, Some("rate-limited")),
        "{answer}"
    );
    let seq = broker
        .post_event(&event("agent-start", "calm", json!({"agentId": "one"})))
        .await;
    assert_eq!(seq, 1, "nothing of the refused batch was sequenced");
    bystander.next_event().await;

    let stats = broker.stats().await;
    assert!(
        stats["clientErrors"]["rate-limited"].as_u64() >= Some(1),
        "{stats}"
    );
    assert_eq!(stats["eventsRejected"]["rate-limited"], 1, "{stats}");
}

/// Protected mode refuses an unauthenticated broker off loopback before it
/// listens, with status 2 (settings that cannot work, as for any bad
/// setting) and the reason on stderr.
#[test]
fn an_open_broker_off_loopback_refuses_to_start_with_status_2() {
    let data_dir = common::DataDir::new();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agent-events"))
        .env("BIND_ADDR", "0.0.0.0")
        .env("WS_PORT", "0")
        .env("DATA_DIR", data_dir.path())
        .env_remove("AGENT_EVENTS_AUTH_HMAC_SECRET")
        .env_remove("AGENT_EVENTS_AUTH_PUBLIC_KEY_FILE")
        .env_remove("REDIS_URL")
        .env_remove("MONGODB_URI")
        .output()
        .expect("the broker runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0 without authentication"),
        "{stderr}"
    );
}
