//! Between the host's policy records and the WIT contract's (same fields, different
//! types), and checks on what plugins answer.

use super::bindings::types as wit;
use crate::analytics::analyzer::SeriesReport;
use crate::analytics::bucket::Bucket;
use crate::policy::types::{BackendStats, Baseline, Finding, LimitDecision, Metric, Stat, Window};
use crate::upstream::breaker::BreakerState;

fn stat(s: Stat) -> wit::Stat {
    wit::Stat {
        mean: s.mean,
        stddev: s.stddev,
    }
}

pub fn baseline(b: &Baseline) -> wit::Baseline {
    wit::Baseline {
        samples: b.samples,
        history_seconds: b.history_seconds,
        request_rate: stat(b.request_rate),
        error_rate: stat(b.error_rate),
        latency_mean_ms: stat(b.latency_mean_ms),
        latency_p99_ms: stat(b.latency_p99_ms),
        requests: b.requests,
        errors: b.errors,
        overall_error_rate: b.overall_error_rate,
        overall_latency_mean_ms: b.overall_latency_mean_ms,
        overall_latency_p50_ms: b.overall_latency_p50_ms,
        overall_latency_p99_ms: b.overall_latency_p99_ms,
    }
}

pub fn window(w: &Window) -> wit::Window {
    wit::Window {
        start_ms: w.start_ms,
        interval_ms: w.interval_ms,
        requests: w.requests,
        errors: w.errors,
        request_rate: w.request_rate,
        error_rate: w.error_rate,
        latency_mean_ms: w.latency_mean_ms,
        latency_p99_ms: w.latency_p99_ms,
    }
}

pub fn series(kind: wit::SeriesKind, r: &SeriesReport) -> wit::Series {
    wit::Series {
        kind,
        name: r.name.to_string(),
        baseline: baseline(&r.baseline),
        current: window(&r.current),
    }
}

pub fn backend(
    b: &BackendStats,
    current: &Window,
    learning: bool,
    state: BreakerState,
) -> wit::BackendStats {
    wit::BackendStats {
        backend: b.backend.clone(),
        baseline: baseline(&b.baseline),
        current: window(current),
        breaker: match state {
            BreakerState::Closed => wit::BreakerState::Closed,
            BreakerState::Open => wit::BreakerState::Open,
            BreakerState::HalfOpen => wit::BreakerState::HalfOpen,
        },
        learning,
    }
}

pub fn bucket(b: &Bucket) -> wit::Bucket {
    wit::Bucket {
        start_ms: b.start,
        interval_ms: b.interval_ms,
        requests: b.requests,
        errors: b.errors,
        latency_mean_ms: b.latency_mean_ms().unwrap_or(0.0),
        latency_p99_ms: b.latency_quantile_ms(0.99).unwrap_or(0.0),
        bytes_in: b.bytes_in,
        bytes_out: b.bytes_out,
    }
}

/// What is wrong with a plugin's answer.
pub type Invalid = String;

pub fn limit(d: wit::LimitDecision) -> Result<LimitDecision, Invalid> {
    match d {
        wit::LimitDecision::Learning => Ok(LimitDecision::Learning),
        wit::LimitDecision::Unlimited => Ok(LimitDecision::Unlimited),
        wit::LimitDecision::Limit(v) if v.is_finite() && v >= 0.0 => Ok(LimitDecision::Limit(v)),
        wit::LimitDecision::Limit(v) => {
            Err(format!("limit {v} is not a finite, non-negative number"))
        }
    }
}

fn metric(m: wit::Metric) -> Metric {
    match m {
        wit::Metric::RequestRate => Metric::RequestRate,
        wit::Metric::ErrorRate => Metric::ErrorRate,
        wit::Metric::LatencyMean => Metric::LatencyMean,
        wit::Metric::LatencyP99 => Metric::LatencyP99,
    }
}

pub fn findings(found: Vec<wit::Finding>) -> Result<Vec<Finding>, Invalid> {
    found
        .into_iter()
        .map(|f| {
            let values = [f.current, f.mean, f.stddev, f.score];
            if values.iter().all(|v| v.is_finite()) {
                Ok(Finding {
                    metric: metric(f.metric),
                    current: f.current,
                    mean: f.mean,
                    stddev: f.stddev,
                    score: f.score,
                })
            } else {
                Err(format!(
                    "finding {:?} has a value that is not finite",
                    f.metric
                ))
            }
        })
        .collect()
}

/// Plugin weights: one per backend, finite, not negative, not all zero; normalised here.
pub fn weights(w: Vec<f64>, backends: usize) -> Result<Vec<f64>, Invalid> {
    if w.len() != backends {
        return Err(format!("{} weights for {backends} backends", w.len()));
    }
    if let Some(bad) = w.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(format!("weight {bad} is not a finite, non-negative number"));
    }
    let sum: f64 = w.iter().sum();
    if !(sum > 0.0 && sum.is_finite()) {
        return Err("every weight is 0".into());
    }
    Ok(w.into_iter().map(|x| x / sum).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_answers_are_caught() {
        assert!(limit(wit::LimitDecision::Limit(f64::NAN)).is_err());
        assert!(limit(wit::LimitDecision::Limit(-1.0)).is_err());
        assert!(limit(wit::LimitDecision::Limit(f64::INFINITY)).is_err());
        assert_eq!(
            limit(wit::LimitDecision::Limit(5.0)),
            Ok(LimitDecision::Limit(5.0))
        );
        assert!(weights(vec![1.0], 2).is_err());
        assert!(weights(vec![1.0, -1.0], 2).is_err());
        assert!(weights(vec![0.0, 0.0], 2).is_err());
        assert!(weights(vec![f64::NAN, 1.0], 2).is_err());
        assert_eq!(weights(vec![1.0, 3.0], 2), Ok(vec![0.25, 0.75]));
        let nan = wit::Finding {
            metric: wit::Metric::ErrorRate,
            current: f64::NAN,
            mean: 0.0,
            stddev: 1.0,
            score: 1.0,
        };
        assert!(findings(vec![nan]).is_err());
    }
}
