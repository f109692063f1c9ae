//! A rate limit that backs off as latency climbs: three times the route's usual rate,
//! scaled down by how far the latest p99 is above `target_p99_ms`.
use microgate_policy::*;

#[derive(Default)]
pub struct LatencyGuard {
    target_p99_ms: f64,
}

impl RateLimit for LatencyGuard {
    fn configure(&mut self, params: &Params) -> Result<(), String> {
        self.target_p99_ms = params.f64_or("target_p99_ms", 250.0)?;
        Ok(())
    }

    fn decide(&self, route: &Series, _static_limit: Option<f64>) -> LimitDecision {
        let Some(p99) = route
            .current
            .latency_p99_ms
            .filter(|_| route.baseline.samples >= 5)
        else {
            return LimitDecision::Learning;
        };
        let headroom = (self.target_p99_ms / p99.max(0.001)).min(1.0);
        LimitDecision::Limit((route.baseline.request_rate.mean * 3.0 * headroom).max(10.0))
    }
}

export!(rate_limit: LatencyGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn route(mean_rate: f64, p99: f64) -> Series {
        let stat = |mean| Stat { mean, stddev: 0.0 };
        Series {
            kind: SeriesKind::Route,
            name: "/api".into(),
            baseline: Baseline {
                samples: 60,
                history_seconds: 3600.0,
                request_rate: stat(mean_rate),
                error_rate: stat(0.0),
                latency_mean_ms: stat(20.0),
                latency_p99_ms: stat(100.0),
                requests: 6000,
                errors: 0,
                overall_error_rate: 0.0,
                overall_latency_mean_ms: 20.0,
                overall_latency_p50_ms: 15.0,
                overall_latency_p99_ms: 100.0,
            },
            current: Window {
                start_ms: 0,
                interval_ms: 60_000,
                requests: 100,
                errors: 0,
                request_rate: 100.0,
                error_rate: Some(0.0),
                latency_mean_ms: Some(20.0),
                latency_p99_ms: Some(p99),
            },
        }
    }

    #[test]
    fn full_limit_while_fast_and_less_as_latency_climbs() {
        let guard = LatencyGuard {
            target_p99_ms: 250.0,
        };
        assert_eq!(
            guard.decide(&route(100.0, 120.0), None),
            LimitDecision::Limit(300.0)
        );
        assert_eq!(
            guard.decide(&route(100.0, 500.0), None),
            LimitDecision::Limit(150.0)
        );
        assert_eq!(
            guard.decide(&route(100.0, 1e6), None),
            LimitDecision::Limit(10.0)
        );
    }
}
