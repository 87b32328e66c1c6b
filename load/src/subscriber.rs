//! One WebSocket subscriber: connects, subscribes to its executions, waits
//! for each `subscribed`, then counts every event by seq and records its
//! latency until told to stop.

use crate::accounting::{Arrival, SeqTracker};
use crate::run::Progress;
use crate::system::now_ns;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What a subscriber is to do.
pub struct Plan {
    pub addr: SocketAddr,
    /// Execution indices; the ids are `prefix` + index.
    pub executions: Vec<usize>,
    pub prefix: Arc<str>,
}

/// What it saw.
#[derive(Default)]
pub struct Report {
    /// Why it could not connect or subscribe; the run stops on any.
    pub setup_error: Option<String>,
    pub trackers: Vec<(usize, SeqTracker)>,
    /// Why the connection ended before the run told it to stop.
    pub ended: Option<String>,
    /// `error` frames by code (e.g. `slow-consumer`).
    pub errors: BTreeMap<String, u64>,
    /// Frames that were not the protocol's JSON.
    pub unparsed: u64,
}

/// The frames a subscriber reads; serde skips every other field, and the
/// borrowed strings avoid an allocation per delivery.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(rename = "executionId", default, borrow)]
    execution_id: Option<&'a str>,
    #[serde(default)]
    event: Option<EventFields>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct EventFields {
    seq: u64,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(rename = "sentAtNs", default)]
    sent_at_ns: Option<u64>,
}

/// The load generator opens up to 10,000 of these: a 4 KiB read buffer
/// instead of tungstenite's eager 128 KiB keeps the tool's own memory small.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024)
}

type Socket = WebSocketStream<TcpStream>;

/// Connects (at most `connecting` at once), subscribes, counts itself ready
/// in `progress`, then listens until `stop`.
pub async fn run(
    plan: Plan,
    progress: Arc<Progress>,
    connecting: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
) -> Report {
    let mut report = Report {
        trackers: plan
            .executions
            .iter()
            .map(|&e| (e, SeqTracker::default()))
            .collect(),
        ..Report::default()
    };
    let permit = connecting.acquire_owned().await;
    let ws = match subscribe(&plan).await {
        Ok(ws) => ws,
        Err(e) => {
            report.setup_error = Some(e);
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return report;
        }
    };
    drop(permit);
    progress.ready.fetch_add(1, Ordering::Relaxed);
    listen(ws, &plan, &progress, stop, &mut report).await;
    report
}

async fn subscribe(plan: &Plan) -> Result<Socket, String> {
    let stream = TcpStream::connect(plan.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", plan.addr))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{}/", plan.addr);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    for &e in &plan.executions {
        let message = format!(
            r#"{{"type":"subscribe","executionId":"{}{e}"}}"#,
            plan.prefix
        );
        ws.feed(Message::text(message))
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
    }
    ws.flush().await.map_err(|e| format!("subscribe: {e}"))?;
    let mut pending = plan.executions.len();
    while pending > 0 {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("waiting for subscribed: {e}")),
            None => return Err("closed before subscribed".into()),
        };
        let Message::Text(text) = message else {
            continue;
        };
        match serde_json::from_str::<Frame>(&text) {
            Ok(frame) if frame.kind == "subscribed" => pending -= 1,
            Ok(frame) if frame.kind == "error" => {
                return Err(format!("subscribe refused: {text}"));
            }
            // `connected`, and anything else before the answers.
            _ => {}
        }
    }
    Ok(ws)
}

async fn listen(
    mut ws: Socket,
    plan: &Plan,
    progress: &Progress,
    mut stop: watch::Receiver<bool>,
    report: &mut Report,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.changed() => return,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => on_text(&text, plan, progress, report),
            Some(Ok(Message::Close(frame))) => {
                report.ended = Some(match frame {
                    Some(f) => format!("closed by the target: {} {}", u16::from(f.code), f.reason),
                    None => "closed by the target".into(),
                });
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                report.ended = Some(format!("connection failed: {e}"));
                return;
            }
            None => {
                report.ended = Some("connection ended".into());
                return;
            }
        }
    }
}

fn on_text(text: &str, plan: &Plan, progress: &Progress, report: &mut Report) {
    let now = now_ns();
    let Ok(frame) = serde_json::from_str::<Frame>(text) else {
        report.unparsed += 1;
        return;
    };
    match (frame.kind, frame.execution_id, frame.event) {
        ("event", Some(id), Some(event)) => {
            let tracker = id
                .strip_prefix(&*plan.prefix)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|e| report.trackers.iter_mut().find(|(x, _)| *x == e));
            let Some((_, tracker)) = tracker else {
                // An execution this subscriber never asked for.
                report.unparsed += 1;
                return;
            };
            if tracker.record(event.seq) == Arrival::New {
                progress.delivered.fetch_add(1, Ordering::Relaxed);
                progress.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                if let Some(sent) = event.metadata.and_then(|m| m.sent_at_ns) {
                    progress.latency.record(now.saturating_sub(sent));
                }
            }
        }
        ("error", _, _) => {
            let code = frame.code.unwrap_or("(no code)").to_owned();
            *report.errors.entry(code).or_default() += 1;
        }
        _ => {}
    }
}
