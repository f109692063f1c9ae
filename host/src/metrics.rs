//! Every Prometheus metric the gateway exports, registered in one place.
//! Names follow `gateway_<area>_<thing>_<unit>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets (seconds): 0.5 ms … 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The gateway's metrics and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Finished requests by route, method and status.
    pub requests: IntCounterVec,
    /// Request duration by route, first byte in to last byte out: each configured route's
    /// series is its [`LatencyCells`] (from [`Metrics::route_latency`]); this vector holds
    /// the other names (unmatched paths, normalised). Both render as one family.
    pub request_duration: HistogramVec,
    route_durations: RouteDurations,
    /// Requests sent to backends, by backend and status (or `error`/`timeout`).
    pub upstream_requests: IntCounterVec,
    /// Breaker state per backend: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Error-rate threshold per backend (`route="*"`) and per route using it.
    pub circuit_threshold: GaugeVec,
    /// Requests answered 429 by route.
    pub rate_limited: IntCounterVec,
    /// The limit in force per route, requests per minute (static while learning).
    pub rate_limit_current: GaugeVec,
    /// Traffic events dropped because the recorder's queue was full.
    pub events_dropped: IntCounter,
    /// Anomalies started, by route and metric.
    pub anomalies: IntCounterVec,
    /// Anomalies started, by backend and metric.
    pub backend_anomalies: IntCounterVec,
    /// Share of its upstream's traffic each backend gets.
    pub backend_weight: GaugeVec,
    /// Distinct unconfigured (normalised) routes tracked.
    pub routes_tracked: IntGauge,
    /// Requests whose route name fell past the cap into `{other}`.
    pub route_overflow: IntCounter,
    /// Time one analyzer tick takes.
    pub analyzer_tick: Histogram,
    pub store_maintain: Histogram,
    /// Plugin calls that failed and fell back to the built-in policy, by reason.
    pub plugin_errors: IntCounterVec,
    /// What happened when a plugin file was looked at, by result.
    pub plugin_reloads: IntCounterVec,
}

impl Metrics {
    #[expect(
        clippy::expect_used,
        reason = "static metric definitions cannot fail at run time"
    )]
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn Collector>| registry.register(c).expect("metric names are unique");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(m.clone()));
            m
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let m = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(m.clone()));
            m
        };
        let counter = |name: &str, help: &str| {
            let m = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(m.clone()));
            m
        };
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from receiving a request to sending the last byte of its response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let route_durations = RouteDurations {
            by_name: request_duration.clone(),
            routes: Arc::default(),
        };
        reg(Box::new(route_durations.clone()));
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "gateway_circuit_state",
                "Circuit breaker state per backend: 0 closed, 1 open, 2 half-open.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        reg(Box::new(circuit_state.clone()));
        let routes_tracked = IntGauge::new(
            "gateway_routes_tracked",
            "Distinct unconfigured (normalised) routes tracked, at most analytics.max_routes.",
        )
        .expect("valid metric");
        reg(Box::new(routes_tracked.clone()));
        let analyzer_tick = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_analyzer_tick_seconds",
                "Time one analyzer tick takes.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("valid metric");
        reg(Box::new(analyzer_tick.clone()));
        let store_maintain = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_store_maintain_seconds",
                "Time one store maintenance pass takes (closing, rolling up and expiring buckets).",
            )
            .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
        )
        .expect("valid metric");
        reg(Box::new(store_maintain.clone()));
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        Self {
            requests: counter_vec(
                "gateway_requests_total",
                "Requests handled, by route, method and status.",
                &["route", "method", "status"],
            ),
            request_duration,
            route_durations,
            upstream_requests: counter_vec(
                "gateway_upstream_requests_total",
                "Requests sent to backends, by backend and response status (`error` when no response came, `timeout` when it came too late).",
                &["backend", "status"],
            ),
            circuit_state,
            circuit_threshold: gauge_vec(
                "gateway_circuit_error_threshold",
                "Error-rate threshold that trips a backend's breaker: route=\"*\" for the backend, else for that route's traffic to it.",
                &["backend", "route"],
            ),
            rate_limited: counter_vec(
                "gateway_rate_limited_total",
                "Requests refused with 429, by route.",
                &["route"],
            ),
            rate_limit_current: gauge_vec(
                "gateway_rate_limit_current",
                "Rate limit in force per route, requests per minute: the learned limit, or the static one while learning.",
                &["route"],
            ),
            events_dropped: counter(
                "gateway_traffic_events_dropped_total",
                "Finished requests not recorded because the recorder's queue was full.",
            ),
            anomalies: counter_vec(
                "gateway_anomalies_total",
                "Anomalies started, by route and metric.",
                &["route", "metric"],
            ),
            backend_anomalies: counter_vec(
                "gateway_backend_anomalies_total",
                "Anomalies started, by backend and metric.",
                &["backend", "metric"],
            ),
            backend_weight: gauge_vec(
                "gateway_backend_weight",
                "Share of its upstream's traffic a backend is given (round-robin: equal shares).",
                &["upstream", "backend"],
            ),
            routes_tracked,
            route_overflow: counter(
                "gateway_route_overflow_total",
                "Requests counted under the {other} route because analytics.max_routes was reached.",
            ),
            analyzer_tick,
            store_maintain,
            plugin_errors: counter_vec(
                "gateway_plugin_errors_total",
                "Plugin calls that failed (trap, timeout, memory, invalid_output, configure, instantiate) and fell back to the built-in policy.",
                &["plugin", "reason"],
            ),
            plugin_reloads: counter_vec(
                "gateway_plugin_reloads_total",
                "Plugin files looked at, by result (loaded, removed, missing, compile_error, wrong_world, configure_error, smoke_failed, read_error).",
                &["plugin", "result"],
            ),
            registry,
        }
    }

    /// The `gateway_request_duration_seconds` series of a configured route (the same
    /// cells for the same name, as a labelled vector gives the same series).
    pub fn route_latency(&self, route: &str) -> Arc<LatencyCells> {
        let mut routes = self
            .route_durations
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner());
        routes.entry(route.into()).or_default().clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The label for a request method: the standard ones by name, anything else `OTHER`, so a
/// client cannot create metric series at will.
pub fn method_label(method: &http::Method) -> (u32, &'static str) {
    use http::Method;
    match *method {
        Method::GET => (0, "GET"),
        Method::POST => (1, "POST"),
        Method::PUT => (2, "PUT"),
        Method::DELETE => (3, "DELETE"),
        Method::PATCH => (4, "PATCH"),
        Method::HEAD => (5, "HEAD"),
        Method::OPTIONS => (6, "OPTIONS"),
        Method::CONNECT => (7, "CONNECT"),
        Method::TRACE => (8, "TRACE"),
        _ => (9, "OTHER"),
    }
}

/// One route's `gateway_request_duration_seconds` histogram, in atomics of its own.
///
/// A Prometheus `Histogram` reaches its bucket through three pointers (its core, the
/// bounds list, the shard's bucket list): with a thousand routes each is a cache miss on
/// every request. These cells are reached through one, their bucket found in the shared
/// bounds, and [`RouteDurations`] renders them at scrape time.
pub struct LatencyCells {
    /// Observations per bucket of [`LATENCY_BUCKETS`], not cumulative; the last counts
    /// those above every bound (`+Inf`).
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, microseconds.
    sum_us: AtomicU64,
}

impl Default for LatencyCells {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LatencyCells {
    pub fn observe(&self, latency: Duration) {
        // `le` buckets: the first bound at or above the value.
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|bound| *bound < secs);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The histogram as Prometheus renders it: cumulative buckets, count and sum.
    fn snapshot(&self) -> prometheus::proto::Histogram {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        let mut total = 0u64;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            total += count.load(Ordering::Relaxed);
            let mut b = prometheus::proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(total);
            buckets.push(b);
        }
        if let Some(above) = self.counts.last() {
            total += above.load(Ordering::Relaxed);
        }
        let mut h = prometheus::proto::Histogram::default();
        h.set_sample_count(total);
        h.set_sample_sum(self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        h.set_bucket(buckets);
        h
    }
}

/// The `gateway_request_duration_seconds` family: the configured routes' cells and the
/// labelled vector of the other names, rendered together.
#[derive(Clone)]
struct RouteDurations {
    by_name: HistogramVec,
    routes: Arc<RwLock<HashMap<Box<str>, Arc<LatencyCells>>>>,
}

impl Collector for RouteDurations {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.by_name.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.by_name.collect();
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let Some(family) = families.first_mut() else {
            return families;
        };
        // A name that is both a route and in the vector (not expected: the vector holds
        // names no route has) would render twice: the vector's series gives way.
        let mut metrics: Vec<_> = family
            .take_metric()
            .into_iter()
            .filter(|m| !m.get_label().iter().any(|l| routes.contains_key(l.value())))
            .collect();
        for (route, cells) in routes.iter() {
            let mut label = prometheus::proto::LabelPair::default();
            label.set_name("route".to_owned());
            label.set_value(route.to_string());
            let mut m = prometheus::proto::Metric::from_label(vec![label]);
            m.set_histogram(cells.snapshot());
            metrics.push(m);
        }
        family.set_metric(metrics);
        families
    }
}

/// Keys a [`CounterCache`] holds in itself: a route sees a few (method, status) pairs, a
/// backend a few statuses.
const INLINE_KEYS: usize = 4;

/// The series of a labelled counter for one route or backend, found by a small key (e.g.
/// method and status) without hashing label strings on every request.
///
/// The first keys seen sit in the cache itself, so a request reaches its counter through
/// one pointer (the counter's) rather than three (the list's, its entries', the
/// counter's): with a thousand routes each is a cache miss, and these were most of the
/// request path's cost of counting (docs/benchmarks.md). Keys past those go to a list
/// that is copied on write, which happens once per new key.
pub struct CounterCache {
    inline: [OnceLock<(u32, prometheus::IntCounter)>; INLINE_KEYS],
    more: arc_swap::ArcSwap<Vec<(u32, prometheus::IntCounter)>>,
}

impl Default for CounterCache {
    fn default() -> Self {
        Self {
            inline: Default::default(),
            more: arc_swap::ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl CounterCache {
    /// Counts one for `key`; `make` finds the series the first time.
    pub fn inc(&self, key: u32, make: impl FnOnce() -> prometheus::IntCounter) {
        for slot in &self.inline {
            match slot.get() {
                Some((k, counter)) if *k == key => return counter.inc(),
                Some(_) => {}
                None => break,
            }
        }
        if let Some((_, counter)) = self.more.load().iter().find(|(k, _)| *k == key) {
            return counter.inc();
        }
        // A new key: counted on the series `make` finds (every handle to a series counts
        // on the same value), then kept; if another thread kept the key first, this handle
        // is dropped.
        let counter = make();
        counter.inc();
        let mut entry = (key, counter);
        for slot in &self.inline {
            match slot.set(entry) {
                Ok(()) => return,
                Err(_) if slot.get().is_some_and(|(k, _)| *k == key) => return,
                Err(back) => entry = back,
            }
        }
        self.more.rcu(|old| {
            let mut new = Vec::clone(old);
            if !new.iter().any(|(k, _)| *k == entry.0) {
                new.push(entry.clone());
            }
            new
        });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET).1, "GET");
        let custom = http::Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&custom).1, "OTHER");
    }

    #[test]
    fn the_counter_cache_finds_each_series_once() {
        let m = Metrics::new();
        let cache = CounterCache::default();
        let mut made = 0;
        for _ in 0..3 {
            cache.inc(200, || {
                made += 1;
                m.requests.with_label_values(&["/a", "GET", "200"])
            });
        }
        cache.inc(404, || m.requests.with_label_values(&["/a", "GET", "404"]));
        assert_eq!(made, 1);
        assert_eq!(m.requests.with_label_values(&["/a", "GET", "200"]).get(), 3);
        assert_eq!(m.requests.with_label_values(&["/a", "GET", "404"]).get(), 1);
    }

    /// The value of one line of the text exposition.
    fn line(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn route_latencies_render_as_prometheus_histograms_beside_other_names() {
        let m = Metrics::new();
        let a = m.route_latency("/a");
        a.observe(Duration::from_micros(700));
        a.observe(Duration::from_millis(3));
        a.observe(Duration::from_secs(40));
        // The same name is the same series.
        m.route_latency("/a").observe(Duration::from_micros(1000));
        m.request_duration
            .with_label_values(&["/other"])
            .observe(0.002);
        let text = m.render();
        let a = |le: &str| {
            line(
                &text,
                &format!("gateway_request_duration_seconds_bucket{{route=\"/a\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(a("0.0005"), Some(0.0));
        assert_eq!(
            a("0.001"),
            Some(2.0),
            "a bound holds the values equal to it"
        );
        assert_eq!(a("0.005"), Some(3.0));
        assert_eq!(a("30"), Some(3.0));
        assert_eq!(a("+Inf"), Some(4.0));
        let count = "gateway_request_duration_seconds_count{route=\"/a\"}";
        assert_eq!(line(&text, count), Some(4.0));
        let sum = line(&text, "gateway_request_duration_seconds_sum{route=\"/a\"}");
        assert!(sum.is_some_and(|s| (s - 40.0047).abs() < 1e-9), "{sum:?}");
        let other = "gateway_request_duration_seconds_count{route=\"/other\"}";
        assert_eq!(line(&text, other), Some(1.0));
        assert_eq!(
            text.matches("# TYPE gateway_request_duration_seconds histogram")
                .count(),
            1,
            "one family"
        );
    }

    #[test]
    fn a_name_that_is_a_route_and_in_the_vector_renders_once() {
        let m = Metrics::new();
        m.route_latency("/a").observe(Duration::from_millis(1));
        m.request_duration.with_label_values(&["/a"]).observe(0.001);
        let text = m.render();
        let count = "gateway_request_duration_seconds_count{route=\"/a\"}";
        assert_eq!(text.matches(count).count(), 1, "{text}");
    }

    #[test]
    fn the_counter_cache_counts_keys_past_those_it_holds_in_itself() {
        let m = Metrics::new();
        let cache = CounterCache::default();
        let keys: Vec<u32> = (0..3 * INLINE_KEYS as u32).collect();
        let mut made = vec![0; keys.len()];
        for round in 1..=3 {
            for &k in &keys {
                cache.inc(k, || {
                    made[k as usize] += 1;
                    m.requests.with_label_values(&["/a", "GET", &k.to_string()])
                });
            }
            for &k in &keys {
                let c = m.requests.with_label_values(&["/a", "GET", &k.to_string()]);
                assert_eq!(c.get(), round, "key {k} after round {round}");
            }
        }
        assert!(
            made.iter().all(|&n| n == 1),
            "each series found once: {made:?}"
        );
    }

    #[test]
    fn the_counter_cache_loses_no_count_when_threads_add_keys_at_once() {
        let m = Metrics::new();
        let cache = CounterCache::default();
        let keys = 2 * INLINE_KEYS as u32;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..1000u32 {
                        let k = i % keys;
                        cache.inc(k, || {
                            m.requests.with_label_values(&["/t", "GET", &k.to_string()])
                        });
                    }
                });
            }
        });
        for k in 0..keys {
            let c = m.requests.with_label_values(&["/t", "GET", &k.to_string()]);
            assert_eq!(c.get(), 4 * 1000 / u64::from(keys), "key {k}");
        }
    }
}
