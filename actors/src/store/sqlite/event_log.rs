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
//! writer decides what is new ([`Append::not_stored`]) before it inserts.
//!
//! The writer also remembers the keys of the log's end ([`LogEnd`]), so that
//! indexing them, and telling a repeat from a new event, reads nothing back.

use crate::id_map::IdMap;
use rusqlite::{params, OptionalExtension, Transaction};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

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

/// The writer thread's memory of the log's end: the key of every row above
/// the index's bound, in row order, and what it knows of the summaries of
/// the executions it met lately.
///
/// Why remember them: the commit that indexes the end used to read its rows
/// back, 8,192 rows of about 400 bytes, more than SQLite's page cache holds,
/// and sort them with SQLite's sorter. Reading, sorting and the page reads
/// were most of that commit's work, and that commit a fifth of the writer's
/// (PERFORMANCE.md, "Session 11"). The writer committed those rows itself,
/// so it can keep their keys instead: about 32 bytes each, the execution IDs
/// shared.
///
/// Only the writer thread appends, so what it committed is what the file
/// holds, with three exceptions, after each of which the memory starts again
/// from the file: another connection wrote to the file (`PRAGMA
/// data_version` changes), an append failed (an [`Append`] takes the memory
/// and only its commit puts it back), and retention deleted rows.
#[derive(Default)]
struct LogEnd {
    /// `PRAGMA data_version` when `keys` was last known to match the file;
    /// `None` when it must be read.
    version: Option<i64>,
    /// `event_index_upto.row`: `keys` are of the rows above it.
    upto: i64,
    keys: Vec<LogKey>,
    /// The execution IDs of `keys`, each held once, by number…
    names: Vec<Rc<str>>,
    /// …and the numbers by ID.
    numbers: IdMap<Rc<str>, u32>,
    /// The summaries of executions the writer met lately, as stored: with
    /// them, a commit tells new events from repeats without reading the
    /// summary of each execution it holds (one statement per execution per
    /// commit, and most of a commit's statements when it spans thousands of
    /// executions), and moves `active_hour` only when it changes.
    known: IdMap<Box<str>, Known>,
}

/// What the writer knows of one execution's stored summary.
struct Known {
    last_seq: i64,
    /// `active_hour`, its bytes inline (zeros when there is no summary
    /// yet, which sort before any hour): a `String` here was 40 more bytes
    /// per execution remembered.
    active_hour: [u8; HOUR_LEN],
}

/// The length of an `active_hour`, `YYYY-MM-DDTHH`.
const HOUR_LEN: usize = 13;

/// An hour's text as [`Known::active_hour`] holds it: its first bytes,
/// zeros after a shorter one, so that the bytes sort as the text does.
fn hour_bytes(hour: &str) -> [u8; HOUR_LEN] {
    let mut bytes = [0; HOUR_LEN];
    let len = hour.len().min(HOUR_LEN);
    bytes[..len].copy_from_slice(&hour.as_bytes()[..len]);
    bytes
}

/// Executions whose summary the writer remembers at most; past it, it
/// starts again empty. About 80 bytes each.
const MAX_KNOWN: usize = 100_000;

/// One row of the log's end.
struct LogKey {
    /// The execution, by its number in [`LogEnd::names`]: sorting by number
    /// groups an execution's keys as well as sorting by ID, and compares
    /// integers, not IDs that share long prefixes.
    execution: u32,
    seq: i64,
    row: i64,
}

thread_local! {
    /// The writer thread's [`LogEnd`]; no other thread appends.
    static LOG_END: RefCell<LogEnd> = RefCell::default();
}

impl LogEnd {
    /// The end as the file holds it.
    fn read(tx: &Transaction<'_>, version: i64) -> rusqlite::Result<LogEnd> {
        let upto: i64 = tx.query_row("SELECT row FROM event_index_upto", [], |row| row.get(0))?;
        let mut end = LogEnd {
            version: Some(version),
            upto,
            ..LogEnd::default()
        };
        let mut select = tx.prepare_cached(
            "SELECT execution_id, seq, id FROM event_log WHERE id > ?1 ORDER BY id",
        )?;
        let mut rows = select.query([upto])?;
        while let Some(row) = rows.next()? {
            end.push(row.get_ref(0)?.as_str()?, row.get(1)?, row.get(2)?);
        }
        Ok(end)
    }

    fn push(&mut self, execution_id: &str, seq: i64, row: i64) {
        let execution = match self.numbers.get(execution_id) {
            Some(&number) => number,
            None => {
                let name: Rc<str> = Rc::from(execution_id);
                let number = self.names.len() as u32;
                self.numbers.insert(Rc::clone(&name), number);
                self.names.push(name);
                number
            }
        };
        self.keys.push(LogKey {
            execution,
            seq,
            row,
        });
    }

    /// Empties the end, now that the index holds it up to `upto`.
    fn indexed_up_to(&mut self, upto: i64) {
        self.upto = upto;
        self.keys.clear();
        self.names.clear();
        self.numbers.clear();
    }

    /// The row number of the last row, as remembered.
    fn last_row(&self) -> i64 {
        self.keys.last().map_or(self.upto, |key| key.row)
    }
}

/// One commit's appends to the log, with the writer's memory of its end:
/// [`begin`](Append::begin) after the transaction starts,
/// [`committed`](Append::committed) after it commits.
pub(super) struct Append {
    end: LogEnd,
}

impl Append {
    /// Takes the writer's memory of the log's end, or reads the end from the
    /// file when the memory is missing or another connection wrote since.
    pub(super) fn begin(tx: &Transaction<'_>) -> rusqlite::Result<Append> {
        let end = LOG_END.with(RefCell::take);
        let version: i64 = tx.query_row("PRAGMA data_version", [], |row| row.get(0))?;
        let end = if end.version == Some(version) {
            end
        } else {
            LogEnd::read(tx, version)?
        };
        Ok(Append { end })
    }

    /// Says of each of `keys` (execution, seq) whether it is stored neither
    /// in the file nor earlier in `keys`: what the commit inserts.
    ///
    /// An execution's summary holds the highest seq stored of it, so a seq
    /// above that (and above those earlier in `keys`) is new without looking
    /// further: that is every event but a retried or repeated one. Only a
    /// seq at or below it is looked up, in the index or the log's end.
    pub(super) fn not_stored(
        &mut self,
        tx: &Transaction<'_>,
        keys: &[(&str, i64)],
    ) -> rusqlite::Result<Vec<bool>> {
        let mut new = Vec::with_capacity(keys.len());
        let mut log_end: Option<HashSet<(u32, i64)>> = None;
        for (n, &(execution_id, seq)) in keys.iter().enumerate() {
            let top = self.last_seq(tx, execution_id)?;
            let is_new = seq > top || {
                let taken_earlier = keys[..n]
                    .iter()
                    .zip(&new)
                    .any(|(key, &taken)| taken && *key == (execution_id, seq));
                let in_log_end = self.end.numbers.get(execution_id).is_some_and(|&number| {
                    log_end
                        .get_or_insert_with(|| end_keys(&self.end))
                        .contains(&(number, seq))
                });
                !taken_earlier && !in_log_end && !indexed(tx, execution_id, seq)?
            };
            if seq > top {
                // What the summary will hold once this commits.
                if let Some(known) = self.end.known.get_mut(execution_id) {
                    known.last_seq = seq;
                }
            }
            new.push(is_new);
        }
        Ok(new)
    }

    /// The highest seq stored of an execution (its summary's `last_seq`),
    /// remembered after the first read.
    fn last_seq(&mut self, tx: &Transaction<'_>, execution_id: &str) -> rusqlite::Result<i64> {
        if let Some(known) = self.end.known.get(execution_id) {
            return Ok(known.last_seq);
        }
        let known = tx
            .prepare_cached("SELECT last_seq, active_hour FROM executions WHERE execution_id = ?1")?
            .query_row([execution_id], |row| {
                Ok(Known {
                    last_seq: row.get(0)?,
                    active_hour: hour_bytes(row.get_ref(1)?.as_str()?),
                })
            })
            .optional()?
            .unwrap_or(Known {
                last_seq: 0,
                active_hour: [0; HOUR_LEN],
            });
        let last_seq = known.last_seq;
        if self.end.known.len() >= MAX_KNOWN {
            self.end.known.clear();
        }
        self.end.known.insert(execution_id.into(), known);
        Ok(last_seq)
    }

    /// Whether an execution's stored `active_hour` may be earlier than
    /// `hour`, which it is from now on: false only when the writer knows
    /// it is not.
    pub(super) fn hour_moved(&mut self, execution_id: &str, hour: &str) -> bool {
        let hour = hour_bytes(hour);
        match self.end.known.get_mut(execution_id) {
            Some(known) if known.active_hour >= hour => false,
            Some(known) => {
                known.active_hour = hour;
                true
            }
            None => true,
        }
    }

    /// Notes the rows just inserted, `keys` in their order. Call it right
    /// after their inserts: their numbers are counted back from the
    /// connection's last inserted row, and the log's numbers run on by one
    /// (one writer, `AUTOINCREMENT`).
    pub(super) fn inserted(&mut self, tx: &Transaction<'_>, keys: &[(&str, i64)]) {
        let first = tx.last_insert_rowid() + 1 - keys.len() as i64;
        for (n, &(execution_id, seq)) in keys.iter().enumerate() {
            self.end.push(execution_id, seq, first + n as i64);
        }
    }

    /// Indexes the log's end once it holds [`UNINDEXED_ROWS`] events: the
    /// keys go in sorted, so each execution's leaf is written once for all
    /// of its events there.
    pub(super) fn index_if_due(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let last = self.end.last_row();
        if last - self.end.upto < UNINDEXED_ROWS {
            return Ok(());
        }
        // The numbering is the memory's assumption; were it ever wrong, the
        // file's own rows are indexed rather than the remembered ones.
        let last_in_file: i64 =
            tx.query_row("SELECT COALESCE(MAX(id), 0) FROM event_log", [], |row| {
                row.get(0)
            })?;
        if last_in_file != last {
            log::warn!(
                "sqlite: the log ends at row {last_in_file}, not {last} as remembered; \
                 reading it again"
            );
            self.end = LogEnd::read(tx, self.end.version.unwrap_or_default())?;
        }
        let last = self.end.last_row();
        // Stable, and each execution's keys come in seq order nearly always:
        // the sort mostly finds runs. In place: the end is emptied below,
        // and a failed commit drops this memory anyway.
        self.end.keys.sort_by_key(|key| (key.execution, key.seq));
        insert_index_keys(tx, &self.end.names, &self.end.keys)?;
        tx.prepare_cached("UPDATE event_index_upto SET row = ?1")?
            .execute([last])?;
        self.end.indexed_up_to(last);
        Ok(())
    }

    /// Gives the memory back to the writer thread, now that the commit holds.
    pub(super) fn committed(self) {
        LOG_END.with(|end| *end.borrow_mut() = self.end);
    }
}

/// The keys of the log's end, for the rare seq that may be a repeat: built
/// once per commit, at the first such seq, so that a batch replayed whole (a
/// cluster node's journal after a failover) does not search the end once per
/// event.
fn end_keys(end: &LogEnd) -> HashSet<(u32, i64)> {
    end.keys
        .iter()
        .map(|key| (key.execution, key.seq))
        .collect()
}

/// Whether the index holds a key.
fn indexed(tx: &Transaction<'_>, execution_id: &str, seq: i64) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM event_index WHERE execution_id = ?1 AND seq = ?2")?
        .exists(params![execution_id, seq])
}

/// Keys to a statement when indexing: each statement run has a cost of its
/// own, which this many share.
const KEYS_PER_INSERT: usize = 64;

/// Adds keys, grouped by execution, to the index.
///
/// OR IGNORE: `not_stored` keeps keys unique; were one ever not, a writer
/// that could not commit again would be worse than a row nobody reads.
fn insert_index_keys(
    tx: &Transaction<'_>,
    names: &[Rc<str>],
    keys: &[LogKey],
) -> rusqlite::Result<()> {
    let insert_sql = |rows: usize| {
        let values = vec!["(?, ?, ?)"; rows].join(", ");
        format!("INSERT OR IGNORE INTO event_index (execution_id, seq, row) VALUES {values}")
    };
    let mut chunks = keys.chunks_exact(KEYS_PER_INSERT);
    let mut insert = tx.prepare_cached(&insert_sql(KEYS_PER_INSERT))?;
    for chunk in &mut chunks {
        for (n, key) in chunk.iter().enumerate() {
            insert.raw_bind_parameter(3 * n + 1, &*names[key.execution as usize])?;
            insert.raw_bind_parameter(3 * n + 2, key.seq)?;
            insert.raw_bind_parameter(3 * n + 3, key.row)?;
        }
        insert.raw_execute()?;
    }
    let mut insert_one = tx.prepare_cached(&insert_sql(1))?;
    for key in chunks.remainder() {
        insert_one.execute(params![&*names[key.execution as usize], key.seq, key.row])?;
    }
    Ok(())
}

/// Deletes the events of the executions `executions` selects (a `SELECT
/// execution_id …` taking `args`), from the log and the index.
pub(super) fn delete_executions(
    tx: &Transaction<'_>,
    executions: &str,
    args: &[rusqlite::types::Value],
) -> rusqlite::Result<()> {
    // Rows of the log's end may go: the writer reads it again at its next append.
    LOG_END.with(RefCell::take);
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
    use crate::store::sqlite::tests::{agent_start, agent_start_at, new_store, raw};
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
        let (_dir, path, store) = new_store();
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
        let (_dir, path, store) = new_store();
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
        let (_dir, path, store) = new_store();
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

    /// All of an execution's events, read through the view.
    async fn all_seqs(store: &SqliteStore, execution_id: &str) -> Vec<u64> {
        seqs(store, EventQuery::after(execution_id, 0, usize::MAX >> 1)).await
    }

    /// The writer remembers the log's end and executions' last seqs
    /// (`LogEnd`); another connection's rows must count as stored, and be
    /// indexed, or a repeat of them would be stored twice, and no read would
    /// find them once the index's bound passed them.
    #[actix_rt::test]
    async fn rows_another_writer_appended_are_known_and_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let ours = SqliteStore::open(&path).unwrap();
        let theirs = SqliteStore::open(&path).unwrap();
        // Ours now remembers "theirs" at seq 1, in the log's end.
        let first = vec![agent_start("ours", 1), agent_start("theirs", 1)];
        ours.append(first).await.unwrap();
        let batch = (1..=100).map(|seq| agent_start("theirs", seq)).collect();
        theirs.append(batch).await.unwrap();
        ours.append(vec![agent_start("theirs", 50)]).await.unwrap();
        let stats = ours.execution_stats("theirs").await.unwrap().unwrap();
        assert_eq!(stats.summary.event_count, 100, "the repeat was not stored");
        // Ours alone indexes the end, theirs in the middle of it.
        let more = (2..=UNINDEXED_ROWS as u64)
            .map(|seq| agent_start("ours", seq))
            .collect();
        ours.append(more).await.unwrap();
        let (upto, last, indexed) = layout(&path);
        assert_eq!((upto, indexed), (last, last), "all indexed, once each");
        assert_eq!(
            all_seqs(&theirs, "theirs").await,
            (1..=100).collect::<Vec<_>>()
        );
    }

    /// An append that fails has inserted rows that its rollback removes:
    /// the writer must not remember their keys, or a later row taking the
    /// same number would be indexed under the key of an event never stored.
    #[actix_rt::test]
    async fn a_failed_append_leaves_nothing_remembered() {
        let (_dir, path, store) = new_store();
        store.append(vec![agent_start("a", 1)]).await.unwrap();
        // Fails the append after its events are in the log, at the summary.
        raw(&path)
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON executions WHEN NEW.execution_id = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        store.append(vec![agent_start("a", 1)]).await.unwrap();
        let failing = vec![agent_start("ghost", 1), agent_start("boom", 1)];
        assert!(store.append(failing).await.is_err());
        fill(&store, &["a"], UNINDEXED_ROWS as u64).await;
        let (upto, last, indexed) = layout(&path);
        assert_eq!((upto, indexed), (last, last), "all indexed, once each");
        assert!(all_seqs(&store, "ghost").await.is_empty());
        let all: Vec<u64> = (1..=UNINDEXED_ROWS as u64).collect();
        assert_eq!(all_seqs(&store, "a").await, all);
    }

    /// Retention may delete rows of the log's end; an execution it removed
    /// that comes back starts again at seq 1, and those events must be found.
    #[actix_rt::test]
    async fn an_execution_back_after_retention_removed_its_unindexed_rows_is_found() {
        let (_dir, path, store) = new_store();
        let now = Utc::now();
        let early = now - TimeDelta::hours(1);
        let doomed = (1..=10)
            .map(|seq| agent_start_at("doomed", seq, early, None))
            .collect();
        store.append(doomed).await.unwrap();
        store
            .append(vec![agent_start_at("kept", 1, now, None)])
            .await
            .unwrap();
        let policy = Retention {
            max_age: None,
            max_executions: Some(1),
        };
        let removed = store.apply_retention(policy).await.unwrap();
        assert_eq!(removed, vec!["doomed".to_owned()]);
        assert_eq!(layout(&path).0, 0, "the removed rows were never indexed");
        let back = (1..=5).map(|seq| agent_start("doomed", seq)).collect();
        store.append(back).await.unwrap();
        fill(&store, &["kept"], UNINDEXED_ROWS as u64).await;
        let (upto, last, _) = layout(&path);
        assert!(upto > 0 && upto <= last, "the end was indexed: {upto}");
        assert_eq!(all_seqs(&store, "doomed").await, vec![1, 2, 3, 4, 5]);
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
            "INSERT INTO executions (execution_id, conversation_id, status, started_at,
                 ended_at, event_count, last_seq, last_event_at)
             VALUES ('e', NULL, 'running', ?1, NULL, 3, 3, ?1)",
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
