//! Connection lifecycle of the real binary: the heartbeat keeps a reading
//! client connected and drops a silent one (`heartbeat-timeout`, 4001); a
//! client too slow to read is closed (`slow-consumer`, 4000) without
//! disturbing a reading client of the same execution; and SIGTERM / SIGINT
//! deliver every accepted event, refuse producers with 503 while draining,
//! close clients with 1001 and exit 0.

mod common;

use common::{seqs, thinking, Broker, Client, Frame};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_readers_and_drops_silent_clients() {
    let broker = Broker::builder()
        .setting("HEARTBEAT_INTERVAL_MS", 200)
        .setting("CLIENT_TIMEOUT_MS", 600)
        .start()
        .await;
    let mut live = broker.connect().await;
    let mut silent = broker.connect().await;
    live.subscribe_execution("exec-hb").await;
    silent.subscribe_execution("exec-hb").await;
    // From here on the silent client answers no ping (it is not even read).
    silent.mute();

    // The live client reads, and so answers every ping, for 2.5 s: four
    // timeouts' worth. Nothing but pings may arrive meanwhile.
    // (`recv_within` answers and skips pings until its deadline.)
    let started = Instant::now();
    if let Some(frame) = live.recv_within(Duration::from_millis(2500)).await {
        panic!(
            "the live client got {frame:?} after {:?}",
            started.elapsed()
        );
    }
    live.ping().await;

    let stats = broker
        .wait_for_stats("drops.heartbeat-timeout >= 1", |s| {
            s["drops"]["heartbeat-timeout"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(
        stats["drops"]["heartbeat-timeout"], 1,
        "only the silent client: {stats}"
    );
    broker
        .wait_for_stats("1 connection left", |s| s["connections"] == 1)
        .await;

    // The live client is still subscribed and served.
    assert_eq!(broker.post_event(&thinking("exec-hb", 1)).await, 1);
    assert_eq!(live.next_event_body().await["seq"], 1);

    // The silent client, reading at last, finds why it was closed.
    let (messages, code) = silent.until_close().await;
    assert_eq!(code, Some(4001), "close code; messages: {messages:?}");
    assert_eq!(messages.len(), 1, "one error, nothing else: {messages:?}");
    assert_eq!(messages[0]["type"], "error", "{messages:?}");
    assert_eq!(messages[0]["code"], "heartbeat-timeout", "{messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_is_closed_without_disturbing_others() {
    const EXECUTION: &str = "exec-slow";
    let broker = Broker::builder()
        .setting("SESSION_QUEUE_BYTES", 65536)
        .start()
        .await;
    // A small receive buffer, so the broker's writes stall soon.
    let mut slow = broker.connect_small_buffer(8192).await;
    slow.subscribe_execution(EXECUTION).await;
    slow.mute();

    let mut reader = broker.connect().await;
    reader.subscribe_execution(EXECUTION).await;
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let e = reader.next_event_body().await;
            let end = e["metadata"]["end"] == true;
            got.push(e["seq"].as_u64().unwrap());
            if end {
                return (got, reader);
            }
        }
    });

    post_until_slow_consumer(&broker, EXECUTION).await;

    // The slow client reads now: whatever was in flight, then the verdict.
    let (messages, code) = slow.until_close().await;
    assert_eq!(
        code,
        Some(4000),
        "close code after {} messages",
        messages.len()
    );
    let (last, events) = messages.split_last().expect("at least the error");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "slow-consumer", "{last}");
    let in_flight: Vec<Value> = events
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "event", "before the error only events: {m}");
            m["event"].clone()
        })
        .collect();
    let in_flight = seqs(&in_flight);
    assert!(
        in_flight.windows(2).all(|w| w[0] < w[1]),
        "in-flight events keep their order: {in_flight:?}"
    );

    // The reading client got everything, in order.
    let mut end = thinking(EXECUTION, 0);
    end["metadata"] = json!({"end": true});
    let last_seq = broker.post_event(&end).await;
    let (got, mut reader) = reading.await.unwrap();
    assert_eq!(
        got,
        (1..=last_seq).collect::<Vec<_>>(),
        "the reader missed or repeated events"
    );
    reader.ping().await;

    let stats = broker.stats().await;
    assert_eq!(
        stats["drops"]["slow-consumer"], 1,
        "only the slow client: {stats}"
    );
    broker
        .wait_for_stats("1 connection left", |s| s["connections"] == 1)
        .await;
}

/// Posts 30 KB events to `execution` until `/admin/stats` counts one
/// slow-consumer drop; returns how many were posted. A stalled client of
/// `execution` must exist.
async fn post_until_slow_consumer(broker: &Broker, execution: &str) -> u64 {
    let blob = "x".repeat(30_000);
    let mut posted = 0u64;
    loop {
        // Four events of 30 KB, then a look at the counter.
        for _ in 0..4 {
            let mut e = thinking(execution, posted);
            e["metadata"] = json!({"n": posted, "blob": blob});
            posted += 1;
            assert_eq!(broker.post_event(&e).await, posted);
        }
        let stats = broker.stats().await;
        if stats["drops"]["slow-consumer"].as_u64() >= Some(1) {
            return posted;
        }
        assert!(
            posted < 2000,
            "{posted} events of 30 KB and the stalled client is still not dropped: {stats}"
        );
    }
}

/// Subscribes, posts `count` events, signals; every event must arrive before a 1001 close, and the process must exit 0.
async fn stops_gracefully_on(signal: libc::c_int, count: u64) {
    let mut broker = Broker::start().await;
    let mut subscriber = broker.connect().await;
    subscriber.subscribe_execution("exec-bye").await;
    let mut idle = broker.connect_path("/ws").await;
    for n in 1..=count {
        assert_eq!(broker.post_event(&thinking("exec-bye", n)).await, n);
    }

    broker.signal(signal);

    let (messages, code) = subscriber.until_close().await;
    assert_eq!(
        code,
        Some(1001),
        "close code after {} messages",
        messages.len()
    );
    assert!(
        messages.iter().all(|m| m["type"] == "event"),
        "{messages:?}"
    );
    let delivered: Vec<Value> = messages.into_iter().map(|m| m["event"].clone()).collect();
    assert_eq!(
        seqs(&delivered),
        (1..=count).collect::<Vec<_>>(),
        "every accepted event"
    );
    expect_bare_close(&mut idle).await;

    let status = broker.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

async fn expect_bare_close(client: &mut Client) {
    match client.recv().await {
        Frame::Close(code, _) => assert_eq!(code, Some(1001)),
        other => panic!("an idle client expected a 1001 close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_everything_accepted_then_closes_with_1001() {
    stops_gracefully_on(libc::SIGTERM, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_gracefully_too() {
    stops_gracefully_on(libc::SIGINT, 5).await;
}

/// While the broker drains, producers are refused with 503 `shutting-down`.
/// A stalled slow consumer keeps its connection (and so the drain) open
/// until it reads, which holds the broker in that state long enough to see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_get_503_while_the_broker_drains() {
    let mut broker = Broker::builder()
        .setting("SESSION_QUEUE_BYTES", 65536)
        .start()
        .await;
    let mut stalled = broker.connect_small_buffer(8192).await;
    stalled.subscribe_execution("exec-drain").await;
    stalled.mute();
    post_until_slow_consumer(&broker, "exec-drain").await;

    broker.signal(libc::SIGTERM);
    // Until the broker has handled the signal, posts may still be accepted.
    let mut accepted = 0;
    let (status, answer) = loop {
        let (status, answer) = broker.post(&thinking("exec-late", accepted)).await;
        if status != 202 {
            break (status, answer);
        }
        accepted += 1;
        assert!(
            accepted < 1000,
            "still accepting {accepted} posts after SIGTERM"
        );
    };
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "shutting-down", "{answer}");

    let (_, code) = stalled.until_close().await;
    assert!(code.is_some(), "the stalled client gets a close frame");
    let status = broker.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}
