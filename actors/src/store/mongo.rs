//! MongoDB backend: keeps events in `agentEvents` and one summary per
//! execution in `agentExecutions` (the AgentExecutions collection of
//! the original TypeScript design).
//!
//! Why it is built this way:
//! - Idempotency comes from the unique index on `(executionId, seq)`: events
//!   are inserted unordered and a duplicate-key error means "already stored",
//!   so a retry or a second cluster node storing the same event is harmless.
//! - The summary is updated only with operators that give the same result
//!   however often they run (`$min`, `$max`, `$set`, `$addToSet`). Even the
//!   event count is not an `$inc`: it is recounted from the events after each
//!   insert and applied with `$max`. An `$inc` of "newly inserted" events would
//!   lose events forever when an insert succeeded but the call failed before
//!   the summary update (a write-concern timeout, a dropped connection): the
//!   retry sees only duplicates. A recount heals that, and `$max` keeps
//!   concurrent appenders from moving the count backwards.
//! - Writes use `w: majority, j: true`: `append` returning is what a 202
//!   promises, so the events must survive a crash and a primary failover.
//!   MongoDB has no multi-document commit on a standalone server, hence the
//!   self-healing summary above rather than a transaction.
//! - Each event keeps its JSON text as `body`, so reading it back gives
//!   exactly the event that was stored (BSON would turn `u64` metadata or
//!   integer-valued floats into something else); the fields that queries and
//!   statistics need are copied beside it.

use super::analytics::{
    busiest_tools, nearest_rank, ratio, AgentCalls, Analytics, AnalyticsQuery, EventFigures,
    ExecutionFigures, Percentiles, QualityFigures, ReviewFigures, ToolFigures, ToolStats,
    PERCENTILES, TOP,
};
use super::KeyRecord;
use super::{
    EventQuery, ExecutionQuery, ExecutionStats, ExecutionStatus, ExecutionSummary, JournalEntry,
    Retention, ScoreSummary, Store, StoreError, StoreFuture,
};
use crate::event::{AgentEvent, EventKind, EventType, RunStatus};
use crate::protocol::PublishedEvent;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::future::try_join_all;
use futures_util::TryStreamExt;
use log::{debug, info};
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::error::{Error as DriverError, ErrorKind, InsertManyError, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, WriteConcern,
};
use mongodb::{Client, Collection, Cursor, Database, IndexModel};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod outbox;

/// One document per event.
const EVENTS: &str = "agentEvents";
/// One document per execution: as the original design's AgentExecutions.
const EXECUTIONS: &str = "agentExecutions";
/// Each node's fallback journal (`store/journal.rs`), keyed by draft ID.
const JOURNAL: &str = "agentJournal";
/// Idempotency keys (`idempotency.rs`), `_id` the key (unique by itself),
/// written right after their batch's events.
const KEYS: &str = "agentIdempotencyKeys";
/// How the broker introduces itself to the server (visible in `currentOp` and logs).
const APP_NAME: &str = "agent-events";
/// How long to look for a usable server before failing. The driver's default
/// is 30 s; a broker started against a missing server should say so at once,
/// and a write that cannot find a primary should fail back to the caller soon.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one TCP/TLS connection attempt may take, for the same reason.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write waits for a majority of the replica set. Without a limit
/// an append would hang forever while secondaries are down; with one it fails,
/// the caller retries, and the retry is harmless (see the module docs).
const WRITE_CONCERN_TIMEOUT: Duration = Duration::from_secs(10);
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Executions deleted per command by retention, so that one `$in` list stays
/// far below the 16 MiB command limit however much is due.
const RETENTION_CHUNK: usize = 500;

/// The MongoDB store: cheap to share, every operation runs on the driver's own
/// connection pool without blocking the caller.
pub struct MongoStore {
    inner: Arc<Inner>,
}

/// What every operation needs; behind an `Arc` so that each future owns a
/// handle and is `'static`.
struct Inner {
    db: Database,
    events: Collection<Document>,
    executions: Collection<Document>,
    journal: Collection<Document>,
    keys: Collection<Document>,
    secrets: Secrets,
}

/// Connects to `uri`, uses `database`, and makes sure the indexes exist.
///
/// Fails within a few seconds when no server answers. The error never
/// contains the URI's user name or password.
pub async fn connect(uri: &str, database: &str) -> Result<MongoStore, StoreError> {
    let secrets = Secrets::from_uri(uri);
    let fail = |doing: &str, err: DriverError| secrets.error(doing, &err);
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|err| fail("reading MONGODB_URI", err))?;
    // A value set in the URI wins: the operator asked for it.
    options.app_name.get_or_insert_with(|| APP_NAME.to_owned());
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
    let client = Client::with_options(options).map_err(|err| fail("creating the client", err))?;
    let db = client.database(database);
    let durable = CollectionOptions::builder()
        .write_concern(durable_write_concern())
        .build();
    let events = db.collection_with_options::<Document>(EVENTS, durable.clone());
    let executions = db.collection_with_options::<Document>(EXECUTIONS, durable.clone());
    let journal = db.collection_with_options::<Document>(JOURNAL, durable.clone());
    let keys = db.collection_with_options::<Document>(KEYS, durable);
    events
        .create_indexes(event_indexes())
        .await
        .map_err(|err| fail("creating the agentEvents indexes", err))?;
    executions
        .create_indexes(execution_indexes())
        .await
        .map_err(|err| fail("creating the agentExecutions indexes", err))?;
    journal
        .create_index(
            IndexModel::builder()
                .keys(doc! { "nodeId": 1, "position": 1 })
                .build(),
        )
        .await
        .map_err(|err| fail("creating the agentJournal index", err))?;
    outbox::create_indexes(&db)
        .await
        .map_err(|err| fail("creating the notifyOutbox indexes", err))?;
    // `_id` is the key, unique by itself; this serves the expiry.
    keys.create_index(plain_index(doc! { "createdAt": 1 }))
        .await
        .map_err(|err| fail("creating the agentIdempotencyKeys index", err))?;
    info!("store: MongoDB database `{database}` ready");
    Ok(MongoStore {
        inner: Arc::new(Inner {
            db,
            events,
            executions,
            journal,
            keys,
            secrets,
        }),
    })
}

impl MongoStore {
    /// Runs `op` on a handle of its own, so the future is `Send + 'static`.
    fn run<T, F>(&self, op: impl FnOnce(Arc<Inner>) -> F) -> StoreFuture<T>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        Box::pin(op(Arc::clone(&self.inner)))
    }
}

impl Store for MongoStore {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    fn append_keyed(
        &self,
        events: Vec<Arc<PublishedEvent>>,
        keys: Vec<KeyRecord>,
    ) -> StoreFuture<()> {
        self.run(|store| async move {
            store.append(&events).await?;
            store.remember_keys(&keys).await
        })
    }

    fn idempotency_key(&self, key: &str) -> StoreFuture<Option<KeyRecord>> {
        let key = key.to_owned();
        self.run(|store| async move { store.idempotency_key(key).await })
    }

    fn expire_idempotency_keys(&self, before: DateTime<Utc>) -> StoreFuture<u64> {
        self.run(|store| async move {
            store
                .keys
                .delete_many(doc! { "createdAt": { "$lt": bson_time(before) } })
                .await
                .map(|result| result.deleted_count)
                .map_err(|err| store.secrets.error("expiring idempotency keys", &err))
        })
    }

    fn last_seq(&self, execution_id: &str) -> StoreFuture<u64> {
        let execution_id = execution_id.to_owned();
        self.run(|store| async move { store.last_seq(&execution_id).await })
    }

    fn events(&self, query: EventQuery) -> StoreFuture<Vec<AgentEvent>> {
        self.run(|store| async move { store.events(&query).await })
    }

    fn execution_stats(&self, execution_id: &str) -> StoreFuture<Option<ExecutionStats>> {
        let execution_id = execution_id.to_owned();
        self.run(|store| async move { store.execution_stats(&execution_id).await })
    }

    fn executions(&self, query: ExecutionQuery) -> StoreFuture<Vec<ExecutionSummary>> {
        self.run(|store| async move { store.executions(&query).await })
    }

    fn apply_retention(&self, policy: Retention) -> StoreFuture<Vec<String>> {
        self.run(|store| async move { store.apply_retention(policy).await })
    }

    fn analytics(&self, query: AnalyticsQuery) -> StoreFuture<Analytics> {
        self.run(|store| async move { store.analytics(&query).await })
    }

    fn ping(&self) -> StoreFuture<()> {
        self.run(|store| async move { store.ping().await })
    }

    fn journal_add(&self, entries: Vec<JournalEntry>) -> StoreFuture<()> {
        self.run(|store| async move { store.journal_add(&entries).await })
    }

    fn journal_read(&self, node_id: &str) -> StoreFuture<Vec<JournalEntry>> {
        let node_id = node_id.to_owned();
        self.run(|store| async move { store.journal_read(&node_id).await })
    }

    fn journal_remove(&self, draft_ids: Vec<String>) -> StoreFuture<()> {
        self.run(|store| async move {
            store
                .journal
                .delete_many(doc! { "_id": { "$in": draft_ids } })
                .await
                .map(drop)
                .map_err(|err| store.secrets.error("removing journal entries", &err))
        })
    }
}

impl Inner {
    /// Events first, then the summaries: a summary never counts an event
    /// that is not durably stored.
    async fn append(&self, events: &[Arc<PublishedEvent>]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let docs = events
            .iter()
            .map(|published| event_document(&published.event, published.seq))
            .collect::<Result<Vec<_>, _>>()?;
        let every_one_new = self.insert_events(docs).await?;
        let mut batches = summarize(events);
        for _ in 0..FOLD_ATTEMPTS {
            batches = self.fold_summaries(batches, every_one_new).await?;
            if batches.is_empty() {
                return Ok(());
            }
        }
        Err(StoreError::new(format!(
            "mongodb: the summaries of {} execution(s) kept changing under this append; \
             it is retried",
            batches.len()
        )))
    }

    /// Folds each batch into its execution's summary; returns the batches
    /// whose summary another writer changed meanwhile, to fold again.
    ///
    /// # Counting without reading an execution whole
    /// A summary's `eventCount` counts exactly its execution's stored events
    /// up to its `lastSeq`. So a batch above `lastSeq` (nearly every batch)
    /// adds the stored events between `lastSeq` and its own last seq, a
    /// count over that range of the `executionId, seq` index, which is the
    /// batch's size; a batch reaching back to or below `lastSeq` (a retry, an
    /// event that comes late) counts the execution's events up to the new
    /// `lastSeq` instead. Both count what is stored, not what the batch
    /// holds, so an append whose events were stored but whose summary was
    /// not is counted by the next one. Counting every event of the
    /// execution at every commit, as this once did, read an execution of
    /// 100,000 events whole at each of its commits (PERFORMANCE.md).
    ///
    /// Most batches need no count at all: when every event of the append was
    /// new and an execution's events in it are the seqs right after
    /// `lastSeq` without a gap, the range holds exactly those events.
    ///
    /// The update applies only if `lastSeq` is still what was read: if
    /// another writer (another node on the same database) moved it, the
    /// batch is folded again from the new summary, so no range is counted
    /// twice.
    async fn fold_summaries(
        &self,
        batches: BTreeMap<String, BatchSummary>,
        every_one_new: bool,
    ) -> Result<BTreeMap<String, BatchSummary>, StoreError> {
        let counted = self.counted(batches.keys()).await?;
        let ranges: Vec<CountRange> = batches
            .iter()
            .map(|(execution_id, batch)| {
                let counted = counted.get(execution_id).copied();
                CountRange::of(execution_id, batch, counted, every_one_new)
            })
            .collect();
        let found = self.count_in_ranges(&ranges).await?;
        let applied = try_join_all(ranges.iter().zip(batches.values()).map(|(range, batch)| {
            let stored_in_range = (range.known)
                .or_else(|| found.get(range.execution_id).copied())
                .unwrap_or(0);
            let update = summary_update(batch, range.event_count(stored_in_range), range.through);
            self.update_summary(range, update)
        }))
        .await?;
        // `applied` is in the batches' order, as the ranges are.
        Ok(batches
            .into_iter()
            .zip(applied)
            .filter_map(|(batch, applied)| (!applied).then_some(batch))
            .collect())
    }

    /// After the events, never before: a key whose events are missing would
    /// answer a retry with seqs nobody stored. No multi-document commit on a
    /// standalone server: a crash between the two loses the key (a retry is
    /// then sequenced again), never an event. Replaced whole, so a key reused
    /// after its window takes its new record.
    async fn remember_keys(&self, keys: &[KeyRecord]) -> Result<(), StoreError> {
        for key in keys {
            let record = doc! {
                "_id": &key.key,
                "fingerprint": &key.fingerprint,
                "seqs": key.seqs_json(),
                "createdAt": bson_time(key.created_at),
            };
            self.keys
                .replace_one(doc! { "_id": &key.key }, record)
                .upsert(true)
                .await
                .map_err(|err| self.secrets.error("storing an idempotency key", &err))?;
        }
        Ok(())
    }

    async fn idempotency_key(&self, key: String) -> Result<Option<KeyRecord>, StoreError> {
        let row = self
            .keys
            .find_one(doc! { "_id": &key })
            .await
            .map_err(|err| self.secrets.error("reading an idempotency key", &err))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let unreadable = || StoreError::new("mongodb: an idempotency key record is unreadable");
        Ok(Some(KeyRecord {
            fingerprint: row
                .get_str("fingerprint")
                .map_err(|_| unreadable())?
                .to_owned(),
            seqs: KeyRecord::parse_seqs(row.get_str("seqs").map_err(|_| unreadable())?)?,
            created_at: chrono_time(*row.get_datetime("createdAt").map_err(|_| unreadable())?),
            key,
        }))
    }

    /// Stores the events; says whether every one of them was new.
    async fn insert_events(&self, docs: Vec<Document>) -> Result<bool, StoreError> {
        // Unordered, so that one duplicate does not stop the events after it.
        match self.events.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(true),
            Err(err) if is_only_duplicates(&err) => {
                debug!("store: some events were already stored; kept the stored copies");
                Ok(false)
            }
            Err(err) => Err(self.secrets.error("storing events", &err)),
        }
    }

    /// What each execution's summary has counted: its `eventCount` and, if
    /// it has one, its `lastSeq`; executions without a summary are absent.
    async fn counted<'a>(
        &self,
        execution_ids: impl Iterator<Item = &'a String>,
    ) -> Result<HashMap<String, Counted>, StoreError> {
        let ids: Vec<&String> = execution_ids.collect();
        let rows = self
            .collect(
                "reading execution summaries",
                self.executions
                    .find(doc! { "executionId": { "$in": ids } })
                    .projection(doc! { "_id": 0, "executionId": 1, "eventCount": 1, "lastSeq": 1 })
                    .await,
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let counted = Counted {
                    event_count: number(row, "eventCount").unwrap_or(0),
                    last_seq: number(row, "lastSeq"),
                };
                Some((row.get_str("executionId").ok()?.to_owned(), counted))
            })
            .collect())
    }

    /// Stored events in each range, by execution, counted by the server
    /// from the `executionId, seq` index: one count per execution, side by
    /// side (one `$or` over all the ranges is not read from the index by
    /// every server: SecantusDB scanned the collection for it).
    async fn count_in_ranges(
        &self,
        ranges: &[CountRange<'_>],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let unknown = ranges.iter().filter(|range| range.known.is_none());
        let counts = try_join_all(unknown.map(|range| async move {
            let filter = doc! {
                "executionId": range.execution_id,
                "seq": { "$gt": to_i64(range.after), "$lte": to_i64(range.through) },
            };
            self.events
                .count_documents(filter)
                .await
                .map(|n| (range.execution_id.to_owned(), n))
                .map_err(|err| self.secrets.error("counting events", &err))
        }))
        .await?;
        Ok(counts.into_iter().collect())
    }

    /// Applies `update` to the range's summary if its `lastSeq` is still the
    /// one counted from (creating the summary if there was none); false if
    /// another writer changed it first.
    async fn update_summary(
        &self,
        range: &CountRange<'_>,
        update: Document,
    ) -> Result<bool, StoreError> {
        let filter = match range.counted.and_then(|counted| counted.last_seq) {
            Some(last_seq) => {
                doc! { "executionId": range.execution_id, "lastSeq": to_i64(last_seq) }
            }
            None => doc! { "executionId": range.execution_id, "lastSeq": { "$exists": false } },
        };
        let result = self
            .executions
            .update_one(filter, update)
            .upsert(range.counted.is_none())
            .await;
        match result {
            Ok(outcome) => Ok(outcome.matched_count == 1 || outcome.upserted_id.is_some()),
            // Two first upserts of the same execution race on the unique
            // index: the one that lost folds again from the other's summary.
            Err(err) if is_duplicate_key(&err) => Ok(false),
            Err(err) => Err(self.secrets.error("updating the execution summary", &err)),
        }
    }

    /// From the events, not the summary: the summary may lag after a failed append.
    async fn last_seq(&self, execution_id: &str) -> Result<u64, StoreError> {
        let newest = self
            .events
            .find_one(doc! { "executionId": execution_id })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "_id": 0, "seq": 1 })
            .await
            .map_err(|err| self.secrets.error("reading the last seq", &err))?;
        Ok(newest.and_then(|doc| number(&doc, "seq")).unwrap_or(0))
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<AgentEvent>, StoreError> {
        // MongoDB reads a limit of 0 as "no limit".
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let cursor = self
            .events
            .find(events_filter(query))
            .sort(doc! { "seq": 1 })
            .limit(to_i64(query.limit as u64))
            .projection(doc! { "_id": 0, "seq": 1, "body": 1 })
            .await;
        let rows = self.collect("reading events", cursor).await?;
        rows.iter().map(event_from_document).collect()
    }

    async fn execution_stats(
        &self,
        execution_id: &str,
    ) -> Result<Option<ExecutionStats>, StoreError> {
        let summary = self
            .executions
            .find_one(doc! { "executionId": execution_id })
            .await
            .map_err(|err| self.secrets.error("reading the execution summary", &err))?;
        let Some(summary) = summary else {
            return Ok(None);
        };
        let summary = summary_from_document(&summary)?;
        let cursor = self.events.aggregate(stats_pipeline(execution_id)).await;
        let facets = self.collect("computing statistics", cursor).await?;
        // `$facet` yields exactly one document, even when nothing matched.
        let facets = facets.into_iter().next().unwrap_or_default();
        Ok(Some(stats_from_facets(summary, &facets)))
    }

    async fn executions(
        &self,
        query: &ExecutionQuery,
    ) -> Result<Vec<ExecutionSummary>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let cursor = self
            .executions
            .find(executions_filter(query))
            .sort(newest_first())
            .limit(to_i64(query.limit as u64))
            .await;
        let rows = self.collect("listing executions", cursor).await?;
        rows.iter().map(summary_from_document).collect()
    }

    async fn apply_retention(&self, policy: Retention) -> Result<Vec<String>, StoreError> {
        let mut doomed = BTreeSet::new();
        if let Some(cutoff) = policy.max_age.and_then(cutoff_before_now) {
            let filter = doc! { "lastEventAt": { "$lt": bson_time(cutoff) } };
            doomed.extend(self.execution_ids(filter, None).await?);
        }
        if let Some(keep) = policy.max_executions {
            doomed.extend(self.execution_ids(Document::new(), Some(keep)).await?);
        }
        let doomed: Vec<String> = doomed.into_iter().collect();
        let mut removed = 0;
        for chunk in doomed.chunks(RETENTION_CHUNK) {
            removed += self.delete_executions(chunk).await?;
        }
        if removed > 0 {
            info!("store: retention removed {removed} executions");
        }
        Ok(doomed)
    }

    /// IDs of the executions matching `filter`; with `keep`, all but the
    /// newest `keep` of them.
    async fn execution_ids(
        &self,
        filter: Document,
        keep: Option<u64>,
    ) -> Result<Vec<String>, StoreError> {
        let mut find = self
            .executions
            .find(filter)
            .projection(doc! { "_id": 0, "executionId": 1 });
        // Sorted only when the order matters: a sort of many expired
        // executions would be done in memory for nothing.
        if let Some(keep) = keep {
            // The driver refuses a skip beyond `i64`; keeping that many is keeping all.
            let skip = keep.min(i64::MAX as u64);
            find = find.sort(newest_first()).skip(skip);
        }
        let cursor = find.await;
        let rows = self.collect("finding executions to remove", cursor).await?;
        Ok(rows
            .iter()
            .filter_map(|row| row.get_str("executionId").ok().map(str::to_owned))
            .collect())
    }

    /// Events before summaries: if this fails half-way, the summaries are
    /// still there and the next retention run finds them again; the other way
    /// round would leave events that nothing points at.
    async fn delete_executions(&self, execution_ids: &[String]) -> Result<u64, StoreError> {
        let filter = doc! { "executionId": { "$in": execution_ids } };
        self.events
            .delete_many(filter.clone())
            .await
            .map_err(|err| self.secrets.error("removing old events", &err))?;
        let deleted = self
            .executions
            .delete_many(filter)
            .await
            .map_err(|err| self.secrets.error("removing old executions", &err))?;
        Ok(deleted.deleted_count)
    }

    /// Every figure but the percentiles in one `$facet` pass over the window's
    /// events (on the timestamp index); each percentile is then one sorted
    /// `$skip` to its rank, which the server answers with a top-k sort.
    async fn analytics(&self, query: &AnalyticsQuery) -> Result<Analytics, StoreError> {
        let mut answer = Analytics::empty(query);
        let active = active_executions_filter(query);
        let attributed = match &query.department {
            Some(department) => self.department_agents(&active, department).await?,
            None => Vec::new(),
        };
        let window = analytics_window_filter(query, &attributed);
        answer.executions = self.execution_figures(&active).await?;

        let cursor = self
            .events
            .aggregate(analytics_pipeline(query, window.clone()))
            .allow_disk_use(true)
            .await;
        let facets = self.collect("computing analytics", cursor).await?;
        let facets = facets.into_iter().next().unwrap_or_default();
        let buckets = facet_rows(&facets, "buckets")
            .into_iter()
            .filter_map(|row| Some((row.get("_id").and_then(float)? as i64, number(row, "n")?)))
            .collect();
        answer.events = EventFigures::from_counts(query, counts(&facets, "byType"), &buckets);
        answer.tools = self.tool_figures(&facets, &window).await?;
        answer.agents = agent_calls(&facets);
        answer.quality = quality_figures(&facets);
        let rounds: Vec<(u64, u64, u64)> = facet_rows(&facets, "reviewRounds")
            .into_iter()
            .filter_map(|row| {
                let rounds = row.get("_id").and_then(float)? as u64;
                Some((rounds, number(row, "n")?, number(row, "approved")?))
            })
            .collect();
        answer.reviews = ReviewFigures::from_rounds(&rounds, counts(&facets, "reviewStatus"));
        Ok(answer)
    }

    /// The executions active in the window (`active`): counted by status in
    /// one `$facet` pass, then the percentiles of the ended ones' durations.
    async fn execution_figures(&self, active: &Document) -> Result<ExecutionFigures, StoreError> {
        let cursor = self.executions.aggregate(executions_pipeline(active)).await;
        let facets = self
            .collect("computing execution analytics", cursor)
            .await?;
        let facets = facets.into_iter().next().unwrap_or_default();
        let ended = facet_rows(&facets, "ended")
            .first()
            .and_then(|row| number(row, "n"))
            .unwrap_or(0);
        let mut ended_filter = active.clone();
        ended_filter.insert("endedAt", doc! { "$type": "date" });
        let durations = self
            .percentiles(
                &self.executions,
                vec![
                    doc! { "$match": ended_filter },
                    doc! { "$project": { "_id": 0, "v": { "$subtract": ["$endedAt", "$startedAt"] } } },
                ],
                ended,
            )
            .await?;
        Ok(ExecutionFigures::from_counts(
            counts(&facets, "status"),
            durations,
        ))
    }

    /// The tools of the window's `facets`: their counts, and the latency
    /// percentiles of all of them and of the busiest each, read from the
    /// window's events (`window`).
    async fn tool_figures(
        &self,
        facets: &Document,
        window: &Document,
    ) -> Result<ToolFigures, StoreError> {
        let latency = |tool: Option<&str>, timed: u64| {
            let mut filter = window.clone();
            filter.insert("type", EventType::ToolResult.as_str());
            filter.insert("executionTime", doc! { "$type": "number" });
            if let Some(tool) = tool {
                filter.insert("toolName", tool);
            }
            let stages = vec![
                doc! { "$match": filter },
                doc! { "$project": { "_id": 0, "v": "$executionTime" } },
            ];
            self.percentiles(&self.events, stages, timed)
        };
        let tools: Vec<(ToolStats, u64)> = facet_rows(facets, "tools")
            .into_iter()
            .map(|row| {
                let n = |field| number(row, field).unwrap_or(0);
                let name = row.get_str("_id").ok().map(str::to_owned);
                let stats = ToolStats::counted(name, n("calls"), n("results"), n("failures"));
                (stats, n("timed"))
            })
            .collect();
        let sum = |pick: fn(&(ToolStats, u64)) -> u64| tools.iter().map(pick).sum();
        let mut total = ToolStats::counted(
            None,
            sum(|t| t.0.calls),
            sum(|t| t.0.results),
            sum(|t| t.0.failures),
        );
        total.latency_ms = latency(None, sum(|t| t.1)).await?;
        let timed: HashMap<Option<String>, u64> = tools
            .iter()
            .map(|(t, n)| (t.tool_name.clone(), *n))
            .collect();
        // Events stored before `toolName` was copied group under no name:
        // they count in the totals but are no tool of their own.
        let named = tools.into_iter().map(|(stats, _)| stats);
        let mut by_tool = busiest_tools(named.filter(|t| t.tool_name.is_some()).collect());
        let latencies = try_join_all(
            by_tool
                .iter()
                .map(|stats| latency(stats.tool_name.as_deref(), timed[&stats.tool_name])),
        )
        .await?;
        for (stats, latency_ms) in by_tool.iter_mut().zip(latencies) {
            stats.latency_ms = latency_ms;
        }
        Ok(ToolFigures { total, by_tool })
    }

    /// Per execution active in the window, the agents that named `department`:
    /// their events that name no department are attributed to it.
    async fn department_agents(
        &self,
        active: &Document,
        department: &str,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let ids = self.execution_ids(active.clone(), None).await?;
        let pipeline = [
            doc! { "$match": {
                "executionId": { "$in": ids },
                "department": department,
                "agentId": { "$type": "string" },
            } },
            doc! { "$group": { "_id": "$executionId", "agents": { "$addToSet": "$agentId" } } },
        ];
        let cursor = self.events.aggregate(pipeline).await;
        let rows = self
            .collect("finding a department's agents", cursor)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let agents = row
                    .get_array("agents")
                    .ok()?
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect();
                Some((row.get_str("_id").ok()?.to_owned(), agents))
            })
            .collect())
    }

    /// The values at the nearest ranks of [`PERCENTILES`] among the `count`
    /// values `stages` yield as `v`.
    async fn percentiles(
        &self,
        collection: &Collection<Document>,
        stages: Vec<Document>,
        count: u64,
    ) -> Result<Percentiles, StoreError> {
        let mut values = [None, None];
        if count == 0 {
            return Ok(Percentiles::default());
        }
        for (value, p) in values.iter_mut().zip(PERCENTILES) {
            let mut pipeline = stages.clone();
            pipeline.extend([
                doc! { "$sort": { "v": 1 } },
                doc! { "$skip": to_i64(nearest_rank(p, count) - 1) },
                doc! { "$limit": 1 },
            ]);
            let cursor = collection.aggregate(pipeline).allow_disk_use(true).await;
            let rows = self.collect("computing a percentile", cursor).await?;
            *value = rows.first().and_then(|row| row.get("v")).and_then(float);
        }
        Ok(Percentiles::from_ranks(count, values))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Commands go to the primary, so this also says a write could be taken.
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(|err| self.secrets.error("ping", &err))
    }

    async fn journal_add(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let docs = entries
            .iter()
            .map(|entry| {
                let body = serde_json::to_string(&entry.event.event).map_err(|err| {
                    StoreError::new(format!("mongodb: journal entry does not serialize: {err}"))
                })?;
                Ok(doc! {
                    "_id": &entry.draft_id,
                    "nodeId": &entry.node_id,
                    "position": to_i64(entry.position),
                    "body": body,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        match self.journal.insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(err) if is_only_duplicates(&err) => Ok(()),
            Err(err) => Err(self.secrets.error("journaling events", &err)),
        }
    }

    async fn journal_read(&self, node_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let cursor = self
            .journal
            .find(doc! { "nodeId": node_id })
            .sort(doc! { "position": 1 })
            .await;
        let rows = self.collect("reading the journal", cursor).await?;
        rows.iter()
            .map(|row| {
                let event = event_from_document(row)?;
                Ok(JournalEntry {
                    node_id: node_id.to_owned(),
                    draft_id: row.get_str("_id").unwrap_or_default().to_owned(),
                    position: number(row, "position").unwrap_or(0),
                    event: PublishedEvent::new(event),
                })
            })
            .collect()
    }

    async fn collect(
        &self,
        doing: &str,
        cursor: Result<Cursor<Document>, DriverError>,
    ) -> Result<Vec<Document>, StoreError> {
        let fail = |err: DriverError| self.secrets.error(doing, &err);
        cursor.map_err(fail)?.try_collect().await.map_err(fail)
    }
}

fn durable_write_concern() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .w_timeout(WRITE_CONCERN_TIMEOUT)
        .build()
}

/// Default index names (`executionId_1_seq_1` …), so that an index someone
/// already created on the same keys is found rather than refused as a
/// conflicting duplicate under another name.
fn index(keys: Document, options: IndexOptions) -> IndexModel {
    IndexModel::builder().keys(keys).options(options).build()
}

fn unique_index(keys: Document) -> IndexModel {
    index(keys, IndexOptions::builder().unique(true).build())
}

fn plain_index(keys: Document) -> IndexModel {
    index(keys, IndexOptions::default())
}

/// Only events that name an agent or department enter these, which keeps
/// them small; an equality filter on the field implies `$exists`, so the
/// planner may use them for such a filter.
fn partial_index(field: &str) -> IndexModel {
    let only_present = doc! { field: { "$exists": true } };
    index(
        doc! { "executionId": 1, field: 1, "seq": 1 },
        IndexOptions::builder()
            .partial_filter_expression(only_present)
            .build(),
    )
}

/// Every event read is within one execution and in seq order, so those
/// indexes start with `executionId` and end with `seq`. Analytics reads a
/// time window instead (of one type, conversation or department): the
/// `timestamp` indexes.
fn event_indexes() -> Vec<IndexModel> {
    vec![
        unique_index(doc! { "executionId": 1, "seq": 1 }),
        plain_index(doc! { "executionId": 1, "type": 1, "seq": 1 }),
        partial_index("agentId"),
        partial_index("department"),
        plain_index(doc! { "timestamp": 1 }),
        plain_index(doc! { "type": 1, "timestamp": 1 }),
        partial_time_index("conversationId"),
        partial_time_index("department"),
    ]
}

/// `field` then `timestamp`, over the events that have the field.
fn partial_time_index(field: &str) -> IndexModel {
    index(
        doc! { field: 1, "timestamp": 1 },
        IndexOptions::builder()
            .partial_filter_expression(doc! { field: { "$exists": true } })
            .build(),
    )
}

/// The list order leads the filtered indexes too, so that a filtered page is
/// read in order from the index rather than sorted in memory.
fn execution_indexes() -> Vec<IndexModel> {
    vec![
        unique_index(doc! { "executionId": 1 }),
        plain_index(newest_first()),
        plain_index(doc! { "conversationId": 1, "startedAt": -1, "executionId": -1 }),
        plain_index(doc! { "status": 1, "startedAt": -1, "executionId": -1 }),
        plain_index(doc! { "lastEventAt": 1 }),
    ]
}

/// The executions list order: newest `startedAt` first, ties by larger ID first.
fn newest_first() -> Document {
    doc! { "startedAt": -1, "executionId": -1 }
}

/// One `agentEvents` document: the event's JSON text, and beside it the
/// fields that filters and statistics read.
fn event_document(event: &AgentEvent, seq: u64) -> Result<Document, StoreError> {
    let body = serde_json::to_string(event)
        .map_err(|err| StoreError::new(format!("mongodb: serializing an event: {err}")))?;
    let seq = i64::try_from(seq)
        .map_err(|_| StoreError::new(format!("mongodb: seq {seq} is too large to store")))?;
    let mut doc = doc! {
        "executionId": &event.execution_id,
        "seq": seq,
        "type": event.event_type().as_str(),
        "timestamp": bson_time(event_time(event)),
        "body": body,
    };
    let optional = [
        ("agentId", event.agent_id()),
        ("department", event.department()),
        ("conversationId", event.conversation_id.as_deref()),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            doc.insert(field, value);
        }
    }
    // What analytics groups and measures; events stored before a field was
    // copied here lack it, and analytics does not see it for them.
    match &event.kind {
        EventKind::ToolCall(call) => {
            doc.insert("toolName", &call.tool_name);
        }
        EventKind::ToolResult(result) => {
            doc.insert("toolName", &result.tool_name);
            if let Some(success) = result.success {
                doc.insert("success", success);
            }
            if let Some(execution_time) = result.execution_time {
                doc.insert("executionTime", execution_time);
            }
        }
        EventKind::QualityCheck(check) => {
            doc.insert("qualityScore", check.quality_score);
            if let Some(threshold) = check.threshold {
                doc.insert("threshold", threshold);
            }
        }
        EventKind::ReviewStatus(review) => {
            doc.insert("status", wire_name(&review.status));
            if let Some(specialist_id) = &review.specialist_id {
                doc.insert("specialistId", specialist_id);
            }
        }
        _ => {}
    }
    Ok(doc)
}

fn event_from_document(doc: &Document) -> Result<AgentEvent, StoreError> {
    let unreadable = |why: String| {
        let seq = number(doc, "seq").unwrap_or(0);
        StoreError::new(format!(
            "mongodb: stored event seq {seq} is unreadable: {why}"
        ))
    };
    let body = doc
        .get_str("body")
        .map_err(|err| unreadable(err.to_string()))?;
    let value = serde_json::from_str(body).map_err(|err| unreadable(err.to_string()))?;
    AgentEvent::from_stored_json(value).map_err(|err| unreadable(err.to_string()))
}

/// What one append says about one execution.
#[derive(Debug, Clone, PartialEq)]
struct BatchSummary {
    started_at: DateTime<Utc>,
    last_event_at: DateTime<Utc>,
    first_seq: u64,
    last_seq: u64,
    /// How many events of the execution the batch holds.
    events: u64,
    conversation_id: Option<String>,
    /// The `orchestration-complete` with the highest seq: its status and time.
    completion: Option<(u64, ExecutionStatus, DateTime<Utc>)>,
    departments: BTreeSet<String>,
}

impl BatchSummary {
    fn new(event: &AgentEvent, seq: u64) -> Self {
        let at = event_time(event);
        BatchSummary {
            started_at: at,
            last_event_at: at,
            first_seq: seq,
            last_seq: seq,
            events: 0,
            conversation_id: None,
            completion: None,
            departments: BTreeSet::new(),
        }
    }

    fn add(&mut self, event: &AgentEvent, seq: u64) {
        let at = event_time(event);
        self.started_at = self.started_at.min(at);
        self.last_event_at = self.last_event_at.max(at);
        self.first_seq = self.first_seq.min(seq);
        self.last_seq = self.last_seq.max(seq);
        self.events += 1;
        // The Emitter gives all events of an execution the same conversation;
        // the first one named is kept, as in the SQLite backend.
        if self.conversation_id.is_none() {
            self.conversation_id = event.conversation_id.clone();
        }
        if let Some(department) = event.department() {
            self.departments.insert(department.to_owned());
        }
        if let EventKind::OrchestrationComplete(complete) = &event.kind {
            let later = self.completion.is_none_or(|(known, _, _)| seq > known);
            if later {
                self.completion = Some((seq, run_status(complete.status), at));
            }
        }
    }
}

/// What an execution's summary counts: its `eventCount` and `lastSeq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    event_count: u64,
    /// `None` only for a summary without one (none is written so).
    last_seq: Option<u64>,
}

/// Which of an execution's stored events one fold counts: those with a seq
/// in `after..=through` (`Inner::fold_summaries` says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CountRange<'a> {
    execution_id: &'a str,
    /// The summary as read, `None` if the execution has none yet.
    counted: Option<Counted>,
    after: u64,
    /// The summary's `lastSeq` after this fold.
    through: u64,
    /// Whether the range starts where the summary's count ends (so its
    /// events add to `eventCount`) or at the start (so they replace it).
    adds_to_count: bool,
    /// The stored events in the range, when known without a count.
    known: Option<u64>,
}

impl<'a> CountRange<'a> {
    /// The range `batch` adds to the summary as read; `every_one_new`: the
    /// append stored each of its events itself.
    fn of(
        execution_id: &'a str,
        batch: &BatchSummary,
        counted: Option<Counted>,
        every_one_new: bool,
    ) -> Self {
        let counted_through = counted.and_then(|c| c.last_seq).unwrap_or(0);
        let above = batch.first_seq > counted_through;
        let right_after_without_gaps = batch.first_seq == counted_through + 1
            && batch.events == batch.last_seq - batch.first_seq + 1;
        CountRange {
            execution_id,
            counted,
            // Above what is counted: only the new range. Reaching back: all
            // of it again, up to the new end.
            after: if above { counted_through } else { 0 },
            through: counted_through.max(batch.last_seq),
            adds_to_count: above,
            known: (every_one_new && right_after_without_gaps).then_some(batch.events),
        }
    }

    /// The summary's new `eventCount`, given the stored events in the range.
    fn event_count(&self, stored_in_range: u64) -> u64 {
        match (self.adds_to_count, self.counted) {
            (true, Some(counted)) => counted.event_count + stored_in_range,
            _ => stored_in_range,
        }
    }
}

/// Folds of one append that lose to other writers before it gives up (and
/// the Persister retries the append).
const FOLD_ATTEMPTS: usize = 8;

/// The batch's events grouped by execution.
fn summarize(events: &[Arc<PublishedEvent>]) -> BTreeMap<String, BatchSummary> {
    let mut batches: BTreeMap<String, BatchSummary> = BTreeMap::new();
    for published in events {
        let (event, seq) = (&published.event, published.seq);
        batches
            .entry(event.execution_id.clone())
            .or_insert_with(|| BatchSummary::new(event, seq))
            .add(event, seq);
    }
    batches
}

/// The upsert that folds one batch into its execution's summary: the count
/// up to `last_seq` ([`CountRange`]; applied only while the summary's
/// `lastSeq` is the one counted from), and operators that are idempotent,
/// so that a batch applied twice, or after a later batch, leaves the same
/// summary.
fn summary_update(batch: &BatchSummary, event_count: u64, last_seq: u64) -> Document {
    let mut set = doc! {
        "eventCount": to_i64(event_count),
        "lastSeq": to_i64(last_seq),
    };
    let mut update = doc! {
        "$min": { "startedAt": bson_time(batch.started_at) },
        "$max": { "lastEventAt": bson_time(batch.last_event_at) },
    };
    match batch.completion {
        Some((_, status, ended_at)) => {
            set.insert("status", status.as_str());
            set.insert("endedAt", bson_time(ended_at));
        }
        // Only a new summary starts as running: a late batch must not undo a completion.
        None => {
            update.insert(
                "$setOnInsert",
                doc! { "status": ExecutionStatus::Running.as_str() },
            );
        }
    }
    if let Some(conversation_id) = &batch.conversation_id {
        set.insert("conversationId", conversation_id);
    }
    update.insert("$set", set);
    if !batch.departments.is_empty() {
        let departments: Vec<&String> = batch.departments.iter().collect();
        update.insert(
            "$addToSet",
            doc! { "departments": { "$each": departments } },
        );
    }
    update
}

fn events_filter(query: &EventQuery) -> Document {
    let mut seq = doc! { "$gt": to_i64(query.after_seq) };
    if let Some(before) = query.before_seq {
        seq.insert("$lt", to_i64(before));
    }
    let mut filter = doc! { "executionId": &query.execution_id, "seq": seq };
    if let Some(types) = &query.types {
        let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
        filter.insert("type", doc! { "$in": names });
    }
    if let Some(agent_id) = &query.agent_id {
        filter.insert("agentId", agent_id);
    }
    if let Some(department) = &query.department {
        filter.insert("department", department);
    }
    filter
}

fn executions_filter(query: &ExecutionQuery) -> Document {
    let mut filter = Document::new();
    if let Some(conversation_id) = &query.conversation_id {
        filter.insert("conversationId", conversation_id);
    }
    if let Some(status) = query.status {
        filter.insert("status", status.as_str());
    }
    if let Some((started_at, execution_id)) = &query.before {
        // "After the cursor" in an order that is descending on both keys.
        let started_at = bson_time(*started_at);
        filter.insert(
            "$or",
            vec![
                doc! { "startedAt": { "$lt": started_at } },
                doc! { "startedAt": started_at, "executionId": { "$lt": execution_id } },
            ],
        );
    }
    filter
}

/// `quality-check` events that name a department, grouped by it: count, min,
/// mean and max of `qualityScore`, and the `extra` accumulators.
fn quality_by_department(extra: Document) -> Vec<Document> {
    let mut group = doc! {
        "_id": "$department",
        "n": { "$sum": 1 },
        "min": { "$min": "$qualityScore" },
        "avg": { "$avg": "$qualityScore" },
        "max": { "$max": "$qualityScore" },
    };
    group.extend(extra);
    vec![
        doc! { "$match": { "type": EventType::QualityCheck.as_str(), "department": { "$type": "string" } } },
        doc! { "$group": group },
    ]
}

/// One pass over the execution's events, answering every statistic at once.
fn stats_pipeline(execution_id: &str) -> Vec<Document> {
    let count_by = |field: &str| {
        vec![
            doc! { "$match": { field: { "$type": "string" } } },
            doc! { "$group": { "_id": format!("${field}"), "n": { "$sum": 1 } } },
        ]
    };
    let quality = quality_by_department(Document::new());
    let failures = vec![
        doc! { "$match": { "type": EventType::ToolResult.as_str(), "success": false } },
        doc! { "$count": "n" },
    ];
    let reviews = vec![
        doc! { "$match": { "type": EventType::ReviewStatus.as_str() } },
        doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } },
    ];
    vec![
        doc! { "$match": { "executionId": execution_id } },
        doc! { "$facet": {
            "byType": count_by("type"),
            "byAgent": count_by("agentId"),
            "byDepartment": count_by("department"),
            "toolFailures": failures,
            "quality": quality,
            "reviews": reviews,
        } },
    ]
}

fn stats_from_facets(summary: ExecutionSummary, facets: &Document) -> ExecutionStats {
    let rows = |facet: &str| facet_rows(facets, facet);
    let counts = |facet: &str| counts(facets, facet);
    let by_type = counts("byType");
    let score = |row: &Document, field: &str| row.get(field).and_then(float).unwrap_or(0.0);
    let quality_by_department = rows("quality")
        .into_iter()
        .filter_map(|row| {
            let department = row.get_str("_id").ok()?.to_owned();
            let summary = ScoreSummary {
                count: number(row, "n")?,
                min: score(row, "min"),
                avg: score(row, "avg"),
                max: score(row, "max"),
            };
            Some((department, summary))
        })
        .collect();
    let duration_ms = summary
        .ended_at
        .map(|ended_at| (ended_at - summary.started_at).num_milliseconds());
    ExecutionStats {
        duration_ms,
        tool_calls: by_type
            .get(EventType::ToolCall.as_str())
            .copied()
            .unwrap_or(0),
        tool_failures: rows("toolFailures")
            .first()
            .and_then(|row| number(row, "n"))
            .unwrap_or(0),
        by_agent: counts("byAgent"),
        by_department: counts("byDepartment"),
        reviews: counts("reviews"),
        by_type,
        quality_by_department,
        summary,
    }
}

/// Executions active during the analytics window (module docs of `analytics`).
fn active_executions_filter(query: &AnalyticsQuery) -> Document {
    let mut filter = doc! {
        "startedAt": { "$lt": bson_time(query.to) },
        "lastEventAt": { "$gte": bson_time(query.from) },
    };
    if let Some(conversation_id) = &query.conversation_id {
        filter.insert("conversationId", conversation_id);
    }
    if let Some(department) = &query.department {
        filter.insert("departments", department);
    }
    filter
}

/// Events in the analytics window; `attributed` lists, per execution, the
/// agents whose department-less events count for the department filter.
fn analytics_window_filter(
    query: &AnalyticsQuery,
    attributed: &[(String, Vec<String>)],
) -> Document {
    let mut filter = doc! {
        "timestamp": { "$gte": bson_time(query.from), "$lt": bson_time(query.to) },
    };
    if let Some(conversation_id) = &query.conversation_id {
        filter.insert("conversationId", conversation_id);
    }
    if let Some(department) = &query.department {
        let mut either = vec![doc! { "department": department }];
        let agents: Vec<Document> = attributed
            .iter()
            .map(|(execution_id, agents)| {
                doc! { "executionId": execution_id, "agentId": { "$in": agents } }
            })
            .collect();
        if !agents.is_empty() {
            either.push(doc! { "department": { "$exists": false }, "$or": agents });
        }
        filter.insert("$or", either);
    }
    filter
}

fn executions_pipeline(active: &Document) -> Vec<Document> {
    vec![
        doc! { "$match": active.clone() },
        doc! { "$facet": {
            "status": [ { "$group": { "_id": "$status", "n": { "$sum": 1 } } } ],
            "ended": [ { "$match": { "endedAt": { "$type": "date" } } }, { "$count": "n" } ],
        } },
    ]
}

/// 1 where `condition` holds, else 0: for `$sum`.
fn one_if(condition: Document) -> Document {
    doc! { "$cond": [condition, 1, 0] }
}

fn is_type(name: EventType) -> Document {
    doc! { "$eq": ["$type", name.as_str()] }
}

/// Whether `field` holds a number (an absent one does not).
fn has_number(field: &str) -> Document {
    doc! { "$in": [ { "$type": format!("${field}") }, ["double", "int", "long", "decimal"] ] }
}

/// The analytics figures of the window's events, one facet each.
fn analytics_pipeline(query: &AnalyticsQuery, window: Document) -> Vec<Document> {
    let (call, result) = (EventType::ToolCall, EventType::ToolResult);
    let tools = vec![
        doc! { "$match": { "type": { "$in": [call.as_str(), result.as_str()] } } },
        doc! { "$group": {
            "_id": "$toolName",
            "calls": { "$sum": one_if(is_type(call)) },
            "results": { "$sum": one_if(is_type(result)) },
            "failures": { "$sum": one_if(doc! { "$and": [is_type(result), { "$eq": ["$success", false] }] }) },
            "timed": { "$sum": one_if(doc! { "$and": [is_type(result), has_number("executionTime")] }) },
        } },
    ];
    let agents = vec![
        doc! { "$match": { "type": call.as_str() } },
        doc! { "$group": { "_id": "$agentId", "n": { "$sum": 1 } } },
        doc! { "$sort": { "n": -1, "_id": 1 } },
        doc! { "$limit": to_i64(TOP as u64) },
    ];
    let quality = quality_by_department(doc! {
        "withThreshold": { "$sum": one_if(has_number("threshold")) },
        "below": { "$sum": one_if(doc! { "$and": [
            has_number("threshold"),
            { "$lt": ["$qualityScore", "$threshold"] },
        ] }) },
    });
    let reviews = doc! { "$match": { "type": EventType::ReviewStatus.as_str() } };
    // Seq order within an execution is event order, so `$first` after the
    // sort is each subject's first verdict.
    let review_rounds = vec![
        reviews.clone(),
        doc! { "$sort": { "seq": 1 } },
        doc! { "$group": {
            "_id": {
                "e": "$executionId",
                "d": "$department",
                "s": { "$ifNull": ["$specialistId", ""] },
            },
            "first": { "$first": "$status" },
            "rounds": { "$sum": one_if(doc! { "$eq": ["$status", "revision-requested"] }) },
        } },
        doc! { "$group": {
            "_id": "$rounds",
            "n": { "$sum": 1 },
            "approved": { "$sum": one_if(doc! { "$eq": ["$first", "approved"] }) },
        } },
    ];
    let bucket = doc! { "$floor": { "$divide": [
        { "$subtract": ["$timestamp", bson_time(query.from)] },
        query.bucket_ms(),
    ] } };
    vec![
        doc! { "$match": window },
        doc! { "$facet": {
            "byType": [ { "$group": { "_id": "$type", "n": { "$sum": 1 } } } ],
            "buckets": [ { "$group": { "_id": bucket, "n": { "$sum": 1 } } } ],
            "tools": tools,
            "agents": agents,
            "quality": quality,
            "reviewStatus": [ reviews, { "$group": { "_id": "$status", "n": { "$sum": 1 } } } ],
            "reviewRounds": review_rounds,
        } },
    ]
}

/// The rows of one facet of a `$facet` result.
fn facet_rows<'a>(facets: &'a Document, facet: &str) -> Vec<&'a Document> {
    facets
        .get_array(facet)
        .map(|rows| rows.iter().filter_map(Bson::as_document).collect())
        .unwrap_or_default()
}

/// The calls of each agent in the window's `facets`.
fn agent_calls(facets: &Document) -> Vec<AgentCalls> {
    facet_rows(facets, "agents")
        .into_iter()
        .filter_map(|row| {
            Some(AgentCalls {
                agent_id: row.get_str("_id").ok()?.to_owned(),
                calls: number(row, "n")?,
            })
        })
        .collect()
}

/// The quality checks of the window's `facets`, by department.
fn quality_figures(facets: &Document) -> BTreeMap<String, QualityFigures> {
    facet_rows(facets, "quality")
        .into_iter()
        .filter_map(|row| {
            let score = |field| row.get(field).and_then(float).unwrap_or(0.0);
            let n = |field| number(row, field).unwrap_or(0);
            let figures = QualityFigures {
                count: n("n"),
                avg: score("avg"),
                min: score("min"),
                max: score("max"),
                with_threshold: n("withThreshold"),
                below_threshold: n("below"),
                share_below_threshold: ratio(n("below"), n("withThreshold")),
            };
            Some((row.get_str("_id").ok()?.to_owned(), figures))
        })
        .collect()
}

/// A facet of `{_id: name, n: count}` rows as a map.
fn counts(facets: &Document, facet: &str) -> BTreeMap<String, u64> {
    facet_rows(facets, facet)
        .into_iter()
        .filter_map(|row| Some((row.get_str("_id").ok()?.to_owned(), number(row, "n")?)))
        .collect()
}

fn summary_from_document(doc: &Document) -> Result<ExecutionSummary, StoreError> {
    let broken = |what: &str| {
        let id = doc.get_str("executionId").unwrap_or("?");
        StoreError::new(format!("mongodb: summary of execution `{id}` has {what}"))
    };
    let execution_id = doc
        .get_str("executionId")
        .map_err(|_| broken("no executionId"))?
        .to_owned();
    let status = doc
        .get_str("status")
        .ok()
        .and_then(ExecutionStatus::parse)
        .ok_or_else(|| broken("no known status"))?;
    let started_at = doc
        .get_datetime("startedAt")
        .map_err(|_| broken("no startedAt"))?;
    Ok(ExecutionSummary {
        execution_id,
        conversation_id: doc.get_str("conversationId").ok().map(str::to_owned),
        status,
        started_at: chrono_time(*started_at),
        ended_at: doc.get_datetime("endedAt").ok().map(|at| chrono_time(*at)),
        event_count: number(doc, "eventCount").unwrap_or(0),
        last_seq: number(doc, "lastSeq").unwrap_or(0),
    })
}

/// True when every write error of an insert says "already stored" and the
/// write concern was met: then every event of the batch is durable.
fn is_only_duplicates(err: &DriverError) -> bool {
    match err.kind.as_ref() {
        ErrorKind::InsertMany(insert) => insert_only_duplicates(insert),
        _ => false,
    }
}

fn insert_only_duplicates(insert: &InsertManyError) -> bool {
    insert.write_concern_error.is_none()
        && insert
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().all(|e| e.code == DUPLICATE_KEY))
}

fn is_duplicate_key(err: &DriverError) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// What went wrong, in a line: the driver's own `Display` adds labels, the
/// raw server reply and, for a batch insert, every write error.
fn describe(err: &DriverError) -> String {
    match err.kind.as_ref() {
        ErrorKind::InsertMany(insert) => describe_insert_many(insert),
        kind => kind.to_string(),
    }
}

fn describe_insert_many(insert: &InsertManyError) -> String {
    if let Some(concern) = &insert.write_concern_error {
        return format!("write concern not met: {}", concern.message);
    }
    let errors = insert.write_errors.as_deref().unwrap_or_default();
    match errors.iter().find(|e| e.code != DUPLICATE_KEY) {
        Some(first) => format!(
            "{} events refused; first: error {}: {}",
            errors.len(),
            first.code,
            first.message
        ),
        None => "insert failed".to_owned(),
    }
}

/// The user name and password of a connection string, in every form they
/// might show up in an error, so that no message carries them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Secrets(Vec<String>);

impl Secrets {
    /// Finds the credentials the way the driver does: everything before the
    /// last `@` ahead of the options, split at the first `:`.
    fn from_uri(uri: &str) -> Secrets {
        let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
        let before_options = after_scheme.split('?').next().unwrap_or_default();
        let Some((user_info, _)) = before_options.rsplit_once('@') else {
            return Secrets::default();
        };
        let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
        let mut secrets: Vec<String> = [user_info, user, password]
            .into_iter()
            .flat_map(|raw| [raw.to_owned(), percent_decode(raw)])
            .filter(|secret| !secret.is_empty())
            .collect();
        // Longest first, so that a part never spoils the masking of the whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Secrets(secrets)
    }

    fn scrub(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }

    /// A store error for a failed driver call, credentials masked.
    fn error(&self, doing: &str, err: &DriverError) -> StoreError {
        StoreError::new(self.scrub(&format!("mongodb: {doing}: {}", describe(err))))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The execution status an `orchestration-complete` sets; none means success.
fn run_status(status: Option<RunStatus>) -> ExecutionStatus {
    match status {
        None | Some(RunStatus::Success) => ExecutionStatus::Success,
        Some(RunStatus::Failed) => ExecutionStatus::Failed,
        Some(RunStatus::Partial) => ExecutionStatus::Partial,
    }
}

/// The name a unit enum has on the wire, e.g. `revision-requested`.
fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// A published event always has its timestamp; the fallback only keeps the
/// summary sane if one ever does not.
fn event_time(event: &AgentEvent) -> DateTime<Utc> {
    event.timestamp.unwrap_or_else(Utc::now)
}

/// BSON dates hold milliseconds, which is also the precision of the stored
/// JSON text; both truncate the same way.
fn bson_time(at: DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(at.timestamp_millis())
}

fn chrono_time(at: BsonDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

/// The instant `age` ago, or `None` when that is before any representable time.
fn cutoff_before_now(age: Duration) -> Option<DateTime<Utc>> {
    Utc::now().checked_sub_signed(TimeDelta::from_std(age).ok()?)
}

/// Seqs and counts as BSON's `Int64`; beyond its range they saturate, which
/// for a bound means "everything" or "nothing", as intended.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A non-negative whole number, whichever numeric type the server chose.
fn number(doc: &Document, field: &str) -> Option<u64> {
    match doc.get(field)? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
        _ => None,
    }
}

fn float(value: &Bson) -> Option<f64> {
    match value {
        Bson::Double(n) => Some(*n),
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        OrchestrationComplete, QualityCheck, ReviewStatus, ReviewVerdict, ToolResult,
    };
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn stored(value: serde_json::Value, seq: u64, time: &str) -> Arc<PublishedEvent> {
        let mut event = AgentEvent::from_producer_json(value).unwrap();
        event.seq = Some(seq);
        event.timestamp = Some(at(time));
        PublishedEvent::new(event)
    }

    #[test]
    fn event_document_keeps_the_exact_event_and_the_fields_queries_need() {
        let published = stored(
            json!({"type":"quality-check","executionId":"e1","conversationId":"c1",
                   "qualityScore":87,"department":"story","agentId":"a1",
                   "metadata":{"inputTokens":18446744073709551615u64}}),
            7,
            "2025-10-01T12:00:00.123Z",
        );
        let doc = event_document(&published.event, published.seq).unwrap();
        assert_eq!(doc.get_i64("seq").unwrap(), 7);
        assert_eq!(doc.get_str("type").unwrap(), "quality-check");
        assert_eq!(doc.get_str("agentId").unwrap(), "a1");
        assert_eq!(doc.get_str("department").unwrap(), "story");
        assert_eq!(doc.get_str("conversationId").unwrap(), "c1");
        assert_eq!(doc.get_f64("qualityScore").unwrap(), 87.0);
        assert_eq!(
            doc.get_datetime("timestamp").unwrap().timestamp_millis(),
            at("2025-10-01T12:00:00.123Z").timestamp_millis()
        );
        assert_eq!(event_from_document(&doc).unwrap(), published.event);
    }

    #[test]
    fn event_document_copies_tool_success_and_review_status() {
        let result = AgentEvent::new(
            "e1",
            ToolResult {
                agent_id: "a".into(),
                tool_name: "t".into(),
                success: Some(false),
                ..Default::default()
            },
        );
        let doc = event_document(&result, 1).unwrap();
        assert!(!doc.get_bool("success").unwrap());
        assert!(doc.get("agentId").is_some() && doc.get("department").is_none());

        let review = AgentEvent::new(
            "e1",
            ReviewStatus {
                department: "d".into(),
                status: ReviewVerdict::RevisionRequested,
                agent_id: None,
                specialist_id: None,
                feedback: None,
                quality_score: None,
            },
        );
        let doc = event_document(&review, 2).unwrap();
        assert_eq!(doc.get_str("status").unwrap(), "revision-requested");
        assert!(doc.get("agentId").is_none());
    }

    #[test]
    fn event_document_copies_what_analytics_measures() {
        let result = stored(
            json!({"type":"tool-result","executionId":"e1","agentId":"a","toolName":"search","executionTime":12.5}),
            1,
            "2025-10-01T12:00:00Z",
        );
        let doc = event_document(&result.event, 1).unwrap();
        assert_eq!(doc.get_str("toolName").unwrap(), "search");
        assert_eq!(doc.get_f64("executionTime").unwrap(), 12.5);
        let check = stored(
            json!({"type":"quality-check","executionId":"e1","qualityScore":50,"threshold":70}),
            2,
            "2025-10-01T12:00:00Z",
        );
        assert_eq!(
            event_document(&check.event, 2)
                .unwrap()
                .get_f64("threshold")
                .unwrap(),
            70.0
        );
        let review = stored(
            json!({"type":"review-status","executionId":"e1","department":"d","status":"approved","specialistId":"s1"}),
            3,
            "2025-10-01T12:00:00Z",
        );
        let doc = event_document(&review.event, 3).unwrap();
        assert_eq!(doc.get_str("specialistId").unwrap(), "s1");
    }

    #[test]
    fn the_analytics_window_attributes_agents_to_the_department() {
        let query = AnalyticsQuery::new(at("2025-10-01T12:00:00Z"), at("2025-10-01T13:00:00Z"))
            .conversation("c1")
            .department("story");
        let (from, to) = (bson_time(query.from), bson_time(query.to));
        let attributed = [("e1".to_owned(), vec!["writer".to_owned()])];
        assert_eq!(
            analytics_window_filter(&query, &attributed),
            doc! {
                "timestamp": { "$gte": from, "$lt": to },
                "conversationId": "c1",
                "$or": [
                    { "department": "story" },
                    { "department": { "$exists": false }, "$or": [
                        { "executionId": "e1", "agentId": { "$in": ["writer"] } },
                    ] },
                ],
            }
        );
        assert_eq!(
            active_executions_filter(&query),
            doc! {
                "startedAt": { "$lt": to },
                "lastEventAt": { "$gte": from },
                "conversationId": "c1",
                "departments": "story",
            }
        );
        let pipeline = analytics_pipeline(&query, Document::new());
        let facet = pipeline[1].get_document("$facet").unwrap();
        let names: Vec<&str> = facet.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "byType",
                "buckets",
                "tools",
                "agents",
                "quality",
                "reviewStatus",
                "reviewRounds"
            ]
        );
    }

    #[test]
    fn a_seq_beyond_int64_is_refused_not_wrapped() {
        let event = AgentEvent::new("e1", QualityCheck::default());
        assert!(event_document(&event, u64::MAX).is_err());
    }

    #[test]
    fn events_filter_has_every_condition_asked_for() {
        let query = EventQuery {
            execution_id: "e1".into(),
            after_seq: 3,
            before_seq: Some(10),
            types: Some(vec![EventType::ToolCall, EventType::ToolResult]),
            agent_id: Some("a1".into()),
            department: Some("story".into()),
            limit: 5,
        };
        assert_eq!(
            events_filter(&query),
            doc! {
                "executionId": "e1",
                "seq": { "$gt": 3_i64, "$lt": 10_i64 },
                "type": { "$in": ["tool-call", "tool-result"] },
                "agentId": "a1",
                "department": "story",
            }
        );
        let plain = EventQuery::after("e1", u64::MAX, 5);
        assert_eq!(
            events_filter(&plain),
            doc! { "executionId": "e1", "seq": { "$gt": i64::MAX } }
        );
    }

    #[test]
    fn executions_cursor_means_strictly_after_in_descending_order() {
        let started = at("2025-10-01T12:00:00Z");
        let query = ExecutionQuery {
            conversation_id: Some("c1".into()),
            status: Some(ExecutionStatus::Failed),
            before: Some((started, "e5".into())),
            limit: 10,
        };
        let t = BsonDateTime::from_millis(started.timestamp_millis());
        assert_eq!(
            executions_filter(&query),
            doc! {
                "conversationId": "c1",
                "status": "failed",
                "$or": [
                    { "startedAt": { "$lt": t } },
                    { "startedAt": t, "executionId": { "$lt": "e5" } },
                ],
            }
        );
        assert_eq!(executions_filter(&ExecutionQuery::default()), doc! {});
    }

    #[test]
    fn a_batch_without_completion_only_starts_a_new_summary_as_running() {
        let events = [
            stored(
                json!({"type":"agent-start","executionId":"e1","agentId":"a","department":"story"}),
                2,
                "2025-10-01T12:00:02Z",
            ),
            stored(
                json!({"type":"orchestration-start","executionId":"e1","conversationId":"c1"}),
                1,
                "2025-10-01T12:00:01Z",
            ),
            stored(
                json!({"type":"department-start","executionId":"e2","department":"art"}),
                1,
                "2025-10-01T13:00:00Z",
            ),
        ];
        let batches = summarize(&events);
        assert_eq!(batches.len(), 2);
        let e1 = &batches["e1"];
        assert_eq!(e1.started_at, at("2025-10-01T12:00:01Z"));
        assert_eq!(e1.last_event_at, at("2025-10-01T12:00:02Z"));
        assert_eq!((e1.first_seq, e1.last_seq), (1, 2));
        assert_eq!(e1.conversation_id.as_deref(), Some("c1"));
        assert_eq!(
            summary_update(e1, 2, 2),
            doc! {
                "$min": { "startedAt": bson_time(at("2025-10-01T12:00:01Z")) },
                "$max": { "lastEventAt": bson_time(at("2025-10-01T12:00:02Z")) },
                "$setOnInsert": { "status": "running" },
                "$set": { "eventCount": 2_i64, "lastSeq": 2_i64, "conversationId": "c1" },
                "$addToSet": { "departments": { "$each": ["story"] } },
            }
        );
    }

    /// An event of execution `e1` with this seq.
    fn e1_event(seq: u64) -> Arc<PublishedEvent> {
        stored(
            json!({"type":"agent-start","executionId":"e1","agentId":"a"}),
            seq,
            "2025-10-01T12:00:00Z",
        )
    }

    /// A batch of seqs `first..=last` of execution `e1`.
    fn seqs(first: u64, last: u64) -> BatchSummary {
        let events: Vec<_> = (first..=last).map(e1_event).collect();
        summarize(&events).remove("e1").unwrap()
    }

    #[test]
    fn a_batch_above_the_count_counts_only_its_range() {
        let counted = Counted {
            event_count: 10,
            last_seq: Some(12),
        };
        let range = CountRange::of("e1", &seqs(13, 20), Some(counted), false);
        assert_eq!((range.after, range.through, range.known), (12, 20, None));
        assert_eq!(range.event_count(8), 18);
        let first = CountRange::of("e1", &seqs(1, 5), None, false);
        assert_eq!(
            (first.after, first.through, first.event_count(5)),
            (0, 5, 5)
        );
    }

    #[test]
    fn only_new_events_right_after_the_count_skip_counting() {
        let counted = Some(Counted {
            event_count: 10,
            last_seq: Some(12),
        });
        let known = |batch: &BatchSummary, counted, every_one_new| {
            CountRange::of("e1", batch, counted, every_one_new).known
        };
        assert_eq!(known(&seqs(13, 20), counted, true), Some(8));
        assert_eq!(known(&seqs(1, 4), None, true), Some(4));
        // Some were stored before; a gap before the batch; a gap inside it.
        assert_eq!(known(&seqs(13, 20), counted, false), None);
        assert_eq!(known(&seqs(14, 20), counted, true), None);
        let mut gapped = seqs(13, 15);
        gapped.add(&e1_event(17).event, 17);
        assert_eq!(known(&gapped, counted, true), None);
    }

    #[test]
    fn a_batch_reaching_back_counts_everything_up_to_the_new_end() {
        let counted = Counted {
            event_count: 10,
            last_seq: Some(12),
        };
        // A retry of stored events, and one that also goes further.
        for (batch, through) in [(seqs(5, 12), 12), (seqs(12, 15), 15)] {
            let range = CountRange::of("e1", &batch, Some(counted), true);
            assert_eq!((range.after, range.through), (0, through));
            assert_eq!(range.event_count(13), 13, "replaces the count");
        }
    }

    #[test]
    fn a_completion_sets_status_and_end_and_the_latest_one_wins() {
        let events = [
            stored(
                json!({"type":"orchestration-complete","executionId":"e1","status":"failed"}),
                8,
                "2025-10-01T12:00:08Z",
            ),
            stored(
                json!({"type":"orchestration-complete","executionId":"e1"}),
                9,
                "2025-10-01T12:00:09Z",
            ),
        ];
        let batch = &summarize(&events)["e1"];
        let update = summary_update(batch, 9, 9);
        assert_eq!(
            update.get_document("$set").unwrap(),
            &doc! {
                "eventCount": 9_i64,
                "lastSeq": 9_i64,
                "status": "success",
                "endedAt": bson_time(at("2025-10-01T12:00:09Z")),
            }
        );
        assert!(update.get("$setOnInsert").is_none());
        assert!(update.get("$addToSet").is_none());
        assert_eq!(
            run_status(OrchestrationComplete::default().status),
            ExecutionStatus::Success
        );
    }

    #[test]
    fn stats_pipeline_starts_on_the_execution_index() {
        let pipeline = stats_pipeline("e1");
        assert_eq!(pipeline[0], doc! { "$match": { "executionId": "e1" } });
        let facet = pipeline[1].get_document("$facet").unwrap();
        let names: Vec<&str> = facet.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "byType",
                "byAgent",
                "byDepartment",
                "toolFailures",
                "quality",
                "reviews"
            ]
        );
        let by_agent: Vec<&Document> = facet
            .get_array("byAgent")
            .unwrap()
            .iter()
            .filter_map(Bson::as_document)
            .collect();
        assert_eq!(
            by_agent,
            [
                &doc! { "$match": { "agentId": { "$type": "string" } } },
                &doc! { "$group": { "_id": "$agentId", "n": { "$sum": 1 } } },
            ]
        );
    }

    #[test]
    fn indexes_name_the_fields_they_cover() {
        let agent = partial_index("agentId");
        assert_eq!(
            agent.keys,
            doc! { "executionId": 1, "agentId": 1, "seq": 1 }
        );
        assert_eq!(
            agent.options.unwrap().partial_filter_expression,
            Some(doc! { "agentId": { "$exists": true } })
        );
        let unique = &event_indexes()[0];
        assert_eq!(unique.keys, doc! { "executionId": 1, "seq": 1 });
        assert_eq!(unique.options.as_ref().unwrap().unique, Some(true));
    }

    fn summary() -> ExecutionSummary {
        ExecutionSummary {
            execution_id: "e1".into(),
            conversation_id: None,
            status: ExecutionStatus::Success,
            started_at: at("2025-10-01T12:00:00Z"),
            ended_at: Some(at("2025-10-01T12:00:01.500Z")),
            event_count: 6,
            last_seq: 6,
        }
    }

    #[test]
    fn stats_are_read_from_the_facets() {
        let facets = doc! {
            "byType": [ { "_id": "tool-call", "n": 2 }, { "_id": "tool-result", "n": 2_i64 } ],
            "byAgent": [ { "_id": "a1", "n": 4 } ],
            "byDepartment": [],
            "toolFailures": [ { "n": 1 } ],
            "quality": [ { "_id": "story", "n": 2, "min": 60.0, "avg": 70.0, "max": 80 } ],
            "reviews": [ { "_id": "approved", "n": 1 } ],
        };
        let stats = stats_from_facets(summary(), &facets);
        assert_eq!(stats.duration_ms, Some(1500));
        assert_eq!(stats.tool_calls, 2);
        assert_eq!(stats.tool_failures, 1);
        assert_eq!(stats.by_type["tool-result"], 2);
        assert_eq!(stats.by_agent["a1"], 4);
        assert!(stats.by_department.is_empty());
        assert_eq!(stats.reviews["approved"], 1);
        assert_eq!(
            stats.quality_by_department["story"],
            ScoreSummary {
                count: 2,
                min: 60.0,
                avg: 70.0,
                max: 80.0
            }
        );
        let empty = stats_from_facets(summary(), &Document::new());
        assert_eq!((empty.tool_calls, empty.tool_failures), (0, 0));
    }

    #[test]
    fn summary_documents_read_back() {
        let expected = summary();
        let doc = doc! {
            "executionId": "e1",
            "status": "success",
            "startedAt": bson_time(expected.started_at),
            "endedAt": bson_time(expected.ended_at.unwrap()),
            "eventCount": 6_i64,
            "lastSeq": 6_i64,
        };
        assert_eq!(summary_from_document(&doc).unwrap(), expected);
        let bad = doc! { "executionId": "e1", "status": "lost" };
        assert!(summary_from_document(&bad)
            .unwrap_err()
            .message
            .contains("e1"));
    }

    #[test]
    fn only_duplicate_write_errors_count_as_stored() {
        let insert =
            |doc: Document| -> InsertManyError { mongodb::bson::from_document(doc).unwrap() };
        let duplicates = insert(doc! {
            "writeErrors": [ { "index": 0, "code": 11000, "errmsg": "E11000 duplicate key" } ],
        });
        assert!(insert_only_duplicates(&duplicates));
        let mixed = insert(doc! {
            "writeErrors": [
                { "index": 0, "code": 11000, "errmsg": "dup" },
                { "index": 1, "code": 121, "errmsg": "validation failed" },
            ],
        });
        assert!(!insert_only_duplicates(&mixed));
        assert_eq!(
            describe_insert_many(&mixed),
            "2 events refused; first: error 121: validation failed"
        );
        let unconfirmed = insert(doc! {
            "writeErrors": [ { "index": 0, "code": 11000, "errmsg": "dup" } ],
            "writeConcernError": { "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out" },
        });
        assert!(!insert_only_duplicates(&unconfirmed));
    }

    #[test]
    fn credentials_never_survive_in_messages() {
        let secrets =
            Secrets::from_uri("mongodb://ad%40min:s3cr%3At@db1:27017,db2/app?authSource=x@y");
        let text = "auth failed for ad@min with s3cr:t via ad%40min:s3cr%3At@db1";
        let scrubbed = secrets.scrub(text);
        for secret in ["ad@min", "s3cr:t", "ad%40min", "s3cr%3At"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("db1"));
        assert_eq!(
            Secrets::from_uri("mongodb://localhost:27017"),
            Secrets::default()
        );
        assert_eq!(secrets.scrub("no secret here"), "no secret here");
    }

    #[tokio::test]
    async fn a_missing_server_fails_fast_without_showing_credentials() {
        // Nothing listens on port 1; the URI's own timeout keeps the test short.
        let uri = "mongodb://broker:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=300";
        let started = std::time::Instant::now();
        let err = connect(uri, "agent_events_test")
            .await
            .err()
            .expect("no server");
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(err
            .message
            .starts_with("mongodb: creating the agentEvents indexes"));
        assert!(!err.message.contains("hunter2") && !err.message.contains("broker:"));

        let err = connect("mongodb://u:p@host:notaport", "db")
            .await
            .err()
            .unwrap();
        assert!(
            err.message.starts_with("mongodb: reading MONGODB_URI"),
            "{err}"
        );
    }

    fn thoughts(seqs: std::ops::RangeInclusive<u64>) -> Vec<Arc<PublishedEvent>> {
        seqs.map(|seq| {
            let thought = json!({"type":"agent-thinking","executionId":"e",
                                 "agentId":"a","thought":"t"});
            stored(thought, seq, "2025-10-01T12:00:00Z")
        })
        .collect()
    }

    async fn counted_of_e(store: &MongoStore) -> Option<Counted> {
        let ids = ["e".to_owned()];
        let counted = store.inner.counted(ids.iter()).await.unwrap();
        counted.get("e").copied()
    }

    /// Two nodes on one database, interleaved by hand where a race would
    /// interleave them: a fold computed from a summary that the other writer
    /// moved meanwhile must not apply (it would count from the old
    /// `lastSeq`), and folding again counts from the moved summary.
    #[tokio::test]
    async fn a_fold_from_a_summary_another_writer_moved_is_not_applied() {
        let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) else {
            eprintln!("SKIPPED: MongoDB fold race (MONGODB_URI not set)");
            return;
        };
        let database = format!("agent_events_fold_race_{}", std::process::id());
        let first = connect(&uri, &database).await.unwrap();
        let second = connect(&uri, &database).await.unwrap();
        first.inner.append(&thoughts(1..=3)).await.unwrap();

        // The first writer reads the summary for its batch 7..=8…
        let next = thoughts(7..=8);
        let batches = summarize(&next);
        let read = counted_of_e(&first).await;
        // …the second stores 4..=6 and moves the summary…
        second.inner.append(&thoughts(4..=6)).await.unwrap();
        // …and the first stores its events and updates from what it read.
        let docs = next
            .iter()
            .map(|published| event_document(&published.event, published.seq).unwrap())
            .collect();
        assert!(first.inner.insert_events(docs).await.unwrap());
        let batch = &batches["e"];
        let stale = CountRange::of("e", batch, read, true);
        let update = summary_update(batch, stale.event_count(2), stale.through);
        let applied = first.inner.update_summary(&stale, update).await.unwrap();
        assert!(!applied, "a fold from lastSeq 3 applied over lastSeq 6");
        let moved = Counted {
            event_count: 6,
            last_seq: Some(6),
        };
        assert_eq!(counted_of_e(&first).await, Some(moved));

        let left = first.inner.fold_summaries(batches, true).await.unwrap();
        assert!(left.is_empty());
        let folded = Counted {
            event_count: 8,
            last_seq: Some(8),
        };
        assert_eq!(counted_of_e(&first).await, Some(folded));
        first.inner.db.drop().await.unwrap();
    }

    #[test]
    fn numbers_read_whatever_type_the_server_chose() {
        let doc = doc! { "a": 1, "b": 2_i64, "c": 3.0, "d": -1, "e": 1.5, "f": "x" };
        let read: Vec<Option<u64>> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|f| number(&doc, f))
            .collect();
        assert_eq!(read, [Some(1), Some(2), Some(3), None, None, None, None]);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
    }
}
