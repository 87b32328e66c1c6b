//! WAL checkpoints after the answer, not inside the commit.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that takes the
//! write-ahead log past 1,000 pages: that commit copies the log into the
//! database file and fsyncs the file before it returns. The events of that
//! commit were durable before the copy began (the log's own fsync), yet their
//! producers waited for the copy too: tens of milliseconds on a slow disk,
//! every few commits, while the broker had nothing else to do, because the
//! producers were waiting for exactly that answer (PERFORMANCE.md, "Profile
//! findings: ingest").
//!
//! So the writer's connection only notes the log's size after each commit (a
//! WAL hook, which also turns SQLite's own checkpoint off), and the writer
//! thread runs the same PASSIVE checkpoint after the job that crossed the
//! threshold has sent its answer. Producers get their 202 and send their next
//! batch while the file is copied and synced; the next commit waits for the
//! checkpoint, as it did before.
//!
//! Why on the writer thread and not a thread of its own: a checkpoint from
//! another connection runs beside the writer's commits and so never reaches
//! the log's end while events keep coming; SQLite restarts the log from its
//! beginning only after a checkpoint that did, so the log would grow without
//! bound under a steady load. Between two of the writer's jobs nothing else
//! writes, and the checkpoint completes unless a reader still reads an older
//! snapshot (then the next one catches up, as SQLite's own would).

//! Why the log is allowed to grow to thousands of pages, not SQLite's 1,000:
//! every commit rewrites the same pages, above all the last leaf of each
//! execution's key range, one per execution the commit holds (about 100 of
//! the 143 pages of a commit of 400 events over 100 executions). The log keeps
//! a copy per commit, but a checkpoint copies each page into the file once,
//! however many commits changed it. So the longer the log between two
//! checkpoints, the fewer pages copied, and synced, per event: at 25,000 pages
//! the broker took 1.17–1.29x the events per second of 1,000 pages, with
//! 0.85–0.94x the CPU per event (PERFORMANCE.md, session 9). The price is
//! disk space (the log's file stays at its largest size, about 100 MiB at
//! 4 KiB pages) and a longer pause on the one commit that waits for a
//! checkpoint.

use rusqlite::hooks::Wal;
use rusqlite::Connection;
use std::cell::Cell;
use std::os::raw::c_int;

/// The log's size, in pages, at which a checkpoint follows the answer, unless
/// the settings say otherwise (`sqlite_checkpoint_pages`).
pub(super) const DEFAULT_CHECKPOINT_PAGES: u32 = 25_000;

thread_local! {
    /// Pages in the write-ahead log after this thread's last commit. Only the
    /// writer thread commits, so the count is the writer connection's.
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// Hooks `conn` (the writer's) so that its commits note the log's size and
/// no commit checkpoints by itself.
pub(super) fn defer_checkpoints(conn: &Connection) {
    conn.wal_hook(Some(note_wal_pages));
}

fn note_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|count| count.set(pages));
    Ok(())
}

/// Checkpoints if the log has reached `due_at` pages; run by the writer
/// thread after each job, once the job's answer is sent.
///
/// A failed checkpoint loses nothing (the log still holds every commit), so
/// it is logged and tried again after the next commit.
pub(super) fn checkpoint_if_due(conn: &mut Connection, due_at: u32) {
    let pages = WAL_PAGES.with(Cell::get);
    if i64::from(pages) < i64::from(due_at) {
        return;
    }
    WAL_PAGES.with(|count| count.set(0));
    // PASSIVE, as SQLite's automatic checkpoint: it never waits for readers.
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match done {
        Ok((log, copied)) => log::trace!("sqlite checkpoint: {copied} of {log} pages copied"),
        Err(err) => log::warn!("sqlite checkpoint of {pages} pages failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_file_pages(conn: &Connection) -> i64 {
        // `wal_checkpoint(PASSIVE)` of a log already copied reports its size
        // without copying anything more.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .unwrap()
    }

    #[test]
    fn commits_leave_the_log_to_the_writer_thread_until_it_is_due() {
        let dir = std::env::temp_dir().join(format!(
            "agent-events-checkpoint-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = Connection::open(dir.join("db.sqlite")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        defer_checkpoints(&conn);
        conn.execute_batch("CREATE TABLE t (body TEXT)").unwrap();
        let body = "x".repeat(3000);
        // Each commit adds a page or more: past SQLite's own threshold, no
        // commit may have checkpointed by itself…
        for _ in 0..1_100 {
            conn.execute("INSERT INTO t VALUES (?1)", [&body]).unwrap();
        }
        let pages = WAL_PAGES.with(Cell::get);
        assert!(pages >= 1_100, "{pages} pages in the log");
        let due_at = u32::try_from(pages).unwrap();
        // …nor may the writer before the log reaches its threshold…
        checkpoint_if_due(&mut conn, due_at + 1);
        assert_eq!(WAL_PAGES.with(Cell::get), pages);
        // …and the checkpoint at the threshold copies the whole log, so the
        // next commit starts the log again from its beginning.
        checkpoint_if_due(&mut conn, due_at);
        assert_eq!(WAL_PAGES.with(Cell::get), 0);
        conn.execute("INSERT INTO t VALUES (?1)", [&body]).unwrap();
        let after_restart = WAL_PAGES.with(Cell::get);
        assert!(
            after_restart < 10,
            "the log restarted: {after_restart} pages"
        );
        assert!(wal_file_pages(&conn) < 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
