//! Persistence of the real binary, over real sockets: `seq` continues after
//! a restart; a replay older than the in-memory buffer is served from the
//! store without a hole or a repeat while producers post at the seam; the
//! history, stats and executions APIs answer from the store with every
//! filter and cursor; every event that got a 202 survives `kill -9`; a
//! graceful stop stores everything it accepted; retention removes whole
//! executions from every HTTP API.
//!
//! Tests that restart a broker on the same `DATA_DIR` keep it in a
//! [`DataDir`] of the harness, which outlives the brokers started on it.

mod common;

use common::{
    assert_delivered, event, run_seam, same_instant, seqs, thinking, Broker, Client, DataDir,
    MongoDb, SeamReader, SeamRun, STARTUP, STEP,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Starts a broker on `dir` with `AGENT_EVENTS_<key>` settings.
async fn start(dir: &DataDir, settings: &[(&str, &str)]) -> Broker {
    start_on(None, dir, settings).await
}

/// As [`start`], storing in `mongodb` when given.
async fn start_on(mongodb: Option<&MongoDb>, dir: &DataDir, settings: &[(&str, &str)]) -> Broker {
    let mut builder = Broker::builder().store(mongodb).data_dir(dir.path());
    for (key, value) in settings {
        builder = builder.setting(key, value);
    }
    builder.start().await
}

/// The `(executionId, seq)` pairs of a 202 body.
fn accepted(answer: &Value) -> Vec<(String, u64)> {
    answer["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {answer}"))
        .iter()
        .map(|a| {
            (
                a["executionId"].as_str().unwrap().to_owned(),
                a["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Subscribes with `fromSeq`; must be answered `subscribed`; returns `replayed`.
async fn subscribe_from(client: &mut Client, execution: &str, from_seq: u64) -> u64 {
    let answer = client
        .subscribe(json!({"executionId": execution, "fromSeq": from_seq}))
        .await;
    answer["replayed"].as_u64().expect("a replayed count")
}

// ------------------------------------------------- history through HTTP

/// Reads the HTTP API of a broker.
trait Api {
    async fn get(&self, path: &str) -> (u16, Value);
}

impl Api for Broker {
    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_json(path).await
    }
}

/// One page of `GET /api/executions/{id}/events?{query}`: its events and `nextAfterSeq`.
async fn events_page(api: &impl Api, execution: &str, query: &str) -> (Vec<Value>, Option<u64>) {
    let path = format!("/api/executions/{execution}/events?{query}");
    let (status, page) = api.get(&path).await;
    assert_eq!(status, 200, "GET {path}: {page}");
    assert_eq!(page["executionId"], execution, "{page}");
    let events = page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path}: no events array: {page}"))
        .clone();
    let next = &page["nextAfterSeq"];
    assert!(
        next.is_null() || next.is_u64(),
        "nextAfterSeq is a seq or null: {page}"
    );
    (events, next.as_u64())
}

/// Every stored event of `execution` matching `filter` (a query string
/// without `afterSeq`), read page by page through `nextAfterSeq`.
async fn all_events(api: &impl Api, execution: &str, filter: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    for _ in 0..10_000 {
        let query = format!("{filter}&afterSeq={after}");
        let (page, next) = events_page(api, execution, &query).await;
        events.extend(page);
        match next {
            Some(next) => {
                assert!(
                    next > after,
                    "nextAfterSeq {next} does not move past {after}"
                );
                after = next;
            }
            None => return events,
        }
    }
    panic!("paging through {execution} never ended");
}

/// `2025-10-01T12:00:00.000Z` plus `ms` milliseconds.
fn at(ms: u64) -> String {
    let (s, ms) = (ms / 1000, ms % 1000);
    format!("2025-10-01T12:{:02}:{:02}.{ms:03}Z", s / 60 % 60, s % 60)
}

/// `event(kind, execution, fields)` stamped with [`at`]`(ms)`.
fn timed(kind: &str, execution: &str, ms: u64, fields: Value) -> Value {
    let mut e = event(kind, execution, fields);
    e["timestamp"] = at(ms).into();
    e
}

// ------------------------------------------------- restarts

/// The counter of an execution comes back from the store: after a graceful
/// restart, single events and batches continue at the next seq, a new
/// execution starts at 1, the history holds both runs without a seq twice,
/// and a replay reaching before the restart is served from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_continues_where_it_stopped_after_a_restart() {
    seq_continues_after_a_restart(None).await;
}

async fn seq_continues_after_a_restart(mongodb: Option<&MongoDb>) {
    let dir = DataDir::new();
    let mut first = start_on(mongodb, &dir, &[]).await;
    for n in 1..=5 {
        assert_eq!(first.post_event(&thinking("exec-a", n)).await, n);
    }
    let both = json!([thinking("exec-b", 1), thinking("exec-b", 2)]);
    assert_eq!(
        accepted(&first.post_ok(&both).await),
        vec![("exec-b".into(), 1), ("exec-b".into(), 2)]
    );
    first.stop_gracefully().await;

    let second = start_on(mongodb, &dir, &[]).await;
    assert_eq!(second.post_event(&thinking("exec-a", 6)).await, 6);
    let mixed = json!([
        thinking("exec-b", 3),
        thinking("exec-a", 7),
        thinking("exec-new", 1),
        thinking("exec-a", 8)
    ]);
    assert_eq!(
        accepted(&second.post_ok(&mixed).await),
        vec![
            ("exec-b".into(), 3),
            ("exec-a".into(), 7),
            ("exec-new".into(), 1),
            ("exec-a".into(), 8)
        ]
    );

    // `thinking(…, n)` carries n: event n of each execution must be the one posted as n.
    for (execution, last) in [("exec-a", 8), ("exec-b", 3), ("exec-new", 1)] {
        let stored = all_events(&second, execution, "").await;
        assert_eq!(seqs(&stored), (1..=last).collect::<Vec<_>>(), "{execution}");
        for (n, e) in (1..).zip(&stored) {
            assert_delivered(&thinking(execution, n), e, n);
        }
    }

    // This run's buffer holds only 6..=8 of exec-a; 1..=5 come from the store.
    let mut client = second.connect().await;
    assert_eq!(subscribe_from(&mut client, "exec-a", 0).await, 8);
    let replayed = client.events(8).await;
    assert_eq!(seqs(&replayed), (1..=8).collect::<Vec<_>>());
    for (n, e) in (1..).zip(&replayed) {
        assert_delivered(&thinking("exec-a", n), e, n);
    }
    client.ping().await;
}

/// The writer copies the write-ahead log into the database file once the log
/// reaches `sqlite_checkpoint_pages`, and the log then starts again, so its
/// file never grows far past the setting; the default lets it grow much
/// further (config/default.toml says why), and the same posts leave it longer
/// than the small setting allows. Either way every event is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_copied_into_the_file_at_the_configured_size() {
    const SMALL: u64 = 300;
    let small =
        log_pages_after_large_posts(&[("SQLITE_CHECKPOINT_PAGES", &SMALL.to_string())]).await;
    let default = log_pages_after_large_posts(&[]).await;
    // The high-water mark: the threshold plus the commits that crossed it.
    assert!(
        small < SMALL + 600,
        "the log grew to {small} pages with a threshold of {SMALL}"
    );
    assert!(
        default > SMALL + 600,
        "with the default threshold the log was checkpointed at {default} pages"
    );
}

/// Posts 4,000 events of 2 KB in batches of 50 (about 5,000 pages of log)
/// to a broker with `settings`, checks they are all stored, and returns the
/// size of the write-ahead log file, in 4 KiB pages, while the broker runs.
async fn log_pages_after_large_posts(settings: &[(&str, &str)]) -> u64 {
    let dir = DataDir::new();
    let broker = start(&dir, settings).await;
    let thought = "x".repeat(2_000);
    for batch in 0..80 {
        let events: Vec<Value> = (0..50)
            .map(|n| {
                event(
                    "agent-thinking",
                    &format!("exec-{}", n % 5),
                    json!({"agentId": "agent-1", "thought": thought, "step": batch}),
                )
            })
            .collect();
        broker.post_ok(&Value::Array(events)).await;
    }
    for n in 0..5 {
        let stored = all_events(&broker, &format!("exec-{n}"), "").await;
        assert_eq!(seqs(&stored), (1..=800).collect::<Vec<_>>(), "exec-{n}");
    }
    let log = std::fs::metadata(dir.path().join("events.db-wal")).expect("the log file");
    log.len() / 4096
}

/// `kill -9` while producers are still posting, right after a burst of
/// 202s: after a restart on the same `DATA_DIR`, every acknowledged event is
/// stored under the seq it was given, each execution's stored seqs run
/// 1..=N without a hole, and new events continue at N+1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_kill_9() {
    acknowledged_events_survive_kill_9(None, 600).await;
}

/// The kill comes once `burst` events are acknowledged.
async fn acknowledged_events_survive_kill_9(mongodb: Option<&MongoDb>, burst: u64) {
    const EXECUTIONS: [&str; 3] = ["exec-k0", "exec-k1", "exec-k2"];
    let dir = DataDir::new();
    let mut node = start_on(mongodb, &dir, &[]).await;
    let node_port = node.port;
    let stop = Arc::new(AtomicBool::new(false));
    let (acked_tx, acked_rx) = watch::channel(0u64);
    let acked_tx = Arc::new(acked_tx);
    // (execution, seq) -> the metadata of the event posted and acknowledged under it.
    let acknowledged = Arc::new(Mutex::new(BTreeMap::<(String, u64), Value>::new()));

    let mut producers = Vec::new();
    for producer in 0..4u64 {
        let (stop, acked_tx, acknowledged) = (stop.clone(), acked_tx.clone(), acknowledged.clone());
        producers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{node_port}/api/events");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Odd producers send batches of 10 over the three executions, even ones single events.
                let size = if producer % 2 == 1 { 10 } else { 1 };
                let batch: Vec<Value> = (0..size)
                    .map(|i| {
                        let execution = EXECUTIONS[((n + i) % 3) as usize];
                        let mut e = thinking(execution, n + i);
                        e["metadata"] = json!({"producer": producer, "n": n + i});
                        e
                    })
                    .collect();
                n += size;
                let response = http.post(&url).json(&batch).send().await;
                // Once the broker is killed, requests fail: that is the end of this producer.
                let Ok(response) = response else { return };
                let status = response.status().as_u16();
                let Ok(answer) = response.json::<Value>().await else {
                    return;
                };
                assert_eq!(
                    status, 202,
                    "before the kill every POST is accepted: {answer}"
                );
                let given = accepted(&answer);
                assert_eq!(given.len(), batch.len(), "{answer}");
                let mut acknowledged = acknowledged.lock().unwrap();
                for (key, e) in given.into_iter().zip(&batch) {
                    assert_eq!(key.0, e["executionId"], "{answer}");
                    let previous = acknowledged.insert(key.clone(), e["metadata"].clone());
                    assert!(previous.is_none(), "{key:?} acknowledged twice");
                }
                acked_tx.send_modify(|count| *count += size);
            }
        }));
    }

    let mut progress = acked_rx.clone();
    tokio::time::timeout(STARTUP, progress.wait_for(|count| *count >= burst))
        .await
        .expect("the producers never reached the burst")
        .expect("the producers are alive");
    node.kill_9().await;
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        tokio::time::timeout(STEP, producer)
            .await
            .expect("a producer hangs after the kill")
            .expect("a producer failed");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() as u64 >= burst);

    let node = start_on(mongodb, &dir, &[]).await;
    for execution in EXECUTIONS {
        let stored = all_events(&node, execution, "limit=1000").await;
        let stored_seqs = seqs(&stored);
        let last = stored_seqs.len() as u64;
        assert_eq!(
            stored_seqs,
            (1..=last).collect::<Vec<_>>(),
            "{execution}: stored seqs have a hole"
        );
        let mine: Vec<(u64, &Value)> = acknowledged
            .iter()
            .filter(|((e, _), _)| e == execution)
            .map(|((_, seq), metadata)| (*seq, metadata))
            .collect();
        let highest_acked = mine.last().map_or(0, |(seq, _)| *seq);
        assert!(
            last >= highest_acked,
            "{execution}: seq {highest_acked} got a 202 but the store stops at {last}"
        );
        for (seq, metadata) in mine {
            assert_eq!(
                &stored[seq as usize - 1]["metadata"],
                metadata,
                "{execution}/{seq} is not the event acknowledged under that seq"
            );
        }
        assert_eq!(
            node.post_event(&thinking(execution, 0)).await,
            last + 1,
            "{execution} continues after what was stored"
        );
    }
}

/// SIGTERM while producers wait for their 202: a batch delay of a minute,
/// far past the shutdown timeout, keeps their events accepted but unstored
/// until the stop itself stores them. The broker answers the waiting
/// producers 202, refuses later ones, exits 0; after a restart every event
/// a live subscriber saw and every 202 is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_stores_everything_accepted() {
    const PRODUCERS: u64 = 4;
    const BATCH: u64 = 5;
    let dir = DataDir::new();
    let mut node = start(&dir, &[("PERSIST_BATCH_MS", "60000")]).await;
    let mut subscriber = node.connect().await;
    subscriber
        .subscribe(json!({"conversationId": "conv-g"}))
        .await;

    let signalled = Arc::new(AtomicBool::new(false));
    let node_port = node.port;
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let signalled = signalled.clone();
        producers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{node_port}/api/events");
            let execution = format!("exec-g{producer}");
            // (seqs acknowledged, how many 202s came after the signal)
            let (mut acked, mut after_signal) = (Vec::new(), 0);
            for round in 0..1000u64 {
                let batch: Vec<Value> = (0..BATCH)
                    .map(|i| {
                        let mut e = thinking(&execution, round * BATCH + i);
                        e["conversationId"] = "conv-g".into();
                        e
                    })
                    .collect();
                let send = http.post(&url).json(&batch).send();
                let Ok(Ok(response)) = tokio::time::timeout(STARTUP, send).await else {
                    return (acked, after_signal); // the server has stopped
                };
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                if status != 202 {
                    assert_eq!(status, 503, "{answer}");
                    assert_eq!(answer["error"]["code"], "shutting-down", "{answer}");
                    return (acked, after_signal);
                }
                if signalled.load(Ordering::SeqCst) {
                    after_signal += 1;
                }
                acked.extend(accepted(&answer).into_iter().map(|(e, seq)| {
                    assert_eq!(e, execution);
                    seq
                }));
            }
            panic!("{execution}: still accepted after 1000 rounds");
        }));
    }

    // Every producer's first batch is accepted (sequenced) and waits for the
    // batch delay: nothing goes live before it is stored.
    let mut live: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut accepted_in = 0;
    for _ in 0..500 {
        let (_, stats) = node.get_json("/admin/stats").await;
        accepted_in = stats["eventsIn"].as_u64().unwrap_or(0);
        if accepted_in >= PRODUCERS * BATCH {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // polling the figure awaited
    }
    assert!(
        accepted_in >= PRODUCERS * BATCH,
        "accepted only {accepted_in}"
    );
    assert_eq!(
        node.get_json("/admin/stats").await.1["eventsStored"],
        0,
        "held by the batch delay"
    );
    signalled.store(true, Ordering::SeqCst);
    node.signal(libc::SIGTERM);

    // The subscriber gets whatever else was accepted, then 1001.
    let (messages, code) = subscriber.until_close().await;
    for message in messages {
        assert_eq!(message["type"], "event", "{message}");
        let e = &message["event"];
        live.insert((
            e["executionId"].as_str().unwrap().into(),
            e["seq"].as_u64().unwrap(),
        ));
    }
    assert_eq!(code, Some(1001), "close code");
    let status = node.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");

    let mut acked_total = 0;
    let mut acked_pairs = BTreeSet::new();
    for (producer, task) in (0..PRODUCERS).zip(producers) {
        let (acked, after_signal) = tokio::time::timeout(STEP, task)
            .await
            .expect("a producer hangs after the stop")
            .expect("a producer failed");
        assert!(
            after_signal >= 1,
            "producer {producer}: its waiting batch was not answered 202 during the stop"
        );
        acked_total += acked.len();
        acked_pairs.extend(
            acked
                .into_iter()
                .map(|seq| (format!("exec-g{producer}"), seq)),
        );
    }
    assert!(acked_total >= (PRODUCERS * BATCH) as usize);

    let node = start(&dir, &[]).await;
    let mut stored = BTreeSet::new();
    for producer in 0..PRODUCERS {
        let execution = format!("exec-g{producer}");
        for e in all_events(&node, &execution, "limit=1000").await {
            stored.insert((execution.clone(), e["seq"].as_u64().unwrap()));
        }
    }
    let lost_live: Vec<_> = live.difference(&stored).collect();
    assert!(
        lost_live.is_empty(),
        "accepted (seen live) but not stored: {lost_live:?}"
    );
    let lost_acked: Vec<_> = acked_pairs.difference(&stored).collect();
    assert!(lost_acked.is_empty(), "202 but not stored: {lost_acked:?}");
}

// ------------------------------------------------- replay from the store

/// With a 5-event buffer, clients subscribe with `fromSeq` far behind the
/// head while two producers post without pause: the older part comes from
/// the store, the newer from the buffer, then live. Each client gets every
/// seq after its position once, in order. Each producer has at most one
/// event not yet stored (it waits for its 202), so the store is never more
/// than 2 events behind the head and a refusal would be a fault here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_older_than_the_buffer_comes_from_the_store_without_a_seam() {
    // (progress to wait for, how far behind it to subscribe)
    const POINTS: [(u64, u64); 6] = [(20, 20), (40, 30), (60, 6), (100, 5), (140, 60), (180, 120)];
    replay_from_the_store_without_a_seam(None, &POINTS, 20).await;
}

/// Readers subscribe at `points` (see [`run_seam`]) with a buffer of 5.
async fn replay_from_the_store_without_a_seam(
    mongodb: Option<&MongoDb>,
    points: &[(u64, u64)],
    run_on: u64,
) {
    const EXECUTION: &str = "exec-store-seam";
    const BUFFER: u64 = 5;
    let broker = Arc::new(
        Broker::builder()
            .store(mongodb)
            .setting("BUFFER_SIZE", BUFFER)
            .start()
            .await,
    );
    let SeamRun { last, readers, .. } = run_seam(&broker, EXECUTION, points, run_on).await;

    for SeamReader {
        from,
        behind,
        replayed,
        got,
        mut client,
    } in readers
    {
        client.ping().await;
        let got_seqs = seqs(&got);
        assert_eq!(
            got_seqs,
            (from + 1..=last).collect::<Vec<_>>(),
            "fromSeq {from}: every later seq once, in order"
        );
        // At subscribe time the head was at least `from + behind`; with
        // `behind` > BUFFER, all but the last BUFFER of these came from the store.
        assert!(
            replayed >= behind,
            "fromSeq {from}: replayed {replayed} < {behind}"
        );
    }
    // Every event of the history matches what the live clients got.
    let stored = all_events(broker.as_ref(), EXECUTION, "limit=1000").await;
    assert_eq!(seqs(&stored), (1..=last).collect::<Vec<_>>());
}

// ------------------------------------------------- history

/// One execution of 16 events, each type and several agents and
/// departments, queried with each filter, their combinations and paging.
fn history_run() -> Vec<Value> {
    let x = "exec-h";
    vec![
        event("orchestration-start", x, json!({"userPrompt": "a scene"})),
        event(
            "department-start",
            x,
            json!({"department": "story", "agentId": "story-head"}),
        ),
        event(
            "agent-start",
            x,
            json!({"agentId": "writer-1", "department": "story"}),
        ),
        event(
            "agent-thinking",
            x,
            json!({"agentId": "writer-1", "thought": "hm"}),
        ),
        event(
            "tool-call",
            x,
            json!({"agentId": "writer-1", "toolName": "search", "toolCallId": "c1"}),
        ),
        event(
            "tool-result",
            x,
            json!({"agentId": "writer-1", "toolName": "search", "toolCallId": "c1", "success": true}),
        ),
        event(
            "agent-start",
            x,
            json!({"agentId": "artist-1", "department": "art"}),
        ),
        event(
            "tool-call",
            x,
            json!({"agentId": "artist-1", "toolName": "draw", "toolCallId": "c2"}),
        ),
        event(
            "tool-result",
            x,
            json!({"agentId": "artist-1", "toolName": "draw", "toolCallId": "c2", "success": false}),
        ),
        event(
            "agent-thinking",
            x,
            json!({"agentId": "artist-1", "thought": "colour"}),
        ),
        event(
            "quality-check",
            x,
            json!({"qualityScore": 80, "agentId": "writer-1", "department": "story"}),
        ),
        event(
            "quality-check",
            x,
            json!({"qualityScore": 40, "agentId": "artist-1", "department": "art"}),
        ),
        event(
            "review-status",
            x,
            json!({"department": "story", "status": "approved", "agentId": "story-head"}),
        ),
        event(
            "agent-complete",
            x,
            json!({"agentId": "writer-1", "department": "story", "success": true}),
        ),
        event("department-complete", x, json!({"department": "story"})),
        event("orchestration-complete", x, json!({"status": "success"})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_every_filter_and_pages_with_next_after_seq() {
    history_filters_and_pages(None).await;
}

async fn history_filters_and_pages(mongodb: Option<&MongoDb>) {
    let broker = Broker::builder().store(mongodb).start().await;
    let posted = history_run();
    let answer = broker.post_ok(&Value::Array(posted.clone())).await;
    assert_eq!(answer["accepted"], 16, "{answer}");
    let check = |query: &'static str, want: Vec<u64>| {
        let (broker, posted) = (&broker, &posted);
        async move {
            let (events, next) = events_page(broker, "exec-h", query).await;
            assert_eq!(seqs(&events), want, "?{query}");
            assert_eq!(next, None, "?{query}: one page only");
            for e in &events {
                let seq = e["seq"].as_u64().unwrap();
                assert_delivered(&posted[seq as usize - 1], e, seq);
            }
        }
    };
    check("", (1..=16).collect()).await;
    check("afterSeq=10", (11..=16).collect()).await;
    check("afterSeq=16", vec![]).await;
    check("types=tool-call,tool-result", vec![5, 6, 8, 9]).await;
    check("types=review-status", vec![13]).await;
    check("agentId=writer-1", vec![3, 4, 5, 6, 11, 14]).await;
    check("agentId=story-head", vec![2, 13]).await;
    check("department=story", vec![2, 3, 11, 13, 14, 15]).await;
    check("department=art", vec![7, 12]).await;
    check(
        "types=agent-start,quality-check&department=art",
        vec![7, 12],
    )
    .await;
    check(
        "afterSeq=4&agentId=artist-1&types=tool-call,agent-thinking",
        vec![8, 10],
    )
    .await;
    check(
        "agentId=writer-1&department=story&types=quality-check",
        vec![11],
    )
    .await;
    check("agentId=nobody", vec![]).await;
    // An event that names no department is excluded by a department filter.
    check(
        "types=orchestration-start,agent-thinking&department=story",
        vec![],
    )
    .await;

    // Paging: the cursor is the last seq of a full page; the last page has none.
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let (page, next) =
            events_page(&broker, "exec-h", &format!("limit=3&afterSeq={after}")).await;
        pages.push(seqs(&page));
        let Some(next) = next else { break };
        assert_eq!(
            Some(&next),
            pages.last().unwrap().last(),
            "the cursor is the page's last seq"
        );
        after = next;
        assert!(pages.len() < 10, "{pages:?}");
    }
    assert_eq!(
        pages,
        vec![
            vec![1, 2, 3],
            vec![4, 5, 6],
            vec![7, 8, 9],
            vec![10, 11, 12],
            vec![13, 14, 15],
            vec![16]
        ]
    );
    // A page that ends exactly at the end still has a cursor; the next one is empty.
    assert_eq!(
        events_page(&broker, "exec-h", "limit=4&afterSeq=12")
            .await
            .1,
        Some(16)
    );
    assert_eq!(
        events_page(&broker, "exec-h", "limit=4&afterSeq=16").await,
        (vec![], None)
    );
    // Paging under a filter.
    let (page, next) = events_page(&broker, "exec-h", "agentId=writer-1&limit=4").await;
    assert_eq!((seqs(&page), next), (vec![3, 4, 5, 6], Some(6)));
    let (page, next) = events_page(&broker, "exec-h", "agentId=writer-1&limit=4&afterSeq=6").await;
    assert_eq!((seqs(&page), next), (vec![11, 14], None));
    assert_eq!(
        seqs(&all_events(&broker, "exec-h", "types=agent-thinking,tool-call&limit=1").await),
        vec![4, 5, 8, 10]
    );

    for bad in ["types=nope", "limit=0", "afterSeq=-1", "fromSeq=3"] {
        let (status, body) = broker
            .get_json(&format!("/api/executions/exec-h/events?{bad}"))
            .await;
        assert_eq!(status, 400, "?{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad-request", "?{bad}: {body}");
    }
}

// ------------------------------------------------- stats

/// A known execution, with timestamps, whose figures are worked out by hand below.
fn stats_run() -> Vec<Value> {
    let x = "exec-s";
    let mut run = vec![
        timed("orchestration-start", x, 0, json!({})),
        timed(
            "department-start",
            x,
            100,
            json!({"department": "story", "agentId": "story-head"}),
        ),
        timed(
            "department-start",
            x,
            150,
            json!({"department": "art", "agentId": "art-head"}),
        ),
        timed(
            "agent-start",
            x,
            200,
            json!({"agentId": "writer-1", "department": "story"}),
        ),
        timed(
            "tool-call",
            x,
            300,
            json!({"agentId": "writer-1", "toolName": "search"}),
        ),
        timed(
            "tool-result",
            x,
            400,
            json!({"agentId": "writer-1", "toolName": "search", "success": true}),
        ),
        timed(
            "tool-call",
            x,
            500,
            json!({"agentId": "writer-1", "toolName": "search"}),
        ),
        timed(
            "tool-result",
            x,
            600,
            json!({"agentId": "writer-1", "toolName": "search", "success": false, "error": "timeout"}),
        ),
        timed(
            "tool-call",
            x,
            700,
            json!({"agentId": "artist-1", "toolName": "draw"}),
        ),
        // No `success`: not a failure.
        timed(
            "tool-result",
            x,
            800,
            json!({"agentId": "artist-1", "toolName": "draw"}),
        ),
        timed(
            "quality-check",
            x,
            900,
            json!({"qualityScore": 70, "agentId": "writer-1", "department": "story"}),
        ),
        timed(
            "quality-check",
            x,
            1000,
            json!({"qualityScore": 95, "agentId": "writer-1", "department": "story"}),
        ),
        timed(
            "quality-check",
            x,
            1100,
            json!({"qualityScore": 40.5, "agentId": "artist-1", "department": "art"}),
        ),
        // No department: counted by type, in no department's scores.
        timed("quality-check", x, 1200, json!({"qualityScore": 10})),
        timed(
            "review-status",
            x,
            1300,
            json!({"department": "story", "status": "revision-requested", "agentId": "story-head"}),
        ),
        timed(
            "review-status",
            x,
            1400,
            json!({"department": "story", "status": "approved", "agentId": "story-head"}),
        ),
        timed(
            "review-status",
            x,
            1500,
            json!({"department": "art", "status": "revision-requested", "agentId": "art-head"}),
        ),
        timed(
            "department-complete",
            x,
            1600,
            json!({"department": "story"}),
        ),
        timed(
            "orchestration-complete",
            x,
            5234,
            json!({"status": "partial"}),
        ),
    ];
    for e in &mut run {
        e["conversationId"] = "conv-s".into();
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_known_execution_are_the_figures_worked_out_by_hand() {
    let broker = Broker::start().await;
    // Posted in three requests: stats add up across batches.
    let run = stats_run();
    for part in run.chunks(7) {
        broker.post_ok(&Value::Array(part.to_vec())).await;
    }
    let (status, stats) = broker.get_json("/api/executions/exec-s/stats").await;
    assert_eq!(status, 200, "{stats}");

    assert_eq!(stats["executionId"], "exec-s", "{stats}");
    assert_eq!(stats["conversationId"], "conv-s", "{stats}");
    assert_eq!(stats["status"], "partial", "{stats}");
    assert_eq!(stats["eventCount"], 19, "{stats}");
    assert_eq!(stats["lastSeq"], 19, "{stats}");
    assert!(
        same_instant(stats["startedAt"].as_str().unwrap(), &at(0)),
        "{stats}"
    );
    assert!(
        same_instant(stats["endedAt"].as_str().unwrap(), &at(5234)),
        "{stats}"
    );
    assert_eq!(stats["durationMs"], 5234, "{stats}");
    // 1 + 2 + 1 + 3 + 3 + 4 + 3 + 1 + 1 = 19
    assert_eq!(
        stats["byType"],
        json!({"orchestration-start": 1, "department-start": 2, "agent-start": 1, "tool-call": 3,
            "tool-result": 3, "quality-check": 4, "review-status": 3, "department-complete": 1,
            "orchestration-complete": 1}),
        "{stats}"
    );
    // story-head: 2, 15, 16; art-head: 3, 17; writer-1: 4–8, 11, 12; artist-1: 9, 10, 13.
    assert_eq!(
        stats["byAgent"],
        json!({"story-head": 3, "art-head": 2, "writer-1": 7, "artist-1": 3}),
        "{stats}"
    );
    // story: 2, 4, 11, 12, 15, 16, 18; art: 3, 13, 17.
    assert_eq!(
        stats["byDepartment"],
        json!({"story": 7, "art": 3}),
        "{stats}"
    );
    assert_eq!(stats["toolCalls"], 3, "{stats}");
    assert_eq!(stats["toolFailures"], 1, "{stats}");
    let quality = &stats["qualityByDepartment"];
    assert_eq!(
        quality
            .as_object()
            .map(|q| q.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["art".to_owned(), "story".to_owned()]),
        "{stats}"
    );
    for (department, count, min, avg, max) in
        [("story", 2, 70.0, 82.5, 95.0), ("art", 1, 40.5, 40.5, 40.5)]
    {
        let scores = &quality[department];
        assert_eq!(scores["count"], count, "{department}: {stats}");
        for (key, want) in [("min", min), ("avg", avg), ("max", max)] {
            let got = scores[key].as_f64().unwrap_or(f64::NAN);
            assert!(
                (got - want).abs() < 1e-9,
                "{department} {key}: {got} != {want}: {stats}"
            );
        }
    }
    assert_eq!(
        stats["reviews"],
        json!({"approved": 1, "revision-requested": 2}),
        "{stats}"
    );

    // A running execution: no end, no duration.
    broker
        .post_ok(&json!([
            timed("orchestration-start", "exec-s2", 0, json!({})),
            timed(
                "agent-thinking",
                "exec-s2",
                10,
                json!({"agentId": "a", "thought": "t"})
            )
        ]))
        .await;
    let (status, running) = broker.get_json("/api/executions/exec-s2/stats").await;
    assert_eq!(status, 200, "{running}");
    assert_eq!(running["status"], "running", "{running}");
    assert!(running["endedAt"].is_null(), "{running}");
    assert!(running["durationMs"].is_null(), "{running}");
    assert_eq!(running["eventCount"], 2, "{running}");
    assert_eq!(running["toolCalls"], 0, "{running}");
    assert_eq!(running["byAgent"], json!({"a": 1}), "{running}");

    let (status, missing) = broker.get_json("/api/executions/exec-none/stats").await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["code"], "not-found", "{missing}");
}

// ------------------------------------------------- the executions list

/// `GET /api/executions?{query}`, every page through `nextCursor`: the IDs in order.
async fn list_all(api: &impl Api, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/api/executions?limit={limit}{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {page}");
        let items = page["executions"].as_array().expect("an executions array");
        assert!(items.len() <= limit, "GET {path}: {page}");
        ids.extend(
            items
                .iter()
                .map(|e| e["executionId"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
    panic!("paging through {query} never ended: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_listed_newest_first_with_filters_and_cursors() {
    let broker = Broker::start().await;
    // (execution, conversation, start in ms, how it ended); posted out of order.
    let runs: [(&str, Option<&str>, u64, Option<Value>); 8] = [
        ("ex-4", Some("conv-a"), 4000, None),
        (
            "ex-1",
            Some("conv-a"),
            1000,
            Some(json!({"status": "success"})),
        ),
        (
            "ex-6b",
            Some("conv-b"),
            6000,
            Some(json!({"status": "failed"})),
        ),
        ("ex-7", None, 7000, None),
        (
            "ex-3",
            Some("conv-b"),
            3000,
            Some(json!({"status": "partial"})),
        ),
        ("ex-6a", Some("conv-a"), 6000, None),
        ("ex-5", Some("conv-b"), 5000, Some(json!({}))),
        (
            "ex-2",
            Some("conv-a"),
            2000,
            Some(json!({"status": "failed"})),
        ),
    ];
    for (execution, conversation, start, end) in &runs {
        let mut run = vec![
            timed("orchestration-start", execution, *start, json!({})),
            timed(
                "agent-thinking",
                execution,
                start + 10,
                json!({"agentId": "a", "thought": "t"}),
            ),
        ];
        if let Some(end) = end {
            run.push(timed(
                "orchestration-complete",
                execution,
                start + 500,
                end.clone(),
            ));
        }
        if let Some(conversation) = conversation {
            run[0]["conversationId"] = (*conversation).into();
        }
        broker.post_ok(&Value::Array(run)).await;
    }

    let (status, page) = broker.get_json("/api/executions").await;
    assert_eq!(status, 200, "{page}");
    assert!(page["nextCursor"].is_null(), "{page}");
    let listed = page["executions"].as_array().unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|e| e["executionId"].as_str().unwrap())
        .collect();
    // Same start (6000): the larger ID first.
    assert_eq!(
        ids,
        ["ex-7", "ex-6b", "ex-6a", "ex-5", "ex-4", "ex-3", "ex-2", "ex-1"]
    );
    let statuses: Vec<&str> = listed
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["running", "failed", "running", "success", "running", "partial", "failed", "success"]
    );
    let ex3 = &listed[5];
    assert_eq!(ex3["conversationId"], "conv-b", "{ex3}");
    assert_eq!(ex3["eventCount"], 3, "{ex3}");
    assert_eq!(ex3["lastSeq"], 3, "{ex3}");
    assert!(
        same_instant(ex3["startedAt"].as_str().unwrap(), &at(3000)),
        "{ex3}"
    );
    assert!(
        same_instant(ex3["endedAt"].as_str().unwrap(), &at(3500)),
        "{ex3}"
    );
    let ex4 = &listed[4];
    assert_eq!(ex4["eventCount"], 2, "{ex4}");
    assert!(ex4["endedAt"].is_null(), "{ex4}");
    // The conversation named by the first event carries over to the rest.
    assert_eq!(ex4["conversationId"], "conv-a", "{ex4}");
    assert!(listed[0]["conversationId"].is_null(), "{}", listed[0]);

    for (query, want) in [
        (
            "",
            vec![
                "ex-7", "ex-6b", "ex-6a", "ex-5", "ex-4", "ex-3", "ex-2", "ex-1",
            ],
        ),
        ("&status=running", vec!["ex-7", "ex-6a", "ex-4"]),
        ("&status=success", vec!["ex-5", "ex-1"]),
        ("&status=failed", vec!["ex-6b", "ex-2"]),
        ("&status=partial", vec!["ex-3"]),
        (
            "&conversationId=conv-a",
            vec!["ex-6a", "ex-4", "ex-2", "ex-1"],
        ),
        ("&conversationId=conv-b&status=failed", vec!["ex-6b"]),
        (
            "&conversationId=conv-a&status=running",
            vec!["ex-6a", "ex-4"],
        ),
        ("&conversationId=conv-none", vec![]),
    ] {
        // Whole, and a page at a time: the cursor between ex-6b and ex-6a
        // (the same start) must neither skip nor repeat.
        for limit in [100, 3, 1] {
            assert_eq!(
                list_all(&broker, query, limit).await,
                want,
                "{query} limit {limit}"
            );
        }
    }

    for bad in [
        "status=done",
        "cursor=nonsense",
        "limit=0",
        "conversation=conv-a",
    ] {
        let (status, body) = broker.get_json(&format!("/api/executions?{bad}")).await;
        assert_eq!(status, 400, "?{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad-request", "?{bad}: {body}");
    }
}

/// Executions whose timestamps the broker fills in (several may share a
/// millisecond): paging still lists each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_executions_with_broker_timestamps_neither_skips_nor_repeats() {
    let broker = Broker::start().await;
    let mut posted = Vec::new();
    for n in 0..12 {
        let execution = format!("ex-now-{n:02}");
        broker.post_event(&thinking(&execution, 0)).await;
        posted.push(execution);
    }
    let whole = list_all(&broker, "", 100).await;
    let mut sorted = whole.clone();
    sorted.sort();
    assert_eq!(sorted, posted, "every execution once: {whole:?}");
    for limit in [1, 2, 5] {
        assert_eq!(list_all(&broker, "", limit).await, whole, "limit {limit}");
    }
}

// ------------------------------------------------- retention

/// With `retention_max_executions` 2, running every second: the two
/// executions that started last stay whole; the others disappear from the
/// list (with any filter), from history and from stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_older_executions_from_every_api() {
    let broker = Broker::builder()
        .setting("RETENTION_MAX_EXECUTIONS", 2)
        .setting("RETENTION_INTERVAL_SECS", 1)
        .start()
        .await;
    // Posted newest first, so that retention running between posts changes nothing in the end.
    for (n, start) in [(4, 4000), (3, 3000), (2, 2000), (1, 1000)] {
        let execution = format!("ex-r{n}");
        let run: Vec<Value> = (0..3)
            .map(|i| {
                let mut e = timed(
                    "agent-thinking",
                    &execution,
                    start + i,
                    json!({"agentId": "a", "thought": "t"}),
                );
                e["conversationId"] = "conv-r".into();
                e
            })
            .collect();
        broker.post_ok(&Value::Array(run)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = list_all(&broker, "", 100).await;
        if listed == ["ex-r4", "ex-r3"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention never brought the list down to the two newest: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for query in [
        "&conversationId=conv-r",
        "&status=running",
        "&conversationId=conv-r&status=running",
    ] {
        assert_eq!(
            list_all(&broker, query, 1).await,
            ["ex-r4", "ex-r3"],
            "{query}"
        );
    }
    for gone in ["ex-r1", "ex-r2"] {
        assert_eq!(
            events_page(&broker, gone, "").await,
            (vec![], None),
            "{gone}"
        );
        let (status, body) = broker
            .get_json(&format!("/api/executions/{gone}/stats"))
            .await;
        assert_eq!(status, 404, "{gone}: {body}");
        assert_eq!(body["error"]["code"], "not-found", "{body}");
    }
    for kept in ["ex-r3", "ex-r4"] {
        assert_eq!(
            seqs(&events_page(&broker, kept, "").await.0),
            vec![1, 2, 3],
            "{kept}"
        );
        let (status, stats) = broker
            .get_json(&format!("/api/executions/{kept}/stats"))
            .await;
        assert_eq!(status, 200, "{stats}");
        assert_eq!(stats["eventCount"], 3, "{stats}");
    }
}

/// Retention removes an execution from the WebSocket replay too: a client
/// resuming from `fromSeq` 0 must not be served events the store no longer
/// has from the broker's memory (nothing replayed, or `replay-unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_older_executions_from_replay_too() {
    let broker = Broker::builder()
        .setting("RETENTION_MAX_EXECUTIONS", 1)
        .setting("RETENTION_INTERVAL_SECS", 1)
        .start()
        .await;
    for (execution, start) in [("ex-new", 2000), ("ex-old", 1000)] {
        let run: Vec<Value> = (0..2)
            .map(|i| {
                timed(
                    "agent-thinking",
                    execution,
                    start + i,
                    json!({"agentId": "a", "thought": "t"}),
                )
            })
            .collect();
        broker.post_ok(&Value::Array(run)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while list_all(&broker, "", 100).await != ["ex-new"] {
        assert!(Instant::now() < deadline, "retention never removed ex-old");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut client = broker.connect().await;
    client
        .send_json(&json!({"type": "subscribe", "executionId": "ex-old", "fromSeq": 0}))
        .await;
    let answer = client.next_json().await;
    match answer["type"].as_str() {
        Some("subscribed") => {
            assert_eq!(answer["replayed"], 0, "removed events replayed: {answer}");
            client.ping().await;
        }
        Some("error") => assert_eq!(answer["code"], "replay-unavailable", "{answer}"),
        _ => panic!("expected subscribed or replay-unavailable, got {answer}"),
    }
}

// ------------------------------------------------- on MongoDB

/// The same rules with the broker on MongoDB, when `MONGODB_URI` is set
/// (`scripts/test` starts a server for them); each test has a database of
/// its own. Fewer events than on SQLite: the test server is slow.
mod on_mongodb {
    use super::*;

    /// A database for `test`, or `None` after saying the suite is skipped.
    fn database(test: &str) -> Option<MongoDb> {
        MongoDb::for_test("persistence", test)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seq_continues_where_it_stopped_after_a_restart() {
        let Some(db) = database("restart") else {
            return;
        };
        seq_continues_after_a_restart(Some(&db)).await;
        db.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_acknowledged_event_survives_kill_9() {
        let Some(db) = database("kill_9") else { return };
        acknowledged_events_survive_kill_9(Some(&db), 200).await;
        db.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_replay_older_than_the_buffer_comes_from_the_store_without_a_seam() {
        let Some(db) = database("seam") else { return };
        // Behind by more than the buffer (5), and by less.
        replay_from_the_store_without_a_seam(
            Some(&db),
            &[(20, 20), (40, 30), (60, 6), (80, 5)],
            20,
        )
        .await;
        db.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn history_answers_every_filter_and_pages_with_next_after_seq() {
        let Some(db) = database("history") else {
            return;
        };
        history_filters_and_pages(Some(&db)).await;
        db.finish().await;
    }
}
