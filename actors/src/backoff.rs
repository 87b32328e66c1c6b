//! Exponential backoff for retries against a store or Redis.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_first_and_stops_at_max() {
        let (first, max) = (Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(exponential(first, max, 1), first);
        assert_eq!(exponential(first, max, 2), Duration::from_millis(100));
        assert_eq!(exponential(first, max, 4), Duration::from_millis(400));
        assert_eq!(exponential(first, max, 100), max);
    }
}
