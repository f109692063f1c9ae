//! The records policies read and return. They mirror the WIT contract's records.

use serde::Serialize;

/// Mean and (population) standard deviation of a metric across baseline buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub stddev: f64,
}

impl Stat {
    /// Mean and standard deviation of `n` values with this sum and sum of squares; zeros
    /// when `n` is zero.
    pub fn from_moments(n: u64, sum: f64, sum_sq: f64) -> Stat {
        if n == 0 {
            return Stat::default();
        }
        let mean = sum / n as f64;
        let var = (sum_sq / n as f64 - mean * mean).max(0.0);
        Stat {
            mean,
            stddev: var.sqrt(),
        }
    }
}

/// What was learned about one route or backend over the analysis window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Baseline {
    /// Buckets (intervals) behind the statistics; empty intervals count, as zero traffic.
    pub samples: u32,
    /// How long the series has been seen, up to the start of the bucket under test.
    pub history_seconds: f64,
    /// Requests per minute, per bucket.
    pub request_rate: Stat,
    /// Failed fraction (status ≥ 500), per bucket with traffic.
    pub error_rate: Stat,
    /// Mean latency in ms, per bucket with traffic.
    pub latency_mean_ms: Stat,
    /// p99 latency in ms, per bucket with traffic.
    pub latency_p99_ms: Stat,
    /// Totals over the window.
    pub requests: u64,
    pub errors: u64,
    /// Over the whole window: errors / requests.
    pub overall_error_rate: f64,
    /// Over the whole window: total latency / requests.
    pub overall_latency_mean_ms: f64,
    /// Over the whole window, from the merged histogram.
    pub overall_latency_p50_ms: f64,
    pub overall_latency_p99_ms: f64,
}

/// The bucket under test: the most recent complete one.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    /// Start, in ms since the Unix epoch.
    pub start_ms: i64,
    pub interval_ms: i64,
    pub requests: u64,
    pub errors: u64,
    /// Requests per minute.
    pub request_rate: f64,
    /// `None` when the bucket had no traffic (nothing to compare).
    pub error_rate: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// The metrics anomalies are detected on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    RequestRate,
    ErrorRate,
    LatencyMean,
    LatencyP99,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::RequestRate,
        Metric::ErrorRate,
        Metric::LatencyMean,
        Metric::LatencyP99,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::RequestRate => "request_rate",
            Metric::ErrorRate => "error_rate",
            Metric::LatencyMean => "latency_mean",
            Metric::LatencyP99 => "latency_p99",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The metric's baseline statistic.
    pub fn stat(self, b: &Baseline) -> Stat {
        match self {
            Metric::RequestRate => b.request_rate,
            Metric::ErrorRate => b.error_rate,
            Metric::LatencyMean => b.latency_mean_ms,
            Metric::LatencyP99 => b.latency_p99_ms,
        }
    }

    /// The metric's value in the bucket under test.
    pub fn current(self, w: &Window) -> Option<f64> {
        match self {
            Metric::RequestRate => Some(w.request_rate),
            Metric::ErrorRate => w.error_rate,
            Metric::LatencyMean => w.latency_mean_ms,
            Metric::LatencyP99 => w.latency_p99_ms,
        }
    }
}

/// One anomalous metric, as an anomaly policy reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Finding {
    pub metric: Metric,
    pub current: f64,
    pub mean: f64,
    pub stddev: f64,
    /// How unusual: for the z-score policy, `(current − mean) / stddev`.
    pub score: f64,
}

/// A rate-limit policy's answer for one route.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "per_minute")]
pub enum LimitDecision {
    /// Not enough history: the route's static limit (if any) applies.
    Learning,
    /// Limit the whole route to this many requests per minute.
    Limit(f64),
    /// No limit.
    Unlimited,
}

/// One backend as a weighting policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendStats {
    pub backend: String,
    pub baseline: Baseline,
    /// True when its circuit breaker is open.
    pub breaker_open: bool,
}
