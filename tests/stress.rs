//! The delivery guarantees under stress, bounded in time and run by
//! `scripts/test`: a client sees every event of an execution exactly once
//! and in order, and a 202 means stored, while the broker is pushed where
//! it broke before. Each scenario runs alone, with another process loading
//! a core ([`stress::load::Stressed`]), because that is where the seam race
//! showed.
//!
//! `STRESS_SCALE=10 cargo test --test stress` runs each scenario ten times
//! longer (thousands of resubscribe bursts); CI runs scale 1.

mod common;

mod stress {
    pub mod coalescing;
    pub mod kill;
    pub mod load;
    pub mod retries;
    pub mod seam;
    pub mod stalled;
}

use common::Broker;
use std::sync::Arc;
use stress::load::{scale, Stressed};

/// Resubscribe in a burst, hundreds of times (thousands at scale 10), while
/// producers post flat out: every subscription replays from its `fromSeq`
/// and goes live without a hole or a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resubscribe_bursts_while_producers_post_flat_out() {
    let _stressed = Stressed::begin();
    let broker = Arc::new(Broker::start().await);
    stress::seam::resubscribe_bursts(&broker, 4, 75 * scale()).await;
}

/// `kill -9` while producers post and subscribers read, then a restart on
/// the same data, three times (thirty at scale 10); a batch the kill cut
/// off is posted again under its `Idempotency-Key`, and is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_with_resuming_subscribers() {
    let _stressed = Stressed::begin();
    stress::kill::kill_under_load_with_resuming_subscribers(3 * scale()).await;
}

/// Eight producers posting thoughts (and some facts) to three executions at
/// a rate that coalesces most of them: nothing is answered as failed, and
/// every accepted event went out once or was counted as replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalescing_under_concurrent_producers() {
    let _stressed = Stressed::begin();
    stress::coalescing::coalescing_under_concurrent_producers(8, 12 * scale() as u64, 50).await;
}

/// Stalled readers (WebSocket and SSE) beside good subscribers, against a
/// per-address limit of five: every cut socket is closed within the close
/// timeout and counts against the limit until then, and the good ones get
/// every seq in order. Ten rounds (a hundred at scale 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_readers_against_the_per_ip_limit() {
    let _stressed = Stressed::begin();
    stress::stalled::stalled_readers_against_the_per_ip_limit(10 * scale()).await;
}

/// Eight producers post keyed batches and retry each one to three times,
/// some retries at once: every event is stored and delivered once, and
/// every retry gets the first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_batches_are_stored_once() {
    let _stressed = Stressed::begin();
    stress::retries::retried_batches_are_stored_once(8, 40 * scale()).await;
}
