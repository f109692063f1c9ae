//! The default rate-limit policy: `baseline mean rate × multiplier`, clamped to
//! `[min_limit, max_limit]`; `Learning` (the static limit applies) until the route has
//! `learning_period` of history. The same formula as the gateway's built-in policy.
//!
//! Parameters (defaults from `adaptive_rate_limit` in config.yml): `multiplier`,
//! `min_limit`, `max_limit` (requests per minute), `learning_period` (e.g. `1h`).

use microgate_policy::*;

#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveLimit {
    pub multiplier: f64,
    pub min_limit: f64,
    pub max_limit: f64,
    pub learning_period_s: f64,
}

impl Default for AdaptiveLimit {
    fn default() -> Self {
        Self {
            multiplier: 3.0,
            min_limit: 10.0,
            max_limit: 10_000.0,
            learning_period_s: 3600.0,
        }
    }
}

impl RateLimit for AdaptiveLimit {
    fn configure(&mut self, p: &Params) -> Result<(), String> {
        self.multiplier = p.f64_or("multiplier", self.multiplier)?;
        self.min_limit = p.f64_or("min_limit", self.min_limit)?;
        self.max_limit = p.f64_or("max_limit", self.max_limit)?;
        self.learning_period_s = p.seconds_or("learning_period", self.learning_period_s)?;
        if self.multiplier <= 0.0 || self.min_limit <= 0.0 || self.max_limit < self.min_limit {
            return Err("need multiplier > 0 and 0 < min_limit <= max_limit".into());
        }
        Ok(())
    }

    fn decide(&self, route: &Series, _static_limit: Option<f64>) -> LimitDecision {
        let b = &route.baseline;
        if b.samples == 0 || b.history_seconds < self.learning_period_s {
            return LimitDecision::Learning;
        }
        LimitDecision::Limit(
            (b.request_rate.mean * self.multiplier).clamp(self.min_limit, self.max_limit),
        )
    }
}

export!(rate_limit: AdaptiveLimit);

#[cfg(test)]
mod tests {
    use super::*;

    fn route(samples: u32, history_seconds: f64, mean: f64) -> Series {
        Series {
            kind: SeriesKind::Route,
            name: "/r".into(),
            baseline: Baseline {
                samples,
                history_seconds,
                request_rate: Stat { mean, stddev: 1.0 },
                error_rate: Stat {
                    mean: 0.0,
                    stddev: 0.0,
                },
                latency_mean_ms: Stat {
                    mean: 1.0,
                    stddev: 0.0,
                },
                latency_p99_ms: Stat {
                    mean: 1.0,
                    stddev: 0.0,
                },
                requests: 1,
                errors: 0,
                overall_error_rate: 0.0,
                overall_latency_mean_ms: 1.0,
                overall_latency_p50_ms: 1.0,
                overall_latency_p99_ms: 1.0,
            },
            current: Window {
                start_ms: 0,
                interval_ms: 60_000,
                requests: 0,
                errors: 0,
                request_rate: 0.0,
                error_rate: None,
                latency_mean_ms: None,
                latency_p99_ms: None,
            },
        }
    }

    #[test]
    fn mean_times_multiplier_clamped_after_learning() {
        let p = AdaptiveLimit::default();
        assert_eq!(
            p.decide(&route(60, 3600.0, 100.0), None),
            LimitDecision::Limit(300.0)
        );
        assert_eq!(
            p.decide(&route(60, 3600.0, 1.0), None),
            LimitDecision::Limit(10.0)
        );
        assert_eq!(
            p.decide(&route(60, 3600.0, 1e6), None),
            LimitDecision::Limit(10_000.0)
        );
        assert_eq!(
            p.decide(&route(59, 3599.0, 100.0), None),
            LimitDecision::Learning
        );
    }

    #[test]
    fn parameters() {
        let params = Params(vec![
            ("multiplier".into(), "2".into()),
            ("learning_period".into(), "5m".into()),
        ]);
        let mut p = AdaptiveLimit::default();
        p.configure(&params).unwrap();
        assert_eq!((p.multiplier, p.learning_period_s), (2.0, 300.0));
        let bad = Params(vec![
            ("min_limit".into(), "100".into()),
            ("max_limit".into(), "10".into()),
        ]);
        assert!(AdaptiveLimit::default().configure(&bad).is_err());
    }
}
