//! The server under load: the broker or the baseline, started here as a
//! child process on loopback with an ephemeral port and a fresh data
//! directory, or an already running one named by `--url`.
//!
//! Loopback only, always: this tool opens thousands of connections and
//! posts as fast as it can, which is a denial of service to anything that
//! is not the user's own test server.

use crate::baseline::Fault;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How long a target may take to say it is listening.
const STARTUP: Duration = Duration::from_secs(30);

/// How long a target may take to stop after SIGTERM before it is killed.
const STOP: Duration = Duration::from_secs(10);

/// Lines of the target's output kept to explain a failure.
const LOG_LINES: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Broker,
    Baseline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Broker => "broker",
            Kind::Baseline => "baseline",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "broker" => Ok(Kind::Broker),
            "baseline" => Ok(Kind::Baseline),
            other => Err(format!("unknown target `{other}` (broker, baseline)")),
        }
    }
}

/// How to start a child target.
pub struct StartOptions {
    pub broker_bin: Option<PathBuf>,
    /// Extra environment for the broker (`AGENT_EVENTS_*` settings).
    pub env: Vec<(String, String)>,
    /// The CPU to pin the target to with `taskset`, if pinning.
    pub cpu: Option<usize>,
    pub baseline_fault: Option<Fault>,
}

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Every node subscribers connect to, `addr` first (more than one only
    /// for a cluster named with `--also-url`).
    pub nodes: Vec<SocketAddr>,
    /// The process to read memory from: the child, or `--pid`.
    pub pid: Option<u32>,
    /// Where the target runs, in words, for the report.
    pub placement: String,
    /// Settings given to a broker child beyond the defaults.
    pub settings: Vec<(String, String)>,
    child: Option<Child>,
    data_dir: Option<PathBuf>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Target {
    /// A target someone else runs.
    pub fn external(kind: Kind, addr: SocketAddr, pid: Option<u32>) -> Target {
        Target {
            kind,
            addr,
            nodes: vec![addr],
            pid,
            placement: "external (--url); not started or pinned by this tool".into(),
            settings: Vec::new(),
            child: None,
            data_dir: None,
            log: Arc::default(),
        }
    }

    /// The same target with more nodes of its cluster for the subscribers.
    pub fn with_nodes(mut self, more: &[SocketAddr]) -> Target {
        self.nodes.extend_from_slice(more);
        if more.is_empty() {
            return self;
        }
        self.placement = format!(
            "external cluster of {} nodes (--url, --also-url); subscribers spread over them, \
             producers post to the first",
            self.nodes.len()
        );
        self
    }

    /// Starts the target and waits until it says it is listening.
    pub async fn start(kind: Kind, opts: &StartOptions) -> Result<Target, String> {
        let (program, mut args, data_dir) = match kind {
            Kind::Broker => {
                let bin = broker_bin(opts.broker_bin.as_deref())?;
                let dir = fresh_dir()?;
                (bin, Vec::new(), Some(dir))
            }
            Kind::Baseline => {
                let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut args = vec!["baseline-server".to_owned(), "--port".into(), "0".into()];
                if let Some(fault) = opts.baseline_fault {
                    args.push("--fault".into());
                    args.push(fault_arg(fault));
                }
                (me, args, None)
            }
        };
        let (mut command, placement) = match (opts.cpu, find_on_path("taskset")) {
            (Some(cpu), Some(taskset)) => {
                let mut c = Command::new(taskset);
                c.arg("-c").arg(cpu.to_string()).arg(&program);
                (c, format!("pinned to cpu {cpu} (taskset)"))
            }
            (Some(_), None) => (
                Command::new(&program),
                "NOT pinned: taskset (util-linux) not found; install it for steadier figures"
                    .into(),
            ),
            (None, _) => (Command::new(&program), "not pinned".into()),
        };
        command
            .args(args.drain(..))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if kind == Kind::Broker {
            command
                .env("WS_PORT", "0")
                .env("BIND_ADDR", "127.0.0.1")
                .env("DATA_DIR", data_dir.as_ref().expect("broker has a dir"))
                .env("RUST_LOG", "info")
                .env_remove("REDIS_URL")
                .env_remove("MONGODB_URI");
            for (key, value) in &opts.env {
                command.env(key, value);
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id();
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(drain(
            child.stderr.take().unwrap(),
            log.clone(),
            Some(ready_tx),
        ));
        tokio::spawn(drain(child.stdout.take().unwrap(), log.clone(), None));
        let mut target = Target {
            kind,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            nodes: Vec::new(),
            pid,
            placement,
            settings: match kind {
                Kind::Broker => opts.env.clone(),
                Kind::Baseline => Vec::new(),
            },
            child: Some(child),
            data_dir,
            log,
        };
        match tokio::time::timeout(STARTUP, ready_rx).await {
            Ok(Ok(port)) => {
                target.addr.set_port(port);
                target.nodes = vec![target.addr];
                Ok(target)
            }
            Ok(Err(_)) => {
                let status = target.child.as_mut().unwrap().wait().await;
                let tail = target.log_tail();
                target.stop().await;
                Err(format!(
                    "{} ended before listening ({status:?}); its output:\n{tail}",
                    kind.name()
                ))
            }
            Err(_) => {
                let tail = target.log_tail();
                target.stop().await;
                Err(format!(
                    "{} did not say `listening on` within {STARTUP:?}; its output:\n{tail}",
                    kind.name()
                ))
            }
        }
    }

    /// `Some(status)` if the child has ended (it should not, mid-run).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM (the broker shuts down gracefully), then SIGKILL if it takes
    /// too long; removes the data directory.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on our own child's pid.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(STOP, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A target dropped without `stop` (the run was interrupted): the child is
/// killed by `kill_on_drop`; its data directory goes too.
impl Drop for Target {
    fn drop(&mut self) {
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn fault_arg(fault: Fault) -> String {
    use crate::baseline::FaultKind::*;
    let kind = match fault.kind {
        Drop => "drop",
        Duplicate => "dup",
        Reorder => "reorder",
    };
    format!("{kind}:{}", fault.every)
}

/// The broker binary: `--broker-bin`, else `AGENT_EVENTS_BIN`, else
/// `agent-events` beside this binary (both land in target/release).
fn broker_bin(given: Option<&Path>) -> Result<PathBuf, String> {
    let path = match (given, std::env::var_os("AGENT_EVENTS_BIN")) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) => PathBuf::from(path),
        (None, None) => std::env::current_exe()
            .map_err(|e| format!("current_exe: {e}"))?
            .with_file_name("agent-events"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no broker binary at {}: run `cargo build --release` (or pass --broker-bin)",
            path.display()
        ))
    }
}

fn fresh_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("agent-events-load-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Keeps the last lines of a pipe, and reports the port from the first
/// `listening on http://ADDR:PORT` line.
async fn drain(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<VecDeque<String>>>,
    mut ready: Option<tokio::sync::oneshot::Sender<u16>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(port) = ready.as_ref().and(listening_port(&line)) {
            let _ = ready.take().unwrap().send(port);
        }
        let mut log = log.lock().unwrap();
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// The port of a `… listening on http://127.0.0.1:PORT` line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let addr = rest.split_whitespace().next()?;
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// `http://HOST:PORT` or `ws://HOST:PORT` (a path is ignored) to a socket
/// address, refusing anything that is not loopback.
pub fn parse_loopback_url(url: &str) -> Result<SocketAddr, String> {
    let rest = ["http://", "ws://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| format!("`{url}`: only http:// or ws:// URLs (no TLS on loopback)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    // `[v6]:port`, `host:port`, or either without a port.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: bad host"))?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("`{url}`: bad port"))?,
        None => 80,
    };
    let ip: IpAddr = match host {
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        h => h
            .parse()
            .map_err(|_| format!("`{url}`: the host must be an IP literal or localhost"))?,
    };
    if !ip.is_loopback() {
        return Err(format!(
            "`{url}`: refusing a non-loopback target; this tool only loads servers on this machine"
        ));
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let ok = |u: &str| parse_loopback_url(u).unwrap().to_string();
        assert_eq!(ok("http://127.0.0.1:3001"), "127.0.0.1:3001");
        assert_eq!(ok("ws://localhost:3001/ws"), "127.0.0.1:3001");
        assert_eq!(ok("http://127.0.0.2:9/"), "127.0.0.2:9");
        assert_eq!(ok("ws://[::1]:3001"), "[::1]:3001");
        assert_eq!(ok("http://localhost"), "127.0.0.1:80");
    }

    #[test]
    fn other_urls_are_refused() {
        for url in [
            "http://10.0.0.5:3001",
            "ws://example.com:3001",
            "http://0.0.0.0:3001",
            "https://127.0.0.1:3001",
            "127.0.0.1:3001",
            "http://[2001:db8::1]:3001",
            "http://127.0.0.1:http",
        ] {
            assert!(parse_loopback_url(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn the_listening_line_of_either_target() {
        assert_eq!(
            listening_port("[2025-01-01T00:00:00Z INFO  agent_events::server] agent-events listening on http://127.0.0.1:41234"),
            Some(41234)
        );
        assert_eq!(
            listening_port("agent-events-load baseline listening on http://127.0.0.1:5 x"),
            Some(5)
        );
        assert_eq!(listening_port("listening soon"), None);
    }
}
