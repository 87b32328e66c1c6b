//! The SseStream actor: one per Server-Sent Events response. It subscribes
//! through the Registry like a WebSocket Session, replays missed events at
//! the same seam, and writes SSE messages into a [`SendQueue`] whose other
//! end, [`SseBody`], is the HTTP response body.
//!
//! # What it writes
//! - first `retry:` ([`RETRY_HINT`]), so that clients reconnect promptly;
//! - [`SseFormat::Events`]: per event `id:` (see [`event_id`]), `event:` the
//!   type, `data:` the WebSocket `event` message, the very frame the Emitter
//!   serialized once ([`PublishedEvent::frame`]);
//! - [`SseFormat::AgUi`]: per AG-UI event ([`crate::ag_ui`]) `id:`
//!   `<seq>.<k>` (the k-th AG-UI event made from that seq, from 0) and
//!   `data:`. No `event:` line: AG-UI events say their type in their JSON, and
//!   unnamed messages are what AG-UI's own SSE encoder writes and what
//!   `EventSource.onmessage` receives;
//! - `: keep-alive` every heartbeat interval, so that proxies keep the
//!   response open and a departed client is noticed (see below);
//! - at the end, `event: error` with the WebSocket `error` message
//!   (`slow-consumer`, `shutting-down`), then the body ends.
//!
//! # The replay seam
//! The Session's, the same code ([`CatchUp`]): register with the Registry
//! first and hold the live events that arrive; once [`Registered`] comes
//! back, read the history ([`crate::history::History`]), write it, then the
//! held events newer than it, then go live; from then on an event of the
//! resumed execution at or below the last seq written is dropped.
//! [`SseStream::open`] resolves only then, so a refused replay is an HTTP
//! error, not a broken stream.
//!
//! # Slow consumers
//! The queue is bounded in bytes, as the Session's is: live messages
//! waiting for the client may not exceed `queue_bytes`. One that would gets
//! the client `event: error` with `slow-consumer` and ends the stream; the
//! messages still queued are discarded (counted as `slow-consumer-frames`),
//! because the client resumes with `Last-Event-ID` and gets them again in
//! order. Replayed events, keep-alives and the final error do not count: a
//! replay is one burst the client asked for, the others are tiny.
//!
//! # Departure and shutdown
//! When the client goes away, the server drops the body at its next failed
//! write (a keep-alive at the latest), the queue reports its departure, and
//! the actor stops and disconnects from the Registry. [`Shutdown`] ends the stream
//! after everything delivered before it, which is already queued ahead.
//! A stream that ends (slow consumer, shutdown) while its client does not
//! read is reset `close_timeout` later, and counts against the connection
//! limits until then: the body holds the slot, not the actor, as on the
//! WebSocket ([`SendQueue`]).

use crate::ag_ui;
use crate::catch_up::{CatchUp, Floor, Live, Ticket};
use crate::event::validate_id;
use crate::filter::Filter;
use crate::history::ReplayGap;
use crate::protocol::{error_frame, resync_frame, ErrorCode, PublishedEvent, Target};
use crate::registry::{self, Deliver, Registered, Resync, SessionId, Shutdown};
use crate::send_queue::{Chunk, Connection, SendQueue, SendQueueBody};
use crate::session::{next_session_id, SessionDeps};
use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The reconnection delay suggested to clients (`retry:`). EventSource waits
/// this long before reconnecting and adds no backoff of its own: one second
/// resumes a dropped stream barely behind, without hammering a broker that
/// is restarting.
pub const RETRY_HINT: Duration = Duration::from_secs(1);

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseFormat {
    /// Our events, one SSE message each.
    Events,
    /// The AG-UI events of an execution.
    AgUi,
}

/// Where a stream resumes: after a position in one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The execution.
    pub execution_id: Arc<str>,
    /// The client has every event up to this seq…
    pub seq: u64,
    /// …or, with AG-UI, only this many of the AG-UI events made from `seq`.
    pub parts_seen: Option<usize>,
}

impl Resume {
    /// The last seq the client has whole: the history starts after it.
    pub fn after_seq(&self) -> u64 {
        match self.parts_seen {
            Some(_) => self.seq.saturating_sub(1),
            None => self.seq,
        }
    }
}

/// What a client asked for.
#[derive(Debug)]
pub struct SseRequest {
    /// The execution or conversation.
    pub target: Target,
    /// Which of its events (ignored by AG-UI, which needs the whole run).
    pub filter: Filter,
    /// Replay from here first; `None` means live only.
    pub resume: Option<Resume>,
    /// How events are written.
    pub format: SseFormat,
    /// This stream's connection slot and socket, held by the response body
    /// until the server lets go of the connection.
    pub connection: Connection,
}

/// The `id:` of an event on an [`SseFormat::Events`] stream: its `seq` on an
/// execution stream; `<executionId>:<seq>` on a conversation stream, whose
/// executions each count their own seqs. Execution IDs may contain `:`, seqs
/// never do: the ID splits at its last `:`.
pub fn event_id(target: &Target, event: &PublishedEvent) -> String {
    match target {
        Target::Execution(_) => event.seq.to_string(),
        Target::Conversation(_) => format!("{}:{}", event.execution_id(), event.seq),
    }
}

/// Reads a `Last-Event-ID` this broker wrote for `target` in `format`; the
/// error says what was expected.
pub fn parse_last_event_id(target: &Target, format: SseFormat, id: &str) -> Result<Resume, String> {
    let seq = |text: &str| text.parse::<u64>().ok();
    match (target, format) {
        (Target::Execution(execution_id), SseFormat::Events) => seq(id)
            .map(|seq| resume(execution_id.clone(), seq, None))
            .ok_or_else(|| format!("Last-Event-ID `{id}`: expected a seq")),
        (Target::Execution(execution_id), SseFormat::AgUi) => {
            let (whole, part) = match id.split_once('.') {
                Some((whole, part)) => (whole, Some(part)),
                None => (id, None),
            };
            let parts_seen = part.map(|p| seq(p).map(|k| k as usize + 1));
            match (seq(whole), parts_seen) {
                (Some(s), None) => Ok(resume(execution_id.clone(), s, None)),
                (Some(s), Some(Some(parts))) if s > 0 => {
                    Ok(resume(execution_id.clone(), s, Some(parts)))
                }
                _ => Err(format!("Last-Event-ID `{id}`: expected <seq> or <seq>.<k>")),
            }
        }
        (Target::Conversation(_), _) => {
            let expected = || format!("Last-Event-ID `{id}`: expected <executionId>:<seq>");
            let (execution_id, s) = id.rsplit_once(':').ok_or_else(expected)?;
            let s = seq(s).ok_or_else(expected)?;
            validate_id("executionId", execution_id).map_err(|e| format!("Last-Event-ID: {e}"))?;
            Ok(resume(execution_id.into(), s, None))
        }
    }
}

fn resume(execution_id: Arc<str>, seq: u64, parts_seen: Option<usize>) -> Resume {
    Resume {
        execution_id,
        seq,
        parts_seen,
    }
}

/// The HTTP response body of one stream. Dropping it (the client went
/// away) stops the actor.
pub type SseBody = SendQueueBody;

/// The SseStream actor; see the module documentation.
pub struct SseStream {
    id: SessionId,
    deps: SessionDeps,
    request: SseRequest,
    queue: SendQueue,
    /// The replay seam. Its floor is the streamed execution, or the one a
    /// conversation resumed from.
    seam: CatchUp,
    /// AG-UI events of `floor`'s next seq the client already has.
    skip_parts: Option<(u64, usize)>,
    /// Told whether the stream opened, once.
    ready: Option<oneshot::Sender<Result<(), ReplayGap>>>,
    closing: bool,
}

impl SseStream {
    /// Starts a stream for `request`. Resolves with the response body once
    /// the subscription is in force and any replay is queued, or with the gap
    /// that makes the replay impossible (nothing is then streamed).
    pub async fn open(deps: SessionDeps, mut request: SseRequest) -> Result<SseBody, ReplayGap> {
        let connection = std::mem::take(&mut request.connection);
        let close_timeout = deps.config.close_timeout;
        let (queue, body) =
            SendQueue::for_connection(deps.metrics.clone(), connection, close_timeout);
        let (ready_tx, ready_rx) = oneshot::channel();
        SseStream::new(deps, request, queue, ready_tx).start();
        match ready_rx.await {
            Ok(Ok(())) => Ok(body),
            Ok(Err(gap)) => Err(gap),
            Err(_) => Err(ReplayGap {
                reason: "the stream stopped before it opened".into(),
            }),
        }
    }

    fn new(
        deps: SessionDeps,
        request: SseRequest,
        queue: SendQueue,
        ready: oneshot::Sender<Result<(), ReplayGap>>,
    ) -> Self {
        let floor = match (&request.target, &request.resume) {
            (_, Some(r)) => Some(Floor::new(r.execution_id.clone(), r.after_seq())),
            (Target::Execution(id), None) => Some(Floor::new(id.clone(), 0)),
            (Target::Conversation(_), None) => None,
        };
        let skip_parts = request
            .resume
            .as_ref()
            .and_then(|r| r.parts_seen.map(|parts| (r.seq, parts)));
        SseStream {
            id: next_session_id(),
            deps,
            request,
            queue,
            seam: CatchUp::new(floor),
            skip_parts,
            ready: Some(ready),
            closing: false,
        }
    }

    /// Registration is in force: read the history (if resuming), then go live.
    fn on_registered(&mut self, ctx: &mut Context<Self>) {
        let Some(ticket) = self.seam.ticket() else {
            return;
        };
        let Some(resume) = self.request.resume.clone() else {
            return self.go_live(ticket, Vec::new(), ctx);
        };
        let history = self.deps.history.clone();
        let read = async move {
            history
                .read(resume.execution_id.clone(), resume.after_seq())
                .await
        };
        ctx.spawn(
            read.into_actor(self)
                .map(move |result, stream, ctx| match result {
                    Ok(events) => stream.go_live(ticket, events, ctx),
                    Err(gap) => stream.refuse(gap, ctx),
                }),
        );
    }

    fn refuse(&mut self, gap: ReplayGap, ctx: &mut Context<Self>) {
        self.count_error(ErrorCode::ReplayUnavailable);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(gap));
        }
        ctx.stop();
    }

    /// Writes the replayed history, then the live events held meanwhile, and goes live.
    fn go_live(
        &mut self,
        ticket: Ticket,
        history: Vec<Arc<PublishedEvent>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(caught) = self.seam.finish(ticket, history) else {
            return;
        };
        let replay: Vec<_> = caught
            .history
            .into_iter()
            .filter(|e| self.wants(e))
            .collect();
        self.deps.metrics.replayed.inc_by(replay.len() as u64);
        self.write_events(&replay, false, ctx);
        self.write_events(&caught.held, true, ctx);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
    }

    /// Whether a replayed event belongs here: a conversation's client may
    /// name any execution in `Last-Event-ID`, but gets only its own events.
    fn wants(&self, event: &PublishedEvent) -> bool {
        let in_target = match &self.request.target {
            Target::Execution(_) => true,
            Target::Conversation(c) => event.event.conversation_id.as_deref() == Some(&**c),
        };
        in_target && self.request.filter.matches(&event.event)
    }

    /// Live events: held while catching up, dropped if already written, else written.
    fn on_deliver(&mut self, delivery: &Deliver, ctx: &mut Context<Self>) {
        let ready: Vec<_> = delivery
            .events()
            .filter(|event| self.seam.on_live(event) == Live::Send)
            .cloned()
            .collect();
        self.write_events(&ready, true, ctx);
    }

    /// Queues events; a live one past the byte bound ends a slow client's stream.
    fn write_events(
        &mut self,
        events: &[Arc<PublishedEvent>],
        counted: bool,
        ctx: &mut Context<Self>,
    ) {
        for event in events {
            if self.closing {
                return;
            }
            let bytes = self.render(event);
            if bytes.is_empty() {
                continue; // every AG-UI event of it was already seen
            }
            if !self
                .queue
                .push_event(bytes, counted, self.deps.config.queue_bytes)
            {
                return self.slow_consumer(ctx);
            }
            self.deps.metrics.deliveries.inc();
        }
    }

    /// The SSE text of one event.
    fn render(&mut self, event: &PublishedEvent) -> Bytes {
        match self.request.format {
            SseFormat::Events => {
                let id = event_id(&self.request.target, event);
                let kind = event.event.event_type().as_str();
                sse_message(Some(&id), Some(kind), &event.frame)
            }
            SseFormat::AgUi => self.render_ag_ui(event),
        }
    }

    fn render_ag_ui(&mut self, event: &PublishedEvent) -> Bytes {
        let skip = match self.skip_parts.take() {
            Some((seq, parts)) if seq == event.seq => parts,
            other => {
                self.skip_parts = other;
                0
            }
        };
        let mut out = BytesMut::new();
        for (k, value) in ag_ui::map_event(&event.event).iter().enumerate().skip(skip) {
            let id = format!("{}.{k}", event.seq);
            out.put(sse_message(Some(&id), None, &value.to_string()));
        }
        out.freeze()
    }

    fn slow_consumer(&mut self, ctx: &mut Context<Self>) {
        log::info!(
            "SSE stream {} too slow: ending it with slow-consumer",
            self.id
        );
        self.deps.metrics.drop("slow-consumer", 1);
        self.count_error(ErrorCode::SlowConsumer);
        self.queue.abandon();
        let message = "the client read too slowly; reconnect with Last-Event-ID";
        self.finish(ErrorCode::SlowConsumer, message, ctx);
    }

    fn count_error(&self, code: ErrorCode) {
        self.deps
            .metrics
            .client_errors
            .with_label_values(&[code.as_str()])
            .inc();
    }

    /// Writes a last `event: error` and ends the body; stops once the body is
    /// dropped, or after `close_timeout` if the client does not read it.
    fn finish(&mut self, code: ErrorCode, message: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        let error = error_frame(code, message, Some(&self.request.target));
        let error = sse_message(None, Some("error"), &error);
        self.queue.push(error, Chunk::Essential);
        self.queue.end(code.as_str());
        ctx.run_later(self.deps.config.close_timeout, |_, ctx| ctx.stop());
    }
}

/// One SSE message. The data is one line: JSON from serde never holds a raw
/// newline (it escapes them), so no `data:` continuation is needed.
fn sse_message(id: Option<&str>, event: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    out.put_slice(data.as_bytes());
    out.put_slice(b"\n\n");
    out.freeze()
}

impl Actor for SseStream {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The client went away when its body was dropped: stop with it.
        let departed = self.queue.departed();
        ctx.spawn(departed.into_actor(self).map(|_, _, ctx| ctx.stop()));
        // `connections` counts the response body, which outlives the actor
        // as long as the server holds the socket (send_queue.rs).
        self.deps.metrics.subscriptions.inc();
        let retry = format!("retry: {}\n\n", RETRY_HINT.as_millis());
        self.queue.push(Bytes::from(retry), Chunk::Uncounted);
        self.deps.registry.do_send(registry::Connect {
            session: self.id,
            subscriber: registry::Subscriber::of(&ctx.address()),
        });
        let filter = match self.request.format {
            SseFormat::Events => self.request.filter.clone(),
            SseFormat::AgUi => Filter::default(),
        };
        self.deps.registry.do_send(registry::Subscribe {
            session: self.id,
            target: self.request.target.clone(),
            filter,
        });
        ctx.run_interval(self.deps.config.heartbeat_interval, |stream, _| {
            if !stream.closing {
                let keep_alive = Bytes::from_static(b": keep-alive\n\n");
                stream.queue.push(keep_alive, Chunk::Uncounted);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.deps.metrics.subscriptions.dec();
        self.deps
            .registry
            .do_send(registry::Disconnect { session: self.id });
    }
}

impl Handler<Deliver> for SseStream {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.on_deliver(&msg, ctx);
    }
}

impl Handler<Registered> for SseStream {
    type Result = ();

    fn handle(&mut self, _: Registered, ctx: &mut Self::Context) {
        self.on_registered(ctx);
    }
}

impl Handler<Resync> for SseStream {
    type Result = ();

    /// An SSE client resumes by `Last-Event-ID`, so the stream's floor moves
    /// back and the client is told (`event: resync`); AG-UI has no such
    /// notion, so an AG-UI stream ends and its client reconnects.
    fn handle(&mut self, msg: Resync, ctx: &mut Self::Context) {
        self.seam.resync(&msg.execution_id, msg.from_seq);
        match self.request.format {
            SseFormat::Events => {
                let data = resync_frame(&msg.execution_id, msg.from_seq);
                let resync = sse_message(None, Some("resync"), &data);
                self.queue.push(resync, Chunk::Essential);
            }
            SseFormat::AgUi => self.finish(
                ErrorCode::ReplayUnavailable,
                "the cluster re-sequenced this execution; reconnect to read it again",
                ctx,
            ),
        }
    }
}

impl Handler<Shutdown> for SseStream {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        // Everything delivered before this message is already queued ahead of the end.
        self.finish(
            ErrorCode::ShuttingDown,
            "the broker is stopping; reconnect with Last-Event-ID",
            ctx,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_events::agent_start as published;

    #[test]
    fn ids_name_the_seq_or_the_execution_and_seq() {
        let event = published("exec:1", 7);
        assert_eq!(event_id(&Target::Execution("exec:1".into()), &event), "7");
        assert_eq!(
            event_id(&Target::Conversation("c".into()), &event),
            "exec:1:7"
        );
    }

    #[test]
    fn last_event_ids_read_back_what_was_written() {
        let execution = Target::Execution("e".into());
        let conversation = Target::Conversation("c".into());
        let parse = |target, format, id| parse_last_event_id(target, format, id);
        assert_eq!(
            parse(&execution, SseFormat::Events, "12"),
            Ok(resume("e".into(), 12, None))
        );
        assert_eq!(
            parse(&conversation, SseFormat::Events, "exec:1:7"),
            Ok(resume("exec:1".into(), 7, None))
        );
        assert_eq!(
            parse(&execution, SseFormat::AgUi, "5.2"),
            Ok(resume("e".into(), 5, Some(3)))
        );
        assert_eq!(
            parse(&execution, SseFormat::AgUi, "5"),
            Ok(resume("e".into(), 5, None))
        );
        for bad in ["", "x", "-1", "1.5", "e:3"] {
            assert!(parse(&execution, SseFormat::Events, bad).is_err(), "{bad}");
        }
        for bad in ["0.1", "5.", "5.x", ".1", "a"] {
            assert!(parse(&execution, SseFormat::AgUi, bad).is_err(), "{bad}");
        }
        for bad in ["7", "exec:", ":7", "a b:7", "e:x"] {
            assert!(
                parse(&conversation, SseFormat::Events, bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_partly_seen_seq_is_replayed_from_before_it() {
        assert_eq!(resume("e".into(), 5, Some(3)).after_seq(), 4);
        assert_eq!(resume("e".into(), 5, None).after_seq(), 5);
    }

    #[test]
    fn messages_are_sse_text() {
        assert_eq!(
            sse_message(Some("3"), Some("tool-call"), "{\"a\":1}"),
            Bytes::from_static(b"id: 3\nevent: tool-call\ndata: {\"a\":1}\n\n")
        );
        assert_eq!(
            sse_message(None, None, "{}"),
            Bytes::from_static(b"data: {}\n\n")
        );
    }
}
