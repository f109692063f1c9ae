//! Finds the route for the request path and attaches it for the layers below. Paths no
//! route matches get the unmatched pseudo-route, which the proxy answers with 404, and are
//! named by their normalised path.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::Req;
use crate::gateway::{Gateway, Route};

/// The route serving this request.
#[derive(Clone)]
pub struct MatchedRoute {
    pub route: Arc<Route>,
    /// The request's route name in logs, metrics and analytics: the route's pattern, or for
    /// unmatched requests the normalised path.
    pub label: Arc<str>,
    /// Bytes of the path covered by the route's prefix (for `strip_prefix`).
    pub prefix_len: usize,
}

#[derive(Clone)]
pub struct RouteLayer {
    gw: Arc<Gateway>,
}

impl RouteLayer {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self { gw }
    }
}

#[derive(Clone)]
pub struct RouteService<S> {
    inner: S,
    gw: Arc<Gateway>,
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService {
            inner,
            gw: self.gw.clone(),
        }
    }
}

impl<S: Service<Req>> Service<Req> for RouteService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> S::Future {
        let (route, label, prefix_len) = self.gw.route_for(req.uri().path());
        req.extensions_mut().insert(MatchedRoute {
            route,
            label,
            prefix_len,
        });
        self.inner.call(req)
    }
}
