//! The default weighting policy: `(1 / mean latency) × (1 − error rate)` per backend,
//! normalised; an open breaker gets 0; a backend still learning gets the average of the
//! others; every live backend keeps at least `min_share`. The same as the gateway's
//! built-in policy.
//!
//! Parameters (default from `weighted_lb` in config.yml): `min_share`.

use microgate_policy::*;

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyErrors {
    pub min_share: f64,
}

impl Default for LatencyErrors {
    fn default() -> Self {
        Self { min_share: 0.05 }
    }
}

impl Weighting for LatencyErrors {
    fn configure(&mut self, p: &Params) -> Result<(), String> {
        self.min_share = p.f64_or("min_share", self.min_share)?;
        if !(0.0..0.5).contains(&self.min_share) {
            return Err("min_share must be at least 0 and below 0.5".into());
        }
        Ok(())
    }

    fn weigh(&self, _upstream: &str, backends: &[BackendStats]) -> Vec<f64> {
        let raw: Vec<Option<f64>> = backends
            .iter()
            .map(|b| {
                if b.breaker == BreakerState::Open {
                    Some(0.0)
                } else if b.learning || b.baseline.requests == 0 {
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
        floor(&mut w, self.min_share);
        w
    }
}

fn normalize(w: &mut [f64]) {
    let sum: f64 = w.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        for x in w.iter_mut() {
            *x /= sum;
        }
    }
}

/// Raises every positive weight to at least `min_share`, taking the difference from the
/// others in proportion.
fn floor(w: &mut [f64], min_share: f64) {
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

export!(weighting: LatencyErrors);

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(latency_ms: f64, error_rate: f64, breaker: BreakerState) -> BackendStats {
        let zero = Stat {
            mean: 0.0,
            stddev: 0.0,
        };
        BackendStats {
            backend: "b".into(),
            baseline: Baseline {
                samples: 10,
                history_seconds: 600.0,
                request_rate: zero,
                error_rate: zero,
                latency_mean_ms: zero,
                latency_p99_ms: zero,
                requests: 100,
                errors: 0,
                overall_error_rate: error_rate,
                overall_latency_mean_ms: latency_ms,
                overall_latency_p50_ms: 0.0,
                overall_latency_p99_ms: 0.0,
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
            breaker,
            learning: false,
        }
    }

    #[test]
    fn faster_and_healthier_backends_weigh_more() {
        let w = LatencyErrors { min_share: 0.0 }.weigh(
            "u",
            &[
                backend(10.0, 0.0, BreakerState::Closed),
                backend(40.0, 0.0, BreakerState::Closed),
                backend(10.0, 0.5, BreakerState::Closed),
            ],
        );
        let want = [100.0 / 175.0, 25.0 / 175.0, 50.0 / 175.0];
        assert!(
            w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
            "{w:?}"
        );
    }

    #[test]
    fn open_breakers_get_nothing_and_slow_ones_keep_the_floor() {
        let w = LatencyErrors::default().weigh(
            "u",
            &[
                backend(1.0, 0.0, BreakerState::Closed),
                backend(1000.0, 0.0, BreakerState::Closed),
                backend(1.0, 0.0, BreakerState::Open),
            ],
        );
        assert!((w[1] - 0.05).abs() < 1e-9 && w[2] == 0.0, "{w:?}");
    }
}
