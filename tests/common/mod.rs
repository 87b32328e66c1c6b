//! The shared harness of the black-box tests: it starts the real
//! `agent-events` binary on an ephemeral port with a fresh data directory,
//! talks to it over real WebSocket and HTTP connections, and kills it when
//! the test is done.
//!
//! Nothing here sleeps to synchronise: every wait is for a message (with a
//! timeout) or, where a counter is the thing awaited, a bounded poll of
//! `/admin/stats`.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The binary under test: this package's, unless `TEST_BROKER_BIN` names another
/// build of it (a release build, a snapshot).
pub fn bin() -> String {
    std::env::var("TEST_BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agent-events").to_owned())
}

/// How long one awaited message (or HTTP answer) may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// How long the broker may take to say it is listening, or to exit.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Lines of broker output kept to print when a test fails.
const LOG_LINES: usize = 400;

/// The line the broker writes to stderr once it listens.
const READY: &str = "listening on http://127.0.0.1:";

// ---------------------------------------------------------------- the broker

/// How to start a broker: settings (`AGENT_EVENTS_<KEY>`) and arguments.
#[derive(Default)]
pub struct BrokerBuilder {
    env: Vec<(String, String)>,
    /// Set by [`BrokerBuilder::mongodb`]: `/health` must name this backend.
    on_mongodb: bool,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
}

impl BrokerBuilder {
    /// Sets `AGENT_EVENTS_<key>`, e.g. `setting("MAX_SUBSCRIPTIONS", 2)`.
    pub fn setting(mut self, key: &str, value: impl ToString) -> Self {
        self.env
            .push((format!("AGENT_EVENTS_{key}"), value.to_string()));
        self
    }

    /// Adds a command-line argument, e.g. `--demo`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Stores in `database` (MongoDB) instead of SQLite: sets `MONGODB_URI`
    /// and `mongodb_database`, which the harness otherwise removes.
    pub fn mongodb(mut self, database: &MongoDb) -> Self {
        self.env.extend(database.env());
        self.on_mongodb = true;
        self
    }

    /// Stores in `database` when given, in SQLite under its data directory otherwise.
    pub fn store(self, database: Option<&MongoDb>) -> Self {
        match database {
            Some(database) => self.mongodb(database),
            None => self,
        }
    }

    /// Runs on `dir` (a restart of an earlier broker on it), which the
    /// caller owns and removes: dropping this broker leaves it.
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Spawns the broker and waits until it says it is listening.
    pub async fn start(mut self) -> Broker {
        let owns_data_dir = self.data_dir.is_none();
        let data_dir = self.data_dir.clone().unwrap_or_else(unique_dir);
        if !self.on_mongodb && std::env::var_os("TEST_ALL_ON_MONGODB").is_some() {
            // Every broker of the run on MongoDB (to try other suites
            // there): one database per data directory, so that a restart
            // on the same directory finds its data.
            let dir_name = data_dir.file_name().unwrap_or_default().to_string_lossy();
            let database = MongoDb::named(&dir_name.replace(['-', '.'], "_"))
                .expect("TEST_ALL_ON_MONGODB needs MONGODB_URI");
            self = self.mongodb(&database);
        }
        std::fs::create_dir_all(&data_dir).expect("create the broker's data dir");
        let bin = bin();
        let mut command = Command::new(&bin);
        command
            .args(&self.args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("WS_PORT", "0")
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", &data_dir)
            .env("RUST_LOG", "info")
            // Tests post as fast as the broker acknowledges, past the
            // default 100 events a second per execution: the per-execution
            // rate is off unless a test sets it (tests/execution_rate.rs).
            .env("AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_EXECUTION", "0")
            .env_remove("REDIS_URL")
            .env_remove("MONGODB_URI")
            .env_remove("TEST_BROKER_BIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let pid = child.id().expect("a running child has a pid");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        // Both pipes are drained for the broker's whole life, so it never blocks on a full pipe.
        tokio::spawn(drain(
            child.stderr.take().unwrap(),
            "",
            log.clone(),
            Some(ready_tx),
        ));
        tokio::spawn(drain(
            child.stdout.take().unwrap(),
            "[stdout] ",
            log.clone(),
            None,
        ));
        let port = match tokio::time::timeout(STARTUP, ready_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => {
                let status = child.wait().await;
                panic!(
                    "the broker ended before saying `{READY}PORT` ({status:?}); its output:\n{}",
                    tail(&log)
                )
            }
            Err(_) => panic!(
                "no `{READY}PORT` on stderr within {STARTUP:?}; output so far:\n{}",
                tail(&log)
            ),
        };
        let broker = Broker {
            child: Some(child),
            pid,
            port,
            data_dir,
            owns_data_dir,
            http: reqwest::Client::new(),
            log,
        };
        if self.on_mongodb {
            // A test on MongoDB that ran on SQLite would prove nothing.
            let (status, health) = broker.get_json("/health").await;
            assert_eq!(status, 200, "/health: {health}");
            assert_eq!(health["store"]["backend"], "mongodb", "{health}");
        }
        broker
    }
}

/// A running broker process; killed (SIGKILL) on drop unless it already ended.
pub struct Broker {
    child: Option<Child>,
    pid: u32,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory, removed on drop when the harness made it.
    pub data_dir: PathBuf,
    owns_data_dir: bool,
    http: reqwest::Client,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Broker {
    /// A builder, to set settings before starting.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// A broker with every default setting.
    pub async fn start() -> Broker {
        Broker::builder().start().await
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The last lines the broker wrote, for failure messages.
    pub fn output(&self) -> String {
        tail(&self.log)
    }

    // --- WebSocket

    /// A client connected at `/`, past its `connected` message.
    pub async fn connect(&self) -> Client {
        self.connect_with("/", None).await
    }

    /// A client connected at `path` (`/` or `/ws`).
    pub async fn connect_path(&self, path: &str) -> Client {
        self.connect_with(path, None).await
    }

    /// A client whose socket receive buffer is `bytes`, so that a client
    /// that stops reading stalls the broker's writes soon.
    pub async fn connect_small_buffer(&self, bytes: u32) -> Client {
        self.connect_with("/", Some(bytes)).await
    }

    async fn connect_with(&self, path: &str, recv_buffer: Option<u32>) -> Client {
        match self.try_connect_with(path, recv_buffer).await {
            Ok(client) => client,
            Err(status) => panic!("upgrade at {path}: HTTP {status}"),
        }
    }

    /// A client at `/` whose socket receive buffer is `bytes` (when given),
    /// or the HTTP status that refused the upgrade (503 past a connection limit).
    pub async fn try_connect(&self, recv_buffer: Option<u32>) -> Result<Client, u16> {
        self.try_connect_with("/", recv_buffer).await
    }

    async fn try_connect_with(&self, path: &str, recv_buffer: Option<u32>) -> Result<Client, u16> {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let address = ([127, 0, 0, 1], self.port).into();
        let tcp = tokio::time::timeout(STEP, socket.connect(address))
            .await
            .expect("TCP connect timed out")
            .unwrap_or_else(|e| panic!("TCP connect to {address}: {e}"));
        let muted = Arc::new(AtomicBool::new(false));
        let stream = TestStream {
            tcp,
            muted: muted.clone(),
        };
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        let handshake =
            tokio::time::timeout(STEP, tokio_tungstenite::client_async(&url, stream)).await;
        let (ws, response) = match handshake {
            Ok(Ok(connected)) => connected,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(refused))) => {
                return Err(refused.status().as_u16())
            }
            Ok(Err(e)) => panic!("WebSocket handshake at {url}: {e}"),
            Err(_) => panic!("WebSocket handshake at {url} timed out"),
        };
        assert_eq!(response.status().as_u16(), 101, "upgrade at {url}");
        let mut client = Client {
            ws,
            muted,
            hello: Value::Null,
            client_id: String::new(),
        };
        let hello = client.next_json().await;
        assert_eq!(
            hello["type"], "connected",
            "first message at {url}: {hello}"
        );
        client.client_id = hello["clientId"]
            .as_str()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("connected without a clientId: {hello}"))
            .to_owned();
        client.hello = hello;
        Ok(client)
    }

    // --- HTTP

    /// POSTs a JSON value to `/api/events`: (status, body as JSON).
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string()).await
    }

    /// POSTs raw text as `application/json` to `/api/events`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let request = self
            .http
            .post(self.url("/api/events"))
            .header("content-type", "application/json")
            .body(body);
        let response = tokio::time::timeout(STEP, request.send())
            .await
            .expect("POST /api/events timed out")
            .expect("POST /api/events");
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        (status, parse_or_string(&text))
    }

    /// POSTs a JSON value to `/api/events` with an `Idempotency-Key`:
    /// (status, body as JSON, whether the answer says `Idempotent-Replayed: true`).
    pub async fn post_keyed(&self, key: &str, body: &Value) -> (u16, Value, bool) {
        post_keyed_url(&self.http, &self.url("/api/events"), key, body).await
    }

    /// Every stored event of `execution`, through GET
    /// /api/executions/{id}/events, page by page (none: an empty list).
    pub async fn stored(&self, execution: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = self
                .get_json(&format!(
                    "/api/executions/{execution}/events?afterSeq={after}&limit=1000"
                ))
                .await;
            if status == 404 {
                return events;
            }
            assert_eq!(status, 200, "stored events of {execution}: {page}");
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["nextAfterSeq"].as_u64() {
                Some(next) => after = next,
                None => return events,
            }
        }
    }

    /// POSTs events that must be accepted; returns the 202 body.
    pub async fn post_ok(&self, body: &Value) -> Value {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 202, "POST {body} answered {answer}");
        answer
    }

    /// POSTs one event that must be accepted; returns its seq.
    pub async fn post_event(&self, event: &Value) -> u64 {
        let answer = self.post_ok(event).await;
        assert_eq!(answer["accepted"], 1, "{answer}");
        let accepted = &answer["events"][0];
        assert_eq!(accepted["executionId"], event["executionId"], "{answer}");
        accepted["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {answer}"))
    }

    /// Any request, with a bearer token and a JSON body if given: (status,
    /// body as JSON, or a string if it is not JSON). An event stream's body is
    /// not read (`Null`): its headers are the answer, and dropping the
    /// response closes it.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        request_url(&self.http, method, &self.url(path), bearer, body).await
    }

    /// GETs `path`: (status, content type, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let response = tokio::time::timeout(STEP, self.http.get(self.url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("GET {path} timed out"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.expect("response body");
        (status, content_type, text)
    }

    /// GETs `path` and reads its body as JSON (a string if it is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, _, text) = self.get(path).await;
        (status, parse_or_string(&text))
    }

    /// `/admin/stats`.
    pub async fn stats(&self) -> Value {
        let (status, stats) = self.get_json("/admin/stats").await;
        assert_eq!(status, 200, "/admin/stats: {stats}");
        assert!(
            stats.is_object(),
            "/admin/stats is not a JSON object: {stats}"
        );
        stats
    }

    /// Polls `/admin/stats` until `ready` holds (at most [`STEP`]); returns those stats.
    pub async fn wait_for_stats(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let stats = self.stats().await;
            if ready(&stats) {
                return stats;
            }
            if Instant::now() > deadline {
                panic!("/admin/stats never showed {what}; last: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // --- the process

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the broker.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own child, which we have not reaped.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            io::Error::last_os_error()
        );
    }

    /// `kill -9`, and waits until the process is gone.
    pub async fn kill_9(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait_exit(STARTUP).await;
        assert_eq!(status.code(), None, "killed by a signal: {status:?}");
    }

    /// SIGTERM; the broker must exit 0.
    pub async fn stop_gracefully(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(STARTUP).await;
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status:?}; output:\n{}",
            self.output()
        );
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the broker was already reaped");
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => {
                self.child = None;
                status.expect("wait for the broker")
            }
            Err(_) => panic!(
                "the broker did not exit within {limit:?}; its output:\n{}",
                self.output()
            ),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
            // Reap it (briefly) so that it writes nothing into the directory removed below.
            for _ in 0..200 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if std::thread::panicking() {
            eprintln!("--- broker on port {} wrote:\n{}", self.port, self.output());
        }
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A data directory that outlives the brokers of one test (restarts on the
/// same data: [`BrokerBuilder::data_dir`]); removed on drop. Declare it
/// before the brokers, so that they are dropped (killed) first.
pub struct DataDir(PathBuf);

impl DataDir {
    /// A new, empty directory.
    pub fn new() -> DataDir {
        let path = unique_dir();
        std::fs::create_dir_all(&path).expect("create the data dir");
        DataDir(path)
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- MongoDB

/// A MongoDB database of one test on the server at `MONGODB_URI`, for
/// brokers started with [`BrokerBuilder::mongodb`]; [`MongoDb::finish`]
/// drops it.
pub struct MongoDb {
    uri: String,
    /// The database's name, unique to the test and the run.
    pub name: String,
}

impl MongoDb {
    /// A fresh database named after `test`, or `None` after printing
    /// `SKIPPED: MongoDB {suite} (MONGODB_URI not set)`.
    pub fn for_test(suite: &str, test: &str) -> Option<MongoDb> {
        if std::env::var("MONGODB_URI").map_or(true, |uri| uri.is_empty()) {
            eprintln!("SKIPPED: MongoDB {suite} (MONGODB_URI not set)");
            return None;
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Unique across the test binaries that share one server in a run.
        let name = format!(
            "aeb_{}_{}_{nanos}_{test}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        MongoDb::named(&name)
    }

    /// The database `name` (cut to MongoDB's 63 bytes) at `MONGODB_URI`, if set.
    fn named(name: &str) -> Option<MongoDb> {
        let uri = std::env::var("MONGODB_URI")
            .ok()
            .filter(|uri| !uri.is_empty())?;
        let mut name = name.to_owned();
        name.truncate(63);
        Some(MongoDb { uri, name })
    }

    /// The variables that put a broker on this database.
    pub fn env(&self) -> [(String, String); 2] {
        [
            ("MONGODB_URI".to_owned(), self.uri.clone()),
            (
                "AGENT_EVENTS_MONGODB_DATABASE".to_owned(),
                self.name.clone(),
            ),
        ]
    }

    /// A client of the database itself, to check what the brokers stored.
    pub async fn database(&self) -> mongodb::Database {
        // The URI is never printed: it may hold credentials.
        let client = mongodb::Client::with_uri_str(&self.uri)
            .await
            .expect("a MongoDB client for MONGODB_URI");
        client.database(&self.name)
    }

    /// Drops the database. Called at the end of a test that passed: a
    /// failed one leaves its database to look at.
    pub async fn finish(self) {
        if let Err(e) = self.database().await.drop().await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A fresh directory name under the temp dir, unique in this process run.
pub fn unique_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "agent-events-test-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Reads lines of a pipe into the log until it closes; sends the port once the ready line shows.
async fn drain(
    pipe: impl AsyncRead + Unpin,
    prefix: &'static str,
    log: Arc<Mutex<VecDeque<String>>>,
    mut ready: Option<tokio::sync::oneshot::Sender<u16>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes).trim_end().to_owned();
        if let Some(port) = ready.as_ref().and(parse_port(&line)) {
            let _ = ready.take().unwrap().send(port);
        }
        let mut log = log.lock().unwrap();
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(format!("{prefix}{line}"));
    }
}

fn parse_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(READY)? + READY.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|port| *port != 0)
}

fn tail(log: &Mutex<VecDeque<String>>) -> String {
    let log = log.lock().unwrap();
    log.iter().cloned().collect::<Vec<_>>().join("\n")
}

fn parse_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

// ---------------------------------------------------------------- a client

/// A TCP stream whose writes can be muted: a muted client neither answers
/// pings nor replies to a close, exactly like a stalled browser, yet can
/// still read what the broker sent it.
pub struct TestStream {
    tcp: TcpStream,
    muted: Arc<AtomicBool>,
}

impl AsyncRead for TestStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// One thing a client received (WebSocket pings and pongs are skipped).
#[derive(Debug)]
pub enum Frame {
    /// A text frame holding JSON.
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame: its code (if any) and reason.
    Close(Option<u16>, String),
    /// The connection ended without a close frame (or failed).
    Ended(String),
}

/// A WebSocket client of the broker.
pub struct Client {
    ws: WebSocketStream<TestStream>,
    muted: Arc<AtomicBool>,
    /// The `connected` message.
    pub hello: Value,
    /// Its `clientId`.
    pub client_id: String,
}

impl Client {
    /// Sends a JSON message.
    pub async fn send_json(&mut self, message: &Value) {
        self.send(Message::Text(message.to_string().into())).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(Message::Text(text.into().into())).await;
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.send(Message::Binary(bytes.into())).await;
    }

    async fn send(&mut self, message: Message) {
        tokio::time::timeout(STEP, self.ws.send(message))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send");
    }

    /// The kernel's TCP state of this client's socket ([`TCP_ESTABLISHED`]
    /// …), read without reading the socket: how a client that never reads
    /// sees whether the broker has closed its end.
    pub fn tcp_state(&self) -> u8 {
        tcp_state(self.ws.get_ref().tcp.as_raw_fd())
    }

    /// From now on, write nothing: no pong, no close reply, no message.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::Relaxed);
    }

    /// The next frame within `limit`, skipping pings and pongs; `None` on timeout.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match next {
                None => Frame::Ended("stream ended".into()),
                Some(Err(e)) => Frame::Ended(e.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(value) => Frame::Json(value),
                    Err(_) => Frame::Text(text.to_string()),
                },
                Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Frame::Close(Some(u16::from(f.code)), f.reason.to_string()),
                    None => Frame::Close(None, String::new()),
                },
            });
        }
    }

    /// The next frame; fails the test after [`STEP`].
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(STEP).await.unwrap_or_else(|| {
            panic!(
                "client {}: nothing received within {STEP:?}",
                self.client_id
            )
        })
    }

    /// Reads to the next message of type `kind`, passing over subscription
    /// answers and events (a resubscribe burst's first subscription may be
    /// answered or not); anything else fails the test, with `context`.
    pub async fn skip_to(&mut self, kind: &str, context: &str) {
        loop {
            let message = self.next_json().await;
            match message["type"].as_str() {
                Some(t) if t == kind => return,
                Some("subscribed") | Some("event") => {}
                _ => panic!("{context}: waiting for {kind}, got {message}"),
            }
        }
    }

    /// The next JSON message; fails on anything else.
    pub async fn next_json(&mut self) -> Value {
        match self.recv().await {
            Frame::Json(value) => value,
            other => panic!(
                "client {}: expected a JSON message, got {other:?}",
                self.client_id
            ),
        }
    }

    /// The next message, which must be of `kind` (`subscribed`, `pong`, …).
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        let message = self.next_json().await;
        assert_eq!(
            message["type"], kind,
            "client {}: expected {kind}, got {message}",
            self.client_id
        );
        message
    }

    /// The next message, which must be an `error` with `code` and a message.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let message = self.next_json().await;
        assert_eq!(
            message["type"], "error",
            "expected error {code}, got {message}"
        );
        assert_eq!(
            message["code"], code,
            "expected error {code}, got {message}"
        );
        assert!(
            message["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error says what went wrong: {message}"
        );
        message
    }

    /// The next message, which must be an `event`; returns the whole message.
    pub async fn next_event(&mut self) -> Value {
        let message = self.expect_type("event").await;
        assert_eq!(
            message["executionId"], message["event"]["executionId"],
            "the message names the event's execution: {message}"
        );
        message
    }

    /// The `event` of the next `event` message.
    pub async fn next_event_body(&mut self) -> Value {
        self.next_event().await["event"].take()
    }

    /// The next `count` events of the next messages, which must all be events.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(self.next_event_body().await);
        }
        events
    }

    /// Sends `{"type":"subscribe", …fields}`; the answer must be `subscribed`, which is returned.
    pub async fn subscribe(&mut self, fields: Value) -> Value {
        let mut request = Map::new();
        request.insert("type".into(), "subscribe".into());
        request.extend(
            fields
                .as_object()
                .expect("subscribe fields are an object")
                .clone(),
        );
        self.send_json(&Value::Object(request)).await;
        let answer = self.expect_type("subscribed").await;
        for key in ["executionId", "conversationId"] {
            assert_eq!(
                answer.get(key),
                fields.get(key),
                "subscribed names its target: {answer}"
            );
        }
        answer
    }

    /// Subscribes to an execution without filters; it must replay nothing.
    pub async fn subscribe_execution(&mut self, execution_id: &str) {
        let answer = self.subscribe(json!({ "executionId": execution_id })).await;
        assert_eq!(answer["replayed"], 0, "{answer}");
    }

    /// Sends `{"type":"ping"}`; the very next message must be `pong`, which
    /// proves nothing else was waiting ahead of it.
    pub async fn ping(&mut self) {
        self.send_json(&json!({"type": "ping"})).await;
        let answer = self.next_json().await;
        assert_eq!(
            answer,
            json!({"type": "pong"}),
            "client {}: expected pong",
            self.client_id
        );
    }

    /// Reads until the connection closes: the JSON messages before the close, and its code.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut messages = Vec::new();
        loop {
            match self.recv().await {
                Frame::Json(value) => messages.push(value),
                Frame::Close(code, _) => return (messages, code),
                other => panic!(
                    "client {}: expected messages then a close frame, got {other:?} after {} messages (last: {:?})",
                    self.client_id,
                    messages.len(),
                    messages.last()
                ),
            }
        }
    }

    /// Sends a close frame and waits for the connection to end.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Some(frame) = self.recv_within(STEP).await {
            if matches!(frame, Frame::Close(..) | Frame::Ended(_)) {
                return;
            }
        }
    }
}

/// Linux's `TCP_ESTABLISHED` (`include/net/tcp_states.h`; libc does not export it).
pub const TCP_ESTABLISHED: u8 = 1;

/// The kernel's TCP state of socket `fd` ([`TCP_ESTABLISHED`] while open both ways).
pub fn tcp_state(fd: std::os::fd::RawFd) -> u8 {
    // SAFETY: `info` is a plain C struct the kernel fills, `len` its size.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let got = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(got, 0, "TCP_INFO: {}", io::Error::last_os_error());
        info.tcpi_state
    }
}

// ---------------------------------------------------------------- events

/// POSTs `body` to the events URL `url` under an `Idempotency-Key`, as [`Broker::post_keyed`].
pub async fn post_keyed_url(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> (u16, Value, bool) {
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string());
    let response = tokio::time::timeout(STEP, request.send())
        .await
        .expect("POST /api/events timed out")
        .expect("POST /api/events");
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = response.text().await.expect("response body");
    (status, parse_or_string(&text), replayed)
}

/// Any request to `url` (another broker's too), as [`Broker::request`].
pub async fn request_url(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
        .unwrap_or_else(|e| panic!("method {method}: {e}"));
    let mut request = http.request(method.clone(), url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = tokio::time::timeout(STEP, request.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if stream {
        return (status, Value::Null);
    }
    let text = tokio::time::timeout(STEP, response.text())
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: the body timed out"))
        .unwrap_or_default();
    (status, parse_or_string(&text))
}

/// The seed's example event, exactly as PROTOCOL.md 1 prints it.
pub const SEED_EVENT: &str = r#"{"type":"department-start","executionId":"exec-123","department":"story",
 "departmentName":"Story Department","agentId":"story-head-001","relevance":1.0,
 "timestamp":"2025-10-01T12:00:00Z"}"#;

/// An event of `kind` in `execution_id` with these extra fields.
pub fn event(kind: &str, execution_id: &str, fields: Value) -> Value {
    let mut event = json!({"type": kind, "executionId": execution_id});
    event.as_object_mut().unwrap().extend(
        fields
            .as_object()
            .expect("event fields are an object")
            .clone(),
    );
    event
}

/// A small valid event (an `agent-thinking`) carrying `n` in its metadata.
pub fn thinking(execution_id: &str, n: u64) -> Value {
    event(
        "agent-thinking",
        execution_id,
        json!({"agentId": "agent-1", "thought": format!("step {n}"), "step": n, "metadata": {"n": n}}),
    )
}

/// One event of each of the 11 types, with every field its type has, plus
/// the common optional ones (`conversationId`, `timestamp`, `metadata`).
pub fn all_types(execution_id: &str, conversation_id: &str) -> Vec<Value> {
    let specific = [
        json!({"type":"orchestration-start","projectId":"proj-123","userPrompt":"Create a dramatic scene",
            "complexity":"medium","departments":["story","character"]}),
        json!({"type":"orchestration-complete","status":"partial","result":{"scenes":2,"notes":["a"]},
            "metrics":{"durationMs":5234,"costUsd":0.42}}),
        json!({"type":"department-start","department":"story","departmentName":"Story Department",
            "agentId":"story-head-001","relevance":0.75}),
        json!({"type":"department-complete","department":"story","outputs":[{"kind":"outline"},"text"],
            "qualityScore":87.5,"executionTime":5234}),
        json!({"type":"agent-start","agentId":"writer-1","agentName":"Writer","department":"story",
            "prompt":"Write the opening"}),
        json!({"type":"agent-thinking","agentId":"writer-1","thought":"Consider the setting","step":2}),
        json!({"type":"agent-complete","agentId":"writer-1","department":"story","output":{"text":"It was night."},
            "success":false,"error":"ran out of ink","executionTime":1.5}),
        json!({"type":"tool-call","agentId":"writer-1","toolName":"search","toolCallId":"call-1",
            "input":{"q":"noir openings","limit":3}}),
        json!({"type":"tool-result","agentId":"writer-1","toolName":"search","toolCallId":"call-1",
            "output":[{"title":"t"}],"success":true,"error":"","executionTime":12}),
        json!({"type":"quality-check","qualityScore":70,"agentId":"writer-1","department":"story",
            "passed":false,"threshold":80,"issues":["too short","no dialogue"]}),
        json!({"type":"review-status","department":"story","status":"revision-requested","agentId":"story-head-001",
            "specialistId":"writer-1","feedback":"More tension","qualityScore":60}),
    ];
    specific
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            let object = e.as_object_mut().unwrap();
            object.insert("executionId".into(), execution_id.into());
            object.insert("conversationId".into(), conversation_id.into());
            object.insert(
                "timestamp".into(),
                format!("2025-10-01T12:00:{i:02}.250Z").into(),
            );
            object.insert(
                "metadata".into(),
                json!({"model":"claude","inputTokens":100 + i,"outputTokens":20,"costUsd":0.01,
                    "parentAgentId":"orchestrator","durationMs":7}),
            );
            e
        })
        .collect()
}

/// The 11 event type names.
pub const TYPES: [&str; 11] = [
    "orchestration-start",
    "orchestration-complete",
    "department-start",
    "department-complete",
    "agent-start",
    "agent-thinking",
    "agent-complete",
    "tool-call",
    "tool-result",
    "quality-check",
    "review-status",
];

/// JSON equality where numbers compare by value (`1.0` equals `1`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Whether two RFC 3339 UTC timestamps (`…Z`) name the same instant, whatever
/// their number of fractional digits.
pub fn same_instant(a: &str, b: &str) -> bool {
    fn canonical(t: &str) -> Option<(String, String)> {
        let body = t.strip_suffix('Z').or_else(|| t.strip_suffix("+00:00"))?;
        let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
        Some((
            seconds.to_owned(),
            fraction.trim_end_matches('0').to_owned(),
        ))
    }
    canonical(a).is_some_and(|x| Some(x) == canonical(b))
}

/// Whether `t` looks like an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS…` with a zone).
pub fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && (b[10] == b'T' || b[10] == b't')
        && [13, 16].iter().all(|&i| b[i] == b':')
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && (t.ends_with('Z') || t.ends_with('z') || t[19..].contains(['+', '-']))
}

/// Asserts that a delivered event is the posted one plus `seq` (= `seq`) and a
/// `timestamp` (the posted one if there was one), and nothing else.
pub fn assert_delivered(posted: &Value, delivered: &Value, seq: u64) {
    assert_eq!(delivered["seq"], seq, "seq of {delivered}");
    let stamp = delivered["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("a delivered event has a timestamp: {delivered}"));
    assert!(is_rfc3339(stamp), "timestamp is RFC 3339: {delivered}");
    if let Some(sent) = posted["timestamp"].as_str() {
        assert!(
            same_instant(sent, stamp),
            "timestamp {sent} came back as {stamp}"
        );
    }
    let mut rest = delivered.as_object().unwrap().clone();
    rest.remove("seq");
    rest.remove("timestamp");
    let mut expected = posted.as_object().unwrap().clone();
    expected.remove("timestamp");
    assert!(
        json_eq(
            &Value::Object(expected.clone()),
            &Value::Object(rest.clone())
        ),
        "delivered event differs from the posted one\n posted:    {}\n delivered: {}",
        Value::Object(expected),
        Value::Object(rest)
    );
}

/// The seqs of a list of events.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {e}")))
        .collect()
}

/// Producers posting `agent-thinking` events to one execution without
/// pause until stopped: the load the seam tests subscribe against.
pub struct BusyProducers {
    progress: tokio::sync::watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BusyProducers {
    /// `count` producers posting to `execution`; each event's metadata says
    /// which producer sent it and its number.
    pub fn start(broker: &Arc<Broker>, execution: &'static str, count: u64) -> Self {
        let (progress_tx, progress) = tokio::sync::watch::channel(0u64);
        let progress_tx = Arc::new(progress_tx);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|producer| {
                let (broker, progress_tx, stop) =
                    (broker.clone(), progress_tx.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut e = thinking(execution, n);
                        e["metadata"] = json!({"producer": producer, "n": n});
                        let seq = broker.post_event(&e).await;
                        progress_tx.send_modify(|p| *p = (*p).max(seq));
                        n += 1;
                    }
                })
            })
            .collect();
        BusyProducers {
            progress,
            stop,
            tasks,
        }
    }

    /// Watches the highest seq acknowledged so far.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.clone()
    }

    /// The highest seq acknowledged so far.
    pub fn reached(&self) -> u64 {
        *self.progress.borrow()
    }

    /// Lets them post `more` events past what is acknowledged now, then
    /// stops them; returns the highest seq acknowledged in the end.
    pub async fn stop_after(self, more: u64) -> u64 {
        let target = self.reached() + more;
        self.progress
            .clone()
            .wait_for(|p| *p >= target)
            .await
            .expect("producers alive");
        self.stop.store(true, Ordering::Relaxed);
        let reached = self.progress.clone();
        for task in self.tasks {
            task.await.expect("a producer panicked");
        }
        let last = *reached.borrow();
        last
    }
}

/// One reader of a seam run: where it subscribed and what it got.
pub struct SeamReader {
    /// The `fromSeq` it subscribed with.
    pub from: u64,
    /// How far behind the head it meant to subscribe.
    pub behind: u64,
    /// The `replayed` count of its `subscribed` answer.
    pub replayed: u64,
    /// Every event body it received, the end marker last.
    pub got: Vec<Value>,
    /// Its connection, still open.
    pub client: Client,
}

/// The end of a seam run.
pub struct SeamRun {
    /// The highest seq the producers got before they stopped.
    pub stopped_at: u64,
    /// The seq of the end marker, posted after the producers stopped.
    pub last: u64,
    /// The readers, in the order of their positions.
    pub readers: Vec<SeamReader>,
}

/// The replay seam under load: two producers post to `execution` without
/// pause; for each `(at, behind)` a reader waits until seq `at` is
/// acknowledged, subscribes with `fromSeq = head - behind`, and reads until
/// the end marker, which is posted once every reader is subscribed and the
/// producers have posted `run_on` more events.
pub async fn run_seam(
    broker: &Arc<Broker>,
    execution: &'static str,
    points: &[(u64, u64)],
    run_on: u64,
) -> SeamRun {
    // Clients connect first, so that only the subscribe itself races the producers.
    let mut clients = Vec::new();
    for _ in points {
        clients.push(broker.connect().await);
    }
    let producers = BusyProducers::start(broker, execution, 2);
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for (mut client, &(at, behind)) in clients.into_iter().zip(points) {
        let mut progress = producers.progress();
        let subscribed_tx = subscribed_tx.clone();
        readers.push(tokio::spawn(async move {
            let now = *progress
                .wait_for(|p| *p >= at)
                .await
                .expect("producers alive");
            let from = now.saturating_sub(behind);
            let answer = client
                .subscribe(json!({"executionId": execution, "fromSeq": from}))
                .await;
            let replayed = answer["replayed"]
                .as_u64()
                .unwrap_or_else(|| panic!("subscribed without a replayed count: {answer}"));
            subscribed_tx.send(()).expect("the test waits");
            let mut got = Vec::new();
            loop {
                let e = client.next_event_body().await;
                let end = e["metadata"]["end"] == true;
                got.push(e);
                if end {
                    break;
                }
            }
            SeamReader {
                from,
                behind,
                replayed,
                got,
                client,
            }
        }));
    }
    drop(subscribed_tx);
    for _ in points {
        // Bounded: the producers never stop by themselves, so a reader that
        // failed must not leave the test waiting for it.
        let subscribed = tokio::time::timeout(Duration::from_secs(30), subscribed_rx.recv()).await;
        if !matches!(subscribed, Ok(Some(()))) {
            for reader in readers.into_iter().filter(|r| r.is_finished()) {
                if let Err(failure) = reader.await {
                    std::panic::resume_unwind(failure.into_panic());
                }
            }
            panic!("a reader never subscribed");
        }
    }
    let stopped_at = producers.stop_after(run_on).await;
    let mut end = thinking(execution, 0);
    end["metadata"] = json!({"end": true});
    let last = broker.post_event(&end).await;
    let mut finished = Vec::new();
    for reader in readers {
        finished.push(reader.await.expect("a reader panicked"));
    }
    SeamRun {
        stopped_at,
        last,
        readers: finished,
    }
}
