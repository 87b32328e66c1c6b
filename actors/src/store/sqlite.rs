//! SQLite backend: the embedded default store, one file under `DATA_DIR`.
//!
//! Why threads of its own: rusqlite blocks, and a commit with
//! `synchronous=FULL` waits for the disk, so no actor may run it. The store
//! owns three threads, each with its own connection: a writer, through which
//! every change goes in the order it was asked for, a reader, which WAL lets
//! read while the writer commits, and a second reader for analytics, whose
//! window scans must not hold up a replay. A call sends a job over a channel
//! and returns a future of the job's answer.

use super::analytics::{
    busiest_tools, AgentCalls, Analytics, AnalyticsQuery, EventFigures, ExecutionFigures,
    Percentiles, QualityFigures, ReviewFigures, ToolFigures, ToolStats, PERCENTILES, TOP,
};
use super::KeyRecord;
use super::{
    EventQuery, ExecutionQuery, ExecutionStats, ExecutionStatus, ExecutionSummary, JournalEntry,
    Retention, ScoreSummary, Store, StoreError, StoreFuture,
};
use crate::event::{format_timestamp, AgentEvent, EventKind, RunStatus};
use crate::id_map::{id_map, IdMap};
use crate::protocol::PublishedEvent;
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row};
use rusqlite::{Statement, Transaction, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use std::ffi::c_int;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{mpsc, Arc, LazyLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tokio::sync::oneshot;

mod checkpoint;
mod event_log;
mod first_fields;
mod outbox;

/// Version of [`SCHEMA`], kept in `PRAGMA user_version`; a file written by a
/// newer broker is refused rather than misread.
/// Version 2 keeps events in a log and an index (`sqlite/event_log.rs`);
/// a version 1 file is moved to it when opened. Version 3 finds the
/// executions active since a time by the hour of their last event
/// ([`ACTIVE_HOUR`]); an older file gains the column when opened.
const SCHEMA_VERSION: i64 = 3;

/// How long a connection waits, by default, for a lock another process holds
/// (a second broker on the same `DATA_DIR`, a backup tool) before the
/// operation fails and the Persister retries it.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the store treats its file beyond where it is: `config/default.toml`
/// says what each setting trades.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// How long a connection waits for a lock another process holds.
    pub busy_timeout: Duration,
    /// The write-ahead log's size, in pages, at which the writer checkpoints
    /// it into the database file (`sqlite/checkpoint.rs` says why it is large).
    pub checkpoint_pages: u32,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            checkpoint_pages: checkpoint::DEFAULT_CHECKPOINT_PAGES,
        }
    }
}

/// The tables beside the events' own (`sqlite/event_log.rs`, which reads go
/// through as the view `events`). The outbox tables were added without a
/// version bump: they are created if missing, and an older broker ignores
/// them. An event's `body` is its own JSON, which reads rebuild it from; the
/// other columns are copies of what queries filter on. `executions` is the
/// summary `append` keeps in step, so listing executions never scans events.
/// Events have no index but (execution, seq): every index is paid for by
/// every event stored, and analytics reaches a time window through the
/// executions' first and last event times instead (`executions_in_window`).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    execution_id    TEXT PRIMARY KEY,
    conversation_id TEXT,
    status          TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    event_count     INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    last_event_at   TEXT NOT NULL,
    active_hour     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS executions_by_start
    ON executions (started_at DESC, execution_id DESC);
CREATE INDEX IF NOT EXISTS executions_by_conversation
    ON executions (conversation_id, started_at DESC, execution_id DESC);
CREATE INDEX IF NOT EXISTS executions_by_status
    ON executions (status, started_at DESC, execution_id DESC);
CREATE INDEX IF NOT EXISTS executions_by_active_hour
    ON executions (active_hour);
CREATE TABLE IF NOT EXISTS journal (
    draft_id  TEXT PRIMARY KEY,
    node_id   TEXT NOT NULL,
    position  INTEGER NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_by_node ON journal (node_id, position);
CREATE TABLE IF NOT EXISTS health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at TEXT NOT NULL
);
-- The notification outbox (sqlite/outbox.rs); times in Unix milliseconds.
CREATE TABLE IF NOT EXISTS notify_outbox (
    key             TEXT PRIMARY KEY,
    rule_id         TEXT NOT NULL,
    execution_id    TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_outbox_due
    ON notify_outbox (state, next_attempt_at);
-- Idempotency keys (idempotency.rs), written with their batch's events;
-- created_at in Unix milliseconds, for expiry.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    seqs        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
CREATE TABLE IF NOT EXISTS notify_rules (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
";

/// An insert of `rows` events, their values bound row after row in the
/// order of [`bind_rows`]; only new events are given to it (`event_log::Append::not_stored`).
fn insert_events_sql(rows: usize) -> String {
    let row = format!("({})", placeholders(8));
    format!(
        "INSERT INTO {} VALUES {}",
        event_log::INSERT_COLUMNS,
        vec![row; rows].join(", ")
    )
}

/// The inserts of [`ROWS_PER_INSERT`], 16, 8, 4, 2 and 1 rows, largest first.
static INSERT_EVENTS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    std::iter::successors(Some(ROWS_PER_INSERT), |rows| {
        (*rows > 1).then_some(rows / 2)
    })
    .map(|rows| (rows, insert_events_sql(rows)))
    .collect()
});

/// Counts the newly stored events of one execution in one commit into its
/// summary ([`Summary`]): the three columns every commit moves.
///
/// Once per execution per commit, not per event, and as narrow as it can
/// be: SQLite rewrites the entry of every index whose column is assigned,
/// whether or not its value changes, and assigning all eight columns here
/// (which four indexes cover) cost twice as much as these three, which no
/// index covers since schema 3 ([`ACTIVE_HOUR`]). The rarer changes
/// follow in [`AMEND_FIRST_FIELDS`] (only when `first_fields.rs` says the row
/// may change) and [`END_EXECUTION`].
///
/// Why an update, and an insert only when it finds no row, rather than one
/// `INSERT … ON CONFLICT DO UPDATE`: the row exists for all but an
/// execution's first commit, and the upsert first builds and tries the row it
/// would insert, then searches again to update it. With 1,000 executions
/// these statements were 29% of the writer's time (PERFORMANCE.md, "Session
/// 11").
const COUNT_EVENTS_IN: &str = "UPDATE executions SET
        event_count = event_count + ?2,
        last_seq = MAX(last_seq, ?3),
        last_event_at = MAX(last_event_at, ?4)
    WHERE execution_id = ?1";

/// An execution's first summary, when [`COUNT_EVENTS_IN`] found none.
const FIRST_SUMMARY: &str = "INSERT INTO executions
    (execution_id, conversation_id, status, started_at, ended_at, event_count, last_seq,
     last_event_at, active_hour)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Moves an execution's `active_hour`, the hour of its last event
/// (`YYYY-MM-DDTHH`), to a later hour.
///
/// Why an hour beside `last_event_at`: analytics finds the executions active
/// since a time through an index, and an index on `last_event_at` moved one
/// entry per execution in every commit, since every commit moves that time.
/// That was 6% of the writer's instructions with 100 executions and 22% with
/// 1,000 (PERFORMANCE.md, "Session 11"). The hour changes once an hour, and
/// this runs only when the writer does not know the hour stored
/// (`event_log::Append::hour_moved`). Analytics reads `active_hour >=` the
/// window's first hour through the index, then `last_event_at` exactly.
const ACTIVE_HOUR: &str =
    "UPDATE executions SET active_hour = ?2 WHERE execution_id = ?1 AND active_hour < ?2";

/// The hour of a timestamp's text: its first 13 bytes, `YYYY-MM-DDTHH`.
fn hour_of(timestamp: &str) -> &str {
    timestamp.get(..13).unwrap_or(timestamp)
}

/// The first conversation named is kept, and `started_at` is the earliest
/// event's time (a producer may send older timestamps later). Run only when
/// the writer does not know that it would change nothing (`first_fields.rs`):
/// run for every execution of every commit, it changed nothing nearly always
/// and was a third of the statements of a commit over many executions.
const AMEND_FIRST_FIELDS: &str = "UPDATE executions SET
        conversation_id = COALESCE(conversation_id, ?2),
        started_at = MIN(started_at, ?3)
    WHERE execution_id = ?1 AND (started_at > ?3 OR (conversation_id IS NULL AND ?2 IS NOT NULL))";

/// Status and end change only with an `orchestration-complete` (the one
/// event that carries an `ended_at`); the last of them counts.
const END_EXECUTION: &str =
    "UPDATE executions SET status = ?2, ended_at = ?3 WHERE execution_id = ?1";

const SUMMARY_COLUMNS: &str =
    "execution_id, conversation_id, status, started_at, ended_at, event_count, last_seq";

/// The list order of `executions`; retention by count keeps the head of it.
const NEWEST_FIRST: &str = "ORDER BY started_at DESC, execution_id DESC";

const COUNT_BY_TYPE: &str =
    "SELECT type, COUNT(*) FROM events WHERE execution_id = ?1 GROUP BY type";
const COUNT_BY_AGENT: &str = "SELECT agent_id, COUNT(*) FROM events
    WHERE execution_id = ?1 AND agent_id IS NOT NULL GROUP BY agent_id";
const COUNT_BY_DEPARTMENT: &str = "SELECT department, COUNT(*) FROM events
    WHERE execution_id = ?1 AND department IS NOT NULL GROUP BY department";
const COUNT_BY_REVIEW_STATUS: &str = "SELECT json_extract(body, '$.status'), COUNT(*) FROM events
    WHERE execution_id = ?1 AND type = 'review-status' GROUP BY 1";
/// JSON `false` reads back from `json_extract` as 0; an absent `success` is not a failure.
const COUNT_TOOL_FAILURES: &str = "SELECT COUNT(*) FROM events
    WHERE execution_id = ?1 AND type = 'tool-result' AND json_extract(body, '$.success') = 0";
const QUALITY_BY_DEPARTMENT: &str =
    "SELECT department, COUNT(score), MIN(score), AVG(score), MAX(score)
    FROM (SELECT department, json_extract(body, '$.qualityScore') AS score FROM events
          WHERE execution_id = ?1 AND type = 'quality-check' AND department IS NOT NULL)
    WHERE score IS NOT NULL GROUP BY department";

/// The SQLite store: a file, a writer thread and two reader threads.
///
/// Dropping it ends both threads, after they finish the jobs already sent to
/// them (so an append whose future was dropped still lands): the drop waits
/// for that, which is what a graceful shutdown wants, and is brief otherwise.
pub struct SqliteStore {
    // Field order is drop order: the writer finishes its queue first.
    writer: Worker,
    reader: Worker,
    /// Analytics scans a time window, which can take a while on a long one:
    /// on a thread and connection of its own, it never delays a replay's read.
    analyst: Worker,
}

impl SqliteStore {
    /// Opens (or creates, with its parent directories) the database at `path`,
    /// in WAL mode with `synchronous=FULL`, and starts its threads.
    ///
    /// It blocks on the file while it sets up: call it at startup, not from an actor.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// As [`SqliteStore::open`], with other [`SqliteOptions`].
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let store = Self::start(path, options).map_err(|failure| {
            StoreError::new(format!(
                "sqlite: cannot open {}: {}",
                path.display(),
                failure.0
            ))
        })?;
        log::debug!("sqlite store open at {}", path.display());
        Ok(store)
    }

    fn start(path: &Path, options: SqliteOptions) -> Result<SqliteStore, Failure> {
        create_parent_dir(path)?;
        skip_memory_statistics();
        let busy_timeout = options.busy_timeout;
        // The writer first: it creates the file and the schema the reader expects.
        let writer = open_writer(path, busy_timeout)?;
        let reader = open_reader(path, busy_timeout)?;
        let analyst = open_reader(path, busy_timeout)?;
        let due_at = options.checkpoint_pages;
        Ok(SqliteStore {
            writer: Worker::spawn("sqlite-writer", writer, move |conn| {
                checkpoint::checkpoint_if_due(conn, due_at)
            })?,
            reader: Worker::spawn("sqlite-reader", reader, |_| {})?,
            analyst: Worker::spawn("sqlite-analytics", analyst, |_| {})?,
        })
    }
}

impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn append_keyed(
        &self,
        events: Vec<Arc<PublishedEvent>>,
        keys: Vec<KeyRecord>,
    ) -> StoreFuture<()> {
        if events.is_empty() && keys.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        self.writer
            .run("append", move |conn| append(conn, &events, &keys))
    }

    fn idempotency_key(&self, key: &str) -> StoreFuture<Option<KeyRecord>> {
        let key = key.to_owned();
        self.reader.run("idempotency_key", move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT fingerprint, seqs, created_at FROM idempotency_keys WHERE key = ?1",
                )?
                .query_row([&key], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .optional()?;
            let Some((fingerprint, seqs, created_at)) = row else {
                return Ok(None);
            };
            Ok(Some(KeyRecord {
                key,
                fingerprint,
                seqs: KeyRecord::parse_seqs(&seqs).map_err(|e| Failure(e.message))?,
                created_at: DateTime::from_timestamp_millis(created_at).unwrap_or_default(),
            }))
        })
    }

    fn expire_idempotency_keys(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        self.writer.run("expire_idempotency_keys", move |conn| {
            let removed = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                .execute([before.timestamp_millis()])?;
            Ok(removed as u64)
        })
    }

    fn last_seq(&self, execution_id: &str) -> StoreFuture<u64> {
        let execution_id = execution_id.to_owned();
        self.reader.run("last_seq", move |conn| {
            let last = conn
                .prepare_cached("SELECT last_seq FROM executions WHERE execution_id = ?1")?
                .query_row([&execution_id], |row| row.get(0))
                .optional()?;
            Ok(last.unwrap_or(0))
        })
    }

    fn last_seqs(&self, execution_ids: Vec<String>) -> StoreFuture<Vec<(String, u64)>> {
        self.reader
            .run("last_seqs", move |conn| last_seqs(conn, execution_ids))
    }

    fn events(&self, query: EventQuery) -> StoreFuture<Vec<AgentEvent>> {
        self.reader
            .run("events", move |conn| read_events(conn, &query))
    }

    fn execution_stats(&self, execution_id: &str) -> StoreFuture<Option<ExecutionStats>> {
        let execution_id = execution_id.to_owned();
        self.reader.run("execution_stats", move |conn| {
            execution_stats(conn, &execution_id)
        })
    }

    fn executions(&self, query: ExecutionQuery) -> StoreFuture<Vec<ExecutionSummary>> {
        self.reader
            .run("executions", move |conn| list_executions(conn, &query))
    }

    fn apply_retention(&self, policy: Retention) -> StoreFuture<Vec<String>> {
        let now = Utc::now();
        self.writer.run("apply_retention", move |conn| {
            apply_retention(conn, policy, now)
        })
    }

    fn analytics(&self, query: AnalyticsQuery) -> StoreFuture<Analytics> {
        self.analyst
            .run("analytics", move |conn| analytics(conn, &query))
    }

    fn ping(&self) -> StoreFuture<()> {
        // A real write through the writer, not a read: "writable enough to
        // take events" means the lock, the WAL append and the fsync all work.
        // One tiny commit per health check is cheap next to the event traffic.
        self.writer.run("ping", |conn| {
            conn.prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute([format_timestamp(Utc::now())])?;
            Ok(())
        })
    }

    fn journal_add(&self, entries: Vec<JournalEntry>) -> StoreFuture<()> {
        self.writer
            .run("journal_add", move |conn| journal_add(conn, &entries))
    }

    fn journal_read(&self, node_id: &str) -> StoreFuture<Vec<JournalEntry>> {
        let node_id = node_id.to_owned();
        self.reader
            .run("journal_read", move |conn| journal_read(conn, &node_id))
    }

    fn journal_remove(&self, draft_ids: Vec<String>) -> StoreFuture<()> {
        self.writer.run("journal_remove", move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut remove = tx.prepare_cached("DELETE FROM journal WHERE draft_id = ?1")?;
                for draft_id in &draft_ids {
                    remove.execute([draft_id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// The summaries' `last_seq` of many executions, a few hundred per query
/// (far below SQLite's limit on parameters).
fn last_seqs(
    conn: &mut Connection,
    execution_ids: Vec<String>,
) -> Result<Vec<(String, u64)>, Failure> {
    const CHUNK: usize = 500;
    let mut known: HashMap<String, u64> = HashMap::with_capacity(execution_ids.len());
    for chunk in execution_ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT execution_id, last_seq FROM executions WHERE execution_id IN ({})",
            placeholders(chunk.len())
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(chunk), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (execution_id, last_seq) = row?;
            known.insert(execution_id, last_seq);
        }
    }
    Ok(execution_ids
        .into_iter()
        .map(|execution_id| {
            let last_seq = known.get(&execution_id).copied().unwrap_or(0);
            (execution_id, last_seq)
        })
        .collect())
}

/// `?, ?, …`: `n` positional parameters.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn journal_add(conn: &mut Connection, entries: &[JournalEntry]) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO journal (draft_id, node_id, position, body)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for entry in entries {
            let body = serde_json::to_string(&entry.event.event)
                .map_err(|e| Failure(format!("journal entry does not serialize: {e}")))?;
            insert.execute(params![
                entry.draft_id,
                entry.node_id,
                sql_int(entry.position),
                body
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn journal_read(conn: &mut Connection, node_id: &str) -> Result<Vec<JournalEntry>, Failure> {
    let mut select = conn.prepare_cached(
        "SELECT draft_id, position, body FROM journal WHERE node_id = ?1 ORDER BY position",
    )?;
    let rows = select.query_map([node_id], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (draft_id, position, body) = row?;
        let event = rebuild_event(&draft_id, position as u64, &body)?;
        entries.push(JournalEntry {
            node_id: node_id.to_owned(),
            draft_id,
            position: position as u64,
            event: PublishedEvent::new(event),
        });
    }
    Ok(entries)
}

/// Why a job failed, before the operation's name is put in front of it.
struct Failure(String);

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure(error.to_string())
    }
}

impl Failure {
    fn into_error(self, operation: &str) -> StoreError {
        StoreError::new(format!("sqlite {operation}: {}", self.0))
    }
}

/// Work for a thread: runs on its connection and sends its own answer.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One thread that owns one connection and runs jobs on it, one at a time,
/// in the order they were sent, and `after_each` after each of them (once the
/// job has sent its answer: the writer checkpoints there, `checkpoint.rs`).
struct Worker {
    name: &'static str,
    // An unbounded queue: sending never blocks the actor that asks. Bounding
    // what is in flight is the caller's business.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(
        name: &'static str,
        mut conn: Connection,
        after_each: impl Fn(&mut Connection) + Send + 'static,
    ) -> Result<Worker, Failure> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Ends when every sender is gone, after the queued jobs ran.
                for job in queue {
                    // A bug in one job must not take the store down with it:
                    // its caller gets an error (the reply is dropped) and the
                    // next job runs; an open transaction rolled back on unwind.
                    if panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                        log::error!("{name}: a job panicked; its caller gets an error");
                    }
                    after_each(&mut conn);
                }
                log::debug!("{name}: stopped");
            })
            .map_err(|e| Failure(format!("cannot start the {name} thread: {e}")))?;
        Ok(Worker {
            name,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Sends `job` now and returns the future of its answer.
    fn run<T, F>(&self, operation: &'static str, job: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have dropped the future; the work is done anyway.
            let _ = reply.send(job(conn));
        });
        // Sent at the call, not at the first poll, so that jobs run in the
        // order they were asked for: a producer's batches stay in order.
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        let name = self.name;
        Box::pin(async move {
            let stopped =
                || StoreError::new(format!("sqlite {operation}: the {name} thread has stopped"));
            if !sent {
                return Err(stopped());
            }
            match answer.await {
                Ok(result) => result.map_err(|failure| failure.into_error(operation)),
                Err(_) => Err(stopped()),
            }
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; joining waits for the
        // jobs already queued, so their writes are committed, not lost.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("{}: the thread panicked", self.name);
            }
        }
    }
}

/// Turns off SQLite's count of the memory it holds, before its first
/// connection (it cannot change after).
///
/// Why: the count takes a global mutex on every allocation, and SQLite
/// allocates several times per row it writes; the lock and unlock were 3% of
/// the writer's instructions in the ingest profile (PERFORMANCE.md, "Session
/// 11"). Nothing reads the count: the broker reports its own memory.
fn skip_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a configuration call with an int argument, as
        // SQLITE_CONFIG_MEMSTATUS takes; once SQLite has started (another
        // connection of this process came first) it refuses with
        // SQLITE_MISUSE and changes nothing.
        let code = unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int)
        };
        if code != rusqlite::ffi::SQLITE_OK {
            log::debug!("sqlite keeps its memory statistics (code {code})");
        }
    });
}

fn create_parent_dir(path: &Path) -> Result<(), Failure> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, Failure> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Failure(format!(
            "cannot switch to WAL mode (journal_mode is {mode})"
        )));
    }
    // FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power
    // loss, and a 202 promises the events are kept. Batching by the caller
    // makes it one fsync per batch, not per event.
    conn.pragma_update(None, "synchronous", "FULL")?;
    checkpoint::defer_checkpoints(&conn);
    create_schema(&mut conn)?;
    Ok(conn)
}

fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, Failure> {
    // Read-write flags with `query_only`, rather than a read-only open: a
    // read-only connection to a WAL database has conditions on the `-shm`
    // file that a read-write one does not.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn create_schema(conn: &mut Connection) -> Result<(), Failure> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Failure(format!(
            "schema version {version} is newer than this broker's ({SCHEMA_VERSION}); \
             run a newer broker or use another DATA_DIR"
        )));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    add_active_hour(&tx)?;
    tx.execute_batch(SCHEMA)?;
    event_log::create(&tx)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// How the summaries of a file older than version 3 gain [`ACTIVE_HOUR`]:
/// the column, filled from `last_event_at`, and its index in place of the
/// one on `last_event_at`.
fn add_active_hour(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let columns: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('executions')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if columns.is_empty() || columns.iter().any(|name| name == "active_hour") {
        return Ok(());
    }
    tx.execute_batch(
        "ALTER TABLE executions ADD COLUMN active_hour TEXT NOT NULL DEFAULT '';
         UPDATE executions SET active_hour = substr(last_event_at, 1, 13);
         DROP INDEX IF EXISTS executions_by_last_event;",
    )
}

/// An event as its `events` row, and what it adds to its execution's summary.
struct EventRow<'a> {
    execution_id: &'a str,
    seq: i64,
    event_type: &'static str,
    agent_id: Option<&'a str>,
    department: Option<&'a str>,
    conversation_id: Option<&'a str>,
    timestamp: String,
    body: &'a str,
    /// `running`, or how the execution ended when this is its `orchestration-complete`.
    status: ExecutionStatus,
    ended_at: Option<String>,
}

impl<'a> EventRow<'a> {
    fn of(published: &'a PublishedEvent) -> Result<EventRow<'a>, Failure> {
        let event = &published.event;
        let named = || format!("event {}/{}", event.execution_id, published.seq);
        let timestamp = event
            .timestamp
            .map(format_timestamp)
            .ok_or_else(|| Failure(format!("{} has no timestamp", named())))?;
        let body = published.event_json();
        let seq = i64::try_from(published.seq)
            .map_err(|_| Failure(format!("{}: seq is too large", named())))?;
        let (status, ended_at) = match &event.kind {
            EventKind::OrchestrationComplete(complete) => {
                (ended_status(complete.status), Some(timestamp.clone()))
            }
            _ => (ExecutionStatus::Running, None),
        };
        Ok(EventRow {
            execution_id: &event.execution_id,
            seq,
            event_type: event.event_type().as_str(),
            agent_id: event.agent_id(),
            department: event.department(),
            conversation_id: event.conversation_id.as_deref(),
            timestamp,
            body,
            status,
            ended_at,
        })
    }
}

/// The status an `orchestration-complete` gives its execution; none means success.
fn ended_status(status: Option<RunStatus>) -> ExecutionStatus {
    match status {
        None | Some(RunStatus::Success) => ExecutionStatus::Success,
        Some(RunStatus::Failed) => ExecutionStatus::Failed,
        Some(RunStatus::Partial) => ExecutionStatus::Partial,
    }
}

/// What one commit adds to an execution's summary: the events of it that
/// were newly stored, folded in order, as [`count_events_in`] would have
/// folded them one by one.
struct Summary<'a> {
    execution_id: &'a str,
    /// The first conversation named.
    conversation_id: Option<&'a str>,
    /// With `ended_at`: how the last `orchestration-complete` ended it.
    status: ExecutionStatus,
    started_at: String,
    ended_at: Option<String>,
    event_count: i64,
    last_seq: i64,
    last_event_at: String,
}

impl<'a> Summary<'a> {
    fn of(row: &EventRow<'a>) -> Summary<'a> {
        Summary {
            execution_id: row.execution_id,
            conversation_id: row.conversation_id,
            status: row.status,
            started_at: row.timestamp.clone(),
            ended_at: row.ended_at.clone(),
            event_count: 1,
            last_seq: row.seq,
            last_event_at: row.timestamp.clone(),
        }
    }

    fn add(&mut self, row: &EventRow<'a>) {
        self.conversation_id = self.conversation_id.or(row.conversation_id);
        if row.ended_at.is_some() {
            self.status = row.status;
            self.ended_at = row.ended_at.clone();
        }
        // Timestamps share one fixed format: as strings they sort as times,
        // as SQLite's MIN and MAX compare them.
        if row.timestamp < self.started_at {
            self.started_at = row.timestamp.clone();
        }
        if row.timestamp > self.last_event_at {
            self.last_event_at = row.timestamp.clone();
        }
        self.event_count += 1;
        self.last_seq = self.last_seq.max(row.seq);
    }
}

fn append(
    conn: &mut Connection,
    events: &[Arc<PublishedEvent>],
    keys: &[KeyRecord],
) -> Result<(), Failure> {
    let rows = events
        .iter()
        .map(|published| EventRow::of(published))
        .collect::<Result<Vec<_>, _>>()?;
    // IMMEDIATE takes the write lock up front, where busy_timeout applies,
    // instead of failing halfway if another process holds it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut log = event_log::Append::begin(&tx)?;
    // A repeated append inserts nothing, and counts nothing.
    let rows = new_rows(&tx, &mut log, rows)?;
    insert_in_chunks(&tx, &rows)?;
    log.inserted(&tx, &keys_of(&rows));
    let mut summaries: Vec<Summary> = Vec::new();
    let mut index: IdMap<&str, usize> = id_map();
    for row in &rows {
        match index.get(row.execution_id) {
            Some(&i) => summaries[i].add(row),
            None => {
                index.insert(row.execution_id, summaries.len());
                summaries.push(Summary::of(row));
            }
        }
    }
    count_events_in(&tx, &mut log, &summaries)?;
    insert_keys(&tx, keys)?;
    log.index_if_due(&tx)?;
    tx.commit()?;
    log.committed();
    // Only what is committed is known: a rolled-back amend changed nothing.
    for summary in &summaries {
        first_fields::note(
            summary.execution_id,
            &summary.started_at,
            summary.conversation_id,
        );
    }
    Ok(())
}

/// Why many rows to a statement: each statement run has its own cost
/// (reset, step, the VDBE program's start), which 32 rows share; 32 keeps the
/// statement short and its 256 parameters far below SQLite's limit.
const ROWS_PER_INSERT: usize = 32;

/// The rows not stored yet, in their order (`event_log::Append::not_stored`).
///
/// Why not a savepoint to try each row and roll back a repeated one: while
/// a savepoint is open SQLite copies every page it changes into a statement
/// journal (a temporary file, created and deleted each commit), which was
/// a fifth of the writer's CPU in the ingest profile (PERFORMANCE.md).
fn new_rows<'a>(
    tx: &Transaction<'_>,
    log: &mut event_log::Append,
    rows: Vec<EventRow<'a>>,
) -> Result<Vec<EventRow<'a>>, Failure> {
    let new = log.not_stored(tx, &keys_of(&rows))?;
    if new.iter().all(|&new| new) {
        return Ok(rows);
    }
    Ok(rows
        .into_iter()
        .zip(new)
        .filter_map(|(row, new)| new.then_some(row))
        .collect())
}

/// The rows' (execution, seq) keys, in their order.
fn keys_of<'a>(rows: &[EventRow<'a>]) -> Vec<(&'a str, i64)> {
    rows.iter().map(|row| (row.execution_id, row.seq)).collect()
}

/// Inserts the rows, [`ROWS_PER_INSERT`] to a statement, and the rest in
/// halving sizes (a remainder of 13 is 8 + 4 + 1: three statements, not 13;
/// a commit over many executions is mostly remainder).
fn insert_in_chunks(conn: &Connection, rows: &[EventRow<'_>]) -> Result<(), Failure> {
    let mut rest = rows;
    for (size, sql) in INSERT_EVENTS.iter() {
        if rest.len() < *size {
            continue;
        }
        let mut insert = conn.prepare_cached(sql)?;
        let mut chunks = rest.chunks_exact(*size);
        for chunk in &mut chunks {
            bind_rows(&mut insert, chunk)?;
            insert.raw_execute()?;
        }
        rest = chunks.remainder();
    }
    Ok(())
}

/// Binds the rows' values to the statement's parameters, row after row.
fn bind_rows(statement: &mut Statement<'_>, rows: &[EventRow<'_>]) -> rusqlite::Result<()> {
    for (n, row) in rows.iter().enumerate() {
        let at = n * 8;
        statement.raw_bind_parameter(at + 1, row.execution_id)?;
        statement.raw_bind_parameter(at + 2, row.seq)?;
        statement.raw_bind_parameter(at + 3, row.event_type)?;
        statement.raw_bind_parameter(at + 4, row.agent_id)?;
        statement.raw_bind_parameter(at + 5, row.department)?;
        statement.raw_bind_parameter(at + 6, row.conversation_id)?;
        statement.raw_bind_parameter(at + 7, &row.timestamp)?;
        statement.raw_bind_parameter(at + 8, row.body)?;
    }
    Ok(())
}

/// In the events' commit: a 202 means the key is stored too.
fn insert_keys(tx: &Transaction<'_>, keys: &[KeyRecord]) -> Result<(), Failure> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut insert_key = tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, seqs, created_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for key in keys {
        insert_key.execute(params![
            key.key,
            key.fingerprint,
            key.seqs_json(),
            key.created_at.timestamp_millis()
        ])?;
    }
    Ok(())
}

/// Folds each execution's [`Summary`] of one commit into its row.
fn count_events_in(
    tx: &Transaction<'_>,
    log: &mut event_log::Append,
    summaries: &[Summary<'_>],
) -> Result<(), Failure> {
    let mut count = tx.prepare_cached(COUNT_EVENTS_IN)?;
    let mut first = tx.prepare_cached(FIRST_SUMMARY)?;
    let mut active = tx.prepare_cached(ACTIVE_HOUR)?;
    let mut amend = tx.prepare_cached(AMEND_FIRST_FIELDS)?;
    let mut end = tx.prepare_cached(END_EXECUTION)?;
    for summary in summaries {
        let hour = hour_of(&summary.last_event_at);
        let counted = count.execute(params![
            summary.execution_id,
            summary.event_count,
            summary.last_seq,
            summary.last_event_at,
        ])?;
        if counted == 0 {
            first.execute(params![
                summary.execution_id,
                summary.conversation_id,
                summary.status.as_str(),
                summary.started_at,
                summary.ended_at,
                summary.event_count,
                summary.last_seq,
                summary.last_event_at,
                hour,
            ])?;
            log.hour_moved(summary.execution_id, hour);
            continue;
        }
        if log.hour_moved(summary.execution_id, hour) {
            active.execute(params![summary.execution_id, hour])?;
        }
        if first_fields::may_change(
            summary.execution_id,
            &summary.started_at,
            summary.conversation_id,
        ) {
            amend.execute(params![
                summary.execution_id,
                summary.conversation_id,
                summary.started_at,
            ])?;
        }
        if let Some(ended_at) = &summary.ended_at {
            end.execute(params![
                summary.execution_id,
                summary.status.as_str(),
                ended_at
            ])?;
        }
    }
    Ok(())
}

/// A WHERE clause built from the filters a query sets, with its parameters
/// in the order of its `?`s.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    args: Vec<SqlValue>,
}

impl Conditions {
    fn add(&mut self, clause: impl Into<String>, args: impl IntoIterator<Item = SqlValue>) {
        self.clauses.push(clause.into());
        self.args.extend(args);
    }

    fn add_if<T: Into<SqlValue>>(&mut self, clause: &str, value: Option<T>) {
        if let Some(value) = value {
            self.add(clause, [value.into()]);
        }
    }

    /// True when every clause holds (and when there is none).
    fn all(&self) -> String {
        self.joined("AND", "TRUE")
    }

    /// True when any clause holds (never when there is none).
    fn any(&self) -> String {
        self.joined("OR", "FALSE")
    }

    fn joined(&self, operator: &str, when_empty: &str) -> String {
        if self.clauses.is_empty() {
            return when_empty.to_owned();
        }
        self.clauses
            .iter()
            .map(|clause| format!("({clause})"))
            .collect::<Vec<_>>()
            .join(&format!(" {operator} "))
    }
}

/// A `u64` (a seq, a count, a limit) as SQLite's `i64`; beyond it means "no bound".
fn sql_int(value: impl TryInto<i64>) -> SqlValue {
    SqlValue::Integer(value.try_into().unwrap_or(i64::MAX))
}

fn text(value: &str) -> SqlValue {
    SqlValue::Text(value.to_owned())
}

fn read_events(conn: &mut Connection, query: &EventQuery) -> Result<Vec<AgentEvent>, Failure> {
    let mut conditions = Conditions::default();
    conditions.add("execution_id = ?", [text(&query.execution_id)]);
    conditions.add("seq > ?", [sql_int(query.after_seq)]);
    conditions.add_if("seq < ?", query.before_seq.map(sql_int));
    if let Some(types) = &query.types {
        // An empty list is `IN ()`, which SQLite reads as "none of them".
        conditions.add(
            format!("type IN ({})", placeholders(types.len())),
            types.iter().map(|t| text(t.as_str())),
        );
    }
    conditions.add_if("agent_id = ?", query.agent_id.as_deref().map(text));
    conditions.add_if("department = ?", query.department.as_deref().map(text));
    conditions.args.push(sql_int(query.limit));
    let sql = format!(
        "SELECT seq, body FROM events WHERE {} ORDER BY seq LIMIT ?",
        conditions.all()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(conditions.args), |row| {
        Ok((row.get::<_, u64>(0)?, row.get::<_, String>(1)?))
    })?;
    rows.map(|row| {
        let (seq, body) = row?;
        rebuild_event(&query.execution_id, seq, &body)
    })
    .collect()
}

/// The event a row's body holds; a body that does not read back is an error, not a panic.
fn rebuild_event(execution_id: &str, seq: u64, body: &str) -> Result<AgentEvent, Failure> {
    let unreadable = |why: String| {
        Failure(format!(
            "stored event {execution_id}/{seq} is unreadable: {why}"
        ))
    };
    let value = serde_json::from_str(body).map_err(|e| unreadable(e.to_string()))?;
    AgentEvent::from_stored_json(value).map_err(|e| unreadable(e.to_string()))
}

/// An `executions` row as stored, before its text is checked.
struct SummaryRow {
    execution_id: String,
    conversation_id: Option<String>,
    status: String,
    started_at: String,
    ended_at: Option<String>,
    event_count: u64,
    last_seq: u64,
}

impl SummaryRow {
    /// Reads the columns of [`SUMMARY_COLUMNS`].
    fn read(row: &Row<'_>) -> rusqlite::Result<SummaryRow> {
        Ok(SummaryRow {
            execution_id: row.get(0)?,
            conversation_id: row.get(1)?,
            status: row.get(2)?,
            started_at: row.get(3)?,
            ended_at: row.get(4)?,
            event_count: row.get(5)?,
            last_seq: row.get(6)?,
        })
    }

    fn into_summary(self) -> Result<ExecutionSummary, Failure> {
        let status = ExecutionStatus::parse(&self.status).ok_or_else(|| {
            Failure(format!(
                "execution {} has an unknown status `{}`",
                self.execution_id, self.status
            ))
        })?;
        Ok(ExecutionSummary {
            started_at: parse_timestamp(&self.started_at)?,
            ended_at: self.ended_at.as_deref().map(parse_timestamp).transpose()?,
            execution_id: self.execution_id,
            conversation_id: self.conversation_id,
            status,
            event_count: self.event_count,
            last_seq: self.last_seq,
        })
    }
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| Failure(format!("stored timestamp `{text}` is not RFC 3339")))
}

fn list_executions(
    conn: &mut Connection,
    query: &ExecutionQuery,
) -> Result<Vec<ExecutionSummary>, Failure> {
    let mut conditions = Conditions::default();
    conditions.add_if(
        "conversation_id = ?",
        query.conversation_id.as_deref().map(text),
    );
    conditions.add_if("status = ?", query.status.map(|s| text(s.as_str())));
    if let Some((started_at, execution_id)) = &query.before {
        // A row value, so that the index on (started_at, execution_id) serves it.
        conditions.add(
            "(started_at, execution_id) < (?, ?)",
            [text(&format_timestamp(*started_at)), text(execution_id)],
        );
    }
    conditions.args.push(sql_int(query.limit));
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM executions WHERE {} {NEWEST_FIRST} LIMIT ?",
        conditions.all()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(conditions.args), SummaryRow::read)?;
    rows.map(|row| row?.into_summary()).collect()
}

fn execution_stats(
    conn: &mut Connection,
    execution_id: &str,
) -> Result<Option<ExecutionStats>, Failure> {
    // One read transaction, so that every figure comes from the same commit.
    let tx = conn.transaction()?;
    let row = tx
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM executions WHERE execution_id = ?1"
        ))?
        .query_row([execution_id], SummaryRow::read)
        .optional()?;
    let Some(row) = row else {
        return Ok(None);
    };
    let summary = row.into_summary()?;
    let by_type = count_by(&tx, COUNT_BY_TYPE, execution_id)?;
    let tool_failures = tx
        .prepare_cached(COUNT_TOOL_FAILURES)?
        .query_row([execution_id], |row| row.get(0))?;
    Ok(Some(ExecutionStats {
        duration_ms: summary
            .ended_at
            .map(|ended| (ended - summary.started_at).num_milliseconds()),
        tool_calls: by_type.get("tool-call").copied().unwrap_or(0),
        by_agent: count_by(&tx, COUNT_BY_AGENT, execution_id)?,
        by_department: count_by(&tx, COUNT_BY_DEPARTMENT, execution_id)?,
        quality_by_department: quality_by_department(&tx, execution_id)?,
        reviews: count_by(&tx, COUNT_BY_REVIEW_STATUS, execution_id)?,
        by_type,
        tool_failures,
        summary,
    }))
}

/// Runs a `SELECT key, COUNT(*) … GROUP BY key` for one execution.
fn count_by(
    tx: &Transaction<'_>,
    sql: &str,
    execution_id: &str,
) -> Result<BTreeMap<String, u64>, Failure> {
    let mut statement = tx.prepare_cached(sql)?;
    let rows = statement.query_map([execution_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn quality_by_department(
    tx: &Transaction<'_>,
    execution_id: &str,
) -> Result<BTreeMap<String, ScoreSummary>, Failure> {
    let mut statement = tx.prepare_cached(QUALITY_BY_DEPARTMENT)?;
    let rows = statement.query_map([execution_id], |row| {
        let scores = ScoreSummary {
            count: row.get(1)?,
            min: row.get(2)?,
            avg: row.get(3)?,
            max: row.get(4)?,
        };
        Ok((row.get(0)?, scores))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn apply_retention(
    conn: &mut Connection,
    policy: Retention,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Failure> {
    // Which executions go, as one condition on `executions`; both deletes
    // below use it, inside one transaction, so they agree on the set.
    let mut doomed = Conditions::default();
    let cutoff = policy
        .max_age
        .and_then(|age| TimeDelta::from_std(age).ok())
        .and_then(|age| now.checked_sub_signed(age));
    if let Some(cutoff) = cutoff.map(format_timestamp) {
        // The hour first, for the index (`ACTIVE_HOUR`): an event before the
        // cutoff is in its hour or an earlier one.
        doomed.add(
            "(active_hour <= ? AND last_event_at < ?)",
            [text(hour_of(&cutoff)), text(&cutoff)],
        );
    }
    if let Some(keep) = policy.max_executions {
        doomed.add(
            format!(
                "execution_id IN (SELECT execution_id FROM executions {NEWEST_FIRST} LIMIT -1 OFFSET ?)"
            ),
            [sql_int(keep)],
        );
    }
    if doomed.clauses.is_empty() {
        return Ok(Vec::new());
    }
    let condition = doomed.any();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let removed: Vec<String> = tx
        .prepare(&format!(
            "SELECT execution_id FROM executions WHERE {condition}"
        ))?
        .query_map(params_from_iter(doomed.args.iter()), |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    event_log::delete_executions(
        &tx,
        &format!("SELECT execution_id FROM executions WHERE {condition}"),
        &doomed.args,
    )?;
    tx.execute(
        &format!("DELETE FROM executions WHERE {condition}"),
        params_from_iter(doomed.args.iter()),
    )?;
    tx.commit()?;
    first_fields::forget(&removed);
    if !removed.is_empty() {
        log::debug!("sqlite retention removed {} executions", removed.len());
    }
    Ok(removed)
}

/// An RFC 3339 text column as epoch milliseconds (`unixepoch` reads the `Z` and
/// the fraction; the round trip through a float is exact to the millisecond).
fn epoch_ms(column: &str) -> String {
    format!("CAST(ROUND(unixepoch({column}, 'subsec') * 1000) AS INTEGER)")
}

/// The executions with an event in the analytics window, as a subquery
/// with its parameters.
///
/// Why analytics finds its events through the executions: `events` has no
/// index by time (four of them cost 11 K instructions per event stored,
/// PERFORMANCE.md), while `executions` keeps each execution's first and
/// last event time in step with every commit. An event at `t` in
/// `[from, to)` belongs to an execution with `started_at <= t < to` and
/// `last_event_at >= t >= from`, so reading these executions' events by
/// execution (`event_index`, and the log's end: `sqlite/event_log.rs`), then
/// filtering by time, finds every event of the window and no other.
fn executions_in_window(query: &AnalyticsQuery) -> (String, Vec<SqlValue>) {
    let active = active_in_window(query);
    (
        format!("SELECT execution_id FROM executions WHERE {}", active.all()),
        active.args,
    )
}

/// Executions that started before the window ends and had an event since
/// it began, for `FROM executions WHERE …`: the hour of the last event
/// first, for the index ([`ACTIVE_HOUR`]), then its time exactly.
fn active_in_window(query: &AnalyticsQuery) -> Conditions {
    let mut active = Conditions::default();
    let from = format_timestamp(query.from);
    active.add("started_at < ?", [text(&format_timestamp(query.to))]);
    active.add("active_hour >= ?", [text(hour_of(&from))]);
    active.add("last_event_at >= ?", [text(&from)]);
    active
}

/// Events in the analytics window, for `FROM events WHERE …` (module docs of
/// `analytics` for what the department filter attributes).
fn analytics_events(query: &AnalyticsQuery) -> Conditions {
    let (active, active_args) = executions_in_window(query);
    let mut window = Conditions::default();
    window.add(format!("execution_id IN ({active})"), active_args.clone());
    window.add("timestamp >= ?", [text(&format_timestamp(query.from))]);
    window.add("timestamp < ?", [text(&format_timestamp(query.to))]);
    window.add_if(
        "conversation_id = ?",
        query.conversation_id.as_deref().map(text),
    );
    if let Some(department) = query.department.as_deref() {
        window.add(
            format!(
                "department = ? OR (department IS NULL AND (execution_id, agent_id) IN \
                 (SELECT execution_id, agent_id FROM events WHERE department = ? \
                  AND agent_id IS NOT NULL AND execution_id IN ({active})))"
            ),
            [text(department), text(department)]
                .into_iter()
                .chain(active_args),
        );
    }
    window
}

/// Executions active during the analytics window, for `FROM executions WHERE …`.
fn analytics_executions(query: &AnalyticsQuery) -> Conditions {
    let mut active = active_in_window(query);
    active.add_if(
        "conversation_id = ?",
        query.conversation_id.as_deref().map(text),
    );
    // Correlated: by execution (`event_log.rs`); there is no department index.
    active.add_if(
        "EXISTS (SELECT 1 FROM events \
         WHERE events.execution_id = executions.execution_id AND events.department = ?)",
        query.department.as_deref().map(text),
    );
    active
}

/// Nearest-rank percentiles of `value` by `key`, over the rows of `source`
/// (a `SELECT … AS key, … AS value`): the row numbered ⌈p·n/100⌉ in value
/// order, as `analytics::nearest_rank` defines it.
fn percentiles_sql(source: &str) -> String {
    let [p50, p95] = PERCENTILES;
    format!(
        "SELECT key, MAX(n),
            MAX(CASE WHEN rn = (n * {p50} + 99) / 100 THEN value END),
            MAX(CASE WHEN rn = (n * {p95} + 99) / 100 THEN value END)
         FROM (SELECT key, value,
                 ROW_NUMBER() OVER (PARTITION BY key ORDER BY value) AS rn,
                 COUNT(*) OVER (PARTITION BY key) AS n
               FROM ({source}) WHERE value IS NOT NULL)
         GROUP BY key"
    )
}

fn analytics(conn: &mut Connection, query: &AnalyticsQuery) -> Result<Analytics, Failure> {
    // One read transaction, so that every figure comes from the same commit.
    let tx = conn.transaction()?;
    let window = analytics_events(query);
    let mut answer = Analytics::empty(query);
    answer.executions = execution_figures(&tx, query)?;
    answer.events = event_figures(&tx, query, &window)?;
    answer.tools = tool_figures(&tx, &window)?;
    answer.agents = agent_calls(&tx, &window)?;
    answer.quality = quality_figures(&tx, &window)?;
    answer.reviews = review_figures(&tx, &window)?;
    Ok(answer)
}

/// Executions active in the window, by status, and how long the ended ones took.
fn execution_figures(
    tx: &Transaction<'_>,
    query: &AnalyticsQuery,
) -> Result<ExecutionFigures, Failure> {
    let active = analytics_executions(query);
    let e = active.all();
    // `+status`: without it the planner walks the whole status index to skip a
    // sort of a few rows, instead of the window's range of `active_hour`.
    let status_counts: Vec<(String, u64)> = grouped(
        tx,
        &format!("SELECT status, COUNT(*) FROM executions WHERE {e} GROUP BY +status"),
        active.args.iter().cloned(),
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, u64>(1)?)),
    )?;
    let durations = percentiles(
        tx,
        &format!(
            "SELECT '' AS key, {} - {} AS value FROM executions WHERE {e} AND ended_at IS NOT NULL",
            epoch_ms("ended_at"),
            epoch_ms("started_at")
        ),
        active.args.iter().cloned(),
    )?;
    Ok(ExecutionFigures::from_counts(
        status_counts,
        durations.get("").cloned().unwrap_or_default(),
    ))
}

/// Events in the window by type, and per bucket of the series.
fn event_figures(
    tx: &Transaction<'_>,
    query: &AnalyticsQuery,
    window: &Conditions,
) -> Result<EventFigures, Failure> {
    let w = window.all();
    let args = || window.args.iter().cloned();
    let by_type = grouped(
        tx,
        &format!("SELECT type, COUNT(*) FROM events WHERE {w} GROUP BY type"),
        args(),
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let bucket_args = [
        sql_int(query.from.timestamp_millis()),
        sql_int(query.bucket_ms()),
    ];
    let buckets = grouped(
        tx,
        &format!(
            "SELECT ({} - ?) / ?, COUNT(*) FROM events WHERE {w} GROUP BY 1",
            epoch_ms("timestamp")
        ),
        bucket_args.into_iter().chain(args()),
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(EventFigures::from_counts(query, by_type, &buckets))
}

/// Tool calls, results, failures and latency, in all and by tool.
fn tool_figures(tx: &Transaction<'_>, window: &Conditions) -> Result<ToolFigures, Failure> {
    let w = window.all();
    let args = || window.args.iter().cloned();
    let tool_counts: Vec<(String, u64, u64, u64)> = grouped(tx, &format!(
        "SELECT json_extract(body, '$.toolName'), SUM(type = 'tool-call'), SUM(type = 'tool-result'),
            SUM(type = 'tool-result' AND json_extract(body, '$.success') = 0)
         FROM events WHERE {w} AND type IN ('tool-call', 'tool-result') GROUP BY 1"
    ), args(), |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
    let results = format!("FROM events WHERE {w} AND type = 'tool-result'");
    let latency = "json_extract(body, '$.executionTime') AS value";
    let mut by_tool_latency = percentiles(
        tx,
        &format!("SELECT json_extract(body, '$.toolName') AS key, {latency} {results}"),
        args(),
    )?;
    let all_latency = percentiles(
        tx,
        &format!("SELECT '' AS key, {latency} {results}"),
        args(),
    )?;
    let sum = |pick: fn(&(String, u64, u64, u64)) -> u64| tool_counts.iter().map(pick).sum();
    let mut total = ToolStats::counted(None, sum(|t| t.1), sum(|t| t.2), sum(|t| t.3));
    total.latency_ms = all_latency.get("").cloned().unwrap_or_default();
    let by_tool = tool_counts
        .into_iter()
        .map(|(tool, calls, results, failures)| {
            let mut stats = ToolStats::counted(None, calls, results, failures);
            stats.latency_ms = by_tool_latency.remove(&tool).unwrap_or_default();
            stats.tool_name = Some(tool);
            stats
        })
        .collect();
    Ok(ToolFigures {
        total,
        by_tool: busiest_tools(by_tool),
    })
}

/// The agents that called tools most.
fn agent_calls(tx: &Transaction<'_>, window: &Conditions) -> Result<Vec<AgentCalls>, Failure> {
    let w = window.all();
    let args = || window.args.iter().cloned();
    grouped(
        tx,
        &format!(
            "SELECT agent_id, COUNT(*) FROM events WHERE {w} AND type = 'tool-call'
         GROUP BY agent_id ORDER BY 2 DESC, 1 LIMIT ?"
        ),
        args().chain([sql_int(TOP)]),
        |row| {
            Ok(AgentCalls {
                agent_id: row.get(0)?,
                calls: row.get(1)?,
            })
        },
    )
}

/// Quality-check scores by department.
fn quality_figures(
    tx: &Transaction<'_>,
    window: &Conditions,
) -> Result<BTreeMap<String, QualityFigures>, Failure> {
    let w = window.all();
    let args = || window.args.iter().cloned();
    grouped(
        tx,
        &format!(
            "SELECT department, COUNT(*), AVG(score), MIN(score), MAX(score),
            COUNT(threshold), COALESCE(SUM(score < threshold), 0)
         FROM (SELECT department, json_extract(body, '$.qualityScore') AS score,
                 json_extract(body, '$.threshold') AS threshold
               FROM events WHERE {w} AND type = 'quality-check' AND department IS NOT NULL)
         GROUP BY department"
        ),
        args(),
        |row| {
            let (with_threshold, below_threshold) = (row.get(5)?, row.get(6)?);
            let figures = QualityFigures {
                count: row.get(1)?,
                avg: row.get(2)?,
                min: row.get(3)?,
                max: row.get(4)?,
                with_threshold,
                below_threshold,
                share_below_threshold: super::analytics::ratio(below_threshold, with_threshold),
            };
            Ok((row.get(0)?, figures))
        },
    )
}

/// Review verdicts, and the rounds of revision before approval.
fn review_figures(tx: &Transaction<'_>, window: &Conditions) -> Result<ReviewFigures, Failure> {
    let w = window.all();
    let args = || window.args.iter().cloned();
    let reviews = format!("FROM events WHERE {w} AND type = 'review-status'");
    let by_status = grouped(
        tx,
        &format!("SELECT json_extract(body, '$.status'), COUNT(*) {reviews} GROUP BY 1"),
        args(),
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    // A subject's first verdict is its first review by seq; every row of the
    // partition carries it, so MAX only picks it out.
    let subject = "execution_id, department, COALESCE(json_extract(body, '$.specialistId'), '')";
    let rounds: Vec<(u64, u64, u64)> = grouped(
        tx,
        &format!(
            "SELECT rounds, COUNT(*), SUM(first_status = 'approved') FROM (
            SELECT SUM(status = 'revision-requested') AS rounds, MAX(first_status) AS first_status
            FROM (SELECT {subject} AS subject_key, json_extract(body, '$.status') AS status,
                    FIRST_VALUE(json_extract(body, '$.status'))
                        OVER (PARTITION BY {subject} ORDER BY seq) AS first_status,
                    execution_id AS e, department AS d
                  {reviews})
            GROUP BY e, d, subject_key)
         GROUP BY rounds"
        ),
        args(),
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    Ok(ReviewFigures::from_rounds(&rounds, by_status))
}

/// Runs a grouping query and collects its rows, whatever the collection.
fn grouped<T, C: FromIterator<T>>(
    tx: &Transaction<'_>,
    sql: &str,
    args: impl IntoIterator<Item = SqlValue>,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<C, Failure> {
    let mut statement = tx.prepare_cached(sql)?;
    let rows = statement.query_map(params_from_iter(args), read)?;
    Ok(rows.collect::<rusqlite::Result<C>>()?)
}

/// Runs [`percentiles_sql`] over `source`: percentiles by key.
fn percentiles(
    tx: &Transaction<'_>,
    source: &str,
    args: impl IntoIterator<Item = SqlValue>,
) -> Result<BTreeMap<String, Percentiles>, Failure> {
    grouped(tx, &percentiles_sql(source), args, |row| {
        let figures = Percentiles::from_ranks(row.get(1)?, [row.get(2)?, row.get(3)?]);
        Ok((row.get(0)?, figures))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_events::agent_start_event;
    use chrono::TimeZone;

    pub(super) fn agent_start(execution_id: &str, seq: u64) -> Arc<PublishedEvent> {
        agent_start_at(execution_id, seq, Utc::now(), None)
    }

    pub(super) fn agent_start_at(
        execution_id: &str,
        seq: u64,
        timestamp: DateTime<Utc>,
        conversation_id: Option<&str>,
    ) -> Arc<PublishedEvent> {
        let mut event = agent_start_event(execution_id, seq);
        event.timestamp = Some(timestamp);
        event.conversation_id = conversation_id.map(str::to_owned);
        PublishedEvent::new(event)
    }

    pub(super) fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    /// A store on a new file, in a directory that lasts as long as the
    /// returned `TempDir`.
    pub(super) fn new_store() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let store = SqliteStore::open(&path).unwrap();
        (dir, path, store)
    }

    /// A writer that has not committed an execution yet (here: a new process
    /// on an existing file) still amends its first fields (`first_fields.rs`).
    #[actix_rt::test]
    async fn a_new_writer_amends_first_fields_it_has_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        // Whole milliseconds: what the store keeps.
        let later = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let earlier = later - TimeDelta::seconds(5);
        {
            let first = SqliteStore::open(&path).unwrap();
            first
                .append(vec![agent_start_at("e", 1, later, None)])
                .await
                .unwrap();
        }
        // Opened on another thread: its writer thread remembers nothing.
        let second = SqliteStore::open(&path).unwrap();
        second
            .append(vec![agent_start_at("e", 2, earlier, Some("c"))])
            .await
            .unwrap();
        let summary = second.execution_stats("e").await.unwrap().unwrap().summary;
        assert_eq!(summary.started_at, earlier);
        assert_eq!(summary.conversation_id.as_deref(), Some("c"));
        assert_eq!(summary.event_count, 2);
    }

    /// The writer checkpoints after its jobs (`checkpoint.rs`), since its
    /// commits no longer do: the log is copied into the file and starts again
    /// instead of growing with every commit.
    #[actix_rt::test]
    async fn the_writer_checkpoints_the_log_between_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let checkpoint_pages = 1_000;
        let options = SqliteOptions {
            checkpoint_pages,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_with(&path, options).unwrap();
        let thought = "x".repeat(3_000);
        // 4,000 events of 3 KB: about 3,000 pages through the log.
        for batch in 0..40 {
            let events = (1..=100)
                .map(|n| {
                    let mut event = AgentEvent::new(
                        "e",
                        crate::event::AgentThinking {
                            agent_id: "writer".into(),
                            thought: thought.clone(),
                            step: None,
                        },
                    );
                    event.seq = Some(batch * 100 + n);
                    event.timestamp = Some(Utc::now());
                    PublishedEvent::new(event)
                })
                .collect();
            store.append(events).await.unwrap();
        }
        let page_size: u64 = raw(&path)
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .unwrap();
        let log_pages = std::fs::metadata(dir.path().join("events.db-wal"))
            .unwrap()
            .len()
            / page_size;
        // The log's high-water mark: the threshold and the commit that crossed it.
        assert!(
            log_pages < u64::from(checkpoint_pages) + 500,
            "the log grew to {log_pages} pages"
        );
        assert_eq!(store.last_seq("e").await.unwrap(), 4_000);
    }

    #[actix_rt::test]
    async fn a_corrupt_body_is_an_error_not_a_panic() {
        let (_dir, path, store) = new_store();
        store.append(vec![agent_start("e", 1)]).await.unwrap();
        raw(&path)
            .execute("UPDATE event_log SET body = '{not json' WHERE seq = 1", [])
            .unwrap();
        let error = store
            .events(EventQuery::after("e", 0, 10))
            .await
            .unwrap_err();
        assert!(error.message.contains("e/1 is unreadable"), "{error}");
        raw(&path)
            .execute(
                "UPDATE event_log SET body = '{\"type\":\"nope\"}' WHERE seq = 1",
                [],
            )
            .unwrap();
        assert!(store.events(EventQuery::after("e", 0, 10)).await.is_err());
    }

    /// Executions and events of the window `[from, from + 1 h)`.
    async fn active_in_hour(store: &SqliteStore, from: DateTime<Utc>) -> (u64, u64) {
        let query = AnalyticsQuery::new(from, from + TimeDelta::hours(1));
        let figures = store.analytics(query).await.unwrap();
        (figures.executions.total, figures.events.total)
    }

    /// Analytics finds executions by the hour of their last event
    /// (`ACTIVE_HOUR`): one whose events go on into a later hour must be
    /// found in it, though the writer moves that hour only when it changes.
    #[actix_rt::test]
    async fn an_execution_is_found_in_each_hour_it_has_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("events.db")).unwrap();
        let ten = ten_o_clock();
        for (seq, minutes) in [(1, 30), (2, 45), (3, 150), (4, 155)] {
            let at = ten + TimeDelta::minutes(minutes);
            let event = agent_start_at("e", seq, at, None);
            store.append(vec![event]).await.unwrap();
        }
        assert_eq!(active_in_hour(&store, ten).await, (1, 2));
        // Running through 11:00, with no event in that hour.
        assert_eq!(
            active_in_hour(&store, ten + TimeDelta::hours(1)).await,
            (1, 0)
        );
        assert_eq!(
            active_in_hour(&store, ten + TimeDelta::hours(2)).await,
            (1, 2)
        );
        assert_eq!(
            active_in_hour(&store, ten + TimeDelta::hours(3)).await,
            (0, 0)
        );
    }

    /// 2026-12-08 10:00 UTC, the hour the tests of `active_hour` start in.
    fn ten_o_clock() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 8, 10, 0, 0).unwrap()
    }

    /// A new file holding `(execution, seq, minutes after ten)` events,
    /// its store closed again.
    async fn stored_at(events: &[(&str, u64, i64)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, path, store) = new_store();
        let events = events
            .iter()
            .map(|&(execution_id, seq, minutes)| {
                let at = ten_o_clock() + TimeDelta::minutes(minutes);
                agent_start_at(execution_id, seq, at, None)
            })
            .collect();
        store.append(events).await.unwrap();
        (dir, path)
    }

    /// Retention by age reads the hour first (the index), then the time:
    /// an execution whose last event is in the cutoff's own hour, before
    /// it, goes; one after it stays.
    #[actix_rt::test]
    async fn retention_by_age_removes_what_ended_earlier_in_the_cutoffs_hour() {
        let (_dir, path) = stored_at(&[("early", 1, 5), ("late", 1, 30)]).await;
        let ten = ten_o_clock();
        let policy = Retention {
            max_age: Some(Duration::from_secs(30 * 60)),
            max_executions: None,
        };
        let Ok(mut conn) = open_writer(&path, DEFAULT_BUSY_TIMEOUT) else {
            panic!("the file opens");
        };
        let now = ten + TimeDelta::minutes(50);
        let Ok(removed) = apply_retention(&mut conn, policy, now) else {
            panic!("retention runs");
        };
        assert_eq!(removed, vec!["early".to_owned()]);
    }

    /// A version 2 file's summaries gain `active_hour`, from their last
    /// event, and its index replaces the one on `last_event_at`.
    #[actix_rt::test]
    async fn a_version_2_file_gains_the_active_hour() {
        let (_dir, path) = stored_at(&[("e", 1, 5), ("e", 2, 65)]).await;
        let ten = ten_o_clock();
        raw(&path)
            .execute_batch(
                "DROP INDEX executions_by_active_hour;
                 ALTER TABLE executions DROP COLUMN active_hour;
                 CREATE INDEX executions_by_last_event ON executions (last_event_at);
                 PRAGMA user_version = 2;",
            )
            .unwrap();

        let store = SqliteStore::open(&path).unwrap();
        let hour: String = raw(&path)
            .query_row("SELECT active_hour FROM executions", [], |row| row.get(0))
            .unwrap();
        assert_eq!(hour, "2026-12-08T11");
        let indexes: Vec<String> = raw(&path)
            .prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'executions' AND type = 'index' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            indexes.contains(&"executions_by_active_hour".to_owned()),
            "{indexes:?}"
        );
        assert!(
            !indexes.contains(&"executions_by_last_event".to_owned()),
            "{indexes:?}"
        );
        assert_eq!(
            active_in_hour(&store, ten + TimeDelta::hours(1)).await,
            (1, 1)
        );
    }

    #[actix_rt::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        drop(SqliteStore::open(&path).unwrap());
        raw(&path)
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = SqliteStore::open(&path).err().expect("refused");
        assert!(error.message.contains("newer than this broker"), "{error}");
    }

    #[actix_rt::test]
    async fn open_creates_parent_directories_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/events.db");
        let store = SqliteStore::open(&path).unwrap();
        store.ping().await.unwrap();
        let conn = raw(&path);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[actix_rt::test]
    async fn dropping_the_store_finishes_the_appends_it_was_given() {
        let (_dir, path, store) = new_store();
        // Futures dropped unpolled: the jobs were sent at the call.
        for seq in 1..=50 {
            drop(store.append(vec![agent_start("e", seq)]));
        }
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.last_seq("e").await.unwrap(), 50);
    }
}
