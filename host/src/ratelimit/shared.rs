//! A limit shared by every request of a route, such as the adaptive limit the analyzer
//! learns. It is a GCRA (the token bucket as one "theoretical arrival time") kept in a
//! single atomic, so every request of a busy route checks it without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Decision;

pub struct SharedLimit {
    /// Requests per minute as f64 bits; 0 means no limit is set.
    per_minute: AtomicU64,
    /// Burst allowed, as time at the limit's rate.
    burst_window: Duration,
    /// Theoretical arrival time, in nanoseconds since `origin`.
    tat: AtomicU64,
    origin: Instant,
}

impl SharedLimit {
    pub fn new(burst_window: Duration, origin: Instant) -> Self {
        Self {
            per_minute: AtomicU64::new(0),
            burst_window,
            tat: AtomicU64::new(0),
            origin,
        }
    }

    /// Sets the limit in requests per minute; `None` removes it.
    pub fn set(&self, per_minute: Option<f64>) {
        let v = per_minute
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(0.0);
        self.per_minute.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The limit in requests per minute, if one is set.
    pub fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.per_minute.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    /// Takes one request's worth, or `None` when no limit is set.
    pub fn check(&self, now: Instant) -> Option<Decision> {
        let per_minute = self.get()?;
        let interval = 60e9 / per_minute; // ns between requests at the limit
        let capacity = (self.burst_window.as_secs_f64() * per_minute / 60.0)
            .max(1.0)
            .floor();
        let allowance = capacity * interval;
        let now_ns = now.saturating_duration_since(self.origin).as_nanos() as f64;
        let mut current = self.tat.load(Ordering::Relaxed);
        loop {
            let tat = (current as f64).max(now_ns);
            let next = tat + interval;
            let backlog = next - now_ns;
            if backlog > allowance + 1.0 {
                return Some(Decision::Limited {
                    retry_after: Duration::from_nanos((backlog - allowance) as u64),
                });
            }
            match self.tat.compare_exchange_weak(
                current,
                next as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let remaining = ((allowance - backlog) / interval + 1e-9).floor().max(0.0);
                    return Some(Decision::Allowed {
                        remaining: remaining as u32,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_means_unlimited() {
        let t0 = Instant::now();
        let l = SharedLimit::new(Duration::from_secs(3), t0);
        assert_eq!(l.check(t0), None);
        l.set(Some(60.0));
        assert!(l.check(t0).is_some());
        l.set(None);
        assert_eq!(l.check(t0), None);
        l.set(Some(f64::NAN));
        assert_eq!(l.get(), None);
    }

    #[test]
    fn behaves_like_a_token_bucket() {
        let t0 = Instant::now();
        // 60/min = 1/s with a 3 s burst: three at once, then one per second.
        let l = SharedLimit::new(Duration::from_secs(3), t0);
        l.set(Some(60.0));
        assert_eq!(l.check(t0), Some(Decision::Allowed { remaining: 2 }));
        assert_eq!(l.check(t0), Some(Decision::Allowed { remaining: 1 }));
        assert_eq!(l.check(t0), Some(Decision::Allowed { remaining: 0 }));
        match l.check(t0) {
            Some(Decision::Limited { retry_after }) => {
                assert!(
                    (retry_after.as_secs_f64() - 1.0).abs() < 1e-6,
                    "{retry_after:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check(t1), Some(Decision::Allowed { remaining: 0 }));
        assert!(matches!(l.check(t1), Some(Decision::Limited { .. })));
        // After a long idle period the burst is back, not more.
        let t2 = t0 + Duration::from_secs(100);
        for remaining in [2, 1, 0] {
            assert_eq!(l.check(t2), Some(Decision::Allowed { remaining }));
        }
    }

    #[test]
    fn a_raised_limit_applies_at_once() {
        let t0 = Instant::now();
        let l = SharedLimit::new(Duration::from_secs(1), t0);
        l.set(Some(60.0));
        assert!(matches!(l.check(t0), Some(Decision::Allowed { .. })));
        assert!(matches!(l.check(t0), Some(Decision::Limited { .. })));
        l.set(Some(6000.0)); // 100/s: 10 ms per request
        assert!(matches!(
            l.check(t0 + Duration::from_millis(1010)),
            Some(Decision::Allowed { .. })
        ));
    }

    #[test]
    fn concurrent_callers_never_exceed_the_burst() {
        let t0 = Instant::now();
        let l = std::sync::Arc::new(SharedLimit::new(Duration::from_secs(100), t0));
        l.set(Some(60.0)); // burst of 100
        let allowed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let l = l.clone();
                    s.spawn(move || {
                        (0..100)
                            .filter(|_| matches!(l.check(t0), Some(Decision::Allowed { .. })))
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 100);
    }
}
