//! Rate limits. Once the analyzer has learned a route's limit, that limit applies to the
//! whole route; until then (cold start) the route's static token bucket per key applies.
//! Allowed responses carry `X-RateLimit-Limit`/`-Remaining`; refused requests get 429 with
//! `Retry-After` too.

use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Response};
use tower::{Layer, Service};

use super::route::MatchedRoute;
use super::{BoxFuture, ClientInfo, Req};
use crate::auth::{API_KEY_HEADER, Identity};
use crate::body::Body;
use crate::config::RateLimitKey;
use crate::error::GatewayError;
use crate::gateway::Route;
use crate::ratelimit::Decision;

pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");

#[derive(Clone, Copy)]
pub struct RateLimitLayer;

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner }
    }
}

/// The value a bucket is keyed by.
#[derive(Hash)]
enum Key<'a> {
    Ip(IpAddr),
    Text(&'a str),
    Route,
}

impl<S> Service<Req> for RateLimit<S>
where
    S: Service<Req, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(route) = req
            .extensions()
            .get::<MatchedRoute>()
            .map(|m| m.route.clone())
        else {
            return Box::pin(self.inner.call(req));
        };
        let now = Instant::now();
        if let Some(decision) = route.adaptive.check(now) {
            let limit = route.adaptive.get().map_or(0, |l| l.round() as u32);
            return self.decide(req, &route, decision, limit);
        }
        let Some(limiter) = &route.limiter else {
            return Box::pin(self.inner.call(req));
        };
        let ip = req
            .extensions()
            .get::<ClientInfo>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.ip);
        let key = match limiter.key {
            RateLimitKey::ClientIp => Key::Ip(ip),
            RateLimitKey::Route => Key::Route,
            RateLimitKey::ApiKey => req
                .headers()
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map_or(Key::Ip(ip), Key::Text),
            RateLimitKey::JwtSubject => match req.extensions().get::<Identity>() {
                Some(Identity::Jwt { subject: Some(sub) }) => Key::Text(sub),
                _ => Key::Ip(ip),
            },
        };
        let decision = limiter.check(key, now);
        let limit = limiter.requests_per_minute;
        self.decide(req, &route, decision, limit)
    }
}

impl<S> RateLimit<S>
where
    S: Service<Req, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    fn decide(
        &mut self,
        req: Req,
        route: &Route,
        decision: Decision,
        limit: u32,
    ) -> BoxFuture<Response<Body>> {
        match decision {
            Decision::Allowed { remaining } => {
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let mut res = fut.await?;
                    let headers = res.headers_mut();
                    headers.insert(LIMIT, HeaderValue::from(limit));
                    headers.insert(REMAINING, HeaderValue::from(remaining));
                    Ok(res)
                })
            }
            Decision::Limited { retry_after } => {
                route.rate_limited.inc();
                let res: Response<Body> = GatewayError::RateLimited { retry_after, limit }.into();
                Box::pin(std::future::ready(Ok(res)))
            }
        }
    }
}
