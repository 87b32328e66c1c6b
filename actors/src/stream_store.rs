//! Store once per cluster: with one store shared by every node (MongoDB),
//! each event of the cluster's stream is written by one node, not by all.
//!
//! Every node reads every event for live delivery (`redis_subscriber.rs`),
//! but stores only through this writer. Each partition stream has a Redis
//! consumer group, and one node at a time holds the partition's *lease*
//! (a key with a time to live, renewed while it works): it reads the
//! partition through the group (`XREADGROUP`), appends the entries to the
//! store and `XACK`s them once the store committed them.
//!
//! Why one writer per partition rather than every node in the group: Redis
//! hands a group's entries to its consumers in turns, so two nodes would
//! store one execution's events out of order, and the shared store would
//! hold seq 5 before seq 4 for a moment; a replay from the store in that
//! moment would show a hole. With one writer, each execution's events
//! enter the store in seq order, as with a single node.
//!
//! A node that dies stops renewing its leases; when a lease has been silent
//! for `claim_idle`, another node takes it, claims every entry the group
//! handed out and nobody acked (`XAUTOCLAIM`; they are older than anything
//! still unread), stores them, and reads on. A write repeated by such a
//! takeover, or after a crash between commit and ack, is harmless: the store
//! is idempotent by `(executionId, seq)`.
//!
//! Per-node stores (SQLite) do not use this: there every node is a full
//! replica and stores what it reads (docs/operations.md says which to choose).

use crate::cluster_keys::PartitionKeys;
use crate::cluster_stream::{connect_reader, RawEntry, BLOCK, READ_COUNT};
use crate::metrics::Metrics;
use crate::protocol::PublishedEvent;
use crate::redis_link::{RedisConnection, RedisTarget};
use crate::store::Store;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, RedisError, Script};
use std::sync::Arc;
use std::time::Duration;

/// Takes or renews a lease: 1 if `ARGV[1]` holds it now (for `ARGV[2]` ms).
const LEASE_SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Gives a lease up, only if `ARGV[1]` holds it: 1 if it did.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Gives up the leases `consumer` holds on `partitions`; returns how many.
///
/// Why at a graceful stop: a lease left to run out pauses storing its
/// partitions for `claim_idle` (30 s by default) on every rolling restart.
/// Given up, the lease is taken by another node at its next read, which
/// first claims what this node read and did not ack, as after a crash.
pub async fn release_leases(
    target: &RedisTarget,
    partitions: &[PartitionKeys],
    consumer: &str,
) -> Result<u64, RedisError> {
    let mut connection = connect_reader(target).await?;
    let release = Script::new(RELEASE_SCRIPT);
    let mut released = 0;
    for partition in partitions {
        let given_up: u64 = release
            .key(partition.store_lease())
            .arg(consumer)
            .invoke_async(&mut connection)
            .await?;
        released += given_up;
    }
    Ok(released)
}

/// The shortest `claim_idle`: a lease is renewed at every read, and a read
/// blocks up to [`BLOCK`], so a lease must outlive a few of them.
pub const MIN_CLAIM_IDLE: Duration = Duration::from_millis(3 * BLOCK.as_millis() as u64);

/// The consumer group of the store-once writers (one per partition stream).
pub const GROUP: &str = "agent-events-store";

/// First retry after this; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Retries never wait longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One writer's share of the work.
pub struct StreamStore {
    /// Where the streams are.
    pub target: RedisTarget,
    /// The partitions it may store, read with one `XREADGROUP`.
    pub partitions: Vec<PartitionKeys>,
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// Its consumer name in the group and in the leases: the node's ID, so
    /// a restarted node gets its own leases back at once.
    pub consumer: String,
    /// A lease not renewed this long passes to another node (at least
    /// [`MIN_CLAIM_IDLE`]).
    pub claim_idle: Duration,
    /// Counts what it stores (`eventsStored`, as the Persister does).
    pub metrics: Metrics,
}

impl StreamStore {
    /// Runs until dropped: connects, joins the groups, takes what leases it
    /// can, stores and acks, reconnecting with backoff. `report` hears
    /// `None` once connected and each error (for `/health`).
    pub async fn run(self, report: impl Fn(Option<String>)) {
        let mut failures: u32 = 0;
        loop {
            let error = match self.connect().await {
                Ok(mut connection) => {
                    failures = 0;
                    report(None);
                    self.write_until_error(&mut connection).await
                }
                Err(err) => err,
            };
            failures += 1;
            let backoff = crate::backoff::exponential(FIRST_BACKOFF, MAX_BACKOFF, failures);
            log::warn!("store-once writer failed ({error}); retry {failures} in {backoff:?}");
            report(Some(error.to_string()));
            tokio::time::sleep(backoff).await;
        }
    }

    /// A connection, with the group on every stream (made from the stream's
    /// start, so nothing already in it goes unstored).
    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let mut connection = connect_reader(&self.target).await?;
        for partition in &self.partitions {
            let created: Result<(), RedisError> = connection
                .xgroup_create_mkstream(&partition.stream, GROUP, "0")
                .await;
            match created {
                Err(err) if err.code() != Some("BUSYGROUP") => return Err(err),
                _ => {}
            }
        }
        Ok(connection)
    }

    async fn write_until_error(&self, connection: &mut RedisConnection) -> RedisError {
        let lease = Script::new(LEASE_SCRIPT);
        let mut held = vec![false; self.partitions.len()];
        // A read blocks at most a third of a lease, so leases are renewed in time.
        let block = BLOCK.min(self.claim_idle / 3);
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .block(block.as_millis() as usize)
            .count(READ_COUNT);
        loop {
            for (index, partition) in self.partitions.iter().enumerate() {
                let holds: Result<bool, RedisError> = lease
                    .key(partition.store_lease())
                    .arg(&self.consumer)
                    .arg(self.claim_idle.as_millis() as u64)
                    .invoke_async(connection)
                    .await;
                let holds = match holds {
                    Ok(holds) => holds,
                    Err(err) => return err,
                };
                if holds && !held[index] {
                    if let Err(err) = self.take_over(connection, index).await {
                        return err;
                    }
                }
                held[index] = holds;
            }
            let mine: Vec<usize> = (0..self.partitions.len()).filter(|&i| held[i]).collect();
            if mine.is_empty() {
                // Another node stores every partition here; stand by to take
                // over should it go silent.
                tokio::time::sleep(block).await;
                continue;
            }
            let streams: Vec<&str> = mine
                .iter()
                .map(|&i| self.partitions[i].stream.as_str())
                .collect();
            let ids = vec![">"; streams.len()];
            let reply: Option<StreamReadReply> =
                match connection.xread_options(&streams, &ids, &options).await {
                    Ok(reply) => reply,
                    Err(err) => return err,
                };
            for key in reply.into_iter().flat_map(|r| r.keys) {
                let Some(index) = self.partitions.iter().position(|p| p.stream == key.key) else {
                    continue;
                };
                if let Err(err) = self.store_and_ack(connection, index, key.ids).await {
                    return err;
                }
            }
        }
    }

    /// On taking a partition's lease: claims every entry the group handed
    /// out and nobody acked (a dead node's, or this node's before a
    /// restart), oldest first, and stores them.
    async fn take_over(
        &self,
        connection: &mut RedisConnection,
        index: usize,
    ) -> Result<(), RedisError> {
        let stream = &self.partitions[index].stream;
        let mut start = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = connection
                .xautoclaim_options(
                    stream,
                    GROUP,
                    &self.consumer,
                    0,
                    &start,
                    StreamAutoClaimOptions::default().count(READ_COUNT),
                )
                .await?;
            if !reply.claimed.is_empty() {
                log::info!(
                    "took over {} unstored entries of {stream}",
                    reply.claimed.len()
                );
                self.store_and_ack(connection, index, reply.claimed).await?;
            }
            if !reply.deleted_ids.is_empty() {
                log::error!(
                    "{} entries of {stream} were trimmed from the stream before any node stored them",
                    reply.deleted_ids.len()
                );
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    /// Appends the entries' events to the store, retrying until it commits,
    /// then acks them.
    async fn store_and_ack(
        &self,
        connection: &mut RedisConnection,
        index: usize,
        entries: Vec<StreamId>,
    ) -> Result<(), RedisError> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let events: Vec<Arc<PublishedEvent>> = entries
            .into_iter()
            .filter_map(
                |mut entry| match RawEntry::take(&mut entry).and_then(|r| r.parse()) {
                    Ok(event) => Some(PublishedEvent::new(event)),
                    Err(why) => {
                        // Acked all the same: no node could ever store it.
                        log::error!("stream entry {} unreadable: {why}", entry.id);
                        None
                    }
                },
            )
            .collect();
        let mut failures: u32 = 0;
        while !events.is_empty() {
            match self.store.append(events.clone()).await {
                Ok(()) => {
                    self.metrics.events_stored.inc_by(events.len() as u64);
                    break;
                }
                Err(err) => {
                    // Not acked, and the lease not renewed, while failing:
                    // another node takes the partition over if this lasts.
                    failures += 1;
                    let backoff = crate::backoff::exponential(FIRST_BACKOFF, MAX_BACKOFF, failures);
                    log::warn!("store-once write failed ({err}); retry {failures} in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        connection
            .xack::<_, _, _, ()>(&self.partitions[index].stream, GROUP, &ids)
            .await
    }
}
