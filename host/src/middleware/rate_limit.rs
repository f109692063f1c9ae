//! Rate limits. Once the analyzer has learned a route's limit, that limit applies to the
//! whole route; until then (cold start) the route's static token bucket per key applies.
//! Allowed responses carry `X-RateLimit-Limit`/`-Remaining`; refused requests get 429 with
//! `Retry-After` too.

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Response};

use super::{ClientInfo, Req};
use crate::auth::{API_KEY_HEADER, Identity};
use crate::config::RateLimitKey;
use crate::error::GatewayError;
use crate::gateway::Route;
use crate::ratelimit::Decision;

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

/// The value a bucket is keyed by.
#[derive(Hash)]
enum Key<'a> {
    Ip(IpAddr),
    Text(&'a str),
    Route,
}

/// A request let through, with what its response tells the client about the limit.
pub struct Allowed {
    limit: u32,
    remaining: u32,
}

impl Allowed {
    /// Adds `X-RateLimit-Limit` and `-Remaining` to the response.
    pub fn stamp<B>(&self, res: &mut Response<B>) {
        let headers = res.headers_mut();
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
    }
}

/// Checks the route's limits: `Ok(None)` when the route has none, `Ok(Some)` when the
/// request is within them, `Err` with the 429 to answer otherwise.
pub fn check(
    route: &Route,
    client: &ClientInfo,
    req: &Req,
    identity: Option<&Identity>,
) -> Result<Option<Allowed>, GatewayError> {
    if route.limiter.is_none() && route.adaptive.get().is_none() {
        return Ok(None);
    }
    let now = Instant::now();
    if let Some(decision) = route.adaptive.check(now) {
        let limit = route.adaptive.get().map_or(0, |l| l.round() as u32);
        return decide(route, decision, limit);
    }
    let Some(limiter) = &route.limiter else {
        return Ok(None);
    };
    let ip = client.ip;
    let key = match limiter.key {
        RateLimitKey::ClientIp => Key::Ip(ip),
        RateLimitKey::Route => Key::Route,
        RateLimitKey::ApiKey => req
            .headers()
            .get(API_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map_or(Key::Ip(ip), Key::Text),
        RateLimitKey::JwtSubject => match identity {
            Some(Identity::Jwt { subject: Some(sub) }) => Key::Text(sub),
            _ => Key::Ip(ip),
        },
    };
    let decision = limiter.check(key, now);
    decide(route, decision, limiter.requests_per_minute)
}

fn decide(route: &Route, decision: Decision, limit: u32) -> Result<Option<Allowed>, GatewayError> {
    match decision {
        Decision::Allowed { remaining } => Ok(Some(Allowed { limit, remaining })),
        Decision::Limited { retry_after } => {
            route.rate_limited.inc();
            Err(GatewayError::RateLimited { retry_after, limit })
        }
    }
}
