//! The native policies: the seed's formulas, exactly.

use super::types::{BackendStats, Baseline, Finding, LimitDecision, Metric, Window};
use crate::config::{AdaptiveBreakerConfig, AdaptiveRateLimitConfig, AnomalyConfig};

/// Adaptive rate limit: `baseline mean rate × multiplier`, clamped to
/// `[min_limit, max_limit]`; `Learning` until `learning_period` of history exists.
pub fn rate_limit(baseline: &Baseline, config: &AdaptiveRateLimitConfig) -> LimitDecision {
    if baseline.samples == 0 || baseline.history_seconds < config.learning_period.as_secs_f64() {
        return LimitDecision::Learning;
    }
    let limit = baseline.request_rate.mean * config.multiplier;
    LimitDecision::Limit(limit.clamp(config.min_limit, config.max_limit))
}

/// Z-score anomalies: a metric is anomalous when `(current − mean) / stddev > z_threshold`.
/// Nothing is anomalous with fewer than `min_samples` buckets of history, a metric whose
/// baseline never varied (`stddev == 0`) is never anomalous, and a bucket's p99 latency is
/// judged only when it holds `p99_min_requests` requests (with fewer than 100 it is the
/// bucket's slowest request).
pub fn anomalies(current: &Window, baseline: &Baseline, config: &AnomalyConfig) -> Vec<Finding> {
    if baseline.samples < config.min_samples {
        return Vec::new();
    }
    Metric::ALL
        .into_iter()
        .filter(|m| *m != Metric::LatencyP99 || current.requests >= config.p99_min_requests)
        .filter_map(|metric| {
            let value = metric.current(current)?;
            let stat = metric.stat(baseline);
            let score = z_score(value, stat.mean, stat.stddev)?;
            (score > config.z_threshold).then_some(Finding {
                metric,
                current: value,
                mean: stat.mean,
                stddev: stat.stddev,
                score,
            })
        })
        .collect()
}

/// `(current − mean) / stddev`, or `None` when `stddev` is 0.
pub fn z_score(current: f64, mean: f64, stddev: f64) -> Option<f64> {
    (stddev > 0.0 && stddev.is_finite()).then(|| (current - mean) / stddev)
}

/// Backend weights: `(1 / mean latency) × (1 − error rate)` from each backend's baseline,
/// normalised to sum to 1. A backend with an open breaker gets 0. Backends without enough
/// history (`learning`) get the average weight of the others. Each backend that can take
/// traffic keeps at least `min_share`, so a slow one's recovery is seen.
pub fn weights(backends: &[BackendStats], learning: &[bool], min_share: f64) -> Vec<f64> {
    let raw: Vec<Option<f64>> = backends
        .iter()
        .zip(learning.iter().chain(std::iter::repeat(&true)))
        .map(|(b, learning)| {
            if b.breaker_open {
                Some(0.0)
            } else if *learning || b.baseline.requests == 0 {
                None
            } else {
                let latency_s = (b.baseline.overall_latency_mean_ms / 1000.0).max(1e-6);
                Some((1.0 / latency_s) * (1.0 - b.baseline.overall_error_rate).clamp(0.0, 1.0))
            }
        })
        .collect();
    let known: Vec<f64> = raw.iter().flatten().copied().filter(|w| *w > 0.0).collect();
    let fill = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let mut w: Vec<f64> = raw.iter().map(|r| r.unwrap_or(fill)).collect();
    normalize(&mut w);
    apply_floor(&mut w, min_share);
    w
}

/// Scales weights to sum to 1 (all zero stays all zero).
pub fn normalize(w: &mut [f64]) {
    let sum: f64 = w.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        for x in w.iter_mut() {
            *x /= sum;
        }
    }
}

/// Raises every positive weight to at least `min_share`, taking the difference from the
/// others in proportion, and keeps the sum at 1.
fn apply_floor(w: &mut [f64], min_share: f64) {
    let live = w.iter().filter(|x| **x > 0.0).count();
    if live == 0 || min_share <= 0.0 || min_share * live as f64 >= 1.0 {
        return;
    }
    let short: f64 = w
        .iter()
        .filter(|x| **x > 0.0 && **x < min_share)
        .map(|x| min_share - x)
        .sum();
    if short == 0.0 {
        return;
    }
    let spare: f64 = w
        .iter()
        .filter(|x| **x >= min_share)
        .map(|x| x - min_share)
        .sum();
    for x in w.iter_mut() {
        if *x > 0.0 && *x < min_share {
            *x = min_share;
        } else if *x >= min_share && spare > 0.0 {
            *x -= (*x - min_share) * short / spare;
        }
    }
}

/// Breaker threshold: `max(baseline error rate × error_multiplier, min_threshold)`, at most 1.
pub fn breaker_threshold(baseline_error_rate: f64, config: &AdaptiveBreakerConfig) -> f64 {
    (baseline_error_rate * config.error_multiplier)
        .max(config.min_threshold)
        .min(1.0)
}

#[cfg(test)]
mod tests;
