//! `kill -9` under load, with subscribers that resume and producers that
//! retry: the broker is killed while producers post and subscribers read,
//! then started again on the same data directory, several times. A producer
//! whose request the kill cut off posts the same batch again, under the
//! same `Idempotency-Key`, once the broker is back. In the end, for every
//! execution:
//! - the store holds a gapless 1..=N, and every event that got a 202 is in
//!   it under the seq its 202 gave (acknowledged means stored);
//! - every event posted is in it exactly once, however often its batch was
//!   retried, and a retry of a stored batch got the seqs it was first given;
//! - every subscriber, resuming with `fromSeq` after each kill, got exactly
//!   1..=N once and in order, each seq with the event the store holds for it
//!   (seen means stored: a seq shown before a crash is never reused).

use crate::common::{self, Broker, Client, Frame, STEP};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
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

/// One producer's place across the broker's lives.
struct Producer {
    execution: &'static str,
    /// The number of its next event.
    next_n: u64,
    /// A batch whose request got no answer (the kill), to post again.
    unanswered: Option<Vec<Value>>,
    /// Seq and marker of every event that got a 202.
    acked: Vec<(u64, String)>,
}

impl Producer {
    fn new(index: usize, execution: &'static str) -> Producer {
        Producer {
            execution,
            next_n: index as u64 * 1_000_000,
            unanswered: None,
            acked: Vec::new(),
        }
    }

    /// Its next batch of three thoughts: the unanswered one first.
    fn batch(&mut self) -> Vec<Value> {
        if let Some(batch) = self.unanswered.take() {
            return batch;
        }
        let batch = (self.next_n..self.next_n + 3)
            .map(|n| {
                let mut e = common::thinking(self.execution, n);
                e["metadata"] = json!({"producer": self.execution, "n": n});
                e
            })
            .collect();
        self.next_n += 3;
        batch
    }

    /// Posts `batch` under its key; whether it got an answer (a 202).
    async fn post(&mut self, http: &reqwest::Client, url: &str, batch: Vec<Value>) -> bool {
        let key = format!("stress-{}", marker(&batch[0]));
        let request = http.post(url).header("idempotency-key", key).json(&batch);
        let answer = match tokio::time::timeout(STEP, request.send()).await {
            Ok(Ok(response)) if response.status().as_u16() == 202 => response.json::<Value>().await,
            _ => {
                self.unanswered = Some(batch);
                return false;
            }
        };
        let Ok(body) = answer else {
            self.unanswered = Some(batch);
            return false;
        };
        for (event, accepted) in batch.iter().zip(body["events"].as_array().expect("events")) {
            let seq = accepted["seq"].as_u64().expect("a seq");
            self.acked.push((seq, marker(event)));
        }
        true
    }
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
    let mut producers: Vec<Producer> = EXECUTIONS
        .iter()
        .enumerate()
        .map(|(i, e)| Producer::new(i, e))
        .collect();
    for life in 0..kills {
        let broker = Arc::new(start(&dir).await);
        let readers = resume_all(&broker, seen, life).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
        let progress_tx = Arc::new(progress_tx);
        let running: Vec<_> = producers
            .into_iter()
            .map(|producer| {
                tokio::spawn(produce(
                    broker.url("/api/events"),
                    producer,
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
        producers = Vec::new();
        for producer in running {
            producers.push(producer.await.expect("a producer panicked"));
        }
        seen = Vec::new();
        for reader in readers {
            seen.push(reader.await.expect("a subscriber panicked"));
        }
        let mut broker = Arc::into_inner(broker).expect("no task holds the broker");
        broker.wait_exit(STEP).await;
    }
    check_last_life(&dir, seen, producers, kills).await;
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

/// Posts batches of three thoughts until stopped or cut off; a batch the
/// kill cut off waits in the producer for the next life.
async fn produce(
    url: String,
    mut producer: Producer,
    stop: Arc<AtomicBool>,
    progress: Arc<tokio::sync::watch::Sender<u64>>,
) -> Producer {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let batch = producer.batch();
        if !producer.post(&http, &url, batch).await {
            break;
        }
        progress.send_modify(|p| *p += 3);
    }
    producer
}

/// The last life: the batches still unanswered are posted again, then the
/// store and every subscriber must agree.
async fn check_last_life(dir: &Path, seen: Vec<Seen>, producers: Vec<Producer>, kills: usize) {
    let broker = start(dir).await;
    let http = reqwest::Client::new();
    let mut acked = BTreeMap::new();
    for mut producer in producers {
        if let Some(batch) = producer.unanswered.take() {
            assert!(
                producer
                    .post(&http, &broker.url("/api/events"), batch)
                    .await
            );
        }
        for (seq, marker) in producer.acked {
            let earlier = acked.insert((producer.execution, seq), marker.clone());
            assert!(
                earlier.is_none_or(|earlier| earlier == marker),
                "{}: seq {seq} was given to two events",
                producer.execution
            );
        }
    }
    let mut stored = BTreeMap::new();
    for execution in EXECUTIONS {
        let markers = stored_markers(&broker, execution).await;
        let distinct: BTreeSet<&String> = markers.values().collect();
        assert_eq!(
            distinct.len(),
            markers.len(),
            "{execution}: an event is stored twice (a retry was not recognised)"
        );
        stored.insert(execution, markers);
    }
    for ((execution, seq), marker) in &acked {
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
