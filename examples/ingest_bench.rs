//! Storage benchmark: how fast the broker stores events, and how long a
//! producer waits for its 202 under group commit.
//!
//! ```sh
//! cargo run --release --example ingest_bench
//! ```
//!
//! It builds the release broker (`cargo build --release --bin agent-events`,
//! a no-op when it is up to date; set `BENCH_BROKER_BIN` to use another
//! binary instead), starts it on an ephemeral port of 127.0.0.1 with a fresh
//! `DATA_DIR` under `target/` (a real disk, so every commit pays its fsync),
//! runs two scenarios, prints one JSON line per scenario and a summary, kills
//! the broker and removes the directory.
//!
//! - **batch**: `BATCH_TOTAL` events in POSTs of 100 over `BATCH_CONNECTIONS`
//!   concurrent connections. Every POST must be answered 202, which means
//!   stored, so events per second here are *stored* events per second.
//! - **single**: one-event POSTs from 1, 8 and 32 concurrent producers for
//!   `SINGLE_SECONDS` each: the 202 latency (p50, p99, max) and throughput.
//!   Group commit puts the events of concurrent producers in one transaction,
//!   so throughput should grow with producers while p50 stays near
//!   one or two fsyncs (plus `persist_batch_ms`, 0 by default).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Events stored by the batch scenario.
const BATCH_TOTAL: u64 = 200_000;
/// Events per POST in the batch scenario.
const BATCH_SIZE: u64 = 100;
/// Concurrent connections of the batch scenario.
const BATCH_CONNECTIONS: u64 = 8;
/// Concurrent producers of each single-event scenario.
const PRODUCERS: [u64; 3] = [1, 8, 32];
/// How long each single-event scenario measures (after a short warm-up).
const SINGLE_SECONDS: u64 = 10;
/// Warm-up before each single-event scenario, not measured.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long one request may take before the benchmark gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let bin = broker_binary();
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("ingest-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).expect("create the data dir");
    let (mut broker, port) = start_broker(&bin, &data_dir).await;
    let base = format!("http://127.0.0.1:{port}");
    eprintln!(
        "broker {} on {base}, DATA_DIR {}",
        bin.display(),
        data_dir.display()
    );

    let mut lines = Vec::new();
    let batch = batch_scenario(&base).await;
    println!("{batch}");
    lines.push(batch);
    for producers in PRODUCERS {
        let single = single_scenario(&base, producers).await;
        println!("{single}");
        lines.push(single);
    }

    let _ = broker.kill().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    summary(&lines);
}

/// The broker to measure: `BENCH_BROKER_BIN`, or this workspace's release build, built now.
fn broker_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("BENCH_BROKER_BIN") {
        return bin.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--bin", "agent-events"])
        .current_dir(root)
        .status()
        .expect("run cargo build --release");
    assert!(
        status.success(),
        "cargo build --release --bin agent-events failed"
    );
    root.join("target/release/agent-events")
}

/// Starts the broker with default settings on an ephemeral loopback port.
async fn start_broker(bin: &Path, data_dir: &Path) -> (Child, u16) {
    let mut child = Command::new(bin)
        .env("WS_PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "info")
        // A benchmark measures capacity, not the per-producer policy.
        .env("AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_PRODUCER", "100000000")
        .env("AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_EXECUTION", "0")
        .env_remove("MONGODB_URI")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    const READY: &str = "listening on http://127.0.0.1:";
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find(READY) {
                let digits: String = line[at + READY.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return digits.parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the broker never said it was listening");
    // Keep draining its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

/// One client per producer: each keeps one connection of its own.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// A typical event: an agent's thought with some metadata (about 250 bytes).
fn event(execution: &str, n: u64) -> Value {
    json!({
        "type": "agent-thinking",
        "executionId": execution,
        "conversationId": "bench",
        "agentId": "writer-1",
        "thought": format!("Considering the next beat of the scene, step {n}"),
        "step": n,
        "metadata": {"model": "claude", "inputTokens": 812, "outputTokens": 64, "durationMs": 7}
    })
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> Value {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /api/events");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 202, "every POST is stored: {answer}");
    answer
}

async fn admin_stats(base: &str) -> Value {
    reqwest::get(format!("{base}/admin/stats"))
        .await
        .expect("GET /admin/stats")
        .json()
        .await
        .expect("stats are JSON")
}

/// Events and commits the store counted between two `/admin/stats`.
fn stored_between(before: &Value, after: &Value) -> (u64, u64) {
    let delta = |key: &str| after[key].as_u64().unwrap_or(0) - before[key].as_u64().unwrap_or(0);
    (delta("eventsStored"), delta("storeBatches"))
}

async fn batch_scenario(base: &str) -> Value {
    let url = format!("{base}/api/events");
    let next_batch = Arc::new(AtomicU64::new(0));
    let before = admin_stats(base).await;
    let started = Instant::now();
    let mut workers = Vec::new();
    for connection in 0..BATCH_CONNECTIONS {
        let (url, next_batch) = (url.clone(), next_batch.clone());
        workers.push(tokio::spawn(async move {
            let http = client();
            let execution = format!("bench-batch-{connection}");
            // The same 100 events each time: the broker sequences and stores each anew.
            let body =
                Value::Array((0..BATCH_SIZE).map(|n| event(&execution, n)).collect()).to_string();
            while next_batch.fetch_add(1, Ordering::Relaxed) < BATCH_TOTAL / BATCH_SIZE {
                let answer = post(&http, &url, body.clone()).await;
                assert_eq!(answer["accepted"], BATCH_SIZE, "{answer}");
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a batch worker failed");
    }
    let seconds = started.elapsed().as_secs_f64();
    let (stored, commits) = stored_between(&before, &admin_stats(base).await);
    assert_eq!(
        stored, BATCH_TOTAL,
        "every acknowledged event is counted as stored"
    );
    json!({
        "scenario": "batch",
        "events": BATCH_TOTAL,
        "batchSize": BATCH_SIZE,
        "connections": BATCH_CONNECTIONS,
        "seconds": round(seconds, 3),
        "eventsPerSec": (BATCH_TOTAL as f64 / seconds).round() as u64,
        "commits": commits,
        "eventsPerCommit": round(stored as f64 / commits.max(1) as f64, 1),
    })
}

async fn single_scenario(base: &str, producers: u64) -> Value {
    let url = format!("{base}/api/events");
    let warm_until = Instant::now() + WARM_UP;
    let measure_until = warm_until + Duration::from_secs(SINGLE_SECONDS);
    let before = Arc::new(tokio::sync::OnceCell::new());
    let mut workers = Vec::new();
    for producer in 0..producers {
        let (url, base, before) = (url.clone(), base.to_owned(), before.clone());
        workers.push(tokio::spawn(async move {
            let http = client();
            let execution = format!("bench-single-{producers}-{producer}");
            let mut latencies = Vec::new();
            let mut n = 0;
            loop {
                let now = Instant::now();
                if now >= measure_until {
                    return latencies;
                }
                if now >= warm_until {
                    before.get_or_init(|| admin_stats(&base)).await;
                }
                let body = event(&execution, n).to_string();
                n += 1;
                let sent = Instant::now();
                post(&http, &url, body).await;
                if sent >= warm_until {
                    latencies.push(sent.elapsed());
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("a producer failed"));
    }
    let after = admin_stats(base).await;
    let (stored, commits) = before
        .get()
        .map_or((0, 0), |before| stored_between(before, &after));
    latencies.sort_unstable();
    let ms = |d: Duration| round(d.as_secs_f64() * 1000.0, 2);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    json!({
        "scenario": "single",
        "producers": producers,
        "requests": latencies.len(),
        "seconds": SINGLE_SECONDS,
        "eventsPerSec": latencies.len() as u64 / SINGLE_SECONDS,
        "p50Ms": ms(at(0.50)),
        "p99Ms": ms(at(0.99)),
        "maxMs": ms(*latencies.last().unwrap()),
        "eventsPerCommit": round(stored as f64 / commits.max(1) as f64, 1),
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn summary(lines: &[Value]) {
    println!();
    println!("storage benchmark (SQLite, default settings, loopback)");
    for line in lines {
        match line["scenario"].as_str() {
            Some("batch") => println!(
                "  batches of {} over {} connections: {} events stored in {} s = {} events/s ({} events per commit)",
                line["batchSize"], line["connections"], line["events"], line["seconds"],
                line["eventsPerSec"], line["eventsPerCommit"]
            ),
            _ => println!(
                "  single events, {:>2} producer(s): {:>6} events/s, 202 after p50 {} ms, p99 {} ms, max {} ms ({} events per commit)",
                line["producers"], line["eventsPerSec"], line["p50Ms"], line["p99Ms"],
                line["maxMs"], line["eventsPerCommit"]
            ),
        }
    }
}
