//! The gateway's own answers to a client: one error type, mapped to a status and a small
//! JSON body in one place.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::AuthError;
use crate::body::Body;

/// Why the gateway answered a request itself instead of with a backend's response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no route matches this path")]
    NoRoute,
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("rate limit exceeded")]
    RateLimited { retry_after: Duration, limit: u32 },
    #[error("no healthy backend: every backend of this upstream has its circuit breaker open")]
    NoHealthyBackend,
    #[error("backend unreachable: {0}")]
    BackendUnreachable(String),
    #[error("backend did not answer in time")]
    BackendTimeout,
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::NoHealthyBackend => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BackendUnreachable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Short machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "not_found",
            GatewayError::Unauthorized(_) => "unauthorized",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::NoHealthyBackend => "no_healthy_backend",
            GatewayError::BackendUnreachable(_) => "bad_gateway",
            GatewayError::BackendTimeout => "gateway_timeout",
            GatewayError::BadRequest(_) => "bad_request",
        }
    }
}

impl From<GatewayError> for Response<Body> {
    fn from(err: GatewayError) -> Self {
        let body = serde_json::json!({ "error": err.code(), "message": err.to_string() });
        let mut res = Response::new(Body::full(body.to_string()));
        *res.status_mut() = err.status();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &err {
            GatewayError::RateLimited { retry_after, limit } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                headers.insert(
                    crate::middleware::rate_limit::LIMIT,
                    HeaderValue::from(*limit),
                );
                headers.insert(
                    crate::middleware::rate_limit::REMAINING,
                    HeaderValue::from(0),
                );
            }
            GatewayError::Unauthorized(AuthError::MissingToken | AuthError::InvalidToken(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        res
    }
}
