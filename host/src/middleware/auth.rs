//! Enforces the route's `auth` setting; the authenticated [`Identity`] is attached to the
//! request for the rate limiter. Failures are answered 401 here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use tower::{Layer, Service};

use super::route::MatchedRoute;
use super::{BoxFuture, Req};
use crate::body::Body;
use crate::config::AuthKind;
use crate::error::GatewayError;
use crate::gateway::Gateway;

#[derive(Clone)]
pub struct AuthLayer {
    gw: Arc<Gateway>,
}

impl AuthLayer {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self { gw }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    gw: Arc<Gateway>,
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            gw: self.gw.clone(),
        }
    }
}

impl<S> Service<Req> for Auth<S>
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

    fn call(&mut self, mut req: Req) -> Self::Future {
        let kind = req
            .extensions()
            .get::<MatchedRoute>()
            .map_or(AuthKind::None, |m| m.route.auth);
        match self.gw.auth.check(kind, req.headers()) {
            Ok(identity) => {
                if let Some(identity) = identity {
                    req.extensions_mut().insert(identity);
                }
                Box::pin(self.inner.call(req))
            }
            Err(e) => {
                let res: Response<Body> = GatewayError::Unauthorized(e).into();
                Box::pin(std::future::ready(Ok(res)))
            }
        }
    }
}
