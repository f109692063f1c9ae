//! Enforces the route's `auth` setting; the authenticated [`Identity`] goes on to the rate
//! limiter. Failures are answered 401 here.

use super::Req;
use crate::auth::Identity;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Route};

/// Checks the route's `auth` setting: the caller's identity, or the 401 to answer.
pub fn check(gw: &Gateway, route: &Route, req: &Req) -> Result<Option<Identity>, GatewayError> {
    gw.auth
        .check(route.auth, req.headers())
        .map_err(GatewayError::Unauthorized)
}
