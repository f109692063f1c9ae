//! The request path as a stack of tower layers, outermost first:
//!
//! ```text
//! request id → route → observe (log, metrics, traffic hook) → auth → rate limit → proxy
//! ```
//!
//! Each layer is a pair: a service `Foo<S>` and its `FooLayer`. They pass facts down through
//! request extensions ([`ClientInfo`], [`route::MatchedRoute`], [`crate::auth::Identity`]) and
//! up through response extensions ([`crate::proxy::ServedBy`]).

pub mod auth;
pub mod observe;
pub mod rate_limit;
pub mod request_id;
pub mod route;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use http::{Request, Response};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::body::RequestBody;
use crate::gateway::Gateway;
use crate::proxy::Proxy;

/// A request as the layers see it.
pub type Req = Request<RequestBody>;

/// The boxed future most layers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// Who is on the other end of the connection, attached by the server to every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// The client's address: the peer, or what a trusted proxy says in `X-Forwarded-For`.
    pub ip: IpAddr,
}

/// The complete request path.
pub type Stack = BoxCloneSyncService<Req, Response<observe::ObservedBody>, Infallible>;

/// Builds the request path for a gateway.
pub fn stack(gw: Arc<Gateway>) -> Stack {
    let svc = ServiceBuilder::new()
        .layer(request_id::RequestIdLayer)
        .layer(route::RouteLayer::new(gw.clone()))
        .layer(observe::ObserveLayer::new(gw.clone()))
        .layer(auth::AuthLayer::new(gw.clone()))
        .layer(rate_limit::RateLimitLayer)
        .service(Proxy::new(gw));
    BoxCloneSyncService::new(svc)
}
