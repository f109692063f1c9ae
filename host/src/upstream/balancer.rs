//! Backend selection. Round-robin today; the weighted strategy of the adaptive loop slots in
//! here as another variant, and callers only ever see [`Balancer::pick`].

use std::sync::atomic::{AtomicUsize, Ordering};

/// How an upstream spreads requests over its backends.
pub enum Balancer {
    /// Each backend in turn; a backend whose breaker refuses is skipped.
    RoundRobin { next: AtomicUsize },
}

impl Balancer {
    pub fn round_robin() -> Self {
        Balancer::RoundRobin {
            next: AtomicUsize::new(0),
        }
    }

    /// Offers backends to `admit` in this strategy's order until one is admitted.
    pub fn pick<B, T>(&self, backends: &[B], mut admit: impl FnMut(&B) -> Option<T>) -> Option<T> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        match self {
            Balancer::RoundRobin { next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..n).find_map(|i| admit(&backends[(start + i) % n]))
            }
        }
    }
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
    }
}
