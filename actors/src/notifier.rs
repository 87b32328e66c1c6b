//! The Notifier actor: sends a signed webhook when a committed event matches
//! a rule, or when an execution runs longer than a rule allows.
//!
//! How a notification travels:
//! 1. The Emitter hands it every batch of this node's committed events
//!    ([`Notify`], fire-and-forget: the Emitter never waits for it, so event
//!    delivery to clients never waits for a webhook).
//! 2. Each event is matched against the rules (`notify_rule.rs`, pure). A
//!    match becomes a delivery keyed `executionId:seq:ruleId` and goes into
//!    the store's outbox (`store/outbox.rs`); the same key twice is one
//!    delivery. From here on it survives a restart.
//! 3. Due deliveries are claimed from the outbox (a lease: a crash during an
//!    attempt makes the delivery due again when the lease ends) and POSTed,
//!    at most `concurrency` at once, each attempt bounded by `timeout`. The
//!    attempts run beside the actor's mailbox, never in it: a receiver that
//!    hangs holds one slot until its timeout, not the Notifier.
//! 4. A failed attempt is retried after an exponential backoff with full
//!    jitter; after `max_attempts` the delivery is a dead letter, listed in
//!    the admin API until someone retries or discards it.
//!
//! What at-least-once covers: from the outbox write on. An event committed
//! in the milliseconds before a crash, whose delivery was not yet in the
//! outbox, is not notified (the outbox write is not in the event's commit).

use crate::backoff;
use crate::event::{format_timestamp, AgentEvent, EventType};
use crate::metrics::Metrics;
use crate::notify_rule::{idempotency_key, Rule, RuleError, RuleSpec};
use crate::protocol::PublishedEvent;
use crate::store::outbox::{Delivery, Notification, Outcome, StoredRule};
use crate::store::{
    ExecutionQuery, ExecutionStatus, ExecutionSummary, Store, StoreError, StoreFuture,
};
use crate::webhook;
use actix::prelude::*;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ messages

/// Committed events of this node, to check against the rules.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify(pub Vec<Arc<PublishedEvent>>);

/// This node's events in cluster mode, as Redis sequenced them: each
/// event's JSON as sent to Redis (without its seq) and its seq. Why not
/// events: the Emitter would have to rebuild every one, and it is the
/// broker's one sequencing actor; here only those a rule wants are rebuilt.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyDrafts(pub Vec<(String, u64)>);

/// Every rule: those of the rules file, then those of the admin API.
#[derive(Message)]
#[rtype(result = "Vec<RuleView>")]
pub struct ListRules;

/// Adds or replaces an admin-API rule (stored, so it survives a restart);
/// answers whether it replaced one.
#[derive(Message)]
#[rtype(result = "Result<bool, NotifyError>")]
pub struct PutRule(pub RuleSpec);

/// Removes an admin-API rule.
#[derive(Message)]
#[rtype(result = "Result<(), NotifyError>")]
pub struct DeleteRule(pub String);

/// The dead letters, oldest first, at most `limit`.
#[derive(Message)]
#[rtype(result = "Result<Vec<Delivery>, NotifyError>")]
pub struct DeadLetters {
    /// Most to return.
    pub limit: usize,
}

/// A dead letter back to pending, with a fresh set of attempts.
#[derive(Message)]
#[rtype(result = "Result<(), NotifyError>")]
pub struct RetryDeadLetter(pub String);

/// A dead letter given up on.
#[derive(Message)]
#[rtype(result = "Result<(), NotifyError>")]
pub struct DiscardDeadLetter(pub String);

// ------------------------------------------------------------------- types

/// How the Notifier delivers; `config/default.toml` says why each default.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Longest one attempt may take, connect to answer.
    pub timeout: Duration,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// Backoff before the second attempt (before jitter); doubles after each failure.
    pub backoff_base: Duration,
    /// Longest backoff (before jitter).
    pub backoff_max: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How often the outbox is checked for due deliveries and running
    /// executions for the running-too-long rules.
    pub poll: Duration,
    /// How long delivered and discarded deliveries stay in the outbox (their
    /// keys keep repeats out meanwhile).
    pub keep: Duration,
    /// Signs every request; `None`: unsigned.
    pub secret: Option<Arc<[u8]>>,
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    /// `notify_rules_file`: read at start, not changeable through the API.
    File,
    /// The admin API: kept in the store.
    Api,
}

/// A rule as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// The rule as written.
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Where it comes from.
    pub source: RuleSource,
}

/// What went wrong with an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// The rule is not valid; the message says why.
    InvalidRule(String),
    /// No such rule or dead letter.
    NotFound(String),
    /// A rule of the rules file, which only the file changes.
    ReadOnly(String),
    /// The store failed.
    Store(StoreError),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::InvalidRule(why) | NotifyError::NotFound(why) => f.write_str(why),
            NotifyError::ReadOnly(id) => write!(
                f,
                "rule `{id}` comes from notify_rules_file; change it there"
            ),
            NotifyError::Store(err) => write!(f, "the store cannot answer: {err}"),
        }
    }
}

impl From<RuleError> for NotifyError {
    fn from(err: RuleError) -> Self {
        NotifyError::InvalidRule(err.0)
    }
}

/// Beyond the attempt's own timeout, how long a claimed delivery stays
/// leased: long enough that the attempt and its record finish first.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Running executions read per page, and pages at most per scan, when
/// looking for executions past a running-too-long limit. Each scan reads
/// only executions that crossed the limit since the last one, so this
/// bounds a scan after a (re)start, when every old running execution is new.
const SCAN_PAGE: usize = 500;
const SCAN_PAGES: usize = 20;

/// How often delivered and discarded deliveries older than `keep` are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Tries to write matched deliveries into the outbox before giving them up
/// (while the store fails), and the first wait between tries (doubling):
/// about three seconds in all, so a short store hiccup loses nothing and a
/// long outage does not pile matches up in memory.
const ENQUEUE_TRIES: u32 = 5;
const ENQUEUE_BACKOFF: Duration = Duration::from_millis(200);
const ENQUEUE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The Notifier actor; see the module documentation.
pub struct Notifier {
    config: NotifierConfig,
    store: Arc<dyn Store>,
    metrics: Metrics,
    client: reqwest::Client,
    file_rules: Vec<Arc<Rule>>,
    api_rules: BTreeMap<String, Arc<Rule>>,
    /// Keys of the attempts running now; never more than `concurrency`.
    in_flight: HashSet<String>,
    /// A claim, count or scan is on its way: not another one meanwhile.
    claiming: bool,
    counting: bool,
    scanning: bool,
    /// Per running-too-long rule: executions that started before this were
    /// already looked at.
    scanned_until: HashMap<String, DateTime<Utc>>,
    last_prune: Instant,
}

impl Notifier {
    /// A Notifier with the rules of the rules file (already checked); the
    /// admin-API rules are read from `store` when it starts.
    pub fn new(
        config: NotifierConfig,
        store: Arc<dyn Store>,
        file_rules: Vec<Rule>,
        metrics: Metrics,
    ) -> Result<Notifier, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            // A webhook that redirects elsewhere is refused, not followed:
            // the signed body must only go where the rule says.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Notifier {
            config,
            store,
            metrics,
            client,
            file_rules: file_rules.into_iter().map(Arc::new).collect(),
            api_rules: BTreeMap::new(),
            in_flight: HashSet::new(),
            claiming: false,
            counting: false,
            scanning: false,
            scanned_until: HashMap::new(),
            last_prune: Instant::now(),
        })
    }

    fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.file_rules.iter().chain(self.api_rules.values())
    }

    fn is_file_rule(&self, id: &str) -> bool {
        self.file_rules.iter().any(|r| r.spec.id == id)
    }

    /// Takes the admin-API rules the store kept; one that no longer reads
    /// (written by another version) is left out and logged, not fatal.
    fn load_rules(&mut self, stored: Vec<StoredRule>) {
        for rule in stored {
            let parsed = serde_json::from_str::<RuleSpec>(&rule.body)
                .map_err(|e| e.to_string())
                .and_then(|spec| Rule::parse(spec).map_err(|e| e.0));
            match parsed {
                Ok(parsed) => {
                    self.api_rules.insert(rule.id, Arc::new(parsed));
                }
                Err(why) => log::error!("stored notification rule `{}` ignored: {why}", rule.id),
            }
        }
        let rules = self.rules().count();
        if rules > 0 {
            log::info!("notifications: {rules} rules");
            if self.config.secret.is_none() {
                log::warn!("notifications: notify_secret is empty, webhooks go unsigned");
            }
        }
    }

    /// Whether any rule may want an event of this type.
    fn wanted(&self, event_type: EventType) -> bool {
        self.rules().any(|r| r.wants(event_type))
    }

    /// The deliveries one sequenced event makes: one per matching rule.
    fn deliveries_for(&self, event: &AgentEvent, deliveries: &mut Vec<Notification>) {
        let event_type = event.event_type();
        if !self.wanted(event_type) {
            return;
        }
        // Only now, for an event some rule may want, is it made JSON.
        let Ok(value) = serde_json::to_value(event) else {
            return;
        };
        let seq = event.seq.unwrap_or(0);
        // The body as the struct serializes it: the field order clients see.
        let body = serde_json::to_string(event).expect("an event always serializes");
        for rule in self.rules().filter(|r| r.matches(event_type, &value)) {
            deliveries.push(Notification {
                key: idempotency_key(&event.execution_id, seq, &rule.spec.id),
                rule_id: rule.spec.id.clone(),
                execution_id: event.execution_id.clone(),
                seq,
                url: rule.spec.url.clone(),
                body: body.clone(),
            });
        }
    }

    /// Writes deliveries into the outbox, retrying a while if the store
    /// fails, then starts the due ones.
    fn enqueue(&mut self, deliveries: Vec<Notification>, tries: u32, ctx: &mut Context<Self>) {
        let write = self.store.enqueue(deliveries.clone(), Utc::now());
        ctx.spawn(write.into_actor(self).map(move |result, notifier, ctx| {
            match result {
                Ok(added) => {
                    notifier.count("enqueued", added);
                    notifier.metrics.notifications_pending.add(added as i64);
                    notifier.claim(ctx);
                }
                Err(err) if tries + 1 < ENQUEUE_TRIES => {
                    let wait = backoff::exponential(ENQUEUE_BACKOFF, ENQUEUE_BACKOFF_MAX, tries + 1);
                    log::warn!("notifications: outbox write failed ({err}); retry in {wait:?}");
                    ctx.run_later(wait, move |notifier, ctx| {
                        notifier.enqueue(deliveries, tries + 1, ctx)
                    });
                }
                Err(err) => {
                    log::error!(
                        "notifications: {} deliveries lost, the outbox write failed {ENQUEUE_TRIES} times: {err}",
                        deliveries.len()
                    );
                    notifier.count("lost", deliveries.len() as u64);
                }
            }
        }));
    }

    /// Claims as many due deliveries as there are free slots, and attempts them.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        let free = self.config.concurrency.saturating_sub(self.in_flight.len());
        if self.claiming || free == 0 {
            return;
        }
        self.claiming = true;
        let now = Utc::now();
        let lease = self.config.timeout + LEASE_MARGIN;
        let lease_until = shifted(now, lease, true);
        let claim = self.store.claim_due(now, lease_until, free);
        ctx.spawn(claim.into_actor(self).map(|result, notifier, ctx| {
            notifier.claiming = false;
            match result {
                // More may be due than there were slots: each finished
                // attempt claims again, and so does the next tick.
                Ok(deliveries) => {
                    for delivery in deliveries {
                        notifier.attempt(delivery, ctx);
                    }
                }
                Err(err) => log::warn!("notifications: cannot claim from the outbox: {err}"),
            }
        }));
    }

    /// Runs one attempt beside the mailbox; its end is recorded in the store.
    fn attempt(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        if !self.in_flight.insert(delivery.notification.key.clone()) {
            // Still running from an earlier lease; due again when this one ends.
            return;
        }
        let post = webhook::post(
            self.client.clone(),
            delivery.notification.clone(),
            self.config.secret.clone(),
            self.config.timeout,
        );
        ctx.spawn(
            post.into_actor(self)
                .map(move |result, notifier, ctx| notifier.finish(delivery, result, ctx)),
        );
    }

    /// Records how an attempt ended: delivered, retry later, or dead letter.
    /// The figures move once the store has it, so `/admin/stats` never shows
    /// a dead letter the dead-letter list does not have yet.
    fn finish(&mut self, delivery: Delivery, result: Result<(), String>, ctx: &mut Context<Self>) {
        let now = Utc::now();
        // (outcome, its label, change of pending, change of dead)
        let (outcome, label, pending, dead) = match result {
            Ok(()) => (Outcome::Delivered, "delivered", -1, 0),
            Err(error) if delivery.attempts >= self.config.max_attempts => {
                log::warn!(
                    "notification {} is a dead letter after {} attempts: {error}",
                    delivery.notification.key,
                    delivery.attempts
                );
                (Outcome::Dead(error), "dead-lettered", -1, 1)
            }
            Err(error) => {
                let wait = backoff::full_jitter(backoff::exponential(
                    self.config.backoff_base,
                    self.config.backoff_max,
                    delivery.attempts,
                ));
                log::info!(
                    "notification {} attempt {} failed ({error}); retry in {wait:?}",
                    delivery.notification.key,
                    delivery.attempts
                );
                let at = shifted(now, wait, true);
                (Outcome::RetryAt(at, error), "retried", 0, 0)
            }
        };
        let key = delivery.notification.key;
        let record = self.store.record_attempt(&key, outcome, now);
        ctx.spawn(record.into_actor(self).map(move |result, notifier, ctx| {
            match result {
                Ok(()) => {
                    notifier.count(label, 1);
                    notifier.metrics.notifications_pending.add(pending);
                    notifier.metrics.notifications_dead.add(dead);
                }
                // Not lost: the lease ends and the delivery is attempted again.
                Err(err) => log::warn!("notification {key}: cannot record the attempt: {err}"),
            }
            notifier.in_flight.remove(&key);
            notifier.claim(ctx);
        }));
    }

    /// Every poll: recount the outbox (and claim if anything is due), look
    /// for executions running too long, and now and then prune.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.recount(ctx);
        self.scan_running(ctx);
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            self.prune(ctx);
        }
    }

    /// Reads the outbox's counts (a read, not a write: an outbox with
    /// nothing due costs the writer nothing) and claims when something is due.
    fn recount(&mut self, ctx: &mut Context<Self>) {
        if self.counting {
            return;
        }
        self.counting = true;
        let counts = self.store.outbox_counts();
        ctx.spawn(counts.into_actor(self).map(|result, notifier, ctx| {
            notifier.counting = false;
            match result {
                Ok(counts) => {
                    notifier
                        .metrics
                        .notifications_pending
                        .set(counts.pending as i64);
                    notifier.metrics.notifications_dead.set(counts.dead as i64);
                    if counts.next_due.is_some_and(|due| due <= Utc::now()) {
                        notifier.claim(ctx);
                    }
                }
                Err(err) => log::warn!("notifications: cannot count the outbox: {err}"),
            }
        }));
    }

    /// Finds executions that passed a running-too-long limit since the last
    /// scan and enqueues one delivery for each (key `executionId:0:ruleId`).
    fn scan_running(&mut self, ctx: &mut Context<Self>) {
        let rules: Vec<(Arc<Rule>, Option<DateTime<Utc>>)> = self
            .rules()
            .filter(|r| r.running_limit().is_some())
            .map(|r| (r.clone(), self.scanned_until.get(&r.spec.id).copied()))
            .collect();
        if self.scanning || rules.is_empty() {
            return;
        }
        self.scanning = true;
        let store = self.store.clone();
        let now = Utc::now();
        let scan = async move {
            let mut deliveries = Vec::new();
            let mut scanned = Vec::new();
            for (rule, since) in rules {
                let limit = rule.running_limit().unwrap_or_default();
                // At the millisecond, as the store keeps times: with a finer
                // cutoff an execution at the boundary's millisecond would be
                // before this scan's bound and the next scan's both.
                let cutoff = shifted(now, limit, false);
                let cutoff =
                    DateTime::from_timestamp_millis(cutoff.timestamp_millis()).unwrap_or(cutoff);
                for execution in overdue(store.as_ref(), cutoff, since).await? {
                    deliveries.push(overdue_delivery(&rule, &execution, now));
                }
                scanned.push((rule.spec.id.clone(), cutoff));
            }
            Ok::<_, StoreError>((deliveries, scanned))
        };
        ctx.spawn(scan.into_actor(self).map(|result, notifier, ctx| {
            notifier.scanning = false;
            match result {
                Ok((deliveries, scanned)) => {
                    notifier.scanned_until.extend(scanned);
                    if !deliveries.is_empty() {
                        notifier.enqueue(deliveries, 0, ctx);
                    }
                }
                Err(err) => log::warn!("notifications: cannot scan running executions: {err}"),
            }
        }));
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let before = shifted(Utc::now(), self.config.keep, false);
        let prune = self.store.prune_outbox(before);
        ctx.spawn(prune.into_actor(self).map(|result, _, _| match result {
            Ok(0) => {}
            Ok(removed) => log::info!("notifications: pruned {removed} finished deliveries"),
            Err(err) => log::warn!("notifications: cannot prune the outbox: {err}"),
        }));
    }

    /// Waits for a change of the dead letter `key` (retry or discard): not
    /// found when it was no dead letter; otherwise one dead letter fewer, then `done`.
    fn change_dead_letter(
        &mut self,
        key: String,
        change: StoreFuture<bool>,
        done: fn(&mut Notifier, &mut Context<Notifier>),
    ) -> ResponseActFuture<Self, Result<(), NotifyError>> {
        Box::pin(change.into_actor(self).map(move |result, notifier, ctx| {
            if !result.map_err(NotifyError::Store)? {
                return Err(NotifyError::NotFound(format!("no dead letter `{key}`")));
            }
            notifier.metrics.notifications_dead.dec();
            done(notifier, ctx);
            Ok(())
        }))
    }

    fn count(&self, outcome: &str, n: u64) {
        self.metrics
            .notifications
            .with_label_values(&[outcome])
            .inc_by(n);
    }
}

/// `at` moved `by` later (or earlier), stopping at the ends of time rather
/// than overflowing: a setting of years must not panic the Notifier.
fn shifted(at: DateTime<Utc>, by: Duration, later: bool) -> DateTime<Utc> {
    let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
    let moved = if later {
        at.checked_add_signed(by)
    } else {
        at.checked_sub_signed(by)
    };
    moved.unwrap_or(if later {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
}

/// Running executions that started before `cutoff` (and, after the first
/// scan, not before `since`): newest first, from the executions list.
async fn overdue(
    store: &dyn Store,
    cutoff: DateTime<Utc>,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<ExecutionSummary>, StoreError> {
    let mut found = Vec::new();
    // "Before (cutoff, "")" in the list order is "started strictly before cutoff".
    let mut before = (cutoff, String::new());
    for _ in 0..SCAN_PAGES {
        let page = store
            .executions(ExecutionQuery {
                conversation_id: None,
                status: Some(ExecutionStatus::Running),
                before: Some(before.clone()),
                limit: SCAN_PAGE,
            })
            .await?;
        let full = page.len() == SCAN_PAGE;
        for execution in page {
            if since.is_some_and(|since| execution.started_at < since) {
                return Ok(found);
            }
            before = (execution.started_at, execution.execution_id.clone());
            found.push(execution);
        }
        if !full {
            return Ok(found);
        }
    }
    log::warn!(
        "notifications: more than {} executions passed a running limit at once; the rest are not notified",
        SCAN_PAGE * SCAN_PAGES
    );
    Ok(found)
}

/// The delivery of a running-too-long rule: no event, so the body describes
/// the execution, and the key's seq is 0.
fn overdue_delivery(rule: &Rule, execution: &ExecutionSummary, now: DateTime<Utc>) -> Notification {
    let body = json!({
        "type": "execution-overdue",
        "executionId": execution.execution_id,
        "conversationId": execution.conversation_id,
        "startedAt": format_timestamp(execution.started_at),
        "runningLongerThanSecs": rule.spec.running_longer_than_secs,
        "eventCount": execution.event_count,
        "lastSeq": execution.last_seq,
        "checkedAt": format_timestamp(now),
    });
    Notification {
        key: idempotency_key(&execution.execution_id, 0, &rule.spec.id),
        rule_id: rule.spec.id.clone(),
        execution_id: execution.execution_id.clone(),
        seq: 0,
        url: rule.spec.url.clone(),
        body: body.to_string(),
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The stored rules first, with the mailbox held: no event is
        // matched against a rule set that lacks them.
        let load = self.store.rules();
        ctx.wait(
            load.into_actor(self)
                .map(|result, notifier, _| match result {
                    Ok(stored) => notifier.load_rules(stored),
                    Err(err) => log::error!("notifications: cannot read the stored rules: {err}"),
                }),
        );
        ctx.run_interval(self.config.poll, |notifier, ctx| notifier.tick(ctx));
    }
}

impl Handler<Notify> for Notifier {
    type Result = ();

    fn handle(&mut self, msg: Notify, ctx: &mut Self::Context) {
        let mut deliveries = Vec::new();
        for item in &msg.0 {
            self.deliveries_for(&item.event, &mut deliveries);
        }
        if !deliveries.is_empty() {
            self.enqueue(deliveries, 0, ctx);
        }
    }
}

impl Handler<NotifyDrafts> for Notifier {
    type Result = ();

    fn handle(&mut self, msg: NotifyDrafts, ctx: &mut Self::Context) {
        let mut deliveries = Vec::new();
        for (body, seq) in msg.0 {
            // The type first: most events are wanted by no rule.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let wanted = value["type"]
                .as_str()
                .and_then(EventType::parse)
                .is_some_and(|t| self.wanted(t));
            if let (true, Ok(mut event)) = (wanted, AgentEvent::from_stored_json(value)) {
                event.seq = Some(seq);
                self.deliveries_for(&event, &mut deliveries);
            }
        }
        if !deliveries.is_empty() {
            self.enqueue(deliveries, 0, ctx);
        }
    }
}

impl Handler<ListRules> for Notifier {
    type Result = MessageResult<ListRules>;

    fn handle(&mut self, _: ListRules, _: &mut Self::Context) -> Self::Result {
        let view = |source: RuleSource| {
            move |rule: &Arc<Rule>| RuleView {
                spec: rule.spec.clone(),
                source,
            }
        };
        let mut views: Vec<RuleView> = self.file_rules.iter().map(view(RuleSource::File)).collect();
        views.extend(self.api_rules.values().map(view(RuleSource::Api)));
        MessageResult(views)
    }
}

impl Handler<PutRule> for Notifier {
    type Result = ResponseActFuture<Self, Result<bool, NotifyError>>;

    fn handle(&mut self, msg: PutRule, _: &mut Self::Context) -> Self::Result {
        let rule = match Rule::parse(msg.0) {
            Ok(rule) => rule,
            Err(err) => return Box::pin(fut::ready(Err(err.into()))),
        };
        let id = rule.spec.id.clone();
        if self.is_file_rule(&id) {
            return Box::pin(fut::ready(Err(NotifyError::ReadOnly(id))));
        }
        let body = serde_json::to_string(&rule.spec).expect("a rule always serializes");
        let write = self.store.put_rule(StoredRule {
            id: id.clone(),
            body,
        });
        Box::pin(write.into_actor(self).map(move |result, notifier, _| {
            result.map_err(NotifyError::Store)?;
            // A changed running rule looks at every running execution again;
            // the keys keep those it already notified from repeating.
            notifier.scanned_until.remove(&id);
            Ok(notifier.api_rules.insert(id, Arc::new(rule)).is_some())
        }))
    }
}

impl Handler<DeleteRule> for Notifier {
    type Result = ResponseActFuture<Self, Result<(), NotifyError>>;

    fn handle(&mut self, msg: DeleteRule, _: &mut Self::Context) -> Self::Result {
        let id = msg.0;
        if self.is_file_rule(&id) {
            return Box::pin(fut::ready(Err(NotifyError::ReadOnly(id))));
        }
        if !self.api_rules.contains_key(&id) {
            let missing = NotifyError::NotFound(format!("no rule `{id}`"));
            return Box::pin(fut::ready(Err(missing)));
        }
        let delete = self.store.delete_rule(&id);
        Box::pin(delete.into_actor(self).map(move |result, notifier, _| {
            result.map_err(NotifyError::Store)?;
            notifier.api_rules.remove(&id);
            notifier.scanned_until.remove(&id);
            Ok(())
        }))
    }
}

impl Handler<DeadLetters> for Notifier {
    type Result = ResponseFuture<Result<Vec<Delivery>, NotifyError>>;

    fn handle(&mut self, msg: DeadLetters, _: &mut Self::Context) -> Self::Result {
        let read = self.store.dead_letters(msg.limit);
        Box::pin(async move { read.await.map_err(NotifyError::Store) })
    }
}

impl Handler<RetryDeadLetter> for Notifier {
    type Result = ResponseActFuture<Self, Result<(), NotifyError>>;

    fn handle(&mut self, msg: RetryDeadLetter, _: &mut Self::Context) -> Self::Result {
        let change = self.store.retry_dead(&msg.0, Utc::now());
        self.change_dead_letter(msg.0, change, |notifier, ctx| {
            notifier.metrics.notifications_pending.inc();
            notifier.claim(ctx);
        })
    }
}

impl Handler<DiscardDeadLetter> for Notifier {
    type Result = ResponseActFuture<Self, Result<(), NotifyError>>;

    fn handle(&mut self, msg: DiscardDeadLetter, _: &mut Self::Context) -> Self::Result {
        let change = self.store.discard_dead(&msg.0, Utc::now());
        self.change_dead_letter(msg.0, change, |_, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify_rule::RuleSpec;

    #[test]
    fn shifting_by_years_stops_at_the_ends_of_time() {
        let now = Utc::now();
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(shifted(now, huge, true), DateTime::<Utc>::MAX_UTC);
        assert_eq!(shifted(now, huge, false), DateTime::<Utc>::MIN_UTC);
        let second = Duration::from_secs(1);
        assert_eq!(shifted(now, second, true) - now, TimeDelta::seconds(1));
        assert_eq!(now - shifted(now, second, false), TimeDelta::seconds(1));
    }

    #[test]
    fn an_overdue_notification_is_keyed_with_seq_0_and_describes_the_execution() {
        let rule = Rule::parse(RuleSpec {
            id: "slow".into(),
            url: "http://127.0.0.1:9/h".into(),
            types: Vec::new(),
            when: Vec::new(),
            running_longer_than_secs: Some(60),
        })
        .unwrap();
        let started_at = Utc::now() - TimeDelta::seconds(90);
        let execution = ExecutionSummary {
            execution_id: "exec-1".into(),
            conversation_id: Some("conv".into()),
            status: ExecutionStatus::Running,
            started_at,
            ended_at: None,
            event_count: 4,
            last_seq: 4,
        };
        let notification = overdue_delivery(&rule, &execution, Utc::now());
        assert_eq!(notification.key, "exec-1:0:slow");
        assert_eq!(notification.seq, 0);
        let body: serde_json::Value = serde_json::from_str(&notification.body).unwrap();
        assert_eq!(body["type"], "execution-overdue");
        assert_eq!(body["executionId"], "exec-1");
        assert_eq!(body["conversationId"], "conv");
        assert_eq!(body["runningLongerThanSecs"], 60);
        assert_eq!(body["lastSeq"], 4);
        assert_eq!(body["startedAt"], format_timestamp(started_at));
    }
}
