//! Backend selection: round-robin until the analyzer publishes weights, then weighted
//! random. Either way a backend whose breaker refuses is skipped. Callers only see
//! [`Balancer::pick`]; weights are swapped in atomically and read without a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

pub struct Balancer {
    next: AtomicUsize,
    /// One weight per backend, summing to 1; `None` means round-robin.
    weights: ArcSwapOption<Vec<f64>>,
}

impl Default for Balancer {
    fn default() -> Self {
        Self::round_robin()
    }
}

impl Balancer {
    pub fn round_robin() -> Self {
        Self {
            next: AtomicUsize::new(0),
            weights: ArcSwapOption::empty(),
        }
    }

    /// Switches to weighted random selection (or back to round-robin with `None`).
    /// Weights must be one per backend; anything else is ignored.
    pub fn set_weights(&self, weights: Option<Vec<f64>>) {
        self.weights.store(weights.map(Arc::new));
    }

    /// The weights in use, if any.
    pub fn weights(&self) -> Option<Arc<Vec<f64>>> {
        self.weights.load_full()
    }

    /// Offers backends to `admit` in this strategy's order until one is admitted.
    pub fn pick<B, T>(&self, backends: &[B], mut admit: impl FnMut(&B) -> Option<T>) -> Option<T> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let guard = self.weights.load();
        match guard.as_deref() {
            Some(weights) if weights.len() == n => {
                if let Some(first) = draw(weights) {
                    if let Some(t) = admit(&backends[first]) {
                        return Some(t);
                    }
                    // Refused (breaker open): draw again among the others.
                    let mut left: Vec<f64> = weights.clone();
                    left[first] = 0.0;
                    while let Some(i) = draw(&left) {
                        if let Some(t) = admit(&backends[i]) {
                            return Some(t);
                        }
                        left[i] = 0.0;
                    }
                }
                // Every weighted backend refused, or none has weight (every breaker was
                // open when the weights were set): offer the zero-weight ones in turn, so
                // a breaker whose open time is over gets its probe.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| (start + i) % n)
                    .filter(|i| weights[*i].is_nan() || weights[*i] <= 0.0)
                    .find_map(|i| admit(&backends[i]))
            }
            _ => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).find_map(|i| admit(&backends[(start + i) % n]))
            }
        }
    }
}

/// A random index with probability proportional to its weight; `None` if all are 0.
fn draw(weights: &[f64]) -> Option<usize> {
    let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    if total <= 0.0 {
        return None;
    }
    let mut r = fastrand::f64() * total;
    let mut last = None;
    for (i, w) in weights.iter().enumerate() {
        if !(w.is_finite() && *w > 0.0) {
            continue;
        }
        if r < *w {
            return Some(i);
        }
        r -= w;
        last = Some(i);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_cycles_through_backends() {
        let b = Balancer::round_robin();
        let backends = ["a", "b", "c"];
        let picks: Vec<&str> = (0..6)
            .map(|_| b.pick(&backends, |x| Some(*x)).unwrap())
            .collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn refused_backends_are_skipped() {
        let b = Balancer::round_robin();
        let backends = ["a", "down", "c"];
        let admit = |x: &&'static str| (*x != "down").then_some(*x);
        let picks: Vec<&str> = (0..4).map(|_| b.pick(&backends, admit).unwrap()).collect();
        assert_eq!(picks, ["a", "c", "c", "a"]);
    }

    #[test]
    fn none_when_every_backend_refuses() {
        let b = Balancer::round_robin();
        assert_eq!(b.pick(&["a", "b"], |_| None::<()>), None);
        assert_eq!(b.pick(&[] as &[&str], |x| Some(*x)), None);
        b.set_weights(Some(vec![0.5, 0.5]));
        assert_eq!(b.pick(&["a", "b"], |_| None::<()>), None);
    }

    #[test]
    fn weighted_picks_follow_the_weights() {
        fastrand::seed(7);
        let b = Balancer::round_robin();
        b.set_weights(Some(vec![0.7, 0.2, 0.1]));
        let backends = [0usize, 1, 2];
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[b.pick(&backends, |i| Some(*i)).unwrap()] += 1;
        }
        let shares: Vec<f64> = counts.iter().map(|c| *c as f64 / 20_000.0).collect();
        for (share, want) in shares.iter().zip([0.7, 0.2, 0.1]) {
            assert!((share - want).abs() < 0.02, "{shares:?}");
        }
    }

    #[test]
    fn weighted_picks_skip_refusals_and_zero_weights() {
        let b = Balancer::round_robin();
        b.set_weights(Some(vec![0.9, 0.1, 0.0]));
        let backends = ["refuses", "ok", "zero"];
        for _ in 0..200 {
            assert_eq!(
                b.pick(&backends, |x| (*x != "refuses").then_some(*x)),
                Some("ok")
            );
        }
    }

    #[test]
    fn zero_weight_backends_still_serve_when_every_weighted_one_refuses() {
        let b = Balancer::round_robin();
        b.set_weights(Some(vec![1.0, 0.0]));
        let backends = ["open", "healthy"];
        assert_eq!(
            b.pick(&backends, |x| (*x != "open").then_some(*x)),
            Some("healthy")
        );
    }

    #[test]
    fn backends_are_still_offered_when_every_weight_is_zero() {
        // Weights set while every breaker was open: once one admits again it must be
        // offered, not wait for the next rebalance (which would see it open again).
        let b = Balancer::round_robin();
        b.set_weights(Some(vec![0.0, 0.0]));
        let backends = ["a", "b"];
        let picks: Vec<&str> = (0..4)
            .map(|_| b.pick(&backends, |x| Some(*x)).unwrap())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
        b.set_weights(Some(vec![0.0]));
        assert_eq!(b.pick(&["only"], |x| Some(*x)), Some("only"));
    }

    #[test]
    fn one_backend_is_offered_whatever_the_weights() {
        let b = Balancer::round_robin();
        for weights in [None, Some(vec![1.0]), Some(vec![0.0]), Some(vec![0.5, 0.5])] {
            b.set_weights(weights);
            assert_eq!(b.pick(&["only"], |x| Some(*x)), Some("only"));
            assert_eq!(b.pick(&["only"], |_| None::<&str>), None);
        }
    }

    #[test]
    fn mismatched_weights_fall_back_to_round_robin() {
        let b = Balancer::round_robin();
        b.set_weights(Some(vec![1.0]));
        let picks: Vec<&str> = (0..4)
            .map(|_| b.pick(&["a", "b"], |x| Some(*x)).unwrap())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }
}
