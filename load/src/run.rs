//! One run against one target: subscribers connect and subscribe, producers
//! post, the run waits until every acknowledged event reached every one of
//! its subscribers (or a bound is hit), then it adds everything up.
//!
//! The run always stops by itself: producers stop at the event count (or
//! `--duration`), the drain stops when nothing has arrived for
//! the shape's `drain_stall`, and everything stops at the shape's timeout.

use crate::accounting::{AckBook, Correctness};
use crate::histogram::Histogram;
use crate::report::RunReport;
use crate::shape::Shape;
use crate::system::{cpu_time, now_ns, read_memory, Memory};
use crate::target::Target;
use crate::{producer, subscriber};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// After the last expected delivery, how long to keep listening for late
/// duplicates before closing.
const LINGER: Duration = Duration::from_millis(200);

/// How often the target's memory is sampled for its peak.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Counters that producers, subscribers and the progress line share.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Events in requests that failed or were refused.
    pub http_errors: AtomicU64,
    /// Deliveries owed for acknowledged events.
    pub expected: AtomicU64,
    /// Distinct deliveries seen (duplicates do not count).
    pub delivered: AtomicU64,
    pub last_ack_ns: AtomicU64,
    pub last_delivery_ns: AtomicU64,
    pub latency: Histogram,
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    pub rss: AtomicU64,
    pub peak_rss: AtomicU64,
}

/// Runs `shape` against `target`. `Err` when the run could not take place
/// (subscribers could not connect, too few file descriptors); a run that
/// took place but lost events is an `Ok` report that says so.
///
/// The phases, each a function below: subscribers connect and subscribe,
/// producers post, the drain waits for the owed deliveries, and the tally
/// adds up what every producer and subscriber saw.
pub async fn run(
    target: &mut Target,
    shape: &Shape,
    scenario: &str,
    load_placement: &str,
) -> Result<RunReport, String> {
    shape.check()?;
    let started = Instant::now();
    let deadline = started + shape.timeout;
    let progress = Arc::new(Progress::default());
    let prefix: Arc<str> = unique_prefix().into();
    let tag = format!("{scenario} {}", target.kind.name());
    let (stop_tx, stop_rx) = watch::channel(false);

    let sampler = target
        .pid
        .map(|pid| tokio::spawn(sample_memory(pid, progress.clone(), stop_rx.clone())));
    // Let a freshly started target finish starting before "before".
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = target.pid.and_then(read_memory);

    let run = Phases {
        target: &*target,
        shape,
        progress: progress.clone(),
        prefix,
        deadline,
        stop: stop_rx.clone(),
    };
    let subscribers = match run.connect_subscribers(&tag).await {
        Ok(subscribers) => subscribers,
        Err(handles) => return Err(run.setup_failed(handles, &stop_tx).await),
    };
    if let Some(settle) = shape.idle_settle {
        tokio::time::sleep(settle).await;
    }
    let with_connections = target.pid.and_then(read_memory);

    let start = Instant::now();
    let t0 = now_ns();
    let cpu_at_start = cpu_times(target);
    let ticker = tokio::spawn(show_progress(
        tag.clone(),
        shape.events,
        progress.clone(),
        stop_rx.clone(),
    ));
    let producer_reports = run.produce(start).await?;
    let mut target_exit = drain(target, shape, &progress, deadline).await;
    let timed_out = Instant::now() >= deadline;
    let active = start.elapsed();
    let cpu_at_end = cpu_times(target);
    tokio::time::sleep(LINGER).await;
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
    let mut subscriber_reports = Vec::new();
    for handle in subscribers {
        subscriber_reports.push(
            handle
                .await
                .map_err(|e| format!("a subscriber panicked: {e}"))?,
        );
    }
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let end = target.pid.and_then(read_memory);
    target_exit = target_exit.or_else(|| target.exited());

    let tally = Tally::of(shape.executions, &producer_reports, &subscriber_reports);
    let readings = Readings {
        started,
        t0,
        active,
        timed_out,
        target_exit,
        memory_before: before,
        memory_with_connections: with_connections,
        memory_end: end,
        cpu_at_start,
        cpu_at_end,
    };
    Ok(readings.report(target, shape, scenario, load_placement, &progress, tally))
}

/// What a run read of the target and of itself besides the tally: when it
/// started, how long it was active and how it ended, memory at three
/// moments and CPU over the active part.
struct Readings {
    started: Instant,
    /// `now_ns()` when the producers started: the origin of the report's times.
    t0: u64,
    active: Duration,
    timed_out: bool,
    target_exit: Option<String>,
    memory_before: Option<Memory>,
    memory_with_connections: Option<Memory>,
    memory_end: Option<Memory>,
    cpu_at_start: (Option<Duration>, Option<Duration>),
    cpu_at_end: (Option<Duration>, Option<Duration>),
}

impl Readings {
    /// The report of the run: the shape, the tally, the progress counters and these readings.
    fn report(
        self,
        target: &Target,
        shape: &Shape,
        scenario: &str,
        load_placement: &str,
        progress: &Progress,
        mut tally: Tally,
    ) -> RunReport {
        let Readings {
            started,
            t0,
            active,
            timed_out,
            target_exit,
            memory_before,
            memory_with_connections,
            memory_end,
            cpu_at_start,
            cpu_at_end,
        } = self;
        let since_t0 = |ns: u64| Duration::from_nanos(ns.saturating_sub(t0));
        RunReport {
            scenario: scenario.to_owned(),
            target: target.kind,
            shape: shape.clone(),
            target_placement: target.placement.clone(),
            target_settings: target.settings.clone(),
            load_placement: load_placement.to_owned(),
            planned: shape.events,
            sent: progress.sent.load(Ordering::Relaxed),
            acked: tally.book.total(),
            http_errors: progress.http_errors.load(Ordering::Relaxed),
            first_http_error: tally.http_errors.first().cloned(),
            ingest_time: since_t0(progress.last_ack_ns.load(Ordering::Relaxed)),
            expected_deliveries: progress.expected.load(Ordering::Relaxed),
            delivered: progress.delivered.load(Ordering::Relaxed),
            delivery_time: since_t0(progress.last_delivery_ns.load(Ordering::Relaxed)),
            latency: progress.latency.percentiles(),
            max_producer_lag: tally.max_lag,
            correctness: std::mem::take(&mut tally.correctness),
            ack_check: tally.ack_check,
            disconnects: tally.disconnects,
            first_disconnect: tally.first_disconnect,
            error_codes: tally.error_codes,
            unparsed: tally.unparsed,
            memory_before,
            memory_with_connections,
            peak_rss: Some(progress.peak_rss.load(Ordering::Relaxed)).filter(|&p| p > 0),
            memory_end,
            timed_out,
            target_exit,
            active,
            target_cpu: cpu_at_end
                .0
                .zip(cpu_at_start.0)
                .map(|(e, s)| e.saturating_sub(s)),
            load_cpu: cpu_at_end
                .1
                .zip(cpu_at_start.1)
                .map(|(e, s)| e.saturating_sub(s)),
            load_cores: crate::system::allowed_cpus().len(),
            elapsed: started.elapsed(),
        }
    }
}

/// What the phases of one run share.
struct Phases<'a> {
    target: &'a Target,
    shape: &'a Shape,
    progress: Arc<Progress>,
    prefix: Arc<str>,
    deadline: Instant,
    stop: watch::Receiver<bool>,
}

type Subscribers = Vec<tokio::task::JoinHandle<subscriber::Report>>;

impl Phases<'_> {
    /// Connects every subscriber and waits until all are subscribed, so that
    /// none misses the first event; `Err` with the handles when one failed
    /// or the deadline passed first.
    async fn connect_subscribers(&self, tag: &str) -> Result<Subscribers, Subscribers> {
        let connecting = Arc::new(Semaphore::new(self.shape.connect_concurrency));
        let nodes = &self.target.nodes;
        let subscribers: Vec<_> = (0..self.shape.subscribers)
            .map(|i| {
                let plan = subscriber::Plan {
                    addr: nodes[i % nodes.len()],
                    executions: self.shape.subscriptions(i),
                    prefix: self.prefix.clone(),
                };
                tokio::spawn(subscriber::run(
                    plan,
                    self.progress.clone(),
                    connecting.clone(),
                    self.stop.clone(),
                ))
            })
            .collect();
        let all = self.shape.subscribers as u64;
        let mut shown = Instant::now();
        loop {
            let ready = self.progress.ready.load(Ordering::Relaxed);
            let failed = self.progress.failed.load(Ordering::Relaxed);
            if ready == all {
                return Ok(subscribers);
            }
            if ready + failed == all || failed > 0 || Instant::now() >= self.deadline {
                return Err(subscribers);
            }
            if shown.elapsed() >= Duration::from_secs(1) {
                status_line(tag, &format!("connecting {ready}/{all}"));
                shown = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the subscribers of a run that could not start and says why.
    async fn setup_failed(&self, subscribers: Subscribers, stop: &watch::Sender<bool>) -> String {
        let _ = stop.send(true);
        let mut first_error = None;
        for handle in subscribers {
            // One still connecting may wait on a target that never answers:
            // abort it rather than wait.
            if !handle.is_finished() {
                handle.abort();
            } else if let Ok(report) = handle.await {
                first_error = first_error.or(report.setup_error);
            }
        }
        let ready = self.progress.ready.load(Ordering::Relaxed);
        format!(
            "only {ready} of {} subscribers connected and subscribed{}{}",
            self.shape.subscribers,
            if Instant::now() >= self.deadline {
                " before the timeout"
            } else {
                ""
            },
            first_error
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        )
    }

    /// Runs the producers to the end of their plan; their reports.
    async fn produce(&self, start: Instant) -> Result<Vec<producer::Report>, String> {
        let shape = self.shape;
        let subscriptions = (shape.subscribers * shape.per_connection()) as u64;
        let plan = Arc::new(producer::Plan {
            addr: self.target.addr,
            prefix: self.prefix.clone(),
            executions: shape.executions,
            batch: shape.batch,
            events: shape.events,
            rate: shape.rate,
            max_owed: (shape.window > 0 && subscriptions > 0).then(|| shape.window * subscriptions),
            subscribers_per_execution: Arc::new(shape.subscribers_per_execution()),
            payload: "x".repeat(shape.payload_bytes),
            start,
            stop_at: shape.duration.map(|d| start + d),
            deadline: self.deadline,
            next_batch: AtomicU64::new(0),
        });
        let producers: Vec<_> = (0..shape.producers)
            .map(|_| tokio::spawn(producer::run(plan.clone(), self.progress.clone())))
            .collect();
        let mut reports = Vec::new();
        for handle in producers {
            reports.push(
                handle
                    .await
                    .map_err(|e| format!("a producer panicked: {e}"))?,
            );
        }
        Ok(reports)
    }
}

/// Waits until every owed delivery arrived, nothing arrives any more for
/// the shape's `drain_stall`, the deadline passes, or the target dies (its
/// exit status, then).
async fn drain(
    target: &mut Target,
    shape: &Shape,
    progress: &Progress,
    deadline: Instant,
) -> Option<String> {
    let mut last_delivered = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let delivered = progress.delivered.load(Ordering::Relaxed);
        if delivered >= progress.expected.load(Ordering::Relaxed) {
            return None;
        }
        if delivered != last_delivered {
            last_delivered = delivered;
            last_change = Instant::now();
        }
        if last_change.elapsed() >= shape.drain_stall || Instant::now() >= deadline {
            return None;
        }
        if let Some(status) = target.exited() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What every producer and subscriber saw, added up.
struct Tally {
    book: AckBook,
    ack_check: crate::accounting::AckCheck,
    http_errors: Vec<String>,
    max_lag: Duration,
    correctness: Correctness,
    disconnects: u64,
    first_disconnect: Option<String>,
    error_codes: BTreeMap<String, u64>,
    unparsed: u64,
}

impl Tally {
    fn of(
        executions: usize,
        producers: &[producer::Report],
        subscribers: &[subscriber::Report],
    ) -> Tally {
        let mut book = AckBook::new(executions);
        let mut http_errors = Vec::new();
        let mut max_lag = Duration::ZERO;
        for report in producers {
            for &(execution, seq) in &report.acks {
                book.add(execution, seq);
            }
            http_errors.extend(report.errors.iter().cloned());
            max_lag = max_lag.max(report.max_lag);
        }
        let ack_check = book.settle();
        let mut tally = Tally {
            book,
            ack_check,
            http_errors,
            max_lag,
            correctness: Correctness::default(),
            disconnects: 0,
            first_disconnect: None,
            error_codes: BTreeMap::new(),
            unparsed: 0,
        };
        for report in subscribers {
            tally
                .correctness
                .add_subscriber(&tally.book, report.trackers.iter().map(|(e, t)| (*e, t)));
            if let Some(why) = &report.ended {
                tally.disconnects += 1;
                tally.first_disconnect.get_or_insert_with(|| why.clone());
            }
            for (code, n) in &report.errors {
                *tally.error_codes.entry(code.clone()).or_default() += n;
            }
            tally.unparsed += report.unparsed;
        }
        tally
    }
}

/// CPU used so far by the target and by this tool.
fn cpu_times(target: &Target) -> (Option<Duration>, Option<Duration>) {
    (target.pid.and_then(cpu_time), cpu_time(std::process::id()))
}

/// Execution ids unique to this run, so a run against a long-lived target
/// (`--url`) starts every execution at seq 1.
fn unique_prefix() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("load-{wall:x}-{}-{n}-", std::process::id())
}

async fn sample_memory(pid: u32, progress: Arc<Progress>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Some(Memory { rss, .. }) = read_memory(pid) {
            progress.rss.store(rss, Ordering::Relaxed);
            progress.peak_rss.fetch_max(rss, Ordering::Relaxed);
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// The progress line: rewritten in place on a terminal, a line every few
/// seconds in a log.
async fn show_progress(
    tag: String,
    planned: u64,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if tty { 1 } else { 5 });
    let start = Instant::now();
    let mut last = (start, 0u64);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = Instant::now();
        let delivered = progress.delivered.load(Ordering::Relaxed);
        let rate = (delivered - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, delivered);
        let rss = progress.rss.load(Ordering::Relaxed);
        let line = format!(
            "{:.0}s  acked {}/{planned}  delivered {delivered}/{} ({:.0}/s)  errors {}{}",
            (now - start).as_secs_f64(),
            progress.acked.load(Ordering::Relaxed),
            progress.expected.load(Ordering::Relaxed),
            rate,
            progress.http_errors.load(Ordering::Relaxed),
            if rss > 0 {
                format!("  rss {:.1} MiB", rss as f64 / 1048576.0)
            } else {
                String::new()
            }
        );
        status_line(&tag, &line);
    }
}

fn status_line(tag: &str, line: &str) {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K[{tag}] {line}");
    } else {
        eprintln!("[{tag}] {line}");
    }
}
