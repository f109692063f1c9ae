//! The token bucket: `capacity` tokens, refilled continuously at `rate` tokens per second;
//! each request takes one. Rate and capacity are passed on every call, so a limit can change
//! (the adaptive loop retunes it) without losing the bucket's state.

use std::time::{Duration, Instant};

/// A bucket's rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub rate: f64,
    /// Most tokens the bucket holds (the burst).
    pub capacity: f64,
}

impl Limit {
    /// `requests_per_minute` refill with a `burst`-sized bucket.
    pub fn per_minute(requests_per_minute: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(requests_per_minute) / 60.0,
            capacity: f64::from(burst.max(1)),
        }
    }
}

/// The result of asking for a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Allowed; whole tokens left afterwards.
    Allowed { remaining: u32 },
    /// Refused; a token will be there after this long.
    Limited { retry_after: Duration },
}

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> Self {
        Self {
            tokens: limit.capacity,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, limit: Limit, now: Instant) -> Decision {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Decision::Allowed {
                remaining: self.tokens as u32,
            }
        } else {
            let missing = 1.0 - self.tokens;
            let secs = if limit.rate > 0.0 {
                missing / limit.rate
            } else {
                f64::MAX
            };
            Decision::Limited {
                retry_after: Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
            }
        }
    }

    /// True when the bucket has refilled completely: forgetting it changes nothing.
    pub fn is_full(&self, limit: Limit, now: Instant) -> bool {
        let mut copy = *self;
        copy.refill(limit, now);
        copy.tokens >= limit.capacity
    }

    fn refill(&mut self, limit: Limit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.rate).min(limit.capacity);
        self.updated = self.updated.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_full_bucket_allows_a_burst_then_refuses() {
        let limit = Limit::per_minute(60, 3); // 1 token/s, 3 deep
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit, t0);
        assert_eq!(b.try_take(limit, t0), Decision::Allowed { remaining: 2 });
        assert_eq!(b.try_take(limit, t0), Decision::Allowed { remaining: 1 });
        assert_eq!(b.try_take(limit, t0), Decision::Allowed { remaining: 0 });
        assert_eq!(
            b.try_take(limit, t0),
            Decision::Limited { retry_after: SEC }
        );
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let limit = Limit::per_minute(120, 2); // 2 tokens/s
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit, t0);
        b.try_take(limit, t0);
        b.try_take(limit, t0);
        assert_eq!(
            b.try_take(limit, t0 + Duration::from_millis(250)),
            Decision::Limited {
                retry_after: Duration::from_millis(250)
            }
        );
        assert_eq!(
            b.try_take(limit, t0 + Duration::from_millis(500)),
            Decision::Allowed { remaining: 0 }
        );
    }

    #[test]
    fn refill_never_exceeds_capacity() {
        let limit = Limit::per_minute(60, 2);
        let t0 = Instant::now();
        let mut b = TokenBucket::new(limit, t0);
        b.try_take(limit, t0);
        let later = t0 + 3600 * SEC;
        assert!(b.is_full(limit, later));
        assert_eq!(b.try_take(limit, later), Decision::Allowed { remaining: 1 });
    }

    #[test]
    fn a_changed_limit_applies_to_an_existing_bucket() {
        let slow = Limit::per_minute(60, 1);
        let fast = Limit::per_minute(600, 1);
        let t0 = Instant::now();
        let mut b = TokenBucket::new(slow, t0);
        b.try_take(slow, t0);
        // At 10 tokens/s a token is back after 100 ms.
        assert!(matches!(
            b.try_take(fast, t0 + Duration::from_millis(100)),
            Decision::Allowed { .. }
        ));
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let limit = Limit::per_minute(60, 1);
        let t0 = Instant::now() + 10 * SEC;
        let mut b = TokenBucket::new(limit, t0);
        b.try_take(limit, t0);
        assert!(matches!(
            b.try_take(limit, t0 - 5 * SEC),
            Decision::Limited { .. }
        ));
    }
}
