//! What the cluster tests run on: a real `redis-server` per test on a free
//! loopback port, broker nodes that join it (and can be SIGKILLed and
//! restarted on the same DATA_DIR and port), a WebSocket subscriber, and a
//! producer that posts while faults are injected.
//!
//! Processes, data directories, HTTP and the WebSocket client are the
//! common harness's (`tests/common`): a node is a [`Broker`] started with
//! [`BrokerBuilder::redis`] on a [`DataDir`] of its own, and `redis-server`
//! is started and killed as a [`Process`]. What is here is what only a
//! cluster has: Redis itself, a node's name and restarts, and the checks
//! of one order across nodes.
//!
//! Nothing sleeps to synchronise: processes are ready when they say so on
//! their output, messages are awaited with a timeout, and HTTP figures are
//! polled (bounded) only when the figure is what the test waits for.

#![allow(dead_code)] // each test file uses a different part

use crate::common::{
    assert_delivered, post_url, seqs, thinking, Broker, Client, DataDir, Frame, Log, MongoDb,
    Process, STEP,
};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::watch;

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
    /// Its output, across restarts.
    log: Log,
    dir: DataDir,
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
            dir: DataDir::new(),
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
        let what = format!("redis-server :{}", self.port);
        let (process, ()) = Process::start(command, &what, &self.log, |line| {
            line.contains("Ready to accept connections").then_some(())
        })
        .await;
        self.process = Some(process);
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
                self.log.tail()
            );
        }
    }
}

// ---------------------------------------------------------------- a broker node

/// A broker in cluster mode on one [`Redis`], with its own DATA_DIR.
pub struct Node {
    // Declared first so that the process ends before its directory goes.
    broker: Option<Broker>,
    /// Its `node_id`.
    pub name: String,
    /// Its port (0 until first started; kept across restarts).
    pub port: u16,
    redis_url: String,
    /// The MongoDB database it stores in, if not its own SQLite file.
    database: Option<MongoDb>,
    /// Settings of its own (`AGENT_EVENTS_<KEY>`, value), on every start.
    settings: Vec<(String, String)>,
    /// What it wrote before it was last killed, for failure messages.
    earlier: String,
    data_dir: DataDir,
}

impl Node {
    /// Starts a broker named `name` (its `node_id`) on `redis`, on a free port.
    pub async fn start(name: &str, redis: &Redis) -> Node {
        Node::start_on(name, &redis.url()).await
    }

    /// Starts a broker named `name` on the Redis at `redis_url`.
    pub async fn start_on(name: &str, redis_url: &str) -> Node {
        Node::start_with(name, redis_url, None, &[]).await
    }

    /// Starts a broker named `name` on `redis` that stores in `database`
    /// (MongoDB) instead of its own SQLite file.
    pub async fn start_on_mongodb(name: &str, redis: &Redis, database: &MongoDb) -> Node {
        Node::start_with(name, &redis.url(), Some(database), &[]).await
    }

    /// Starts a broker named `name` on the Redis at `redis_url` (empty for
    /// none, e.g. with `REDIS_CLUSTER_NODES`), storing in `database` if
    /// given, with `settings` (`("CLUSTER_PARTITIONS", "4")` sets
    /// `AGENT_EVENTS_CLUSTER_PARTITIONS`).
    pub async fn start_with(
        name: &str,
        redis_url: &str,
        database: Option<&MongoDb>,
        settings: &[(&str, String)],
    ) -> Node {
        let mut node = Node {
            broker: None,
            name: name.to_owned(),
            port: 0,
            redis_url: redis_url.to_owned(),
            database: database.cloned(),
            settings: settings
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone()))
                .collect(),
            earlier: String::new(),
            data_dir: DataDir::new(),
        };
        node.launch().await;
        node
    }

    async fn launch(&mut self) {
        assert!(self.broker.is_none(), "{} already runs", self.name);
        // `port(0)` on the first start: a free one, kept for restarts.
        let mut builder = Broker::builder();
        for (key, value) in &self.settings {
            builder = builder.setting(key, value);
        }
        let broker = builder
            .redis(&self.redis_url)
            .node_id(&self.name)
            .port(self.port)
            .data_dir(self.data_dir.path())
            .store(self.database.as_ref())
            .start()
            .await;
        self.port = broker.port;
        self.broker = Some(broker);
    }

    /// The running broker.
    fn broker(&self) -> &Broker {
        self.broker
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// SIGKILLs the broker (its DATA_DIR stays).
    /// SIGTERM: the node stops gracefully (and must exit 0).
    pub async fn stop_gracefully(&mut self) {
        let broker = self.broker.as_mut().expect("the node is running");
        broker.stop_gracefully().await;
        self.broker = None;
    }

    pub fn kill(&mut self) {
        let broker = self.broker.take().expect("the node is running");
        self.earlier.push_str(&broker.output());
        drop(broker);
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
        self.broker().post(body).await
    }

    /// POSTs one event that must be accepted; returns its seq.
    pub async fn post_event(&self, event: &Value) -> u64 {
        let (status, answer) = self.post(event).await;
        assert_eq!(status, 202, "{}: POST {event} answered {answer}", self.name);
        accepted_seq(&answer)
    }

    /// GETs `path`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let (status, answer) = self.broker().get_json(path).await;
        assert_eq!(status, 200, "{}: GET {path}: {answer}", self.name);
        assert!(
            !answer.is_string(),
            "{}: GET {path} is not JSON: {answer}",
            self.name
        );
        answer
    }

    /// `/admin/stats`.
    pub async fn stats(&self) -> Value {
        self.broker().stats().await
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
        self.broker()
            .wait_for(path, &format!("{what} on {}", self.name), ready)
            .await
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
        self.broker().stored(execution).await
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
        Sub {
            client: self.broker().connect().await,
            node: self.name.clone(),
        }
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
            http: self.broker().http().clone(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.earlier.is_empty() {
            eprintln!(
                "--- node {} (:{}), before it was last killed, wrote:\n{}",
                self.name, self.port, self.earlier
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

/// The seq of the single event a 202 accepted.
fn accepted_seq(answer: &Value) -> u64 {
    assert_eq!(answer["accepted"], 1, "{answer}");
    answer["events"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {answer}"))
}

// ---------------------------------------------------------------- a subscriber

/// A WebSocket client of one node: the harness's [`Client`], and the node's
/// name for failure messages.
pub struct Sub {
    client: Client,
    /// Which node it is connected to, for failure messages.
    pub node: String,
}

impl Sub {
    /// The next JSON message (pings and pongs of the transport skipped).
    pub async fn next_json(&mut self) -> Value {
        self.client.next_json().await
    }

    /// Subscribes to `execution`, from `from_seq` if given; returns `replayed`.
    pub async fn subscribe(&mut self, execution: &str, from_seq: Option<u64>) -> u64 {
        let mut fields = json!({"executionId": execution});
        if let Some(from_seq) = from_seq {
            fields["fromSeq"] = from_seq.into();
        }
        let answer = self.client.subscribe(fields).await;
        answer["replayed"].as_u64().unwrap_or(0)
    }

    /// The event of the next message, which must be an `event`.
    pub async fn next_event(&mut self) -> Value {
        self.client.next_event_body().await
    }

    /// The next `count` events.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        self.client.events(count).await
    }

    /// Events until one with seq `last_seq` or more; then a ping, whose pong
    /// must come next (nothing else was waiting).
    pub async fn events_through(&mut self, last_seq: u64) -> Vec<Value> {
        let mut events: Vec<Value> = Vec::new();
        while events.last().and_then(|e| e["seq"].as_u64()) < Some(last_seq) {
            match self.next_within_step().await {
                Some(message) if message["type"] == "event" => {
                    events.push(message["event"].clone())
                }
                Some(other) => panic!("{}: expected an event, got {other}", self.node),
                None => panic!(
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
            let message = self.next_within_step().await.unwrap_or_else(|| {
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

    /// The next JSON message within [`STEP`]; `None` when nothing came.
    async fn next_within_step(&mut self) -> Option<Value> {
        match self.client.recv_within(STEP).await? {
            Frame::Json(message) => Some(message),
            other => panic!("{}: expected a JSON message, got {other:?}", self.node),
        }
    }

    /// Sends a ping; the very next message must be the pong.
    pub async fn ping(&mut self) {
        self.client.ping().await;
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
                let (status, answer) = post_url(&poster.http, &poster.url, event.to_string()).await;
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
