//! The Registry actor: who is subscribed to what, and the fan-out of every
//! published event to the sessions that want it.
//!
//! It knows subscriptions by execution and by conversation, each with its
//! [`Filter`]. A published event is already serialized ([`PublishedEvent`]),
//! so fan-out clones a reference, never the bytes. A session subscribed to an
//! execution *and* its conversation gets each event once.
//!
//! The Registry forgets an execution or conversation as soon as its last
//! subscriber leaves: its memory follows the subscriptions, not the number of
//! executions that ever passed through.
//!
//! Sessions register with [`Subscribe`] and learn that the registration is in
//! force from [`Registered`], sent back through the same mailbox as the events.
//! That ordering is what makes the replay seam exact: every event published
//! after `Registered` reaches the session live, every event before it is in
//! the history the session reads next.

use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::protocol::{PublishedEvent, Target};
use actix::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::sync::Arc;

/// The executions that have at least one subscriber of their own (not only
/// through a conversation), and how many conversations have subscribers,
/// kept by the Registry and read by the Emitter (and, with store-once, the
/// Redis-subscriber).
///
/// Why: with a store, an execution nobody watches needs no replay buffer:
/// every event it releases is committed, so a subscriber that comes later
/// replays from the store. Its memory then stays flat however many
/// executions run unwatched (PERFORMANCE.md, memory per execution). With
/// store-once a cluster node goes further and neither parses nor publishes
/// the stream's events that nobody on it could receive ([`Watched::wants`]).
///
/// The Registry changes it before it sends `Registered`, under one lock, so
/// an actor that reads it after a subscription took effect sees it.
#[derive(Debug, Default)]
pub struct Watched(std::sync::Mutex<WatchedSet>);

#[derive(Debug, Default)]
struct WatchedSet {
    executions: std::collections::HashSet<Arc<str>>,
    /// Conversations with at least one subscriber.
    conversations: usize,
}

impl Watched {
    /// Whether the execution has a subscriber of its own.
    pub fn contains(&self, execution_id: &str) -> bool {
        let set = self.0.lock().expect("watched lock");
        set.executions.contains(execution_id)
    }

    /// Whether a subscriber here could receive an event of the execution:
    /// its own subscriber, or any conversation's (the conversation of an
    /// event not parsed is not known, so any conversation subscription
    /// counts).
    pub fn wants(&self, execution_id: &str) -> bool {
        let set = self.0.lock().expect("watched lock");
        set.conversations > 0 || set.executions.contains(execution_id)
    }

    fn insert(&self, execution_id: Arc<str>) {
        let mut set = self.0.lock().expect("watched lock");
        set.executions.insert(execution_id);
    }

    fn remove(&self, execution_id: &str) {
        let mut set = self.0.lock().expect("watched lock");
        set.executions.remove(execution_id);
    }

    fn set_conversations(&self, count: usize) {
        self.0.lock().expect("watched lock").conversations = count;
    }
}

/// Events for one subscriber, in seq order per execution: some events of a
/// published batch that every subscriber it goes to shares.
///
/// The Registry sends one `Deliver` per session per batch. Sharing the batch
/// and naming the session's events by index costs no allocation per session
/// for batches of up to 64 events; a `Vec` of events per session cost one,
/// plus a reference count per event (the fan-out profile in PERFORMANCE.md).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    batch: Arc<[Arc<PublishedEvent>]>,
    picks: Picks,
}

/// Which events of a batch a [`Deliver`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Picks {
    /// Bit `i` set: event `i` (batches of up to 64 events).
    Mask(u64),
    /// The indices, increasing (larger batches).
    List(Vec<u32>),
}

impl Picks {
    /// Nothing picked yet, for a batch of `len` events.
    pub(crate) fn for_batch(len: usize) -> Picks {
        if len <= 64 {
            Picks::Mask(0)
        } else {
            Picks::List(Vec::new())
        }
    }

    /// Picks event `index`; picking the same event again changes nothing,
    /// as long as indices come in increasing order.
    pub(crate) fn add(&mut self, index: usize) {
        match self {
            Picks::Mask(mask) => *mask |= 1 << index,
            Picks::List(list) => {
                if list.last() != Some(&(index as u32)) {
                    list.push(index as u32);
                }
            }
        }
    }

    /// How many events are picked.
    pub(crate) fn len(&self) -> usize {
        match self {
            Picks::Mask(mask) => mask.count_ones() as usize,
            Picks::List(list) => list.len(),
        }
    }

    /// The picked indices, increasing.
    pub(crate) fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let mut mask = match self {
            Picks::Mask(mask) => *mask,
            Picks::List(_) => 0,
        };
        let from_mask = std::iter::from_fn(move || {
            (mask != 0).then(|| {
                let index = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                index
            })
        });
        let from_list = match self {
            Picks::List(list) => list.as_slice(),
            Picks::Mask(_) => &[],
        };
        from_mask.chain(from_list.iter().map(|&i| i as usize))
    }
}

impl Deliver {
    /// All of `events`, for one subscriber.
    pub fn new(events: Vec<Arc<PublishedEvent>>) -> Self {
        let mut picks = Picks::for_batch(events.len());
        (0..events.len()).for_each(|i| picks.add(i));
        Deliver {
            batch: events.into(),
            picks,
        }
    }

    /// The `picks` of a shared `batch`.
    pub(crate) fn picked(batch: Arc<[Arc<PublishedEvent>]>, picks: Picks) -> Self {
        Deliver { batch, picks }
    }

    /// The events, in order.
    pub fn events(&self) -> impl Iterator<Item = &Arc<PublishedEvent>> + '_ {
        self.picks.indices().map(|i| &self.batch[i])
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.picks.len()
    }

    /// Whether it carries no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The Registry now routes this target's events here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Registered(pub Target);

/// The broker is stopping: flush what is queued, then close with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Cluster fallback: seqs of an execution shown here from `from_seq` on were
/// taken by another node's events (`fallback.rs`). Subscribers are told to
/// drop what they hold from there; the events that follow are the truth.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Resync {
    /// The execution.
    pub execution_id: Arc<str>,
    /// Its conversation, when known (conversation subscribers are told too).
    pub conversation_id: Option<String>,
    /// The first seq in dispute.
    pub from_seq: u64,
}

/// A session's number, unique in this process.
pub type SessionId = u64;

/// How the Registry reaches a subscriber: any actor that takes these four
/// messages (a WebSocket Session, a Server-Sent Events stream) can subscribe.
#[derive(Clone)]
pub struct Subscriber {
    /// Events for it.
    pub deliver: Recipient<Deliver>,
    /// Its registrations taking effect.
    pub registered: Recipient<Registered>,
    /// The broker stopping.
    pub shutdown: Recipient<Shutdown>,
    /// A cluster re-sync of an execution it may watch.
    pub resync: Recipient<Resync>,
}

impl Subscriber {
    /// The four recipients of one actor.
    pub fn of<A>(addr: &Addr<A>) -> Self
    where
        A: Actor + Handler<Deliver> + Handler<Registered> + Handler<Shutdown> + Handler<Resync>,
        A::Context: actix::dev::ToEnvelope<A, Deliver>
            + actix::dev::ToEnvelope<A, Registered>
            + actix::dev::ToEnvelope<A, Shutdown>
            + actix::dev::ToEnvelope<A, Resync>,
    {
        Subscriber {
            deliver: addr.clone().recipient(),
            registered: addr.clone().recipient(),
            shutdown: addr.clone().recipient(),
            resync: addr.clone().recipient(),
        }
    }
}

/// A new connection; the Registry can now reach it for shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session.
    pub session: SessionId,
    /// How to reach it.
    pub subscriber: Subscriber,
}

/// A connection is gone: forget it and all its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The session.
    pub session: SessionId,
}

/// Start routing a target's events to a session; answered with [`Registered`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The session.
    pub session: SessionId,
    /// What it wants.
    pub target: Target,
    /// Which of those events.
    pub filter: Filter,
}

/// Stop routing a target's events to a session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The session.
    pub session: SessionId,
    /// What it no longer wants.
    pub target: Target,
}

/// Events to fan out, in seq order per execution.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Vec<Arc<PublishedEvent>>);

/// Tell every session to close once it has sent what it holds. Answered once
/// every event published before it has been handed to the sessions.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll;

struct Subscription {
    session: SessionId,
    filter: Filter,
}

/// The events of one batch for one session.
type Routed = (SessionId, Picks);

/// The Registry actor; see the module documentation.
pub struct Registry {
    metrics: Metrics,
    /// Keyed by the numbers this process hands out, so FxHash is safe here
    /// and much cheaper than SipHash: it is looked up once per session per
    /// batch.
    sessions: FxHashMap<SessionId, Subscriber>,
    by_execution: HashMap<Arc<str>, Vec<Subscription>>,
    by_conversation: HashMap<Arc<str>, Vec<Subscription>>,
    /// The executions with a subscriber of their own, shared with the Emitter.
    watched: Arc<Watched>,
    /// Scratch space of [`Registry::route`], kept between batches so that
    /// routing does not grow (and rehash) a new map for every batch: where
    /// each session's events are in the routed list.
    slots: FxHashMap<SessionId, usize>,
}

impl Registry {
    /// An empty Registry.
    pub fn new(metrics: Metrics) -> Self {
        Registry {
            metrics,
            sessions: FxHashMap::default(),
            by_execution: HashMap::new(),
            by_conversation: HashMap::new(),
            watched: Arc::default(),
            slots: FxHashMap::default(),
        }
    }

    /// The set of watched executions this Registry keeps up to date.
    pub fn watched(&self) -> Arc<Watched> {
        self.watched.clone()
    }

    fn index_of(
        &mut self,
        target: &Target,
    ) -> (&mut HashMap<Arc<str>, Vec<Subscription>>, Arc<str>) {
        match target {
            Target::Execution(id) => (&mut self.by_execution, id.clone()),
            Target::Conversation(id) => (&mut self.by_conversation, id.clone()),
        }
    }

    fn remove(&mut self, session: SessionId, target: &Target) {
        let (index, key) = self.index_of(target);
        if let Some(subscribers) = index.get_mut(&key) {
            subscribers.retain(|s| s.session != session);
            if subscribers.is_empty() {
                index.remove(&key);
                if matches!(target, Target::Execution(_)) {
                    self.watched.remove(&key);
                }
            }
        }
        self.watched.set_conversations(self.by_conversation.len());
    }

    /// Which sessions get which events of a batch, each event once per
    /// session, in the order the sessions first matched.
    fn route(&mut self, events: &[Arc<PublishedEvent>]) -> Vec<Routed> {
        let mut outgoing: Vec<Routed> = Vec::new();
        // `clear` keeps the capacity: after the first batches the map has
        // room for as many sessions as a batch reaches, and stops growing.
        let slots = &mut self.slots;
        slots.clear();
        for (index, event) in events.iter().enumerate() {
            let by_execution = self.by_execution.get(event.execution_id());
            let by_conversation = event
                .event
                .conversation_id
                .as_deref()
                .and_then(|c| self.by_conversation.get(c));
            let subscribers = by_execution.into_iter().chain(by_conversation).flatten();
            for subscriber in subscribers.filter(|s| s.filter.matches(&event.event)) {
                let slot = *slots.entry(subscriber.session).or_insert_with(|| {
                    outgoing.push((subscriber.session, Picks::for_batch(events.len())));
                    outgoing.len() - 1
                });
                // Matched by both its execution and its conversation: `add`
                // takes it once.
                outgoing[slot].1.add(index);
            }
        }
        outgoing
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Connect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.sessions.insert(msg.session, msg.subscriber);
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        self.sessions.remove(&msg.session);
        let watched = &self.watched;
        self.by_execution.retain(|execution, subscribers| {
            subscribers.retain(|s| s.session != msg.session);
            let kept = !subscribers.is_empty();
            if !kept {
                watched.remove(execution);
            }
            kept
        });
        self.by_conversation.retain(|_, subscribers| {
            subscribers.retain(|s| s.session != msg.session);
            !subscribers.is_empty()
        });
        self.watched.set_conversations(self.by_conversation.len());
    }
}

impl Handler<Subscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        let Some(registered) = self
            .sessions
            .get(&msg.session)
            .map(|s| s.registered.clone())
        else {
            return; // the session is already gone
        };
        if let Target::Execution(execution) = &msg.target {
            // Before `Registered`: from here on the Emitter buffers its events.
            self.watched.insert(execution.clone());
        }
        let (index, key) = self.index_of(&msg.target);
        index.entry(key).or_default().push(Subscription {
            session: msg.session,
            filter: msg.filter,
        });
        // Before `Registered` too: a store-once node passes over nothing a
        // conversation subscriber could get from now on.
        self.watched.set_conversations(self.by_conversation.len());
        registered.do_send(Registered(msg.target));
    }
}

impl Handler<Unsubscribe> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.remove(msg.session, &msg.target);
    }
}

impl Handler<Publish> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) {
        let routed = self.route(&msg.0);
        if routed.is_empty() {
            return;
        }
        // One copy of the batch for every session it goes to.
        let batch: Arc<[Arc<PublishedEvent>]> = msg.0.into();
        for (session, picks) in routed {
            match self.sessions.get(&session) {
                Some(subscriber) => subscriber
                    .deliver
                    .do_send(Deliver::picked(batch.clone(), picks)),
                None => self.metrics.drop("session-gone", picks.len() as u64),
            }
        }
    }
}

impl Handler<Resync> for Registry {
    type Result = ();

    /// Tells every session watching the execution, by itself or through its
    /// conversation, once; sent through the same mailboxes as `Deliver`, so
    /// it reaches each session before the events that replace the disputed ones.
    fn handle(&mut self, msg: Resync, _: &mut Self::Context) {
        let by_execution = self.by_execution.get(&msg.execution_id);
        let by_conversation = msg
            .conversation_id
            .as_deref()
            .and_then(|c| self.by_conversation.get(c));
        let mut told: Vec<SessionId> = Vec::new();
        for subscription in by_execution.into_iter().chain(by_conversation).flatten() {
            if told.contains(&subscription.session) {
                continue;
            }
            told.push(subscription.session);
            if let Some(subscriber) = self.sessions.get(&subscription.session) {
                subscriber.resync.do_send(msg.clone());
            }
        }
    }
}

impl Handler<CloseAll> for Registry {
    type Result = usize;

    fn handle(&mut self, _: CloseAll, _: &mut Self::Context) -> usize {
        for subscriber in self.sessions.values() {
            subscriber.shutdown.do_send(Shutdown);
        }
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentEvent, AgentStart, EventType, ToolCall};

    fn published(
        execution: &str,
        conversation: Option<&str>,
        seq: u64,
        tool: bool,
    ) -> Arc<PublishedEvent> {
        let mut event = if tool {
            AgentEvent::new(
                execution,
                ToolCall {
                    agent_id: "a".into(),
                    tool_name: "t".into(),
                    ..Default::default()
                },
            )
        } else {
            AgentEvent::new(
                execution,
                AgentStart {
                    agent_id: "a".into(),
                    ..Default::default()
                },
            )
        };
        event.conversation_id = conversation.map(Into::into);
        event.seq = Some(seq);
        PublishedEvent::new(event)
    }

    fn subscribe(registry: &mut Registry, session: SessionId, target: Target, filter: Filter) {
        let (index, key) = registry.index_of(&target);
        index
            .entry(key)
            .or_default()
            .push(Subscription { session, filter });
    }

    /// Subscribes `session` to execution `e1` and to conversation `c`, unfiltered.
    fn watch_e1_and_c(registry: &mut Registry, session: SessionId) {
        for target in [
            Target::Execution("e1".into()),
            Target::Conversation("c".into()),
        ] {
            subscribe(registry, session, target, Filter::default());
        }
    }

    #[test]
    fn routes_by_execution_conversation_and_filter_once_per_session() {
        let mut registry = Registry::new(Metrics::new());
        watch_e1_and_c(&mut registry, 1);
        subscribe(
            &mut registry,
            2,
            Target::Conversation("c".into()),
            Filter::default(),
        );
        let tools_only = Filter::new(Some(vec![EventType::ToolCall]), None, None);
        subscribe(&mut registry, 3, Target::Execution("e1".into()), tools_only);

        let events = [
            published("e1", Some("c"), 1, false),
            published("e1", Some("c"), 2, true),
            published("e2", None, 1, false),
        ];
        let routed = registry.route(&events);
        let seqs = |s: SessionId| {
            routed
                .iter()
                .find(|(session, _)| *session == s)
                .map(|(_, picks)| picks.indices().map(|i| events[i].seq).collect::<Vec<_>>())
        };
        assert_eq!(seqs(1), Some(vec![1, 2]));
        assert_eq!(seqs(2), Some(vec![1, 2]));
        assert_eq!(seqs(3), Some(vec![2]));
        assert_eq!(routed.len(), 3);
    }

    #[test]
    fn a_batch_past_64_events_is_routed_by_index_list_once_per_session() {
        let mut registry = Registry::new(Metrics::new());
        watch_e1_and_c(&mut registry, 1);
        let events: Vec<_> = (1..=70)
            .map(|seq| published("e1", Some("c"), seq, seq % 2 == 0))
            .collect();
        let routed = registry.route(&events);
        assert_eq!(routed.len(), 1);
        let (session, picks) = &routed[0];
        assert_eq!(*session, 1);
        assert!(matches!(picks, Picks::List(_)));
        let deliver = Deliver::picked(events.clone().into(), picks.clone());
        let seqs: Vec<u64> = deliver.events().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=70).collect::<Vec<_>>());
        assert_eq!(deliver.len(), 70);
    }

    #[test]
    fn any_conversation_subscription_makes_every_execution_wanted() {
        let watched = Watched::default();
        assert!(!watched.wants("e1"));
        watched.insert("e1".into());
        assert!(watched.wants("e1") && !watched.wants("e2"));
        watched.set_conversations(1);
        assert!(
            watched.wants("e2"),
            "its conversation is not known unparsed"
        );
        assert!(!watched.contains("e2"));
        watched.set_conversations(0);
        watched.remove("e1");
        assert!(!watched.wants("e1"));
    }

    #[test]
    fn forgets_a_target_when_its_last_subscriber_leaves() {
        let mut registry = Registry::new(Metrics::new());
        subscribe(
            &mut registry,
            1,
            Target::Execution("e1".into()),
            Filter::default(),
        );
        subscribe(
            &mut registry,
            2,
            Target::Execution("e1".into()),
            Filter::default(),
        );
        registry.remove(1, &Target::Execution("e1".into()));
        assert_eq!(registry.by_execution.len(), 1);
        registry.remove(2, &Target::Execution("e1".into()));
        assert!(registry.by_execution.is_empty());
    }
}
