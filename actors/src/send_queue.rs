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

use crate::metrics::Metrics;
use bytes::Bytes;
use futures_util::Stream;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

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
}

impl SendQueue {
    /// A new, empty queue and the body that drains it.
    pub fn new(metrics: Metrics) -> (SendQueue, SendQueueBody) {
        let queue = Rc::new(RefCell::new(Queue {
            chunks: VecDeque::new(),
            queued_bytes: 0,
            abandoned: false,
            ending: false,
            departed: false,
            body_waker: None,
            departure_waker: None,
            metrics,
        }));
        let body = SendQueueBody {
            queue: queue.clone(),
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
    pub fn end(&self) {
        let mut queue = self.queue.borrow_mut();
        queue.ending = true;
        queue.wake_body();
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

impl Drop for SendQueue {
    fn drop(&mut self) {
        self.end();
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
        queue.chunks.clear();
        queue.queued_bytes = 0;
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
        queue.end();
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
        queue.end();
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
