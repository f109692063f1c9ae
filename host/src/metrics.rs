//! Every Prometheus metric the gateway exports, registered in one place.
//! Names follow `gateway_<area>_<thing>_<unit>`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Request duration by route, first byte in to last byte out.
    pub request_duration: HistogramVec,
    /// Requests sent to backends, by backend and status (or `error`/`timeout`).
    pub upstream_requests: IntCounterVec,
    /// Breaker state per backend: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Requests answered 429 by route.
    pub rate_limited: IntCounterVec,
}

impl Metrics {
    #[expect(
        clippy::expect_used,
        reason = "static metric definitions cannot fail at run time"
    )]
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests handled, by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from receiving a request to sending the last byte of its response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_requests_total",
                "Requests sent to backends, by backend and response status (`error` when no response came, `timeout` when it came too late).",
            ),
            &["backend", "status"],
        )
        .expect("valid metric");
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "gateway_circuit_state",
                "Circuit breaker state per backend: 0 closed, 1 open, 2 half-open.",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "gateway_rate_limited_total",
                "Requests refused with 429, by route.",
            ),
            &["route"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(circuit_state.clone()),
            Box::new(rate_limited.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            request_duration,
            upstream_requests,
            circuit_state,
            rate_limited,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
