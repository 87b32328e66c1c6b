//! The child processes of a test (a broker, a `redis-server`): started with
//! their output drained into a [`Log`] until they say they are ready, and
//! SIGKILLed and reaped by their pid on drop, a panic included, so that no
//! test leaves one behind. One place for this, so that every process of a
//! suite is started, awaited and ended the same way.

use super::STARTUP;
use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Lines of a process's output kept to print when a test fails.
const LOG_LINES: usize = 400;

/// The last lines a process wrote (its earlier runs' too, when a restart
/// reuses the log), to print when a test fails.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<VecDeque<String>>>);

impl Log {
    /// The lines kept, oldest first.
    pub fn tail(&self) -> String {
        let log = self.0.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn push(&self, line: String) {
        let mut log = self.0.lock().unwrap();
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// A running child process; SIGKILLed and reaped on drop unless it already ended.
pub struct Process {
    child: Option<Child>,
    pid: u32,
    /// What it is, for failure messages ("the broker", "redis-server :PORT").
    what: String,
    log: Log,
}

impl Process {
    /// Spawns `command` with its stdout and stderr drained into `log` for
    /// its whole life (so that it never blocks on a full pipe), and waits,
    /// at most [`STARTUP`], for the first line for which `ready` gives a
    /// value, which it returns. Fails with the output if the process ends
    /// before or takes longer.
    pub async fn start<T: Send + 'static>(
        mut command: Command,
        what: &str,
        log: &Log,
        ready: impl Fn(&str) -> Option<T> + Send + Sync + 'static,
    ) -> (Process, T) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"));
        let pid = child.id().expect("a running child has a pid");
        // Whichever pipe shows the line first answers; when both have
        // closed (the process ended), the sender is dropped and the wait fails.
        let (ready_tx, ready_rx) = oneshot::channel();
        let ready_tx = Arc::new(Mutex::new(Some(ready_tx)));
        let ready = Arc::new(ready);
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(drain(
            stderr,
            "",
            log.clone(),
            ready.clone(),
            ready_tx.clone(),
        ));
        tokio::spawn(drain(stdout, "[stdout] ", log.clone(), ready, ready_tx));
        let mut process = Process {
            child: Some(child),
            pid,
            what: what.to_owned(),
            log: log.clone(),
        };
        let value = match tokio::time::timeout(STARTUP, ready_rx).await {
            Ok(Ok(value)) => value,
            Ok(Err(_)) => {
                let status = process.child.as_mut().unwrap().wait().await;
                panic!(
                    "{what} ended before it was ready ({status:?}); its output:\n{}",
                    log.tail()
                )
            }
            Err(_) => panic!(
                "{what} not ready within {STARTUP:?}; output so far:\n{}",
                log.tail()
            ),
        };
        (process, value)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines it wrote.
    pub fn output(&self) -> String {
        self.log.tail()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
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

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let what = &self.what;
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{what} was already reaped"));
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => {
                self.child = None;
                status.unwrap_or_else(|e| panic!("wait for {what}: {e}"))
            }
            Err(_) => panic!(
                "{what} did not exit within {limit:?}; its output:\n{}",
                self.output()
            ),
        }
    }

    /// SIGKILL, unless it already ended, and reap it (briefly), so that it
    /// neither holds its port nor writes into a directory removed next.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            for _ in 0..200 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads lines of a pipe into the log until it closes; answers `ready`'s
/// value on the first line that has one.
async fn drain<T>(
    pipe: impl AsyncRead + Unpin,
    prefix: &'static str,
    log: Log,
    ready: Arc<impl Fn(&str) -> Option<T>>,
    ready_tx: Arc<Mutex<Option<oneshot::Sender<T>>>>,
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
        if let Some(value) = ready(&line) {
            if let Some(tx) = ready_tx.lock().unwrap().take() {
                let _ = tx.send(value);
            }
        }
        log.push(format!("{prefix}{line}"));
    }
}
