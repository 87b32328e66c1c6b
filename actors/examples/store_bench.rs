//! The SQLite store's writer alone: what one event costs it to store,
//! without HTTP, the Emitter or the load tool around it.
//!
//! ```sh
//! cargo run --release -p agent-events-actors --example store_bench
//! valgrind --tool=callgrind target/release/examples/store_bench 50000
//! ```
//!
//! Why beside the load tool: the broker's ingest rate on this shared machine
//! moves by a third from one run to the next, and so does its CPU per event,
//! so a change to the writer worth a tenth is lost in the noise. This appends
//! the same events in the same commits every time (those of the load tool's
//! ingest scenario: 100 executions, commits of 400 events), so under
//! `callgrind` its instruction count is the same from run to run, and two
//! builds compare exactly. Callgrind counts no time in the kernel; the wall
//! and CPU time printed beside it do, noisily.
//!
//! Arguments: the number of events (200,000 by default) and of executions
//! (100 by default; the scaling scenario's steps have 1,000 and 10,000);
//! `BENCH_DIR` names the directory for the file (a temporary one under
//! `target/` otherwise).

use agent_events_actors::event::AgentEvent;
use agent_events_actors::protocol::PublishedEvent;
use agent_events_actors::store::sqlite::SqliteStore;
use agent_events_actors::store::Store;
use chrono::{TimeDelta, Utc};
use std::sync::Arc;
use std::time::Instant;

/// The ingest scenario's executions (`load/src/scenario.rs`).
const EXECUTIONS: u64 = 100;
/// Events per commit: what group commit gathers from 8 producers' batches of 100.
const EVENTS_PER_COMMIT: u64 = 400;

fn main() {
    let number = |n: usize, default: u64| {
        std::env::args()
            .nth(n)
            .map_or(default, |n| n.parse().expect("a number"))
    };
    let events = number(1, 200_000);
    let executions = number(2, EXECUTIONS);
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => {
            let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
            tempfile::tempdir_in(target)
        }
    }
    .expect("a directory for the file");
    let store = SqliteStore::open(&dir.path().join("events.db")).expect("the store opens");
    let commits = build_commits(events, executions);
    // The broker's replay buffer holds the events while they are stored, so
    // the writer's drop is a count, not a free.
    let buffered = commits.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    runtime.block_on(async {
        for commit in commits {
            store.append(commit).await.expect("the append commits");
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    drop(buffered);
    println!(
        "{{\"events\":{events},\"executions\":{executions},\"seconds\":{seconds:.3},\"eventsPerSec\":{:.0},\
         \"cpuMicrosPerEvent\":{:.2}}}",
        events as f64 / seconds,
        cpu * 1e6 / events as f64
    );
}

/// The events, sequenced and stamped as the Emitter would, in commits of
/// [`EVENTS_PER_COMMIT`] with the executions interleaved as producers send them.
fn build_commits(events: u64, executions: u64) -> Vec<Vec<Arc<PublishedEvent>>> {
    let start = Utc::now();
    let run = format!("bench-{}", start.timestamp_millis());
    let published: Vec<Arc<PublishedEvent>> = (0..events)
        .map(|n| {
            let execution = n % executions;
            let text = format!(
                r#"{{"type":"agent-thinking","executionId":"{run}-{execution}",
                    "agentId":"load-agent","thought":"{}","metadata":{{"i":{n}}}}}"#,
                "x".repeat(64)
            );
            let mut event = AgentEvent::from_producer_text(&text).expect("a valid event");
            event.seq = Some(n / executions + 1);
            event.timestamp = Some(start + TimeDelta::milliseconds(n as i64 / 100));
            PublishedEvent::new(event)
        })
        .collect();
    published
        .chunks(EVENTS_PER_COMMIT as usize)
        .map(<[_]>::to_vec)
        .collect()
}

/// User and system time of this process so far (all threads: the writer's
/// is nearly all of it).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("a comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
