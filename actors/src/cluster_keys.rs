//! Where the cluster keeps its data in Redis: the partitions of the event
//! stream (each a seq-counter hash and a stream), the draft IDs, the
//! idempotency keys and the node announcements; and which partition an
//! execution belongs to.
//!
//! # Partitions
//! The stream is split by execution into `cluster_partitions` partitions, so
//! that one Redis core (one hash slot) no longer carries every event of the
//! cluster. An execution always lands in the same partition (a stable hash of
//! its ID), so its order, its counter and the sequencing script stay in one
//! place. Each partition has a hash tag of its own, and every key the script
//! touches for it (counter, stream, draft IDs) carries that tag: the script
//! stays on one slot, and Redis Cluster spreads the partitions over its
//! masters.
//!
//! With one partition (the default) the keys are exactly those of the
//! unpartitioned design (tag `{agent-events}`), so a cluster keeps its
//! stream across the upgrade. Every node of a cluster must use the same
//! count: changing it moves executions to other partitions, so do it with
//! every node stopped (the nodes' floors keep each execution's seqs going).
//! The first node to reach Redis records the count
//! ([`ClusterKeys::check_partitions`]); a node with another count is refused,
//! so a mistake in one node's settings cannot give one execution seqs from
//! two counters.

use crate::redis_link::RedisConnection;
use redis::{RedisError, Script};

/// The hash tag of the one-partition layout, and of the keys that belong to
/// no partition (idempotency keys, node announcements).
const TAG: &str = "{agent-events}";

/// The most partitions a cluster may have: each costs every node a stream to
/// read (and, on Redis Cluster, a connection of its own per master).
pub const MAX_PARTITIONS: usize = 1024;

/// The keys of one partition.
#[derive(Debug, Clone)]
pub struct PartitionKeys {
    /// Hash of `executionId → last seq` for the partition's executions.
    pub counters: String,
    /// The stream of the partition's events.
    pub stream: String,
    /// `prefix:{tag}`, the start of every key of the partition.
    base: String,
}

impl PartitionKeys {
    /// The key remembering one draft's seq (in the partition's slot, since
    /// the script reads and writes it).
    pub fn draft(&self, draft_id: &str) -> String {
        format!("{}:draft:{draft_id}", self.base)
    }

    /// The key naming the node that stores the partition's events, with
    /// store-once (`stream_store.rs`).
    pub fn store_lease(&self) -> String {
        format!("{}:store-owner", self.base)
    }
}

/// Where the cluster keeps its counters, streams, draft IDs and node
/// announcements; see the module documentation.
#[derive(Debug, Clone)]
pub struct ClusterKeys {
    partitions: Vec<PartitionKeys>,
    prefix: String,
}

impl ClusterKeys {
    /// The keys under `prefix`, with the stream split into `partitions`
    /// (at least 1; the configuration checks the range).
    pub fn new(prefix: &str, partitions: usize) -> Self {
        let count = partitions.max(1);
        let partitions = (0..count)
            .map(|p| {
                let base = if count == 1 {
                    format!("{prefix}:{TAG}")
                } else {
                    format!("{prefix}:{{agent-events:p{p}}}")
                };
                PartitionKeys {
                    counters: format!("{base}:seq"),
                    stream: format!("{base}:events"),
                    base,
                }
            })
            .collect();
        ClusterKeys {
            partitions,
            prefix: prefix.to_owned(),
        }
    }

    /// Every partition, in order.
    pub fn partitions(&self) -> &[PartitionKeys] {
        &self.partitions
    }

    /// The index of the partition `execution_id` belongs to.
    pub fn partition_of(&self, execution_id: &str) -> usize {
        (fnv1a(execution_id.as_bytes()) % self.partitions.len() as u64) as usize
    }

    /// The keys of partition `index` (from [`ClusterKeys::partition_of`]).
    pub fn partition(&self, index: usize) -> &PartitionKeys {
        &self.partitions[index]
    }

    /// The key holding the fingerprint of the batch an idempotency key names.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:{TAG}:idem:{key}", self.prefix)
    }

    /// The key a node announces itself under.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}:{TAG}:node:{node_id}", self.prefix)
    }

    /// The set of the IDs of the nodes that have announced themselves; each
    /// one's announcement (at [`ClusterKeys::node`]) says whether it still
    /// lives. A set to read, rather than `KEYS` over a pattern, which walks
    /// Redis's whole keyspace (on every master of a Redis Cluster) and
    /// blocks every other client while it does.
    pub fn node_ids(&self) -> String {
        format!("{}:{TAG}:nodes", self.prefix)
    }

    /// The key recording the cluster's partition count.
    pub fn partition_count(&self) -> String {
        format!("{}:{TAG}:partitions", self.prefix)
    }

    /// Records this node's partition count in Redis if none is, and fails
    /// unless the recorded one is the same (see the module documentation).
    pub async fn check_partitions(
        &self,
        connection: &mut RedisConnection,
    ) -> Result<(), RedisError> {
        let ours = self.partitions.len();
        let recorded: usize = Script::new(RECORD_ONCE)
            .key(self.partition_count())
            .arg(ours)
            .invoke_async(connection)
            .await?;
        if recorded == ours {
            return Ok(());
        }
        Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cluster_partitions differs from the cluster's",
            format!(
                "this node has {ours}, Redis records {recorded} (key {}); to change it, stop every node, delete the key, and start them all with the new value",
                self.partition_count()
            ),
        )))
    }
}

/// Sets `KEYS[1]` to `ARGV[1]` unless set; answers its value.
const RECORD_ONCE: &str = r#"
local recorded = redis.call('GET', KEYS[1])
if recorded then return tonumber(recorded) end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[1])
"#;

/// 64-bit FNV-1a. Why not std's hasher: its output may change between Rust
/// releases, and nodes built by different releases must agree on every
/// execution's partition.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_keeps_the_unpartitioned_keys() {
        let keys = ClusterKeys::new("agent-events", 1);
        let only = keys.partition(keys.partition_of("exec-1"));
        assert_eq!(only.counters, "agent-events:{agent-events}:seq");
        assert_eq!(only.stream, "agent-events:{agent-events}:events");
        assert_eq!(only.draft("d1"), "agent-events:{agent-events}:draft:d1");
    }

    #[test]
    fn each_partition_has_its_own_tag_on_every_key_the_script_touches() {
        let keys = ClusterKeys::new("x", 4);
        let third = keys.partition(3);
        assert_eq!(third.counters, "x:{agent-events:p3}:seq");
        assert_eq!(third.stream, "x:{agent-events:p3}:events");
        assert_eq!(third.draft("d"), "x:{agent-events:p3}:draft:d");
    }

    #[test]
    fn the_partition_of_an_execution_is_stable_and_spread() {
        let keys = ClusterKeys::new("x", 8);
        // Pinned: every node, whatever it was built with, must agree.
        assert_eq!(fnv1a(b"exec-1"), 0xa6a1_0e39_21eb_67f6);
        let mut used = [0usize; 8];
        for n in 0..800 {
            let execution = format!("exec-{n}");
            let p = keys.partition_of(&execution);
            assert_eq!(p, keys.partition_of(&execution));
            used[p] += 1;
        }
        assert!(used.iter().all(|&n| n > 50), "spread: {used:?}");
    }
}
