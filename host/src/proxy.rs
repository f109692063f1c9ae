//! The innermost service: picks a backend, forwards the request over a pooled keep-alive
//! connection ([`client`]), and streams the response back. Backend trouble becomes 502/503/504 here and is
//! reported to the backend's circuit breaker.

pub mod client;
pub mod headers;

use std::sync::Arc;

use http::Response;
use http::uri::{PathAndQuery, Uri};

use crate::body::Body;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::middleware::route::MatchedRoute;
use crate::middleware::{ClientInfo, Req};
use crate::upstream::Backend;
use client::ClientError;

/// Forwards the request to one of the route's backends: the response (or the error answer
/// for the client), and the backend tried.
pub async fn forward(
    gw: &Gateway,
    client: &ClientInfo,
    matched: &MatchedRoute,
    request_id: Option<&[u8]>,
    req: &mut Req,
) -> (Response<Body>, Option<Arc<Backend>>) {
    let route = &matched.route;
    let Some(upstream) = &route.upstream else {
        return (GatewayError::NoRoute.into(), None);
    };
    let Some(attempt) = upstream.pick(route.id, gw.clock.instant()) else {
        return (GatewayError::NoHealthyBackend.into(), None);
    };
    let backend = attempt.backend.clone();
    let strip = if route.strip_prefix {
        matched.prefix_len
    } else {
        0
    };
    if let Err(e) = strip_prefix(req, strip) {
        // Nothing was sent: not the backend's answer.
        return (e.into(), None);
    }
    let peer = client.peer.ip().to_canonical();
    let forwarding = headers::Forwarding {
        request_id,
        peer_text: &client.peer_text,
        peer_trusted: gw.trusted_proxies.iter().any(|n| n.contains(&peer)),
        forwarded_headers: gw.forwarded_headers,
        backend_authority: backend.url.authority.as_str(),
    };

    // The deadline on the coarse clock, a tick later so that it is never early.
    let deadline = gw.clock.instant() + route.request_timeout + crate::clock::TICK;
    let outcome = backend
        .pool
        .send(req, &forwarding, route.connect_timeout, deadline)
        .await;
    let now = gw.clock.instant();
    let label = &*backend.label;
    // Keyed by status code; 1000 and 1001 stand for `error` and `timeout`.
    let count = |key: u32, status: &str| {
        backend.requests.inc(key, || {
            gw.metrics
                .upstream_requests
                .with_label_values(&[label, status])
        });
    };
    let (res, success): (Response<Body>, bool) = match outcome {
        Ok(res) => {
            let status = res.status();
            count(status.as_u16().into(), status.as_str());
            // Hop-by-hop fields are already left out of the body's fields.
            (res.map(Body::Upstream), !status.is_server_error())
        }
        // The client's upload broke off: not the backend's fault.
        Err(ClientError::RequestBody(e)) => {
            let err = GatewayError::BadRequest(format!("reading the request body: {e}"));
            (err.into(), true)
        }
        Err(e) => {
            let timed_out = e.is_timeout();
            if timed_out {
                count(1001, "timeout");
            } else {
                count(1000, "error");
            }
            tracing::debug!(backend = label, error = %e, "backend request failed");
            let err = if timed_out {
                GatewayError::BackendTimeout
            } else {
                GatewayError::BackendUnreachable(e.to_string())
            };
            (err.into(), false)
        }
    };
    attempt.finish(success, now);
    (res, Some(backend))
}

/// Takes the route's prefix (`strip` bytes) off the path. The client writes only the path
/// and query on the wire, so the URI is rebuilt only when a prefix is stripped; the
/// header fields change as the request is written ([`headers::Forwarding`]).
fn strip_prefix(req: &mut Req, strip: usize) -> Result<(), GatewayError> {
    if strip == 0 {
        return Ok(());
    }
    let path = req.uri().path();
    let path = match path.get(strip..) {
        Some("") => "/",
        Some(rest) if !rest.starts_with('/') => {
            return Err(GatewayError::BadRequest(
                "path does not match the route prefix".into(),
            ));
        }
        Some(rest) => rest,
        None => path,
    };
    let path_and_query = match req.uri().query() {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    }
    .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    *req.uri_mut() = Uri::from(path_and_query);
    Ok(())
}
