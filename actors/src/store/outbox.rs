//! The notification outbox and the rules made through the admin API: what
//! the Notifier keeps in the store so that deliveries and rules survive a
//! restart.
//!
//! Rules every backend keeps (checked by `actors/tests/outbox_conformance.rs`):
//! - `enqueue` is idempotent by key (`executionId:seq:ruleId`): a delivery
//!   that exists, in any state, is left as it is.
//! - `claim_due` hands out each due pending delivery once per lease: it
//!   counts the attempt and moves `next_attempt_at` to the lease's end in
//!   the same write, so a crash during the attempt makes it due again when
//!   the lease ends (at-least-once), and a second claimer (another node on
//!   the same MongoDB) does not take it meanwhile.
//! - Only a dead delivery can be retried (back to pending, attempts from 0)
//!   or discarded (kept as `discarded`, so its key still counts as seen).

use super::StoreFuture;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every attempt failed: a dead letter, until retried or discarded.
    Dead,
    /// A dead letter an operator discarded.
    Discarded,
}

impl DeliveryState {
    /// The stored name, e.g. `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Discarded => "discarded",
        }
    }

    /// The state stored as `name`, if any.
    pub fn parse(name: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
            DeliveryState::Discarded,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// A notification to deliver, as the Notifier enqueues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `executionId:seq:ruleId`: the idempotency key.
    pub key: String,
    /// The rule that fired.
    pub rule_id: String,
    /// The execution it is about.
    pub execution_id: String,
    /// The event's seq (0: a running-too-long notification).
    pub seq: u64,
    /// Where to POST.
    pub url: String,
    /// The JSON to POST.
    pub body: String,
}

/// A notification as stored: with where its delivery stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// What to deliver.
    #[serde(flatten)]
    pub notification: Notification,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made (claimed) so far.
    pub attempts: u32,
    /// When it is due next (while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; try again at this time.
    RetryAt(DateTime<Utc>, String),
    /// It failed for the last time: a dead letter.
    Dead(String),
}

/// How many deliveries wait, how many are dead letters, and when the next is due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxCounts {
    /// Pending deliveries.
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
    /// The earliest `next_attempt_at` of a pending delivery, if any: the
    /// Notifier claims (a write) only once it has come.
    pub next_due: Option<DateTime<Utc>>,
}

/// A rule made through the admin API: its ID and its JSON (the store does
/// not read it; `notify_rule` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    /// The rule's ID.
    pub id: String,
    /// The rule as JSON.
    pub body: String,
}

/// The outbox and rule operations every store offers; see the module documentation.
pub trait Outbox {
    /// Adds the deliveries whose key is new; returns how many were new.
    fn enqueue(&self, deliveries: Vec<Notification>, now: DateTime<Utc>) -> StoreFuture<u64>;

    /// Claims up to `limit` pending deliveries due at `now`, oldest due
    /// first: each gets one more attempt counted and is not due again before
    /// `lease_until`. Returns them as claimed.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<Vec<Delivery>>;

    /// Records how a claimed delivery's attempt ended.
    fn record_attempt(&self, key: &str, outcome: Outcome, now: DateTime<Utc>) -> StoreFuture<()>;

    /// Dead letters, oldest change first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> StoreFuture<Vec<Delivery>>;

    /// A dead letter back to pending, due `now`, attempts from 0; false when
    /// `key` is not a dead letter.
    fn retry_dead(&self, key: &str, now: DateTime<Utc>) -> StoreFuture<bool>;

    /// A dead letter marked discarded; false when `key` is not a dead letter.
    fn discard_dead(&self, key: &str, now: DateTime<Utc>) -> StoreFuture<bool>;

    /// Pending deliveries and dead letters, counted, and the next due.
    fn outbox_counts(&self) -> StoreFuture<OutboxCounts>;

    /// Removes delivered and discarded deliveries last changed before
    /// `before`; returns how many.
    fn prune_outbox(&self, before: DateTime<Utc>) -> StoreFuture<u64>;

    /// Adds or replaces an admin-API rule.
    fn put_rule(&self, rule: StoredRule) -> StoreFuture<()>;

    /// Removes an admin-API rule; false when there was none.
    fn delete_rule(&self, id: &str) -> StoreFuture<bool>;

    /// Every admin-API rule, by ID.
    fn rules(&self) -> StoreFuture<Vec<StoredRule>>;
}
