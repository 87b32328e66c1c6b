//! The fallback journal: events a cluster node sequenced on its own while
//! Redis was unreachable, kept in the store until they are in the cluster's
//! stream.
//!
//! Why in the store and not in memory: during an outage a node answers 202
//! for its producers' events once they are journaled, so the journal is what
//! that 202 promises. A node killed during the outage finds its journal at
//! the next start and publishes what is left, so no acknowledged event is
//! lost to the cluster. Entries belong to one node (`node_id`), so one
//! MongoDB can hold the journals of every node.

use crate::protocol::PublishedEvent;
use std::sync::Arc;

/// One journaled event.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    /// The node that sequenced it.
    pub node_id: String,
    /// Its draft ID: the same one is used when it is published, so a retry
    /// of that publish cannot append it twice.
    pub draft_id: String,
    /// Its place in the node's journal: entries are read back in this order.
    pub position: u64,
    /// The event, with its provisional seq.
    pub event: Arc<PublishedEvent>,
}
