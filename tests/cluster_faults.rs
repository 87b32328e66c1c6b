//! Cluster mode under faults, with real brokers on a real `redis-server` of
//! the test's own: Redis SIGKILLed and restarted (empty) while a producer
//! posts to every node (each goes on alone, provisionally, and the cluster
//! converges after), one node alone through the outage and a crash of its
//! own, every client connection killed by Redis, the data flushed in the
//! middle of an execution, and a broker SIGKILLed and restarted on its
//! DATA_DIR. After each, every event that got a 202 reaches every node's
//! subscribers and store exactly once, in seq order, and nothing refused
//! shows up anywhere.

mod cluster_support;
mod common;

use cluster_support::{
    assert_each_once, assert_sequence, start_nodes, Node, Outcome, Producer, Redis, Sub,
};
use common::{seqs, thinking};
use serde_json::Value;

/// A client on every node subscribed to `execution` from its start.
async fn subscribe_everywhere(nodes: &[Node], execution: &str) -> Vec<Sub> {
    let mut subs = Vec::with_capacity(nodes.len());
    for node in nodes {
        subs.push(node.subscriber(execution, Some(0)).await.0);
    }
    subs
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

/// Nothing was refused, and once every journal is published, every node's
/// subscriber (keeping events as docs/protocol.md asks, `resync` included) and
/// store hold every accepted event exactly once, gapless, in one order the
/// same everywhere. Returns how many resyncs the subscribers got.
async fn assert_all_converge(
    nodes: &[Node],
    subs: &mut [Sub],
    execution: &str,
    outcomes: &[Outcome],
) -> usize {
    let refused: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 202).collect();
    assert!(refused.is_empty(), "nothing is refused: {refused:#?}");
    wait_journals_drained(nodes).await;
    let total = outcomes.len() as u64;
    let mut finals = Vec::new();
    let mut resyncs = 0;
    for (node, sub) in nodes.iter().zip(subs.iter_mut()) {
        let (held, resynced) = match sub.events_resynced_through(total).await {
            Ok(converged) => converged,
            Err(why) => panic!("{why}\n{}", describe(nodes, execution).await),
        };
        assert_each_once(&format!("{} live", node.name), &held, outcomes);
        let stored = node.wait_stored(execution, total).await;
        assert_each_once(&format!("{} stored", node.name), &stored, outcomes);
        assert_eq!(seqs(&stored), seqs(&held));
        resyncs += resynced;
        finals.push(held);
    }
    for (node, held) in nodes.iter().zip(&finals).skip(1) {
        assert_eq!(held, &finals[0], "{} ends as {}", node.name, nodes[0].name);
    }
    resyncs
}

/// Each node's stored events (`n@seq`) and cluster counters, for a failure message.
async fn describe(nodes: &[Node], execution: &str) -> String {
    let mut out = String::new();
    for node in nodes {
        let stored: Vec<String> = node
            .stored(execution)
            .await
            .iter()
            .map(|e| format!("{}@{}", e["metadata"]["n"], e["seq"]))
            .collect();
        let stats = node.stats().await;
        out += &format!(
            "{} stored {stored:?}\n  cluster {}\n",
            node.name, stats["cluster"]
        );
    }
    out
}

/// Waits until no node has provisional events waiting for Redis.
async fn wait_journals_drained(nodes: &[Node]) {
    for node in nodes {
        node.wait_for("/admin/stats", "an empty fallback journal", |s| {
            s["fallbackPending"] == 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_every_node_goes_on_and_all_converge() {
    const EXECUTION: &str = "exec-outage";
    // Persistence on, as docs/cluster.md asks of a cluster: a 202 means "in the
    // stream", and an acknowledged entry that no node had read yet must
    // survive the kill. (A Redis that loses data is the flush test's case.)
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let nodes = start_nodes(&redis, &["node-a", "node-b", "node-c"]).await;
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;
    // One execution, posted to the three nodes in turn: during the outage
    // each sequences it on its own, so their provisional seqs collide.
    let mut producer = Producer::start(EXECUTION, 1, &nodes.iter().collect::<Vec<_>>());

    producer.wait_for("10 accepted", |p| p.accepted >= 10).await;
    redis.kill();
    for node in &nodes {
        let health = node.wait_redis_state("failing").await;
        assert_eq!(health["status"], "degraded", "{health}");
    }
    let before = producer.progress().accepted;
    producer
        .wait_for("30 accepted during the outage", |p| {
            p.accepted >= before + 30
        })
        .await;
    for node in &nodes {
        node.wait_counter("fallback", 1).await;
    }
    let before_restart = producer.progress().accepted;
    redis.restart().await;
    producer
        .wait_for("10 accepted after the restart", |p| {
            p.accepted >= before_restart + 10
        })
        .await;
    let outcomes = producer.stop().await;

    let resyncs = assert_all_converge(&nodes, &mut subs, EXECUTION, &outcomes).await;
    let mut counted = 0;
    for node in &nodes {
        node.wait_redis_state("ok").await;
        let stats = node.stats().await;
        assert!(stats["cluster"]["reconnect"].as_u64() >= Some(1), "{stats}");
        assert!(
            stats["cluster"]["republished"].as_u64() >= Some(1),
            "{stats}"
        );
        assert_eq!(
            stats["cluster"]["gap-unfilled"], 0,
            "{}: {stats}",
            node.name
        );
        counted += stats["cluster"]["resync"].as_u64().unwrap_or(0);
    }
    assert!(
        resyncs >= 1,
        "colliding provisional seqs are re-synced, visibly"
    );
    assert!(counted >= 1, "and counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_serves_its_producers_and_journals_through_a_crash() {
    const EXECUTION: &str = "exec-alone";
    let mut redis = Redis::start().await;
    let mut nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;
    let mut posted = post_in_turn(&[&nodes[0]], EXECUTION, 1..=5, 0).await;
    // Read everywhere before Redis goes, empty: this Redis keeps nothing.
    assert_sequence("node-b before", &subs[1].events_through(5).await, &posted);

    redis.kill();
    nodes[0].wait_redis_state("failing").await;
    for n in 6..=15 {
        let event = thinking(EXECUTION, n);
        let (status, answer) = nodes[0].post(&event).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["provisional"], true, "{answer}");
        assert_eq!(answer["events"][0]["seq"], n, "{answer}");
        posted.push((n, event));
    }
    // The node's own subscribers see them at once, in order.
    let live = subs[0].events_through(15).await;
    assert_sequence("node-a during the outage", &live, &posted);
    let stats = nodes[0].stats().await;
    assert_eq!(stats["fallbackPending"], 10, "{stats}");
    assert_eq!(stats["cluster"]["fallback"], 10, "{stats}");

    // Killed with the journal unpublished: it is in the store, not lost.
    nodes[0].kill();
    nodes[0].restart().await;
    // The journal is read back as the node starts.
    nodes[0]
        .wait_for("/admin/stats", "the journal read back", |s| {
            s["fallbackPending"] == 10
        })
        .await;

    redis.restart().await;
    wait_journals_drained(&nodes).await;
    let elsewhere = subs[1].events_through(15).await;
    assert_sequence("node-b after the outage", &elsewhere, &posted[5..]);
    for node in &nodes {
        let stored = node.wait_stored(EXECUTION, 15).await;
        assert_sequence(&format!("{} stored", node.name), &stored, &posted);
        let stats = node.stats().await;
        assert_eq!(
            stats["cluster"]["resync"], 0,
            "{}: nobody else wrote: {stats}",
            node.name
        );
    }
    assert_eq!(nodes[0].cluster_counter("republished").await, 10);

    // Back to normal: a new event is sequenced by Redis, seen everywhere.
    let event = thinking(EXECUTION, 16);
    assert_eq!(nodes[1].post_event(&event).await, 16);
    posted.push((16, event));
    let mut again = nodes[0].subscriber(EXECUTION, Some(0)).await.0;
    assert_sequence("node-a replays", &again.events_through(16).await, &posted);
    assert_sequence(
        "node-b live",
        &subs[1].events_through(16).await,
        &posted[15..],
    );
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

    // A publish cut off twice goes to the fallback journal: its seq may
    // change when it is published, so convergence is checked by content.
    assert_all_converge(&nodes, &mut subs, EXECUTION, &outcomes).await;
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
