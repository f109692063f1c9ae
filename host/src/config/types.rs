//! The configuration as the YAML file spells it: serde structs with a default for every
//! optional key. Unknown keys are rejected everywhere (`deny_unknown_fields`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{BackendUrl, byte_size, duration, opt_duration};

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
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    #[serde(default)]
    pub adaptive_rate_limit: AdaptiveRateLimitConfig,
    #[serde(default)]
    pub weighted_lb: WeightedLbConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
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
    /// `X-Request-ID`: keep the client's (when sane) or make one, send it to the backend,
    /// echo it to the client and log it. Off: no ID is made, and a client's header
    /// reaches the backend as any other field.
    #[serde(default = "defaults::yes")]
    pub request_id: bool,
    /// `X-Forwarded-For`, `-Proto` and `-Host` to the backend. Off: none are added, and
    /// only a trusted proxy's reach the backend (a client's could be forged).
    #[serde(default = "defaults::yes")]
    pub forwarded_headers: bool,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish.
    #[serde(default = "defaults::shutdown_timeout", with = "duration")]
    pub shutdown_timeout: Duration,
    /// How long a client's idle keep-alive connection is kept open, and how long a client
    /// may take to send request headers.
    #[serde(default = "defaults::keepalive_timeout", with = "duration")]
    pub keepalive_timeout: Duration,
    /// Threads serving requests; default: one per CPU core.
    #[serde(default)]
    pub worker_threads: Option<usize>,
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
    /// This route's rate-limit policy: a plugin file in `plugins.dir`, or `builtin`.
    /// Default: `plugins.rate_limit`.
    #[serde(default)]
    pub rate_limit_policy: Option<String>,
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
    /// Learn the error-rate threshold from each backend's (and route's) baseline.
    #[serde(default)]
    pub adaptive: AdaptiveBreakerConfig,
}

/// Policies as WebAssembly components, hot-swapped from a folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder watched for `.wasm` files (created if missing).
    #[serde(default = "defaults::plugins_dir")]
    pub dir: PathBuf,
    /// Rate-limit policy plugin (a file name in `dir`); absent: the built-in policy.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Anomaly policy plugin; absent: the built-in z-score.
    #[serde(default)]
    pub anomaly: Option<String>,
    /// Backend-weighting policy plugin; absent: the built-in formula.
    #[serde(default)]
    pub weighting: Option<String>,
    /// Each plugin's own parameters, by file name, on top of those of the section it
    /// replaces (e.g. `adaptive_rate_limit.multiplier`).
    #[serde(default)]
    pub params: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Longest a single policy call may run.
    #[serde(default = "defaults::plugin_deadline", with = "duration")]
    pub deadline: Duration,
    /// Most memory one plugin instance may use (`16MiB`, `512KiB`, or bytes).
    #[serde(default = "defaults::plugin_memory", with = "byte_size")]
    pub memory_limit: u64,
    /// Failures in a row after which a plugin is set aside until its file changes.
    #[serde(default = "defaults::quarantine_after")]
    pub quarantine_after: u32,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: defaults::plugins_dir(),
            rate_limit: None,
            anomaly: None,
            weighting: None,
            params: BTreeMap::new(),
            deadline: defaults::plugin_deadline(),
            memory_limit: defaults::plugin_memory(),
            quarantine_after: defaults::quarantine_after(),
        }
    }
}

/// Learned breaker thresholds: `max(baseline error rate × error_multiplier, min_threshold)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveBreakerConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default = "defaults::error_multiplier")]
    pub error_multiplier: f64,
    #[serde(default = "defaults::min_threshold")]
    pub min_threshold: f64,
    /// History needed before the learned threshold replaces `error_rate`.
    #[serde(default = "defaults::learning_period", with = "duration")]
    pub learning_period: Duration,
}

/// Where traffic is recorded and how it is analysed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Off: nothing is recorded and nothing adapts (static limits, round-robin).
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// `sqlite` keeps completed buckets in `path` so baselines survive restarts; `memory` does not.
    #[serde(default)]
    pub store: StoreKind,
    #[serde(default = "defaults::store_path")]
    pub path: PathBuf,
    /// Width of one time bucket.
    #[serde(default = "defaults::bucket_interval", with = "duration")]
    pub bucket_interval: Duration,
    /// How long buckets are kept.
    #[serde(default = "defaults::retention", with = "duration")]
    pub retention: Duration,
    /// Buckets older than this are merged into `rollup_interval` buckets.
    #[serde(default = "defaults::rollup_after", with = "duration")]
    pub rollup_after: Duration,
    #[serde(default = "defaults::rollup_interval", with = "duration")]
    pub rollup_interval: Duration,
    /// How often baselines are recomputed and policies run.
    #[serde(default = "defaults::analyzer_interval", with = "duration")]
    pub analyzer_interval: Duration,
    /// How much history a baseline covers.
    #[serde(default = "defaults::analysis_window", with = "duration")]
    pub window: Duration,
    /// Events waiting for the store; when full, new events are dropped and counted.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: usize,
    /// How often the recorder moves the queued events into the store.
    #[serde(default = "defaults::drain_interval", with = "duration")]
    pub drain_interval: Duration,
    /// Most distinct unconfigured routes tracked; the rest share the `{other}` route.
    #[serde(default = "defaults::max_routes")]
    pub max_routes: usize,
    /// Nice value (0–19) of learning's threads (analyzer, maintenance, SQLite writer,
    /// plugin loads): lower priority than the proxy's, so they cede a busy core at once.
    /// 0 runs them at the proxy's priority.
    #[serde(default = "defaults::background_nice")]
    pub background_nice: u8,
    /// How long learning's jobs (analyzer ticks, maintenance passes, SQLite writes) work
    /// between two yields of the core.
    #[serde(default = "defaults::background_slice", with = "duration")]
    pub background_slice: Duration,
    #[serde(default)]
    pub anomaly: AnomalyConfig,
}

/// Which traffic store backs analytics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Memory,
}

/// The z-score anomaly detector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// A metric is anomalous when `(current − mean) / stddev` exceeds this.
    #[serde(default = "defaults::z_threshold")]
    pub z_threshold: f64,
    /// Buckets of history needed before anything is called anomalous.
    #[serde(default = "defaults::min_samples")]
    pub min_samples: u32,
    /// Requests a bucket needs before its p99 latency is judged: with fewer than 100 a p99
    /// is the bucket's slowest request, and one slow request is not an anomaly.
    #[serde(default = "defaults::p99_min_requests")]
    pub p99_min_requests: u64,
    /// How long ended anomalies stay listed in `/analytics/anomalies`.
    #[serde(default = "defaults::anomaly_history", with = "duration")]
    pub history: Duration,
    /// While an anomaly lasts, its buckets stay out of the baseline, so a spike does not
    /// teach the gateway that spikes are normal; a change that lasts longer than this
    /// becomes the new normal.
    #[serde(default = "defaults::learn_after", with = "duration")]
    pub learn_after: Duration,
    /// An anomaly ends once its metric has looked normal this long; coming back sooner, it
    /// is the same anomaly.
    #[serde(default = "defaults::quiet_period", with = "duration")]
    pub quiet_period: Duration,
}

/// Per-route limits learned from traffic: `baseline mean rate × multiplier`, clamped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveRateLimitConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default = "defaults::multiplier")]
    pub multiplier: f64,
    /// Requests per minute.
    #[serde(default = "defaults::min_limit")]
    pub min_limit: f64,
    /// Requests per minute.
    #[serde(default = "defaults::max_limit")]
    pub max_limit: f64,
    /// History needed before the learned limit replaces the route's static one.
    #[serde(default = "defaults::learning_period", with = "duration")]
    pub learning_period: Duration,
    /// Burst allowed above the limit, as time at the limit's rate.
    #[serde(default = "defaults::burst_window", with = "duration")]
    pub burst_window: Duration,
}

/// Backend weights learned from latency and errors: `(1 / mean latency) × (1 − error rate)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedLbConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default = "defaults::analyzer_interval", with = "duration")]
    pub rebalance_interval: Duration,
    /// Smallest share of traffic a backend keeps, so its recovery is noticed.
    #[serde(default = "defaults::min_share")]
    pub min_share: f64,
    /// History a backend needs before its weight counts; until then all weigh the same.
    #[serde(default = "defaults::lb_learning_period", with = "duration")]
    pub learning_period: Duration,
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
            request_id: true,
            forwarded_headers: true,
            shutdown_timeout: defaults::shutdown_timeout(),
            keepalive_timeout: defaults::keepalive_timeout(),
            worker_threads: None,
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
            adaptive: AdaptiveBreakerConfig::default(),
        }
    }
}

impl Default for AdaptiveBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            error_multiplier: defaults::error_multiplier(),
            min_threshold: defaults::min_threshold(),
            learning_period: defaults::learning_period(),
        }
    }
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            store: StoreKind::default(),
            path: defaults::store_path(),
            bucket_interval: defaults::bucket_interval(),
            retention: defaults::retention(),
            rollup_after: defaults::rollup_after(),
            rollup_interval: defaults::rollup_interval(),
            analyzer_interval: defaults::analyzer_interval(),
            window: defaults::analysis_window(),
            queue_size: defaults::queue_size(),
            drain_interval: defaults::drain_interval(),
            max_routes: defaults::max_routes(),
            background_nice: defaults::background_nice(),
            background_slice: defaults::background_slice(),
            anomaly: AnomalyConfig::default(),
        }
    }
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            z_threshold: defaults::z_threshold(),
            min_samples: defaults::min_samples(),
            p99_min_requests: defaults::p99_min_requests(),
            history: defaults::anomaly_history(),
            learn_after: defaults::learn_after(),
            quiet_period: defaults::quiet_period(),
        }
    }
}

impl Default for AdaptiveRateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            multiplier: defaults::multiplier(),
            min_limit: defaults::min_limit(),
            max_limit: defaults::max_limit(),
            learning_period: defaults::learning_period(),
            burst_window: defaults::burst_window(),
        }
    }
}

impl Default for WeightedLbConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rebalance_interval: defaults::analyzer_interval(),
            min_share: defaults::min_share(),
            learning_period: defaults::lb_learning_period(),
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
    pub fn keepalive_timeout() -> Duration {
        Duration::from_secs(75)
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
    pub fn error_multiplier() -> f64 {
        5.0
    }
    pub fn min_threshold() -> f64 {
        0.05
    }
    pub fn learning_period() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn store_path() -> std::path::PathBuf {
        "microgate.db".into()
    }
    pub fn bucket_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn retention() -> Duration {
        Duration::from_secs(48 * 3600)
    }
    pub fn rollup_after() -> Duration {
        Duration::from_secs(2 * 3600)
    }
    pub fn rollup_interval() -> Duration {
        Duration::from_secs(600)
    }
    pub fn analyzer_interval() -> Duration {
        Duration::from_secs(300)
    }
    pub fn analysis_window() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn queue_size() -> usize {
        65536
    }
    pub fn drain_interval() -> Duration {
        Duration::from_millis(10)
    }
    pub fn max_routes() -> usize {
        1000
    }
    pub fn background_nice() -> u8 {
        crate::pace::DEFAULT_BACKGROUND_NICE
    }
    pub fn background_slice() -> Duration {
        crate::pace::DEFAULT_SLICE
    }
    pub fn z_threshold() -> f64 {
        3.0
    }
    pub fn min_samples() -> u32 {
        10
    }
    pub fn p99_min_requests() -> u64 {
        100
    }
    pub fn anomaly_history() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn plugins_dir() -> std::path::PathBuf {
        "plugins/dist".into()
    }
    pub fn plugin_deadline() -> Duration {
        Duration::from_millis(50)
    }
    pub fn plugin_memory() -> u64 {
        16 << 20
    }
    pub fn quarantine_after() -> u32 {
        3
    }
    pub fn quiet_period() -> Duration {
        Duration::from_secs(120)
    }
    pub fn learn_after() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn multiplier() -> f64 {
        3.0
    }
    pub fn min_limit() -> f64 {
        10.0
    }
    pub fn max_limit() -> f64 {
        10000.0
    }
    pub fn burst_window() -> Duration {
        Duration::from_secs(5)
    }
    pub fn min_share() -> f64 {
        0.05
    }
    pub fn lb_learning_period() -> Duration {
        Duration::from_secs(300)
    }
}
