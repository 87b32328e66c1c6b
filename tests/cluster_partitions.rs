//! Cluster mode with the stream split into partitions on one Redis server:
//! executions spread over the partitions, batches that mix executions are
//! sequenced per partition, and every subscriber of every node gets every
//! seq of its execution once, in order; a node that was down, and a reader
//! whose connection was killed, read every partition on from where they
//! stopped.
//!
//! The unpartitioned cluster (`cluster_partitions = 1`) is `cluster.rs` and
//! `cluster_faults.rs`; a Redis Cluster is `redis_cluster.rs`.

mod cluster_support;
mod common;
#[path = "cluster_support/many_executions.rs"]
mod many_executions;

use cluster_support::{Node, Redis};
use many_executions::{assert_delivered_everywhere, assert_no_repairs, watch_everywhere, Posted};

/// Partitions of the stream in this file's brokers.
const PARTITIONS: usize = 4;

/// Starts partitioned nodes named `names` on `redis`.
async fn start_partitioned(redis: &Redis, names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        let partitions = [("CLUSTER_PARTITIONS", PARTITIONS.to_string())];
        nodes.push(Node::start_with(name, &redis.url(), None, &partitions).await);
    }
    nodes
}

/// The stream lengths of the partitions, in partition order.
async fn stream_lengths(redis: &Redis) -> Vec<u64> {
    let mut lengths = Vec::with_capacity(PARTITIONS);
    for p in 0..PARTITIONS {
        let key = format!("agent-events:{{agent-events:p{p}}}:events");
        lengths.push(redis.cmd(&["XLEN", &key]).await);
    }
    lengths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_spread_over_partitions_and_every_subscriber_gets_every_seq_once() {
    let redis = Redis::start().await;
    let nodes = start_partitioned(&redis, &["node-a", "node-b"]).await;
    let mut posted = Posted::new("spread", 12);
    let mut subs = watch_everywhere(&nodes, &posted).await;

    posted.post_rounds(&nodes, 4).await;
    assert_delivered_everywhere(&nodes, &mut subs, &posted).await;

    let lengths = stream_lengths(&redis).await;
    assert_eq!(
        lengths.iter().sum::<u64>(),
        posted.total() as u64,
        "each event in one partition, once: {lengths:?}"
    );
    assert!(
        lengths.iter().filter(|&&n| n > 0).count() > 1,
        "the executions spread over the partitions: {lengths:?}"
    );
    let old: u64 = redis
        .cmd(&["EXISTS", "agent-events:{agent-events}:events"])
        .await;
    assert_eq!(old, 0, "no unpartitioned stream");
    assert_no_repairs(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_kill_and_a_killed_reader_connection_read_every_partition_on() {
    let redis = Redis::start().await;
    let mut nodes = start_partitioned(&redis, &["node-a", "node-b"]).await;
    let mut posted = Posted::new("resume", 8);
    posted.post_rounds(&nodes, 2).await;
    for (execution, expected) in posted.executions.iter().zip(&posted.expected) {
        nodes[1].wait_stored(execution, expected.len() as u64).await;
    }

    // Down while every partition gets more: only the streams have it for B.
    nodes[1].kill();
    posted.post_rounds(&nodes[..1], 2).await;
    nodes[1].restart().await;
    for (execution, expected) in posted.executions.iter().zip(&posted.expected) {
        let stored = nodes[1].wait_stored(execution, expected.len() as u64).await;
        cluster_support::assert_sequence(&format!("node-b {execution}"), &stored, expected);
    }

    // Every client connection killed: the readers reconnect and read each
    // partition on from its own last ID.
    let mut tail = posted.continued();
    let mut subs = watch_everywhere(&nodes, &tail).await;
    let killed: u64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]).await;
    assert!(killed > 0, "the brokers' connections were killed");
    // post_rounds checks each 202's seq: the executions go on from seq 4.
    tail.post_rounds(&nodes, 2).await;
    assert_delivered_everywhere(&nodes, &mut subs, &tail).await;
    for node in &nodes {
        node.wait_counter("reconnect", 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_unlike_the_cluster_is_refused_and_says_why() {
    let redis = Redis::start().await;
    let nodes = start_partitioned(&redis, &["node-a"]).await;
    let mut posted = Posted::new("mismatch", 2);
    posted.post_rounds(&nodes, 1).await;

    let other = [("CLUSTER_PARTITIONS", (PARTITIONS + 1).to_string())];
    let odd = Node::start_with("node-odd", &redis.url(), None, &other).await;
    let health = odd.wait_redis_state("failing").await;
    let error = health["redis"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cluster_partitions"), "{health}");
    // Its producers' events are kept (journaled here), not sequenced into
    // the cluster's partitions under another count.
    let (status, answer) = odd.post(&common::thinking("exec-odd", 1)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["provisional"], true, "{answer}");
    let recorded: String = redis
        .cmd(&["GET", "agent-events:{agent-events}:partitions"])
        .await;
    assert_eq!(recorded, PARTITIONS.to_string());
}

/// A draft published again (the fallback journal retries a batch whose
/// publish failed on one partition after it succeeded on another) gets its
/// first seq back, appends nothing, and its memory starts over: retries
/// that go on while a partition is down keep it, so it cannot expire
/// between two of them and let the event be appended a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_draft_keeps_its_seq_and_renews_its_memory() {
    use agent_events_actors::cluster_keys::ClusterKeys;
    use agent_events_actors::redis_link::RedisTarget;
    use agent_events_actors::redis_sequencer::{Draft, RedisSequencer};

    let redis = Redis::start().await;
    let keys = ClusterKeys::new("retry", PARTITIONS);
    let target = RedisTarget::single(&redis.url()).expect("a Redis URL");
    let sequencer = RedisSequencer::new(target, keys.clone(), "node-a", 1_000);
    let draft = |memory_secs| Draft {
        id: "node-a:1:7".into(),
        execution_id: "exec-retried".into(),
        floor: 0,
        body:
            r#"{"type":"agent-thinking","executionId":"exec-retried","agentId":"a","thought":"t"}"#
                .into(),
        memory_secs,
    };
    let partition = keys.partition(keys.partition_of("exec-retried"));
    let memory = partition.draft("node-a:1:7");

    assert_eq!(sequencer.publish(&[draft(5)]).await.expect("publish"), [1]);
    let ttl: i64 = redis.cmd(&["TTL", &memory]).await;
    assert!((1..=5).contains(&ttl), "{ttl}");

    assert_eq!(sequencer.publish(&[draft(600)]).await.expect("again"), [1]);
    let ttl: i64 = redis.cmd(&["TTL", &memory]).await;
    assert!(ttl > 5, "the retry renewed the draft's memory: {ttl}");
    let entries: u64 = redis.cmd(&["XLEN", &partition.stream]).await;
    assert_eq!(entries, 1, "appended once");
}
