//! What the writer knows of each execution's stored first fields, so that a
//! commit amends them only when they could change.
//!
//! An execution's summary keeps the first conversation named and the earliest
//! event time (`AMEND_FIRST_FIELDS`). Both nearly never change after the
//! execution's first commit, yet checking cost a statement per execution per
//! commit: with many executions, a commit holds one or two events of each, and
//! that statement was a third of all it ran (PERFORMANCE.md, "Profile
//! findings: ingest"). The writer thread is the only one that writes the
//! summaries, so it can remember what it committed: an execution's stored
//! start is at most the earliest start it committed, and a conversation it
//! committed stays (the first one named is kept). An amend is needed only
//! for an earlier start than that, or a first conversation.
//!
//! Forgetting is always safe (the amend runs, and changes nothing), so the
//! memory is bounded by emptying it, and retention forgets what it deletes:
//! a deleted execution that comes back is a new row, and its start may be
//! later than the one remembered.

use crate::id_map::{id_map, IdMap};
use std::cell::RefCell;

/// Executions remembered at most; past it the memory starts again empty.
/// About 100 bytes each.
const MAX_REMEMBERED: usize = 100_000;

/// What is known to be stored for one execution.
struct Committed {
    /// The stored `started_at` is this or earlier.
    started_at_most: String,
    /// The stored `conversation_id` is set (and so will not change).
    conversation_named: bool,
}

thread_local! {
    /// The writer thread's memory (only it commits summaries).
    static COMMITTED: RefCell<IdMap<String, Committed>> = RefCell::new(id_map());
}

/// Whether a commit of events of `execution_id` starting at `started_at` and
/// naming `conversation_id` might change its stored first fields: unless the
/// writer knows it cannot.
pub(super) fn may_change(
    execution_id: &str,
    started_at: &str,
    conversation_id: Option<&str>,
) -> bool {
    COMMITTED.with(|committed| match committed.borrow().get(execution_id) {
        Some(known) => {
            // Text compares byte by byte, as SQLite's `MIN` does.
            started_at < known.started_at_most.as_str()
                || (conversation_id.is_some() && !known.conversation_named)
        }
        None => true,
    })
}

/// Remembers a committed summary: the stored start is now at most
/// `started_at`, and a named conversation is stored.
pub(super) fn note(execution_id: &str, started_at: &str, conversation_id: Option<&str>) {
    COMMITTED.with(|committed| {
        let mut committed = committed.borrow_mut();
        if let Some(known) = committed.get_mut(execution_id) {
            if started_at < known.started_at_most.as_str() {
                started_at.clone_into(&mut known.started_at_most);
            }
            known.conversation_named |= conversation_id.is_some();
            return;
        }
        if committed.len() >= MAX_REMEMBERED {
            committed.clear();
        }
        committed.insert(
            execution_id.to_owned(),
            Committed {
                started_at_most: started_at.to_owned(),
                conversation_named: conversation_id.is_some(),
            },
        );
    });
}

/// Forgets executions that were deleted.
pub(super) fn forget(execution_ids: &[String]) {
    COMMITTED.with(|committed| {
        let mut committed = committed.borrow_mut();
        for execution_id in execution_ids {
            committed.remove(execution_id);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test runs on a thread of its own, so each has its own memory.

    #[test]
    fn an_unknown_execution_may_change() {
        assert!(may_change("never-seen", "2026-01-01T00:00:00Z", None));
    }

    #[test]
    fn only_an_earlier_start_or_a_first_conversation_may_change_a_known_one() {
        note("e", "2026-01-01T00:00:05Z", None);
        assert!(!may_change("e", "2026-01-01T00:00:05Z", None));
        assert!(!may_change("e", "2026-01-01T00:00:09Z", None));
        assert!(may_change("e", "2026-01-01T00:00:04Z", None));
        assert!(may_change("e", "2026-01-01T00:00:09Z", Some("c")));
        note("e", "2026-01-01T00:00:09Z", Some("c"));
        assert!(!may_change("e", "2026-01-01T00:00:09Z", Some("other")));
        // A later commit does not move the known start later.
        assert!(may_change("e", "2026-01-01T00:00:04Z", None));
        note("e", "2026-01-01T00:00:01Z", None);
        assert!(!may_change("e", "2026-01-01T00:00:04Z", None));
    }

    #[test]
    fn a_deleted_execution_is_forgotten() {
        note("gone", "2026-01-01T00:00:05Z", Some("c"));
        forget(&["gone".to_owned()]);
        assert!(may_change("gone", "2026-01-01T00:00:09Z", None));
    }
}
