//! A latency histogram that every subscriber task records into, and the
//! percentiles read from it.
//!
//! Why not keep the samples: a fan-out run delivers millions of events, and
//! a sorted vector of them would cost the load generator more memory and
//! time than the target it measures. Why not one histogram per subscriber:
//! 10,000 subscribers times a few thousand buckets is hundreds of MB. So it
//! is one shared histogram of atomic counters (uncontended in practice: the
//! load generator runs on one core) with log-linear buckets, HdrHistogram's
//! layout in miniature: values below `2 * SUB` are exact, above that every
//! power of two is split into `SUB` buckets, so a reported value is within
//! 1/`SUB` (under 0.8%) of the truth.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two, as a power of two: 2^7 = 128.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values are recorded in nanoseconds; anything above 2^40 ns (18 minutes)
/// lands in the last bucket, which no run of this tool reaches.
const MAX_BITS: u32 = 40;
const BUCKETS: usize = ((MAX_BITS - SUB_BITS) as usize + 1) * SUB as usize;

/// A concurrent histogram of `u64` values (nanoseconds here).
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    max: AtomicU64,
}

/// The figures a run reports, in the histogram's unit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, value: u64) {
        self.buckets[index(value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0 < q <= 1) by nearest rank: the smallest
    /// bucket holding at least `ceil(q * count)` values, reported as the
    /// highest value of that bucket (never above the true maximum). 0 when
    /// nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        // The epsilon keeps 0.99 * 100 (98.99999… or 99.00000…1 in floating
        // point) at rank 99.
        let rank = ((q * count as f64 - 1e-9).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return highest_in(i).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of `value`: exact below `2 * SUB`, then `SUB` buckets for each
/// further power of two.
fn index(value: u64) -> usize {
    let value = value.min((1 << MAX_BITS) - 1);
    if value < 2 * SUB {
        return value as usize;
    }
    let bits = 64 - value.leading_zeros();
    let shift = bits - (SUB_BITS + 1);
    // `value >> shift` is in [SUB, 2 * SUB): the top SUB_BITS + 1 bits.
    (shift as u64 * SUB + (value >> shift)) as usize
}

/// The highest value that falls into bucket `i` (the inverse of `index`).
fn highest_in(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let top = i - shift * SUB;
    ((top + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, 50);
        assert_eq!(p.p99, 99);
        assert_eq!(p.max, 100);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(h.quantile(0.001), 1);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        assert_eq!(Histogram::default().percentiles(), Percentiles::default());
    }

    #[test]
    fn buckets_are_contiguous_and_invert() {
        // Every bucket boundary maps back to its own bucket, and the next
        // value starts the next bucket: no gaps, no overlaps.
        for i in 0..BUCKETS - 1 {
            let hi = highest_in(i);
            assert_eq!(index(hi), i, "highest of bucket {i}");
            assert_eq!(index(hi + 1), i + 1, "value after bucket {i}");
        }
    }

    #[test]
    fn large_values_are_within_one_percent() {
        for &v in &[257u64, 1_000, 12_345, 999_999, 1_500_000, 7_777_777_777] {
            let h = Histogram::default();
            h.record(v);
            h.record(v * 10); // the max must not hide the p50's rounding
            let p50 = h.quantile(0.5);
            assert!(p50 >= v, "{p50} < {v}");
            assert!((p50 - v) as f64 <= v as f64 / SUB as f64, "{p50} vs {v}");
        }
    }

    #[test]
    fn p99_of_a_skewed_run() {
        // 990 fast deliveries and 10 slow ones: p99 is still fast, max is slow.
        let h = Histogram::default();
        for _ in 0..990 {
            h.record(1_000_000);
        }
        for _ in 0..10 {
            h.record(50_000_000);
        }
        let p = h.percentiles();
        assert!(p.p99 < 1_010_000, "{}", p.p99);
        assert!(p.p50 < 1_010_000);
        assert_eq!(p.max, 50_000_000);
        // One more slow value pushes the 99th percentile into the slow group.
        h.record(50_000_000);
        assert!(h.quantile(0.99) >= 50_000_000);
    }

    #[test]
    fn huge_values_are_clamped_not_lost() {
        let h = Histogram::default();
        h.record(u64::MAX);
        assert_eq!(h.count(), 1);
        assert_eq!(h.percentiles().max, u64::MAX);
    }
}
