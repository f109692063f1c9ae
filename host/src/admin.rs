//! The admin listener, separate from the proxy port and outside its middleware chain:
//! `GET /health`, `GET /metrics` (Prometheus text format), with analytics on
//! `/analytics/*`, and the dashboard page at `/dashboard`. When `admin.token` is set, every
//! data request needs `Authorization: Bearer <token>`; the dashboard's static files (which
//! hold no data) do not, and the page sends the token it is given in its URL fragment.

mod dashboard;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::gateway::Gateway;
use crate::upstream::breaker::BreakerState;

#[derive(Clone)]
struct AdminState {
    gw: Arc<Gateway>,
    started: Instant,
    token: Option<Arc<str>>,
}

/// The admin API as a router, so tests can call it without a socket. `analytics` adds
/// the `/analytics/*` endpoints.
pub fn router(gw: Arc<Gateway>, token: Option<String>, analytics: Option<Router>) -> Router {
    let state = AdminState {
        gw,
        started: Instant::now(),
        token: token.map(Into::into),
    };
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    if let Some(analytics) = analytics {
        router = router.merge(analytics);
    }
    router
        .layer(middleware::from_fn_with_state(state, require_token))
        .merge(dashboard::router())
}

async fn require_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(&**token) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "unauthorized", "message": "admin token required"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(state): State<AdminState>) -> impl IntoResponse {
    let backends = &state.gw.backends;
    let open = backends
        .iter()
        .filter(|b| b.breaker.state() == BreakerState::Open)
        .count();
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "routes": state.gw.routes.len(),
        "backends": { "total": backends.len(), "open_breakers": open },
    }))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.gw.metrics.render(),
    )
}
