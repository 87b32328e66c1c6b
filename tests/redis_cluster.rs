//! Cluster mode on a real Redis Cluster of three masters, started by the
//! test (`cluster_support/redis_cluster.rs`): the brokers get the masters as
//! `redis_cluster_nodes`, the stream's partitions spread over the masters,
//! the client follows the cluster's slot map and its `MOVED` redirections
//! when a partition's slot migrates to another master, and every subscriber
//! of two brokers gets every seq of every execution once, in order.

mod cluster_support;
mod common;
#[path = "cluster_support/many_executions.rs"]
mod many_executions;
#[path = "cluster_support/redis_cluster.rs"]
mod redis_cluster;

use cluster_support::Node;
use many_executions::{assert_delivered_everywhere, assert_no_repairs, watch_everywhere, Posted};
use redis_cluster::RedisCluster;
use std::collections::BTreeSet;

/// Partitions of the brokers' stream: enough that the three masters' slot
/// ranges each get some.
const PARTITIONS: usize = 8;

/// The stream key of partition `p` (docs/cluster.md, "Partitions").
fn stream_key(p: usize) -> String {
    format!("agent-events:{{agent-events:p{p}}}:events")
}

/// The counters key of partition `p`.
fn counters_key(p: usize) -> String {
    format!("agent-events:{{agent-events:p{p}}}:seq")
}

/// Per partition: the master serving it and its stream's length there.
async fn placement(cluster: &RedisCluster) -> Vec<(usize, u64)> {
    let mut placed = Vec::with_capacity(PARTITIONS);
    for p in 0..PARTITIONS {
        let slot = cluster.slot_of(&stream_key(p)).await;
        assert_eq!(
            slot,
            cluster.slot_of(&counters_key(p)).await,
            "partition {p}: the script's keys share one slot"
        );
        let owner = cluster.owner_of(slot).await;
        let length: u64 = cluster.masters[owner].cmd(&["XLEN", &stream_key(p)]).await;
        placed.push((owner, length));
    }
    placed
}

/// Moves `slot` and its keys from master `from` to master `to`, the way
/// `redis-cli --cluster reshard` does: IMPORTING / MIGRATING, `MIGRATE`
/// every key, then every master learns the new owner.
async fn migrate_slot(cluster: &RedisCluster, slot: u16, from: usize, to: usize) {
    let (source, target) = (&cluster.masters[from], &cluster.masters[to]);
    let source_id: String = source.cmd(&["CLUSTER", "MYID"]).await;
    let target_id: String = target.cmd(&["CLUSTER", "MYID"]).await;
    let slot = slot.to_string();
    let _: String = target
        .cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id])
        .await;
    let _: String = source
        .cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id])
        .await;
    loop {
        let keys: Vec<String> = source
            .cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
            .await;
        if keys.is_empty() {
            break;
        }
        let port = target.port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        let _: String = source.cmd(&args).await;
    }
    // The new owner first, then the old one, then the rest (as redis-cli does).
    let mut order = vec![to, from];
    order.extend((0..cluster.masters.len()).filter(|i| ![to, from].contains(i)));
    for i in order {
        let _: String = cluster.masters[i]
            .cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_masters_and_follow_a_moved_slot_without_loss_or_repeat() {
    let cluster = RedisCluster::start(3).await;
    // No REDIS_URL: the cluster's masters are the seeds.
    let settings = [
        ("REDIS_CLUSTER_NODES", cluster.seeds()),
        ("CLUSTER_PARTITIONS", PARTITIONS.to_string()),
    ];
    let nodes = [
        Node::start_with("node-a", "", None, &settings).await,
        Node::start_with("node-b", "", None, &settings).await,
    ];
    let mut posted = Posted::new("rc", 16);
    let mut subs = watch_everywhere(&nodes, &posted).await;

    posted.post_rounds(&nodes, 3).await;
    assert_delivered_everywhere(&nodes, &mut subs, &posted).await;
    let placed = placement(&cluster).await;
    let total: u64 = placed.iter().map(|(_, length)| length).sum();
    assert_eq!(total, posted.total() as u64, "each event once: {placed:?}");
    let masters: BTreeSet<usize> = placed
        .iter()
        .filter(|(_, length)| *length > 0)
        .map(|(owner, _)| *owner)
        .collect();
    assert!(
        masters.len() > 1,
        "the partitions landed on more than one master: {placed:?}"
    );

    // A used partition's slot moves to another master: the brokers' cached
    // slot maps are wrong now, and only MOVED tells them.
    let (moved, (from, _)) = placed
        .iter()
        .enumerate()
        .find(|(_, (_, length))| *length > 0)
        .map(|(p, placed)| (p, *placed))
        .expect("some partition holds events");
    let to = (from + 1) % cluster.masters.len();
    let slot = cluster.slot_of(&stream_key(moved)).await;
    migrate_slot(&cluster, slot, from, to).await;
    assert_eq!(cluster.owner_of(slot).await, to, "slot {slot} moved");

    let mut later = posted.continued();
    later.post_rounds(&nodes, 3).await;
    assert_delivered_everywhere(&nodes, &mut subs, &later).await;
    posted.append(later);
    let after = placement(&cluster).await;
    assert_eq!(
        after[moved].0, to,
        "partition {moved} is served by its new master"
    );
    let total: u64 = after.iter().map(|(_, length)| length).sum();
    assert_eq!(total, posted.total() as u64, "each event once: {after:?}");
    for node in &nodes {
        for (execution, expected) in posted.executions.iter().zip(&posted.expected) {
            let stored = node.wait_stored(execution, expected.len() as u64).await;
            cluster_support::assert_sequence(
                &format!("{} stored {execution}", node.name),
                &stored,
                expected,
            );
        }
    }
    assert_no_repairs(&nodes).await;
}
