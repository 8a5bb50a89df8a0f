//! A latency histogram with fixed buckets, written by one worker thread without locks or
//! allocation, and summed over workers when it is read.

use std::time::Instant;

use super::Counter;

/// Bucket upper bounds (inclusive, nanoseconds) for a request's time in walnut: 50 µs to 10 s.
pub const REQUEST_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Bucket upper bounds (nanoseconds) for one plugin hook call: 1 µs to 100 ms (a budget is
/// 10 ms by default, so the top buckets catch the calls that ran out of it).
pub const HOOK_BOUNDS_NS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
];

/// Counts of observations per bucket (the last one past every bound), and their sum. One
/// worker writes it; an observation is a search over a few bounds and two plain stores.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[Counter]>,
    sum_ns: Counter,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum_ns: Counter::default(),
        }
    }

    /// Records one observation of `ns` nanoseconds.
    #[inline]
    pub fn observe_ns(&self, ns: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < ns);
        self.buckets[bucket].incr();
        self.sum_ns.add(ns);
    }

    /// Records the time from `start` to `end`.
    #[inline]
    pub fn observe(&self, start: Instant, end: Instant) {
        self.observe_ns(end.saturating_duration_since(start).as_nanos() as u64);
    }

    /// Records the time from `start` to now.
    pub fn observe_since(&self, start: Instant) {
        self.observe(start, Instant::now());
    }

    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }
}

/// Several workers' histograms added up, for a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSum {
    pub bounds: &'static [u64],
    /// Observations per bucket, not cumulative; one more than `bounds` (the +Inf bucket).
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

impl HistogramSum {
    /// The sum of `histograms`, which share their bounds.
    pub fn of<'a>(
        bounds: &'static [u64],
        histograms: impl Iterator<Item = &'a Histogram>,
    ) -> HistogramSum {
        let mut sum = HistogramSum {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum_ns: 0,
        };
        for h in histograms {
            debug_assert_eq!(h.bounds, bounds);
            for (total, c) in sum.buckets.iter_mut().zip(h.buckets.iter()) {
                *total = total.wrapping_add(c.get());
            }
            sum.sum_ns = sum.sum_ns.wrapping_add(h.sum_ns.get());
        }
        sum
    }

    /// Every observation.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        let h = Histogram::new(&[10, 100]);
        for ns in [0, 10, 11, 100, 101, 5_000] {
            h.observe_ns(ns);
        }
        let sum = HistogramSum::of(&[10, 100], [&h, &h].into_iter());
        // Bounds are inclusive, as Prometheus's `le`.
        assert_eq!(sum.buckets, [4, 4, 4]);
        assert_eq!(sum.count(), 12);
        assert_eq!(sum.sum_ns, 2 * (10 + 11 + 100 + 101 + 5_000));
    }
}
