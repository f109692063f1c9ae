//! Baseline maths: from a series' buckets over the analysis window to the statistics the
//! policies read.

use std::sync::Arc;

use super::bucket::{Bucket, UnixMs};
use super::histogram::DenseHistogram;
use crate::policy::types::{Baseline, Stat, Window};

/// A completed bucket in a series' baseline window, with what the baseline reads of it
/// worked out once (its p99 among them) and kept inline: a window is summed on every tick,
/// by reading one contiguous array instead of following a pointer per bucket.
#[derive(Debug, Clone)]
pub struct WindowBucket {
    /// The bucket itself, for its latency histogram.
    pub bucket: Arc<Bucket>,
    start: UnixMs,
    requests: u64,
    errors: u64,
    reached: Reached,
    latency_total_us: u64,
    rate_per_minute: f64,
    error_rate: Option<f64>,
    latency_mean_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl WindowBucket {
    pub fn new(bucket: Arc<Bucket>) -> Self {
        Self {
            start: bucket.start,
            requests: bucket.requests,
            errors: bucket.errors,
            reached: Reached {
                requests: bucket.backend_requests,
                errors: bucket.backend_errors,
            },
            latency_total_us: bucket.latency_total_us,
            rate_per_minute: bucket.rate_per_minute(),
            error_rate: bucket.error_rate(),
            latency_mean_ms: bucket.latency_mean_ms(),
            p99_ms: bucket.latency_quantile_ms(0.99),
            bucket,
        }
    }

    pub fn start(&self) -> UnixMs {
        self.start
    }
}

/// Of a window's requests, those that reached a backend, and the failed among them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reached {
    pub requests: u64,
    pub errors: u64,
}

/// Sums over a window's buckets, which a baseline is computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    buckets: u64,
    requests: u64,
    errors: u64,
    pub reached: Reached,
    latency_total_us: u64,
    rate: Moments,
    error_rate: Moments,
    latency_mean_ms: Moments,
    latency_p99_ms: Moments,
}

/// Count, sum and sum of squares of the values a [`Stat`] is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Moments {
    n: u64,
    sum: f64,
    sum_sq: f64,
}

impl Moments {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.n += 1;
            self.sum += v;
            self.sum_sq += v * v;
        }
    }

    /// The statistic over `n` values (more than were added: the rest are zeros).
    fn stat_over(&self, n: u64) -> Stat {
        Stat::from_moments(n, self.sum, self.sum_sq)
    }

    fn stat(&self) -> Stat {
        self.stat_over(self.n)
    }
}

impl Sums {
    /// The sums over `buckets`.
    pub fn of<'a>(buckets: impl Iterator<Item = &'a WindowBucket>) -> Sums {
        let mut sums = Sums::default();
        for b in buckets {
            sums.add(b);
        }
        sums
    }

    fn add(&mut self, b: &WindowBucket) {
        self.buckets += 1;
        self.requests += b.requests;
        self.errors += b.errors;
        self.reached.requests += b.reached.requests;
        self.reached.errors += b.reached.errors;
        self.latency_total_us = self.latency_total_us.saturating_add(b.latency_total_us);
        self.rate.add(Some(b.rate_per_minute));
        self.error_rate.add(b.error_rate);
        self.latency_mean_ms.add(b.latency_mean_ms);
        self.latency_p99_ms.add(b.p99_ms);
    }
}

/// The buckets' latency histograms summed.
pub fn latency_of<'a>(buckets: impl Iterator<Item = &'a WindowBucket>) -> DenseHistogram {
    let mut latency = DenseHistogram::default();
    for b in buckets {
        latency.absorb(&b.bucket.latency);
    }
    latency
}

/// Computes the baseline of a window from its buckets' sums and summed latency histogram.
/// The window starts at `from` and ends at `to`; intervals without a bucket count as zero
/// traffic, but only since the series was first seen (`first_seen`).
pub fn baseline(
    sums: &Sums,
    latency: &DenseHistogram,
    from: UnixMs,
    to: UnixMs,
    first_seen: UnixMs,
    interval_ms: i64,
) -> Baseline {
    let start = from.max(first_seen);
    let intervals = if to > start {
        ((to - start) + interval_ms - 1) / interval_ms
    } else {
        0
    };
    let total = Bucket {
        requests: sums.requests,
        errors: sums.errors,
        latency_total_us: sums.latency_total_us,
        ..Default::default()
    };
    let ms = |us: Option<f64>| us.map_or(0.0, |us| us / 1000.0);
    let [p50, p99] = latency.quantiles([0.5, 0.99]);
    Baseline {
        samples: u32::try_from(intervals).unwrap_or(u32::MAX),
        history_seconds: (to - first_seen).max(0) as f64 / 1000.0,
        // Every interval is a sample of the rate: those without a bucket are zeros.
        request_rate: sums
            .rate
            .stat_over(u64::try_from(intervals).unwrap_or(0).max(sums.buckets)),
        error_rate: sums.error_rate.stat(),
        latency_mean_ms: sums.latency_mean_ms.stat(),
        latency_p99_ms: sums.latency_p99_ms.stat(),
        requests: total.requests,
        errors: total.errors,
        overall_error_rate: total.error_rate().unwrap_or(0.0),
        overall_latency_mean_ms: total.latency_mean_ms().unwrap_or(0.0),
        overall_latency_p50_ms: ms(p50),
        overall_latency_p99_ms: ms(p99),
    }
}

/// The bucket under test, from the bucket starting at `start` (absent: no traffic).
pub fn window(bucket: Option<&Bucket>, start: UnixMs, interval_ms: i64) -> Window {
    match bucket {
        Some(b) => Window {
            start_ms: b.start,
            interval_ms: b.interval_ms,
            requests: b.requests,
            errors: b.errors,
            request_rate: b.rate_per_minute(),
            error_rate: b.error_rate(),
            latency_mean_ms: b.latency_mean_ms(),
            latency_p99_ms: b.latency_quantile_ms(0.99),
        },
        None => Window {
            start_ms: start,
            interval_ms,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::bucket::{OpenBucket, Sample};

    const MIN: i64 = 60_000;

    /// A one-minute bucket with `n` requests of `latency_ms`, `errors` of them failed.
    fn bucket(start: i64, n: u64, errors: u64, latency_ms: u64) -> WindowBucket {
        let mut b = OpenBucket::new(start, MIN);
        for i in 0..n {
            b.add(
                &Sample {
                    error: i < errors,
                    latency_us: latency_ms * 1000,
                    bytes_in: 0,
                    bytes_out: 0,
                },
                true,
                true,
            );
        }
        WindowBucket::new(Arc::new(b.snapshot()))
    }

    /// The baseline of buckets, as the analyzer computes it from its window.
    fn of(buckets: &[WindowBucket], from: i64, to: i64, first_seen: i64) -> Baseline {
        let latency = latency_of(buckets.iter());
        baseline(
            &Sums::of(buckets.iter()),
            &latency,
            from,
            to,
            first_seen,
            MIN,
        )
    }

    #[test]
    fn statistics_match_hand_computed_values() {
        // Rates 10, 20, 30 per minute: mean 20, population stddev sqrt(200/3) = 8.1650.
        // Error rates 0.1, 0.1, 0.2: mean 0.1333, stddev 0.04714.
        // Mean latencies 10, 20, 30 ms.
        let buckets = [
            bucket(0, 10, 1, 10),
            bucket(MIN, 20, 2, 20),
            bucket(2 * MIN, 30, 6, 30),
        ];
        let b = of(&buckets, 0, 3 * MIN, 0);
        assert_eq!(b.samples, 3);
        assert_eq!(b.history_seconds, 180.0);
        assert!((b.request_rate.mean - 20.0).abs() < 1e-9);
        assert!((b.request_rate.stddev - (200.0f64 / 3.0).sqrt()).abs() < 1e-9);
        assert!((b.error_rate.mean - 0.4 / 3.0).abs() < 1e-9);
        assert!((b.error_rate.stddev - 0.047140452).abs() < 1e-6);
        assert!((b.latency_mean_ms.mean - 20.0).abs() < 1e-9);
        assert_eq!(b.requests, 60);
        assert_eq!(b.errors, 9);
        assert!((b.overall_error_rate - 0.15).abs() < 1e-12);
        // Pooled mean latency: (10×10 + 20×20 + 30×30) / 60 = 23.33 ms.
        assert!((b.overall_latency_mean_ms - 1400.0 / 60.0).abs() < 1e-9);
        // p99 of the pooled histogram is in the 30 ms bin (within 6.25 %).
        assert!(
            (b.overall_latency_p99_ms - 30.0).abs() / 30.0 < 0.0625,
            "{}",
            b.overall_latency_p99_ms
        );
    }

    #[test]
    fn quiet_intervals_count_as_zero_traffic() {
        // One busy minute out of four: rates 40, 0, 0, 0 → mean 10, stddev sqrt(300).
        let b = of(&[bucket(0, 40, 0, 5)], 0, 4 * MIN, 0);
        assert_eq!(b.samples, 4);
        assert!((b.request_rate.mean - 10.0).abs() < 1e-9);
        assert!((b.request_rate.stddev - 300f64.sqrt()).abs() < 1e-9);
        assert_eq!(
            b.latency_mean_ms.stddev, 0.0,
            "latency only from busy buckets"
        );
    }

    #[test]
    fn history_starts_when_the_series_was_first_seen() {
        // Window is 10 minutes but the route appeared 2 minutes ago.
        let b = of(
            &[bucket(8 * MIN, 5, 0, 5), bucket(9 * MIN, 5, 0, 5)],
            0,
            10 * MIN,
            8 * MIN,
        );
        assert_eq!(b.samples, 2);
        assert_eq!(b.history_seconds, 120.0);
        assert_eq!(
            b.request_rate,
            Stat {
                mean: 5.0,
                stddev: 0.0
            }
        );
    }

    #[test]
    fn no_history_no_samples() {
        let b = of(&[], 0, MIN, MIN);
        assert_eq!(b.samples, 0);
        assert_eq!(b.request_rate, Stat::default());
    }

    #[test]
    fn the_window_under_test() {
        let w = window(Some(&bucket(MIN, 30, 3, 10).bucket), MIN, MIN);
        assert_eq!(
            (w.requests, w.request_rate, w.error_rate),
            (30, 30.0, Some(0.1))
        );
        let empty = window(None, MIN, MIN);
        assert_eq!(
            (empty.requests, empty.request_rate, empty.error_rate),
            (0, 0.0, None)
        );
    }
}
