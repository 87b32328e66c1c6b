//! Webhook notifications of the real binary, to a real HTTP receiver bound
//! on loopback by the test: the signature and payload a receiver gets,
//! retries after 500s, dead letters and the admin API that retries or
//! discards them, redelivery after a `kill -9` and restart, the
//! running-too-long rule, WebSocket delivery going on while the receiver
//! hangs, and in a cluster only the node a producer posted to notifying.
//! Every wait is for a condition, with a deadline.

mod cluster_support;
mod common;

use cluster_support::{start_nodes, Redis};
use common::{assert_delivered, event, json_eq, Broker, BrokerBuilder, DataDir, MongoDb, STEP};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The key the broker signs with in these tests.
const SECRET: &str = "test-notify-secret-0123456789abcdef";

// ------------------------------------------------------------- the receiver

/// How the receiver answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200.
    Ok,
    /// 503, as a receiver that is down behind its proxy.
    Down,
    /// Never: it reads the request and holds the connection.
    Hang,
}

/// One request the receiver got, and the status it answered (0: none, it hung).
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn key(&self) -> &str {
        self.header("idempotency-key")
    }

    fn payload(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

#[derive(Debug)]
struct ReceiverState {
    answer: Answer,
    /// Answer 500 to this many requests first, whatever `answer` says.
    fail_next: usize,
    received: Vec<Received>,
}

/// A webhook receiver on 127.0.0.1: records every request, answers as told.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            state: Arc::new(Mutex::new(ReceiverState {
                answer,
                fail_next: 0,
                received: Vec::new(),
            })),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(stream));
            }
        });
        receiver
    }

    fn answer(&self, answer: Answer) {
        self.state.lock().unwrap().answer = answer;
    }

    fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Serves one keep-alive connection: request after request.
    async fn serve(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        loop {
            let Some((headers, body)) = read_request(&mut stream).await else {
                return;
            };
            let status = {
                let mut state = self.state.lock().unwrap();
                let status = if state.fail_next > 0 {
                    state.fail_next -= 1;
                    500
                } else {
                    match state.answer {
                        Answer::Ok => 200,
                        Answer::Down => 503,
                        Answer::Hang => 0,
                    }
                };
                state.received.push(Received {
                    headers,
                    body,
                    status,
                });
                status
            };
            self.changed.notify_waiters();
            if status == 0 {
                // Hold the connection without answering until the broker gives up.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                return;
            }
            let reply = match status {
                200 => "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_owned(),
                code => format!("HTTP/1.1 {code} Error\r\ncontent-length: 4\r\n\r\nnope"),
            };
            if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Waits (at most [`STEP`]) until the requests so far satisfy `ready`; returns them.
    async fn wait_for(&self, what: &str, ready: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + STEP;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let received = self.received();
            if ready(&received) {
                return received;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                panic!("the receiver never saw {what}; it got {received:#?}");
            }
        }
    }

    /// Waits until `n` requests in all arrived.
    async fn wait_for_count(&self, n: usize) -> Vec<Received> {
        self.wait_for(&format!("{n} requests"), |r| r.len() >= n)
            .await
    }
}

/// Reads one HTTP/1.1 request: lower-cased headers and the body.
async fn read_request(
    stream: &mut BufReader<TcpStream>,
) -> Option<(HashMap<String, String>, String)> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    assert!(line.starts_with("POST /hook "), "request line {line:?}");
    let mut headers = HashMap::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((headers, String::from_utf8(body).ok()?))
}

/// Checks the signature the way a receiver would: HMAC-SHA256 of
/// `"<timestamp>.<body>"` under the shared secret, and a recent timestamp.
fn assert_signed(request: &Received) {
    let timestamp = request.header("x-agent-events-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", request.body).as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        request.header("x-agent-events-signature"),
        format!("sha256={hex}")
    );
    let sent: i64 = timestamp.parse().expect("a Unix timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - sent).abs() < 60, "timestamp {sent}, now {now}");
    assert_eq!(request.header("content-type"), "application/json");
}

// --------------------------------------------------------------- the broker

/// Small waits and backoffs, so retries take milliseconds.
fn notifying() -> BrokerBuilder {
    Broker::builder()
        .setting("NOTIFY_SECRET", SECRET)
        .setting("NOTIFY_POLL_MS", 50)
        .setting("NOTIFY_BACKOFF_BASE_MS", 50)
        .setting("NOTIFY_BACKOFF_MAX_MS", 200)
        .setting("NOTIFY_TIMEOUT_MS", 1000)
}

/// An admin request: (status, JSON body or null).
async fn admin(broker: &Broker, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_at(broker.url(path), method, body, None).await
}

/// An admin request to `url`, with a bearer token if given: (status, JSON
/// body, or null when there is none).
async fn admin_at(
    url: String,
    method: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let (status, answer) =
        common::request_url(&reqwest::Client::new(), method, &url, token, body).await;
    // An empty body reads as the empty string: these tests compare with null.
    let answer = if answer == Value::String(String::new()) {
        Value::Null
    } else {
        answer
    };
    (status, answer)
}

/// Adds a rule through the admin API.
async fn add_rule(broker: &Broker, rule: Value) {
    let (status, answer) = admin(broker, "POST", "/admin/notifications/rules", Some(rule)).await;
    assert_eq!(status, 201, "{answer}");
}

fn failed_tool(execution_id: &str) -> Value {
    event(
        "tool-result",
        execution_id,
        json!({"agentId": "a1", "toolName": "search", "success": false, "error": "boom"}),
    )
}

fn failed_tool_rule(receiver: &Receiver) -> Value {
    json!({"id": "failed-tool", "url": receiver.url, "types": ["tool-result"], "when": ["success == false"]})
}

fn notifications(stats: &Value) -> &Value {
    &stats["notifications"]
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn a_match_is_posted_signed_with_the_event_as_its_payload() {
    let receiver = Receiver::start(Answer::Ok).await;
    let dir = DataDir::new();
    let rules = dir.path().join("rules.json");
    let file = json!({"rules": [
        {"id": "low-quality", "url": receiver.url, "types": ["quality-check"], "when": ["qualityScore < 0.7"]},
        failed_tool_rule(&receiver),
    ]});
    std::fs::write(&rules, file.to_string()).unwrap();
    let broker = notifying()
        .setting("NOTIFY_RULES_FILE", rules.display())
        .start()
        .await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-n1").await;
    let posted = vec![
        event("quality-check", "exec-n1", json!({"qualityScore": 0.9})),
        event(
            "quality-check",
            "exec-n1",
            json!({"qualityScore": 0.5, "passed": false}),
        ),
        failed_tool("exec-n1"),
        event("agent-start", "exec-n1", json!({"agentId": "a1"})),
    ];
    broker.post_ok(&Value::Array(posted.clone())).await;
    let live = client.events(4).await;

    let received = receiver.wait_for_count(2).await;
    let by_key: HashMap<&str, &Received> = received.iter().map(|r| (r.key(), r)).collect();
    for (seq, rule) in [(2, "low-quality"), (3, "failed-tool")] {
        let request = by_key
            .get(format!("exec-n1:{seq}:{rule}").as_str())
            .unwrap_or_else(|| panic!("no delivery of seq {seq}: {received:#?}"));
        assert_signed(request);
        assert_eq!(request.header("x-agent-events-rule"), rule);
        // The payload is the event, exactly as clients receive it.
        let payload = request.payload();
        assert_delivered(&posted[seq as usize - 1], &payload, seq);
        assert!(json_eq(&payload, &live[seq as usize - 1]), "{payload}");
    }

    // Events no rule matches were not sent: the next match is the third request.
    broker.post_event(&failed_tool("exec-n1")).await;
    let received = receiver.wait_for_count(3).await;
    assert_eq!(received.len(), 3, "{received:#?}");
    assert_eq!(received[2].key(), "exec-n1:5:failed-tool");
    let stats = broker
        .wait_for_stats("3 deliveries", |s| notifications(s)["delivered"] == 3)
        .await;
    assert_eq!(notifications(&stats)["enqueued"], 3, "{stats}");
    assert_eq!(notifications(&stats)["retried"], 0, "{stats}");
    let (_, _, metrics) = broker.get("/metrics").await;
    assert!(
        metrics.contains("agent_events_notifications_total{outcome=\"delivered\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_500s_are_retried_under_one_idempotency_key_then_delivered_once() {
    let receiver = Receiver::start(Answer::Ok).await;
    receiver.fail_next(2);
    let broker = notifying().start().await;
    add_rule(&broker, failed_tool_rule(&receiver)).await;
    broker.post_event(&failed_tool("exec-r")).await;

    let received = receiver
        .wait_for("a success after two 500s", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    for request in &received {
        assert_eq!(request.key(), "exec-r:1:failed-tool");
        assert_eq!(request.body, received[0].body);
        assert_signed(request);
    }
    let stats = broker
        .wait_for_stats("one delivery", |s| {
            notifications(s)["delivered"] == 1 && notifications(s)["pending"] == 0
        })
        .await;
    assert_eq!(notifications(&stats)["retried"], 2, "{stats}");

    // Nothing more comes for that key: the next request is the next event's.
    broker.post_event(&failed_tool("exec-r")).await;
    let received = receiver.wait_for_count(4).await;
    assert_eq!(received[3].key(), "exec-r:2:failed-tool");
    let first = received
        .iter()
        .filter(|r| r.key() == "exec-r:1:failed-tool")
        .count();
    assert_eq!(first, 3, "{received:#?}");
}

#[tokio::test]
async fn a_receiver_that_stays_down_gives_dead_letters_that_can_be_retried_or_discarded() {
    let receiver = Receiver::start(Answer::Down).await;
    let broker = notifying().setting("NOTIFY_MAX_ATTEMPTS", 3).start().await;
    add_rule(&broker, failed_tool_rule(&receiver)).await;
    broker.post_event(&failed_tool("exec-d")).await;
    broker.post_event(&failed_tool("exec-d")).await;

    let stats = broker
        .wait_for_stats("two dead letters", |s| {
            notifications(s)["deadLetters"] == 2 && notifications(s)["pending"] == 0
        })
        .await;
    assert_eq!(notifications(&stats)["dead-lettered"], 2, "{stats}");
    assert_eq!(notifications(&stats)["retried"], 4, "{stats}");
    let received = receiver.received();
    for key in ["exec-d:1:failed-tool", "exec-d:2:failed-tool"] {
        let attempts = received.iter().filter(|r| r.key() == key).count();
        assert_eq!(attempts, 3, "{key}: {received:#?}");
    }
    let (status, listed) = admin(&broker, "GET", "/admin/notifications/dead-letters", None).await;
    assert_eq!(status, 200, "{listed}");
    let dead = listed["deadLetters"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "{listed}");
    for letter in dead {
        assert_eq!(letter["state"], "dead");
        assert_eq!(letter["attempts"], 3);
        assert_eq!(letter["ruleId"], "failed-tool");
        assert!(
            letter["lastError"].as_str().unwrap().contains("503"),
            "{letter}"
        );
    }

    // Retry one once the receiver is back: delivered. Discard the other.
    receiver.answer(Answer::Ok);
    let path = "/admin/notifications/dead-letters/exec-d:1:failed-tool";
    let (status, answer) = admin(&broker, "POST", &format!("{path}/retry"), None).await;
    assert_eq!(status, 202, "{answer}");
    receiver
        .wait_for("the retried dead letter delivered", |r| {
            r.iter()
                .any(|r| r.status == 200 && r.key() == "exec-d:1:failed-tool")
        })
        .await;
    let discard = "/admin/notifications/dead-letters/exec-d:2:failed-tool";
    assert_eq!(admin(&broker, "DELETE", discard, None).await.0, 204);
    assert_eq!(admin(&broker, "DELETE", discard, None).await.0, 404);
    let (status, missing) = admin(&broker, "POST", &format!("{discard}/retry"), None).await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &json!("not-found"))
    );
    let stats = broker
        .wait_for_stats("no dead letter left", |s| {
            notifications(s)["deadLetters"] == 0 && notifications(s)["delivered"] == 1
        })
        .await;
    assert_eq!(notifications(&stats)["pending"], 0, "{stats}");
    let (_, listed) = admin(&broker, "GET", "/admin/notifications/dead-letters", None).await;
    assert_eq!(listed["deadLetters"], json!([]));
    // The discarded one was never sent again.
    let discarded = receiver
        .received()
        .iter()
        .filter(|r| r.key() == "exec-d:2:failed-tool")
        .count();
    assert_eq!(discarded, 3);
}

#[tokio::test]
async fn a_pending_delivery_is_delivered_after_kill_9_and_a_restart() {
    pending_delivery_after_kill_9(None).await;
}

/// The same on MongoDB (collection `notifyOutbox`, rules beside it), when
/// `MONGODB_URI` is set.
#[tokio::test]
async fn on_mongodb_a_pending_delivery_is_delivered_after_kill_9_and_a_restart() {
    let Some(db) = MongoDb::for_test("notifications", "outbox_kill_9") else {
        return;
    };
    pending_delivery_after_kill_9(Some(&db)).await;
    db.finish().await;
}

async fn pending_delivery_after_kill_9(mongodb: Option<&MongoDb>) {
    let receiver = Receiver::start(Answer::Down).await;
    let data = DataDir::new();
    let mut first = notifying()
        .store(mongodb)
        .data_dir(data.path())
        .setting("NOTIFY_MAX_ATTEMPTS", 1000)
        .start()
        .await;
    add_rule(&first, failed_tool_rule(&receiver)).await;
    first.post_event(&failed_tool("exec-k")).await;
    let before = receiver.wait_for_count(1).await;
    first.signal(libc::SIGKILL);
    first.wait_exit(STEP).await;
    let attempts_before = receiver.received().len();

    receiver.answer(Answer::Ok);
    let second = notifying()
        .store(mongodb)
        .data_dir(data.path())
        .start()
        .await;
    let received = receiver
        .wait_for("the delivery after the restart", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    let delivered: Vec<&Received> = received.iter().filter(|r| r.status == 200).collect();
    assert_eq!(delivered.len(), 1);
    // The same notification: same key and body as before the crash.
    assert_eq!(delivered[0].key(), "exec-k:1:failed-tool");
    assert_eq!(delivered[0].key(), before[0].key());
    assert_eq!(delivered[0].body, before[0].body);
    assert_signed(delivered[0]);
    assert!(received.len() > attempts_before);

    // The admin-API rule survived the restart too, and the delivered key
    // is not sent again: the next request is the next event's.
    let (_, rules) = admin(&second, "GET", "/admin/notifications/rules", None).await;
    assert_eq!(rules["rules"][0]["id"], "failed-tool", "{rules}");
    assert_eq!(rules["rules"][0]["source"], "api", "{rules}");
    second.post_event(&failed_tool("exec-k")).await;
    let received = receiver
        .wait_for("the next event's delivery", |r| {
            r.iter().any(|r| r.key() == "exec-k:2:failed-tool")
        })
        .await;
    let repeats = received
        .iter()
        .filter(|r| r.key() == "exec-k:1:failed-tool" && r.status == 200)
        .count();
    assert_eq!(repeats, 1, "{received:#?}");
}

#[tokio::test]
async fn a_running_too_long_rule_fires_once_per_execution() {
    let receiver = Receiver::start(Answer::Ok).await;
    let broker = notifying().start().await;
    add_rule(
        &broker,
        json!({"id": "slow", "url": receiver.url, "runningLongerThanSecs": 1}),
    )
    .await;
    broker
        .post_event(&event("agent-start", "exec-slow", json!({"agentId": "a1"})))
        .await;
    broker
        .post_ok(&json!([
            event("agent-start", "exec-done", json!({"agentId": "a1"})),
            event(
                "orchestration-complete",
                "exec-done",
                json!({"status": "success"})
            ),
        ]))
        .await;

    let received = receiver.wait_for_count(1).await;
    assert_eq!(received[0].key(), "exec-slow:0:slow");
    assert_signed(&received[0]);
    let payload = received[0].payload();
    assert_eq!(payload["type"], "execution-overdue");
    assert_eq!(payload["executionId"], "exec-slow");
    assert_eq!(payload["runningLongerThanSecs"], 1);

    // Many scans later (a later execution crossing the limit proves they
    // ran), exec-slow has still been notified once, and exec-done never.
    broker
        .post_event(&event(
            "agent-start",
            "exec-later",
            json!({"agentId": "a1"}),
        ))
        .await;
    let received = receiver
        .wait_for("exec-later overdue", |r| {
            r.iter().any(|r| r.key() == "exec-later:0:slow")
        })
        .await;
    let keys: Vec<&str> = received.iter().map(Received::key).collect();
    assert_eq!(keys, ["exec-slow:0:slow", "exec-later:0:slow"]);
}

#[tokio::test]
async fn websocket_delivery_goes_on_while_the_receiver_hangs() {
    let receiver = Receiver::start(Answer::Hang).await;
    let timeout = Duration::from_secs(8);
    let broker = notifying()
        .setting("NOTIFY_TIMEOUT_MS", timeout.as_millis())
        .setting("NOTIFY_CONCURRENCY", 2)
        .start()
        .await;
    add_rule(&broker, failed_tool_rule(&receiver)).await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-h").await;

    let started = Instant::now();
    // Two deliveries hang the receiver's two slots, then events keep coming.
    broker.post_event(&failed_tool("exec-h")).await;
    broker.post_event(&failed_tool("exec-h")).await;
    receiver.wait_for_count(2).await;
    for _ in 0..20 {
        broker.post_event(&failed_tool("exec-h")).await;
    }
    let live = client.events(22).await;
    assert_eq!(common::seqs(&live), (1..=22).collect::<Vec<u64>>());
    // Every event reached the client while both attempts still hung …
    assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
    // … and no more than the concurrency limit of attempts was started.
    assert_eq!(receiver.received().len(), 2);
    let stats = broker
        .wait_for_stats("22 deliveries in the outbox", |s| {
            notifications(s)["enqueued"] == 22
        })
        .await;
    assert_eq!(notifications(&stats)["delivered"], 0, "{stats}");
}

#[tokio::test]
async fn rules_are_checked_listed_replaced_and_deleted_through_the_admin_api() {
    let receiver = Receiver::start(Answer::Ok).await;
    let dir = DataDir::new();
    let rules = dir.path().join("rules.toml");
    let toml = format!(
        "[[rules]]\nid = \"from-file\"\nurl = \"{}\"\ntypes = [\"agent-start\"]\n",
        receiver.url
    );
    std::fs::write(&rules, toml).unwrap();
    let broker = notifying()
        .setting("NOTIFY_RULES_FILE", rules.display())
        .start()
        .await;
    let path = "/admin/notifications/rules";

    let bad = json!({"id": "x", "url": receiver.url, "types": ["nope"]});
    let (status, answer) = admin(&broker, "POST", path, Some(bad)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "bad-request");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`nope` is not an event type"));
    let unknown_field = json!({"id": "x", "url": receiver.url, "typez": []});
    let (status, answer) = admin(&broker, "POST", path, Some(unknown_field)).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("bad-request"))
    );
    let (status, answer) = admin(&broker, "POST", path, Some(json!("{"))).await;
    assert_eq!(status, 400, "{answer}");

    let rule = json!({"id": "low", "url": receiver.url, "types": ["quality-check"], "when": ["qualityScore < 0.5"]});
    let (status, answer) = admin(&broker, "POST", path, Some(rule.clone())).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["rule"]["source"], "api");
    let mut stricter = rule.clone();
    stricter["when"] = json!(["qualityScore < 0.3"]);
    assert_eq!(admin(&broker, "POST", path, Some(stricter)).await.0, 200);

    let (_, listed) = admin(&broker, "GET", path, None).await;
    let listed = listed["rules"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], "from-file");
    assert_eq!(listed[0]["source"], "file");
    assert_eq!(listed[1]["when"], json!(["qualityScore < 0.3"]));

    // The file's rule is the file's: not replaced or deleted here.
    let shadow = json!({"id": "from-file", "url": receiver.url, "types": ["agent-start"]});
    assert_eq!(admin(&broker, "POST", path, Some(shadow)).await.0, 400);
    let (status, answer) = admin(&broker, "DELETE", &format!("{path}/from-file"), None).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        admin(&broker, "DELETE", &format!("{path}/low"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        admin(&broker, "DELETE", &format!("{path}/low"), None)
            .await
            .0,
        404
    );
    let (_, listed) = admin(&broker, "GET", path, None).await;
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1);

    // The file's TOML rule works.
    broker
        .post_event(&event("agent-start", "exec-t", json!({"agentId": "a1"})))
        .await;
    let received = receiver.wait_for_count(1).await;
    assert_eq!(received[0].key(), "exec-t:1:from-file");
}

#[tokio::test]
async fn in_a_cluster_only_the_node_a_producer_posted_to_notifies() {
    let receiver = Receiver::start(Answer::Ok).await;
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["notify-a", "notify-b"]).await;
    for node in &nodes {
        let url = node.url("/admin/notifications/rules");
        let (status, answer) = admin_at(url, "POST", Some(failed_tool_rule(&receiver)), None).await;
        assert_eq!(status, 201, "{}: {answer}", node.name);
    }
    // Each node receives every event; each event is notified once, by the
    // node it was posted to.
    let first = nodes[0].post_event(&failed_tool("exec-c")).await;
    nodes[1].wait_stored("exec-c", first).await;
    let second = nodes[1].post_event(&failed_tool("exec-c")).await;
    nodes[0].wait_stored("exec-c", second).await;
    let third = nodes[0].post_event(&failed_tool("exec-c")).await;
    nodes[1].wait_stored("exec-c", third).await;

    let received = receiver.wait_for_count(3).await;
    let mut keys: Vec<String> = received.iter().map(|r| r.key().to_owned()).collect();
    keys.sort();
    let expected: Vec<String> = [first, second, third]
        .iter()
        .map(|seq| format!("exec-c:{seq}:failed-tool"))
        .collect();
    assert_eq!(keys, expected);
    for request in &received {
        assert_unsigned(request);
        let seq = request.payload()["seq"].as_u64().unwrap();
        assert_eq!(request.key(), format!("exec-c:{seq}:failed-tool"));
    }
    for (node, enqueued) in nodes.iter().zip([2, 1]) {
        node.wait_for("/admin/stats", "its own deliveries", |s| {
            notifications(s)["enqueued"] == enqueued && notifications(s)["delivered"] == enqueued
        })
        .await;
    }
    assert_eq!(receiver.received().len(), 3);
}

/// The cluster nodes run without `notify_secret`: unsigned, but otherwise whole.
fn assert_unsigned(request: &Received) {
    assert!(!request.headers.contains_key("x-agent-events-signature"));
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request
        .header("x-agent-events-timestamp")
        .parse::<i64>()
        .is_ok());
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_role() {
    use agent_events_actors::auth::{now_secs, sign_hmac, Claims, Role};
    const AUTH_SECRET: &str = "notifications-auth-secret-0123456789abcdef";
    let token = |role: Role| {
        let claims = Claims {
            sub: "tester".into(),
            exp: now_secs() + 600,
            roles: vec![role],
            executions: Vec::new(),
            conversations: Vec::new(),
        };
        sign_hmac(&claims, AUTH_SECRET.as_bytes())
    };
    let broker = notifying()
        .setting("AUTH_HMAC_SECRET", AUTH_SECRET)
        .start()
        .await;
    let producer = token(Role::Producer);
    let routes = [
        ("GET", "/admin/notifications/rules"),
        ("POST", "/admin/notifications/rules"),
        ("DELETE", "/admin/notifications/rules/r"),
        ("GET", "/admin/notifications/dead-letters"),
        ("POST", "/admin/notifications/dead-letters/e:1:r/retry"),
        ("DELETE", "/admin/notifications/dead-letters/e:1:r"),
    ];
    for (method, path) in routes {
        let (status, answer) = admin_at(broker.url(path), method, None, None).await;
        assert_eq!(status, 401, "{method} {path}: {answer}");
        let (status, answer) = admin_at(broker.url(path), method, None, Some(&producer)).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    let admin_token = token(Role::Admin);
    let url = broker.url("/admin/notifications/rules");
    let (status, answer) = admin_at(url, "GET", None, Some(&admin_token)).await;
    assert_eq!((status, &answer["rules"]), (200, &json!([])));
}
