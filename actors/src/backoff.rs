//! Exponential backoff for retries against a store, Redis or a webhook receiver.
//!
//! Why capped: a dependency that comes back should be used again within
//! seconds, not after a doubling that has grown to minutes.

use std::time::Duration;

/// The wait before retry number `failures` (1 for the first): `first`
/// doubled per earlier failure, never more than `max`.
pub fn exponential(first: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(max)
}

/// A uniformly random wait between zero and `wait` ("full jitter"). Why:
/// deliveries that failed together (a receiver's outage) must not all be
/// retried at the same instant when it comes back. Not cryptographic: the
/// randomness is the standard library's per-process hash keys.
pub fn full_jitter(wait: Duration) -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    wait.mul_f64(random as f64 / u64::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_within_the_wait_and_varies() {
        let wait = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..50).map(|_| full_jitter(wait)).collect();
        assert!(waits.iter().all(|w| *w <= wait));
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn doubles_from_first_and_stops_at_max() {
        let (first, max) = (Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(exponential(first, max, 1), first);
        assert_eq!(exponential(first, max, 2), Duration::from_millis(100));
        assert_eq!(exponential(first, max, 4), Duration::from_millis(400));
        assert_eq!(exponential(first, max, 100), max);
    }
}
