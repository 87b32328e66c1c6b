//! The outbox on MongoDB: `notifyOutbox` (one document per delivery, its
//! `_id` the idempotency key, so uniqueness is the server's) and
//! `notifyRules` (one per admin-API rule, `_id` its ID).
//!
//! A claim is one `findOneAndUpdate` per delivery: atomic per document, so
//! two nodes sharing the database never lease the same delivery at once.

use super::{bson_time, chrono_time, durable_write_concern, insert_only_duplicates, number};
use super::{plain_index, Inner, MongoStore};
use crate::store::outbox::{
    Delivery, DeliveryState, Notification, Outbox, OutboxCounts, Outcome, StoredRule,
};
use crate::store::{StoreError, StoreFuture};
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::{CollectionOptions, ReturnDocument};
use mongodb::{Collection, Database};

/// One document per delivery.
const OUTBOX: &str = "notifyOutbox";
/// One document per admin-API rule.
const RULES: &str = "notifyRules";

/// The collections, with the same durable write concern as the events.
fn collection(db: &Database, name: &str) -> Collection<Document> {
    let durable = CollectionOptions::builder()
        .write_concern(durable_write_concern())
        .build();
    db.collection_with_options(name, durable)
}

/// The index a claim reads (`_id` needs none).
pub(super) async fn create_indexes(db: &Database) -> Result<(), mongodb::error::Error> {
    collection(db, OUTBOX)
        .create_indexes([
            plain_index(doc! { "state": 1, "nextAttemptAt": 1 }),
            plain_index(doc! { "state": 1, "updatedAt": 1 }),
        ])
        .await
        .map(drop)
}

impl Inner {
    fn outbox(&self) -> Collection<Document> {
        collection(&self.db, OUTBOX)
    }

    fn rules(&self) -> Collection<Document> {
        collection(&self.db, RULES)
    }

    async fn enqueue(
        &self,
        deliveries: Vec<Notification>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let total = deliveries.len() as u64;
        let docs: Vec<Document> = deliveries
            .into_iter()
            .map(|d| {
                doc! {
                    "_id": d.key,
                    "ruleId": d.rule_id,
                    "executionId": d.execution_id,
                    "seq": super::to_i64(d.seq),
                    "url": d.url,
                    "body": d.body,
                    "state": DeliveryState::Pending.as_str(),
                    "attempts": 0_i64,
                    "nextAttemptAt": bson_time(now),
                    "createdAt": bson_time(now),
                    "updatedAt": bson_time(now),
                }
            })
            .collect();
        // Unordered: a key already there must not stop the ones after it.
        match self.outbox().insert_many(docs).ordered(false).await {
            Ok(result) => Ok(result.inserted_ids.len() as u64),
            Err(err) => match err.kind.as_ref() {
                ErrorKind::InsertMany(insert) if insert_only_duplicates(insert) => {
                    let duplicates = insert.write_errors.as_ref().map_or(0, Vec::len) as u64;
                    Ok(total.saturating_sub(duplicates))
                }
                _ => Err(self.secrets.error("enqueueing notifications", &err)),
            },
        }
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut claimed = Vec::new();
        while claimed.len() < limit {
            let filter = doc! {
                "state": DeliveryState::Pending.as_str(),
                "nextAttemptAt": { "$lte": bson_time(now) },
            };
            let update = doc! {
                "$inc": { "attempts": 1_i64 },
                "$set": { "nextAttemptAt": bson_time(lease_until), "updatedAt": bson_time(now) },
            };
            let next = self
                .outbox()
                .find_one_and_update(filter, update)
                .sort(doc! { "nextAttemptAt": 1 })
                .return_document(ReturnDocument::After)
                .await
                .map_err(|err| self.secrets.error("claiming notifications", &err))?;
            match next {
                Some(doc) => claimed.push(delivery_from_document(&doc)?),
                None => break,
            }
        }
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        key: &str,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut set = doc! { "updatedAt": bson_time(now) };
        match outcome {
            Outcome::Delivered => {
                set.insert("state", DeliveryState::Delivered.as_str());
            }
            Outcome::RetryAt(at, error) => {
                set.insert("state", DeliveryState::Pending.as_str());
                set.insert("nextAttemptAt", bson_time(at));
                set.insert("lastError", error);
            }
            Outcome::Dead(error) => {
                set.insert("state", DeliveryState::Dead.as_str());
                set.insert("lastError", error);
            }
        }
        self.outbox()
            .update_one(doc! { "_id": key }, doc! { "$set": set })
            .await
            .map(drop)
            .map_err(|err| self.secrets.error("recording a notification attempt", &err))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cursor = self
            .outbox()
            .find(doc! { "state": DeliveryState::Dead.as_str() })
            .sort(doc! { "updatedAt": 1, "_id": 1 })
            .limit(super::to_i64(limit as u64))
            .await;
        let rows = self.collect("reading dead letters", cursor).await?;
        rows.iter().map(delivery_from_document).collect()
    }

    /// Applies `set` to `key` if it is a dead letter; whether it was.
    async fn change_dead(&self, key: &str, set: Document, doing: &str) -> Result<bool, StoreError> {
        let filter = doc! { "_id": key, "state": DeliveryState::Dead.as_str() };
        let result = self
            .outbox()
            .update_one(filter, doc! { "$set": set })
            .await
            .map_err(|err| self.secrets.error(doing, &err))?;
        Ok(result.matched_count == 1)
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let count = |state: DeliveryState| async move {
            self.outbox()
                .count_documents(doc! { "state": state.as_str() })
                .await
                .map_err(|err| self.secrets.error("counting notifications", &err))
        };
        let next = self
            .outbox()
            .find_one(doc! { "state": DeliveryState::Pending.as_str() })
            .sort(doc! { "nextAttemptAt": 1 })
            .projection(doc! { "_id": 0, "nextAttemptAt": 1 })
            .await
            .map_err(|err| {
                self.secrets
                    .error("reading the next due notification", &err)
            })?;
        Ok(OutboxCounts {
            pending: count(DeliveryState::Pending).await?,
            dead: count(DeliveryState::Dead).await?,
            next_due: next
                .and_then(|doc| doc.get_datetime("nextAttemptAt").ok().copied())
                .map(chrono_time),
        })
    }

    async fn prune_outbox(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let filter = doc! {
            "state": { "$in": [DeliveryState::Delivered.as_str(), DeliveryState::Discarded.as_str()] },
            "updatedAt": { "$lt": bson_time(before) },
        };
        self.outbox()
            .delete_many(filter)
            .await
            .map(|result| result.deleted_count)
            .map_err(|err| self.secrets.error("pruning notifications", &err))
    }

    async fn put_rule(&self, rule: StoredRule) -> Result<(), StoreError> {
        self.rules()
            .replace_one(
                doc! { "_id": &rule.id },
                doc! { "_id": &rule.id, "body": rule.body },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(|err| self.secrets.error("storing a rule", &err))
    }

    async fn delete_rule(&self, id: &str) -> Result<bool, StoreError> {
        self.rules()
            .delete_one(doc! { "_id": id })
            .await
            .map(|result| result.deleted_count == 1)
            .map_err(|err| self.secrets.error("removing a rule", &err))
    }

    async fn stored_rules(&self) -> Result<Vec<StoredRule>, StoreError> {
        let cursor = self.rules().find(doc! {}).sort(doc! { "_id": 1 }).await;
        let rows = self.collect("reading rules", cursor).await?;
        rows.iter()
            .map(|row| match (row.get_str("_id"), row.get_str("body")) {
                (Ok(id), Ok(body)) => Ok(StoredRule {
                    id: id.to_owned(),
                    body: body.to_owned(),
                }),
                _ => Err(StoreError::new("mongodb: a stored rule has no _id or body")),
            })
            .collect()
    }
}

impl Outbox for MongoStore {
    fn enqueue(&self, deliveries: Vec<Notification>, now: DateTime<Utc>) -> StoreFuture<u64> {
        self.run(|store| async move { store.enqueue(deliveries, now).await })
    }

    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<Vec<Delivery>> {
        self.run(|store| async move { store.claim_due(now, lease_until, limit).await })
    }

    fn record_attempt(&self, key: &str, outcome: Outcome, now: DateTime<Utc>) -> StoreFuture<()> {
        let key = key.to_owned();
        self.run(|store| async move { store.record_attempt(&key, outcome, now).await })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<Vec<Delivery>> {
        self.run(|store| async move { store.dead_letters(limit).await })
    }

    fn retry_dead(&self, key: &str, now: DateTime<Utc>) -> StoreFuture<bool> {
        let key = key.to_owned();
        let set = doc! {
            "state": DeliveryState::Pending.as_str(),
            "attempts": 0_i64,
            "nextAttemptAt": bson_time(now),
            "updatedAt": bson_time(now),
        };
        self.run(
            |store| async move { store.change_dead(&key, set, "retrying a dead letter").await },
        )
    }

    fn discard_dead(&self, key: &str, now: DateTime<Utc>) -> StoreFuture<bool> {
        let key = key.to_owned();
        let set = doc! {
            "state": DeliveryState::Discarded.as_str(),
            "updatedAt": bson_time(now),
        };
        self.run(|store| async move {
            store
                .change_dead(&key, set, "discarding a dead letter")
                .await
        })
    }

    fn outbox_counts(&self) -> StoreFuture<OutboxCounts> {
        self.run(|store| async move { store.outbox_counts().await })
    }

    fn prune_outbox(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        self.run(|store| async move { store.prune_outbox(before).await })
    }

    fn put_rule(&self, rule: StoredRule) -> StoreFuture<()> {
        self.run(|store| async move { store.put_rule(rule).await })
    }

    fn delete_rule(&self, id: &str) -> StoreFuture<bool> {
        let id = id.to_owned();
        self.run(|store| async move { store.delete_rule(&id).await })
    }

    fn rules(&self) -> StoreFuture<Vec<StoredRule>> {
        self.run(|store| async move { store.stored_rules().await })
    }
}

fn delivery_from_document(doc: &Document) -> Result<Delivery, StoreError> {
    let key = doc.get_str("_id").unwrap_or("?").to_owned();
    let broken = |what: &str| StoreError::new(format!("mongodb: delivery `{key}` has {what}"));
    let text = |field: &str| {
        doc.get_str(field)
            .map(str::to_owned)
            .map_err(|_| broken(&format!("no {field}")))
    };
    let time = |field: &str| {
        doc.get_datetime(field)
            .map(|at| chrono_time(*at))
            .map_err(|_| broken(&format!("no {field}")))
    };
    let state = doc
        .get_str("state")
        .ok()
        .and_then(DeliveryState::parse)
        .ok_or_else(|| broken("no known state"))?;
    Ok(Delivery {
        notification: Notification {
            rule_id: text("ruleId")?,
            execution_id: text("executionId")?,
            seq: number(doc, "seq").unwrap_or(0),
            url: text("url")?,
            body: text("body")?,
            key: key.clone(),
        },
        state,
        attempts: number(doc, "attempts")
            .unwrap_or(0)
            .try_into()
            .unwrap_or(u32::MAX),
        next_attempt_at: time("nextAttemptAt")?,
        last_error: doc.get_str("lastError").ok().map(str::to_owned),
        created_at: time("createdAt")?,
        updated_at: time("updatedAt")?,
    })
}
