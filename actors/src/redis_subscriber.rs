//! The Redis-subscriber actor: reads the cluster's stream and hands every
//! event, once and in seq order, to this node's Emitter, which buffers,
//! publishes to the Registry and stores it exactly as it does a local event.
//!
//! # One delivery path
//! Every node, the origin included, learns of an event only from the stream,
//! so every node's subscribers see the same events in the same order.
//!
//! # Partitions
//! The stream is split by execution into partitions (`cluster_keys.rs`).
//! On one Redis server one reader reads them all with one `XREAD` over every
//! partition's stream. On a Redis Cluster a command may only name keys of
//! one slot, and a blocking read holds its connection, so each partition
//! has a reader of its own, with its own connection, routed to the master
//! that serves the partition (following `MOVED`/`ASK` when it moves). An
//! execution lives in one partition, so its order is that partition's order;
//! partitions are independent and may be handed over in any interleaving.
//!
//! # Exactly once, in order
//! A reader task reads with `XREAD BLOCK` from the last stream ID it handed
//! over, per stream. After a disconnect it reconnects with exponential
//! backoff and reads on from that ID: nothing published meanwhile is
//! skipped. If Redis came back empty (restart without persistence, flush),
//! the stream's IDs start over below ours; the reader notices and reads from
//! the start again. Per execution this actor keeps the last seq it passed
//! on: a seq at or below it is a duplicate and is dropped; a jump is a gap,
//! filled from the store when the store has the missing events (a shared
//! MongoDB), else passed on and counted. Every one of these is counted in
//! `/admin/stats`.
//!
//! # Who stores
//! By default every node stores what it reads, in its own store. With
//! store-once (a shared MongoDB) the node only delivers, and the
//! `stream_store.rs` writers it starts here store each event once per
//! cluster.
//!
//! # What nobody here watches
//! With store-once a node needs an event only if a subscriber on it may
//! receive it: the shared store keeps it for anyone who comes later. So an
//! entry of an execution nobody on this node watches ([`Watched::wants`])
//! is not parsed: its execution, seq and body go on to the Emitter as they
//! are, which passes over them unless a subscriber came meanwhile (the
//! Emitter decides in its own mailbox order, which is what keeps the replay
//! seam exact; `emitter/cluster.rs` says how). Per execution and batch one
//! decision, so an execution's events are never part parsed, part not.

use crate::cluster_keys::ClusterKeys;
pub use crate::cluster_stream::RawEntry;
use crate::cluster_stream::{connect_reader, reader_lanes, BLOCK, CONNECT_TIMEOUT, READ_COUNT};
use crate::event::AgentEvent;
use crate::metrics::Metrics;
use crate::protocol::PublishedEvent;
use crate::redis_link::{RedisConnection, RedisTarget};
use crate::registry::Watched;
use crate::store::{EventQuery, Store};
use crate::stream_store::{release_leases, StreamStore};
use actix::prelude::*;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError, Script};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events sequenced by the cluster (read from its stream by the
/// Redis-subscriber), in seq order per execution: buffer, publish, and
/// store as the [`Storing`] says. The entries not parsed (store-once: their
/// executions had no subscriber here when they were read) are of other
/// executions than the events, in seq order per execution too.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sequenced(pub Vec<Arc<PublishedEvent>>, pub Storing, pub Vec<RawEntry>);

/// Who stores the events of a [`Sequenced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storing {
    /// This node, in its own store, as every node does (per-node replicas).
    Here,
    /// The cluster's store-once writers (`stream_store.rs`), into the store
    /// every node shares: this node only delivers them.
    Once,
}

/// The state of this node's link to Redis, for `/health`: failing while
/// any of its readers fails (on a Redis Cluster one master may be down
/// while the others answer).
#[derive(Debug, Default)]
pub struct RedisHealth {
    failing: Mutex<BTreeMap<usize, String>>,
}

impl RedisHealth {
    /// `None` while every reader is connected; a reader's last error while not.
    pub fn failing(&self) -> Option<String> {
        let failing = self.failing.lock().expect("redis health lock");
        failing.values().next().cloned()
    }

    fn set(&self, reader: usize, error: Option<String>) {
        let mut failing = self.failing.lock().expect("redis health lock");
        match error {
            Some(error) => failing.insert(reader, error),
            None => failing.remove(&reader),
        };
    }
}

/// How the subscriber reads and announces.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// This node's name in the cluster.
    pub node_id: String,
    /// The address clients reach this node at, for the cluster view.
    pub advertised: String,
    /// Where the stream's partitions and the node announcements are.
    pub keys: ClusterKeys,
    /// With a store every node shares: store each event once per cluster
    /// (`stream_store.rs`), a silent node's partitions passing on after this
    /// long. `None`: every node stores every event in its own store.
    pub store_once: Option<Duration>,
    /// Store-once: who watches what here; entries of other executions are
    /// handed on unparsed. `None`: every entry is parsed.
    pub watched: Option<Arc<Watched>>,
}

/// Entries read from the stream, in stream order; answered once handed on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamEntries(pub Vec<StreamId>);

/// The nodes of the cluster as they last announced themselves.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub struct ClusterView;

/// The Redis-subscriber actor; see the module documentation.
pub struct RedisSubscriber {
    target: RedisTarget,
    config: SubscriberConfig,
    emitter: Recipient<Sequenced>,
    store: Option<Arc<dyn Store>>,
    metrics: Metrics,
    health: Arc<RedisHealth>,
    last_seq: HashMap<String, (u64, Instant)>,
    started_at: Instant,
    /// The store-once writers' tasks, stopped by [`ReleaseLeases`].
    writers: Vec<SpawnHandle>,
}

/// A graceful stop: the store-once writers stop and give up their leases at
/// once (`stream_store::release_leases`), so that another node stores their
/// partitions without waiting for the leases to run out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseLeases;

/// First reconnect after this; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Reconnects never wait longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the node announces itself, and how long an announcement lives.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
const ANNOUNCE_TTL_SECS: u64 = 15;
/// Executions idle this long are forgotten (the store seeds them again).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl RedisSubscriber {
    /// A subscriber feeding `emitter`, filling gaps from `store`.
    pub fn new(
        target: RedisTarget,
        config: SubscriberConfig,
        emitter: Recipient<Sequenced>,
        store: Option<Arc<dyn Store>>,
        metrics: Metrics,
        health: Arc<RedisHealth>,
    ) -> Self {
        RedisSubscriber {
            target,
            config,
            emitter,
            store,
            metrics,
            health,
            last_seq: HashMap::new(),
            started_at: Instant::now(),
            writers: Vec::new(),
        }
    }

    fn count(&self, what: &str, n: u64) {
        self.metrics.cluster.with_label_values(&[what]).inc_by(n);
    }

    /// The entries' fields; an unreadable entry is logged, counted and skipped.
    fn read_entries(&self, entries: Vec<StreamId>) -> Vec<RawEntry> {
        entries
            .into_iter()
            .filter_map(|mut entry| match RawEntry::take(&mut entry) {
                Ok(raw) => Some(raw),
                Err(why) => {
                    self.unreadable(&entry.id, &why);
                    None
                }
            })
            .collect()
    }

    fn unreadable(&self, id: &str, why: &str) {
        log::error!("stream entry {id} unreadable: {why}");
        self.count("unreadable-entry", 1);
    }

    /// Whether an event of the execution may reach a subscriber here
    /// (always, but with store-once).
    fn wanted(&self, execution_id: &str) -> bool {
        self.config
            .watched
            .as_ref()
            .is_none_or(|w| w.wants(execution_id))
    }

    /// The batch to hand on: the fresh entries, parsed if their execution
    /// is wanted here (with the events filled into their gaps), else as
    /// they are. One decision per execution for the whole batch.
    fn hand_on(
        &self,
        fresh: Vec<RawEntry>,
        gaps: Vec<Gap>,
        filled: Vec<Option<Vec<AgentEvent>>>,
    ) -> (Vec<Arc<PublishedEvent>>, Vec<RawEntry>) {
        let mut batch = Vec::with_capacity(fresh.len());
        let mut unparsed = Vec::new();
        let mut wanted: HashMap<String, bool> = HashMap::new();
        let mut gaps = gaps.into_iter().zip(filled).peekable();
        for (position, entry) in fresh.into_iter().enumerate() {
            let wants = match wanted.get(&entry.execution_id) {
                Some(wants) => *wants,
                None => {
                    let wants = self.wanted(&entry.execution_id);
                    wanted.insert(entry.execution_id.clone(), wants);
                    wants
                }
            };
            while let Some((_, filled)) = gaps.next_if(|(gap, _)| gap.position == position) {
                match filled {
                    // Nobody here needs them: the store has them (it filled them).
                    Some(_) if !wants => {}
                    Some(events) => {
                        self.count("gap-filled", 1);
                        batch.extend(events.into_iter().map(PublishedEvent::new));
                    }
                    None => self.count("gap-unfilled", 1),
                }
            }
            if !wants {
                unparsed.push(entry);
                continue;
            }
            match entry.parse() {
                Ok(event) => batch.push(PublishedEvent::new(event)),
                Err(why) => self.unreadable(&format!("{}:{}", entry.execution_id, entry.seq), &why),
            }
        }
        (batch, unparsed)
    }

    /// Where to start the executions this actor does not track yet: after
    /// the highest seq in this node's store, which holds what it handed on.
    ///
    /// Not so with store-once: the shared store also holds what other nodes
    /// stored before this node read it, and seeding from it would drop those
    /// as duplicates. There live delivery starts at the first event this node
    /// reads of an execution (the reader starts at the streams' end, and a
    /// subscriber gets anything older from the store).
    fn seeds(&self, entries: &[RawEntry]) -> impl std::future::Future<Output = Vec<(String, u64)>> {
        let mut unknown: Vec<(String, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for entry in entries {
            let id = &entry.execution_id;
            if !self.last_seq.contains_key(id) && seen.insert(id.as_str()) {
                unknown.push((id.clone(), entry.seq.saturating_sub(1)));
            }
        }
        let store = self.store.clone();
        let store_once = self.config.store_once.is_some();
        async move {
            let mut seeds = Vec::with_capacity(unknown.len());
            for (execution_id, before_first) in unknown {
                let last = match &store {
                    _ if store_once => before_first,
                    Some(store) => store.last_seq(&execution_id).await.unwrap_or(0),
                    None => 0,
                };
                seeds.push((execution_id, last));
            }
            seeds
        }
    }

    /// Drops duplicates, finds gaps; returns the events to pass on and the gaps to fill.
    fn order(&mut self, entries: Vec<RawEntry>) -> (Vec<RawEntry>, Vec<Gap>) {
        let now = Instant::now();
        let mut fresh = Vec::with_capacity(entries.len());
        let mut gaps = Vec::new();
        for event in entries {
            let seq = event.seq;
            // A key is copied only for an execution not tracked yet.
            if !self.last_seq.contains_key(&event.execution_id) {
                self.last_seq.insert(event.execution_id.clone(), (0, now));
            }
            let entry = self
                .last_seq
                .get_mut(&event.execution_id)
                .expect("tracked above");
            if seq <= entry.0 {
                self.metrics
                    .cluster
                    .with_label_values(&["duplicate-dropped"])
                    .inc();
                continue;
            }
            if seq > entry.0 + 1 {
                gaps.push(Gap {
                    execution_id: event.execution_id.clone(),
                    after: entry.0,
                    before: seq,
                    position: fresh.len(),
                });
            }
            *entry = (seq, now);
            fresh.push(event);
        }
        (fresh, gaps)
    }

    fn forget_idle(&mut self) {
        self.last_seq
            .retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
    }

    fn announce(&self) -> impl std::future::Future<Output = ()> {
        let target = self.target.clone();
        let key = self.config.keys.node(&self.config.node_id);
        let ids = self.config.keys.node_ids();
        let node_id = self.config.node_id.clone();
        let body = json!({
            "nodeId": self.config.node_id,
            "address": self.config.advertised,
            "connections": self.metrics.connections.get(),
            "subscriptions": self.metrics.subscriptions.get(),
            "eventsIn": self.metrics.events_in.get(),
            "eventsOut": self.metrics.deliveries.get(),
            "uptimeSecs": self.started_at.elapsed().as_secs(),
        })
        .to_string();
        async move {
            let set = async {
                let mut connection = target.connect(CONNECT_TIMEOUT, CONNECT_TIMEOUT).await?;
                // Both keys share the hash tag, so one pipeline serves a Redis Cluster too.
                // The set outlives the nodes' announcements only a little,
                // so a cluster whose nodes all stopped leaves nothing behind.
                redis::pipe()
                    .set_ex(key, body, ANNOUNCE_TTL_SECS)
                    .ignore()
                    .sadd(&ids, node_id)
                    .ignore()
                    .expire(&ids, 3 * ANNOUNCE_TTL_SECS as i64)
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            };
            if let Err(err) = set.await {
                log::debug!("cannot announce this node: {err}");
            }
        }
    }
}

/// Events missing between two seqs of an execution.
struct Gap {
    execution_id: String,
    after: u64,
    before: u64,
    /// Where in the batch the filled events go.
    position: usize,
}

/// Reads the missing events from the store; `None` unless it has all of them.
async fn fill(store: Option<Arc<dyn Store>>, gap: &Gap) -> Option<Vec<AgentEvent>> {
    let store = store?;
    let wanted = (gap.before - gap.after - 1) as usize;
    let mut query = EventQuery::after(gap.execution_id.clone(), gap.after, wanted);
    query.before_seq = Some(gap.before);
    let events = store.events(query).await.ok()?;
    (events.len() == wanted).then_some(events)
}

impl Actor for RedisSubscriber {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let lanes = reader_lanes(&self.target, &self.config.keys);
        if let (Some(claim_idle), Some(store)) = (self.config.store_once, &self.store) {
            for (index, streams) in lanes.iter().enumerate() {
                let partitions = self.config.keys.partitions().iter();
                let writer = StreamStore {
                    target: self.target.clone(),
                    partitions: partitions
                        .filter(|p| streams.contains(&p.stream))
                        .cloned()
                        .collect(),
                    store: store.clone(),
                    consumer: self.config.node_id.clone(),
                    claim_idle,
                    metrics: self.metrics.clone(),
                };
                // Health slots after the readers'.
                let (health, slot) = (self.health.clone(), lanes.len() + index);
                let run = writer.run(move |error| health.set(slot, error));
                self.writers.push(ctx.spawn(run.into_actor(self)));
            }
        }
        for (index, streams) in lanes.into_iter().enumerate() {
            let reader = read_stream(
                Reader {
                    index,
                    target: self.target.clone(),
                    streams,
                    from_end: self.config.store_once.is_some(),
                    keys: self.config.keys.clone(),
                },
                ctx.address(),
                self.metrics.clone(),
                self.health.clone(),
            );
            ctx.spawn(reader.into_actor(self));
        }
        ctx.run_interval(ANNOUNCE_EVERY, |subscriber, ctx| {
            subscriber.forget_idle();
            ctx.spawn(subscriber.announce().into_actor(subscriber));
        });
        ctx.spawn(self.announce().into_actor(self));
    }
}

impl Handler<StreamEntries> for RedisSubscriber {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StreamEntries, _: &mut Self::Context) -> Self::Result {
        let events = self.read_entries(msg.0);
        let seeds = self.seeds(&events);
        Box::pin(
            seeds
                .into_actor(self)
                .then(move |seeds, subscriber, _| {
                    let now = Instant::now();
                    for (execution_id, last) in seeds {
                        subscriber
                            .last_seq
                            .entry(execution_id)
                            .or_insert((last, now));
                    }
                    let (fresh, gaps) = subscriber.order(events);
                    let store = subscriber.store.clone();
                    async move {
                        let mut filled = Vec::new();
                        for gap in &gaps {
                            filled.push(fill(store.clone(), gap).await);
                        }
                        (fresh, gaps, filled)
                    }
                    .into_actor(subscriber)
                })
                .map(|(fresh, gaps, filled), subscriber, _| {
                    let (batch, unparsed) = subscriber.hand_on(fresh, gaps, filled);
                    if !batch.is_empty() || !unparsed.is_empty() {
                        let storing = match subscriber.config.store_once {
                            Some(_) => Storing::Once,
                            None => Storing::Here,
                        };
                        subscriber
                            .emitter
                            .do_send(Sequenced(batch, storing, unparsed));
                    }
                }),
        )
    }
}

impl Handler<ClusterView> for RedisSubscriber {
    type Result = ResponseFuture<Vec<Value>>;

    fn handle(&mut self, _: ClusterView, _: &mut Self::Context) -> Self::Result {
        let target = self.target.clone();
        let keys = self.config.keys.clone();
        Box::pin(async move { read_nodes(target, keys).await.unwrap_or_default() })
    }
}

/// Removes from the set (`KEYS[1]`) each ID (`ARGV[i]`) whose announcement
/// (`KEYS[i + 1]`) is still missing: checked again here, in one step, since
/// a node may have announced itself again since it was read.
const FORGET_GONE_NODES: &str = r"
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SREM', KEYS[1], id)
  end
end
";

/// The announcements of the nodes in the set of node IDs. A node whose
/// announcement has run out (it stopped announcing: it is gone) leaves the
/// set here; a node that comes back adds itself again when it announces.
async fn read_nodes(target: RedisTarget, keys: ClusterKeys) -> Result<Vec<Value>, RedisError> {
    let mut connection = target.connect(CONNECT_TIMEOUT, CONNECT_TIMEOUT).await?;
    let ids: Vec<String> = connection.smembers(keys.node_ids()).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let announcements: Vec<String> = ids.iter().map(|id| keys.node(id)).collect();
    // One round trip: the keys share the hash tag, so they are on one master.
    let bodies: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&announcements)
        .query_async(&mut connection)
        .await?;
    let (live, gone): (Vec<_>, Vec<_>) = ids
        .iter()
        .zip(&announcements)
        .zip(bodies)
        .partition(|(_, body)| body.is_some());
    if !gone.is_empty() {
        let script = Script::new(FORGET_GONE_NODES);
        let mut forget = script.prepare_invoke();
        forget.key(keys.node_ids());
        for ((id, announcement), _) in gone {
            forget.key(announcement).arg(id);
        }
        forget.invoke_async::<()>(&mut connection).await?;
    }
    Ok(live
        .into_iter()
        .filter_map(|(_, body)| serde_json::from_str(&body?).ok())
        .collect())
}

/// A stream ID as numbers, so IDs compare correctly (`"10-0" > "9-0"`).
fn id_parts(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// One reader task's share of the stream.
struct Reader {
    /// Its number, for `/health`.
    index: usize,
    target: RedisTarget,
    /// The partitions' streams it reads.
    streams: Vec<String>,
    /// Start at the streams' end rather than their start (store-once: what
    /// came before is in the shared store, or will be, by the group).
    from_end: bool,
    /// The cluster's keys, to check its partition count.
    keys: ClusterKeys,
}

/// The reader task: connects, checks the streams did not start over, reads
/// on from the last ID handed over, and reconnects with backoff after a failure.
async fn read_stream(
    reader: Reader,
    subscriber: Addr<RedisSubscriber>,
    metrics: Metrics,
    health: Arc<RedisHealth>,
) {
    // "": not positioned yet (see `position`).
    let start = if reader.from_end { "" } else { "0-0" };
    let mut last_ids = vec![start.to_owned(); reader.streams.len()];
    let mut failures: u32 = 0;
    loop {
        let connected = async {
            let mut connection = connect_reader(&reader.target).await?;
            // A node partitioned unlike the cluster must say so in /health.
            reader.keys.check_partitions(&mut connection).await?;
            Ok::<_, RedisError>(connection)
        };
        let error = match connected.await {
            Ok(mut connection) => {
                if failures > 0 {
                    log::info!("Redis is back; reading the stream on from {last_ids:?}");
                    metrics.cluster.with_label_values(&["reconnect"]).inc();
                }
                failures = 0;
                health.set(reader.index, None);
                read_until_error(
                    &mut connection,
                    &reader.streams,
                    &mut last_ids,
                    &subscriber,
                    &metrics,
                )
                .await
            }
            Err(err) => err,
        };
        if !subscriber.connected() {
            return;
        }
        failures += 1;
        let backoff = crate::backoff::exponential(FIRST_BACKOFF, MAX_BACKOFF, failures);
        log::warn!("Redis stream read failed ({error}); retry {failures} in {backoff:?}");
        health.set(reader.index, Some(error.to_string()));
        tokio::time::sleep(backoff).await;
    }
}

async fn read_until_error(
    connection: &mut RedisConnection,
    streams: &[String],
    last_ids: &mut [String],
    subscriber: &Addr<RedisSubscriber>,
    metrics: &Metrics,
) -> RedisError {
    for (stream, last_id) in streams.iter().zip(last_ids.iter_mut()) {
        if let Err(err) = position(connection, stream, last_id, metrics).await {
            return err;
        }
    }
    let options = StreamReadOptions::default()
        .block(BLOCK.as_millis() as usize)
        .count(READ_COUNT);
    loop {
        let reply: Option<StreamReadReply> =
            match connection.xread_options(streams, last_ids, &options).await {
                Ok(reply) => reply,
                Err(err) => return err,
            };
        let mut newest = Vec::new();
        let mut entries: Vec<StreamId> = Vec::new();
        for key in reply.into_iter().flat_map(|r| r.keys) {
            let Some(index) = streams.iter().position(|s| *s == key.key) else {
                continue;
            };
            if let Some(last) = key.ids.last() {
                newest.push((index, last.id.clone()));
            }
            entries.extend(key.ids);
        }
        if entries.is_empty() {
            continue;
        }
        if subscriber.send(StreamEntries(entries)).await.is_err() {
            return RedisError::from((redis::ErrorKind::IoError, "the subscriber stopped"));
        }
        for (index, id) in newest {
            last_ids[index] = id;
        }
    }
}

/// Where to read `stream` on from. Not positioned yet (`""`): after its
/// newest entry. After Redis lost its data the stream's IDs start over,
/// below the last one this node read: from the start again (seq dedup drops
/// what was seen).
async fn position(
    connection: &mut RedisConnection,
    stream: &str,
    last_id: &mut String,
    metrics: &Metrics,
) -> Result<(), RedisError> {
    let newest: redis::streams::StreamRangeReply =
        connection.xrevrange_count(stream, "+", "-", 1).await?;
    let newest = newest.ids;
    if last_id.is_empty() {
        *last_id = newest
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        return Ok(());
    }
    let newest_id = newest.first().map_or((0, 0), |e| id_parts(&e.id));
    if newest_id < id_parts(last_id) {
        log::warn!(
            "the Redis stream {stream} starts over below {last_id}: reading it from the start"
        );
        metrics.cluster.with_label_values(&["stream-reset"]).inc();
        *last_id = "0-0".to_owned();
    }
    Ok(())
}

impl Handler<ReleaseLeases> for RedisSubscriber {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: ReleaseLeases, ctx: &mut Self::Context) -> Self::Result {
        for writer in self.writers.drain(..) {
            ctx.cancel_future(writer);
        }
        if self.config.store_once.is_none() {
            return Box::pin(async {});
        }
        let target = self.target.clone();
        let partitions = self.config.keys.partitions().to_vec();
        let consumer = self.config.node_id.clone();
        Box::pin(async move {
            match release_leases(&target, &partitions, &consumer).await {
                Ok(released) => log::info!("gave up {released} store leases"),
                Err(err) => log::warn!(
                    "cannot give up the store leases ({err}); they pass to another node once they run out"
                ),
            }
        })
    }
}
