//! `kill -9` under load, with subscribers that resume: the broker is killed
//! while producers post and subscribers read, then started again on the
//! same data directory, several times. In the end, for every execution:
//! - the store holds a gapless 1..=N, and every event that got a 202 is in
//!   it under the seq its 202 gave (acknowledged means stored);
//! - every subscriber, resuming with `fromSeq` after each kill, got exactly
//!   1..=N once and in order, each seq with the event the store holds for it
//!   (seen means stored: a seq shown before a crash is never reused).

use crate::common::{self, Broker, Client, Frame, STEP};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const EXECUTIONS: [&str; 2] = ["stress-kill-a", "stress-kill-b"];
const SUBSCRIBERS_PER_EXECUTION: usize = 2;
/// Events acknowledged per life before the kill.
const PER_LIFE: u64 = 150;

/// What a subscriber has seen, across the broker's lives.
struct Seen {
    execution: &'static str,
    /// Seq → the event's marker, in the order received.
    events: Vec<(u64, String)>,
}

impl Seen {
    fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |(seq, _)| *seq)
    }

    /// Takes a delivered event; it must be the next seq.
    fn take(&mut self, event: &Value, life: usize) {
        let seq = event["seq"].as_u64().expect("seq");
        assert_eq!(
            seq,
            self.last_seq() + 1,
            "{} life {life}: after {} came {seq}",
            self.execution,
            self.last_seq()
        );
        self.events.push((seq, marker(event)));
    }
}

/// Who posted an event, and its number: what identifies it across lives.
fn marker(event: &Value) -> String {
    let m = &event["metadata"];
    format!("{}-{}", m["producer"], m["n"])
}

/// Runs `kills` lives of the broker, each ended by SIGKILL under load, then
/// a last one that checks everything.
pub async fn kill_under_load_with_resuming_subscribers(kills: usize) {
    let dir = common::unique_dir();
    std::fs::create_dir_all(&dir).expect("data dir");
    let mut seen: Vec<Seen> = EXECUTIONS
        .iter()
        .flat_map(|e| {
            (0..SUBSCRIBERS_PER_EXECUTION).map(|_| Seen {
                execution: e,
                events: Vec::new(),
            })
        })
        .collect();
    let mut acked: BTreeMap<(&'static str, u64), String> = BTreeMap::new();
    let mut next_n = 0;
    for life in 0..kills {
        let broker = Arc::new(start(&dir).await);
        let readers = resume_all(&broker, seen, life).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
        let progress_tx = Arc::new(progress_tx);
        let producers: Vec<_> = EXECUTIONS
            .iter()
            .enumerate()
            .map(|(p, execution)| {
                let first_n = next_n + p as u64 * 1_000_000;
                tokio::spawn(produce(
                    broker.url("/api/events"),
                    execution,
                    first_n,
                    stop.clone(),
                    progress_tx.clone(),
                ))
            })
            .collect();
        progress
            .wait_for(|n| *n >= PER_LIFE)
            .await
            .expect("producers run");
        // Killed with requests in flight and subscribers reading.
        broker.signal(libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for producer in producers {
            acked.extend(producer.await.expect("a producer panicked"));
        }
        next_n += 10_000;
        seen = Vec::new();
        for reader in readers {
            seen.push(reader.await.expect("a subscriber panicked"));
        }
        let mut broker = Arc::into_inner(broker).expect("no task holds the broker");
        broker.wait_exit(STEP).await;
    }
    check_last_life(&dir, seen, &acked, kills).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn start(dir: &Path) -> Broker {
    Broker::builder().data_dir(dir).start().await
}

/// Every subscriber reconnects and resumes from its last seq, reading until
/// the connection ends.
async fn resume_all(
    broker: &Broker,
    seen: Vec<Seen>,
    life: usize,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut readers = Vec::new();
    for mut subscriber in seen {
        let mut client = broker.connect().await;
        resume(&mut client, &subscriber).await;
        readers.push(tokio::spawn(async move {
            loop {
                match client.recv_within(STEP).await {
                    Some(Frame::Json(m)) if m["type"] == "event" => {
                        subscriber.take(&m["event"], life)
                    }
                    Some(Frame::Json(m)) => panic!("{}: unexpected {m}", subscriber.execution),
                    Some(Frame::Close(..) | Frame::Ended(_)) => return subscriber,
                    other => panic!("{}: unexpected {other:?}", subscriber.execution),
                }
            }
        }));
    }
    readers
}

async fn resume(client: &mut Client, subscriber: &Seen) {
    client
        .subscribe(json!({"executionId": subscriber.execution, "fromSeq": subscriber.last_seq()}))
        .await;
}

/// Posts batches of three thoughts until stopped; returns what got a 202.
/// A request the kill cut off has no answer: its events may or may not be
/// stored, and the checks allow both.
async fn produce(
    url: String,
    execution: &'static str,
    first_n: u64,
    stop: Arc<AtomicBool>,
    progress: Arc<tokio::sync::watch::Sender<u64>>,
) -> Vec<((&'static str, u64), String)> {
    let http = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut n = first_n;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<Value> = (n..n + 3)
            .map(|n| {
                let mut e = common::thinking(execution, n);
                e["metadata"] = json!({"producer": execution, "n": n});
                e
            })
            .collect();
        let answer = tokio::time::timeout(STEP, http.post(&url).json(&batch).send()).await;
        let Ok(Ok(response)) = answer else { break };
        if response.status().as_u16() != 202 {
            break;
        }
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        for (event, accepted) in batch.iter().zip(body["events"].as_array().expect("events")) {
            let seq = accepted["seq"].as_u64().expect("a seq");
            acked.push(((execution, seq), marker(event)));
        }
        progress.send_modify(|p| *p += 3);
        n += 3;
    }
    acked
}

/// The last life: nothing is posted; the store and every subscriber must agree.
async fn check_last_life(
    dir: &Path,
    seen: Vec<Seen>,
    acked: &BTreeMap<(&'static str, u64), String>,
    kills: usize,
) {
    let broker = start(dir).await;
    let mut stored = BTreeMap::new();
    for execution in EXECUTIONS {
        stored.insert(execution, stored_markers(&broker, execution).await);
    }
    for ((execution, seq), marker) in acked {
        assert_eq!(
            stored[execution].get(seq),
            Some(marker),
            "{execution}: seq {seq} got a 202 but the store lacks it"
        );
    }
    for mut subscriber in seen {
        let store = &stored[subscriber.execution];
        let last = store.keys().next_back().copied().unwrap_or(0);
        assert_eq!(
            store.keys().copied().collect::<Vec<_>>(),
            (1..=last).collect::<Vec<_>>(),
            "{}: the store has a hole",
            subscriber.execution
        );
        let mut client = broker.connect().await;
        resume(&mut client, &subscriber).await;
        while subscriber.last_seq() < last {
            let event = client.next_event_body().await;
            subscriber.take(&event, kills);
        }
        client.ping().await; // nothing beyond the store's last
        for (seq, marker) in &subscriber.events {
            assert_eq!(
                store.get(seq),
                Some(marker),
                "{}: seq {seq} was shown with another event than the store's",
                subscriber.execution
            );
        }
    }
}

/// The store's events of `execution`: seq → marker, every page.
async fn stored_markers(broker: &Broker, execution: &str) -> BTreeMap<u64, String> {
    let mut markers = BTreeMap::new();
    let mut after = 0;
    loop {
        let path = format!("/api/executions/{execution}/events?afterSeq={after}&limit=1000");
        let (status, page) = broker.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        for event in page["events"].as_array().expect("events") {
            markers.insert(event["seq"].as_u64().expect("seq"), marker(event));
        }
        match page["nextAfterSeq"].as_u64() {
            Some(next) => after = next,
            None => return markers,
        }
    }
}
