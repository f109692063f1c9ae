//! Finds the route for the request path. Paths no
//! route matches get the unmatched pseudo-route, which the proxy answers with 404, and are
//! named by their normalised path.

use std::sync::Arc;

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

/// The route for `path`.
pub fn find(gw: &Gateway, path: &str) -> MatchedRoute {
    let (route, label, prefix_len) = gw.route_for(path);
    MatchedRoute {
        route,
        label,
        prefix_len,
    }
}
