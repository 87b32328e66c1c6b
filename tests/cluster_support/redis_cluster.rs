//! A real Redis Cluster of this test alone: `redis-server --cluster-enabled
//! yes` processes on free loopback ports, each with its own directory (they
//! are [`Redis`]es, SIGKILLed by pid on drop), joined by
//! `redis-cli --cluster create` and awaited until every master says
//! `cluster_state:ok`.
//!
//! Included with `#[path]` next to `cluster_support`, whose [`Redis`] it uses.

#![allow(dead_code)] // each test file uses a different part

use crate::cluster_support::Redis;
use std::time::Duration;

/// How long `redis-cli --cluster create` may take.
const CLUSTER_CREATE: Duration = Duration::from_secs(20);

/// Masters of one Redis Cluster, no replicas.
pub struct RedisCluster {
    /// The masters, in the order they were started.
    pub masters: Vec<Redis>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, creates the cluster over
    /// them (the slots split evenly) and waits until every one serves.
    pub async fn start(masters: usize) -> RedisCluster {
        let mut servers = Vec::with_capacity(masters);
        for _ in 0..masters {
            servers.push(
                Redis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let create = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .kill_on_drop(true)
            .output();
        let created = tokio::time::timeout(CLUSTER_CREATE, create)
            .await
            .expect("redis-cli --cluster create timed out")
            .expect("run redis-cli");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        for server in &servers {
            server.wait_cluster_ok().await;
        }
        RedisCluster { masters: servers }
    }

    /// The masters' URLs, comma-separated: a `redis_cluster_nodes` value.
    pub fn seeds(&self) -> String {
        self.masters
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The slot `key` hashes to.
    pub async fn slot_of(&self, key: &str) -> u16 {
        self.masters[0].cmd(&["CLUSTER", "KEYSLOT", key]).await
    }

    /// Which master serves `slot`, from each master's `CLUSTER NODES`.
    pub async fn owner_of(&self, slot: u16) -> usize {
        for (i, master) in self.masters.iter().enumerate() {
            let nodes: String = master.cmd(&["CLUSTER", "NODES"]).await;
            let myself = nodes
                .lines()
                .find(|l| l.contains("myself"))
                .expect("CLUSTER NODES names myself");
            let serves = myself.split_whitespace().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if f <= slot && slot <= t)
            });
            if serves {
                return i;
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The master that serves `key`.
    pub async fn master_of(&self, key: &str) -> &Redis {
        let slot = self.slot_of(key).await;
        &self.masters[self.owner_of(slot).await]
    }
}
