//! The outbox on SQLite: the `notify_outbox` and `notify_rules` tables of
//! the schema. Changes go through the writer thread (so a claim and the
//! appends never interleave badly), reads through the reader.

use super::{sql_int, Failure, SqliteStore};
use crate::store::outbox::{
    Delivery, DeliveryState, Notification, Outbox, OutboxCounts, Outcome, StoredRule,
};
use crate::store::StoreFuture;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row, TransactionBehavior};

const DELIVERY_COLUMNS: &str = "key, rule_id, execution_id, seq, url, body, state, attempts, \
     next_attempt_at, last_error, created_at, updated_at";

impl Outbox for SqliteStore {
    fn enqueue(&self, deliveries: Vec<Notification>, now: DateTime<Utc>) -> StoreFuture<u64> {
        let now = now.timestamp_millis();
        self.writer.run("enqueue", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut added = 0;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO notify_outbox
                     (key, rule_id, execution_id, seq, url, body, state, attempts,
                      next_attempt_at, last_error, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, NULL, ?7, ?7)",
                )?;
                for d in &deliveries {
                    added += insert.execute(params![
                        d.key,
                        d.rule_id,
                        d.execution_id,
                        sql_int(d.seq),
                        d.url,
                        d.body,
                        now
                    ])? as u64;
                }
            }
            tx.commit()?;
            Ok(added)
        })
    }

    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreFuture<Vec<Delivery>> {
        let (now, lease_until) = (now.timestamp_millis(), lease_until.timestamp_millis());
        self.writer.run("claim_due", move |conn| {
            // One write transaction: the rows read are the rows leased.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let keys: Vec<String> = tx
                .prepare_cached(
                    "SELECT key FROM notify_outbox
                     WHERE state = 'pending' AND next_attempt_at <= ?1
                     ORDER BY next_attempt_at LIMIT ?2",
                )?
                .query_map(params![now, sql_int(limit)], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut claimed = Vec::with_capacity(keys.len());
            {
                let mut lease = tx.prepare_cached(&format!(
                    "UPDATE notify_outbox
                     SET attempts = attempts + 1, next_attempt_at = ?2, updated_at = ?3
                     WHERE key = ?1 RETURNING {DELIVERY_COLUMNS}"
                ))?;
                for key in &keys {
                    let row = lease.query_row(params![key, lease_until, now], read_row)?;
                    claimed.push(row.into_delivery()?);
                }
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    fn record_attempt(&self, key: &str, outcome: Outcome, now: DateTime<Utc>) -> StoreFuture<()> {
        let key = key.to_owned();
        let now = now.timestamp_millis();
        self.writer.run("record_attempt", move |conn| {
            let (state, next, error) = match outcome {
                Outcome::Delivered => (DeliveryState::Delivered, None, None),
                Outcome::RetryAt(at, error) => (
                    DeliveryState::Pending,
                    Some(at.timestamp_millis()),
                    Some(error),
                ),
                Outcome::Dead(error) => (DeliveryState::Dead, None, Some(error)),
            };
            conn.prepare_cached(
                "UPDATE notify_outbox SET state = ?2,
                     next_attempt_at = COALESCE(?3, next_attempt_at),
                     last_error = COALESCE(?4, last_error), updated_at = ?5
                 WHERE key = ?1",
            )?
            .execute(params![key, state.as_str(), next, error, now])?;
            Ok(())
        })
    }

    fn dead_letters(&self, limit: usize) -> StoreFuture<Vec<Delivery>> {
        self.reader.run("dead_letters", move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM notify_outbox
                 WHERE state = 'dead' ORDER BY updated_at, key LIMIT ?1"
            ))?;
            let rows = statement.query_map([sql_int(limit)], read_row)?;
            rows.map(|row| row?.into_delivery()).collect()
        })
    }

    fn retry_dead(&self, key: &str, now: DateTime<Utc>) -> StoreFuture<bool> {
        self.change_dead(
            "retry_dead",
            key,
            now,
            "state = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2",
        )
    }

    fn discard_dead(&self, key: &str, now: DateTime<Utc>) -> StoreFuture<bool> {
        self.change_dead(
            "discard_dead",
            key,
            now,
            "state = 'discarded', updated_at = ?2",
        )
    }

    fn outbox_counts(&self) -> StoreFuture<OutboxCounts> {
        self.reader.run("outbox_counts", |conn| {
            let count = |conn: &Connection, state: DeliveryState| -> Result<u64, Failure> {
                Ok(conn
                    .prepare_cached("SELECT COUNT(*) FROM notify_outbox WHERE state = ?1")?
                    .query_row([state.as_str()], |row| row.get(0))?)
            };
            let next_due: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_at) FROM notify_outbox WHERE state = 'pending'",
                )?
                .query_row([], |row| row.get(0))?;
            Ok(OutboxCounts {
                pending: count(conn, DeliveryState::Pending)?,
                dead: count(conn, DeliveryState::Dead)?,
                next_due: next_due.and_then(DateTime::from_timestamp_millis),
            })
        })
    }

    fn prune_outbox(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        let before = before.timestamp_millis();
        self.writer.run("prune_outbox", move |conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM notify_outbox
                     WHERE state IN ('delivered', 'discarded') AND updated_at < ?1",
                )?
                .execute([before])?;
            Ok(removed as u64)
        })
    }

    fn put_rule(&self, rule: StoredRule) -> StoreFuture<()> {
        self.writer.run("put_rule", move |conn| {
            conn.prepare_cached(
                "INSERT INTO notify_rules (id, body) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![rule.id, rule.body])?;
            Ok(())
        })
    }

    fn delete_rule(&self, id: &str) -> StoreFuture<bool> {
        let id = id.to_owned();
        self.writer.run("delete_rule", move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM notify_rules WHERE id = ?1")?
                .execute([id])?;
            Ok(removed == 1)
        })
    }

    fn rules(&self) -> StoreFuture<Vec<StoredRule>> {
        self.reader.run("rules", |conn| {
            let mut statement =
                conn.prepare_cached("SELECT id, body FROM notify_rules ORDER BY id")?;
            let rows = statement.query_map([], |row| {
                Ok(StoredRule {
                    id: row.get(0)?,
                    body: row.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

impl SqliteStore {
    /// Applies `set` (`?2` is now) to `key` if it is a dead letter.
    fn change_dead(
        &self,
        operation: &'static str,
        key: &str,
        now: DateTime<Utc>,
        set: &'static str,
    ) -> StoreFuture<bool> {
        let key = key.to_owned();
        let now = now.timestamp_millis();
        self.writer.run(operation, move |conn| {
            let changed = conn
                .prepare_cached(&format!(
                    "UPDATE notify_outbox SET {set} WHERE key = ?1 AND state = 'dead'"
                ))?
                .execute(params![key, now])?;
            Ok(changed == 1)
        })
    }
}

/// A `notify_outbox` row as stored, before its state and times are checked.
struct DeliveryRow {
    notification: Notification,
    state: String,
    attempts: u32,
    next_attempt_at: i64,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

/// Reads the columns of [`DELIVERY_COLUMNS`].
fn read_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        notification: Notification {
            key: row.get(0)?,
            rule_id: row.get(1)?,
            execution_id: row.get(2)?,
            seq: row.get(3)?,
            url: row.get(4)?,
            body: row.get(5)?,
        },
        state: row.get(6)?,
        attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
        last_error: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

impl DeliveryRow {
    fn into_delivery(self) -> Result<Delivery, Failure> {
        let key = &self.notification.key;
        let state = DeliveryState::parse(&self.state).ok_or_else(|| {
            Failure(format!(
                "delivery {key} has an unknown state `{}`",
                self.state
            ))
        })?;
        let time = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| Failure(format!("delivery {key}: bad time {ms}")))
        };
        Ok(Delivery {
            next_attempt_at: time(self.next_attempt_at)?,
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            notification: self.notification,
            state,
            attempts: self.attempts,
            last_error: self.last_error,
        })
    }
}
