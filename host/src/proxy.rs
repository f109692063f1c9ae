//! The innermost service: picks a backend, forwards the request over a pooled keep-alive
//! connection ([`client`]), and streams the response back. Backend trouble becomes 502/503/504 here and is
//! reported to the backend's circuit breaker.

pub mod client;
pub mod headers;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Response, header};
use tower::Service;

use crate::body::Body;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::middleware::route::MatchedRoute;
use crate::middleware::{BoxFuture, ClientInfo, Req};
use crate::upstream::Backend;
use client::ClientError;

/// Response extension: the backend that served (or failed) the request.
#[derive(Clone)]
pub struct ServedBy(pub Arc<Backend>);

#[derive(Clone)]
pub struct Proxy {
    gw: Arc<Gateway>,
}

impl Proxy {
    pub fn new(gw: Arc<Gateway>) -> Self {
        Self { gw }
    }
}

impl Service<Req> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Box::pin(forward(self.gw.clone(), req))
    }
}

async fn forward(gw: Arc<Gateway>, req: Req) -> Result<Response<Body>, Infallible> {
    let Some(MatchedRoute {
        route, prefix_len, ..
    }) = req.extensions().get::<MatchedRoute>().cloned()
    else {
        return Ok(GatewayError::NoRoute.into());
    };
    let Some(upstream) = &route.upstream else {
        return Ok(GatewayError::NoRoute.into());
    };
    let Some(attempt) = upstream.pick(route.id) else {
        return Ok(GatewayError::NoHealthyBackend.into());
    };
    let backend = attempt.backend.clone();
    let upstream_req = match prepare(
        &gw,
        req,
        &backend,
        if route.strip_prefix { prefix_len } else { 0 },
    ) {
        Ok(r) => r,
        Err(e) => return Ok(e.into()),
    };

    let exchange = backend.pool.send(upstream_req, route.connect_timeout);
    let outcome = tokio::time::timeout(route.request_timeout, exchange).await;
    let now = Instant::now();
    let label = &*backend.label;
    // Keyed by status code; 1000 and 1001 stand for `error` and `timeout`.
    let count = |status: &str| {
        let key = match status {
            "error" => 1000,
            "timeout" => 1001,
            code => code.parse().unwrap_or(0),
        };
        backend.requests.inc(key, || {
            gw.metrics
                .upstream_requests
                .with_label_values(&[label, status])
        });
    };
    let (res, success): (Response<Body>, bool) = match outcome {
        Ok(Ok(mut res)) => {
            let status = res.status();
            count(status.as_str());
            headers::strip_hop_by_hop(res.headers_mut());
            (res.map(Body::Upstream), !status.is_server_error())
        }
        // The client's upload broke off: not the backend's fault.
        Ok(Err(ClientError::RequestBody(e))) => {
            let err = GatewayError::BadRequest(format!("reading the request body: {e}"));
            (err.into(), true)
        }
        Ok(Err(e)) => {
            let timed_out = e.is_timeout();
            count(if timed_out { "timeout" } else { "error" });
            tracing::debug!(backend = label, error = %e, "backend request failed");
            let err = if timed_out {
                GatewayError::BackendTimeout
            } else {
                GatewayError::BackendUnreachable(e.to_string())
            };
            (err.into(), false)
        }
        Err(_) => {
            count("timeout");
            (GatewayError::BackendTimeout.into(), false)
        }
    };
    attempt.finish(success, now);
    let mut res = res;
    res.extensions_mut().insert(ServedBy(backend));
    Ok(res)
}

/// Turns the client's request into the backend's: new URI, HTTP/1.1, hop-by-hop headers
/// dropped, `Host` kept, `X-Forwarded-*` set.
fn prepare(gw: &Gateway, req: Req, backend: &Backend, strip: usize) -> Result<Req, GatewayError> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path();
    let path = match path.get(strip..) {
        Some(rest) if strip > 0 && rest.is_empty() => "/",
        Some(rest) if strip > 0 && !rest.starts_with('/') => {
            return Err(GatewayError::BadRequest(
                "path does not match the route prefix".into(),
            ));
        }
        Some(rest) => rest,
        None => path,
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    }
    .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    parts.uri = Uri::builder()
        .scheme(backend.url.scheme.clone())
        .authority(backend.url.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    headers::strip_hop_by_hop(&mut parts.headers);
    match &host {
        Some(h) => {
            parts.headers.insert(header::HOST, h.clone());
        }
        None => {
            let authority = HeaderValue::from_str(backend.url.authority.as_str())
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            parts.headers.insert(header::HOST, authority);
        }
    }
    if let Some(client) = parts.extensions.get::<ClientInfo>() {
        let trusted = gw
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&client.peer.ip().to_canonical()));
        headers::set_forwarded(&mut parts.headers, client.peer, host.as_ref(), trusted);
    }
    Ok(Req::from_parts(parts, body))
}
