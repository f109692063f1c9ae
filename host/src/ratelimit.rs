//! Rate limiting. Static limits are token buckets per route and key (client IP, API key, JWT
//! subject, or one per route), kept in a sharded map and swept when idle so memory follows
//! the number of active keys. Learned limits are one [`SharedLimit`] per route.

pub mod bucket;
pub mod shared;

use std::hash::{BuildHasher, Hash};
use std::time::Instant;

use dashmap::DashMap;

pub use bucket::{Decision, Limit, TokenBucket};
pub use shared::SharedLimit;

use crate::config::{RateLimitConfig, RateLimitKey};

/// The buckets of one route.
pub struct RouteLimiter {
    pub limit: Limit,
    /// Advertised in `X-RateLimit-Limit`.
    pub requests_per_minute: u32,
    pub key: RateLimitKey,
    buckets: DashMap<u64, TokenBucket>,
    hasher: std::collections::hash_map::RandomState,
}

impl RouteLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let burst = config.burst.unwrap_or(config.requests_per_minute);
        Self {
            limit: Limit::per_minute(config.requests_per_minute, burst),
            requests_per_minute: config.requests_per_minute,
            key: config.key,
            buckets: DashMap::new(),
            hasher: Default::default(),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub fn check(&self, key: impl Hash, now: Instant) -> Decision {
        let key = self.hasher.hash_one(key);
        let limit = self.limit;
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(limit, now))
            .try_take(limit, now)
    }

    /// Forgets buckets that have refilled: they hold no information.
    pub fn sweep(&self, now: Instant) {
        let limit = self.limit;
        self.buckets.retain(|_, b| !b.is_full(limit, now));
    }

    /// Number of keys being tracked.
    pub fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(rpm: u32, burst: u32) -> RouteLimiter {
        RouteLimiter::new(&RateLimitConfig {
            requests_per_minute: rpm,
            burst: Some(burst),
            key: RateLimitKey::ClientIp,
        })
    }

    #[test]
    fn keys_have_separate_buckets() {
        let l = limiter(60, 1);
        let t0 = Instant::now();
        assert!(matches!(l.check("a", t0), Decision::Allowed { .. }));
        assert!(matches!(l.check("a", t0), Decision::Limited { .. }));
        assert!(matches!(l.check("b", t0), Decision::Allowed { .. }));
    }

    #[test]
    fn sweeping_drops_only_refilled_buckets() {
        let l = limiter(60, 2);
        let t0 = Instant::now();
        l.check("idle", t0);
        l.check("busy", t0 + Duration::from_millis(1500));
        l.check("busy", t0 + Duration::from_millis(1500));
        assert_eq!(l.tracked_keys(), 2);
        l.sweep(t0 + Duration::from_secs(2));
        assert_eq!(l.tracked_keys(), 1);
    }
}
