//! The cluster's sequencer: assigns `seq` in Redis and appends the event to
//! the cluster's stream, atomically, in one Lua script.
//!
//! Why a script and a Stream rather than Pub/Sub (DESIGN-NOTES.md): the
//! script makes "next seq" and "append" one step, so stream order equals seq
//! order for every execution, whichever node produced; and a Stream keeps
//! what it was given, so a node that lost its connection reads on from the
//! last entry it processed instead of losing what was published meanwhile.
//!
//! A counter missing in Redis (a flush, a failover to a replica that lagged)
//! must not restart an execution at 1: every call carries the node's own
//! `floor` for the execution (the highest seq it has stored or seen), and the
//! script never assigns a seq at or below it.
//!
//! A publish is idempotent: each draft carries an ID unique to this node, and
//! the script remembers it (for [`DRAFT_MEMORY_SECS`]) with the seq it got.
//! That is what makes retrying after a dropped connection safe: if the first
//! attempt ran before the connection died, the retry gets the same seq back
//! instead of appending the event a second time.

use crate::cluster_keys::ClusterKeys;
use crate::redis_link::{RedisConnection, RedisTarget};
use futures_util::future::try_join_all;
use redis::{RedisError, Script};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `seq = max(counter, floor) + 1`, then `XADD` with it. Its three keys
/// (the partition's counters and stream, the draft's memory) share the
/// partition's hash tag, so the script also runs on Redis Cluster.
///
/// A draft seen before answers its seq and renews its memory: the fallback
/// journal retries a batch whose publish failed on one partition after it
/// succeeded on another, every 250 ms until the failed partition answers,
/// and the memory must outlast those retries however long that takes, or
/// a retry after it expired would append the event a second time.
const PUBLISH_SCRIPT: &str = r#"
local done = redis.call('GET', KEYS[3])
if done then
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  return tonumber(done)
end
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local floor = tonumber(ARGV[2])
if current < floor then current = floor end
local seq = current + 1
redis.call('HSET', KEYS[1], ARGV[1], seq)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[1], 's', seq, 'b', ARGV[3], 'n', ARGV[5])
redis.call('SET', KEYS[3], seq, 'EX', ARGV[6])
return seq
"#;

/// Claims an idempotency key for a batch's fingerprint, or answers the
/// fingerprint that claimed it first.
const CLAIM_SCRIPT: &str = r#"
local claimed = redis.call('GET', KEYS[1])
if claimed then return claimed end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"#;

/// How long Redis remembers a draft's ID: far longer than a retry takes,
/// short enough that the memory stays small (one tiny key per recent event).
pub const DRAFT_MEMORY_SECS: u64 = 30;

/// One event to publish: its execution, the node's floor for it, and its JSON (no seq).
#[derive(Debug, Clone)]
pub struct Draft {
    /// Unique among this node's drafts (see [`RedisSequencer::next_draft_id`]).
    pub id: String,
    /// The execution.
    pub execution_id: String,
    /// The highest seq this node knows for it.
    pub floor: u64,
    /// The event's JSON without `seq`.
    pub body: String,
    /// How long Redis remembers the draft's ID and seq: [`DRAFT_MEMORY_SECS`],
    /// or the idempotency window for an event of a keyed batch (its ID is
    /// then derived from the key, see [`RedisSequencer::keyed_draft_id`]).
    pub memory_secs: u64,
}

/// Publishes events through the script; cheap to clone.
#[derive(Clone)]
pub struct RedisSequencer {
    target: RedisTarget,
    keys: ClusterKeys,
    node_id: Arc<str>,
    stream_max_len: u64,
    script: Script,
    claim: Script,
    connection: Arc<Mutex<Option<RedisConnection>>>,
    drafts: Arc<std::sync::atomic::AtomicU64>,
}

/// How long one Redis round trip may take before the publish fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisSequencer {
    /// A sequencer for the Redis at `target`, publishing as `node_id`.
    pub fn new(target: RedisTarget, keys: ClusterKeys, node_id: &str, stream_max_len: u64) -> Self {
        RedisSequencer {
            target,
            keys,
            node_id: node_id.into(),
            stream_max_len,
            script: Script::new(PUBLISH_SCRIPT),
            claim: Script::new(CLAIM_SCRIPT),
            connection: Arc::new(Mutex::new(None)),
            drafts: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// A draft ID no other draft of any node gets: this node's ID, its start
    /// time (a restarted node must not reuse IDs), and a counter.
    pub fn next_draft_id(&self) -> String {
        static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
        let started = STARTED.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        });
        let n = self
            .drafts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{started:x}:{n}", self.node_id)
    }

    /// The draft ID of event `index` of the batch an idempotency key names.
    ///
    /// Why derived from the key instead of a second memory of receipts: the
    /// script already answers a draft ID it has seen with the seq it gave,
    /// atomically, so two nodes publishing the same retry at the same moment
    /// get the same seqs and the stream gets each event once, with no
    /// read-then-write race between them. The memory only has to last the
    /// idempotency window instead of [`DRAFT_MEMORY_SECS`] (one small key per
    /// keyed event).
    pub fn keyed_draft_id(key: &str, index: usize) -> String {
        format!("idem:{index}:{key}")
    }

    /// Claims `key` for the batch with `fingerprint` for `ttl_secs`; answers
    /// whether the key is this batch's (claimed now, or before by the same
    /// batch on any node). The draft IDs cannot tell a different batch under
    /// a used key from a retry; this can.
    pub async fn claim_key(
        &self,
        key: &str,
        fingerprint: &str,
        ttl_secs: u64,
    ) -> Result<bool, RedisError> {
        let mut connection = self.connect().await?;
        let claimed: Result<String, RedisError> = self
            .claim
            .key(self.keys.idempotency(key))
            .arg(fingerprint)
            .arg(ttl_secs.max(1))
            .invoke_async(&mut connection)
            .await;
        match claimed {
            Ok(claimed) => Ok(claimed == fingerprint),
            Err(err) => {
                self.forget_connection();
                Err(err)
            }
        }
    }

    /// The node this sequencer publishes as.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let cached = self.connection.lock().expect("sequencer lock").clone();
        if let Some(connection) = cached {
            return Ok(connection);
        }
        let mut connection = self
            .target
            .connect(CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
            .await?;
        // On a Redis Cluster `SCRIPT LOAD` goes to every master.
        self.script
            .prepare_invoke()
            .load_async(&mut connection)
            .await?;
        // Before the first publish: never sequence into another partitioning.
        self.keys.check_partitions(&mut connection).await?;
        *self.connection.lock().expect("sequencer lock") = Some(connection.clone());
        Ok(connection)
    }

    /// Answers once Redis answers a `PING` (on the cached connection, or a
    /// new one within the connect timeout).
    pub async fn reachable(&self) -> Result<(), RedisError> {
        let mut connection = self.connect().await?;
        let pinged: Result<String, RedisError> =
            redis::cmd("PING").query_async(&mut connection).await;
        if pinged.is_err() {
            self.forget_connection();
        }
        pinged.map(drop)
    }

    fn forget_connection(&self) {
        *self.connection.lock().expect("sequencer lock") = None;
    }

    /// Publishes the drafts in order, in one round trip; returns their seqs.
    ///
    /// A dropped connection (a restart, `CLIENT KILL`) and a script Redis
    /// forgot are retried once on a fresh connection. The retry is safe even
    /// when the first attempt ran before the connection died: the draft IDs
    /// make the script answer with the seqs it already gave.
    pub async fn publish(&self, drafts: &[Draft]) -> Result<Vec<u64>, RedisError> {
        if drafts.is_empty() {
            // A batch coalesced whole: nothing to sequence, and no reason to
            // fail it (or fall back) when Redis is away.
            return Ok(Vec::new());
        }
        match self.try_publish(drafts).await {
            Err(err)
                if err.kind() == redis::ErrorKind::NoScriptError || err.is_connection_dropped() =>
            {
                self.forget_connection();
                let retried = self.try_publish(drafts).await;
                if retried.is_err() {
                    self.forget_connection();
                }
                retried
            }
            Err(err) => {
                self.forget_connection();
                Err(err)
            }
            ok => ok,
        }
    }

    /// One pipeline per partition, sent concurrently: on Redis Cluster a
    /// pipeline must stay on one slot, and partitions on different masters
    /// then work in parallel. An execution's drafts all go to its partition's
    /// pipeline, in batch order, so its seqs follow that order.
    async fn try_publish(&self, drafts: &[Draft]) -> Result<Vec<u64>, RedisError> {
        let connection = self.connect().await?;
        let mut by_partition: Vec<(usize, Vec<usize>)> = Vec::new();
        for (index, draft) in drafts.iter().enumerate() {
            let partition = self.keys.partition_of(&draft.execution_id);
            match by_partition.iter_mut().find(|(p, _)| *p == partition) {
                Some((_, indexes)) => indexes.push(index),
                None => by_partition.push((partition, vec![index])),
            }
        }
        let sent = by_partition.iter().map(|(partition, indexes)| {
            let keys = self.keys.partition(*partition);
            let mut pipeline = redis::pipe();
            for draft in indexes.iter().map(|&i| &drafts[i]) {
                pipeline
                    .cmd("EVALSHA")
                    .arg(self.script.get_hash())
                    .arg(3)
                    .arg(&keys.counters)
                    .arg(&keys.stream)
                    .arg(keys.draft(&draft.id))
                    .arg(&draft.execution_id)
                    .arg(draft.floor)
                    .arg(&draft.body)
                    .arg(self.stream_max_len)
                    .arg(&*self.node_id)
                    .arg(draft.memory_secs.max(1));
            }
            let mut connection = connection.clone();
            async move { pipeline.query_async::<Vec<u64>>(&mut connection).await }
        });
        let answers = try_join_all(sent).await?;
        let mut seqs = vec![0; drafts.len()];
        for ((_, indexes), answer) in by_partition.iter().zip(answers) {
            for (&index, seq) in indexes.iter().zip(answer) {
                seqs[index] = seq;
            }
        }
        Ok(seqs)
    }
}
