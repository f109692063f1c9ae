//! The request path, one step after another:
//!
//! ```text
//! request id → route → observe (log, metrics, traffic hook) → auth → rate limit → proxy
//! ```
//!
//! Each step is a plain function in its own module; [`handle`] runs them in order and
//! passes what they learn (the client, the matched route, the identity, the backend that
//! served) as arguments. One future per request, no boxed layers and no request
//! extensions: at ~15 µs of CPU per proxied request, the layers' allocations and
//! type-map inserts were a measurable share (docs/benchmarks.md).

pub mod auth;
pub mod observe;
pub mod rate_limit;
pub mod request_id;
pub mod route;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Request, Response};

use crate::body::{Body, RequestBody};
use crate::gateway::Gateway;
use observe::{ObservedBody, Pending};

/// A request as the steps see it.
pub type Req = Request<RequestBody>;

/// Who is on the other end of the connection, given by the server with every request.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// The client's address: the peer, or what a trusted proxy says in `X-Forwarded-For`.
    pub ip: IpAddr,
    /// The peer's address as text for `X-Forwarded-For` ([`crate::proxy::headers::peer_text`]),
    /// made once per connection.
    pub peer_text: http::HeaderValue,
}

/// Runs the request path for one request. The gateway and the client are borrowed from
/// the connection's loop: an `Arc` clone per request is two atomic operations.
pub async fn handle(
    gw: &Arc<Gateway>,
    client: &ClientInfo,
    mut req: Req,
) -> Response<ObservedBody> {
    let id = gw.request_id.then(|| request_id::assign(&req));
    // Kept for the access log only.
    let logged_id = if gw.access_log { id.clone() } else { None };
    // Reports the request when the response body ends, or when this future is dropped
    // (the client left): see `observe`.
    let matched = route::find(gw, req.uri().path());
    let mut pending = Pending::start(gw, matched, client, &req, logged_id);
    let id_bytes = id.as_ref().map(request_id::RequestId::as_bytes);
    let (res, backend) = guarded(gw, client, pending.matched(), id_bytes, &mut req).await;
    pending.responded(res.status(), backend.map(|b| b.label.clone()));
    res.map(|body| pending.watch(body, id))
}

/// The backend's header fields and the request ID travel in the response body until the
/// head is written (see [`crate::proxy::headers::Fields`]): the HTTP/1 loop writes them
/// from there. This moves them into the header map, for a server that writes only the map
/// (hyper). What the gateway set replaces what the backend sent.
pub fn fill_header_map(res: &mut Response<ObservedBody>) {
    let fields = res.body_mut().take_fields();
    fields.merge_into(res.headers_mut());
    if let Some(id) = res.body_mut().take_request_id() {
        res.headers_mut()
            .insert(request_id::X_REQUEST_ID, id.to_value());
    }
}

/// Auth, rate limit, proxy: the answer, and the backend that gave it (if one did). The
/// request is passed by reference all the way to the backend's socket: moving it by value
/// through each step was a measurable share of the CPU time (docs/benchmarks.md).
async fn guarded(
    gw: &Gateway,
    client: &ClientInfo,
    matched: &route::MatchedRoute,
    request_id: Option<&[u8]>,
    req: &mut Req,
) -> (Response<Body>, Option<Arc<crate::upstream::Backend>>) {
    let identity = match auth::check(gw, &matched.route, req) {
        Ok(identity) => identity,
        Err(refused) => return (refused.into(), None),
    };
    let allowed = match rate_limit::check(&matched.route, client, req, identity.as_ref()) {
        Ok(allowed) => allowed,
        Err(refused) => return (refused.into(), None),
    };
    let (mut res, backend) = crate::proxy::forward(gw, client, matched, request_id, req).await;
    if let Some(allowed) = allowed {
        allowed.stamp(&mut res);
    }
    (res, backend)
}
