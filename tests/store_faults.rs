//! Store faults, made for real: the test opens the broker's own SQLite file
//! and holds its write lock, so the broker's commits fail after
//! `sqlite_busy_timeout_ms` exactly as they would behind a backup tool or a
//! second process. While it is held, live delivery goes on, producers wait
//! for their 202, `/health` says `degraded`, and once `persist_backlog_max`
//! events wait, producers get 503 `store-unavailable` with nothing of their
//! request accepted. When the lock goes, the waiting producers get their
//! 202 and every acknowledged event is in the store.

mod common;

use common::{assert_delivered, seqs, thinking, Broker};
use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Events waiting for the store before producers are refused.
const BACKLOG_MAX: u64 = 20;

/// Longer than the harness's 10 s step: a POST waits for the store to come back.
const WAITING_POST: Duration = Duration::from_secs(30);

/// The broker's SQLite file, with its write lock held by this connection.
struct WriteLock(Connection);

impl WriteLock {
    fn take(broker: &Broker) -> WriteLock {
        let conn = Connection::open(broker.data_dir.join("events.db")).expect("open events.db");
        // BEGIN IMMEDIATE takes the database's write lock (in WAL mode, the
        // WAL write lock) now, without writing: readers go on, writers wait.
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("release the lock");
    }
}

/// Posts `body` from a task of its own, with a long timeout: (status, body).
fn post_waiting(broker: &Arc<Broker>, body: Value) -> JoinHandle<(u16, Value)> {
    let url = broker.url("/api/events");
    tokio::spawn(async move {
        let send = reqwest::Client::new().post(&url).json(&body).send();
        let response = tokio::time::timeout(WAITING_POST, send)
            .await
            .expect("a waiting POST was never answered")
            .expect("POST /api/events");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    })
}

async fn health(broker: &Broker) -> Value {
    let (status, health) = broker.get_json("/health").await;
    assert_eq!(status, 200, "{health}");
    health
}

/// `thinking` with a label in its metadata, to tell the events apart in the store.
fn labelled(n: u64, label: &str) -> Value {
    let mut e = thinking("exec-f", n);
    e["metadata"] = json!({"n": n, "label": label});
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_store_loses_nothing_acknowledged_and_refuses_when_the_backlog_is_full() {
    let broker = Arc::new(
        Broker::builder()
            .setting("SQLITE_BUSY_TIMEOUT_MS", 100)
            .setting("PERSIST_BACKLOG_MAX", BACKLOG_MAX)
            .start()
            .await,
    );
    // seq -> the event acknowledged under it.
    let mut acknowledged = BTreeMap::new();
    for n in 1..=3 {
        let e = labelled(n, "before");
        assert_eq!(broker.post_event(&e).await, n);
        acknowledged.insert(n, e);
    }
    assert_eq!(health(&broker).await["status"], "ok");
    let mut subscriber = broker.connect().await;
    subscriber.subscribe_execution("exec-f").await;

    let lock = WriteLock::take(&broker);

    // Ten producers post one event each: all are delivered live at once,
    // none is answered while the store cannot commit.
    // (the events of a request, its answer)
    let mut waiting = Vec::new();
    for n in 4..=13 {
        let e = labelled(n, "while-locked");
        waiting.push((vec![e.clone()], post_waiting(&broker, e)));
    }
    let live = subscriber.events(10).await;
    let mut live_seqs = seqs(&live);
    live_seqs.sort_unstable();
    assert_eq!(
        live_seqs,
        (4..=13).collect::<Vec<_>>(),
        "delivered live while the store fails"
    );

    // The lock really makes the writes fail: the Persister retries, /health says so.
    let stats = broker
        .wait_for_stats("storeRetries > 0", |s| s["storeRetries"].as_u64() > Some(0))
        .await;
    assert_eq!(
        stats["eventsStored"], 3,
        "nothing stored while locked: {stats}"
    );
    let degraded = health(&broker).await;
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert_eq!(degraded["store"]["state"], "failing", "{degraded}");
    assert!(
        degraded["store"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "degraded says why: {degraded}"
    );
    assert!(
        waiting.iter().all(|(_, post)| !post.is_finished()),
        "a 202 before the store committed"
    );

    // A batch that fills the backlog exactly is still accepted (and waits).
    let batch: Vec<Value> = (14..=23)
        .map(|n| labelled(n, "fills-the-backlog"))
        .collect();
    waiting.push((batch.clone(), post_waiting(&broker, Value::Array(batch))));
    assert_eq!(
        seqs(&subscriber.events(10).await),
        (14..=23).collect::<Vec<_>>()
    );
    broker
        .wait_for_stats("storeBacklog = 20", |s| s["storeBacklog"] == BACKLOG_MAX)
        .await;

    // Beyond it: 503 store-unavailable, and nothing of the request is accepted.
    let refused_single = labelled(0, "refused");
    let refused_batch = json!([labelled(0, "refused"), labelled(0, "refused")]);
    for body in [&refused_single, &refused_batch] {
        let (status, answer) = broker.post(body).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "store-unavailable", "{answer}");
    }
    subscriber.ping().await; // no refused event was delivered
    let stats = broker.stats().await;
    assert!(
        stats["eventsRejected"]["store-unavailable"].as_u64() >= Some(2),
        "two refused requests are counted: {stats}"
    );
    assert!(
        waiting.iter().all(|(_, post)| !post.is_finished()),
        "a 202 before the store committed"
    );
    assert_eq!(health(&broker).await["status"], "degraded");

    lock.release();

    // Every waiting producer gets its 202 with the seqs delivered live.
    for (events, post) in waiting {
        let (status, answer) = post.await.expect("a waiting POST failed");
        assert_eq!(status, 202, "{answer}");
        let given = answer["events"].as_array().unwrap();
        assert_eq!(given.len(), events.len(), "{answer}");
        for (a, e) in given.iter().zip(events) {
            let seq = a["seq"].as_u64().unwrap();
            assert!(
                acknowledged.insert(seq, e).is_none(),
                "seq {seq} given twice"
            );
        }
    }
    assert_eq!(
        acknowledged.keys().copied().collect::<Vec<_>>(),
        (1..=23).collect::<Vec<_>>(),
        "the seqs delivered live, each acknowledged once"
    );

    // The 202s came after the commit, so the store is healthy again by now.
    let healthy = health(&broker).await;
    assert_eq!(healthy["status"], "ok", "{healthy}");
    assert_eq!(healthy["store"]["backlog"], 0, "{healthy}");
    let stats = broker.stats().await;
    assert_eq!(stats["eventsStored"], 23, "{stats}");
    assert!(stats["storeRetries"].as_u64() > Some(0), "{stats}");

    // The store holds exactly what was acknowledged, each as posted.
    let (status, page) = broker.get_json("/api/executions/exec-f/events").await;
    assert_eq!(status, 200, "{page}");
    let stored = page["events"].as_array().unwrap();
    assert_eq!(seqs(stored), (1..=23).collect::<Vec<_>>());
    for (e, seq) in stored.iter().zip(1..) {
        assert_delivered(&acknowledged[&seq], e, seq);
    }

    // And the broker goes on as before.
    assert_eq!(broker.post_event(&labelled(24, "after")).await, 24);
    assert_eq!(subscriber.next_event_body().await["seq"], 24);
}
