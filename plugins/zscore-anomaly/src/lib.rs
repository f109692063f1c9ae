//! The default anomaly policy: the z-score. A metric is anomalous when
//! `(current − mean) / stddev > z_threshold`; nothing is anomalous with fewer than
//! `min_samples` buckets of history, or when the baseline never varied (`stddev = 0`), and
//! a bucket's p99 latency is judged only when it holds `p99_min_requests` requests (with
//! fewer than 100 it is the bucket's slowest request). The same rule as the gateway's
//! built-in policy.
//!
//! Parameters (defaults from `analytics.anomaly` in config.yml): `z_threshold`,
//! `min_samples`, `p99_min_requests`.

use microgate_policy::*;

#[derive(Debug, Clone, PartialEq)]
pub struct ZScore {
    pub z_threshold: f64,
    pub min_samples: u32,
    pub p99_min_requests: u64,
}

impl Default for ZScore {
    fn default() -> Self {
        Self {
            z_threshold: 3.0,
            min_samples: 10,
            p99_min_requests: 100,
        }
    }
}

impl AnomalyPolicy for ZScore {
    fn configure(&mut self, p: &Params) -> Result<(), String> {
        self.z_threshold = p.f64_or("z_threshold", self.z_threshold)?;
        if self.z_threshold <= 0.0 {
            return Err("z_threshold must be positive".into());
        }
        self.min_samples = u32::try_from(p.u64_or("min_samples", u64::from(self.min_samples))?)
            .map_err(|_| "min_samples is too large".to_string())?;
        self.p99_min_requests = p.u64_or("p99_min_requests", self.p99_min_requests)?;
        Ok(())
    }

    fn detect(&self, s: &Series) -> Vec<Finding> {
        if s.baseline.samples < self.min_samples {
            return Vec::new();
        }
        Metric::ALL
            .into_iter()
            .filter(|m| *m != Metric::LatencyP99 || s.current.requests >= self.p99_min_requests)
            .filter_map(|metric| {
                let current = metric.current(&s.current)?;
                let stat = metric.stat(&s.baseline);
                let score = z_score(current, stat.mean, stat.stddev)?;
                (score > self.z_threshold).then_some(Finding {
                    metric,
                    current,
                    mean: stat.mean,
                    stddev: stat.stddev,
                    score,
                })
            })
            .collect()
    }
}

export!(anomaly: ZScore);

#[cfg(test)]
mod tests {
    use super::*;

    fn series(samples: u32, rate: f64) -> Series {
        let stat = |mean, stddev| Stat { mean, stddev };
        Series {
            kind: SeriesKind::Route,
            name: "/r".into(),
            baseline: Baseline {
                samples,
                history_seconds: 600.0,
                request_rate: stat(100.0, 10.0),
                error_rate: stat(0.01, 0.0),
                latency_mean_ms: stat(5.0, 1.0),
                latency_p99_ms: stat(20.0, 5.0),
                requests: 1000,
                errors: 10,
                overall_error_rate: 0.01,
                overall_latency_mean_ms: 5.0,
                overall_latency_p50_ms: 4.0,
                overall_latency_p99_ms: 20.0,
            },
            current: Window {
                start_ms: 0,
                interval_ms: 60_000,
                requests: 100,
                errors: 50,
                request_rate: rate,
                error_rate: Some(0.5),
                latency_mean_ms: Some(5.0),
                latency_p99_ms: Some(20.0),
            },
        }
    }

    #[test]
    fn flags_only_what_is_above_the_threshold() {
        let found = ZScore::default().detect(&series(20, 142.0));
        assert_eq!(found.len(), 1, "error rate has no spread: {found:?}");
        assert_eq!(found[0].metric, Metric::RequestRate);
        assert!((found[0].score - 4.2).abs() < 1e-9);
        assert!(ZScore::default().detect(&series(20, 130.0)).is_empty());
        assert!(
            ZScore::default().detect(&series(9, 1000.0)).is_empty(),
            "too little history"
        );
    }

    #[test]
    fn a_p99_is_judged_only_over_enough_requests() {
        let slow = |requests| {
            let mut s = series(20, 100.0);
            s.current.requests = requests;
            s.current.latency_p99_ms = Some(40.0);
            s
        };
        assert!(ZScore::default().detect(&slow(99)).is_empty());
        let found = ZScore::default().detect(&slow(100));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].metric, Metric::LatencyP99);
    }
}
