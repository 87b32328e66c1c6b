//! agent-events-load: a load tool for the agent-events broker, and the
//! baseline server it is compared with.
//!
//! `run` starts the broker and the baseline in turn (or uses a running
//! server on loopback), loads each with WebSocket subscribers and HTTP
//! producers, checks that every acknowledged event reached every subscriber
//! once and in seq order, and reports throughput, latency and memory.
//!
//! The map:
//! - [`cli`]: the command line.
//! - [`scenario`]: the presets and the broker-then-baseline sequence.
//! - [`shape`]: what one run does (subscribers, executions, pace, bounds).
//! - [`mod@run`]: one run against one target, from connecting to adding up.
//! - [`subscriber`], [`producer`]: the two kinds of load.
//! - [`accounting`]: lost, duplicated and reordered events by seq.
//! - [`histogram`]: latency percentiles.
//! - [`report`], [`table`]: JSON lines, summaries, comparisons, Markdown.
//! - [`target`]: starting, watching and stopping the server under load.
//! - [`baseline`]: the minimal fan-out server; [`http1`] its (and the
//!   producers') HTTP.
//! - [`system`]: clock, CPU pinning, open-files limit, process memory.

mod accounting;
mod baseline;
mod cli;
mod histogram;
mod http1;
mod producer;
mod report;
mod run;
mod scenario;
mod shape;
mod subscriber;
mod system;
mod table;
mod target;

use cli::Command;
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(problem) => {
            eprintln!("agent-events-load: {problem}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Baseline { port, fault } => {
            // Standalone, the baseline may be asked for many connections too.
            let _ = system::raise_nofile(system::hard_nofile_limit());
            let result = runtime().block_on(baseline::serve(port, fault));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("baseline: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Table(files) => {
            let mut text = String::new();
            for file in files {
                match std::fs::read_to_string(&file) {
                    Ok(t) => text.push_str(&t),
                    Err(e) => {
                        eprintln!("agent-events-load: {}: {e}", file.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            print!("{}", table::markdown(&text));
            ExitCode::SUCCESS
        }
        Command::Run(args) => run(*args),
    }
}

fn run(args: cli::RunArgs) -> ExitCode {
    // Pin before the runtime exists, so its threads inherit the affinity.
    let (target_cpu, load_placement) = placement(args.pin);
    let options = scenario::Options {
        scenario: args.scenario,
        targets: args.targets,
        url: args.url,
        also: args.also,
        pid: args.pid,
        start: target::StartOptions {
            broker_bin: args.broker_bin,
            env: args.target_env,
            cpu: target_cpu,
            baseline_fault: args.baseline_fault,
        },
        overrides: args.overrides,
        load_placement,
    };
    // On Ctrl-C the run's futures are dropped, which kills the target
    // children (`kill_on_drop`) and removes their data directories, instead
    // of leaving a broker running on a pinned core.
    let interruptible = async {
        tokio::select! {
            result = scenario::execute(options) => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    };
    match runtime().block_on(interruptible) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(problem) => {
            eprintln!("agent-events-load: {problem}");
            ExitCode::from(2)
        }
    }
}

/// The target gets the first allowed CPU and this tool the second, so the
/// two do not steal each other's time slices and the figures are the
/// target's own. With one CPU (or `--no-pin`) nothing is pinned.
fn placement(pin: bool) -> (Option<usize>, String) {
    if !pin {
        return (None, "not pinned (--no-pin)".into());
    }
    let cpus = system::allowed_cpus();
    if cpus.len() < 2 {
        return (None, format!("not pinned: {} CPU available", cpus.len()));
    }
    let (target, load) = (cpus[0], cpus[1]);
    match system::pin_to(load) {
        Ok(()) => (Some(target), format!("pinned to cpu {load}")),
        Err(e) => (Some(target), format!("not pinned: sched_setaffinity: {e}")),
    }
}

/// A multi-threaded runtime: its worker count follows the CPUs this process
/// may use, so one when pinned.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
