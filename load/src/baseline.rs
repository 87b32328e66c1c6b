//! The baseline: the least a server must do to speak the protocol subset
//! the load tool uses, so the broker's figures have something to be
//! compared with.
//!
//! No actors, no store, no validation, no limits: one mutex-guarded map from
//! execution to its last seq and its subscribers, one task per connection
//! and one writer task per WebSocket. What it does do, it does as the broker
//! does, so the comparison is fair: seqs per execution assigned under one
//! lock (so delivery order is seq order), each event serialized once and the
//! same bytes shared by every subscriber, WebSocket buffers sized for many
//! connections, and a 202 with the broker's body shape.
//!
//! What it deliberately lacks, and the broker pays for: durability (the
//! broker answers 202 only once SQLite has committed), validation of the 11
//! event types, replay buffers, filters, conversations, and slow-consumer
//! protection (a subscriber's queue here is unbounded).

use crate::http1::{self, HeadError, ReadError};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// The broker's default `max_body_bytes`, so both refuse the same bodies.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Frames written per flush at most: enough to batch a burst into few
/// syscalls, few enough that one busy subscriber does not hog the runtime.
const WRITE_BATCH: usize = 64;

/// tungstenite allocates its read buffer eagerly (128 KiB by default), which
/// would make the baseline's memory per idle connection several times what
/// it needs (DESIGN-NOTES.md, "Memory per connection"). Clients here send
/// one small subscribe message, so 4 KiB is plenty; the write buffer is
/// filled lazily and flushed per batch.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
}

/// A deliberate fault, so the load tool's checker can be shown to catch
/// loss, duplication and reordering end to end (tests/smoke.rs). Applied to
/// every `every`-th event frame of each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub every: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Drop,
    Duplicate,
    Reorder,
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `drop:N`, `dup:N` or `reorder:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, every) = s.split_once(':').ok_or("a fault is KIND:N")?;
        let kind = match kind {
            "drop" => FaultKind::Drop,
            "dup" => FaultKind::Duplicate,
            "reorder" => FaultKind::Reorder,
            other => return Err(format!("unknown fault `{other}` (drop, dup, reorder)")),
        };
        let every = every
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or("a fault's N is a positive integer")?;
        Ok(Fault { kind, every })
    }
}

type ConnId = u64;

/// What a connection's writer task sends. Events and control frames are
/// told apart only so that faults touch events alone.
#[derive(Clone, Debug)]
enum Out {
    Event(Utf8Bytes),
    Control(Utf8Bytes),
}

/// Every execution the baseline has seen.
#[derive(Default)]
struct Hub {
    executions: HashMap<String, Execution>,
    next_conn: ConnId,
}

#[derive(Default)]
struct Execution {
    last_seq: u64,
    subscribers: Vec<(ConnId, UnboundedSender<Out>)>,
}

/// One posted event, serialized without its seq.
#[derive(Debug)]
struct Posted {
    execution_id: String,
    /// The event object as JSON, ending in `}`: the seq is spliced in
    /// before it, so the lock is held for a string copy, not a serializer.
    json: String,
}

/// Parses a body minimally: an object or an array of objects, each with a
/// string `executionId` (which the baseline needs to route it) and no
/// `seq` (which it assigns).
fn parse_batch(body: &[u8]) -> Result<Vec<Posted>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() {
        return Err("an empty batch".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(mut event) = item else {
                return Err(format!("event {i} is not an object"));
            };
            let Some(Value::String(id)) = event.get("executionId").cloned() else {
                return Err(format!("event {i} has no string executionId"));
            };
            event.remove("seq");
            Ok(Posted {
                execution_id: id,
                json: Value::Object(event).to_string(),
            })
        })
        .collect()
}

impl Hub {
    /// Gives each event the next seq of its execution and queues its frame
    /// for every subscriber of that execution. Returns `(executionId, seq)`
    /// in the order posted.
    fn publish(&mut self, batch: Vec<Posted>) -> Vec<(String, u64)> {
        let mut receipts = Vec::with_capacity(batch.len());
        for posted in batch {
            let execution = self
                .executions
                .entry(posted.execution_id.clone())
                .or_default();
            execution.last_seq += 1;
            let seq = execution.last_seq;
            if !execution.subscribers.is_empty() {
                let frame = event_frame(&posted, seq);
                for (_, tx) in &execution.subscribers {
                    // A closed receiver is a connection going away; it
                    // removes itself from the hub.
                    let _ = tx.send(Out::Event(frame.clone()));
                }
            }
            receipts.push((posted.execution_id, seq));
        }
        receipts
    }

    /// Adds a subscriber and queues `subscribed` in the same critical
    /// section, so it reaches the client before any event published after.
    fn subscribe(&mut self, id: &str, conn: ConnId, tx: &UnboundedSender<Out>) -> bool {
        let execution = self.executions.entry(id.to_owned()).or_default();
        if execution.subscribers.iter().any(|(c, _)| *c == conn) {
            return false;
        }
        execution.subscribers.push((conn, tx.clone()));
        let frame = json!({"type": "subscribed", "executionId": id, "replayed": 0});
        let _ = tx.send(Out::Control(frame.to_string().into()));
        true
    }

    fn unsubscribe(&mut self, id: &str, conn: ConnId) {
        if let Some(execution) = self.executions.get_mut(id) {
            execution.subscribers.retain(|(c, _)| *c != conn);
        }
    }
}

fn event_frame(posted: &Posted, seq: u64) -> Utf8Bytes {
    let id = Value::String(posted.execution_id.clone());
    let body = &posted.json[..posted.json.len() - 1];
    format!(r#"{{"type":"event","executionId":{id},"event":{body},"seq":{seq}}}}}"#).into()
}

/// `POST /api/events`: status and body of the answer.
fn ingest(hub: &Mutex<Hub>, body: &[u8]) -> (u16, Value) {
    let batch = match parse_batch(body) {
        Ok(batch) => batch,
        Err(message) => {
            return (
                400,
                json!({"error": {"code": "bad-json", "message": message}}),
            )
        }
    };
    let receipts = hub.lock().unwrap().publish(batch);
    let events: Vec<Value> = receipts
        .into_iter()
        .map(|(id, seq)| json!({"executionId": id, "seq": seq}))
        .collect();
    (202, json!({"accepted": events.len(), "events": events}))
}

/// Runs the baseline on 127.0.0.1:`port` until the process is killed.
pub async fn serve(port: u16, fault: Option<Fault>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    // The same line the broker logs, so the load tool starts both alike.
    eprintln!(
        "agent-events-load baseline listening on http://{}",
        listener.local_addr()?
    );
    let hub = Arc::new(Mutex::new(Hub::default()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, hub.clone(), fault));
            }
            Err(e) => {
                // Out of file descriptors, most likely: pause rather than
                // spin, and let connections close.
                eprintln!("baseline: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One accepted connection: a WebSocket if it starts with `GET `, else
/// HTTP requests.
async fn connection(stream: TcpStream, hub: Arc<Mutex<Hub>>, fault: Option<Fault>) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 4];
    loop {
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= first.len() => break,
            // Fewer than 4 bytes so far: peek would answer at once again.
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    if &first == b"GET " {
        websocket(stream, hub, fault).await;
    } else {
        http(stream, hub).await;
    }
}

async fn http(mut stream: TcpStream, hub: Arc<Mutex<Hub>>) {
    let mut buf = Vec::new();
    loop {
        let read = http1::read_message(
            &mut stream,
            &mut buf,
            http1::parse_request,
            http1::request_length,
            MAX_BODY,
        )
        .await;
        let (status, body, keep_alive) = match read {
            Ok(None) | Err(ReadError::Io(_)) => return,
            Ok(Some((head, body))) => {
                let (status, answer) = if head.method == "POST" && head.path == "/api/events" {
                    ingest(&hub, &body)
                } else {
                    let message = "the baseline serves POST /api/events only";
                    (
                        404,
                        json!({"error": {"code": "not-found", "message": message}}),
                    )
                };
                (status, answer, head.keep_alive)
            }
            Err(err) => {
                let status = match err {
                    ReadError::BodyTooLarge(_) => 413,
                    ReadError::Head(HeadError::TooLarge) => 431,
                    ReadError::Head(HeadError::Unsupported(_)) => 411,
                    _ => 400,
                };
                let message = err.to_string();
                (
                    status,
                    json!({"error": {"code": "bad-request", "message": message}}),
                    false,
                )
            }
        };
        let response = http1::json_response(status, body.to_string().as_bytes(), keep_alive);
        if stream.write_all(&response).await.is_err() || !keep_alive {
            return;
        }
    }
}

// The callback's error type is tungstenite's (an HTTP response), not ours.
#[allow(clippy::result_large_err)]
async fn websocket(stream: TcpStream, hub: Arc<Mutex<Hub>>, fault: Option<Fault>) {
    let only_root = |request: &Request, response: Response| match request.uri().path() {
        "/" | "/ws" => Ok(response),
        _ => {
            let mut refusal = ErrorResponse::new(Some("the WebSocket is at / and /ws".into()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, only_root, Some(ws_config())).await
    else {
        return;
    };
    let conn = {
        let mut hub = hub.lock().unwrap();
        hub.next_conn += 1;
        hub.next_conn
    };
    let (sink, mut source) = ws.split();
    let (tx, rx) = unbounded_channel();
    let writer = tokio::spawn(write_frames(sink, rx, fault));
    let connected = json!({"type": "connected", "clientId": format!("baseline-{conn}")});
    let _ = tx.send(Out::Control(connected.to_string().into()));
    let mut subscribed: Vec<String> = Vec::new();
    while let Some(Ok(message)) = source.next().await {
        match message {
            Message::Text(text) => handle_client(&text, conn, &tx, &hub, &mut subscribed),
            Message::Close(_) => break,
            _ => {}
        }
    }
    {
        let mut hub = hub.lock().unwrap();
        for id in &subscribed {
            hub.unsubscribe(id, conn);
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// One client message: subscribe, unsubscribe or ping; anything else is an
/// error frame (the connection stays open, as with the broker).
fn handle_client(
    text: &str,
    conn: ConnId,
    tx: &UnboundedSender<Out>,
    hub: &Mutex<Hub>,
    subscribed: &mut Vec<String>,
) {
    let message: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let kind = message.get("type").and_then(Value::as_str);
    let id = message.get("executionId").and_then(Value::as_str);
    let reply = match (kind, id) {
        (Some("subscribe"), Some(id)) => {
            if hub.lock().unwrap().subscribe(id, conn, tx) {
                subscribed.push(id.to_owned());
                return;
            }
            json!({"type": "error", "code": "already-subscribed", "message": "already subscribed", "executionId": id})
        }
        (Some("unsubscribe"), Some(id)) => {
            hub.lock().unwrap().unsubscribe(id, conn);
            subscribed.retain(|s| s != id);
            json!({"type": "unsubscribed", "executionId": id})
        }
        (Some("ping"), _) => json!({"type": "pong"}),
        _ => json!({"type": "error", "code": "bad-request",
                    "message": "the baseline understands subscribe/unsubscribe by executionId and ping"}),
    };
    let _ = tx.send(Out::Control(reply.to_string().into()));
}

/// Writes queued frames, a batch per flush, until the connection or the
/// queue closes.
async fn write_frames(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: UnboundedReceiver<Out>,
    fault: Option<Fault>,
) {
    let mut faults = FaultState::new(fault);
    let mut frames = Vec::new();
    while let Some(first) = rx.recv().await {
        faults.apply(first, &mut frames);
        while frames.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(out) => faults.apply(out, &mut frames),
                Err(_) => break,
            }
        }
        for frame in frames.drain(..) {
            if sink.feed(Message::Text(frame)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Applies a [`Fault`] to the event frames of one connection.
struct FaultState {
    fault: Option<Fault>,
    events: u64,
    held: Option<Utf8Bytes>,
}

impl FaultState {
    fn new(fault: Option<Fault>) -> Self {
        FaultState {
            fault,
            events: 0,
            held: None,
        }
    }

    /// Pushes what is to be written for `out` onto `frames`.
    fn apply(&mut self, out: Out, frames: &mut Vec<Utf8Bytes>) {
        let frame = match (out, self.fault) {
            (Out::Control(frame), _) | (Out::Event(frame), None) => {
                frames.push(frame);
                return;
            }
            (Out::Event(frame), Some(_)) => frame,
        };
        let fault = self.fault.expect("matched above");
        self.events += 1;
        let hit = self.events % fault.every == 0;
        match fault.kind {
            FaultKind::Drop if hit => {}
            FaultKind::Duplicate if hit => frames.extend([frame.clone(), frame]),
            FaultKind::Reorder if hit && self.held.is_none() => self.held = Some(frame),
            _ => {
                frames.push(frame);
                frames.extend(self.held.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(rx: &mut UnboundedReceiver<Out>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(Out::Event(f) | Out::Control(f)) = rx.try_recv() {
            out.push(serde_json::from_str(&f).unwrap());
        }
        out
    }

    #[test]
    fn single_and_batch_bodies_parse() {
        let one = parse_batch(br#"{"type":"agent-thinking","executionId":"e1"}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].execution_id, "e1");
        let two = parse_batch(br#"[{"executionId":"a"},{"executionId":"b","seq":7}]"#).unwrap();
        assert_eq!(two.len(), 2);
        assert!(!two[1].json.contains("seq"), "a producer's seq is replaced");
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(parse_batch(b"not json").is_err());
        assert!(parse_batch(b"[]").is_err());
        assert!(parse_batch(b"[1]").is_err());
        assert!(parse_batch(br#"{"executionId":5}"#).is_err());
        assert!(parse_batch(br#"[{"executionId":"a"},{}]"#).is_err());
        let hub = Mutex::new(Hub::default());
        assert_eq!(ingest(&hub, b"{").0, 400);
    }

    #[test]
    fn seqs_are_per_execution_and_frames_reach_subscribers_in_order() {
        let hub = Mutex::new(Hub::default());
        let (tx, mut rx) = unbounded_channel();
        assert!(hub.lock().unwrap().subscribe("a", 1, &tx));
        assert!(
            !hub.lock().unwrap().subscribe("a", 1, &tx),
            "twice is refused"
        );
        let body = br#"[{"executionId":"a","metadata":{"sentAtNs":5}},{"executionId":"b"},{"executionId":"a"}]"#;
        let (status, answer) = ingest(&hub, body);
        assert_eq!(status, 202);
        assert_eq!(
            answer,
            json!({"accepted": 3, "events": [
                {"executionId": "a", "seq": 1},
                {"executionId": "b", "seq": 1},
                {"executionId": "a", "seq": 2},
            ]})
        );
        let got = frames(&mut rx);
        assert_eq!(
            got[0],
            json!({"type": "subscribed", "executionId": "a", "replayed": 0})
        );
        assert_eq!(got.len(), 3, "only execution a's events: {got:?}");
        assert_eq!(got[1]["type"], "event");
        assert_eq!(got[1]["executionId"], "a");
        assert_eq!(got[1]["event"]["seq"], 1);
        assert_eq!(got[1]["event"]["metadata"]["sentAtNs"], 5);
        assert_eq!(got[2]["event"]["seq"], 2);
        hub.lock().unwrap().unsubscribe("a", 1);
        ingest(&hub, br#"{"executionId":"a"}"#);
        assert!(frames(&mut rx).is_empty());
    }

    #[test]
    fn faults_parse_and_apply() {
        assert!("drop:0".parse::<Fault>().is_err());
        assert!("lose:3".parse::<Fault>().is_err());
        let seqs = |fault: &str| {
            let mut state = FaultState::new(Some(fault.parse().unwrap()));
            let mut out = Vec::new();
            for n in 1..=6 {
                state.apply(Out::Event(n.to_string().into()), &mut out);
            }
            out.iter()
                .map(|f| f.as_str().parse().unwrap())
                .collect::<Vec<u32>>()
        };
        assert_eq!(seqs("drop:3"), [1, 2, 4, 5]);
        assert_eq!(seqs("dup:3"), [1, 2, 3, 3, 4, 5, 6, 6]);
        // The 6th is held for a 7th that never comes.
        assert_eq!(seqs("reorder:3"), [1, 2, 4, 3, 5]);
    }
}
