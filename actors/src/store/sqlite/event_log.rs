//! How events lie in the file: a log in the order they were committed, and
//! an index by execution that the writer brings up to date in bulk.
//!
//! Why not one table keyed by (execution, seq), as the file once was: a
//! commit's cost is the pages it writes, and a key ordered by execution puts
//! each execution's newest keys on a page of its own. A commit of 400 events
//! over 100 executions changed about 100 leaves of that key, two thirds of
//! the 143 pages it wrote (PERFORMANCE.md, "Session 8"), and the log kept a
//! copy of each of them, commit after commit. Here a commit appends its
//! events to the end of `event_log`, a few pages that are new and written
//! once, and leaves the index alone. Every [`UNINDEXED_ROWS`] events, one
//! commit sorts the keys of the log's end by execution and adds them to
//! `event_index`: each execution's leaf is then written once for thousands
//! of events, not once per commit.
//!
//! - `event_log`: every event, one row, numbered in the order committed
//!   (`AUTOINCREMENT`, so a number is never reused after retention deletes
//!   the newest rows: the index's bound below must never cover a new row).
//! - `event_index`: (execution, seq) to the row, for the rows up to
//!   `event_index_upto.row`.
//! - `events`: a view of both, which every read goes through, so reads name
//!   one table as before. SQLite pushes a read's conditions into each half:
//!   the indexed half is a search of `event_index`, the rest a scan of the
//!   log's end, at most [`UNINDEXED_ROWS`] and a commit's rows.
//!
//! The log has no key of its own to refuse a second copy of an event, so the
//! writer decides what is new ([`not_stored`]) before it inserts.

use crate::id_map::{id_map, IdMap};
use rusqlite::{params, OptionalExtension, Transaction};
use std::collections::HashSet;

/// How many events the log holds beyond its index before a commit indexes
/// them. Larger writes each execution's index leaf more rarely but makes
/// every read scan a longer end of the log. At 8,192, in the ingest load
/// (commits of about 400 events over 100 executions) a commit wrote 63 pages
/// of log where the keyed table wrote 229; a read of an execution's first
/// 100 events took 0.5–1.3 ms with the log's end full, 0.1 ms with 1,300
/// events there (PERFORMANCE.md, "Session 10").
pub(super) const UNINDEXED_ROWS: i64 = 8_192;

/// The tables and the view; `sqlite.rs` runs it after its own schema.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id    TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    type            TEXT NOT NULL,
    agent_id        TEXT,
    department      TEXT,
    conversation_id TEXT,
    timestamp       TEXT NOT NULL,
    body            TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_index (
    execution_id TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    row          INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_index_upto (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    row INTEGER NOT NULL
);
INSERT OR IGNORE INTO event_index_upto (id, row) VALUES (1, 0);
CREATE VIEW IF NOT EXISTS events AS
    SELECT i.execution_id AS execution_id, i.seq AS seq, l.type AS type,
           l.agent_id AS agent_id, l.department AS department,
           l.conversation_id AS conversation_id, l.timestamp AS timestamp,
           l.body AS body, l.id AS row
    FROM event_index AS i JOIN event_log AS l ON l.id = i.row
    UNION ALL
    SELECT execution_id, seq, type, agent_id, department, conversation_id,
           timestamp, body, id
    FROM event_log WHERE id > (SELECT row FROM event_index_upto);
";

/// The columns an insert into the log names, in the order `sqlite.rs` binds them.
pub(super) const INSERT_COLUMNS: &str =
    "event_log (execution_id, seq, type, agent_id, department, conversation_id, timestamp, body)";

/// Creates the tables, and moves a file of the old layout (schema version 1:
/// `events` a table keyed by execution and seq) into them, in the caller's
/// transaction: a crash halfway leaves the old file as it was.
pub(super) fn create(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let old_layout = tx
        .query_row(
            "SELECT type = 'table' FROM sqlite_master WHERE name = 'events'",
            [],
            |row| row.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false);
    if old_layout {
        tx.execute_batch("ALTER TABLE events RENAME TO events_v1")?;
    }
    tx.execute_batch(SCHEMA)?;
    if old_layout {
        let moved = tx.execute(
            "INSERT INTO event_log
             (id, execution_id, seq, type, agent_id, department, conversation_id, timestamp, body)
             SELECT rowid, execution_id, seq, type, agent_id, department, conversation_id,
                    timestamp, body
             FROM events_v1 ORDER BY rowid",
            [],
        )?;
        tx.execute_batch(
            "INSERT INTO event_index (execution_id, seq, row)
                 SELECT execution_id, seq, id FROM event_log ORDER BY execution_id, seq;
             UPDATE event_index_upto SET row = (SELECT COALESCE(MAX(id), 0) FROM event_log);
             DROP TABLE events_v1;",
        )?;
        log::info!("sqlite: moved {moved} events to the log-and-index layout");
    }
    Ok(())
}

/// Says of each of `keys` (execution, seq) whether it is stored neither in
/// the file nor earlier in `keys`: what the commit inserts.
///
/// An execution's summary holds the highest seq stored of it, so a seq above
/// that (and above those earlier in `keys`) is new without looking further:
/// that is every event but a retried or repeated one. Only a seq at or below
/// it is looked up ([`StoredKeys`]).
pub(super) fn not_stored(
    tx: &Transaction<'_>,
    keys: &[(&str, i64)],
) -> rusqlite::Result<Vec<bool>> {
    let mut last_stored =
        tx.prepare_cached("SELECT last_seq FROM executions WHERE execution_id = ?1")?;
    let mut stored = StoredKeys::new(tx);
    let mut highest: IdMap<&str, i64> = id_map();
    let mut new = Vec::with_capacity(keys.len());
    for (n, &(execution_id, seq)) in keys.iter().enumerate() {
        let top = match highest.get(execution_id) {
            Some(&top) => top,
            None => last_stored
                .query_row([execution_id], |row| row.get(0))
                .optional()?
                .unwrap_or(0),
        };
        let is_new = if seq > top {
            highest.insert(execution_id, seq);
            true
        } else {
            let taken_earlier = keys[..n]
                .iter()
                .zip(&new)
                .any(|(key, &taken)| taken && *key == (execution_id, seq));
            highest.insert(execution_id, top);
            !taken_earlier && !stored.holds(execution_id, seq)?
        };
        new.push(is_new);
    }
    Ok(new)
}

/// Whether the file holds a key, for the rare seq that may be a repeat.
///
/// Why not a read of the view per key: its half over the log's end is a
/// scan, and a batch replayed whole (a cluster node's journal after a
/// failover) would scan it once per event. The end's keys are read once,
/// at the first key that needs them, and the index is searched per key.
struct StoredKeys<'t> {
    tx: &'t Transaction<'t>,
    log_end: Option<HashSet<(String, i64)>>,
}

impl<'t> StoredKeys<'t> {
    fn new(tx: &'t Transaction<'t>) -> StoredKeys<'t> {
        StoredKeys { tx, log_end: None }
    }

    fn holds(&mut self, execution_id: &str, seq: i64) -> rusqlite::Result<bool> {
        let indexed = self
            .tx
            .prepare_cached("SELECT 1 FROM event_index WHERE execution_id = ?1 AND seq = ?2")?
            .exists(params![execution_id, seq])?;
        Ok(indexed || self.log_end()?.contains(&(execution_id.to_owned(), seq)))
    }

    /// The keys of the log's end, read at the first call.
    fn log_end(&mut self) -> rusqlite::Result<&HashSet<(String, i64)>> {
        let keys = match self.log_end.take() {
            Some(keys) => keys,
            None => self
                .tx
                .prepare_cached(
                    "SELECT execution_id, seq FROM event_log
                     WHERE id > (SELECT row FROM event_index_upto)",
                )?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?,
        };
        Ok(self.log_end.insert(keys))
    }
}

/// Indexes the log's end once it holds [`UNINDEXED_ROWS`] events, in the
/// caller's transaction: the keys go in sorted, so each execution's leaf is
/// written once for all of its events there.
pub(super) fn index_if_due(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let (upto, last): (i64, i64) = tx
        .prepare_cached(
            "SELECT (SELECT row FROM event_index_upto),
                    (SELECT COALESCE(MAX(id), 0) FROM event_log)",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    if last - upto < UNINDEXED_ROWS {
        return Ok(());
    }
    // OR IGNORE: `not_stored` keeps keys unique; were one ever not, a writer
    // that could not commit again would be worse than a row nobody reads.
    tx.prepare_cached(
        "INSERT OR IGNORE INTO event_index (execution_id, seq, row)
         SELECT execution_id, seq, id FROM event_log
         WHERE id > ?1 AND id <= ?2 ORDER BY execution_id, seq",
    )?
    .execute([upto, last])?;
    tx.prepare_cached("UPDATE event_index_upto SET row = ?1")?
        .execute([last])?;
    Ok(())
}

/// Deletes the events of the executions `executions` selects (a `SELECT
/// execution_id …` taking `args`), from the log and the index.
pub(super) fn delete_executions(
    tx: &Transaction<'_>,
    executions: &str,
    args: &[rusqlite::types::Value],
) -> rusqlite::Result<()> {
    tx.execute(
        &format!(
            "DELETE FROM event_log WHERE id IN
             (SELECT row FROM events WHERE execution_id IN ({executions}))"
        ),
        rusqlite::params_from_iter(args),
    )?;
    tx.execute(
        &format!("DELETE FROM event_index WHERE execution_id IN ({executions})"),
        rusqlite::params_from_iter(args),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::UNINDEXED_ROWS;
    use crate::store::sqlite::tests::{agent_start, agent_start_at, raw};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{EventQuery, Retention, Store};
    use chrono::{TimeDelta, Utc};
    use std::path::Path;

    /// `(event_index_upto.row, MAX(event_log.id), rows in event_index)`.
    fn layout(path: &Path) -> (i64, i64, i64) {
        raw(path)
            .query_row(
                "SELECT (SELECT row FROM event_index_upto),
                        (SELECT MAX(id) FROM event_log),
                        (SELECT COUNT(*) FROM event_index)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap()
    }

    async fn seqs(store: &SqliteStore, query: EventQuery) -> Vec<u64> {
        let events = store.events(query).await.unwrap();
        events.iter().map(|event| event.seq.unwrap()).collect()
    }

    /// Appends `per_execution` events to each of `executions`, a batch of
    /// 100 at a time, the executions' events interleaved as producers send them.
    async fn fill(store: &SqliteStore, executions: &[&str], per_execution: u64) {
        let mut batch = Vec::new();
        for seq in 1..=per_execution {
            for execution_id in executions {
                batch.push(agent_start(execution_id, seq));
                if batch.len() == 100 {
                    store.append(std::mem::take(&mut batch)).await.unwrap();
                }
            }
        }
        store.append(batch).await.unwrap();
    }

    #[actix_rt::test]
    async fn reads_find_events_on_both_sides_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = SqliteStore::open(&path).unwrap();
        let executions = ["a", "b", "c"];
        let per_execution = (UNINDEXED_ROWS as u64 + 600) / 3;
        fill(&store, &executions, per_execution).await;
        let (upto, last, indexed) = layout(&path);
        assert!(
            upto >= UNINDEXED_ROWS,
            "the log's start was indexed: {upto}"
        );
        assert!(last > upto, "and its end is not, to read through the view");
        assert_eq!(indexed, upto);
        let all: Vec<u64> = (1..=per_execution).collect();
        for execution_id in executions {
            let query = EventQuery::after(execution_id, 0, usize::MAX >> 1);
            assert_eq!(seqs(&store, query).await, all);
        }
        // A page that spans the index's bound, in seq order.
        let boundary = per_execution - 150;
        let mut query = EventQuery::after("b", boundary - 10, 20);
        query.before_seq = Some(boundary + 100);
        let page: Vec<u64> = (boundary - 9..=boundary + 10).collect();
        assert_eq!(seqs(&store, query).await, page);
    }

    #[actix_rt::test]
    async fn a_repeated_append_is_recognised_on_both_sides_of_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = SqliteStore::open(&path).unwrap();
        let per_execution = UNINDEXED_ROWS as u64 / 2 + 100;
        fill(&store, &["a", "b"], per_execution).await;
        let before = layout(&path);
        assert!(before.0 > 0 && before.1 > before.0, "{before:?}");
        // seq 1 is indexed, the last is not; a batch may also repeat itself.
        let again = vec![
            agent_start("a", 1),
            agent_start("a", per_execution),
            agent_start("b", 2),
            agent_start("b", per_execution + 1),
            agent_start("b", per_execution + 1),
        ];
        store.append(again).await.unwrap();
        let after = layout(&path);
        assert_eq!(after.1, before.1 + 1, "only b's new event was stored");
        let stats = store.execution_stats("b").await.unwrap().unwrap();
        assert_eq!(stats.summary.event_count, per_execution + 1);
        let query = EventQuery::after("a", 0, usize::MAX >> 1);
        assert_eq!(
            seqs(&store, query).await,
            (1..=per_execution).collect::<Vec<_>>()
        );
    }

    /// The index covers rows by number: were a number reused after retention
    /// deleted the newest rows, a new event would fall under the index's
    /// bound without being in it, and no read would find it.
    #[actix_rt::test]
    async fn events_after_retention_deleted_the_newest_rows_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = SqliteStore::open(&path).unwrap();
        let now = Utc::now();
        let early = now - TimeDelta::hours(1);
        let kept: Vec<_> = (1..UNINDEXED_ROWS as u64 - 50)
            .map(|seq| agent_start_at("kept", seq, now, None))
            .collect();
        store.append(kept).await.unwrap();
        // The newest rows, and the commit that indexes them all.
        let doomed = (1..=100)
            .map(|seq| agent_start_at("doomed", seq, early, None))
            .collect();
        store.append(doomed).await.unwrap();
        let (upto, last, _) = layout(&path);
        assert_eq!(upto, last, "everything is indexed");
        let policy = Retention {
            max_age: None,
            max_executions: Some(1),
        };
        let removed = store.apply_retention(policy).await.unwrap();
        assert_eq!(removed, vec!["doomed".to_owned()]);
        store
            .append(vec![agent_start_at("new", 1, now, None)])
            .await
            .unwrap();
        assert_eq!(seqs(&store, EventQuery::after("new", 0, 10)).await, vec![1]);
        assert!(seqs(&store, EventQuery::after("doomed", 0, 10))
            .await
            .is_empty());
    }

    #[actix_rt::test]
    async fn a_file_of_the_old_layout_is_moved_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let old = raw(&path);
        old.execute_batch(
            "CREATE TABLE events (
                 execution_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
                 agent_id TEXT, department TEXT, conversation_id TEXT,
                 timestamp TEXT NOT NULL, body TEXT NOT NULL,
                 PRIMARY KEY (execution_id, seq));
             PRAGMA user_version = 1;",
        )
        .unwrap();
        old.execute_batch(super::super::SCHEMA).unwrap();
        let at = "2026-12-07T22:00:00.000Z";
        for seq in 1..=3 {
            let body = agent_start("e", seq).event_json().to_owned();
            old.execute(
                "INSERT INTO events VALUES ('e', ?1, 'agent-start', 'a', NULL, NULL, ?2, ?3)",
                rusqlite::params![seq, at, body],
            )
            .unwrap();
        }
        old.execute(
            "INSERT INTO executions VALUES ('e', NULL, 'running', ?1, NULL, 3, 3, ?1)",
            [at],
        )
        .unwrap();
        drop(old);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(layout(&path), (3, 3, 3));
        assert_eq!(
            seqs(&store, EventQuery::after("e", 0, 10)).await,
            vec![1, 2, 3]
        );
        let retried_and_new = vec![agent_start("e", 2), agent_start("e", 4)];
        store.append(retried_and_new).await.unwrap();
        assert_eq!(
            seqs(&store, EventQuery::after("e", 0, 10)).await,
            vec![1, 2, 3, 4]
        );
        let kind: String = raw(&path)
            .query_row(
                "SELECT type FROM sqlite_master WHERE name = 'events'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(kind, "view");
    }
}
