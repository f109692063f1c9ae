//! Time buckets: the traffic of one route or backend during one interval.

use super::histogram::{DenseHistogram, Histogram};

/// Milliseconds since the Unix epoch: the store's clock.
pub type UnixMs = i64;

/// A completed bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Start of the interval.
    pub start: UnixMs,
    /// Length of the interval (a bucket rolled up from finer ones is longer).
    pub interval_ms: i64,
    pub requests: u64,
    /// Responses with status ≥ 500.
    pub errors: u64,
    /// Of `requests`, those that reached a backend (a route's requests rejected before
    /// one, by its limit, its auth or an open breaker, did not), and of those, the failed.
    /// A route's breaker threshold on the only backend of its upstream is learned from
    /// these: a breaker-open 503 must not feed the threshold that opened the breaker.
    pub backend_requests: u64,
    pub backend_errors: u64,
    pub latency_total_us: u64,
    pub latency_max_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency: Histogram,
}

/// One request as a bucket sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub error: bool,
    pub latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The bucket being filled.
#[derive(Clone)]
pub struct OpenBucket {
    pub start: UnixMs,
    pub interval_ms: i64,
    requests: u64,
    errors: u64,
    backend_requests: u64,
    backend_errors: u64,
    latency_total_us: u64,
    latency_max_us: u64,
    bytes_in: u64,
    bytes_out: u64,
    latency: DenseHistogram,
}

impl OpenBucket {
    pub fn new(start: UnixMs, interval_ms: i64) -> Self {
        Self {
            start,
            interval_ms,
            requests: 0,
            errors: 0,
            backend_requests: 0,
            backend_errors: 0,
            latency_total_us: 0,
            latency_max_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            latency: DenseHistogram::default(),
        }
    }

    /// Reopens a bucket that was saved while in progress (at shutdown).
    pub fn resume(b: &Bucket) -> Self {
        let mut open = Self::new(b.start, b.interval_ms);
        open.requests = b.requests;
        open.errors = b.errors;
        open.backend_requests = b.backend_requests;
        open.backend_errors = b.backend_errors;
        open.latency_total_us = b.latency_total_us;
        open.latency_max_us = b.latency_max_us;
        open.bytes_in = b.bytes_in;
        open.bytes_out = b.bytes_out;
        open.latency = DenseHistogram::from_sparse(&b.latency);
        open
    }

    /// Adds a request (`reached`: it reached a backend), its latency to the histogram too
    /// when `histogram` is set.
    pub fn add(&mut self, s: &Sample, histogram: bool, reached: bool) {
        self.requests += 1;
        self.errors += u64::from(s.error);
        self.backend_requests += u64::from(reached);
        self.backend_errors += u64::from(reached && s.error);
        self.latency_total_us = self.latency_total_us.saturating_add(s.latency_us);
        self.latency_max_us = self.latency_max_us.max(s.latency_us);
        self.bytes_in = self.bytes_in.saturating_add(s.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(s.bytes_out);
        if histogram {
            self.latency.add(s.latency_us);
        }
    }

    pub fn end(&self) -> UnixMs {
        self.start + self.interval_ms
    }

    /// Reads what [`add`](Self::add) would write for a request of this latency, and
    /// returns a value made from it: the store reads ahead this way to bring the lines in.
    pub fn peek(&self, latency_us: u64) -> u64 {
        self.requests ^ u64::from(self.latency.peek(latency_us))
    }

    pub fn snapshot(&self) -> Bucket {
        Bucket {
            start: self.start,
            interval_ms: self.interval_ms,
            requests: self.requests,
            errors: self.errors,
            backend_requests: self.backend_requests,
            backend_errors: self.backend_errors,
            latency_total_us: self.latency_total_us,
            latency_max_us: self.latency_max_us,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            latency: self.latency.to_sparse(),
        }
    }
}

impl Bucket {
    /// Adds another bucket's traffic (for roll-ups).
    pub fn absorb(&mut self, other: &Bucket) {
        self.absorb_counts(other);
        self.latency.merge(&other.latency);
    }

    /// Adds another bucket's counts and totals, not its histogram.
    pub fn absorb_counts(&mut self, other: &Bucket) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.backend_requests += other.backend_requests;
        self.backend_errors += other.backend_errors;
        self.latency_total_us = self.latency_total_us.saturating_add(other.latency_total_us);
        self.latency_max_us = self.latency_max_us.max(other.latency_max_us);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
    }

    pub fn end(&self) -> UnixMs {
        self.start + self.interval_ms
    }

    /// Requests per minute over the bucket's interval.
    pub fn rate_per_minute(&self) -> f64 {
        self.requests as f64 * 60_000.0 / self.interval_ms.max(1) as f64
    }

    /// Fraction of requests that failed, or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    pub fn latency_mean_ms(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.latency_total_us as f64 / self.requests as f64 / 1000.0)
    }

    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        self.latency.quantile(q).map(|us| us / 1000.0)
    }
}

/// Start of the bucket holding `t`.
pub fn align(t: UnixMs, interval_ms: i64) -> UnixMs {
    t - t.rem_euclid(interval_ms)
}

impl DenseHistogram {
    fn from_sparse(h: &Histogram) -> Self {
        let mut d = DenseHistogram::default();
        d.absorb(h);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(error: bool, latency_us: u64) -> Sample {
        Sample {
            error,
            latency_us,
            bytes_in: 10,
            bytes_out: 100,
        }
    }

    #[test]
    fn alignment_at_boundaries() {
        assert_eq!(align(60_000, 60_000), 60_000);
        assert_eq!(align(119_999, 60_000), 60_000);
        assert_eq!(align(120_000, 60_000), 120_000);
        assert_eq!(align(0, 1000), 0);
        assert_eq!(align(-1, 1000), -1000);
    }

    #[test]
    fn an_open_bucket_sums_its_samples() {
        let mut b = OpenBucket::new(0, 60_000);
        b.add(&sample(false, 1000), true, true);
        b.add(&sample(true, 3000), true, true);
        let s = b.snapshot();
        assert_eq!((s.requests, s.errors), (2, 1));
        assert_eq!((s.backend_requests, s.backend_errors), (2, 1));
        assert_eq!(s.latency_total_us, 4000);
        assert_eq!(s.latency_max_us, 3000);
        assert_eq!((s.bytes_in, s.bytes_out), (20, 200));
        assert_eq!(s.rate_per_minute(), 2.0);
        assert_eq!(s.error_rate(), Some(0.5));
        assert_eq!(s.latency_mean_ms(), Some(2.0));
        assert_eq!(s.latency.count(), 2);
    }

    #[test]
    fn resuming_a_saved_bucket_keeps_its_counts() {
        let mut b = OpenBucket::new(5000, 1000);
        b.add(&sample(false, 42), true, true);
        b.add(&sample(true, 42), true, false);
        let saved = b.snapshot();
        let mut resumed = OpenBucket::resume(&saved);
        resumed.add(&sample(false, 42), true, true);
        assert_eq!(resumed.snapshot().requests, 3);
        assert_eq!(resumed.snapshot().backend_requests, 2);
        assert_eq!(resumed.snapshot().latency.count(), 3);
    }

    #[test]
    fn requests_that_never_reached_a_backend_are_counted_apart() {
        let mut b = OpenBucket::new(0, 1000);
        b.add(&sample(true, 10), true, false); // say a breaker-open 503
        b.add(&sample(true, 900), true, true); // a backend's 502
        b.add(&sample(false, 900), true, true);
        let s = b.snapshot();
        assert_eq!((s.requests, s.errors), (3, 2));
        assert_eq!((s.backend_requests, s.backend_errors), (2, 1));
        let mut rolled = Bucket::default();
        rolled.absorb(&s);
        rolled.absorb(&s);
        assert_eq!((rolled.backend_requests, rolled.backend_errors), (4, 2));
    }

    #[test]
    fn rates_scale_with_the_interval() {
        let b = Bucket {
            requests: 10,
            interval_ms: 1000,
            ..Default::default()
        };
        assert_eq!(b.rate_per_minute(), 600.0);
        assert_eq!(Bucket::default().error_rate(), None);
    }
}
