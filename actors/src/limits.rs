//! Limits that keep one client from starving the rest: connections in total
//! and per address, and token buckets for messages and events per second.
//!
//! Why these shapes: a connection permit is released when the connection's
//! response body is dropped, however it ends, so a crash path can never
//! leak a slot; and the body, not the actor, because the HTTP server may
//! hold the socket after the actor is gone (a client that stopped reading:
//! `send_queue.rs`), and the slot must count until the socket is closed;
//! a token bucket lets a client burst briefly (a reconnect resubscribing to
//! twenty executions) while holding it to a steady rate.

use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Counts open connections, in total and per client address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Where refusals are counted, when the broker's figures are given.
    refusals: Option<IntCounter>,
}

/// One open connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Total(usize),
    /// `max_connections_per_ip` are open from this address.
    PerAddress(usize),
}

impl ConnectionLimiter {
    /// At most `max_total` connections, `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Self::build(max_total, max_per_ip, None)
    }

    /// As [`ConnectionLimiter::new`], counting each refusal in `metrics` as
    /// a `too-many-connections` client error: a flood of connections that
    /// hits the limit must show in `/admin/stats`, not only in the refused
    /// clients' answers.
    pub fn counted(max_total: usize, max_per_ip: usize, metrics: Metrics) -> Arc<Self> {
        let refusals = metrics
            .client_errors
            .with_label_values(&[ErrorCode::TooManyConnections.as_str()]);
        Self::build(max_total, max_per_ip, Some(refusals))
    }

    fn build(max_total: usize, max_per_ip: usize, refusals: Option<IntCounter>) -> Arc<Self> {
        Arc::new(ConnectionLimiter {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
            refusals,
        })
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let admitted = self.try_admit(ip);
        if let (Err(_), Some(refusals)) = (&admitted, &self.refusals) {
            refusals.inc();
        }
        admitted
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut open = self.open.lock().expect("limiter lock");
        if open.0 >= self.max_total {
            return Err(Refusal::Total(self.max_total));
        }
        let from_ip = open.1.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::PerAddress(self.max_per_ip));
        }
        *from_ip += 1;
        open.0 += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("limiter lock").0
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().expect("limiter lock");
        open.0 -= 1;
        if let Some(from_ip) = open.1.get_mut(&self.ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self::new_at(rate, burst, Instant::now())
    }

    /// A full bucket, as of `now`.
    pub(crate) fn new_at(rate: f64, burst: f64, now: Instant) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub fn take(&mut self, n: f64) -> bool {
        self.take_at(n, Instant::now())
    }

    /// Takes `n` tokens at `now` if there are that many; otherwise takes none.
    pub(crate) fn take_at(&mut self, n: f64, now: Instant) -> bool {
        if self.available_at(now) >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

impl Bucket {
    /// The tokens there are at `now`, taking none.
    pub(crate) fn available_at(&mut self, now: Instant) -> f64 {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_at = self.refilled_at.max(now);
        self.tokens
    }

    /// Whether the bucket has refilled completely at `now` (it then holds no
    /// state worth keeping).
    pub(crate) fn is_full_at(&mut self, now: Instant) -> bool {
        self.available_at(now) >= self.burst
    }
}

/// One bucket per key (a producer, an address), forgetting idle keys.
#[derive(Debug)]
pub struct KeyedBuckets {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Keys kept before idle full buckets are swept, so the map stays bounded.
const SWEEP_ABOVE: usize = 10_000;

impl KeyedBuckets {
    /// Buckets of `rate` per second holding `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        KeyedBuckets {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens from `key`'s bucket if it has them.
    pub fn take(&self, key: &str, n: f64) -> bool {
        let mut buckets = self.buckets.lock().expect("buckets lock");
        if buckets.len() > SWEEP_ABOVE {
            // A bucket that has refilled completely holds no state worth keeping.
            let now = Instant::now();
            buckets.retain(|_, b| !b.is_full_at(now));
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(self.rate, self.burst))
            .take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn permits_count_per_address_and_free_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.admit(a).unwrap();
        let _second = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).unwrap_err(), Refusal::PerAddress(2));
        let _third = limiter.admit(b).unwrap();
        assert_eq!(limiter.admit(b).unwrap_err(), Refusal::Total(3));
        drop(first);
        assert_eq!(limiter.open(), 2);
        assert!(limiter.admit(a).is_ok());
    }

    #[test]
    fn refusals_are_counted_when_metrics_are_given() {
        let metrics = Metrics::new();
        let limiter = ConnectionLimiter::counted(1, 1, metrics.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let _held = limiter.admit(a).unwrap();
        assert!(limiter.admit(a).is_err());
        assert!(limiter.admit(a).is_err());
        assert_eq!(
            metrics.snapshot()["clientErrors"]["too-many-connections"],
            2
        );
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10.0, 5.0);
        bucket.refilled_at = start;
        for _ in 0..5 {
            assert!(bucket.take_at(1.0, start));
        }
        assert!(!bucket.take_at(1.0, start), "the burst is spent");
        assert!(
            bucket.take_at(1.0, start + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!bucket.take_at(1.0, start + Duration::from_millis(100)));
        assert!(
            !bucket.take_at(50.0, start + Duration::from_secs(60)),
            "never more than the burst"
        );
    }
}
