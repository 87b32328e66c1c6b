//! Where a replay (`subscribe` with `fromSeq`) reads the events it missed.
//!
//! One seam for every source of history: today the Emitter's in-memory
//! buffer; the store and the cluster plug in here, so the Session never knows
//! where a past event came from.

use crate::emitter::{Emitter, ReadBuffer};
use crate::protocol::PublishedEvent;
use actix::Addr;
use std::sync::Arc;

/// `fromSeq` asks for events no source still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayGap {
    /// The oldest seq that can still be replayed, if any.
    pub oldest_available: Option<u64>,
}

/// Reads past events of an execution.
#[derive(Clone)]
pub struct History {
    emitter: Addr<Emitter>,
}

impl History {
    /// History from the Emitter's buffer.
    pub fn new(emitter: Addr<Emitter>) -> Self {
        History { emitter }
    }

    /// Every event of `execution_id` with `seq > after_seq`, in order and
    /// without a hole, or the gap that makes that impossible.
    pub async fn read(
        &self,
        execution_id: Arc<str>,
        after_seq: u64,
    ) -> Result<Vec<Arc<PublishedEvent>>, ReplayGap> {
        let buffered = self
            .emitter
            .send(ReadBuffer {
                execution_id,
                after_seq,
            })
            .await
            .map_err(|_| ReplayGap {
                oldest_available: None,
            })?;
        if buffered.last_seq <= after_seq {
            return Ok(Vec::new());
        }
        match buffered.oldest_buffered {
            Some(oldest) if oldest <= after_seq + 1 => Ok(buffered.events),
            oldest_available => Err(ReplayGap { oldest_available }),
        }
    }
}
