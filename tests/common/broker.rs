//! Starting and ending the broker under test: the builder (settings,
//! arguments, store, data directory, a cluster's Redis), the running
//! [`Broker`] (its port, its output, signals, `kill -9`, a graceful stop),
//! and [`DataDir`], a data directory that outlives one broker so that
//! another can restart on it. Every suite starts its brokers here, the
//! cluster suites' nodes included.

use super::process::{Log, Process};
use super::{MongoDb, STARTUP};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::process::Command;

/// The binary under test: this package's, unless `TEST_BROKER_BIN` names another
/// build of it (a release build, a snapshot).
pub fn bin() -> String {
    std::env::var("TEST_BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_agent-events").to_owned())
}

/// The line the broker writes to stderr once it listens.
const READY: &str = "listening on http://127.0.0.1:";

/// How to start a broker: settings (`AGENT_EVENTS_<KEY>`) and arguments.
#[derive(Default)]
pub struct BrokerBuilder {
    env: Vec<(String, String)>,
    /// Set by [`BrokerBuilder::mongodb`]: `/health` must name this backend.
    on_mongodb: bool,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    /// The port to listen on; 0 (the default) for a free one.
    port: u16,
    /// Set by [`BrokerBuilder::redis`]: the cluster's Redis.
    redis_url: Option<String>,
    /// Set by [`BrokerBuilder::node_id`], to name it in failure messages.
    node_id: Option<String>,
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
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Listens on `port` (a restart on the port of an earlier run) instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Joins the cluster on the Redis at `url` (`REDIS_URL`, which the
    /// harness otherwise removes), under the default key prefix.
    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    /// Names the broker: its `node_id`, and its name in failure messages.
    pub fn node_id(mut self, name: &str) -> Self {
        self.node_id = Some(name.to_owned());
        self.setting("NODE_ID", name)
    }

    /// Spawns the broker and waits until it says it is listening.
    pub async fn start(mut self) -> Broker {
        let owns_data_dir = self.data_dir.is_none();
        let data_dir = self.data_dir.clone().unwrap_or_else(unique_dir);
        // A cluster node keeps a store of its own choosing: the cluster
        // suites say which nodes share a MongoDB database.
        if !self.on_mongodb
            && self.redis_url.is_none()
            && std::env::var_os("TEST_ALL_ON_MONGODB").is_some()
        {
            // Every broker of the run on MongoDB (to try other suites
            // there): one database per data directory, so that a restart
            // on the same directory finds its data.
            let dir_name = data_dir.file_name().unwrap_or_default().to_string_lossy();
            let database = MongoDb::named(&dir_name.replace(['-', '.'], "_"))
                .expect("TEST_ALL_ON_MONGODB needs MONGODB_URI");
            self = self.mongodb(&database);
        }
        std::fs::create_dir_all(&data_dir).expect("create the broker's data dir");
        let what = match &self.node_id {
            Some(name) => format!("broker {name}"),
            None => "the broker".to_owned(),
        };
        let (process, port) =
            Process::start(self.command(&data_dir), &what, &Log::default(), parse_port).await;
        assert!(
            self.port == 0 || self.port == port,
            "{what} listens on {port}, not on {}",
            self.port
        );
        let broker = Broker {
            process,
            what,
            port,
            data_dir,
            owns_data_dir,
            http: reqwest::Client::new(),
        };
        if self.on_mongodb {
            // A test on MongoDB that ran on SQLite would prove nothing.
            let (status, health) = broker.get_json("/health").await;
            assert_eq!(status, 200, "/health: {health}");
            assert_eq!(health["store"]["backend"], "mongodb", "{health}");
        }
        broker
    }

    /// The command that runs the broker binary as built.
    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(bin());
        command
            .args(&self.args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("WS_PORT", self.port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("DATA_DIR", data_dir)
            .env("RUST_LOG", "info")
            // Tests post as fast as the broker acknowledges, past the
            // default 100 events a second per execution: the per-execution
            // rate is off unless a test sets it (tests/execution_rate.rs).
            .env("AGENT_EVENTS_MAX_EVENTS_PER_SEC_PER_EXECUTION", "0")
            .env_remove("MONGODB_URI")
            .env_remove("TEST_BROKER_BIN");
        match &self.redis_url {
            Some(url) => command
                .env("REDIS_URL", url)
                .env_remove("AGENT_EVENTS_REDIS_KEY_PREFIX"),
            None => command.env_remove("REDIS_URL"),
        };
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }
}

/// The port of the line that says the broker listens.
fn parse_port(line: &str) -> Option<u16> {
    let rest = &line[line.find(READY)? + READY.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|port| *port != 0)
}

/// A running broker process; killed (SIGKILL) on drop unless it already ended.
pub struct Broker {
    process: Process,
    /// "the broker", or the node's name, for failure messages.
    what: String,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory, removed on drop when the harness made it.
    pub data_dir: PathBuf,
    owns_data_dir: bool,
    pub(super) http: reqwest::Client,
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

    /// The HTTP client it is reached with, for tasks that post to it on their own.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The last lines the broker wrote, for failure messages.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the broker.
    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
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
        self.process.wait_exit(limit).await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Killed first, so that it writes nothing into the directory removed below.
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} on port {} wrote:\n{}",
                self.what,
                self.port,
                self.output()
            );
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
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
