//! The Persister actor: writes accepted events to the store in batches
//! (group commit) and tells producers when their events are durable.
//!
//! # Group commit
//! A batch closes when it holds `batch_max` events or `batch_delay` after its
//! first event, whichever comes first, and is written in one `append` (one
//! transaction, one fsync). One write is in flight at a time, so batches land
//! in the order they were accepted; what arrives meanwhile forms the next
//! one, written as soon as the write before it completes.
//!
//! Why the delay is 0 by default: the batch then closes once the Persister
//! has taken the messages already in its mailbox, so a lone producer waits
//! for one fsync, not for a timer, and under load the batches still grow by
//! themselves, from what arrives while the store writes. A delay of 2 ms
//! (the old default) idled the store while events waited: with 8 producers
//! it stored 0.67x the events per second, and a lone producer's 202 took
//! 2.5x as long (PERFORMANCE.md, "Session 10").
//!
//! # Acknowledged means durable, and seen means stored
//! A [`Persist`] may carry an ack; it is answered only after the batch that
//! holds its events is committed. `POST /api/events` answers 202 on that ack.
//!
//! A [`Persist`] may also name who releases its events to live subscribers
//! (the Emitter): they are released once committed, in commit order. Why not
//! before: after a crash the broker continues each execution from the store's
//! highest seq, so an event a client saw but the store never got would have
//! its seq handed out again, and the client would drop the new event as a
//! duplicate. Group commit keeps this wait to a few milliseconds. While the
//! store is failing, events are released at once instead, so live delivery
//! goes on through a store outage (docs/operations.md, "Storage: what is
//! promised", says what that risks).
//!
//! # Store faults
//! A failed write is retried with exponential backoff, forever, keeping the
//! batch. Events keep arriving and wait in the backlog; its size is shared
//! with the Emitter ([`Backlog`]), which refuses producers with
//! `store-unavailable` once it is full rather than dropping anything silently.
//! `/health` reads the same state and says `degraded` and why.

use crate::idempotency::KeyRecord;
use crate::metrics::Metrics;
use crate::protocol::PublishedEvent;
use crate::store::{Store, StoreError};
use actix::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Answered once the events of a [`Persist`] are durable, or the broker gives up at shutdown.
pub type Ack = oneshot::Sender<Result<(), StoreError>>;

/// How the Persister batches and backs off.
#[derive(Debug, Clone)]
pub struct PersisterConfig {
    /// A batch closes at this many events…
    pub batch_max: usize,
    /// …or this long after its first event (zero: once the mailbox is empty).
    pub batch_delay: Duration,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        PersisterConfig {
            batch_max: 1000,
            batch_delay: Duration::ZERO,
        }
    }
}

/// Events the store has committed (or that must go live while it fails), in
/// order: into the buffer, then to the Registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The events, in order.
    pub events: Vec<Arc<PublishedEvent>>,
    /// Whether they are committed (false: the store is failing and they go
    /// live before it has them, so they must stay in the replay buffer).
    pub stored: bool,
    /// Producers waiting for these events, answered by the receiver once it
    /// has handed them on: a 202 then comes after its events are live, so a
    /// client that subscribes after a 202 never gets that event as new.
    pub acks: Vec<Ack>,
}

impl Release {
    /// Tells the waiting producers their events are stored.
    pub fn answer(acks: Vec<Ack>) {
        for ack in acks {
            let _ = ack.send(Ok(()));
        }
    }
}

/// Events accepted but not yet stored, and the store's last error: shared by
/// the Persister (writes it), the Emitter (refuses when full) and `/health`.
#[derive(Debug, Default)]
pub struct Backlog {
    events: AtomicUsize,
    max: usize,
    last_error: Mutex<Option<String>>,
}

impl Backlog {
    /// An empty backlog holding at most `max` events.
    pub fn new(max: usize) -> Arc<Backlog> {
        Arc::new(Backlog {
            events: AtomicUsize::new(0),
            max,
            last_error: Mutex::new(None),
        })
    }

    /// Events waiting to be stored.
    pub fn len(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts `n` events on their way to the Persister. The sender counts
    /// them, not the Persister, so that the next batch's room check already
    /// sees them even while they wait in the Persister's mailbox.
    pub fn add(&self, n: usize) {
        self.events.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether `more` events still fit.
    pub fn has_room(&self, more: usize) -> bool {
        self.len() + more <= self.max
    }

    /// The store's error while it is failing; `None` when it is healthy.
    pub fn failing(&self) -> Option<String> {
        self.last_error.lock().expect("backlog lock").clone()
    }

    fn set_failing(&self, error: Option<String>) {
        *self.last_error.lock().expect("backlog lock") = error;
    }
}

/// Store these events (already sequenced, in order), answer `ack` once
/// durable, and hand them to `release_to` for live delivery then.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Persist {
    /// The events.
    pub events: Vec<Arc<PublishedEvent>>,
    /// Who waits for durability, if anyone.
    pub ack: Option<Ack>,
    /// Who delivers them live once they are stored, if anyone.
    pub release_to: Option<Recipient<Release>>,
    /// Idempotency keys of the batches these events are, stored in the same
    /// commit (`idempotency.rs`).
    pub keys: Vec<KeyRecord>,
}

/// Events on their way to the store, with who waits for them.
#[derive(Default)]
struct Batch {
    events: Vec<Arc<PublishedEvent>>,
    acks: Vec<Ack>,
    releases: Vec<(Recipient<Release>, Vec<Arc<PublishedEvent>>)>,
    keys: Vec<KeyRecord>,
    /// Who got events of this batch early (the store was failing): the
    /// acks go there too once stored, behind those events in its mailbox.
    released_to: Option<Recipient<Release>>,
}

impl Batch {
    fn absorb(&mut self, newer: &mut Batch) {
        self.events.append(&mut newer.events);
        self.acks.append(&mut newer.acks);
        self.releases.append(&mut newer.releases);
        self.keys.append(&mut newer.keys);
        let newer_released_to = newer.released_to.take();
        self.released_to = self.released_to.take().or(newer_released_to);
    }

    /// Hands the events to live delivery, once, and `acks` with the last of
    /// them (answered here if nothing is released, or its receiver is gone);
    /// `stored`: whether the store has them (false when their write failed).
    ///
    /// Consecutive releases to the same actor (normally all of them go to
    /// the Emitter) travel as one `Release`, in order: the Emitter then
    /// publishes the whole commit as one batch, and the Registry sends each
    /// session one `Deliver` for it instead of one per request. Under load
    /// a commit holds many requests, and a `Deliver` (one actix message)
    /// cost more than the event it carried (PERFORMANCE.md).
    fn release(&mut self, acks: Vec<Ack>, stored: bool) {
        debug_assert!(stored || acks.is_empty(), "acks wait for the store");
        let mut merged: Option<(Recipient<Release>, Vec<Arc<PublishedEvent>>)> = None;
        for (to, mut events) in self.releases.drain(..) {
            match &mut merged {
                Some((current, pending)) if *current == to => pending.append(&mut events),
                _ => {
                    if let Some((previous, pending)) = merged.replace((to, events)) {
                        previous.do_send(Release {
                            events: pending,
                            stored,
                            acks: Vec::new(),
                        });
                    }
                }
            }
        }
        // Released earlier: the acks follow those events through the same
        // mailbox, so a 202 still comes after its events are live.
        let Some((to, events)) = merged.or_else(|| {
            let to = self.released_to.clone().filter(|_| !acks.is_empty())?;
            Some((to, Vec::new()))
        }) else {
            return Release::answer(acks);
        };
        self.released_to = Some(to.clone());
        let last = Release {
            events,
            stored,
            acks,
        };
        match to.try_send(last) {
            Ok(()) => {}
            // `try_send` keeps to the mailbox's capacity, `do_send` does not.
            Err(SendError::Full(last)) => to.do_send(last),
            // Acks come only with stored events: a 503 would be false.
            Err(SendError::Closed(last)) => Release::answer(last.acks),
        }
    }
}

/// Write everything pending now; answered when all of it is stored, or with
/// the store's error if it still fails after `deadline`.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Flush {
    /// How long to keep retrying.
    pub deadline: Duration,
}

/// The Persister actor; see the module documentation.
pub struct Persister {
    store: Arc<dyn Store>,
    config: PersisterConfig,
    backlog: Arc<Backlog>,
    metrics: Metrics,
    pending: Batch,
    /// A batch whose write failed, retried before anything newer.
    retrying: Option<Batch>,
    writing: bool,
    timer: Option<SpawnHandle>,
    failures_in_a_row: u32,
    /// Flushes waiting for the backlog to empty.
    flush_waiters: Vec<oneshot::Sender<()>>,
}

/// First retry after this; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Retries never wait longer than this, so a store that returns is used soon.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Persister {
    /// A Persister writing to `store`, sharing `backlog` with the Emitter.
    pub fn new(
        store: Arc<dyn Store>,
        config: PersisterConfig,
        backlog: Arc<Backlog>,
        metrics: Metrics,
    ) -> Self {
        Persister {
            store,
            config,
            backlog,
            metrics,
            pending: Batch::default(),
            retrying: None,
            writing: false,
            timer: None,
            failures_in_a_row: 0,
            flush_waiters: Vec::new(),
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if self.pending.events.len() >= self.config.batch_max {
            self.write_next(ctx);
        } else if self.timer.is_none() {
            let delay = self.config.batch_delay;
            self.timer = Some(ctx.run_later(delay, |persister, ctx| {
                persister.timer = None;
                persister.write_next(ctx);
            }));
        }
    }

    /// Starts the next write: the failed batch first, with everything newer joined to it.
    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        let mut batch = self.retrying.take().unwrap_or_default();
        batch.absorb(&mut self.pending);
        if batch.events.is_empty() && batch.keys.is_empty() {
            // Nothing to write is trivially durable: dropping these acks
            // would tell their producers the broker stopped (a false 503).
            Release::answer(batch.acks);
            self.wake_flush_waiters();
            return;
        }
        self.writing = true;
        let write = self
            .store
            .append_keyed(batch.events.clone(), batch.keys.clone());
        ctx.spawn(write.into_actor(self).map(move |result, persister, ctx| {
            persister.writing = false;
            match result {
                Ok(()) => persister.written(batch, ctx),
                Err(err) => persister.failed(batch, err, ctx),
            }
        }));
    }

    fn written(&mut self, mut batch: Batch, ctx: &mut Context<Self>) {
        if self.failures_in_a_row > 0 {
            log::info!("store {} is writable again", self.store.name());
        }
        self.failures_in_a_row = 0;
        self.backlog.set_failing(None);
        self.backlog
            .events
            .fetch_sub(batch.events.len(), Ordering::Relaxed);
        self.metrics.events_stored.inc_by(batch.events.len() as u64);
        self.metrics.store_batches.inc();
        let acks = std::mem::take(&mut batch.acks);
        batch.release(acks, true);
        if self.pending.events.is_empty() {
            self.wake_flush_waiters();
        } else {
            // What arrived during this write has waited for all of it: a
            // `batch_delay` more would only idle the store (PERFORMANCE.md).
            self.write_next(ctx);
        }
    }

    fn failed(&mut self, mut batch: Batch, err: StoreError, ctx: &mut Context<Self>) {
        self.failures_in_a_row += 1;
        self.metrics.store_retries.inc();
        let backoff =
            crate::backoff::exponential(FIRST_BACKOFF, MAX_BACKOFF, self.failures_in_a_row);
        log::warn!(
            "store {} write of {} events failed ({err}); retry {} in {backoff:?}",
            self.store.name(),
            batch.events.len(),
            self.failures_in_a_row
        );
        self.backlog.set_failing(Some(err.message));
        // The backoff decides when to try again, not a batch's timer.
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        // Live delivery goes on through a store outage; the acks wait for the
        // store. Not stored: the Emitter keeps them in the replay buffer,
        // which a replay reads until the store has them. What arrived during
        // the write goes now too: from here on, newer events go live as they
        // come (`Handler<Persist>`), and these must not come after them.
        batch.release(Vec::new(), false);
        self.pending.release(Vec::new(), false);
        self.retrying = Some(batch);
        ctx.run_later(backoff, |persister, ctx| persister.write_next(ctx));
    }

    fn wake_flush_waiters(&mut self) {
        for waiter in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn is_idle(&self) -> bool {
        !self.writing
            && self.retrying.is_none()
            && self.pending.events.is_empty()
            && self.pending.keys.is_empty()
    }
}

impl Actor for Persister {
    type Context = Context<Self>;
}

impl Handler<Persist> for Persister {
    type Result = ();

    fn handle(&mut self, msg: Persist, ctx: &mut Self::Context) {
        // The backlog already counts these: the sender added them (Backlog::add).
        if let Some(to) = msg.release_to {
            // Failing, whether its retry waits or runs.
            if self.failures_in_a_row > 0 {
                // The store is failing: live delivery does not wait for it.
                to.do_send(Release {
                    events: msg.events.clone(),
                    stored: false,
                    acks: Vec::new(),
                });
                self.pending.released_to = Some(to);
            } else {
                self.pending.releases.push((to, msg.events.clone()));
            }
        }
        self.pending.events.extend(msg.events);
        self.pending.acks.extend(msg.ack);
        self.pending.keys.extend(msg.keys);
        // While failing, the retry (waiting or running) takes them along.
        if self.failures_in_a_row == 0 {
            self.schedule(ctx);
        }
    }
}

impl Handler<Flush> for Persister {
    type Result = ResponseActFuture<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: Flush, ctx: &mut Self::Context) -> Self::Result {
        if self.is_idle() {
            return Box::pin(fut::ready(Ok(())));
        }
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push(tx);
        if self.retrying.is_none() {
            self.write_next(ctx);
        }
        let wait = async move { tokio::time::timeout(msg.deadline, rx).await };
        Box::pin(
            wait.into_actor(self)
                .map(|outcome, persister, _| match outcome {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(StoreError::new(persister.backlog.failing().unwrap_or_else(
                        || {
                            format!(
                                "{} events not stored before the deadline",
                                persister.backlog.len()
                            )
                        },
                    ))),
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_events::{agent_start, seqs};
    use crate::store::sqlite::{SqliteOptions, SqliteStore, DEFAULT_BUSY_TIMEOUT};
    use rusqlite::Connection;
    use std::ops::RangeInclusive;
    use std::path::PathBuf;
    use tokio::sync::mpsc;
    use tokio::sync::oneshot::error::TryRecvError;

    const EXECUTION: &str = "e";

    /// Long enough that only a full batch or a `Flush` starts a write.
    const NEVER: Duration = Duration::from_secs(3600);

    type Acked = oneshot::Receiver<Result<(), StoreError>>;

    /// Events `seqs` of one execution, sequenced as the Emitter hands them over.
    fn events(seqs: RangeInclusive<u64>) -> Vec<Arc<PublishedEvent>> {
        seqs.map(|seq| agent_start(EXECUTION, seq)).collect()
    }

    /// Batches close at `batch_max` events (or on `Flush`), never by time.
    fn closing_at(batch_max: usize) -> PersisterConfig {
        PersisterConfig {
            batch_max,
            batch_delay: NEVER,
        }
    }

    /// Stands in for the Emitter: hands every `Release` to the test as it
    /// came, acks unanswered, so the test decides when they are answered.
    struct Recorder(mpsc::UnboundedSender<Release>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<Release> for Recorder {
        type Result = ();

        fn handle(&mut self, release: Release, _: &mut Self::Context) {
            let _ = self.0.send(release);
        }
    }

    type Releases = mpsc::UnboundedReceiver<Release>;

    /// The next `Release` the recorder got; a test that waits longer has failed.
    async fn next(releases: &mut Releases) -> Release {
        tokio::time::timeout(Duration::from_secs(30), releases.recv())
            .await
            .expect("a Release within 30 s")
            .expect("the recorder runs")
    }

    /// Goes on from `released` with the seqs of the next `Release`s until
    /// `count` events came, each `Release` with `stored` as given.
    async fn released_seqs(
        releases: &mut Releases,
        mut released: Vec<u64>,
        count: usize,
        stored: bool,
    ) -> Vec<u64> {
        while released.len() < count {
            let release = next(releases).await;
            assert_eq!(release.stored, stored);
            released.extend(seqs(&release.events));
        }
        released
    }

    fn recorder() -> (Recipient<Release>, Releases) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Recorder(tx).start().recipient(), rx)
    }

    /// A Persister on a fresh SQLite store.
    struct Harness {
        persister: Addr<Persister>,
        store: Arc<SqliteStore>,
        backlog: Arc<Backlog>,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        fn start(config: PersisterConfig, busy_timeout: Duration) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.db");
            let options = SqliteOptions {
                busy_timeout,
                ..SqliteOptions::default()
            };
            let store = Arc::new(SqliteStore::open_with(&path, options).unwrap());
            let backlog = Backlog::new(usize::MAX);
            let persister =
                Persister::new(store.clone(), config, backlog.clone(), Metrics::new()).start();
            Harness {
                persister,
                store,
                backlog,
                path,
                _dir: dir,
            }
        }

        /// Sends a `Persist` as the Emitter does, counting the events in the backlog first.
        fn persist(
            &self,
            seqs: RangeInclusive<u64>,
            ack: Option<Ack>,
            release_to: Option<Recipient<Release>>,
        ) {
            let events = events(seqs);
            self.backlog.add(events.len());
            self.persister.do_send(Persist {
                events,
                ack,
                release_to,
                keys: Vec::new(),
            });
        }

        /// Holds the store's write lock from a second connection, as another
        /// process would, until the connection is dropped.
        fn lock(&self) -> Connection {
            let lock = Connection::open(&self.path).unwrap();
            lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
            lock
        }

        async fn last_seq(&self) -> u64 {
            self.store.last_seq(EXECUTION).await.unwrap()
        }
    }

    /// Holds the store's write lock (`Harness::lock`) and persists seqs
    /// 1..=3 with an ack. Returns the
    /// lock, the ack and the first `Release`, which comes once the write
    /// has failed: nothing can commit while the lock is held.
    async fn persist_while_locked(h: &Harness) -> (Connection, Acked, Releases, Release) {
        let lock = h.lock();
        let (recorder, mut releases) = recorder();
        let (ack, acked) = oneshot::channel();
        h.persist(1..=3, Some(ack), Some(recorder));
        let release = next(&mut releases).await;
        (lock, acked, releases, release)
    }

    /// Acks travel unanswered inside the commit's (merged) `Release`, so a
    /// 202 waits for the receiver to make the events live; the events are
    /// stored by the time the `Release` arrives.
    #[actix_rt::test]
    async fn acks_travel_inside_the_release_and_wait_for_its_receiver() {
        // Both requests fill one batch: one commit, one merged `Release`.
        let config = closing_at(3);
        let h = Harness::start(config, DEFAULT_BUSY_TIMEOUT);
        let (recorder, mut releases) = recorder();
        let (first_ack, mut first) = oneshot::channel();
        let (second_ack, mut second) = oneshot::channel();
        h.persist(1..=2, Some(first_ack), Some(recorder.clone()));
        h.persist(3..=3, Some(second_ack), Some(recorder));

        let release = next(&mut releases).await;
        assert_eq!(seqs(&release.events), [1, 2, 3]);
        assert!(release.stored);
        assert_eq!(release.acks.len(), 2);
        assert_eq!(h.last_seq().await, 3);
        assert_eq!(first.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(second.try_recv(), Err(TryRecvError::Empty));

        Release::answer(release.acks);
        assert_eq!(first.await, Ok(Ok(())));
        assert_eq!(second.await, Ok(Ok(())));
    }

    /// A stored commit whose receiver is gone is still acknowledged: its
    /// producer must not get a 503 for events the store has.
    #[actix_rt::test]
    async fn a_gone_receiver_does_not_fail_a_stored_commit() {
        let h = Harness::start(PersisterConfig::default(), DEFAULT_BUSY_TIMEOUT);
        // The context, and with it the mailbox, is dropped at once.
        let gone = Context::<Recorder>::new().address().recipient();
        assert!(!gone.connected());
        let (ack, acked) = oneshot::channel();
        h.persist(1..=3, Some(ack), Some(gone));

        let answer = tokio::time::timeout(Duration::from_secs(30), acked).await;
        assert_eq!(answer.expect("an answer within 30 s"), Ok(Ok(())));
        assert_eq!(h.last_seq().await, 3);
    }

    /// Requests sent back to back are stored and released in the order they
    /// were accepted, within a commit and across commits.
    #[actix_rt::test]
    async fn batches_are_released_in_the_order_they_were_accepted() {
        // Four events close a batch: the requests of three events straddle
        // commits, and later ones pile up while a write is in flight.
        let config = closing_at(4);
        let h = Harness::start(config, DEFAULT_BUSY_TIMEOUT);
        let (recorder, mut releases) = recorder();
        for first in (1..=15).step_by(3) {
            h.persist(first..=first + 2, None, Some(recorder.clone()));
        }

        let released = released_seqs(&mut releases, Vec::new(), 15, true).await;
        assert_eq!(released, (1..=15).collect::<Vec<_>>());
        assert_eq!(h.last_seq().await, 15);
    }

    /// With no delay (the default), a batch waits for no timer but still
    /// takes every request already waiting in the mailbox: one commit, not
    /// one per request.
    #[actix_rt::test]
    async fn without_a_delay_the_requests_waiting_share_one_commit() {
        let h = Harness::start(PersisterConfig::default(), DEFAULT_BUSY_TIMEOUT);
        assert_eq!(PersisterConfig::default().batch_delay, Duration::ZERO);
        let (recorder, mut releases) = recorder();
        // Sent before the Persister runs: this test's task has not yielded.
        for first in (1..=15).step_by(3) {
            h.persist(first..=first + 2, None, Some(recorder.clone()));
        }

        let release = next(&mut releases).await;
        assert_eq!(seqs(&release.events), (1..=15).collect::<Vec<_>>());
        assert!(release.stored);
        assert_eq!(h.last_seq().await, 15);
    }

    /// `Flush` writes what is pending at once and answers once it is stored.
    #[actix_rt::test]
    async fn flush_answers_once_everything_pending_is_stored() {
        // Without the flush, nothing would be written for an hour.
        let config = closing_at(1000);
        let h = Harness::start(config, DEFAULT_BUSY_TIMEOUT);
        for first in (1..=9).step_by(3) {
            h.persist(first..=first + 2, None, None);
        }

        let flushed = h.persister.send(Flush {
            deadline: Duration::from_secs(30),
        });
        assert_eq!(flushed.await.unwrap(), Ok(()));
        assert_eq!(h.last_seq().await, 9);
        assert!(h.backlog.is_empty());
    }

    /// While the store fails, events go live at once but their acks wait:
    /// a 202 means stored. The retry stores them once the store is back,
    /// and answers the acks then.
    #[actix_rt::test]
    async fn a_failing_store_releases_at_once_and_acks_only_after_the_retry() {
        // A short busy timeout makes the locked write fail quickly.
        let h = Harness::start(PersisterConfig::default(), Duration::from_millis(10));
        let (lock, mut acked, mut releases, release) = persist_while_locked(&h).await;
        assert_eq!(seqs(&release.events), [1, 2, 3]);
        assert!(release.acks.is_empty());
        assert_eq!(acked.try_recv(), Err(TryRecvError::Empty));
        assert!(h.backlog.failing().is_some());

        drop(lock);
        // The ack follows the events through the receiver's mailbox, so the
        // 202 still comes after they are live.
        let acks = next(&mut releases).await;
        assert!(acks.events.is_empty());
        assert_eq!(acks.acks.len(), 1);
        assert_eq!(acked.try_recv(), Err(TryRecvError::Empty));
        Release::answer(acks.acks);
        assert_eq!(acked.await, Ok(Ok(())));
        assert_eq!(h.last_seq().await, 3);
        assert_eq!(h.backlog.failing(), None);
    }

    /// While the store fails, events go live in the order they came: those
    /// that waited behind the failed write go with it, before any that come
    /// later (which go at once).
    #[actix_rt::test]
    async fn a_failed_write_releases_what_waited_behind_it_before_anything_newer() {
        // Three events close a batch: the first write starts at once, and
        // the second request waits behind it.
        let config = closing_at(3);
        let h = Harness::start(config, Duration::from_millis(10));
        let lock = h.lock();
        let (recorder, mut releases) = recorder();
        h.persist(1..=3, None, Some(recorder.clone()));
        h.persist(4..=6, None, Some(recorder.clone()));
        let first = next(&mut releases).await;
        h.persist(7..=9, None, Some(recorder));

        assert!(!first.stored);
        let released = released_seqs(&mut releases, seqs(&first.events), 9, false).await;
        assert_eq!(released, (1..=9).collect::<Vec<_>>());
        drop(lock);
    }

    /// Events released because their write failed are not in the store, so
    /// their `Release` must say so (`stored: false`), or the Emitter may
    /// empty the replay buffer of an unwatched execution on the grounds
    /// that the store has them.
    #[actix_rt::test]
    async fn a_batch_whose_write_failed_is_released_as_not_stored() {
        let h = Harness::start(PersisterConfig::default(), Duration::from_millis(10));
        let (_lock, _acked, _releases, release) = persist_while_locked(&h).await;
        assert!(!release.stored);
    }
}
