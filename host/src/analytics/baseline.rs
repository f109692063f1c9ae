//! Baseline maths: from a series' buckets over the analysis window to the statistics the
//! policies read.

use super::bucket::{Bucket, UnixMs};
use super::histogram::DenseHistogram;
use crate::policy::types::{Baseline, Stat, Window};

/// Computes the baseline from the buckets that start in `[from, to)`. Intervals without a
/// bucket count as zero traffic, but only since the series was first seen (`first_seen`).
pub fn baseline(
    buckets: &[Bucket],
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
    let in_range: Vec<&Bucket> = buckets
        .iter()
        .filter(|b| b.start >= from && b.start < to)
        .collect();
    let busy: Vec<&&Bucket> = in_range.iter().filter(|b| b.requests > 0).collect();
    let empty_intervals = (intervals as usize).saturating_sub(in_range.len());

    let rates = in_range
        .iter()
        .map(|b| b.rate_per_minute())
        .chain(std::iter::repeat_n(0.0, empty_intervals));
    // The window's histogram is summed in a dense array: merging the buckets' compact
    // histograms one by one allocated once per bucket (a third of the analyzer's time).
    let mut total = Bucket::default();
    let mut latency = DenseHistogram::default();
    for b in &in_range {
        total.absorb_counts(b);
        latency.absorb(&b.latency);
    }
    total.latency = latency.to_sparse();
    let ms = |us: f64| us / 1000.0;
    Baseline {
        samples: u32::try_from(intervals).unwrap_or(u32::MAX),
        history_seconds: (to - first_seen).max(0) as f64 / 1000.0,
        request_rate: Stat::of(rates),
        error_rate: Stat::of(busy.iter().filter_map(|b| b.error_rate())),
        latency_mean_ms: Stat::of(busy.iter().filter_map(|b| b.latency_mean_ms())),
        latency_p99_ms: Stat::of(busy.iter().filter_map(|b| b.latency_quantile_ms(0.99))),
        requests: total.requests,
        errors: total.errors,
        overall_error_rate: total.error_rate().unwrap_or(0.0),
        overall_latency_mean_ms: total.latency_mean_ms().unwrap_or(0.0),
        overall_latency_p50_ms: total.latency.quantile(0.5).map_or(0.0, ms),
        overall_latency_p99_ms: total.latency.quantile(0.99).map_or(0.0, ms),
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
    fn bucket(start: i64, n: u64, errors: u64, latency_ms: u64) -> Bucket {
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
            );
        }
        b.snapshot()
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
        let b = baseline(&buckets, 0, 3 * MIN, 0, MIN);
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
        let b = baseline(&[bucket(0, 40, 0, 5)], 0, 4 * MIN, 0, MIN);
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
        let b = baseline(
            &[bucket(8 * MIN, 5, 0, 5), bucket(9 * MIN, 5, 0, 5)],
            0,
            10 * MIN,
            8 * MIN,
            MIN,
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
        let b = baseline(&[], 0, MIN, MIN, MIN);
        assert_eq!(b.samples, 0);
        assert_eq!(b.request_rate, Stat::default());
    }

    #[test]
    fn the_window_under_test() {
        let w = window(Some(&bucket(MIN, 30, 3, 10)), MIN, MIN);
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
