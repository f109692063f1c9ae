//! The analytics REST API on the admin listener (outside the proxy's middleware chain):
//!
//! - `GET /analytics/routes`: every route with its learned baseline and current limit
//! - `GET /analytics/routes/{route}/history?from=&to=`: its buckets, for charts
//! - `GET /analytics/anomalies?route=&backend=&metric=&from=&to=&active=`: recent anomalies
//! - `GET /analytics/backends`: every backend with its baseline, weight and breaker
//! - `GET /analytics/plugins`: every configured policy plugin and how it is doing
//!
//! Times in query strings are Unix seconds or RFC 3339; times in answers are Unix
//! milliseconds (`*_ms`). Rates are requests per minute.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::analyzer::{Analyzer, SeriesReport};
use super::anomaly::{Anomaly, Filter};
use super::bucket::UnixMs;
use super::recorder::{now_ms, unix_ms};
use super::store::SeriesKey;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::policy::types::{Metric, Stat, Window};

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone)]
struct Api {
    gw: Arc<Gateway>,
    analyzer: Arc<Analyzer>,
    config: Arc<Config>,
}

pub fn router(gw: Arc<Gateway>, analyzer: Arc<Analyzer>, config: Arc<Config>) -> Router {
    Router::new()
        .route("/analytics/routes", get(routes))
        .route("/analytics/routes/{route}/history", get(history))
        .route("/analytics/anomalies", get(anomalies))
        .route("/analytics/backends", get(backends))
        .route("/analytics/plugins", get(plugins))
        .with_state(Api {
            gw,
            analyzer,
            config,
        })
}

/// A malformed query: answered 400 with a JSON message.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let body = json!({"error": "bad_request", "message": self.0});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// Unix seconds (fractions allowed) or RFC 3339.
fn parse_time(key: &str, text: &str) -> Result<UnixMs, BadRequest> {
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0) as UnixMs);
    }
    humantime::parse_rfc3339_weak(text)
        .map(unix_ms)
        .map_err(|_| {
            BadRequest(format!(
                "`{key}` must be Unix seconds or an RFC 3339 time, not {text:?}"
            ))
        })
}

fn range(
    from: Option<&str>,
    to: Option<&str>,
    default_span: i64,
) -> Result<(Option<UnixMs>, Option<UnixMs>, UnixMs, UnixMs), BadRequest> {
    let from = from.map(|t| parse_time("from", t)).transpose()?;
    let to = to.map(|t| parse_time("to", t)).transpose()?;
    let end = to.unwrap_or_else(now_ms);
    let start = from.unwrap_or(end - default_span);
    if start > end {
        return Err(BadRequest("`from` is after `to`".into()));
    }
    Ok((from, to, start, end))
}

// === GET /analytics/routes ===

#[derive(Serialize)]
struct RouteView<'a> {
    route: &'a str,
    /// Declared in the config (else a normalised path no route matched).
    configured: bool,
    /// Requests per minute.
    avg_rate: f64,
    rate_stddev: f64,
    avg_latency_ms: f64,
    p50_latency_ms: f64,
    p99_latency_ms: f64,
    error_rate: f64,
    requests: u64,
    /// Buckets behind the baseline.
    samples: u32,
    history_seconds: f64,
    /// True until the learning period has passed: the static limit applies.
    learning: bool,
    current_rate_limit: Option<f64>,
    /// `learned`, `static` or `none`.
    rate_limit_source: &'static str,
    anomalies_24h: usize,
    active_anomalies: Vec<Metric>,
    /// The most recent complete bucket.
    current: &'a Window,
}

async fn routes(State(api): State<Api>) -> Response {
    let analysis = api.analyzer.latest();
    let learning_period = api.config.adaptive_rate_limit.learning_period.as_secs_f64();
    let log = api.analyzer.anomalies();
    let since = now_ms() - DAY_MS;
    let views: Vec<RouteView> = analysis
        .routes
        .iter()
        .map(|r| {
            let configured = api.gw.routes.iter().find(|c| c.label == r.name);
            let (limit, source) = match configured {
                Some(c) => match (c.adaptive.get(), c.current_limit()) {
                    (Some(l), _) => (Some(l), "learned"),
                    (None, Some(l)) => (Some(l), "static"),
                    (None, None) => (None, "none"),
                },
                None => (None, "none"),
            };
            let active = log
                .list(&Filter {
                    route: Some(r.name.to_string()),
                    active_only: true,
                    ..Default::default()
                })
                .into_iter()
                .map(|a| a.metric)
                .collect();
            let b = &r.baseline;
            RouteView {
                route: &r.name,
                configured: configured.is_some(),
                avg_rate: b.request_rate.mean,
                rate_stddev: b.request_rate.stddev,
                avg_latency_ms: b.overall_latency_mean_ms,
                p50_latency_ms: b.overall_latency_p50_ms,
                p99_latency_ms: b.overall_latency_p99_ms,
                error_rate: b.overall_error_rate,
                requests: b.requests,
                samples: b.samples,
                history_seconds: b.history_seconds,
                learning: b.history_seconds < learning_period,
                current_rate_limit: limit,
                rate_limit_source: source,
                anomalies_24h: log.count_for_route(&r.name, since),
                active_anomalies: active,
                current: &r.current,
            }
        })
        .collect();
    Json(views).into_response()
}

// === GET /analytics/routes/{route}/history ===

#[derive(Deserialize)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
struct Point {
    start_ms: UnixMs,
    interval_ms: i64,
    requests: u64,
    errors: u64,
    rate: f64,
    error_rate: Option<f64>,
    latency_mean_ms: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_max_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
}

async fn history(
    State(api): State<Api>,
    Path(route): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let (_, _, from, to) = match range(q.from.as_deref(), q.to.as_deref(), 3600 * 1000) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let analysis = api.analyzer.latest();
    let report = analysis.route(&route);
    let key = SeriesKey::Route(route.as_str().into());
    let buckets = api.analyzer.store().buckets(&key, from, to);
    if report.is_none() && buckets.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": format!("no route {route:?} (URL-encode the route, e.g. %2Fapi%2Fusers)")})),
        )
            .into_response();
    }
    let points: Vec<Point> = buckets
        .iter()
        .map(|b| Point {
            start_ms: b.start,
            interval_ms: b.interval_ms,
            requests: b.requests,
            errors: b.errors,
            rate: b.rate_per_minute(),
            error_rate: b.error_rate(),
            latency_mean_ms: b.latency_mean_ms(),
            latency_p50_ms: b.latency_quantile_ms(0.5),
            latency_p99_ms: b.latency_quantile_ms(0.99),
            latency_max_ms: b.latency_max_us as f64 / 1000.0,
            bytes_in: b.bytes_in,
            bytes_out: b.bytes_out,
        })
        .collect();
    let band = |s: Stat| json!({"mean": s.mean, "stddev": s.stddev});
    let baseline = report.map(|r| {
        json!({
            "rate": band(r.baseline.request_rate),
            "error_rate": band(r.baseline.error_rate),
            "latency_mean_ms": band(r.baseline.latency_mean_ms),
            "latency_p99_ms": band(r.baseline.latency_p99_ms),
        })
    });
    Json(json!({ "route": route, "from_ms": from, "to_ms": to, "baseline": baseline, "points": points })).into_response()
}

// === GET /analytics/anomalies ===

#[derive(Deserialize)]
struct AnomalyQuery {
    route: Option<String>,
    backend: Option<String>,
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    active: bool,
    limit: Option<usize>,
}

async fn anomalies(State(api): State<Api>, Query(q): Query<AnomalyQuery>) -> Response {
    let (from, to, _, _) = match range(q.from.as_deref(), q.to.as_deref(), DAY_MS) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let metric = match q.metric.as_deref().map(|m| Metric::parse(m).ok_or(m)) {
        Some(Err(m)) => {
            return BadRequest(format!(
                "unknown metric {m:?}; one of request_rate, error_rate, latency_mean, latency_p99"
            ))
            .into_response();
        }
        Some(Ok(m)) => Some(m),
        None => None,
    };
    let filter = Filter {
        route: q.route,
        backend: q.backend,
        metric,
        from,
        to,
        active_only: q.active,
    };
    let mut list: Vec<Anomaly> = api.analyzer.anomalies().list(&filter);
    list.truncate(q.limit.unwrap_or(1000));
    Json(list).into_response()
}

// === GET /analytics/backends ===

#[derive(Serialize)]
struct BackendView<'a> {
    backend: &'a str,
    upstreams: Vec<&'a str>,
    /// Share of traffic in its (first) upstream.
    weight: f64,
    weights: BTreeMap<&'a str, f64>,
    avg_latency_ms: f64,
    p99_latency_ms: f64,
    error_rate: f64,
    requests: u64,
    samples: u32,
    history_seconds: f64,
    breaker_state: &'static str,
    /// Error rate that trips the breaker (0: the rule is off).
    breaker_threshold: f64,
    threshold_learned: bool,
    /// Learned thresholds for each route's traffic to this backend.
    route_thresholds: BTreeMap<&'a str, f64>,
    current: Option<&'a Window>,
}

async fn backends(State(api): State<Api>) -> Response {
    let analysis = api.analyzer.latest();
    let views: Vec<BackendView> = api
        .gw
        .backends
        .iter()
        .map(|b| {
            let mut weights = BTreeMap::new();
            for (name, up) in &api.gw.upstreams {
                if let Some(i) = up.backends.iter().position(|m| Arc::ptr_eq(m, b)) {
                    let w = match up.balancer.weights() {
                        Some(w) => w.get(i).copied().unwrap_or(0.0),
                        None => 1.0 / up.backends.len() as f64,
                    };
                    weights.insert(name.as_str(), w);
                }
            }
            let route_thresholds = b
                .routes
                .iter()
                .enumerate()
                .filter_map(|(slot, id)| {
                    let route = api.gw.routes.get(*id)?;
                    Some((&*route.label, b.breaker.route_threshold(slot)?))
                })
                .collect();
            let report: Option<&SeriesReport> = analysis.backend(&b.label);
            let base = report.map(|r| r.observed.clone()).unwrap_or_default();
            BackendView {
                backend: &b.label,
                upstreams: weights.keys().copied().collect(),
                weight: weights.values().next().copied().unwrap_or(0.0),
                avg_latency_ms: base.overall_latency_mean_ms,
                p99_latency_ms: base.overall_latency_p99_ms,
                error_rate: base.overall_error_rate,
                requests: base.requests,
                samples: base.samples,
                history_seconds: base.history_seconds,
                weights,
                breaker_state: b.breaker.state().as_str(),
                breaker_threshold: b.breaker.threshold(),
                threshold_learned: b.breaker.threshold_learned(),
                route_thresholds,
                current: report.map(|r| &r.current),
            }
        })
        .collect();
    Json(views).into_response()
}

// === GET /analytics/plugins ===

/// Every configured plugin: kind, state (`active`, `quarantined`, `missing`), sha256,
/// when it was loaded, calls, errors, the last error, and why the file on disk was last
/// rejected, if it was.
async fn plugins(State(api): State<Api>) -> Response {
    let views = api
        .analyzer
        .plugins()
        .map(|p| p.views())
        .unwrap_or_default();
    Json(views).into_response()
}
