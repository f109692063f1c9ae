//! The running gateway's shared state, built once from a validated [`Config`]: the route
//! table, upstreams and backends (with their connection pools), credentials, limiters and
//! metrics. Every
//! layer of the request path holds an `Arc<Gateway>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use prometheus::{Gauge, IntCounter};

use crate::analytics::routes::RouteNames;
use crate::auth::{AuthSetupError, Authenticator};
use crate::clock::CoarseClock;
use crate::config::{AuthKind, Config};
use crate::metrics::{CounterCache, LatencyCells, Metrics};
use crate::ratelimit::{RouteLimiter, SharedLimit};
use crate::routing::{RoutePattern, Router};
use crate::traffic::TrafficSink;
use crate::upstream::balancer::Balancer;
use crate::upstream::{Backend, Upstream};

/// Label of the pseudo-route that takes requests no route matches.
pub const UNMATCHED: &str = "{unmatched}";

pub struct Gateway {
    pub router: Router,
    pub routes: Vec<Arc<Route>>,
    /// Answers 404 for paths no route matches (still logged and counted).
    pub unmatched: Arc<Route>,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Every distinct backend; `Backend::id` indexes this.
    pub backends: Vec<Arc<Backend>>,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub trusted_proxies: Vec<IpNet>,
    /// `proxy.request_id` and `proxy.forwarded_headers`.
    pub request_id: bool,
    pub forwarded_headers: bool,
    pub access_log: bool,
    pub sink: Arc<dyn TrafficSink>,
    /// The coarse clock the request path reads (advanced by the proxy listener's ticker).
    pub clock: Arc<CoarseClock>,
    /// Names for requests no route matches (normalised paths, capped).
    pub route_names: RouteNames,
}

/// A configured route, ready to serve.
pub struct Route {
    /// Index in [`Gateway::routes`] (`usize::MAX` for the unmatched pseudo-route).
    pub id: usize,
    /// The configured pattern, used as the route's name in logs, metrics and analytics.
    pub label: Arc<str>,
    /// `None` only for the unmatched pseudo-route.
    pub upstream: Option<Arc<Upstream>>,
    pub auth: AuthKind,
    /// The static limit from the config.
    pub limiter: Option<RouteLimiter>,
    /// The learned limit for the whole route; once set, it replaces the static one.
    pub adaptive: SharedLimit,
    pub request_timeout: Duration,
    pub strip_prefix: bool,
    pub connect_timeout: Duration,
    /// This route's `gateway_request_duration_seconds` series.
    pub duration: Arc<LatencyCells>,
    /// This route's `gateway_requests_total` series, by method and status.
    pub requests: CounterCache,
    /// This route's `gateway_rate_limited_total` series.
    pub rate_limited: IntCounter,
    /// This route's `gateway_rate_limit_current` series.
    pub limit_gauge: Gauge,
}

impl Route {
    /// Whether the route's upstream has more than one backend. A route with one keeps no
    /// route × backend series in analytics: its own counts what reached that backend.
    pub fn several_backends(&self) -> bool {
        self.upstream.as_ref().is_some_and(|u| u.backends.len() > 1)
    }

    /// The limit in force, requests per minute: learned, else static, else none.
    pub fn current_limit(&self) -> Option<f64> {
        self.adaptive.get().or_else(|| {
            self.limiter
                .as_ref()
                .map(|l| f64::from(l.requests_per_minute))
        })
    }
}

/// Why a configuration could not be turned into a running gateway.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("{0}")]
    Invalid(String),
}

impl Gateway {
    pub fn new(
        config: &Config,
        metrics: Metrics,
        sink: Arc<dyn TrafficSink>,
    ) -> Result<Self, BuildError> {
        // Which routes reach each backend: the breaker keeps a window per route.
        let mut routes_of: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, rc) in config.routes.iter().enumerate() {
            let urls = config
                .upstreams
                .get(&rc.upstream)
                .map_or(&[][..], |u| &u.backends);
            for url in urls {
                let list = routes_of.entry(url.label.as_str()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
        }
        let clock = Arc::new(CoarseClock::new());
        let mut backends: Vec<Arc<Backend>> = Vec::new();
        let mut upstreams = BTreeMap::new();
        for (name, up) in &config.upstreams {
            let mut members = Vec::with_capacity(up.backends.len());
            for url in &up.backends {
                let backend = match backends.iter().find(|b| b.url == *url) {
                    Some(b) => b.clone(),
                    None => {
                        let label = url.label.as_str();
                        let b = Arc::new(Backend::new(
                            backends.len(),
                            url.clone(),
                            config.circuit_breaker.clone(),
                            &config.proxy,
                            routes_of.remove(label).unwrap_or_default(),
                            metrics.circuit_state.with_label_values(&[label]),
                            clock.clone(),
                        ));
                        backends.push(b.clone());
                        b
                    }
                };
                members.push(backend);
            }
            let share = 1.0 / members.len().max(1) as f64;
            for b in &members {
                metrics
                    .backend_weight
                    .with_label_values(&[name.as_str(), &*b.label])
                    .set(share);
            }
            upstreams.insert(
                name.clone(),
                Arc::new(Upstream {
                    name: name.clone(),
                    backends: members,
                    balancer: Balancer::round_robin(),
                }),
            );
        }

        let origin = std::time::Instant::now();
        let burst = config.adaptive_rate_limit.burst_window;
        let mut patterns = Vec::with_capacity(config.routes.len());
        let mut routes = Vec::with_capacity(config.routes.len());
        for (id, rc) in config.routes.iter().enumerate() {
            let pattern = RoutePattern::parse(&rc.path).map_err(BuildError::Invalid)?;
            patterns.push(pattern);
            let upstream = upstreams.get(&rc.upstream).cloned().ok_or_else(|| {
                BuildError::Invalid(format!("unknown upstream {:?}", rc.upstream))
            })?;
            let label = rc.path.as_str();
            let route = Route {
                id,
                label: label.into(),
                upstream: Some(upstream),
                auth: rc.auth,
                limiter: rc.rate_limit.as_ref().map(RouteLimiter::new),
                adaptive: SharedLimit::new(burst, origin),
                request_timeout: rc.request_timeout.unwrap_or(config.proxy.request_timeout),
                strip_prefix: rc.strip_prefix,
                connect_timeout: rc.connect_timeout.unwrap_or(config.proxy.connect_timeout),
                duration: metrics.route_latency(label),
                requests: CounterCache::default(),
                rate_limited: metrics.rate_limited.with_label_values(&[label]),
                limit_gauge: metrics.rate_limit_current.with_label_values(&[label]),
            };
            route.limit_gauge.set(route.current_limit().unwrap_or(0.0));
            routes.push(Arc::new(route));
        }
        let unmatched = Arc::new(Route {
            id: usize::MAX,
            label: UNMATCHED.into(),
            upstream: None,
            auth: AuthKind::None,
            limiter: None,
            adaptive: SharedLimit::new(burst, origin),
            request_timeout: config.proxy.request_timeout,
            strip_prefix: false,
            connect_timeout: config.proxy.connect_timeout,
            duration: metrics.route_latency(UNMATCHED),
            requests: CounterCache::default(),
            rate_limited: metrics.rate_limited.with_label_values(&[UNMATCHED]),
            limit_gauge: metrics.rate_limit_current.with_label_values(&[UNMATCHED]),
        });
        // Series that exist from the start, at 0, so dashboards see them before the first event.
        for metric in crate::policy::types::Metric::ALL {
            for route in &routes {
                metrics
                    .anomalies
                    .with_label_values(&[&*route.label, metric.as_str()]);
            }
            for backend in &backends {
                metrics
                    .backend_anomalies
                    .with_label_values(&[&*backend.label, metric.as_str()]);
            }
        }
        let route_names = RouteNames::new(
            config.analytics.max_routes,
            metrics.route_overflow.clone(),
            metrics.routes_tracked.clone(),
        );

        Ok(Self {
            router: Router::new(&patterns),
            routes,
            unmatched,
            upstreams,
            backends,
            auth: Authenticator::new(&config.auth)?,
            metrics,
            trusted_proxies: config.proxy.trusted_proxies.clone(),
            request_id: config.proxy.request_id,
            forwarded_headers: config.proxy.forwarded_headers,
            access_log: config.log.access_log,
            sink,
            clock,
            route_names,
        })
    }

    /// The route serving `path`, its name for analytics, and how many bytes of the path
    /// its prefix covers. A path no route matches gets the unmatched pseudo-route and its
    /// normalised path as its name.
    pub fn route_for(&self, path: &str) -> (Arc<Route>, Arc<str>, usize) {
        if let Some(m) = self.router.lookup(path)
            && let Some(route) = self.routes.get(m.route)
        {
            return (route.clone(), route.label.clone(), m.prefix_len);
        }
        (self.unmatched.clone(), self.route_names.for_path(path), 0)
    }
}
