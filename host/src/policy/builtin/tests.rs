use std::time::Duration;

use super::*;
use crate::policy::types::Stat;

fn baseline(samples: u32, history_s: f64, rate: f64) -> Baseline {
    Baseline {
        samples,
        history_seconds: history_s,
        request_rate: Stat {
            mean: rate,
            stddev: 1.0,
        },
        ..Default::default()
    }
}

fn rl_config() -> AdaptiveRateLimitConfig {
    AdaptiveRateLimitConfig {
        enabled: true,
        multiplier: 3.0,
        min_limit: 10.0,
        max_limit: 10_000.0,
        learning_period: Duration::from_secs(3600),
        burst_window: Duration::from_secs(5),
    }
}

#[test]
fn rate_limit_is_mean_times_multiplier() {
    assert_eq!(
        rate_limit(&baseline(60, 3600.0, 100.0), &rl_config()),
        LimitDecision::Limit(300.0)
    );
}

#[test]
fn rate_limit_is_clamped() {
    assert_eq!(
        rate_limit(&baseline(60, 3600.0, 1.0), &rl_config()),
        LimitDecision::Limit(10.0)
    );
    assert_eq!(
        rate_limit(&baseline(60, 3600.0, 9_000.0), &rl_config()),
        LimitDecision::Limit(10_000.0)
    );
}

#[test]
fn rate_limit_waits_for_the_learning_period() {
    assert_eq!(
        rate_limit(&baseline(59, 3599.0, 100.0), &rl_config()),
        LimitDecision::Learning
    );
    assert_eq!(
        rate_limit(&baseline(0, 7200.0, 0.0), &rl_config()),
        LimitDecision::Learning
    );
}

fn window(rate: f64, error_rate: Option<f64>) -> Window {
    Window {
        request_rate: rate,
        error_rate,
        ..Default::default()
    }
}

#[test]
fn z_scores() {
    assert_eq!(z_score(500.0, 100.0, 100.0), Some(4.0));
    assert_eq!(z_score(50.0, 100.0, 25.0), Some(-2.0));
    assert_eq!(
        z_score(500.0, 100.0, 0.0),
        None,
        "zero stddev: never anomalous"
    );
}

/// The shipped defaults: z above 3.0, 10 buckets of history, p99 judged from 100 requests.
fn zscore() -> AnomalyConfig {
    AnomalyConfig::default()
}

#[test]
fn anomalies_above_the_threshold_only() {
    let mut b = baseline(20, 1200.0, 100.0);
    b.request_rate = Stat {
        mean: 100.0,
        stddev: 10.0,
    };
    b.error_rate = Stat {
        mean: 0.01,
        stddev: 0.0,
    };
    let found = anomalies(&window(142.0, Some(0.5)), &b, &zscore());
    assert_eq!(found.len(), 1, "error rate has zero stddev: {found:?}");
    assert_eq!(found[0].metric, Metric::RequestRate);
    assert!((found[0].score - 4.2).abs() < 1e-9);
    assert!(
        anomalies(&window(130.0, None), &b, &zscore()).is_empty(),
        "z = 3.0 is not above 3.0"
    );
    assert!(
        anomalies(&window(10.0, None), &b, &zscore()).is_empty(),
        "drops are not anomalies (one-sided)"
    );
}

#[test]
fn anomalies_need_enough_history() {
    let mut b = baseline(9, 540.0, 100.0);
    b.request_rate = Stat {
        mean: 100.0,
        stddev: 10.0,
    };
    assert!(anomalies(&window(1000.0, None), &b, &zscore()).is_empty());
    b.samples = 10;
    assert_eq!(anomalies(&window(1000.0, None), &b, &zscore()).len(), 1);
}

#[test]
fn a_p99_is_judged_only_over_enough_requests() {
    let mut b = baseline(20, 1200.0, 100.0);
    b.latency_p99_ms = Stat {
        mean: 20.0,
        stddev: 2.0,
    };
    let slow = |requests| Window {
        requests,
        request_rate: 100.0,
        latency_p99_ms: Some(40.0),
        ..Default::default()
    };
    assert!(
        anomalies(&slow(99), &b, &zscore()).is_empty(),
        "with 99 requests the p99 is the slowest one"
    );
    let found = anomalies(&slow(100), &b, &zscore());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].metric, Metric::LatencyP99);
    let every_bucket = AnomalyConfig {
        p99_min_requests: 0,
        ..zscore()
    };
    assert_eq!(anomalies(&slow(1), &b, &every_bucket).len(), 1);
}

fn backend(latency_ms: f64, error_rate: f64, open: bool) -> BackendStats {
    BackendStats {
        backend: "b".into(),
        baseline: Baseline {
            requests: 100,
            overall_latency_mean_ms: latency_ms,
            overall_error_rate: error_rate,
            ..Default::default()
        },
        breaker_open: open,
    }
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
}

#[test]
fn weights_follow_latency_and_errors() {
    // 1/0.010 × 1.0 = 100; 1/0.040 × 1.0 = 25; 1/0.010 × 0.5 = 50 → 100:25:50.
    let w = weights(
        &[
            backend(10.0, 0.0, false),
            backend(40.0, 0.0, false),
            backend(10.0, 0.5, false),
        ],
        &[false; 3],
        0.0,
    );
    assert!(
        close(&w, &[100.0 / 175.0, 25.0 / 175.0, 50.0 / 175.0]),
        "{w:?}"
    );
    assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn open_breakers_get_nothing() {
    let w = weights(
        &[backend(10.0, 0.0, false), backend(10.0, 0.0, true)],
        &[false; 2],
        0.05,
    );
    assert!(close(&w, &[1.0, 0.0]), "{w:?}");
}

#[test]
fn the_floor_keeps_a_trickle_on_slow_backends() {
    // 1000 ms vs 1 ms: raw shares ≈ 0.999 and 0.001.
    let w = weights(
        &[backend(1.0, 0.0, false), backend(1000.0, 0.0, false)],
        &[false; 2],
        0.05,
    );
    assert!(close(&w, &[0.95, 0.05]), "{w:?}");
}

#[test]
fn learning_backends_get_the_average_weight() {
    let w = weights(
        &[
            backend(10.0, 0.0, false),
            backend(20.0, 0.0, false),
            backend(5.0, 0.0, false),
        ],
        &[false, false, true],
        0.0,
    );
    // Known raw weights 100 and 50; the learning one gets their mean, 75.
    assert!(
        close(&w, &[100.0 / 225.0, 50.0 / 225.0, 75.0 / 225.0]),
        "{w:?}"
    );
    let w = weights(
        &[backend(10.0, 0.0, false), backend(20.0, 0.0, false)],
        &[true, true],
        0.0,
    );
    assert!(close(&w, &[0.5, 0.5]), "all learning: equal");
}

#[test]
fn breaker_threshold_has_a_floor() {
    let c = AdaptiveBreakerConfig {
        enabled: true,
        error_multiplier: 5.0,
        min_threshold: 0.05,
        learning_period: Duration::from_secs(60),
    };
    assert!((breaker_threshold(0.02, &c) - 0.10).abs() < 1e-12);
    assert_eq!(breaker_threshold(0.001, &c), 0.05);
    assert_eq!(breaker_threshold(0.0, &c), 0.05);
    assert_eq!(breaker_threshold(0.5, &c), 1.0);
}
