//! The configuration as the YAML file spells it: serde structs with a default for every
//! optional key. Unknown keys are rejected everywhere (`deny_unknown_fields`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{BackendUrl, duration, opt_duration};

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on. Port 0 picks a free port (logged at start).
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Named groups of backends that routes send traffic to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
}

/// The admin listener: `/health`, `/metrics`, later `/analytics/*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token required on every admin request; mandatory off loopback.
    #[serde(default)]
    pub token: Option<String>,
}

/// How the gateway talks to clients and backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Default time to establish a backend connection (a route may override it).
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Default time from sending a request to receiving the response head.
    #[serde(default = "defaults::request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// How long an idle pooled backend connection is kept.
    #[serde(default = "defaults::pool_idle_timeout", with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per backend.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle_per_backend: usize,
    /// Peers whose `X-Forwarded-For` is believed when finding the client IP.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish.
    #[serde(default = "defaults::shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// One JSON line per request.
    #[serde(default = "defaults::yes")]
    pub access_log: bool,
    /// A `tracing` filter such as `info` or `microgate=debug`; `RUST_LOG` wins when set.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

/// A named group of equivalent backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub backends: Vec<BackendUrl>,
}

/// One route: a path prefix (optionally with `{param}` segments) sent to an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Prefix matched on whole path segments; the longest match wins.
    pub path: String,
    /// Name of an entry of `upstreams`.
    pub upstream: String,
    #[serde(default)]
    pub auth: AuthKind,
    /// Static token-bucket limit for this route.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default, with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub request_timeout: Option<Duration>,
    /// Remove the matched prefix before forwarding (`/api/users/7` → `/7`).
    #[serde(default)]
    pub strip_prefix: bool,
}

/// Which credential a route requires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    #[default]
    None,
    ApiKey,
    Jwt,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::None => "none",
            AuthKind::ApiKey => "api_key",
            AuthKind::Jwt => "jwt",
        }
    }
}

/// A static token bucket: `requests_per_minute` refill, `burst` capacity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_minute: u32,
    /// Bucket capacity; defaults to one minute's worth (`requests_per_minute`).
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateLimitKey,
}

/// Who shares a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// One bucket per client IP (see `proxy.trusted_proxies`).
    #[default]
    ClientIp,
    /// One bucket per `X-API-Key` value; requests without one fall back to the client IP.
    ApiKey,
    /// One bucket per JWT subject (`sub`); requests without one fall back to the client IP.
    JwtSubject,
    /// One bucket for the whole route.
    Route,
}

impl RateLimitKey {
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitKey::ClientIp => "client_ip",
            RateLimitKey::ApiKey => "api_key",
            RateLimitKey::JwtSubject => "jwt_subject",
            RateLimitKey::Route => "route",
        }
    }
}

/// Credentials accepted by routes with `auth: api_key` or `auth: jwt`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Keys accepted in the `X-API-Key` header.
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

/// JWT verification (`Authorization: Bearer <token>`), HS256 and/or RS256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM file holding the RSA public key for RS256 tokens.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// The RSA public key inline, as PEM text.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Required `iss` claim.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` claim.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "defaults::jwt_leeway", with = "duration")]
    pub leeway: Duration,
}

/// Per-backend circuit breaker. A breaker trips on either rule (a rule set to 0 is off).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// Trip when the failure ratio over `window` reaches this (0 < r ≤ 1) …
    #[serde(default = "defaults::error_rate")]
    pub error_rate: f64,
    /// … once the window holds at least this many requests.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u32,
    #[serde(default = "defaults::window", with = "duration")]
    pub window: Duration,
    /// How long a tripped breaker keeps its backend out before probing it.
    #[serde(default = "defaults::open_duration", with = "duration")]
    pub open_duration: Duration,
    /// Probe requests let through when half-open; all must succeed to close.
    #[serde(default = "defaults::half_open_probes")]
    pub half_open_probes: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: defaults::admin_listen(),
            token: None,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: defaults::connect_timeout(),
            request_timeout: defaults::request_timeout(),
            pool_idle_timeout: defaults::pool_idle_timeout(),
            pool_max_idle_per_backend: defaults::pool_max_idle(),
            trusted_proxies: Vec::new(),
            shutdown_timeout: defaults::shutdown_timeout(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            access_log: true,
            level: defaults::log_level(),
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::consecutive_failures(),
            error_rate: defaults::error_rate(),
            min_requests: defaults::min_requests(),
            window: defaults::window(),
            open_duration: defaults::open_duration(),
            half_open_probes: defaults::half_open_probes(),
        }
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9090))
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn pool_max_idle() -> usize {
        256
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn jwt_leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub fn consecutive_failures() -> u32 {
        5
    }
    pub fn error_rate() -> f64 {
        0.5
    }
    pub fn min_requests() -> u32 {
        20
    }
    pub fn window() -> Duration {
        Duration::from_secs(10)
    }
    pub fn open_duration() -> Duration {
        Duration::from_secs(30)
    }
    pub fn half_open_probes() -> u32 {
        3
    }
}
