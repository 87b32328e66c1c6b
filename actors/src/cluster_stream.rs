//! Reading the cluster's stream, for both of its readers: the
//! Redis-subscriber (every node, live delivery) and the store-once writer
//! (`stream_store.rs`, a consumer group). Which streams one reader reads
//! with one command, how it connects, and what an entry holds.

use crate::cluster_keys::ClusterKeys;
use crate::event::AgentEvent;
use crate::redis_link::{RedisConnection, RedisTarget};
use redis::streams::StreamId;
use redis::{RedisError, Value as RedisValue};
use serde_json::Value;
use std::time::Duration;

/// How long one blocking read waits; also bounds how late a shutdown is noticed.
pub const BLOCK: Duration = Duration::from_millis(1000);
/// Entries read at once.
pub const READ_COUNT: usize = 512;
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The streams each reader reads with one command: on one server, all
/// partitions together; on a Redis Cluster, one partition each, since a
/// command may only name keys of one slot there and a blocking read holds
/// its connection.
pub fn reader_lanes(target: &RedisTarget, keys: &ClusterKeys) -> Vec<Vec<String>> {
    let streams = keys.partitions().iter().map(|p| p.stream.clone());
    if target.is_cluster() {
        streams.map(|stream| vec![stream]).collect()
    } else {
        vec![streams.collect()]
    }
}

/// A connection of a reader's own.
pub async fn connect_reader(target: &RedisTarget) -> Result<RedisConnection, RedisError> {
    // The response timeout must outlast a blocking read.
    target.connect(CONNECT_TIMEOUT, BLOCK * 3).await
}

/// The event an entry holds (`e` execution, `s` seq, `b` body, `n` node),
/// with its seq.
pub fn parse_entry(entry: &StreamId) -> Result<AgentEvent, String> {
    let field = |name: &str| -> Result<String, String> {
        match entry.map.get(name) {
            Some(RedisValue::BulkString(bytes)) => {
                String::from_utf8(bytes.clone()).map_err(|e| e.to_string())
            }
            Some(RedisValue::SimpleString(text)) => Ok(text.clone()),
            Some(RedisValue::Int(n)) => Ok(n.to_string()),
            _ => Err(format!("field `{name}` missing")),
        }
    };
    let seq: u64 = field("s")?
        .parse()
        .map_err(|_| "seq is not a number".to_owned())?;
    let body: Value = serde_json::from_str(&field("b")?).map_err(|e| e.to_string())?;
    let mut event = AgentEvent::from_stored_json(body).map_err(|e| e.to_string())?;
    event.seq = Some(seq);
    Ok(event)
}
