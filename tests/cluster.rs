//! Cluster mode, healthy: real brokers on a real `redis-server` (one per
//! test, on a free loopback port). An event posted to any node reaches the
//! subscribers of every node once and in seq order; producers on several
//! nodes make one gapless sequence; a client resumes on another node with
//! `fromSeq`; the script's keys work on a Redis Cluster; the cluster view
//! lists the live nodes without `KEYS`; and two nodes
//! sharing one MongoDB database store each event once (when `MONGODB_URI`
//! is set).
//!
//! Faults (Redis killed, connections killed, a flush, a node killed) are in
//! `cluster_faults.rs`.

mod cluster_support;
mod common;
#[path = "cluster_support/many_executions.rs"]
mod many_executions;
#[path = "cluster_support/redis_cluster.rs"]
mod redis_cluster;

use cluster_support::{accepted, assert_sequence, start_nodes, Node, Producer, Redis, Sub};
use common::{seqs, thinking, MongoDb};
use futures_util::TryStreamExt;
use many_executions::assert_no_repairs;
use mongodb::bson::{doc, Bson, Document};
use redis_cluster::RedisCluster;
use serde_json::Value;

/// Subscribes a fresh client on every node to `execution` (no replay).
async fn subscribe_everywhere(nodes: &[Node], execution: &str) -> Vec<Sub> {
    let mut subs = Vec::with_capacity(nodes.len());
    for node in nodes {
        let (sub, replayed) = node.subscriber(execution, None).await;
        assert_eq!(replayed, 0, "{}: nothing to replay yet", node.name);
        subs.push(sub);
    }
    subs
}

/// Every subscriber, and every node's store, holds exactly `expected`.
async fn assert_everywhere(
    nodes: &[Node],
    subs: &mut [Sub],
    execution: &str,
    expected: &[(u64, Value)],
) {
    let last = expected.last().expect("something was accepted").0;
    for (node, sub) in nodes.iter().zip(subs.iter_mut()) {
        let delivered = sub.events_through(last).await;
        assert_sequence(&format!("{} live", node.name), &delivered, expected);
        let stored = node.wait_stored(execution, last).await;
        assert_sequence(&format!("{} stored", node.name), &stored, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_one_node_reach_every_nodes_subscribers_once_in_order() {
    const EXECUTION: &str = "exec-fanout";
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b", "node-c"]).await;
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;

    let mut expected = Vec::new();
    for n in 1..=20 {
        let event = thinking(EXECUTION, n);
        let seq = nodes[0].post_event(&event).await;
        assert_eq!(seq, n, "the cluster numbers an execution from 1, gapless");
        expected.push((seq, event));
    }

    assert_everywhere(&nodes, &mut subs, EXECUTION, &expected).await;
    // Once more, after the stores caught up: nothing arrived twice meanwhile.
    for sub in &mut subs {
        sub.ping().await;
    }
    assert_no_repairs(&nodes).await;
    for node in &nodes {
        let stats = node.stats().await;
        assert_eq!(stats["node"], node.name.as_str(), "{stats}");
        assert_eq!(
            stats["eventsOut"], 20,
            "{}: one delivery each: {stats}",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_on_two_nodes_make_one_gapless_sequence_seen_alike_everywhere() {
    const ALTERNATING: &str = "exec-alternating";
    const CONCURRENT: &str = "exec-concurrent";
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b", "node-c"]).await;
    let mut alternating_subs = subscribe_everywhere(&nodes, ALTERNATING).await;
    let mut concurrent_subs = subscribe_everywhere(&nodes, CONCURRENT).await;

    // One producer, switching node at every event.
    let mut expected = Vec::new();
    for n in 1..=20 {
        let event = thinking(ALTERNATING, n);
        let seq = nodes[(n % 2) as usize].post_event(&event).await;
        assert_eq!(seq, n, "posted to {}", nodes[(n % 2) as usize].name);
        expected.push((seq, event));
    }
    assert_everywhere(&nodes, &mut alternating_subs, ALTERNATING, &expected).await;

    // Two producers at once, one per node, their events told apart by `n`.
    let mut on_a = Producer::start(CONCURRENT, 1, &[&nodes[0]]);
    let mut on_b = Producer::start(CONCURRENT, 1001, &[&nodes[1]]);
    on_a.wait_for("30 accepted", |p| p.accepted >= 30).await;
    on_b.wait_for("30 accepted", |p| p.accepted >= 30).await;
    let (from_a, from_b) = (on_a.stop().await, on_b.stop().await);
    for outcome in from_a.iter().chain(&from_b) {
        assert_eq!(
            outcome.status, 202,
            "{} refused {}",
            outcome.node, outcome.answer
        );
    }
    // Each producer's own events are numbered in the order it posted them…
    for own in [&from_a, &from_b] {
        let own: Vec<u64> = own.iter().filter_map(|o| o.seq()).collect();
        assert!(own.windows(2).all(|w| w[0] < w[1]), "{own:?}");
    }
    // …and together they are 1..=N, no seq twice, none missing.
    let all: Vec<_> = from_a.into_iter().chain(from_b).collect();
    let expected = accepted(&all);
    let want: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs_of(&expected), want);
    assert_everywhere(&nodes, &mut concurrent_subs, CONCURRENT, &expected).await;
    assert_no_repairs(&nodes).await;
}

fn seqs_of(expected: &[(u64, Value)]) -> Vec<u64> {
    expected.iter().map(|(seq, _)| *seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_from_seq() {
    const QUIET: &str = "exec-resume";
    const BUSY: &str = "exec-resume-busy";
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    // Read part of an execution on A, leave, come back on B.
    let (mut on_a, _) = a.subscriber(QUIET, None).await;
    let mut expected = Vec::new();
    for n in 1..=10 {
        let event = thinking(QUIET, n);
        expected.push((a.post_event(&event).await, event));
    }
    let seen = on_a.events(4).await;
    assert_sequence("node-a before leaving", &seen, &expected[..4]);
    drop(on_a);
    b.wait_stored(QUIET, 10).await;
    let (mut on_b, replayed) = b.subscriber(QUIET, Some(4)).await;
    assert_eq!(replayed, 6, "node-b replays 5..=10");
    for n in 11..=15 {
        let event = thinking(QUIET, n);
        let node = if n % 2 == 0 { a } else { b };
        expected.push((node.post_event(&event).await, event));
    }
    let rest = on_b.events_through(15).await;
    assert_sequence("node-b after resuming", &rest, &expected[4..]);

    // The same while producers keep posting to both nodes: the client leaves
    // A and resumes on B at the very moment events are sequenced.
    let mut producer = Producer::start(BUSY, 1, &[a, b]);
    let (mut on_a, _) = a.subscriber(BUSY, Some(0)).await;
    let seen = on_a.events(8).await;
    assert_eq!(seqs(&seen), (1..=8).collect::<Vec<_>>());
    drop(on_a);
    producer.wait_for("20 accepted", |p| p.accepted >= 20).await;
    let (mut on_b, replayed) = b.subscriber(BUSY, Some(8)).await;
    let at_subscribe = producer.progress().accepted;
    producer
        .wait_for("20 more accepted", |p| p.accepted >= at_subscribe + 20)
        .await;
    let outcomes = producer.stop().await;
    let expected = accepted(&outcomes);
    assert_eq!(expected.len(), outcomes.len(), "every post was accepted");
    let last = expected.last().unwrap().0;
    let rest = on_b.events_through(last).await;
    assert!(replayed <= rest.len() as u64, "replayed {replayed}");
    assert_sequence("node-b resuming mid-stream", &rest, &expected[8..]);
}

/// POSTs `body` to `node` under `key`: (status, answer).
async fn post_keyed(node: &Node, key: &str, body: &Value) -> (u16, Value) {
    let http = reqwest::Client::new();
    let (status, answer, _) =
        common::post_keyed_url(&http, &node.url("/api/events"), key, body).await;
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_batch_retried_on_two_nodes_is_sequenced_stored_and_delivered_once() {
    const EXECUTION: &str = "exec-keyed";
    let redis = Redis::start().await;
    let nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;
    let batch = |first: u64| -> Value {
        Value::Array((first..first + 5).map(|n| thinking(EXECUTION, n)).collect())
    };

    // A producer's retry lands on the other node.
    let (status, first) = post_keyed(a, "batch-1", &batch(1)).await;
    assert_eq!(status, 202, "{first}");
    let (status, retry) = post_keyed(b, "batch-1", &batch(1)).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry, first, "node-b answers with node-a's seqs");

    // Both nodes at once, under a new key.
    let body = batch(6);
    let (on_a, on_b) = tokio::join!(
        post_keyed(a, "batch-2", &body),
        post_keyed(b, "batch-2", &body)
    );
    assert_eq!((on_a.0, on_b.0), (202, 202), "{} / {}", on_a.1, on_b.1);
    assert_eq!(on_a.1, on_b.1, "the same seqs from both nodes");

    // Another batch under a used key is refused on either node.
    let (status, answer) = post_keyed(b, "batch-1", &batch(50)).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["error"]["code"], "idempotency-key-reused",
        "{answer}"
    );

    // Ten events went in once each: 1..=10, then the unkeyed marker is 11.
    let marker = thinking(EXECUTION, 99);
    assert_eq!(a.post_event(&marker).await, 11, "the retries took no seq");
    let mut expected: Vec<(u64, Value)> = (1..=10).map(|n| (n, thinking(EXECUTION, n))).collect();
    expected.push((11, marker));
    assert_everywhere(&nodes, &mut subs, EXECUTION, &expected).await;
    assert_no_repairs(&nodes).await;
}

// ---------------------------------------------------------------- Redis Cluster

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_keys_share_one_slot_and_work_on_a_redis_cluster() {
    const EXECUTION: &str = "exec-redis-cluster";
    let cluster = RedisCluster::start(3).await;
    let masters = &cluster.masters;

    // Both keys of the script hash to one slot, so one master runs it.
    let keys = [
        "agent-events:{agent-events}:seq",
        "agent-events:{agent-events}:events",
    ];
    let slots = [
        masters[0]
            .cmd::<u16>(&["CLUSTER", "KEYSLOT", keys[0]])
            .await,
        masters[0]
            .cmd::<u16>(&["CLUSTER", "KEYSLOT", keys[1]])
            .await,
    ];
    assert_eq!(
        slots[0], slots[1],
        "the counters and the stream share a slot"
    );
    let owner = &masters[cluster.owner_of(slots[0]).await];

    // Brokers on the master that serves the slot: the cluster works end to end.
    let nodes = start_nodes(owner, &["node-a", "node-b"]).await;
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;
    let mut expected = Vec::new();
    for n in 1..=10 {
        let event = thinking(EXECUTION, n);
        let seq = nodes[(n % 2) as usize].post_event(&event).await;
        assert_eq!(seq, n);
        expected.push((seq, event));
    }
    assert_everywhere(&nodes, &mut subs, EXECUTION, &expected).await;
    let exists: u64 = owner.cmd(&["EXISTS", keys[0], keys[1]]).await;
    assert_eq!(exists, 2, "both keys live on the slot's master");
    // The cluster view's set and announcements share that slot too.
    nodes[0]
        .wait_for("/admin/stats", "both nodes in clusterNodes", |stats| {
            node_names(stats) == ["node-a", "node-b"]
        })
        .await;
    let length: u64 = owner.cmd(&["XLEN", keys[1]]).await;
    assert_eq!(length, 10);
}

/// The nodes' set of IDs, beside the other keys of the hash tag.
const NODE_IDS: &str = "agent-events:{agent-events}:nodes";

/// The IDs in `/admin/stats`'s `clusterNodes`, sorted.
fn node_names(stats: &Value) -> Vec<String> {
    let mut names: Vec<String> = stats["clusterNodes"]
        .as_array()
        .map(|nodes| {
            let ids = nodes.iter().filter_map(|n| n["nodeId"].as_str());
            ids.map(str::to_owned).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The cluster view (`/admin/stats`, `clusterNodes`) reads a set of node
/// IDs and their announcements, not `KEYS` over a pattern, which walks the
/// whole keyspace and blocks Redis meanwhile: this Redis has `KEYS` renamed
/// away, as operators do. A node that announced once and has stopped (its
/// announcement ran out) is left out and leaves the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_lists_the_live_nodes_without_keys() {
    let redis = Redis::start_with(&["--rename-command", "KEYS", ""]).await;
    let nodes = start_nodes(&redis, &["node-a", "node-b"]).await;
    let _: u64 = redis.cmd(&["SADD", NODE_IDS, "node-gone"]).await;
    nodes[0]
        .wait_for(
            "/admin/stats",
            "node-a and node-b in clusterNodes",
            |stats| node_names(stats) == ["node-a", "node-b"],
        )
        .await;
    let gone_left: u64 = redis.cmd(&["SISMEMBER", NODE_IDS, "node-gone"]).await;
    assert_eq!(
        gone_left, 0,
        "a node without an announcement stays in the set"
    );
}

/// Two nodes on one MongoDB database, each writing every event it reads
/// from the stream: every event reaches the subscribers of both nodes once
/// and in order, the database holds it once (the unique index turns the
/// second node's write into a no-op), the execution's summary counts it
/// once, and both nodes' history APIs read the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_one_mongodb_database_store_each_event_once() {
    const EXECUTION: &str = "exec-shared";
    const EVENTS: u64 = 20;
    let Some(db) = MongoDb::for_test("cluster", "shared") else {
        return;
    };
    let redis = Redis::start().await;
    let nodes = vec![
        Node::start_on_mongodb("mongo-a", &redis, &db).await,
        Node::start_on_mongodb("mongo-b", &redis, &db).await,
    ];
    let mut subs = subscribe_everywhere(&nodes, EXECUTION).await;

    // Posted to both nodes in turn.
    let mut expected = Vec::new();
    for n in 1..=EVENTS {
        let event = thinking(EXECUTION, n);
        let seq = nodes[n as usize % 2].post_event(&event).await;
        assert_eq!(seq, n, "the cluster numbers an execution from 1, gapless");
        expected.push((seq, event));
    }
    assert_everywhere(&nodes, &mut subs, EXECUTION, &expected).await;
    // Both nodes have written every event (the second write of each a no-op).
    for node in &nodes {
        node.wait_for("/admin/stats", "every event stored", |s| {
            s["eventsStored"].as_u64() >= Some(EVENTS)
        })
        .await;
    }
    for sub in &mut subs {
        sub.ping().await;
    }
    assert_no_repairs(&nodes).await;

    let database = db.database().await;
    let stored: Vec<Document> = database
        .collection::<Document>("agentEvents")
        .find(doc! { "executionId": EXECUTION })
        .sort(doc! { "seq": 1 })
        .await
        .expect("find the stored events")
        .try_collect()
        .await
        .expect("read the stored events");
    let stored_seqs: Vec<i64> = stored
        .iter()
        .map(|e| match e.get("seq") {
            Some(Bson::Int64(seq)) => *seq,
            Some(Bson::Int32(seq)) => i64::from(*seq),
            other => panic!("seq {other:?} in {e}"),
        })
        .collect();
    assert_eq!(
        stored_seqs,
        (1..=EVENTS as i64).collect::<Vec<_>>(),
        "each event once in the shared database"
    );
    // The summary is updated by both nodes' appends; it must count each event once.
    for node in &nodes {
        let listed = node.get_json("/api/executions").await;
        let summary = &listed["executions"][0];
        assert_eq!(summary["executionId"], EXECUTION, "{}: {listed}", node.name);
        assert_eq!(summary["eventCount"], EVENTS, "{}: {listed}", node.name);
        assert_eq!(summary["lastSeq"], EVENTS, "{}: {listed}", node.name);
    }
    db.finish().await;
}
