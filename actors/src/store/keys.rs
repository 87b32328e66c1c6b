//! Idempotency keys as the store keeps them: written in the same `append`
//! as their batch's events, so that a 202 for a keyed batch means its key is
//! stored too, and a retry after a restart gets the first receipt
//! (`crate::idempotency` says the rest).

use super::StoreError;
use chrono::{DateTime, Utc};

/// A key as the store keeps it, written in the same `append` as the
/// batch's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key.
    pub key: String,
    /// The batch's fingerprint (`idempotency::fingerprint`).
    pub fingerprint: String,
    /// The seq each event of the batch got, in order; `None`: coalesced.
    pub seqs: Vec<Option<u64>>,
    /// When the first attempt was accepted; the window counts from here.
    pub created_at: DateTime<Utc>,
}

impl KeyRecord {
    /// The seqs as stored: a JSON array such as `[1,2,null]`.
    pub fn seqs_json(&self) -> String {
        serde_json::to_string(&self.seqs).expect("numbers always serialize")
    }

    /// The seqs from their stored JSON.
    pub fn parse_seqs(json: &str) -> Result<Vec<Option<u64>>, StoreError> {
        serde_json::from_str(json).map_err(|e| {
            StoreError::new(format!("an idempotency key's receipt is unreadable: {e}"))
        })
    }
}
