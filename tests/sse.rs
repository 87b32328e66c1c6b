//! Server-Sent Events and the AG-UI view, through the real binary: the
//! `id:`/`event:`/`data:` of each message, filters, resuming with `fromSeq`
//! and `Last-Event-ID` while producers keep posting (nothing missed, nothing
//! twice), keep-alive comments, the slow-consumer rule, a departed client, a
//! graceful shutdown, conversation streams, every refusal, and the AG-UI
//! events of a known run.
//!
//! The SSE client here is reqwest's `bytes_stream` plus a small parser of the
//! SSE text; nothing sleeps to synchronise: every wait is for a message (with
//! a timeout) or a bounded poll of `/admin/stats`.

mod common;

use agent_events_actors::auth::{now_secs, sign_hmac, Claims, Role};
use common::{all_types, assert_delivered, event, thinking, Broker, BusyProducers, STEP};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

// ---------------------------------------------------------------- the client

/// One SSE block (up to a blank line): a message's fields, or comments.
#[derive(Debug, Default, Clone)]
struct Block {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comments: Vec<String>,
}

impl Block {
    /// Reads the lines of one block as the SSE specification does.
    fn parse(text: &str) -> Block {
        let mut block = Block::default();
        for line in text.lines().filter(|line| !line.is_empty()) {
            if let Some(comment) = line.strip_prefix(':') {
                block.comments.push(comment.trim_start().to_owned());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => block.id = Some(value),
                "event" => block.event = Some(value),
                "data" => {
                    assert!(block.data.is_none(), "one data line per message: {text:?}");
                    block.data = Some(value);
                }
                "retry" => block.retry = value.parse().ok(),
                other => panic!("unknown SSE field `{other}` in {text:?}"),
            }
        }
        block
    }

    /// The data as JSON.
    fn json(&self) -> Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("no data: {self:?}"));
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"))
    }

    /// The seq of an execution stream's message (its `id:`).
    fn seq(&self) -> u64 {
        let id = self
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("no id: {self:?}"));
        id.parse()
            .unwrap_or_else(|_| panic!("id `{id}` is not a seq"))
    }
}

/// Splits complete blocks off the front of `buffer`.
fn take_blocks(buffer: &mut String) -> Vec<Block> {
    let mut blocks = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let text: String = buffer.drain(..end + 2).collect();
        blocks.push(Block::parse(&text));
    }
    blocks
}

/// A Server-Sent Events reader.
struct SseClient {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
    ready: std::collections::VecDeque<Block>,
    headers: reqwest::header::HeaderMap,
}

impl SseClient {
    /// Opens `path`, which must answer 200 `text/event-stream`.
    async fn open(broker: &Broker, path: &str) -> SseClient {
        SseClient::open_from(broker, path, None).await
    }

    /// Opens `path` with a `Last-Event-ID` header when one is given.
    async fn open_from(broker: &Broker, path: &str, last_event_id: Option<&str>) -> SseClient {
        let response = get(broker, path, last_event_id).await;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            panic!("GET {path}: {status} {body}");
        }
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        assert_eq!(content_type, Some("text/event-stream"), "GET {path}");
        let body = response
            .bytes_stream()
            .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
            .boxed();
        SseClient {
            body,
            buffer: String::new(),
            ready: Default::default(),
            headers,
        }
    }

    /// The next block within `limit`: `None` on timeout, `Some(None)` once the stream ended.
    async fn next_block_within(&mut self, limit: Duration) -> Option<Option<Block>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(block) = self.ready.pop_front() {
                return Some(Some(block));
            }
            match tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()?
            {
                Some(Ok(bytes)) => {
                    self.buffer
                        .push_str(std::str::from_utf8(&bytes).expect("UTF-8"));
                    self.ready.extend(take_blocks(&mut self.buffer));
                }
                Some(Err(e)) => panic!("the stream failed: {e}"),
                None => {
                    assert!(
                        self.buffer.is_empty(),
                        "a block cut short: {:?}",
                        self.buffer
                    );
                    return Some(None);
                }
            }
        }
    }

    /// The next block, `None` once the stream ended; fails after [`STEP`].
    async fn next_block(&mut self) -> Option<Block> {
        self.next_block_within(STEP)
            .await
            .unwrap_or_else(|| panic!("nothing received within {STEP:?}"))
    }

    /// The next block that carries data (skipping `retry:` and comments).
    async fn next_message(&mut self) -> Block {
        loop {
            let block = self.next_block().await.expect("the stream ended");
            if block.data.is_some() {
                return block;
            }
        }
    }

    /// The next event message; checks it is the WebSocket `event` message.
    async fn next_event(&mut self) -> Block {
        let block = self.next_message().await;
        let message = block.json();
        assert_eq!(message["type"], "event", "{message}");
        assert_eq!(message["executionId"], message["event"]["executionId"]);
        assert_eq!(block.event.as_deref(), message["event"]["type"].as_str());
        block
    }

    /// Every data message until the stream ends.
    async fn until_end(&mut self) -> Vec<Block> {
        let mut messages = Vec::new();
        while let Some(block) = self.next_block().await {
            if block.data.is_some() {
                messages.push(block);
            }
        }
        messages
    }
}

async fn get(broker: &Broker, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(broker.url(path));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    tokio::time::timeout(STEP, request.send())
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Asserts a refusal: 400, JSON `{"error":{"code":…,"message":…}}`.
async fn expect_refusal(broker: &Broker, path: &str, last_event_id: Option<&str>, code: &str) {
    expect_status(broker, path, last_event_id, 400, code).await;
}

/// Asserts a refusal with `status` and `code`.
async fn expect_status(
    broker: &Broker,
    path: &str,
    last_event_id: Option<&str>,
    want: u16,
    code: &str,
) {
    let response = get(broker, path, last_event_id).await;
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").cloned();
    let text = response.text().await.unwrap();
    let what = format!("GET {path} (Last-Event-ID {last_event_id:?}): {status} {text}");
    assert_eq!(status, want, "{what}");
    assert_eq!(content_type.unwrap(), "application/json", "{what}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}"));
    assert_eq!(body["error"]["code"], code, "{what}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}"
    );
}

fn marked(mut e: Value, end: bool) -> Value {
    e["metadata"] = json!({ "end": end });
    e
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_streams_each_event_with_its_seq_type_and_websocket_message() {
    let broker = Broker::start().await;
    let mut sse = SseClient::open(&broker, "/api/executions/exec-sse/stream").await;
    assert_eq!(sse.headers["cache-control"], "no-cache");
    let first = sse.next_block().await.expect("a first block");
    assert_eq!(first.retry, Some(1000), "a retry hint first: {first:?}");
    let mut ws = broker.connect().await;
    ws.subscribe_execution("exec-sse").await;

    let posted = all_types("exec-sse", "conv-sse");
    for e in &posted {
        broker.post_event(e).await;
    }
    for (i, e) in posted.iter().enumerate() {
        let seq = i as u64 + 1;
        let block = sse.next_event().await;
        assert_eq!(block.seq(), seq, "{block:?}");
        assert_eq!(block.event.as_deref(), e["type"].as_str(), "{block:?}");
        let message = block.json();
        assert_delivered(e, &message["event"], seq);
        assert_eq!(
            message,
            ws.next_event().await,
            "the WebSocket's very message"
        );
    }
    let stats = broker.stats().await;
    assert_eq!(
        stats["connections"], 2,
        "a stream counts as a connection: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_the_stream_as_they_narrow_a_subscription() {
    let broker = Broker::start().await;
    let tools = "/api/executions/exec-f/stream?types=tool-call,%20tool-result&agentId=writer-1";
    let mut by_tool = SseClient::open(&broker, tools).await;
    let mut by_department =
        SseClient::open(&broker, "/api/executions/exec-f/stream?department=story").await;
    let posted = all_types("exec-f", "conv-f");
    for e in &posted {
        broker.post_event(e).await;
    }
    let tool_end = event(
        "tool-call",
        "exec-f",
        json!({"agentId": "writer-1", "toolName": "t"}),
    );
    let last = broker.post_event(&tool_end).await;
    let story_end = event("department-start", "exec-f", json!({"department": "story"}));
    let story_last = broker.post_event(&story_end).await;

    let want = |keep: &dyn Fn(&Value) -> bool, last: u64| -> Vec<u64> {
        let mut seqs: Vec<u64> = (1..)
            .zip(&posted)
            .filter(|(_, e)| keep(e))
            .map(|(s, _)| s)
            .collect();
        seqs.push(last);
        seqs
    };
    let tool_seqs = want(
        &|e| e["type"] == "tool-call" || e["type"] == "tool-result",
        last,
    );
    let story_seqs = want(&|e| e["department"] == "story", story_last);
    assert_eq!(tool_seqs.len(), 3);
    assert_eq!(story_seqs.len(), 7);
    for (client, want) in [(&mut by_tool, tool_seqs), (&mut by_department, story_seqs)] {
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.push(client.next_event().await.seq());
        }
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_seq_replays_the_missed_events_then_goes_live() {
    let broker = Broker::start().await;
    for n in 1..=5 {
        broker.post_event(&thinking("exec-r", n)).await;
    }
    let mut sse = SseClient::open(&broker, "/api/executions/exec-r/stream?fromSeq=2").await;
    for seq in 3..=5 {
        assert_eq!(sse.next_event().await.seq(), seq);
    }
    assert_eq!(broker.post_event(&thinking("exec-r", 6)).await, 6);
    assert_eq!(sse.next_event().await.seq(), 6);

    let mut everything = SseClient::open(&broker, "/api/executions/exec-r/stream?fromSeq=0").await;
    for seq in 1..=6 {
        assert_eq!(everything.next_event().await.seq(), seq);
    }
    let stats = broker.stats().await;
    assert_eq!(stats["replayed"], 3 + 6, "{stats}");
}

/// Two producers post without pause; a reader reads a while, drops the
/// connection and reconnects with `Last-Event-ID` set to the last id it saw,
/// again and again, always to the same URL with `?fromSeq=0` (as EventSource
/// would: the header must win). Every seq must arrive exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn last_event_id_resumes_at_the_seam_while_producers_post() {
    const EXECUTION: &str = "exec-seam";
    const PATH: &str = "/api/executions/exec-seam/stream?fromSeq=0";
    let broker = Arc::new(Broker::start().await);
    let producers = BusyProducers::start(&broker, EXECUTION, 2);

    let mut got = Vec::new();
    let mut last_id: Option<String> = None;
    for round in 0..8u64 {
        let mut sse = SseClient::open_from(&broker, PATH, last_id.as_deref()).await;
        for _ in 0..5 + round * 3 {
            let block = sse.next_event().await;
            got.push(block.seq());
            last_id = block.id;
        }
        // Dropped mid-flow: the producers keep going while nobody listens.
        drop(sse);
    }
    producers.stop_after(20).await;
    let last = broker
        .post_event(&marked(thinking(EXECUTION, 0), true))
        .await;

    let mut sse = SseClient::open_from(&broker, PATH, last_id.as_deref()).await;
    loop {
        let block = sse.next_event().await;
        got.push(block.seq());
        if block.json()["event"]["metadata"]["end"] == true {
            break;
        }
    }
    let want: Vec<u64> = (1..=last).collect();
    assert!(
        got == want,
        "expected 1..={last} once each in order; got {} events: {got:?}",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_comments_come_every_heartbeat() {
    // With the default 30 s heartbeat, three keep-alives would not come within STEP.
    let broker = Broker::builder()
        .setting("HEARTBEAT_INTERVAL_MS", 200)
        .start()
        .await;
    let mut sse = SseClient::open(&broker, "/api/executions/exec-k/stream").await;
    let mut keep_alives = 0;
    while keep_alives < 3 {
        let block = sse.next_block().await.expect("the stream ended");
        assert!(block.data.is_none() && block.id.is_none(), "{block:?}");
        if block.comments == ["keep-alive"] {
            keep_alives += 1;
        }
    }
}

/// A client that stops reading (a small receive buffer, so the broker's
/// writes stall soon) is sent `event: error` with `slow-consumer` and its
/// stream ends; a reader of the same execution misses nothing.
///
/// The stalled reader is a raw socket rather than reqwest: reqwest cannot
/// shrink its receive buffer, and loopback buffers grow to megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_gets_an_error_event_and_its_stream_ends() {
    const EXECUTION: &str = "exec-slow";
    let broker = Broker::builder()
        .setting("SESSION_QUEUE_BYTES", 65536)
        .start()
        .await;
    let mut stalled = stalled_reader(&broker, "/api/executions/exec-slow/stream").await;
    let mut reader = SseClient::open(&broker, "/api/executions/exec-slow/stream").await;
    broker
        .wait_for_stats("two streams", |s| s["connections"] == 2)
        .await;
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let block = reader.next_event().await;
            got.push(block.seq());
            if block.json()["event"]["metadata"]["end"] == true {
                return got;
            }
        }
    });

    let blob = "x".repeat(30_000);
    let mut posted = 0u64;
    while broker.stats().await["drops"]["slow-consumer"] == 0 {
        for _ in 0..4 {
            let mut e = thinking(EXECUTION, posted);
            e["metadata"] = json!({"blob": blob});
            posted += 1;
            assert_eq!(broker.post_event(&e).await, posted);
        }
        assert!(
            posted < 2000,
            "{posted} events of 30 KB and no slow-consumer"
        );
    }

    // The stalled client reads now: what was in flight, then the verdict, then the end.
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, stalled.read_to_end(&mut raw))
        .await
        .expect("the stalled stream never ended")
        .unwrap();
    let blocks = sse_blocks_of_http_response(&raw);
    let (verdict, before) = blocks.split_last().expect("blocks");
    assert_eq!(verdict.event.as_deref(), Some("error"), "{verdict:?}");
    assert_eq!(verdict.json()["code"], "slow-consumer", "{verdict:?}");
    let in_flight: Vec<u64> = before
        .iter()
        .filter(|b| b.data.is_some())
        .map(Block::seq)
        .collect();
    assert!(
        in_flight.windows(2).all(|w| w[0] + 1 == w[1]),
        "in order, no hole: {in_flight:?}"
    );

    let last = broker
        .post_event(&marked(thinking(EXECUTION, 0), true))
        .await;
    let got = reading.await.unwrap();
    assert_eq!(
        got,
        (1..=last).collect::<Vec<_>>(),
        "the reader missed or repeated events"
    );
    let stats = broker
        .wait_for_stats("the slow stream gone", |s| s["connections"] == 1)
        .await;
    assert_eq!(stats["drops"]["slow-consumer"], 1, "{stats}");
    assert_eq!(stats["clientErrors"]["slow-consumer"], 1, "{stats}");
}

/// Sends a GET for `path` on a socket with an 8 KiB receive buffer, and reads nothing.
async fn stalled_reader(broker: &Broker, path: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    let mut tcp = socket
        .connect(([127, 0, 0, 1], broker.port).into())
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// The SSE blocks of a raw HTTP/1.1 response with a chunked body.
fn sse_blocks_of_http_response(raw: &[u8]) -> Vec<Block> {
    let text = String::from_utf8_lossy(raw);
    let (head, mut rest) = text.split_once("\r\n\r\n").expect("an HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    take_blocks(&mut body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_is_forgotten() {
    // A departed client is noticed at the next write: a keep-alive at the latest.
    let broker = Broker::builder()
        .setting("HEARTBEAT_INTERVAL_MS", 200)
        .start()
        .await;
    let sse = SseClient::open(&broker, "/api/conversations/conv-gone/stream").await;
    broker
        .wait_for_stats("one stream", |s| {
            s["connections"] == 1 && s["subscriptions"] == 1
        })
        .await;
    drop(sse);
    broker
        .wait_for_stats("the stream gone", |s| {
            s["connections"] == 0 && s["subscriptions"] == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_ends_the_stream_after_everything_accepted() {
    let mut broker = Broker::start().await;
    let mut sse = SseClient::open(&broker, "/api/executions/exec-bye/stream").await;
    for n in 1..=30 {
        assert_eq!(broker.post_event(&thinking("exec-bye", n)).await, n);
    }
    broker.signal(libc::SIGTERM);
    let messages = sse.until_end().await;
    let (last, events) = messages.split_last().expect("messages");
    assert_eq!(last.event.as_deref(), Some("error"), "{last:?}");
    assert_eq!(last.json()["code"], "shutting-down", "{last:?}");
    let seqs: Vec<u64> = events.iter().map(Block::seq).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    let status = broker.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_streams_its_executions_and_resumes_the_one_it_names() {
    let broker = Broker::start().await;
    let mut sse = SseClient::open(&broker, "/api/conversations/conv-a/stream").await;
    let in_a = |execution: &str, n| {
        let mut e = thinking(execution, n);
        e["conversationId"] = "conv-a".into();
        e
    };
    broker.post_event(&in_a("exec:1", 1)).await;
    broker.post_event(&in_a("exec:1", 2)).await;
    broker.post_event(&in_a("exec-2", 1)).await;
    let mut elsewhere = thinking("exec-x", 1);
    elsewhere["conversationId"] = "conv-b".into();
    broker.post_event(&elsewhere).await;
    broker.post_event(&in_a("exec:1", 3)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(sse.next_event().await.id.unwrap());
    }
    assert_eq!(ids, ["exec:1:1", "exec:1:2", "exec-2:1", "exec:1:3"]);
    drop(sse);

    // Resume after exec:1's first event: its later ones replay, then live.
    let path = "/api/conversations/conv-a/stream";
    let mut resumed = SseClient::open_from(&broker, path, Some("exec:1:1")).await;
    broker.post_event(&in_a("exec-2", 2)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(resumed.next_event().await.id.unwrap());
    }
    assert_eq!(ids, ["exec:1:2", "exec:1:3", "exec-2:2"]);

    // An ID naming another conversation's execution replays none of it.
    let mut foreign = SseClient::open_from(&broker, path, Some("exec-x:0")).await;
    broker.post_event(&in_a("exec-2", 3)).await;
    assert_eq!(foreign.next_event().await.id.unwrap(), "exec-2:3");

    // Filters apply to conversations too.
    let mut filtered = SseClient::open(
        &broker,
        "/api/conversations/conv-a/stream?types=agent-start",
    )
    .await;
    let start = event(
        "agent-start",
        "exec-2",
        json!({"agentId": "a", "conversationId": "conv-a"}),
    );
    broker.post_event(&in_a("exec-2", 4)).await;
    broker.post_event(&start).await;
    let block = filtered.next_event().await;
    assert_eq!(
        (block.id.as_deref(), block.event.as_deref()),
        (Some("exec-2:5"), Some("agent-start"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_json_400_and_a_stable_code() {
    let broker = Broker::builder()
        .setting("BUFFER_SIZE", 2)
        .setting("MAX_REPLAY_EVENTS", 3)
        .start()
        .await;
    let long = "x".repeat(129);
    let refusals: &[(&str, Option<&str>, &str)] = &[
        ("/api/executions/a%20b/stream", None, "invalid-id"),
        (
            &format!("/api/conversations/{long}/stream"),
            None,
            "invalid-id",
        ),
        ("/api/executions/a%20b/ag-ui", None, "invalid-id"),
        ("/api/executions/e/stream?fromSeq=-1", None, "bad-request"),
        ("/api/executions/e/stream?fromSeq=x", None, "bad-request"),
        ("/api/executions/e/stream?types=nope", None, "bad-request"),
        ("/api/executions/e/stream?types=", None, "bad-request"),
        ("/api/executions/e/stream?fromseq=1", None, "bad-request"),
        ("/api/executions/e/stream?limit=3", None, "bad-request"),
        ("/api/conversations/c/stream?fromSeq=1", None, "bad-request"),
        (
            "/api/executions/e/ag-ui?types=tool-call",
            None,
            "bad-request",
        ),
        ("/api/executions/e/stream", Some("seven"), "bad-request"),
        ("/api/executions/e/stream", Some("e:7"), "bad-request"),
        ("/api/conversations/c/stream", Some("7"), "bad-request"),
        ("/api/conversations/c/stream", Some("a b:7"), "bad-request"),
        ("/api/executions/e/ag-ui", Some("0.1"), "bad-request"),
        ("/api/executions/e/ag-ui", Some("3.x"), "bad-request"),
    ];
    for (path, last_event_id, code) in refusals {
        expect_refusal(&broker, path, *last_event_id, code).await;
    }

    // A replay longer than max_replay_events is refused, not holed.
    for n in 1..=10 {
        broker.post_event(&thinking("exec-long", n)).await;
    }
    expect_refusal(
        &broker,
        "/api/executions/exec-long/stream?fromSeq=1",
        None,
        "replay-unavailable",
    )
    .await;
    expect_refusal(
        &broker,
        "/api/executions/exec-long/ag-ui",
        None,
        "replay-unavailable",
    )
    .await;
    let stats = broker.stats().await;
    assert_eq!(stats["clientErrors"]["replay-unavailable"], 2, "{stats}");
    broker
        .wait_for_stats("no stream left", |s| {
            s["connections"] == 0 && s["subscriptions"] == 0
        })
        .await;
}

/// With authentication on, a stream needs a subscriber's token for its
/// target; `?token=` works, since EventSource cannot set headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_a_stream_needs_a_token_that_may_watch_it() {
    const SECRET: &str = "a-test-secret-of-at-least-32-characters";
    let broker = Broker::builder()
        .setting("AUTH_HMAC_SECRET", SECRET)
        .start()
        .await;
    let claims = Claims {
        sub: "watcher".into(),
        exp: now_secs() + 600,
        roles: vec![Role::Subscriber],
        executions: vec!["exec-a".into()],
        conversations: vec![],
    };
    let token = sign_hmac(&claims, SECRET.as_bytes());
    let path = |p: &str| format!("{p}?token={token}");
    expect_status(
        &broker,
        "/api/executions/exec-a/stream",
        None,
        401,
        "unauthorized",
    )
    .await;
    expect_status(
        &broker,
        &path("/api/executions/exec-b/stream"),
        None,
        403,
        "forbidden",
    )
    .await;
    expect_status(
        &broker,
        &path("/api/conversations/c/stream"),
        None,
        403,
        "forbidden",
    )
    .await;
    expect_status(
        &broker,
        &path("/api/executions/exec-b/ag-ui"),
        None,
        403,
        "forbidden",
    )
    .await;
    SseClient::open(&broker, &path("/api/executions/exec-a/stream")).await;
    SseClient::open(&broker, &path("/api/executions/exec-a/ag-ui")).await;
}

// ---------------------------------------------------------------- AG-UI

/// A run in the order an orchestrator emits it, in conversation `conv-run`.
fn known_run(execution: &str) -> Vec<Value> {
    let e = |kind: &str, fields: Value| {
        let mut e = event(kind, execution, fields);
        e["conversationId"] = "conv-run".into();
        e["timestamp"] = "2025-10-01T12:00:00.250Z".into();
        e
    };
    vec![
        e(
            "orchestration-start",
            json!({"userPrompt": "Create a dramatic scene"}),
        ),
        e(
            "department-start",
            json!({"department": "story", "agentId": "story-head"}),
        ),
        e(
            "agent-start",
            json!({"agentId": "writer-1", "department": "story"}),
        ),
        e(
            "agent-thinking",
            json!({"agentId": "writer-1", "thought": "Consider the setting", "step": 0}),
        ),
        e(
            "tool-call",
            json!({"agentId": "writer-1", "toolName": "search", "toolCallId": "call-1", "input": {"q": "noir"}}),
        ),
        e(
            "tool-result",
            json!({"agentId": "writer-1", "toolName": "search", "toolCallId": "call-1", "output": {"hits": 3}, "success": true}),
        ),
        e(
            "quality-check",
            json!({"qualityScore": 85, "department": "story", "passed": true}),
        ),
        e(
            "review-status",
            json!({"department": "story", "status": "approved"}),
        ),
        e(
            "agent-complete",
            json!({"agentId": "writer-1", "department": "story", "success": true}),
        ),
        e(
            "department-complete",
            json!({"department": "story", "qualityScore": 85}),
        ),
        e(
            "orchestration-complete",
            json!({"status": "success", "result": {"scenes": 1}}),
        ),
    ]
}

/// The (id, AG-UI type) of each message of that run, in order.
const KNOWN_RUN_AG_UI: [(&str, &str); 17] = [
    ("1.0", "RUN_STARTED"),
    ("2.0", "STEP_STARTED"),
    ("3.0", "CUSTOM"),
    ("4.0", "REASONING_START"),
    ("4.1", "REASONING_MESSAGE_START"),
    ("4.2", "REASONING_MESSAGE_CONTENT"),
    ("4.3", "REASONING_MESSAGE_END"),
    ("4.4", "REASONING_END"),
    ("5.0", "TOOL_CALL_START"),
    ("5.1", "TOOL_CALL_ARGS"),
    ("5.2", "TOOL_CALL_END"),
    ("6.0", "TOOL_CALL_RESULT"),
    ("7.0", "CUSTOM"),
    ("8.0", "CUSTOM"),
    ("9.0", "CUSTOM"),
    ("10.0", "STEP_FINISHED"),
    ("11.0", "RUN_FINISHED"),
];

/// Reads AG-UI messages until `count`; checks each has an id, no `event:`, and a type.
async fn ag_ui_messages(sse: &mut SseClient, count: usize) -> Vec<(String, Value)> {
    let mut messages = Vec::new();
    while messages.len() < count {
        let block = sse.next_message().await;
        assert_eq!(block.event, None, "AG-UI messages are unnamed: {block:?}");
        let value = block.json();
        assert!(value["type"].is_string(), "{value}");
        messages.push((block.id.expect("an id"), value));
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ag_ui_stream_of_a_known_run_replays_then_goes_live() {
    let broker = Broker::start().await;
    let run = known_run("run-1");
    for e in &run[..5] {
        broker.post_event(e).await;
    }
    // From the first event (the run so far), then live.
    let mut sse = SseClient::open(&broker, "/api/executions/run-1/ag-ui").await;
    for e in &run[5..] {
        broker.post_event(e).await;
    }
    let messages = ag_ui_messages(&mut sse, KNOWN_RUN_AG_UI.len()).await;
    let got: Vec<(&str, &str)> = messages
        .iter()
        .map(|(id, v)| (id.as_str(), v["type"].as_str().unwrap()))
        .collect();
    assert_eq!(got, KNOWN_RUN_AG_UI);

    let by_id = |id: &str| &messages.iter().find(|(i, _)| i == id).unwrap().1;
    assert_eq!(by_id("1.0")["threadId"], "conv-run");
    assert_eq!(by_id("1.0")["runId"], "run-1");
    assert_eq!(
        by_id("1.0")["rawEvent"]["userPrompt"],
        "Create a dramatic scene"
    );
    assert_eq!(by_id("1.0")["timestamp"], 1_759_320_000_250i64);
    assert_eq!(by_id("2.0")["stepName"], "story");
    assert_eq!(by_id("3.0")["name"], "agent-start");
    assert_eq!(by_id("3.0")["value"]["agentId"], "writer-1");
    assert_eq!(by_id("4.2")["delta"], "Consider the setting");
    assert_eq!(by_id("4.2")["messageId"], "run-1/4/reasoning");
    assert_eq!(by_id("5.0")["toolCallName"], "search");
    assert_eq!(by_id("5.0")["toolCallId"], "run-1/tool-call/call-1");
    let args: Value = serde_json::from_str(by_id("5.1")["delta"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"q": "noir"}));
    assert_eq!(by_id("6.0")["toolCallId"], "run-1/tool-call/call-1");
    assert_eq!(by_id("6.0")["content"], r#"{"hits":3}"#);
    assert_eq!(by_id("10.0")["stepName"], "story");
    assert_eq!(by_id("11.0")["outcome"], json!({"type": "success"}));
    assert_eq!(by_id("11.0")["result"], json!({"scenes": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ag_ui_stream_resumes_inside_an_event_and_a_failed_run_is_a_run_error() {
    let broker = Broker::start().await;
    for e in known_run("run-2") {
        broker.post_event(&e).await;
    }
    // The client had TOOL_CALL_START and TOOL_CALL_ARGS of seq 5: it gets the rest.
    let mut sse = SseClient::open_from(&broker, "/api/executions/run-2/ag-ui", Some("5.1")).await;
    let rest = ag_ui_messages(&mut sse, KNOWN_RUN_AG_UI.len() - 10).await;
    let ids: Vec<&str> = rest.iter().map(|(id, _)| id.as_str()).collect();
    let want: Vec<&str> = KNOWN_RUN_AG_UI[10..].iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, want);
    // `fromSeq` counts whole events.
    let mut sse = SseClient::open(&broker, "/api/executions/run-2/ag-ui?fromSeq=9").await;
    let rest = ag_ui_messages(&mut sse, 2).await;
    assert_eq!((rest[0].0.as_str(), rest[1].0.as_str()), ("10.0", "11.0"));

    let start = event("orchestration-start", "run-3", json!({}));
    let failed = event(
        "orchestration-complete",
        "run-3",
        json!({"status": "failed", "result": {"error": "out of budget"}}),
    );
    broker.post_event(&start).await;
    broker.post_event(&failed).await;
    let mut sse = SseClient::open(&broker, "/api/executions/run-3/ag-ui").await;
    let messages = ag_ui_messages(&mut sse, 2).await;
    assert_eq!(messages[0].1["type"], "RUN_STARTED");
    assert_eq!(
        messages[0].1["threadId"], "run-3",
        "no conversation: the execution is the thread"
    );
    assert_eq!(messages[1].1["type"], "RUN_ERROR");
    assert_eq!(messages[1].1["message"], "out of budget");
}
