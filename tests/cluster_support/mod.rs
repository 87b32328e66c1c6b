//! What the cluster tests run on: a real `redis-server` per test on a free
//! loopback port, brokers that join it (and can be SIGKILLed and restarted on
//! the same DATA_DIR and port), a WebSocket subscriber, and a producer that
//! posts while faults are injected.
//!
//! `tests/common` cannot serve here: it removes `REDIS_URL` from the broker's
//! environment and gives every start a fresh DATA_DIR. Its event helpers are
//! reused.
//!
//! Every process is started by this module and, on drop (a panic included),
//! SIGKILLed by its pid and reaped. Nothing sleeps to synchronise: processes
//! are ready when they say so on their output, messages are awaited with a
//! timeout, and HTTP figures are polled (bounded) only when the figure is what
//! the test waits for.

#![allow(dead_code)] // each test file uses a different part

use crate::common::{assert_delivered, seqs, thinking, MongoDb, STEP};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a process may take to say it is ready.
const STARTUP: Duration = Duration::from_secs(30);
/// Lines of a process's output kept to print when a test fails.
const LOG_LINES: usize = 300;

// ---------------------------------------------------------------- processes

type Log = Arc<Mutex<VecDeque<String>>>;

/// A child process, SIGKILLed and reaped (by its pid) when dropped.
struct Process(Child);

impl Process {
    /// Spawns `command` with its output captured into `log`; the receiver
    /// answers `ready(line)` for the first line where it is `Some`, and
    /// fails if the process ends before.
    fn spawn<T: Send + 'static>(
        mut command: Command,
        log: &Log,
        ready: impl Fn(&str) -> Option<T> + Send + Sync + 'static,
    ) -> (Process, oneshot::Receiver<T>) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (ready_tx, ready_rx) = oneshot::channel();
        let ready_tx = Arc::new(Mutex::new(Some(ready_tx)));
        let ready = Arc::new(ready);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for pipe in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let (log, ready, ready_tx) = (log.clone(), ready.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(value) = ready(&line) {
                        if let Some(tx) = ready_tx.lock().unwrap().take() {
                            let _ = tx.send(value);
                        }
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
                // The pipe closed: the process ended. Whoever still waits learns it.
                ready_tx.lock().unwrap().take();
            });
        }
        (Process(child), ready_rx)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Child::kill is kill(pid, SIGKILL); wait reaps exactly that pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a process's ready signal; fails with its output otherwise.
async fn await_ready<T>(what: &str, ready: oneshot::Receiver<T>, log: &Log) -> T {
    match tokio::time::timeout(STARTUP, ready).await {
        Ok(Ok(value)) => value,
        Ok(Err(_)) => panic!("{what} ended before it was ready; output:\n{}", tail(log)),
        Err(_) => panic!(
            "{what} not ready within {STARTUP:?}; output:\n{}",
            tail(log)
        ),
    }
}

fn tail(log: &Log) -> String {
    log.lock()
        .unwrap()
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `tag`.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "agent-events-cluster-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- Redis

/// A `redis-server` of this test alone: loopback, a free port, no persistence.
pub struct Redis {
    // Declared first so that the process ends before its directory goes.
    process: Option<Process>,
    /// Its port (kept across restarts).
    pub port: u16,
    extra: Vec<String>,
    log: Log,
    dir: TempDir,
}

impl Redis {
    /// A plain Redis on a free port.
    pub async fn start() -> Redis {
        Redis::start_with(&[]).await
    }

    /// A Redis with extra arguments (e.g. cluster mode).
    pub async fn start_with(extra: &[&str]) -> Redis {
        let mut redis = Redis {
            process: None,
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: Log::default(),
            dir: TempDir::new("redis"),
        };
        redis.launch().await;
        redis
    }

    async fn launch(&mut self) {
        assert!(self.process.is_none(), "Redis {} already runs", self.port);
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra);
        let (process, ready) = Process::spawn(command, &self.log, |line| {
            line.contains("Ready to accept connections").then_some(())
        });
        self.process = Some(process);
        await_ready(&format!("redis-server :{}", self.port), ready, &self.log).await;
        let pong: String = self.cmd(&["PING"]).await;
        assert_eq!(pong, "PONG");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs it (it loses everything unless started with persistence).
    pub fn kill(&mut self) {
        self.process.take().expect("Redis is running");
    }

    /// Starts it again on the same port and directory: empty, unless started with persistence.
    pub async fn restart(&mut self) {
        self.launch().await;
    }

    /// Polls `CLUSTER INFO` until this cluster node says `cluster_state:ok`.
    pub async fn wait_cluster_ok(&self) {
        let deadline = Instant::now() + STEP;
        loop {
            let info: String = self.cmd(&["CLUSTER", "INFO"]).await;
            if info.contains("cluster_state:ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Redis :{} never reached cluster_state:ok: {info}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs one command on a fresh connection.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let run = async {
            let client = redis::Client::open(self.url())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd(args[0])
                .arg(&args[1..])
                .query_async::<T>(&mut connection)
                .await
        };
        match tokio::time::timeout(STEP, run).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => panic!("redis {args:?} on :{}: {e}", self.port),
            Err(_) => panic!("redis {args:?} on :{} timed out", self.port),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server :{} wrote:\n{}",
                self.port,
                tail(&self.log)
            );
        }
    }
}

// ---------------------------------------------------------------- a broker node

/// The line a broker writes once it listens.
const LISTENING: &str = "listening on http://127.0.0.1:";

/// A broker in cluster mode on one [`Redis`], with its own DATA_DIR.
pub struct Node {
    // Declared first so that the process ends before its directory goes.
    process: Option<Process>,
    /// Its `node_id`.
    pub name: String,
    /// Its port (0 until first started; kept across restarts).
    pub port: u16,
    redis_url: String,
    /// Variables set on every start (the MongoDB store's).
    env: Vec<(String, String)>,
    log: Log,
    http: reqwest::Client,
    data_dir: TempDir,
}

impl Node {
    /// Starts a broker named `name` (its `node_id`) on `redis`, on a free port.
    pub async fn start(name: &str, redis: &Redis) -> Node {
        Node::start_on(name, &redis.url()).await
    }

    /// Starts a broker named `name` on the Redis at `redis_url`.
    pub async fn start_on(name: &str, redis_url: &str) -> Node {
        Node::start_with(name, redis_url, Vec::new()).await
    }

    /// Starts a broker named `name` on `redis` that stores in `database`
    /// (MongoDB) instead of its own SQLite file.
    pub async fn start_on_mongodb(name: &str, redis: &Redis, database: &MongoDb) -> Node {
        Node::start_with(name, &redis.url(), database.env().to_vec()).await
    }

    async fn start_with(name: &str, redis_url: &str, env: Vec<(String, String)>) -> Node {
        let mut node = Node {
            process: None,
            name: name.to_owned(),
            port: 0,
            redis_url: redis_url.to_owned(),
            env,
            log: Log::default(),
            http: reqwest::Client::new(),
            data_dir: TempDir::new(name),
        };
        node.launch().await;
        node
    }

    async fn launch(&mut self) {
        assert!(self.process.is_none(), "{} already runs", self.name);
        let mut command = Command::new(crate::common::bin());
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("WS_PORT", self.port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", self.data_dir.path())
            .env("REDIS_URL", &self.redis_url)
            .env("AGENT_EVENTS_NODE_ID", &self.name)
            // These producers post flat-out to one execution: what is under
            // test is the cluster's order, not the per-execution rate.
            .env("AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_EXECUTION", "0")
            .env("RUST_LOG", "info")
            .env_remove("MONGODB_URI")
            .env_remove("AGENT_EVENTS_REDIS_KEY_PREFIX")
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        let (process, ready) = Process::spawn(command, &self.log, |line| {
            let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok().filter(|port| *port != 0)
        });
        self.process = Some(process);
        let port = await_ready(&self.name, ready, &self.log).await;
        assert!(
            self.port == 0 || self.port == port,
            "{} restarted on {port}, not on its port {}",
            self.name,
            self.port
        );
        self.port = port;
    }

    /// SIGKILLs the broker (its DATA_DIR stays).
    pub fn kill(&mut self) {
        self.process.take().expect("the node is running");
    }

    /// Starts it again on the same DATA_DIR and port.
    pub async fn restart(&mut self) {
        self.launch().await;
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POSTs one event (or a batch): (status, body).
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        post(&self.http, &self.url("/api/events"), body).await
    }

    /// POSTs one event that must be accepted; returns its seq.
    pub async fn post_event(&self, event: &Value) -> u64 {
        let (status, answer) = self.post(event).await;
        assert_eq!(status, 202, "{}: POST {event} answered {answer}", self.name);
        accepted_seq(&answer)
    }

    /// GETs `path`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let request = self.http.get(self.url(path)).send();
        let response = tokio::time::timeout(STEP, request)
            .await
            .unwrap_or_else(|_| panic!("{}: GET {path} timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.name));
        let status = response.status().as_u16();
        let text = response.text().await.expect("a response body");
        assert_eq!(status, 200, "{}: GET {path}: {text}", self.name);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: GET {path} is not JSON ({e}): {text}", self.name))
    }

    /// `/admin/stats`.
    pub async fn stats(&self) -> Value {
        self.get_json("/admin/stats").await
    }

    /// A `cluster` counter of `/admin/stats`.
    pub async fn cluster_counter(&self, name: &str) -> u64 {
        let stats = self.stats().await;
        stats["cluster"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no cluster.{name} in {stats}", self.name))
    }

    /// Polls `path` until `ready` holds (at most [`STEP`]); returns that answer.
    pub async fn wait_for(&self, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let answer = self.get_json(path).await;
            if ready(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {path} never showed {what}; last: {answer}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `/health` says the Redis link is `state` (`ok` or `failing`).
    pub async fn wait_redis_state(&self, state: &str) -> Value {
        self.wait_for("/health", &format!("redis {state}"), |health| {
            health["redis"]["state"] == state
        })
        .await
    }

    /// Waits until the `cluster` counter `name` is at least `at_least`; returns the stats.
    pub async fn wait_counter(&self, name: &str, at_least: u64) -> Value {
        self.wait_for(
            "/admin/stats",
            &format!("cluster.{name} >= {at_least}"),
            |s| s["cluster"][name].as_u64() >= Some(at_least),
        )
        .await
    }

    /// Every stored event of `execution`, through GET /api/executions/{id}/events, page by page.
    pub async fn stored(&self, execution: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .get_json(&format!(
                    "/api/executions/{execution}/events?afterSeq={after}&limit=1000"
                ))
                .await;
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["nextAfterSeq"].as_u64() {
                Some(next) => after = next,
                None => return events,
            }
        }
    }

    /// Polls the stored events of `execution` until the highest seq is at
    /// least `last_seq` (storing is asynchronous in a cluster); returns them all.
    pub async fn wait_stored(&self, execution: &str, last_seq: u64) -> Vec<Value> {
        let deadline = Instant::now() + STEP;
        loop {
            let events = self.stored(execution).await;
            if events.last().and_then(|e| e["seq"].as_u64()) >= Some(last_seq) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {execution} never stored seq {last_seq}; stored seqs: {:?}",
                self.name,
                seqs(&events)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A WebSocket client of this node, past its `connected` message.
    pub async fn connect(&self) -> Sub {
        Sub::connect(self.port, &self.name).await
    }

    /// A client subscribed to `execution` (from `from_seq` when given); also
    /// returns the `replayed` count.
    pub async fn subscriber(&self, execution: &str, from_seq: Option<u64>) -> (Sub, u64) {
        let mut sub = self.connect().await;
        let replayed = sub.subscribe(execution, from_seq).await;
        (sub, replayed)
    }

    /// A cheap handle producers use to post to this node from another task.
    pub fn poster(&self) -> Poster {
        Poster {
            name: self.name.clone(),
            url: self.url("/api/events"),
            http: self.http.clone(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- node {} (:{}) wrote:\n{}",
                self.name,
                self.port,
                tail(&self.log)
            );
        }
    }
}

/// Starts `names.len()` nodes on `redis`, one after the other.
pub async fn start_nodes(redis: &Redis, names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        nodes.push(Node::start(name, redis).await);
    }
    nodes
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let request = http.post(url).json(body).send();
    let response = tokio::time::timeout(STEP, request)
        .await
        .unwrap_or_else(|_| panic!("POST {url} timed out"))
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("a response body");
    let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, answer)
}

/// The seq of the single event a 202 accepted.
fn accepted_seq(answer: &Value) -> u64 {
    assert_eq!(answer["accepted"], 1, "{answer}");
    answer["events"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {answer}"))
}

// ---------------------------------------------------------------- a subscriber

/// A WebSocket client of one node.
pub struct Sub {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    /// Which node it is connected to, for failure messages.
    pub node: String,
}

impl Sub {
    async fn connect(port: u16, node: &str) -> Sub {
        let url = format!("ws://127.0.0.1:{port}/");
        let (ws, _) = match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(&url)).await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => panic!("{node}: WebSocket connect: {e}"),
            Err(_) => panic!("{node}: WebSocket connect timed out"),
        };
        let mut sub = Sub {
            ws,
            node: node.to_owned(),
        };
        let hello = sub.next_json().await;
        assert_eq!(hello["type"], "connected", "{node}: {hello}");
        sub
    }

    /// The next JSON message (pings and pongs of the transport skipped).
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(STEP, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: nothing received within {STEP:?}", self.node));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.node))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                other => panic!("{}: expected a JSON message, got {other:?}", self.node),
            }
        }
    }

    /// Subscribes to `execution`, from `from_seq` if given; returns `replayed`.
    pub async fn subscribe(&mut self, execution: &str, from_seq: Option<u64>) -> u64 {
        let mut request = json!({"type": "subscribe", "executionId": execution});
        if let Some(from_seq) = from_seq {
            request["fromSeq"] = from_seq.into();
        }
        self.send(&request).await;
        let answer = self.next_json().await;
        assert_eq!(answer["type"], "subscribed", "{}: {answer}", self.node);
        answer["replayed"].as_u64().unwrap_or(0)
    }

    async fn send(&mut self, message: &Value) {
        let text = Message::Text(message.to_string().into());
        match tokio::time::timeout(STEP, self.ws.send(text)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: send: {e}", self.node),
            Err(_) => panic!("{}: send timed out", self.node),
        }
    }

    /// The event of the next message, which must be an `event`.
    pub async fn next_event(&mut self) -> Value {
        let mut message = self.next_json().await;
        assert_eq!(message["type"], "event", "{}: {message}", self.node);
        message["event"].take()
    }

    /// The next `count` events.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(self.next_event().await);
        }
        events
    }

    /// Events until one with seq `last_seq` or more; then a ping, whose pong
    /// must come next (nothing else was waiting).
    pub async fn events_through(&mut self, last_seq: u64) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        while events.last().and_then(|e| e["seq"].as_u64()) < Some(last_seq) {
            let message = tokio::time::timeout(STEP, self.next_json_quiet()).await;
            match message {
                Ok(message) if message["type"] == "event" => events.push(message["event"].clone()),
                Ok(other) => panic!("{}: expected an event, got {other}", self.node),
                Err(_) => panic!(
                    "{}: waited for seq {last_seq}; got only seqs {:?}",
                    self.node,
                    seqs(&events)
                ),
            }
        }
        self.ping().await;
        events
    }

    /// The events a client ends up holding, the way docs/protocol.md asks a client
    /// to keep them: each `event` must be the next seq after the last one
    /// held (no gap, no repeat), and a `resync` drops everything held from
    /// its `fromSeq` on. Reads until it holds seqs 1..=`last_seq`, then pings
    /// (nothing else may be waiting); returns them and how many resyncs came,
    /// or what came instead of the next seq.
    pub async fn events_resynced_through(
        &mut self,
        last_seq: u64,
    ) -> Result<(Vec<Value>, usize), String> {
        let mut held: Vec<Value> = Vec::new();
        let mut resyncs = 0;
        // What came, for the failure message: `n@seq` for events, `resync@N`.
        let mut trail: Vec<String> = Vec::new();
        while held.len() as u64 != last_seq {
            let message = tokio::time::timeout(STEP, self.next_json_quiet())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: waited for seqs 1..={last_seq}; holds {:?}",
                        self.node,
                        seqs(&held)
                    )
                });
            match message["type"].as_str() {
                Some("event") => {
                    let event = message["event"].clone();
                    trail.push(format!("{}@{}", event["metadata"]["n"], event["seq"]));
                    if event["seq"].as_u64() != Some(held.len() as u64 + 1) {
                        return Err(format!(
                            "{}: after seqs {:?} came {event}; all that came: {trail:?}",
                            self.node,
                            seqs(&held)
                        ));
                    }
                    held.push(event);
                }
                Some("resync") => {
                    let from = message["fromSeq"].as_u64().expect("fromSeq");
                    trail.push(format!("resync@{from}"));
                    assert!(from >= 1, "{}: {message}", self.node);
                    held.truncate(from as usize - 1);
                    resyncs += 1;
                }
                _ => panic!(
                    "{}: expected an event or a resync, got {message}",
                    self.node
                ),
            }
        }
        self.ping().await;
        Ok((held, resyncs))
    }

    /// [`Sub::next_json`] without its own timeout, for callers that time it themselves.
    async fn next_json_quiet(&mut self) -> Value {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).unwrap_or(Value::String(text.to_string()))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                other => panic!("{}: expected a JSON message, got {other:?}", self.node),
            }
        }
    }

    /// Sends a ping; the very next message must be the pong.
    pub async fn ping(&mut self) {
        self.send(&json!({"type": "ping"})).await;
        let answer = self.next_json().await;
        assert_eq!(
            answer,
            json!({"type": "pong"}),
            "{}: something came before the pong",
            self.node
        );
    }
}

// ---------------------------------------------------------------- a producer

/// What became of one posted event.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The event posted (its `metadata.n` names it).
    pub event: Value,
    /// The node it was posted to.
    pub node: String,
    /// The HTTP status.
    pub status: u16,
    /// The answer's body.
    pub answer: Value,
}

impl Outcome {
    /// The seq of an accepted event.
    pub fn seq(&self) -> Option<u64> {
        (self.status == 202).then(|| accepted_seq(&self.answer))
    }
}

/// How far a producer got.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Events answered 202.
    pub accepted: usize,
    /// Events refused (any other status).
    pub rejected: usize,
}

/// Posts to a node (from any task).
#[derive(Clone)]
pub struct Poster {
    name: String,
    url: String,
    http: reqwest::Client,
}

/// A task posting distinct events of one execution, one at a time, to its
/// nodes in turn, until stopped.
pub struct Producer {
    task: tokio::task::JoinHandle<Vec<Outcome>>,
    progress: watch::Receiver<Progress>,
    stop: Arc<AtomicBool>,
}

impl Producer {
    /// Starts posting `thinking(execution, n)` for n = first, first + 1, …
    pub fn start(execution: &str, first: u64, nodes: &[&Node]) -> Producer {
        let posters: Vec<Poster> = nodes.iter().map(|n| n.poster()).collect();
        let (tx, progress) = watch::channel(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let execution = execution.to_owned();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = first;
            while !stopped.load(Ordering::Relaxed) {
                let poster = &posters[outcomes.len() % posters.len()];
                let event = thinking(&execution, n);
                let (status, answer) = post(&poster.http, &poster.url, &event).await;
                let refused = status != 202;
                outcomes.push(Outcome {
                    event,
                    node: poster.name.clone(),
                    status,
                    answer,
                });
                tx.send_modify(|p| match refused {
                    true => p.rejected += 1,
                    false => p.accepted += 1,
                });
                if refused {
                    // A producer backs off after a refusal rather than spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                n += 1;
            }
            outcomes
        });
        Producer {
            task,
            progress,
            stop,
        }
    }

    /// What it has done so far.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until its progress satisfies `ready`.
    pub async fn wait_for(&mut self, what: &str, ready: impl Fn(Progress) -> bool) {
        let waited = tokio::time::timeout(STEP, self.progress.wait_for(|p| ready(*p)))
            .await
            .map(|reached| reached.is_ok());
        match waited {
            Ok(true) => {}
            Ok(false) => panic!("the producer ended before {what}"),
            Err(_) => panic!("the producer never reached {what}: {:?}", self.progress()),
        }
    }

    /// Stops it after the post in flight; returns every outcome in posting order.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the producer did not stop")
            .expect("the producer panicked")
    }
}

// ---------------------------------------------------------------- checks

/// Asserts that `delivered` is exactly `expected` — (seq, posted event) in
/// seq order — each event as posted plus its seq.
pub fn assert_sequence(what: &str, delivered: &[Value], expected: &[(u64, Value)]) {
    let want: Vec<u64> = expected.iter().map(|(seq, _)| *seq).collect();
    let got = seqs(delivered);
    if got != want {
        let extra: Vec<String> = delivered
            .iter()
            .filter(|e| !want.contains(&e["seq"].as_u64().unwrap_or(0)))
            .map(|e| format!("seq {} = metadata.n {}", e["seq"], e["metadata"]["n"]))
            .collect();
        let missing: Vec<String> = expected
            .iter()
            .filter(|(seq, _)| !got.contains(seq))
            .map(|(seq, e)| format!("seq {seq} = metadata.n {}", e["metadata"]["n"]))
            .collect();
        panic!(
            "{what}: the seqs delivered are not the accepted ones\n delivered: {got:?}\n accepted:  {want:?}\n delivered, not accepted: {extra:?}\n accepted, not delivered: {missing:?}\n one event under several seqs: {:?}",
            repeated(delivered)
        );
    }
    for (event, (seq, posted)) in delivered.iter().zip(expected) {
        assert_delivered(posted, event, *seq);
    }
}

/// Events delivered more than once under different seqs: (seqs, event without seq).
pub fn repeated(delivered: &[Value]) -> Vec<(Vec<u64>, String)> {
    let mut by_content: Vec<(Vec<u64>, String)> = Vec::new();
    for event in delivered {
        let mut body = event.as_object().cloned().unwrap_or_default();
        let seq = body.remove("seq").and_then(|s| s.as_u64()).unwrap_or(0);
        let body = Value::Object(body).to_string();
        match by_content.iter_mut().find(|(_, b)| *b == body) {
            Some((seqs, _)) => seqs.push(seq),
            None => by_content.push((vec![seq], body)),
        }
    }
    by_content.retain(|(seqs, _)| seqs.len() > 1);
    by_content
}

/// The accepted outcomes as (seq, event), in seq order; fails if two share a seq.
pub fn accepted(outcomes: &[Outcome]) -> Vec<(u64, Value)> {
    let mut accepted: Vec<(u64, Value)> = outcomes
        .iter()
        .filter_map(|o| Some((o.seq()?, o.event.clone())))
        .collect();
    accepted.sort_by_key(|(seq, _)| *seq);
    for pair in accepted.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "two accepted events got seq {}: {} and {}",
            pair[0].0,
            pair[0].1,
            pair[1].1
        );
    }
    accepted
}

/// Asserts that `delivered` holds seqs 1, 2, 3 … and every accepted event of
/// `outcomes` exactly once (by `metadata.n`), each as it was posted. For
/// runs where seqs were provisional: which seq each event got is the
/// cluster's decision, so only the set and the gapless order are checked.
pub fn assert_each_once(what: &str, delivered: &[Value], outcomes: &[Outcome]) {
    let got = seqs(delivered);
    let want: Vec<u64> = (1..=delivered.len() as u64).collect();
    assert_eq!(got, want, "{what}: not gapless from 1");
    let mut posted: Vec<&Value> = outcomes
        .iter()
        .filter(|o| o.status == 202)
        .map(|o| &o.event)
        .collect();
    posted.sort_by_key(|e| e["metadata"]["n"].as_u64());
    let mut by_n: Vec<&Value> = delivered.iter().collect();
    by_n.sort_by_key(|e| e["metadata"]["n"].as_u64());
    let ns = |events: &[&Value]| -> Vec<u64> {
        events
            .iter()
            .map(|e| e["metadata"]["n"].as_u64().unwrap_or(0))
            .collect()
    };
    assert_eq!(
        ns(&by_n),
        ns(&posted),
        "{what}: not every accepted event exactly once (repeated: {:?})",
        repeated(delivered)
    );
    for (event, original) in by_n.iter().zip(&posted) {
        let seq = event["seq"].as_u64().unwrap_or(0);
        assert_delivered(original, event, seq);
    }
}

/// Asserts every refusal is a 503 `redis-unavailable`.
pub fn assert_refusals_are_redis_unavailable(outcomes: &[Outcome]) {
    for o in outcomes.iter().filter(|o| o.status != 202) {
        assert_eq!(
            o.status, 503,
            "{}: {} answered {}",
            o.node, o.event, o.answer
        );
        assert_eq!(
            o.answer["error"]["code"], "redis-unavailable",
            "{}: {}",
            o.node, o.answer
        );
    }
}
