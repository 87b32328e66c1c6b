//! The Session actor: one per WebSocket connection. It speaks the protocol of
//! docs/protocol.md 2 to its client, keeps the client's subscriptions, replays
//! missed events on `fromSeq`, and protects the broker from a slow reader.
//!
//! # Transport
//! The design card names `actix-web-actors`, which upstream deprecated in
//! favour of `actix-ws`. Neither writes for us: the old crate's
//! `WebsocketContext` buffers outgoing frames without limit and without
//! telling the actor, so a stalled browser could grow the broker forever,
//! and actix-ws encodes every frame again for every connection behind a
//! channel of its own. The Session writes its frames into a [`SendQueue`]
//! that is the response body itself: the connection takes bytes from it
//! only as fast as the client reads, the actor knows exactly how many are
//! waiting, and an event's frame is the buffer the Emitter encoded once
//! ([`PublishedEvent::wire`]). Reading (unmasking, UTF-8 checks, limits)
//! stays with actix-ws's message stream.
//!
//! # Slow consumers
//! Frames wait in an outbound queue bounded in bytes (`queue_bytes`, 1 MiB by
//! default, Centrifugo's figure). A live event that would overflow it gets
//! the client an `error` with code `slow-consumer` and close code 4000; the
//! frames still queued are discarded (and counted), because the client will
//! resume with `fromSeq` and get them again in order. Replayed events do not
//! count against the bound: a replay is one burst the client asked for. The
//! answers to the client's own messages (pongs, errors) do: a client that
//! floods requests and never reads would otherwise queue answers forever.
//!
//! # Closing, and a client that does not read the close
//! Every close (a slow consumer, a heartbeat or token timeout, shutdown, the
//! client's own close) queues the last error and the close frame, ends the
//! body, and gives the client `close_timeout` to read them; the actor stops
//! then at the latest. But the connection is not the actor's: a client that
//! stopped reading leaves the server waiting for its socket, not for the
//! body, so the socket would outlive the actor indefinitely. The body holds
//! the connection's slot for as long, and resets the socket if it is still
//! held at the close timeout ([`SendQueue`], `socket.rs`).
//!
//! # The replay seam
//! On `subscribe` with `fromSeq`, the session registers with the Registry
//! first and holds the live events that arrive; once [`Registered`] comes
//! back it reads the history, sends `subscribed` with the number replayed,
//! the history, then the held live events newer than the history, then goes
//! live. Every seq is sent once: anything at or below the last sent seq is
//! dropped. The seam itself is [`CatchUp`], shared with the SseStream.

use crate::auth::{Grant, Verifier};
use crate::catch_up::{CatchUp, Floor, Live, Ticket};
use crate::filter::Filter;
use crate::history::{History, ReplayGap};
use crate::limits::Bucket;
use crate::metrics::Metrics;
use crate::protocol::{
    authenticated_frame, connected_frame, error_frame, pong_frame, resync_frame, subscribed_frame,
    unsubscribed_frame, ClientMessage, ErrorCode, PublishedEvent, Target,
};
use crate::registry::{self, Deliver, Registered, Registry, Resync, SessionId, Shutdown};
use crate::send_queue::{Chunk, Connection, SendQueue, SendQueueBody};
use crate::ws_frame;
use actix::prelude::*;
use actix_web::body::{BodyStream, BoxBody, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError};
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::Stream;
use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

/// Limits and timings of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How often the broker pings a client.
    pub heartbeat_interval: Duration,
    /// A client silent this long is dropped.
    pub client_timeout: Duration,
    /// Subscriptions one connection may hold (Centrifugo: 128).
    pub max_subscriptions: usize,
    /// Largest text message accepted; larger ones get `frame-too-large` and the connection stays.
    pub max_message_bytes: usize,
    /// Largest frame read at all; larger ones close the connection (1009).
    pub max_frame_bytes: usize,
    /// Bytes of live frames and answers that may wait for a slow client before it is closed.
    pub queue_bytes: usize,
    /// How long a closing connection may take to flush before it is cut.
    pub close_timeout: Duration,
    /// With auth on, how long a connection may stay without a token.
    pub auth_timeout: Duration,
    /// Messages (ping and binary frames included) a client may send per second (twice that in a burst).
    pub max_messages_per_sec: f64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_interval: Duration::from_secs(30),
            client_timeout: Duration::from_secs(60),
            max_subscriptions: 128,
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 1024 * 1024,
            queue_bytes: 1024 * 1024,
            close_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(10),
            max_messages_per_sec: 50.0,
        }
    }
}

/// What every session needs from the rest of the broker.
#[derive(Clone)]
pub struct SessionDeps {
    /// Limits and timings.
    pub config: SessionConfig,
    /// The Registry to subscribe with.
    pub registry: Addr<Registry>,
    /// Where replays read from.
    pub history: History,
    /// Shared figures.
    pub metrics: Metrics,
    /// Checks tokens; `None` when auth is off.
    pub auth: Option<Arc<Verifier>>,
}

/// The subprotocol a browser offers beside `bearer.<jwt>` when it passes its
/// token in `Sec-WebSocket-Protocol`; the broker answers with it.
pub const SUBPROTOCOL: &str = "agent-events";

/// Upgrades an HTTP request to a WebSocket and starts its Session, with the
/// grant of the token the upgrade carried, if any. The response body holds
/// `connection` (its slot, its socket) until the server lets go of it.
pub fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    deps: SessionDeps,
    grant: Option<Grant>,
    connection: Connection,
) -> actix_web::Result<HttpResponse> {
    // actix-ws's writing half goes unused; its body is kept only because
    // dropping it is how its message stream learns that the connection is gone.
    let (response, _, stream) = actix_ws::handle_with_protocols(req, body, &[SUBPROTOCOL])?;
    let max_frame = deps.config.max_frame_bytes;
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    let close_timeout = deps.config.close_timeout;
    let (queue, frames) =
        SendQueue::for_connection(deps.metrics.clone(), connection, close_timeout);
    let response = response.map_body(|_, close_signal| {
        BodyStream::new(WsBody {
            frames,
            _close_signal: close_signal,
        })
        .boxed()
    });
    Session::start(queue, stream, deps, grant);
    Ok(response)
}

/// The response body of an upgraded connection: the Session's frames.
struct WsBody {
    frames: SendQueueBody,
    _close_signal: BoxBody,
}

impl Stream for WsBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.frames).poll_next(cx)
    }
}

struct Subscription {
    filter: Filter,
    /// Where the replay starts (`fromSeq`), if the client asked for one.
    from_seq: Option<u64>,
    /// The replay seam; its floor is the execution's (executions only).
    seam: CatchUp,
}

/// A connection's subscriptions, one map per kind of target.
///
/// Every delivered event is looked up here by its execution and maybe its
/// conversation. Keyed by kind, the lookup takes the event's `&str` as it
/// is; keyed by [`Target`] it took a new `Arc<str>` per event per session
/// (the fan-out profile in PERFORMANCE.md). FxHash instead of SipHash: the
/// keys are the client's own, at most `max_subscriptions` of them, so a
/// client that picks colliding IDs slows only its own lookups.
#[derive(Default)]
struct Subscriptions {
    executions: FxHashMap<Arc<str>, Subscription>,
    conversations: FxHashMap<Arc<str>, Subscription>,
}

impl Subscriptions {
    fn get(&self, target: &Target) -> Option<&Subscription> {
        match target {
            Target::Execution(id) => self.executions.get(id),
            Target::Conversation(id) => self.conversations.get(id),
        }
    }

    fn get_mut(&mut self, target: &Target) -> Option<&mut Subscription> {
        match target {
            Target::Execution(id) => self.executions.get_mut(id),
            Target::Conversation(id) => self.conversations.get_mut(id),
        }
    }

    fn contains_key(&self, target: &Target) -> bool {
        self.get(target).is_some()
    }

    fn insert(&mut self, target: Target, subscription: Subscription) {
        match target {
            Target::Execution(id) => self.executions.insert(id, subscription),
            Target::Conversation(id) => self.conversations.insert(id, subscription),
        };
    }

    fn remove(&mut self, target: &Target) -> Option<Subscription> {
        match target {
            Target::Execution(id) => self.executions.remove(id),
            Target::Conversation(id) => self.conversations.remove(id),
        }
    }

    fn len(&self) -> usize {
        self.executions.len() + self.conversations.len()
    }

    fn targets(&self) -> impl Iterator<Item = Target> + '_ {
        let executions = self.executions.keys().cloned().map(Target::Execution);
        let conversations = self.conversations.keys().cloned().map(Target::Conversation);
        executions.chain(conversations)
    }
}

/// The Session actor; see the module documentation.
pub struct Session {
    id: SessionId,
    client_id: String,
    deps: SessionDeps,
    queue: SendQueue,
    subscriptions: Subscriptions,
    /// `Subscribe`s sent to the Registry whose `Registered` has not come back,
    /// per target. The Registry answers in order, so only the answer that
    /// brings this to zero belongs to the current subscription: after a
    /// subscribe, unsubscribe, subscribe, the first answer must not send the
    /// second subscription live before the Registry routes to it.
    registering: HashMap<Target, u32>,
    last_heard: Instant,
    closing: bool,
    grant: Option<Grant>,
    expiry: Option<SpawnHandle>,
    /// Messages the client may still send now.
    messages: Bucket,
    last_rate_error: Option<Instant>,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A new subscriber's number, unique in this process (WebSocket and SSE alike).
pub fn next_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

impl Session {
    fn start(
        queue: SendQueue,
        stream: AggregatedMessageStream,
        deps: SessionDeps,
        grant: Option<Grant>,
    ) -> Addr<Session> {
        let id = next_session_id();
        let rate = deps.config.max_messages_per_sec;
        Session::create(move |ctx| {
            ctx.add_stream(stream);
            Session {
                id,
                client_id: client_id(id),
                queue,
                subscriptions: Subscriptions::default(),
                registering: HashMap::new(),
                last_heard: Instant::now(),
                closing: false,
                grant,
                expiry: None,
                messages: Bucket::new(rate, 2.0 * rate),
                last_rate_error: None,
                deps,
            }
        })
    }

    /// Sends an answer (pong, error, subscribed…), counted against
    /// `queue_bytes`; [`Session::on_frame`] closes a client whose unread
    /// answers pass it.
    fn send_text(&mut self, text: ByteString) {
        self.queue.push(ws_frame::text(&text), Chunk::Counted);
    }

    fn send_error(&mut self, code: ErrorCode, message: &str, target: Option<&Target>) {
        self.deps
            .metrics
            .client_errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.send_text(error_frame(code, message, target));
    }

    /// Queues event frames; a live frame past the byte bound closes a slow client.
    fn send_events(
        &mut self,
        events: &[Arc<PublishedEvent>],
        counted: bool,
        ctx: &mut Context<Self>,
    ) {
        let mut sent = 0;
        for event in events {
            if !self.send_event(event, counted, ctx) {
                break;
            }
            sent += 1;
        }
        self.deps.metrics.deliveries.inc_by(sent);
    }

    /// Queues one event frame, unless the session is closing or the frame
    /// would pass the byte bound (which closes a slow client); whether it
    /// was queued. The caller counts it in `deliveries`, once per batch.
    fn send_event(
        &mut self,
        event: &PublishedEvent,
        counted: bool,
        ctx: &mut Context<Self>,
    ) -> bool {
        if self.closing {
            return false;
        }
        let bound = self.deps.config.queue_bytes;
        if !self.queue.push_event(event.wire.clone(), counted, bound) {
            self.slow_consumer(ctx);
            return false;
        }
        true
    }

    fn slow_consumer(&mut self, ctx: &mut Context<Self>) {
        log::info!(
            "client {} too slow: closing with slow-consumer",
            self.client_id
        );
        self.deps.metrics.drop("slow-consumer", 1);
        self.queue.abandon();
        self.close_with(
            ErrorCode::SlowConsumer,
            "the client read too slowly; resubscribe with fromSeq",
            ctx,
        );
    }

    /// Sends a last `error` and a close frame, then stops after `close_timeout` at most.
    fn close_with(&mut self, code: ErrorCode, message: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.deps
            .metrics
            .client_errors
            .with_label_values(&[code.as_str()])
            .inc();
        let error = error_frame(code, message, None);
        self.queue.push(ws_frame::text(&error), Chunk::Essential);
        let reason = CloseReason {
            code: CloseCode::Other(code.close_code()),
            description: Some(code.as_str().into()),
        };
        self.close(Some(reason), code.as_str(), ctx);
    }

    /// Sends a close frame and ends the body; `why` (one of
    /// [`crate::metrics::FORCED_CLOSE_REASONS`]) is counted if the socket
    /// must be reset because the client does not read it.
    fn close(&mut self, reason: Option<CloseReason>, why: &'static str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.queue
            .push(ws_frame::close(reason.as_ref()), Chunk::Essential);
        self.queue.end(why);
        ctx.run_later(self.deps.config.close_timeout, |_, ctx| ctx.stop());
    }

    /// A flood is dropped, not queued: the client hears `rate-limited` at most
    /// once a second, so that the answers cannot become a flood of their own.
    fn within_rate(&mut self) -> bool {
        if self.messages.take(1.0) {
            return true;
        }
        let quiet = self
            .last_rate_error
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if quiet {
            self.last_rate_error = Some(Instant::now());
            let message = format!(
                "more than {} messages a second; messages are being dropped",
                self.deps.config.max_messages_per_sec
            );
            self.send_error(ErrorCode::RateLimited, &message, None);
        } else {
            self.deps
                .metrics
                .client_errors
                .with_label_values(&[ErrorCode::RateLimited.as_str()])
                .inc();
        }
        false
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if !self.within_rate() {
            return;
        }
        if text.len() > self.deps.config.max_message_bytes {
            let message = format!(
                "messages are limited to {} bytes",
                self.deps.config.max_message_bytes
            );
            return self.send_error(ErrorCode::FrameTooLarge, &message, None);
        }
        match ClientMessage::parse(text) {
            Ok(ClientMessage::Subscribe {
                target,
                from_seq,
                filter,
            }) => self.subscribe(target, from_seq, filter),
            Ok(ClientMessage::Unsubscribe { target }) => self.unsubscribe(target),
            Ok(ClientMessage::Ping) => self.send_text(pong_frame()),
            Ok(ClientMessage::Auth { token }) => self.authenticate(&token, ctx),
            Err(err) => self.send_error(err.code, &err.message, None),
        }
        let _ = ctx;
    }

    /// With auth on: a token that allows `target`, or the error that says why not.
    fn check_permission(&self, target: &Target) -> Result<(), (ErrorCode, String)> {
        if self.deps.auth.is_none() {
            return Ok(());
        }
        match &self.grant {
            None => Err((
                ErrorCode::Unauthorized,
                "send {\"type\":\"auth\",\"token\":…} first".into(),
            )),
            Some(grant) if grant.may_watch(target) => Ok(()),
            Some(_) => Err((
                ErrorCode::Forbidden,
                format!(
                    "the token does not allow {} `{}`",
                    target.field(),
                    target.id()
                ),
            )),
        }
    }

    fn subscribe(&mut self, target: Target, from_seq: Option<u64>, filter: Filter) {
        if let Err((code, message)) = self.check_permission(&target) {
            return self.send_error(code, &message, Some(&target));
        }
        if self.subscriptions.contains_key(&target) {
            let message = format!("already subscribed to {} `{}`", target.field(), target.id());
            return self.send_error(ErrorCode::AlreadySubscribed, &message, Some(&target));
        }
        if self.subscriptions.len() >= self.deps.config.max_subscriptions {
            let message = format!(
                "a connection may hold {} subscriptions",
                self.deps.config.max_subscriptions
            );
            return self.send_error(ErrorCode::TooManySubscriptions, &message, Some(&target));
        }
        let floor = match &target {
            Target::Execution(id) => Some(Floor::new(id.clone(), from_seq.unwrap_or(0))),
            Target::Conversation(_) => None,
        };
        self.subscriptions.insert(
            target.clone(),
            Subscription {
                filter: filter.clone(),
                from_seq,
                seam: CatchUp::new(floor),
            },
        );
        self.deps.metrics.subscriptions.inc();
        *self.registering.entry(target.clone()).or_default() += 1;
        self.deps.registry.do_send(registry::Subscribe {
            session: self.id,
            target,
            filter,
        });
    }

    fn unsubscribe(&mut self, target: Target) {
        if self.subscriptions.remove(&target).is_some() {
            self.deps.metrics.subscriptions.dec();
            self.deps.registry.do_send(registry::Unsubscribe {
                session: self.id,
                target: target.clone(),
            });
        }
        // Idempotent, as leaving a room is in Socket.IO: the client gets its answer either way.
        self.send_text(unsubscribed_frame(&target));
    }

    /// Registration is in force: read the history (if asked), then go live.
    fn on_registered(&mut self, target: Target, ctx: &mut Context<Self>) {
        if let Some(waiting) = self.registering.get_mut(&target) {
            *waiting -= 1;
            if *waiting > 0 {
                return; // the answer to an older subscribe of this target
            }
            self.registering.remove(&target);
        }
        let Some((from_seq, ticket)) = self
            .subscriptions
            .get(&target)
            .and_then(|s| Some((s.from_seq, s.seam.ticket()?)))
        else {
            return; // unsubscribed meanwhile
        };
        let (Some(after_seq), Target::Execution(execution_id)) = (from_seq, &target) else {
            return self.go_live(target, ticket, Vec::new(), ctx);
        };
        let history = self.deps.history.clone();
        let execution_id = execution_id.clone();
        let read = async move { history.read(execution_id, after_seq).await };
        // The ticket, not the target, names the subscription this read is
        // for: the client may resubscribe to the target while it runs.
        ctx.spawn(
            read.into_actor(self)
                .map(move |result, session, ctx| match result {
                    Ok(events) => session.go_live(target, ticket, events, ctx),
                    Err(gap) => session.refuse_replay(target, ticket, gap),
                }),
        );
    }

    /// A token sent in a message: first, or fresh before the old one expires.
    fn authenticate(&mut self, token: &str, ctx: &mut Context<Self>) {
        let Some(verifier) = self.deps.auth.clone() else {
            return self.send_error(
                ErrorCode::BadRequest,
                "this broker does not use tokens",
                None,
            );
        };
        match verifier.verify(token) {
            Ok(grant) => {
                self.send_text(authenticated_frame(grant.expires_at()));
                self.grant = Some(grant);
                self.drop_forbidden_subscriptions();
                self.schedule_expiry(ctx);
            }
            Err(err) => self.send_error(err.code, &err.message, None),
        }
    }

    /// A fresh token may allow less than the old one: what it does not allow ends.
    fn drop_forbidden_subscriptions(&mut self) {
        let forbidden: Vec<Target> = self
            .subscriptions
            .targets()
            .filter(|target| self.check_permission(target).is_err())
            .collect();
        for target in forbidden {
            self.subscriptions.remove(&target);
            self.deps.metrics.subscriptions.dec();
            self.deps.registry.do_send(registry::Unsubscribe {
                session: self.id,
                target: target.clone(),
            });
            self.send_error(
                ErrorCode::Forbidden,
                "the new token does not allow this; unsubscribed",
                Some(&target),
            );
        }
    }

    /// Closes the connection when its token expires (a fresh token moves this).
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        if let Some(previous) = self.expiry.take() {
            ctx.cancel_future(previous);
        }
        let Some(grant) = &self.grant else { return };
        self.expiry = Some(ctx.run_later(grant.remaining(), |session, ctx| {
            session.close_with(
                ErrorCode::TokenExpired,
                "the token expired; send a fresh one before expiry, or reconnect with one and resume with fromSeq",
                ctx,
            );
        }));
    }

    /// With auth on, a connection must present a token within `auth_timeout`.
    fn require_token_soon(&mut self, ctx: &mut Context<Self>) {
        if self.deps.auth.is_none() {
            return;
        }
        if self.grant.is_some() {
            return self.schedule_expiry(ctx);
        }
        ctx.run_later(self.deps.config.auth_timeout, |session, ctx| {
            if session.grant.is_none() {
                session.close_with(
                    ErrorCode::Unauthorized,
                    "no token within the auth timeout",
                    ctx,
                );
            }
        });
    }

    fn refuse_replay(&mut self, target: Target, ticket: Ticket, gap: ReplayGap) {
        let current = self
            .subscriptions
            .get(&target)
            .and_then(|s| s.seam.ticket());
        if current != Some(ticket) {
            return; // a read for an older subscription of the target
        }
        self.subscriptions.remove(&target);
        self.deps.metrics.subscriptions.dec();
        self.deps.registry.do_send(registry::Unsubscribe {
            session: self.id,
            target: target.clone(),
        });
        let message = format!("{}; not subscribed", gap.reason);
        self.send_error(ErrorCode::ReplayUnavailable, &message, Some(&target));
    }

    /// Sends `subscribed`, the replayed history, the live events held meanwhile, and goes live.
    fn go_live(
        &mut self,
        target: Target,
        ticket: Ticket,
        history: Vec<Arc<PublishedEvent>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(subscription) = self.subscriptions.get_mut(&target) else {
            return;
        };
        let Some(caught) = subscription.seam.finish(ticket, history) else {
            return; // a read for an older subscription of the target
        };
        let replay: Vec<_> = caught
            .history
            .into_iter()
            .filter(|e| subscription.filter.matches(&e.event))
            .collect();
        self.send_text(subscribed_frame(&target, replay.len()));
        self.deps.metrics.replayed.inc_by(replay.len() as u64);
        self.send_events(&replay, false, ctx);
        self.send_events(&caught.held, true, ctx);
    }

    /// Routes delivered events: held while catching up, dropped if already sent, else sent.
    ///
    /// This runs once per event per subscriber, so it allocates nothing: the
    /// subscriptions are looked up by the event's own `&str` IDs, and a ready
    /// event is queued at once instead of being collected first.
    fn on_deliver(&mut self, delivery: &Deliver, ctx: &mut Context<Self>) {
        let mut sent = 0;
        for event in delivery.events() {
            let subscriptions = &mut self.subscriptions;
            // The execution's subscription takes the event only if its filter
            // does: an event the Registry routed for the conversation must not
            // be dropped by a filtered execution subscription catching up.
            let by_execution = subscriptions
                .executions
                .get_mut(event.execution_id())
                .filter(|s| s.filter.matches(&event.event));
            let subscription = match by_execution {
                Some(subscription) => subscription,
                None => {
                    let by_conversation = event
                        .event
                        .conversation_id
                        .as_deref()
                        .and_then(|c| subscriptions.conversations.get_mut(c));
                    match by_conversation {
                        Some(subscription) => subscription,
                        None => continue, // unsubscribed after the Registry routed it
                    }
                }
            };
            // Once closing (a slow consumer found mid-batch, say), nothing
            // more is queued, as when the ready events were sent after the loop.
            if subscription.seam.on_live(event) == Live::Send && self.send_event(event, true, ctx) {
                sent += 1;
            }
        }
        self.deps.metrics.deliveries.inc_by(sent);
    }

    fn on_frame(&mut self, frame: AggregatedMessage, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match frame {
            AggregatedMessage::Text(text) => self.on_text(&text, ctx),
            // Binary and ping frames are answered one by one, so they spend
            // the message rate like text: a flood of them was answered in full
            // (found by tests/hostile.rs), queueing without bound for a client
            // that does not read.
            AggregatedMessage::Binary(_) if self.within_rate() => self.send_error(
                ErrorCode::BinaryNotSupported,
                "frames must be JSON text; binary frames are not supported",
                None,
            ),
            AggregatedMessage::Ping(bytes) if self.within_rate() => {
                self.queue.push(ws_frame::pong(&bytes), Chunk::Counted);
            }
            AggregatedMessage::Binary(_) | AggregatedMessage::Ping(_) => {}
            AggregatedMessage::Pong(_) => {}
            AggregatedMessage::Close(reason) => self.close(reason, "client-close", ctx),
        }
        // Within the rate, answers still pile up for a client that never
        // reads; past the queue's bound it is a slow consumer like any other.
        if !self.closing && self.queue.queued_bytes() > self.deps.config.queue_bytes {
            self.slow_consumer(ctx);
        }
    }

    fn on_protocol_error(&mut self, err: ProtocolError, ctx: &mut Context<Self>) {
        let (code, message) = match err {
            ProtocolError::Overflow => (
                CloseCode::Size,
                format!(
                    "frames are limited to {} bytes",
                    self.deps.config.max_frame_bytes
                ),
            ),
            // A text frame that is not UTF-8: RFC 6455 names 1007 for data
            // inconsistent with its type, and the client should know it was that.
            ProtocolError::Io(err) if err.kind() == std::io::ErrorKind::InvalidData => (
                CloseCode::Invalid,
                format!("a text frame is not UTF-8: {err}"),
            ),
            other => (CloseCode::Protocol, other.to_string()),
        };
        log::debug!("client {}: {message}; closing", self.client_id);
        let error = if code == CloseCode::Size {
            ErrorCode::FrameTooLarge
        } else {
            ErrorCode::BadRequest
        };
        self.send_error(error, &message, None);
        self.close(
            Some(CloseReason {
                code,
                description: Some(message),
            }),
            "protocol-error",
            ctx,
        );
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() >= self.deps.config.client_timeout {
            log::info!("client {} silent too long: closing", self.client_id);
            self.deps.metrics.drop("heartbeat-timeout", 1);
            self.close_with(
                ErrorCode::HeartbeatTimeout,
                "no message or pong within the timeout",
                ctx,
            );
        } else if !self.closing {
            self.queue.push(ws_frame::ping(), Chunk::Uncounted);
        }
    }
}

fn client_id(session: SessionId) -> String {
    // Unique per process run: the start time keeps ids of two runs apart.
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    format!("{run:x}-{session}")
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // When the body is gone (close sent, or the connection lost), so is the session.
        let departed = self.queue.departed();
        ctx.spawn(departed.into_actor(self).map(|_, _, ctx| ctx.stop()));
        // `connections` counts the response body, which outlives the actor
        // as long as the server holds the socket (send_queue.rs).
        self.deps.registry.do_send(registry::Connect {
            session: self.id,
            subscriber: registry::Subscriber::of(&ctx.address()),
        });
        self.send_text(connected_frame(&self.client_id));
        self.require_token_soon(ctx);
        ctx.run_interval(self.deps.config.heartbeat_interval, |session, ctx| {
            session.heartbeat(ctx)
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.deps
            .metrics
            .subscriptions
            .sub(self.subscriptions.len() as i64);
        self.deps
            .registry
            .do_send(registry::Disconnect { session: self.id });
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        match item {
            Ok(frame) => self.on_frame(frame, ctx),
            Err(err) => self.on_protocol_error(err, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The client went away; nothing more can be sent.
        ctx.stop();
    }
}

impl Handler<Resync> for Session {
    type Result = ();

    fn handle(&mut self, msg: Resync, _: &mut Self::Context) {
        let by_execution = Target::Execution(msg.execution_id.clone());
        let mut subscribed = false;
        if let Some(subscription) = self.subscriptions.get_mut(&by_execution) {
            // From here the seqs are sent again: the dedupe must let them through.
            subscription.seam.resync(&msg.execution_id, msg.from_seq);
            subscribed = true;
        }
        subscribed |= msg.conversation_id.as_deref().is_some_and(|c| {
            self.subscriptions
                .contains_key(&Target::Conversation(c.into()))
        });
        if subscribed {
            self.send_text(resync_frame(&msg.execution_id, msg.from_seq));
        }
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.on_deliver(&msg, ctx);
    }
}

impl Handler<Registered> for Session {
    type Result = ();

    fn handle(&mut self, msg: Registered, ctx: &mut Self::Context) {
        self.on_registered(msg.0, ctx);
    }
}

impl Handler<Shutdown> for Session {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        // Everything delivered before this message is already queued ahead of the close.
        self.close(
            Some(CloseReason {
                code: CloseCode::Away,
                description: Some(ErrorCode::ShuttingDown.as_str().into()),
            }),
            ErrorCode::ShuttingDown.as_str(),
            ctx,
        );
    }
}
