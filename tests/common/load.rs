//! Load for the replay seam: producers posting to one execution without
//! pause, and the seam run that subscribes readers at chosen distances
//! behind the head while they post. Shared by the suites that test the
//! seam (replay, SSE, persistence, stress), so each asks the same question
//! the same way.

use super::{thinking, Broker, Client};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
