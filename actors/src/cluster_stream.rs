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

/// An entry as read, its body not parsed yet: what a node needs to keep
/// an execution's order (its execution and seq), and the body to parse
/// only if someone on the node may receive the event.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The execution (field `e`).
    pub execution_id: String,
    /// Its seq (field `s`).
    pub seq: u64,
    /// The event's JSON, without its seq (field `b`).
    pub body: String,
}

/// A field of an entry, taken out of it (no copy of its bytes).
fn take_field(entry: &mut StreamId, name: &str) -> Result<String, String> {
    match entry.map.remove(name) {
        Some(RedisValue::BulkString(bytes)) => String::from_utf8(bytes).map_err(|e| e.to_string()),
        Some(RedisValue::SimpleString(text)) => Ok(text),
        Some(RedisValue::Int(n)) => Ok(n.to_string()),
        _ => Err(format!("field `{name}` missing")),
    }
}

impl RawEntry {
    /// The entry's fields (`e` execution, `s` seq, `b` body; `n`, the
    /// node, is not needed), taken out of it.
    pub fn take(entry: &mut StreamId) -> Result<RawEntry, String> {
        let seq = take_field(entry, "s")?
            .parse()
            .map_err(|_| "seq is not a number".to_owned())?;
        Ok(RawEntry {
            execution_id: take_field(entry, "e")?,
            seq,
            body: take_field(entry, "b")?,
        })
    }

    /// The event, with its seq.
    pub fn parse(&self) -> Result<AgentEvent, String> {
        let body: Value = serde_json::from_str(&self.body).map_err(|e| e.to_string())?;
        let mut event = AgentEvent::from_stored_json(body).map_err(|e| e.to_string())?;
        event.seq = Some(self.seq);
        Ok(event)
    }

    /// The event's `conversationId`, read without building the event:
    /// what a node that passes over an event still needs to know (an
    /// execution never changes conversation, and a producer may leave it
    /// out once the broker knows it).
    pub fn conversation_id(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Conversation {
            #[serde(rename = "conversationId")]
            conversation_id: Option<String>,
        }
        serde_json::from_str::<Conversation>(&self.body)
            .ok()
            .and_then(|c| c.conversation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".into(),
            map: fields
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        RedisValue::BulkString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        }
    }

    const BODY: &str = r#"{"type":"agent-thinking","executionId":"e1","conversationId":"c1","timestamp":"2026-01-01T00:00:00.000Z","agentId":"a","thought":"t"}"#;

    #[test]
    fn an_entry_is_read_without_its_body_and_parsed_on_demand() {
        let mut stream_entry = entry(&[("e", "e1"), ("s", "7"), ("b", BODY), ("n", "node-1")]);
        let raw = RawEntry::take(&mut stream_entry).unwrap();
        assert_eq!((raw.execution_id.as_str(), raw.seq), ("e1", 7));
        assert_eq!(raw.conversation_id().as_deref(), Some("c1"));
        let event = raw.parse().unwrap();
        assert_eq!(event.seq, Some(7));
        assert_eq!(event.conversation_id.as_deref(), Some("c1"));
    }

    #[test]
    fn an_entry_without_its_fields_or_with_a_bad_body_is_unreadable() {
        assert!(RawEntry::take(&mut entry(&[("e", "e1"), ("b", BODY)])).is_err());
        assert!(RawEntry::take(&mut entry(&[("e", "e1"), ("s", "x"), ("b", BODY)])).is_err());
        let raw = RawEntry::take(&mut entry(&[("e", "e1"), ("s", "1"), ("b", "{")])).unwrap();
        assert!(raw.parse().is_err());
        assert_eq!(raw.conversation_id(), None);
    }
}
