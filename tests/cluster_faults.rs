//! Cluster mode under faults, with real brokers on a real `redis-server` of
//! the test's own: Redis SIGKILLed and restarted (empty) while a producer
//! posts, every client connection killed by Redis, the data flushed in the
//! middle of an execution, and a broker SIGKILLed and restarted on its
//! DATA_DIR. After each, every event that got a 202 reaches every node's
//! subscribers and store exactly once, in seq order, and nothing refused
//! shows up anywhere.

mod cluster_support;
mod common;

use cluster_support::{
    accepted, assert_refusals_are_redis_unavailable, assert_sequence, start_nodes, Node, Outcome,
    Producer, Redis, Sub,
};
use common::thinking;
use serde_json::Value;

/// A client on every node subscribed to `execution` from its start.
async fn subscribe_everywhere(nodes: &[Node], execution: &str) -> Vec<Sub> {
    let mut subs = Vec::with_capacity(nodes.len());
    for node in nodes {
        subs.push(node.subscriber(execution, Some(0)).await.0);
    }
    subs
}

/// Every node delivered to its subscriber, and stored, exactly the accepted
/// events of `outcomes`, in seq order; returns them.
async fn assert_converged(
    nodes: &[Node],
    subs: &mut [Sub],
    execution: &str,
    outcomes: &[Outcome],
) -> Vec<(u64, Value)> {
    let expected = accepted(outcomes);
    let last = expected.last().expect("something was accepted").0;
    let refused: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status != 202)
        .map(|o| {
            format!(
                "n {} to {}: {} {}",
                o.event["metadata"]["n"], o.node, o.status, o.answer
            )
        })
        .collect();
    for (node, sub) in nodes.iter().zip(subs.iter_mut()) {
        let delivered = sub.events_through(last).await;
        let what = format!("{} live (refused posts: {refused:#?})", node.name);
        assert_sequence(&what, &delivered, &expected);
        let stored = node.wait_stored(execution, last).await;
        assert_sequence(&format!("{} stored", node.name), &stored, &expected);
    }
    expected
}

/// Posts `thinking(execution, n)` for each n, to the nodes in turn; every
/// post must be accepted with the next seq after `after`.
async fn post_in_turn(
    nodes: &[&Node],
    execution: &str,
    ns: std::ops::RangeInclusive<u64>,
    after: u64,
) -> Vec<(u64, Value)> {
    let mut posted = Vec::new();
    for (i, n) in ns.enumerate() {
        let node = nodes[i % nodes.len()];
        let event = thinking(execution, n);
        let seq = node.post_event(&event).await;
        assert_eq!(
            seq,
            after + i as u64 + 1,
            "{}: {event} got seq {seq}",
            node.name
        );
        posted.push((seq, event));
    }
    posted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_loses_and_repeats_no_accepted_event() {
    const EXECUTION: &str = "exec-outage";
    let mut redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b", "node-c"]).await;
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;
    let mut producer = Producer::start(EXECUTION, 1, &nodes.iter().collect::<Vec<_>>());

    producer.wait_for("10 accepted", |p| p.accepted >= 10).await;
    redis.kill();
    producer
        .wait_for("3 refused during the outage", |p| p.rejected >= 3)
        .await;
    for node in &nodes {
        let health = node.wait_redis_state("failing").await;
        assert_eq!(health["status"], "degraded", "{health}");
    }
    let before_restart = producer.progress().accepted;
    redis.restart().await;
    producer
        .wait_for("10 accepted after the restart", |p| {
            p.accepted >= before_restart + 10
        })
        .await;
    let outcomes = producer.stop().await;

    assert_converged(&nodes, &mut subs, EXECUTION, &outcomes).await;
    assert_refusals_are_redis_unavailable(&outcomes);
    for node in &nodes {
        node.wait_redis_state("ok").await;
        let stats = node.stats().await;
        assert!(
            stats["cluster"]["reconnect"].as_u64() >= Some(1),
            "{}: {stats}",
            node.name
        );
        assert_eq!(
            stats["cluster"]["gap-unfilled"], 0,
            "{}: {stats}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_mid_stream_heals_without_loss_or_duplicate() {
    const EXECUTION: &str = "exec-client-kill";
    const ROUNDS: u64 = 5;
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;
    // Two producers, so that a kill often finds a publish in flight.
    let mut first = Producer::start(EXECUTION, 1, &[a, b]);
    let second = Producer::start(EXECUTION, 100_001, &[b, a]);

    for round in 1..=ROUNDS {
        let at = first.progress().accepted;
        first
            .wait_for("10 more accepted", |p| p.accepted >= at + 10)
            .await;
        // Every normal client: both nodes' readers, sequencers, announcers.
        let killed: u64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).await;
        assert!(killed >= 2, "CLIENT KILL killed {killed} connections");
        for node in &nodes {
            node.wait_counter("reconnect", round).await;
        }
    }
    let at = first.progress().accepted;
    first
        .wait_for("10 accepted after the last kill", |p| p.accepted >= at + 10)
        .await;
    let mut outcomes = first.stop().await;
    outcomes.extend(second.stop().await);

    assert_converged(&nodes, &mut subs, EXECUTION, &outcomes).await;
    assert_refusals_are_redis_unavailable(&outcomes);
    for node in &nodes {
        node.wait_redis_state("ok").await;
        let stats = node.stats().await;
        assert_eq!(
            stats["cluster"]["gap-unfilled"], 0,
            "{}: {stats}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_mid_execution_continues_the_seq_and_every_node_converges() {
    const EXECUTION: &str = "exec-flush";
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let both: Vec<&Node> = nodes.iter().collect();
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;

    let mut expected = post_in_turn(&both, EXECUTION, 1..=6, 0).await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        let delivered = sub.events_through(6).await;
        assert_sequence(
            &format!("{} before the flush", node.name),
            &delivered,
            &expected,
        );
    }

    let flushed: String = redis.cmd(&["FLUSHALL"]).await;
    assert_eq!(flushed, "OK");
    let keys: Vec<String> = redis.cmd(&["KEYS", "*"]).await;
    assert!(keys.is_empty(), "Redis is empty: {keys:?}");

    // The counter is gone from Redis; the nodes' floors carry the execution on.
    let after = post_in_turn(&both, EXECUTION, 7..=12, 6).await;
    for (node, sub) in nodes.iter().zip(&mut subs) {
        let delivered = sub.events_through(12).await;
        assert_sequence(
            &format!("{} after the flush", node.name),
            &delivered,
            &after,
        );
    }
    expected.extend(after);
    for node in &nodes {
        let stored = node.wait_stored(EXECUTION, 12).await;
        assert_sequence(&format!("{} stored", node.name), &stored, &expected);
        let stats = node.stats().await;
        for counter in ["duplicate-dropped", "gap-unfilled"] {
            assert_eq!(stats["cluster"][counter], 0, "{}: {stats}", node.name);
        }
    }
    // A new execution still starts at 1.
    let fresh = thinking("exec-after-flush", 1);
    assert_eq!(nodes[1].post_event(&fresh).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_on_its_data_dir_and_catches_up() {
    const EXECUTION: &str = "exec-rejoin";
    let redis = Redis::start().await;
    let mut nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let (mut sub, _) = nodes[0].subscriber(EXECUTION, None).await;

    // A client reads 1..=5 on A, which stores them; then A dies.
    let mut expected = post_in_turn(&[&nodes[1]], EXECUTION, 1..=5, 0).await;
    let seen = sub.events_through(5).await;
    assert_sequence("node-a before dying", &seen, &expected);
    nodes[0].wait_stored(EXECUTION, 5).await;
    let port = nodes[0].port;
    nodes[0].kill();
    drop(sub);

    // Published while A is down: only the stream has them for A.
    expected.extend(post_in_turn(&[&nodes[1]], EXECUTION, 6..=15, 5).await);

    nodes[0].restart().await;
    assert_eq!(nodes[0].port, port, "back on its port");
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut sub, replayed) = a.subscriber(EXECUTION, Some(5)).await;
    assert!(replayed <= 10, "replayed {replayed}");
    expected.extend(post_in_turn(&[b, a], EXECUTION, 16..=18, 15).await);
    let rest = sub.events_through(18).await;
    assert_sequence("node-a resumed from 5", &rest, &expected[5..]);
    let stored = a.wait_stored(EXECUTION, 18).await;
    assert_sequence("node-a stored", &stored, &expected);

    // It read the stream from the start: 1..=5 were in its store already.
    let stats = a.stats().await;
    assert!(
        stats["cluster"]["duplicate-dropped"].as_u64() >= Some(5),
        "{stats}"
    );
    assert_eq!(stats["cluster"]["gap-unfilled"], 0, "{stats}");
    // Both nodes are in the cluster view, A at its address.
    let view = a
        .wait_for("/admin/stats", "both nodes in clusterNodes", |s| {
            ["node-a", "node-b"].iter().all(|name| {
                s["clusterNodes"]
                    .as_array()
                    .is_some_and(|nodes| nodes.iter().any(|n| n["nodeId"] == *name))
            })
        })
        .await;
    let me = view["clusterNodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == "node-a")
        .unwrap();
    assert_eq!(me["address"], format!("127.0.0.1:{port}"), "{view}");
}
