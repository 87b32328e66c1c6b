//! Replay with `fromSeq`, through the real binary: a subscriber gets every
//! event after its position exactly once and in order, then the live ones,
//! even while producers keep posting at the very moment it subscribes (the
//! replay/live seam); a position at the head replays nothing; and a position
//! the broker can no longer serve is refused rather than answered with a hole.

mod common;

use common::{
    assert_delivered, event, run_seam, seqs, thinking, Broker, Client, SeamReader, SeamRun,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// Subscribes to `execution` from `from_seq`; returns the `replayed` count.
async fn subscribe_from(client: &mut Client, execution: &str, from_seq: u64) -> u64 {
    let answer = client
        .subscribe(json!({"executionId": execution, "fromSeq": from_seq}))
        .await;
    answer["replayed"]
        .as_u64()
        .unwrap_or_else(|| panic!("subscribed without a replayed count: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_seq_replays_the_missed_events_then_goes_live() {
    let broker = Broker::start().await;
    let posted: Vec<Value> = (1..=10).map(|n| thinking("exec-r", n)).collect();
    for (i, e) in posted.iter().enumerate() {
        assert_eq!(broker.post_event(e).await, i as u64 + 1);
    }

    let mut client = broker.connect().await;
    assert_eq!(subscribe_from(&mut client, "exec-r", 4).await, 6);
    for seq in 5..=10 {
        assert_delivered(
            &posted[seq as usize - 1],
            &client.next_event_body().await,
            seq,
        );
    }
    client.ping().await; // nothing more was replayed

    let live = thinking("exec-r", 11);
    assert_eq!(broker.post_event(&live).await, 11);
    assert_delivered(&live, &client.next_event_body().await, 11);

    // fromSeq 0 is "everything".
    let mut everything = broker.connect().await;
    assert_eq!(subscribe_from(&mut everything, "exec-r", 0).await, 11);
    assert_eq!(
        seqs(&everything.events(11).await),
        (1..=11).collect::<Vec<_>>()
    );
    everything.ping().await;

    let stats = broker.stats().await;
    assert_eq!(stats["replayed"], 6 + 11, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_honours_the_filter_and_counts_what_it_sends() {
    let broker = Broker::start().await;
    for n in 0..6 {
        let e = if n % 2 == 0 {
            event(
                "agent-start",
                "exec-rf",
                json!({"agentId": format!("agent-{n}")}),
            )
        } else {
            thinking("exec-rf", n)
        };
        broker.post_event(&e).await;
    }
    let mut client = broker.connect().await;
    let answer = client
        .subscribe(json!({"executionId": "exec-rf", "fromSeq": 0, "types": ["agent-start"]}))
        .await;
    assert_eq!(answer["replayed"], 3, "{answer}");
    let replayed = client.events(3).await;
    assert_eq!(seqs(&replayed), vec![1, 3, 5]);
    assert!(replayed.iter().all(|e| e["type"] == "agent-start"));
    client.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_seq_at_the_head_replays_nothing_then_goes_live() {
    let broker = Broker::start().await;
    for n in 1..=5 {
        broker.post_event(&thinking("exec-h", n)).await;
    }
    let mut client = broker.connect().await;
    assert_eq!(subscribe_from(&mut client, "exec-h", 5).await, 0);
    client.ping().await;
    for n in 6..=7 {
        broker.post_event(&thinking("exec-h", n)).await;
    }
    assert_eq!(seqs(&client.events(2).await), vec![6, 7]);
    client.ping().await;
}

/// Producers post to one execution without pause; clients subscribe with
/// `fromSeq` at chosen points while they do. Each must get every seq after
/// its position once, in order, up to the last event posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seam_between_replay_and_live_loses_and_repeats_nothing() {
    const EXECUTION: &str = "exec-seam";
    // (progress to wait for, how far behind it to subscribe): always inside
    // the default 100-event buffer, with room for the producers to run on.
    const POINTS: [(u64, u64); 6] = [(10, 10), (30, 0), (60, 1), (100, 5), (150, 25), (200, 50)];
    let broker = Arc::new(Broker::start().await);

    let SeamRun {
        stopped_at,
        last,
        readers,
    } = run_seam(&broker, EXECUTION, &POINTS, 30).await;
    assert_eq!(
        last,
        stopped_at + 1,
        "the end marker follows every accepted event"
    );

    for SeamReader {
        from,
        replayed,
        got,
        mut client,
        ..
    } in readers
    {
        let want: Vec<u64> = (from + 1..=last).collect();
        let got_seqs = seqs(&got);
        assert!(
            got_seqs == want,
            "fromSeq {from}: expected seqs {}..={last} once each in order, got {} events: {}",
            from + 1,
            got_seqs.len(),
            describe_gaps(&got_seqs, from)
        );
        assert!(
            replayed <= last - from,
            "fromSeq {from}: replayed {replayed} > {}",
            last - from
        );
        client.ping().await;
    }
}

/// Where a list of seqs (which should be `from+1, from+2, …`) goes wrong.
fn describe_gaps(got: &[u64], from: u64) -> String {
    let mut expected = from + 1;
    for (i, seq) in got.iter().enumerate() {
        if *seq != expected {
            let window = &got[i.saturating_sub(3)..(i + 3).min(got.len())];
            return format!("at index {i} expected {expected}, got {seq} (around: {window:?})");
        }
        expected += 1;
    }
    format!("no wrong seq; it stops at {}", expected - 1)
}

/// With a 5-event buffer, 20 events, and `fromSeq` 2: the broker either
/// replays 3..=20 completely (from its store) or refuses with
/// `replay-unavailable`; it never delivers a run with a hole in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_that_cannot_be_served_is_refused_not_holed() {
    let broker = Broker::builder().setting("BUFFER_SIZE", 5).start().await;
    for n in 1..=20 {
        broker.post_event(&thinking("exec-old", n)).await;
    }
    let mut client = broker.connect().await;
    client
        .send_json(&json!({"type": "subscribe", "executionId": "exec-old", "fromSeq": 2}))
        .await;
    let answer = client.next_json().await;
    match answer["type"].as_str() {
        Some("error") => {
            assert_eq!(answer["code"], "replay-unavailable", "{answer}");
            assert_eq!(
                answer["executionId"], "exec-old",
                "the error names the execution: {answer}"
            );
            client.ping().await;
            // Not subscribed: a plain subscribe is still possible.
            client.subscribe_execution("exec-old").await;
        }
        Some("subscribed") => {
            assert_eq!(answer["replayed"], 18, "{answer}");
            assert_eq!(seqs(&client.events(18).await), (3..=20).collect::<Vec<_>>());
            client.ping().await;
        }
        _ => panic!("expected subscribed or replay-unavailable, got {answer}"),
    }
}

/// Subscribe, unsubscribe and subscribe again in one burst while producers
/// post: the second subscription must replay from its `fromSeq` and go live
/// without a hole. The Registry answers the first subscribe too; had that
/// answer sent the second subscription live before the Registry routed to
/// it, the events published in between would be missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resubscribe_in_a_burst_replays_and_goes_live_without_a_hole() {
    const EXECUTION: &str = "exec-churn";
    let broker = Arc::new(Broker::start().await);
    let producers = common::BusyProducers::start(&broker, EXECUTION, 2);
    let mut progress = producers.progress();
    progress
        .wait_for(|seq| *seq >= 20)
        .await
        .expect("producers run");

    let mut client = broker.connect().await;
    for round in 0..20 {
        let subscribe = json!({"type": "subscribe", "executionId": EXECUTION, "fromSeq": 0});
        client.send_json(&subscribe).await;
        client
            .send_json(&json!({"type": "unsubscribe", "executionId": EXECUTION}))
            .await;
        client.send_json(&subscribe).await;
        // The first subscription may be answered (if the Registry's answer
        // came before the unsubscribe was read) or not; the second one's
        // events follow the `subscribed` after `unsubscribed`.
        let mut unsubscribed = false;
        loop {
            let message = client.next_json().await;
            match message["type"].as_str() {
                Some("unsubscribed") => unsubscribed = true,
                Some("subscribed") if unsubscribed => break,
                Some("subscribed") | Some("event") => {}
                _ => panic!("round {round}: unexpected {message}"),
            }
        }
        every_seq_from_the_first(&mut client, &mut progress, round).await;
        unsubscribe(&mut client, EXECUTION, round).await;
    }
    producers.stop_after(0).await;
}

/// A history read that is still running when the client unsubscribes and
/// subscribes again must not finish the new subscription: its history ends
/// where it looked, and the events published after that went to the old
/// subscription, which the unsubscribe dropped. Applied to the new one, it
/// sent it live with a hole (`tests/replay.rs` saw seven events skipped on
/// a loaded machine). Here the read is made long on purpose (a history of
/// thousands of events from the store) and the resubscribe is sent while it
/// runs: after a ping's round trip, by which the Session has registered
/// and started reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resubscribe_during_a_long_replay_read_goes_live_without_a_hole() {
    const EXECUTION: &str = "exec-stale-read";
    const ROUNDS: usize = 12;
    let broker = Arc::new(Broker::start().await);
    for batch in 0..30 {
        let thoughts: Vec<Value> = (0..100)
            .map(|n| thinking(EXECUTION, batch * 100 + n))
            .collect();
        broker.post_ok(&Value::Array(thoughts)).await;
    }
    let producers = common::BusyProducers::start(&broker, EXECUTION, 2);
    let mut progress = producers.progress();
    let mut client = broker.connect().await;
    for round in 0..ROUNDS {
        let subscribe = json!({"type": "subscribe", "executionId": EXECUTION, "fromSeq": 0});
        client.send_json(&subscribe).await;
        client.send_json(&json!({"type": "ping"})).await;
        client.skip_to("pong", &format!("round {round}")).await;
        client
            .send_json(&json!({"type": "unsubscribe", "executionId": EXECUTION}))
            .await;
        client.send_json(&subscribe).await;
        client
            .skip_to("unsubscribed", &format!("round {round}"))
            .await;
        client
            .skip_to("subscribed", &format!("round {round}"))
            .await;
        every_seq_from_the_first(&mut client, &mut progress, round).await;
        unsubscribe(&mut client, EXECUTION, round).await;
    }
    producers.stop_after(0).await;
}

/// Unsubscribes from `execution` and reads to the answer.
async fn unsubscribe(client: &mut Client, execution: &str, round: usize) {
    client
        .send_json(&json!({"type": "unsubscribe", "executionId": execution}))
        .await;
    client
        .skip_to("unsubscribed", &format!("round {round}"))
        .await;
}

/// Reads events from seq 1 until ten past the producers' head as it is now;
/// they must be every seq, once and in order.
async fn every_seq_from_the_first(
    client: &mut Client,
    progress: &mut tokio::sync::watch::Receiver<u64>,
    round: usize,
) {
    let target = progress.borrow().to_owned() + 10;
    progress
        .wait_for(|seq| *seq >= target)
        .await
        .expect("producers run");
    let mut got = Vec::new();
    while got.last().and_then(|e: &Value| e["seq"].as_u64()) < Some(target) {
        got.push(client.next_event_body().await);
    }
    let got_seqs = seqs(&got);
    assert!(
        got_seqs == (1..=target).collect::<Vec<u64>>(),
        "round {round}: {}",
        describe_gaps(&got_seqs, 0)
    );
}

/// With a store, an execution nobody watches keeps no replay buffer (its
/// memory stays flat), and a subscriber that comes later replays from the
/// store without a hole; once watched it is buffered, and when its last
/// subscriber leaves the buffer goes with the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwatched_execution_keeps_no_buffer_and_replays_from_the_store() {
    const EXECUTION: &str = "exec-unwatched";
    let broker = Broker::start().await;
    for n in 1..=30 {
        broker.post_event(&thinking(EXECUTION, n)).await;
    }
    assert_eq!(broker.stats().await["executionsBuffered"], 0);

    let mut client = broker.connect().await;
    assert_eq!(subscribe_from(&mut client, EXECUTION, 10).await, 20);
    let replayed = client.events(20).await;
    assert_eq!(seqs(&replayed), (11..=30).collect::<Vec<_>>());
    assert_eq!(broker.post_event(&thinking(EXECUTION, 31)).await, 31);
    assert_eq!(client.next_event_body().await["seq"], 31);
    broker
        .wait_for_stats("a buffer while watched", |s| s["executionsBuffered"] == 1)
        .await;

    client.close().await;
    broker
        .wait_for_stats("no subscription", |s| s["subscriptions"] == 0)
        .await;
    assert_eq!(broker.post_event(&thinking(EXECUTION, 32)).await, 32);
    broker
        .wait_for_stats("no buffer once unwatched", |s| s["executionsBuffered"] == 0)
        .await;
}

/// All buffers together stay under `max_buffered_bytes`: when a busy
/// execution pushes them past it, the longest idle one loses its buffer,
/// and its subscribers still replay everything, from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_empties_the_longest_idle_buffer_and_replay_reads_the_store() {
    const BUDGET: u64 = 35_000;
    let broker = Broker::builder()
        .setting("MAX_BUFFERED_BYTES", BUDGET)
        .start()
        .await;
    // Watched, so that both are buffered at all.
    let mut watcher = broker.connect().await;
    watcher.subscribe_execution("exec-idle").await;
    watcher.subscribe_execution("exec-busy").await;
    let large = |execution: &str, n: u64| {
        let thought = format!("{n} {}", "x".repeat(1_000));
        event(
            "agent-thinking",
            execution,
            json!({"agentId": "a", "thought": thought}),
        )
    };
    for n in 1..=10 {
        broker.post_event(&large("exec-idle", n)).await;
    }
    let idle_bytes = broker
        .wait_for_stats("the idle execution buffered", |s| s["eventsOut"] == 10)
        .await["bufferedBytes"]
        .as_u64()
        .unwrap();
    assert!((20_000..BUDGET).contains(&idle_bytes), "{idle_bytes}");

    for n in 1..=10 {
        broker.post_event(&large("exec-busy", n)).await;
    }
    let stats = broker
        .wait_for_stats("the busy execution delivered", |s| s["eventsOut"] == 20)
        .await;
    assert_eq!(stats["executionsBuffered"], 1, "{stats}");
    assert!(stats["executionsEvicted"].as_u64().unwrap() >= 1, "{stats}");
    let held = stats["bufferedBytes"].as_u64().unwrap();
    assert!(
        (20_000..=BUDGET).contains(&held),
        "only the busy one: {stats}"
    );

    let mut late = broker.connect().await;
    assert_eq!(subscribe_from(&mut late, "exec-idle", 0).await, 10);
    assert_eq!(seqs(&late.events(10).await), (1..=10).collect::<Vec<_>>());
}

/// Retention removes an execution that a client still watches: its buffer
/// goes, and so do its bytes from the total that the budget is checked
/// against (they stayed, and the budget shed live buffers for ghosts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_takes_a_removed_executions_bytes_off_the_total() {
    let broker = Broker::builder()
        .setting("RETENTION_MAX_EXECUTIONS", 1)
        .setting("RETENTION_INTERVAL_SECS", 1)
        .start()
        .await;
    let mut watcher = broker.connect().await;
    watcher.subscribe_execution("exec-old").await;
    for n in 1..=3 {
        broker.post_event(&thinking("exec-old", n)).await;
    }
    let stats = broker
        .wait_for_stats("the watched execution buffered", |s| s["eventsOut"] == 3)
        .await;
    assert!(stats["bufferedBytes"].as_u64().unwrap() > 0, "{stats}");
    // Started later, nobody watches it: kept by retention, and no buffer.
    broker.post_event(&thinking("exec-new", 1)).await;
    broker
        .wait_for_stats("nothing buffered once exec-old is removed", |s| {
            s["bufferedBytes"] == 0
        })
        .await;
}
