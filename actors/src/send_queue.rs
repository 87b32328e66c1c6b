//! The outbound queue of one subscriber's connection, and the HTTP response
//! body that drains it. A Session (WebSocket) or an SseStream pushes ready
//! bytes; the HTTP dispatcher pulls them as the connection takes them.
//!
//! # Why not a channel and a writer task
//! A Session used to queue frames on a channel for a writer task, which
//! passed each to actix-ws's own bounded channel, whose body encoded it
//! again into a fresh buffer: two channels, two wake-ups and an encoding per
//! frame per subscriber, 44% of the instructions of a delivery (the fan-out
//! profile in PERFORMANCE.md). Here the actor pushes the very bytes the
//! Emitter encoded once for every subscriber, and the dispatcher takes them
//! from the same queue. Both run on the worker thread that accepted the
//! connection (an actor lives on the arbiter that started it), so the queue
//! is an `Rc<RefCell<…>>`: no atomics, no lock.
//!
//! # Bounded in bytes
//! The dispatcher pulls a chunk only while its write buffer has room, so
//! the bytes a client has not read wait here, where the actor can count
//! them: [`SendQueue::queued_bytes`] is the total of the [`Chunk::Counted`]
//! chunks still queued. The actor decides what passes its bound (a slow
//! consumer is closed); this queue only keeps the count exact.
//!
//! # Giving up on a client
//! [`SendQueue::abandon`] discards what is queued except [`Chunk::Essential`]
//! chunks (the last error and the close frame), and everything but those
//! pushed afterwards; each discarded chunk is counted as a
//! `slow-consumer-frames` drop. The client resumes from its last seq and
//! gets the discarded events again, in order.
//!
//! # Ending
//! The body ends once the queue is empty and either [`SendQueue::end`] was
//! called (what is pushed after it is ignored) or the actor dropped its
//! [`SendQueue`]: a stopping actor still gets what it queued written. When
//! the dispatcher drops the body (the client went away, or the body ended),
//! [`SendQueue::departed`] resolves, and pushes are ignored.
//!
//! # Closing a socket the client never reads
//! Ending the body is not enough when the client has stopped reading: the
//! dispatcher waits for the socket to take its write buffer before it pulls
//! the body again, and with no timer on a streaming response it waits
//! forever, holding the socket (and the unsent bytes) long after the actor
//! is gone. So the body, not the actor, holds what a connection costs: the
//! [`ConnectionPermit`] (the per-address limit counts the connection until
//! the socket is closed) and the `connections` gauge. And once ended, the
//! queue gives the client `close_timeout` to read the end; if the body is
//! still alive then, it resets the socket ([`ConnectionSocket`]) and counts
//! a forced close under the reason the close was started for. The reset
//! makes the dispatcher fail and drop the body, which frees the slot.
//! Meanwhile the connection counts in `closingConnections`.

use crate::limits::ConnectionPermit;
use crate::metrics::Metrics;
use crate::socket::ConnectionSocket;
use bytes::Bytes;
use futures_util::Stream;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How a chunk counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Counted against the actor's bound: live events and answers.
    Counted,
    /// Not counted: a replay the client asked for, heartbeats.
    Uncounted,
    /// Not counted, and still written after [`SendQueue::abandon`]: the last
    /// error and the close.
    Essential,
}

struct Queued {
    bytes: Bytes,
    kind: Chunk,
}

struct Queue {
    chunks: VecDeque<Queued>,
    queued_bytes: usize,
    abandoned: bool,
    /// [`SendQueue::end`] was called, or the [`SendQueue`] is gone.
    ending: bool,
    /// The body was dropped: nothing more will be written.
    departed: bool,
    /// The dispatcher, waiting for a chunk.
    body_waker: Option<Waker>,
    /// The actor, waiting in [`SendQueue::departed`].
    departure_waker: Option<Waker>,
    metrics: Metrics,
    /// The connection's socket, while the body is alive (never after).
    socket: Option<ConnectionSocket>,
    /// How long an ended body may wait for the client before its socket is reset.
    close_timeout: Duration,
    /// Counted in `closing_connections`, from the end until the body goes.
    counted_closing: bool,
}

impl Queue {
    fn wake_body(&mut self) {
        if let Some(waker) = self.body_waker.take() {
            waker.wake();
        }
    }

    fn discard(&mut self, count: usize) {
        if count > 0 {
            self.metrics.drop("slow-consumer-frames", count as u64);
        }
    }
}

/// The actor's end of the queue.
pub struct SendQueue {
    queue: Rc<RefCell<Queue>>,
}

/// The HTTP response body: the dispatcher's end of the queue.
pub struct SendQueueBody {
    queue: Rc<RefCell<Queue>>,
    /// Held until the dispatcher lets go of the body, which it does only
    /// when it is done with the socket (see the module documentation).
    _permit: Option<ConnectionPermit>,
}

/// What one client connection holds, kept by its response body for as long
/// as the server holds the connection.
#[derive(Debug, Default)]
pub struct Connection {
    /// Its slot under the connection limits.
    pub permit: Option<ConnectionPermit>,
    /// Its socket, to reset when the client does not read the close.
    pub socket: Option<ConnectionSocket>,
}

impl SendQueue {
    /// A new, empty queue and the body that drains it, for no connection in
    /// particular: nothing to reset, no slot to hold.
    pub fn new(metrics: Metrics) -> (SendQueue, SendQueueBody) {
        Self::for_connection(metrics, Connection::default(), Duration::ZERO)
    }

    /// A new, empty queue and the body that drains it on `connection`,
    /// whose socket is reset if the body is still alive `close_timeout`
    /// after it was ended. Counts an open connection until the body goes.
    pub fn for_connection(
        metrics: Metrics,
        connection: Connection,
        close_timeout: Duration,
    ) -> (SendQueue, SendQueueBody) {
        metrics.connections.inc();
        let queue = Rc::new(RefCell::new(Queue {
            chunks: VecDeque::new(),
            queued_bytes: 0,
            abandoned: false,
            ending: false,
            departed: false,
            body_waker: None,
            departure_waker: None,
            metrics,
            socket: connection.socket,
            close_timeout,
            counted_closing: false,
        }));
        let body = SendQueueBody {
            queue: queue.clone(),
            _permit: connection.permit,
        };
        (SendQueue { queue }, body)
    }

    /// Queues `bytes` to be written after everything queued before.
    /// Ignored once the body has ended or departed; after [`SendQueue::abandon`],
    /// everything but [`Chunk::Essential`] is discarded and counted.
    pub fn push(&self, bytes: Bytes, kind: Chunk) {
        let mut queue = self.queue.borrow_mut();
        if queue.ending || queue.departed {
            return;
        }
        if queue.abandoned && kind != Chunk::Essential {
            return queue.discard(1);
        }
        if kind == Chunk::Counted {
            queue.queued_bytes += bytes.len();
        }
        queue.chunks.push_back(Queued { bytes, kind });
        queue.wake_body();
    }

    /// Queues an event: [`Chunk::Counted`] when `live`, unless it would take
    /// the counted bytes past `bound` (then nothing is queued and the answer
    /// is false: the caller has a slow consumer); [`Chunk::Uncounted`] (a
    /// replay) otherwise.
    pub fn push_event(&self, bytes: Bytes, live: bool, bound: usize) -> bool {
        if !live {
            self.push(bytes, Chunk::Uncounted);
            return true;
        }
        if self.queued_bytes() + bytes.len() > bound {
            return false;
        }
        self.push(bytes, Chunk::Counted);
        true
    }

    /// The bytes of [`Chunk::Counted`] chunks the connection has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.queue.borrow().queued_bytes
    }

    /// Discards everything queued but [`Chunk::Essential`] chunks, and
    /// everything else pushed from now on; see the module documentation.
    pub fn abandon(&self) {
        let mut queue = self.queue.borrow_mut();
        queue.abandoned = true;
        let before = queue.chunks.len();
        queue.chunks.retain(|c| c.kind == Chunk::Essential);
        let discarded = before - queue.chunks.len();
        queue.queued_bytes = 0;
        queue.discard(discarded);
    }

    /// The body ends after what is queued now; later pushes are ignored.
    /// `reason` (one of [`crate::metrics::FORCED_CLOSE_REASONS`]) is why the
    /// connection is closing, counted if the client does not read the end
    /// within the close timeout and its socket is reset.
    pub fn end(&self, reason: &'static str) {
        let mut queue = self.queue.borrow_mut();
        if queue.ending || queue.departed {
            return;
        }
        queue.ending = true;
        queue.wake_body();
        queue.metrics.closing_connections.inc();
        queue.counted_closing = true;
        if queue.socket.is_some() {
            let timeout = queue.close_timeout;
            let weak = Rc::downgrade(&self.queue);
            // A task of its own, not the actor's: the actor may stop first
            // (its client ended its stream) while the socket lives on.
            actix::spawn(async move {
                tokio::time::sleep(timeout).await;
                reset_if_held(&weak, reason);
            });
        }
    }

    /// Resolves once the body is gone: the client went away, or the body ended
    /// and the dispatcher let go of it.
    pub fn departed(&self) -> impl Future<Output = ()> + 'static {
        let queue = self.queue.clone();
        std::future::poll_fn(move |cx| {
            let mut queue = queue.borrow_mut();
            if queue.departed {
                return Poll::Ready(());
            }
            queue.departure_waker = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// The close timeout has passed: resets the socket if the body is still
/// alive. Runs on the worker thread of the dispatcher, so the body cannot be
/// dropped meanwhile, and a live body means the descriptor is still the
/// connection's (`socket.rs`).
fn reset_if_held(queue: &Weak<RefCell<Queue>>, reason: &'static str) {
    let Some(queue) = queue.upgrade() else {
        return; // both ends gone: the dispatcher let go of the connection
    };
    let mut queue = queue.borrow_mut();
    if queue.departed {
        return;
    }
    let Some(socket) = queue.socket.take() else {
        return;
    };
    log::info!(
        "a closing client read nothing for the close timeout: resetting its connection ({reason})"
    );
    socket.reset();
    queue
        .metrics
        .forced_closes
        .with_label_values(&[reason])
        .inc();
    queue.wake_body();
}

impl Drop for SendQueue {
    fn drop(&mut self) {
        // An actor that stops without ending its body: its client ended its
        // side (the end of its stream), or the body is already gone.
        self.end("client-close");
    }
}

impl Stream for SendQueueBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = self.queue.borrow_mut();
        if let Some(chunk) = queue.chunks.pop_front() {
            if chunk.kind == Chunk::Counted {
                queue.queued_bytes -= chunk.bytes.len();
            }
            return Poll::Ready(Some(Ok(chunk.bytes)));
        }
        if queue.ending {
            return Poll::Ready(None);
        }
        let waker = cx.waker();
        if !queue
            .body_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            queue.body_waker = Some(waker.clone());
        }
        Poll::Pending
    }
}

impl Drop for SendQueueBody {
    fn drop(&mut self) {
        let mut queue = self.queue.borrow_mut();
        queue.departed = true;
        // The descriptor may be closed and reused from now on.
        queue.socket = None;
        queue.chunks.clear();
        queue.queued_bytes = 0;
        queue.metrics.connections.dec();
        if queue.counted_closing {
            queue.metrics.closing_connections.dec();
        }
        if let Some(waker) = queue.departure_waker.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunk(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    async fn drain(body: &mut SendQueueBody) -> Vec<Bytes> {
        body.map(|b| b.unwrap()).collect().await
    }

    #[actix_rt::test]
    async fn counted_bytes_leave_the_count_when_the_body_takes_them() {
        let (queue, mut body) = SendQueue::new(Metrics::new());
        queue.push(chunk("abc"), Chunk::Counted);
        queue.push(chunk("replay"), Chunk::Uncounted);
        queue.push(chunk("de"), Chunk::Counted);
        assert_eq!(queue.queued_bytes(), 5);
        assert_eq!(body.next().await.unwrap().unwrap(), chunk("abc"));
        assert_eq!(queue.queued_bytes(), 2);
        queue.end("client-close");
        queue.push(chunk("after the end"), Chunk::Essential);
        assert_eq!(drain(&mut body).await, vec![chunk("replay"), chunk("de")]);
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[actix_rt::test]
    async fn a_live_event_past_the_bound_is_refused_and_a_replay_never_is() {
        let (queue, _body) = SendQueue::new(Metrics::new());
        assert!(queue.push_event(chunk("12345"), true, 8));
        assert!(!queue.push_event(chunk("6789"), true, 8), "5 + 4 > 8");
        assert!(queue.push_event(chunk("a long replay"), false, 8));
        assert!(queue.push_event(chunk("678"), true, 8), "5 + 3 = 8");
        assert_eq!(queue.queued_bytes(), 8);
    }

    #[actix_rt::test]
    async fn abandoning_keeps_only_the_essential_chunks_and_counts_the_rest() {
        let metrics = Metrics::new();
        let (queue, mut body) = SendQueue::new(metrics.clone());
        queue.push(chunk("old"), Chunk::Counted);
        queue.push(chunk("replayed"), Chunk::Uncounted);
        queue.abandon();
        queue.push(chunk("late"), Chunk::Counted);
        queue.push(chunk("error"), Chunk::Essential);
        queue.end("slow-consumer");
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(drain(&mut body).await, vec![chunk("error")]);
        assert_eq!(metrics.snapshot()["drops"]["slow-consumer-frames"], 3);
    }

    #[actix_rt::test]
    async fn a_dropped_queue_still_gets_its_queue_written() {
        let (queue, mut body) = SendQueue::new(Metrics::new());
        queue.push(chunk("last words"), Chunk::Counted);
        drop(queue);
        assert_eq!(drain(&mut body).await, vec![chunk("last words")]);
    }

    /// A connected pair of sockets: the server's end, and the client's.
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    fn on(metrics: &Metrics, server: &std::net::TcpStream) -> (SendQueue, SendQueueBody) {
        let connection = Connection {
            permit: None,
            socket: Some(ConnectionSocket::of(server)),
        };
        SendQueue::for_connection(metrics.clone(), connection, Duration::from_millis(20))
    }

    #[actix_rt::test]
    async fn a_body_still_held_at_the_close_timeout_has_its_socket_reset() {
        use std::io::Read;
        let metrics = Metrics::new();
        let (server, mut client) = socket_pair();
        let (queue, body) = on(&metrics, &server);
        assert_eq!(metrics.snapshot()["connections"], 1);
        queue.end("heartbeat-timeout");
        drop(queue);
        assert_eq!(metrics.snapshot()["closingConnections"], 1);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(metrics.snapshot()["forcedCloses"]["heartbeat-timeout"], 1);
        let mut buf = [0u8; 8];
        // The server's end is shut down: the client reads the end at once.
        assert!(client.read(&mut buf).map_or(true, |n| n == 0));
        drop(body);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot["connections"], 0);
        assert_eq!(snapshot["closingConnections"], 0);
    }

    #[actix_rt::test]
    async fn a_body_gone_before_the_close_timeout_leaves_the_socket_alone() {
        let metrics = Metrics::new();
        let (server, client) = socket_pair();
        let (queue, body) = on(&metrics, &server);
        queue.end("slow-consumer");
        drop(body);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(metrics.snapshot()["forcedCloses"]["slow-consumer"], 0);
        client.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        let read = std::io::Read::read(&mut &client, &mut buf);
        assert_eq!(
            read.unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the connection is still open"
        );
        drop(queue);
        assert_eq!(metrics.snapshot()["connections"], 0);
    }

    #[actix_rt::test]
    async fn a_waiting_body_wakes_on_a_push_and_the_actor_on_departure() {
        let (queue, body) = SendQueue::new(Metrics::new());
        let queue = Rc::new(queue);
        let pusher = queue.clone();
        let mut body = Box::pin(body);
        let first = actix_rt::spawn(async move { body.next().await.map(|b| b.unwrap()) });
        actix_rt::task::yield_now().await;
        pusher.push(chunk("live"), Chunk::Counted);
        assert_eq!(
            first.await.unwrap(),
            Some(chunk("live")),
            "the body is dropped with its task"
        );
        queue.departed().await;
        queue.push(chunk("to nobody"), Chunk::Counted);
        assert_eq!(queue.queued_bytes(), 0);
    }
}
