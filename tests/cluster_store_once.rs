//! Store once per cluster (`cluster_store_once`, MongoDB): two nodes on one
//! Redis and one database; one node at a time stores a partition (its
//! lease), reading it through a Redis consumer group and acking what it
//! stored, while every node still delivers every event to its own
//! subscribers. When a dead node's lease runs out, another node takes the
//! partition over and stores what the dead one took and never acked. A
//! node passes over the events nobody on it watches, and a subscriber that
//! comes later still gets every seq once, in order.
//!
//! Runs when `MONGODB_URI` is set (scripts/test starts a SecantusDB) and says
//! `SKIPPED` otherwise.

mod cluster_support;
mod common;
#[path = "cluster_support/many_executions.rs"]
mod many_executions;

use agent_events_actors::cluster_keys::ClusterKeys;
use agent_events_actors::stream_store::GROUP;
use cluster_support::{accepted, assert_sequence, Node, Producer, Redis};
use common::{MongoDb, STEP};
use many_executions::{assert_delivered_everywhere, assert_no_repairs, watch_everywhere, Posted};
use mongodb::bson::{doc, Document};
use serde_json::json;
use std::time::{Duration, Instant};

/// Partitions of the stream in this file's brokers.
const PARTITIONS: usize = 2;
/// How long a silent node's lease lasts: the shortest allowed.
const CLAIM_IDLE_MS: u64 = 3000;

/// A store-once node named `name` on `redis` and `db`.
async fn start_store_once(name: &str, redis: &Redis, db: &MongoDb) -> Node {
    let settings = [
        ("CLUSTER_STORE_ONCE", "true".to_owned()),
        ("CLUSTER_STORE_CLAIM_IDLE_MS", CLAIM_IDLE_MS.to_string()),
        ("CLUSTER_PARTITIONS", PARTITIONS.to_string()),
    ];
    Node::start_with(name, &redis.url(), Some(db), &settings).await
}

/// Polls until the group has no pending entry on any partition (all acked).
async fn wait_all_acked(redis: &Redis, keys: &ClusterKeys) {
    let deadline = Instant::now() + STEP;
    loop {
        let mut pending = 0;
        for partition in keys.partitions() {
            let summary: redis::Value = redis.cmd(&["XPENDING", &partition.stream, GROUP]).await;
            if let redis::Value::Array(fields) = summary {
                if let Some(redis::Value::Int(n)) = fields.first() {
                    pending += n;
                }
            }
        }
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} entries never acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events stored in the database, per execution.
async fn stored_count(db: &MongoDb, execution: &str) -> u64 {
    db.database()
        .await
        .collection::<Document>("agentEvents")
        .count_documents(doc! { "executionId": execution })
        .await
        .expect("count the stored events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_stored_by_one_node_and_delivered_by_all() {
    let Some(db) = MongoDb::for_test("cluster_store_once", "once") else {
        return;
    };
    let redis = Redis::start().await;
    let nodes = [
        start_store_once("once-a", &redis, &db).await,
        start_store_once("once-b", &redis, &db).await,
    ];
    let mut posted = Posted::new("once", 6);
    let mut subs = watch_everywhere(&nodes, &posted).await;
    posted.post_rounds(&nodes, 5).await;
    assert_delivered_everywhere(&nodes, &mut subs, &posted).await;

    for (execution, expected) in posted.executions.iter().zip(&posted.expected) {
        let stored = nodes[0].wait_stored(execution, expected.len() as u64).await;
        cluster_support::assert_sequence(&format!("stored {execution}"), &stored, expected);
        assert_eq!(stored_count(&db, execution).await, expected.len() as u64);
    }
    wait_all_acked(&redis, &ClusterKeys::new("agent-events", PARTITIONS)).await;
    // Each event was written by one node: together they stored each once
    // (every node storing every event would make this twice the total).
    let mut written = 0;
    for node in &nodes {
        written += node.stats().await["eventsStored"].as_u64().unwrap_or(0);
    }
    assert_eq!(written, posted.total() as u64, "each event stored once");
    assert_no_repairs(&nodes).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_dead_node_took_and_never_acked_are_claimed_and_stored() {
    const EXECUTION: &str = "exec-orphaned";
    let Some(db) = MongoDb::for_test("cluster_store_once", "claimed") else {
        return;
    };
    let redis = Redis::start().await;
    let keys = ClusterKeys::new("agent-events", PARTITIONS);
    let stream = keys.partition(keys.partition_of(EXECUTION)).stream.clone();

    // A node that held the partition, read three entries through the group
    // and died before storing them: they are pending with it, no consumer
    // gets them from `>` any more, and its lease has a while to run.
    let lease = keys.partition(keys.partition_of(EXECUTION)).store_lease();
    let _: String = redis
        .cmd(&["SET", &lease, "dead-node", "PX", &CLAIM_IDLE_MS.to_string()])
        .await;
    let _: String = redis
        .cmd(&["XGROUP", "CREATE", &stream, GROUP, "0", "MKSTREAM"])
        .await;
    for seq in 1..=3u64 {
        let body = json!({
            "type": "agent-thinking",
            "executionId": EXECUTION,
            "timestamp": "2026-01-01T00:00:00.000Z",
            "agentId": "agent-1",
            "thought": format!("step {seq}"),
        })
        .to_string();
        let _: String = redis
            .cmd(&[
                "XADD",
                &stream,
                "*",
                "e",
                EXECUTION,
                "s",
                &seq.to_string(),
                "b",
                &body,
                "n",
                "dead",
            ])
            .await;
    }
    let taken: redis::Value = redis
        .cmd(&[
            "XREADGROUP",
            "GROUP",
            GROUP,
            "dead-node",
            "STREAMS",
            &stream,
            ">",
        ])
        .await;
    assert!(matches!(taken, redis::Value::Array(_)), "{taken:?}");

    let node = start_store_once("claimer", &redis, &db).await;
    // It stores them once the dead node's lease ran out.
    let stored = node.wait_stored(EXECUTION, 3).await;
    let owner: String = redis.cmd(&["GET", &lease]).await;
    assert_eq!(owner, "claimer", "the lease passed to the live node");
    assert_eq!(common::seqs(&stored), [1, 2, 3]);
    assert_eq!(stored_count(&db, EXECUTION).await, 3);
    wait_all_acked(&redis, &keys).await;
    db.finish().await;
}

/// A node stopped gracefully gives its store leases up at once, so that a
/// rolling restart pauses no partition's storing until the leases run out;
/// the other node takes them and stores what is posted next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_gives_its_store_leases_up() {
    let Some(db) = MongoDb::for_test("cluster_store_once", "released") else {
        return;
    };
    let redis = Redis::start().await;
    let keys = ClusterKeys::new("agent-events", PARTITIONS);
    let leases: Vec<String> = keys.partitions().iter().map(|p| p.store_lease()).collect();
    let mut first = start_store_once("released-a", &redis, &db).await;
    // Alone, it takes every lease.
    let deadline = Instant::now() + STEP;
    for lease in &leases {
        loop {
            let owner: Option<String> = redis.cmd(&["GET", lease]).await;
            if owner.as_deref() == Some("released-a") {
                break;
            }
            assert!(Instant::now() < deadline, "{lease}: {owner:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let second = start_store_once("released-b", &redis, &db).await;
    first.stop_gracefully().await;
    for lease in &leases {
        let owner: Option<String> = redis.cmd(&["GET", lease]).await;
        assert_ne!(owner.as_deref(), Some("released-a"), "{lease} kept");
    }
    let mut posted = Posted::new("released", 4);
    posted.post_rounds(std::slice::from_ref(&second), 2).await;
    for (execution, expected) in posted.executions.iter().zip(&posted.expected) {
        let stored = second.wait_stored(execution, expected.len() as u64).await;
        cluster_support::assert_sequence(&format!("stored {execution}"), &stored, expected);
    }
    db.finish().await;
}

/// A node passes over the events of executions nobody on it watches (it
/// neither parses nor buffers them: the shared store keeps them), and a
/// subscriber that arrives there later, while events keep coming, still
/// gets every seq once, in order: the history from the store (which the
/// store-once writer fills a few milliseconds behind the stream), then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_on_a_node_that_passed_over_its_execution_misses_nothing() {
    let Some(db) = MongoDb::for_test("cluster_store_once", "passed") else {
        return;
    };
    let redis = Redis::start().await;
    let producing = start_store_once("passed-a", &redis, &db).await;
    let watching = start_store_once("passed-b", &redis, &db).await;
    for round in 0..4 {
        // Posted to the first node only; nobody watches it on either node.
        let execution = format!("exec-passed-{round}");
        let mut producer = Producer::start(&execution, 1, &[&producing]);
        producer.wait_for("10 accepted", |p| p.accepted >= 10).await;
        let (mut late, _) = watching.subscriber(&execution, Some(0)).await;
        let at_subscribe = producer.progress().accepted;
        producer
            .wait_for("10 more accepted", |p| p.accepted >= at_subscribe + 10)
            .await;
        let outcomes = producer.stop().await;
        let expected = accepted(&outcomes);
        assert_eq!(expected.len(), outcomes.len(), "every post was accepted");
        let last = expected.last().expect("events were posted").0;
        let got = late.events_through(last).await;
        assert_sequence(&format!("late subscriber of {execution}"), &got, &expected);
    }
    assert!(
        watching.cluster_counter("passed-over").await > 0,
        "the node passed over nothing"
    );
    db.finish().await;
}
