//! One producer: a keep-alive HTTP connection posting events, paced on a
//! fixed schedule or flat-out, and the receipts it gets back.
//!
//! Producers share one counter of batches, so P producers post the batches
//! 0, 1, 2 … between them; event `i` goes to execution `i % executions`.
//! Each event carries `metadata.sentAtNs`, read from the clock just before
//! its request is written.

use crate::http1::{self, ReadError};
use crate::run::Progress;
use crate::system::now_ns;
use serde::Deserialize;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What every producer of a run shares.
pub struct Plan {
    pub addr: SocketAddr,
    pub prefix: Arc<str>,
    pub executions: usize,
    pub batch: usize,
    pub events: u64,
    pub rate: Option<f64>,
    /// Flat-out: wait while more than this many deliveries are owed.
    pub max_owed: Option<u64>,
    /// Subscribers of each execution: a receipt for execution `e` means
    /// this many more deliveries are owed.
    pub subscribers_per_execution: Arc<Vec<u32>>,
    /// The `thought` of every event.
    pub payload: String,
    /// When posting starts (the pacing schedule's zero).
    pub start: Instant,
    /// Stop posting here (`--duration`).
    pub stop_at: Option<Instant>,
    /// The run's hard end.
    pub deadline: Instant,
    /// The next batch to post, shared by the producers.
    pub next_batch: AtomicU64,
}

#[derive(Default)]
pub struct Report {
    /// `(execution, seq)` of every acknowledged event.
    pub acks: Vec<(usize, u64)>,
    pub errors: Vec<String>,
    /// Paced runs: how far behind the schedule a batch was sent, at most.
    pub max_lag: Duration,
}

#[derive(Deserialize)]
struct Receipt<'a> {
    #[serde(borrow)]
    events: Vec<Acked<'a>>,
}

#[derive(Deserialize)]
struct Acked<'a> {
    #[serde(rename = "executionId", borrow)]
    execution_id: &'a str,
    seq: u64,
}

pub async fn run(plan: Arc<Plan>, progress: Arc<Progress>) -> Report {
    let mut report = Report::default();
    let mut client = Client::new(plan.addr);
    let mut body = String::new();
    loop {
        let batch_no = plan.next_batch.fetch_add(1, Ordering::Relaxed);
        let first = batch_no * plan.batch as u64;
        if first >= plan.events {
            break;
        }
        let count = (plan.events - first).min(plan.batch as u64);
        if let Some(rate) = plan.rate {
            let due = plan.start + Duration::from_secs_f64(first as f64 / rate);
            tokio::time::sleep_until(due).await;
            report.max_lag = report.max_lag.max(Instant::now() - due);
        } else if let Some(max_owed) = plan.max_owed {
            while owed(&progress) > max_owed && Instant::now() < plan.deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let now = Instant::now();
        if now >= plan.deadline || plan.stop_at.is_some_and(|s| now >= s) {
            break;
        }
        build_body(&plan, first, count, &mut body);
        progress.sent.fetch_add(count, Ordering::Relaxed);
        let answer = tokio::time::timeout_at(plan.deadline, client.post(body.as_bytes())).await;
        let outcome = match answer {
            Err(_) => Err("no answer before the run's timeout".to_owned()),
            Ok(Err(e)) => Err(e),
            Ok(Ok((202, receipt))) => {
                record_receipt(&plan, &progress, &receipt, count, &mut report)
            }
            Ok(Ok((status, answer))) => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(300)])
            )),
        };
        if let Err(e) = outcome {
            progress.http_errors.fetch_add(count, Ordering::Relaxed);
            report.errors.push(e);
        }
    }
    report
}

/// Deliveries owed for acknowledged events and not yet seen.
fn owed(progress: &Progress) -> u64 {
    let expected = progress.expected.load(Ordering::Relaxed);
    expected.saturating_sub(progress.delivered.load(Ordering::Relaxed))
}

/// The body of one POST: events `first..first + count`, a single object
/// when the batch size is 1.
fn build_body(plan: &Plan, first: u64, count: u64, body: &mut String) {
    body.clear();
    let sent = now_ns();
    let array = plan.batch > 1;
    if array {
        body.push('[');
    }
    for i in first..first + count {
        if i > first {
            body.push(',');
        }
        let execution = i % plan.executions as u64;
        let _ = write!(
            body,
            r#"{{"type":"agent-thinking","executionId":"{}{execution}","agentId":"load-agent","thought":"{}","metadata":{{"sentAtNs":{sent},"i":{i}}}}}"#,
            plan.prefix, plan.payload
        );
    }
    if array {
        body.push(']');
    }
}

fn record_receipt(
    plan: &Plan,
    progress: &Progress,
    receipt: &[u8],
    count: u64,
    report: &mut Report,
) -> Result<(), String> {
    let receipt: Receipt = serde_json::from_slice(receipt).map_err(|e| {
        format!(
            "a 202 without a receipt ({e}): {}",
            String::from_utf8_lossy(receipt)
        )
    })?;
    if receipt.events.len() as u64 != count {
        return Err(format!(
            "{} events posted, {} in the receipt",
            count,
            receipt.events.len()
        ));
    }
    let mut owed = 0u64;
    for acked in &receipt.events {
        let execution = acked
            .execution_id
            .strip_prefix(&*plan.prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&e| e < plan.executions)
            .ok_or_else(|| {
                format!(
                    "a receipt for an unknown execution `{}`",
                    acked.execution_id
                )
            })?;
        report.acks.push((execution, acked.seq));
        owed += u64::from(plan.subscribers_per_execution[execution]);
    }
    progress.acked.fetch_add(count, Ordering::Relaxed);
    progress.expected.fetch_add(owed, Ordering::Relaxed);
    progress.last_ack_ns.fetch_max(now_ns(), Ordering::Relaxed);
    Ok(())
}

/// A keep-alive HTTP/1.1 client for one connection; it reconnects on the
/// next request after a failure.
struct Client {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            stream: None,
            buf: Vec::new(),
            request: Vec::new(),
        }
    }

    async fn post(&mut self, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
            self.buf.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        self.request.clear();
        let _ = write!(
            VecWriter(&mut self.request),
            "POST /api/events HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.request.extend_from_slice(body);
        let result = match stream.write_all(&self.request).await {
            Err(e) => Err(format!("sending: {e}")),
            Ok(()) => http1::read_message(
                stream,
                &mut self.buf,
                http1::parse_response,
                http1::response_length,
                usize::MAX,
            )
            .await
            .map_err(|e: ReadError| format!("reading the answer: {e}"))
            .and_then(|m| m.ok_or_else(|| "the target closed the connection".to_owned())),
        };
        match result {
            Ok((head, answer)) => {
                if !head.keep_alive {
                    self.stream = None;
                }
                Ok((head.status, answer))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// `write!` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn plan(batch: usize) -> Plan {
        let now = Instant::now();
        Plan {
            addr: "127.0.0.1:1".parse().unwrap(),
            prefix: "load-t-".into(),
            executions: 3,
            batch,
            events: 10,
            rate: None,
            max_owed: None,
            subscribers_per_execution: Arc::new(vec![2, 0, 1]),
            payload: "xx".into(),
            start: now,
            stop_at: None,
            deadline: now,
            next_batch: AtomicU64::new(0),
        }
    }

    #[tokio::test]
    async fn bodies_are_valid_events_spread_over_executions() {
        let mut body = String::new();
        build_body(&plan(4), 4, 3, &mut body);
        let events: Vec<Value> = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e["executionId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["load-t-1", "load-t-2", "load-t-0"]);
        assert_eq!(events[0]["type"], "agent-thinking");
        assert_eq!(events[0]["thought"], "xx");
        assert!(events[0]["metadata"]["sentAtNs"].is_u64());
        assert_eq!(events[2]["metadata"]["i"], 6);
        build_body(&plan(1), 0, 1, &mut body);
        assert!(serde_json::from_str::<Value>(&body).unwrap().is_object());
    }

    #[tokio::test]
    async fn receipts_count_what_is_owed() {
        let plan = plan(2);
        let progress = Progress::default();
        let mut report = Report::default();
        let receipt = br#"{"accepted":2,"events":[{"executionId":"load-t-0","seq":1},{"executionId":"load-t-2","seq":1}]}"#;
        record_receipt(&plan, &progress, receipt, 2, &mut report).unwrap();
        assert_eq!(report.acks, [(0, 1), (2, 1)]);
        assert_eq!(progress.acked.load(Ordering::Relaxed), 2);
        assert_eq!(progress.expected.load(Ordering::Relaxed), 3);
        // A receipt that does not match what was posted is an error.
        assert!(record_receipt(&plan, &progress, receipt, 3, &mut report).is_err());
        let foreign = br#"{"events":[{"executionId":"other-0","seq":1}]}"#;
        assert!(record_receipt(&plan, &progress, foreign, 1, &mut report).is_err());
    }
}
