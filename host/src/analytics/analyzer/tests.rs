//! The analyzer on a hand-driven clock: synthetic traffic goes into a memory store, `tick`
//! runs at chosen times, and the published decisions are read back from the gateway.

use super::*;
use crate::analytics::bucket::Sample;
use crate::analytics::store::{MemoryStore, Record, StoreSettings};
use crate::metrics::Metrics;
use crate::policy::types::Metric;
use crate::traffic::Discard;

const SEC: i64 = 1000;
/// A round start time far from the epoch.
const T0: i64 = 1_800_000_000_000;

fn setup(adaptive: bool) -> (Arc<Gateway>, Arc<MemoryStore>, Analyzer) {
    let yaml = format!(
        r#"
upstreams:
  u: {{ backends: ["http://127.0.0.1:1", "http://127.0.0.1:2"] }}
  v: {{ backends: ["http://127.0.0.1:3"] }}
routes:
  - {{ path: /a, upstream: u, rate_limit: {{ requests_per_minute: 100 }} }}
  - {{ path: /b, upstream: u }}
  - {{ path: /c, upstream: v }}
analytics:
  store: memory
  bucket_interval: 1s
  window: 20s
  rollup_after: 1m
  rollup_interval: 10s
  analyzer_interval: 1s
  anomaly: {{ z_threshold: 3.0, min_samples: 5, learn_after: 5s, quiet_period: 1s }}
adaptive_rate_limit: {{ enabled: {adaptive}, multiplier: 3.0, min_limit: 10, max_limit: 100000, learning_period: 10s }}
circuit_breaker:
  adaptive: {{ learning_period: 10s }}
weighted_lb: {{ enabled: {adaptive}, learning_period: 5s, min_share: 0.05 }}
"#
    );
    let config = Arc::new(Config::parse(&yaml, "test").unwrap());
    let gw = Arc::new(Gateway::new(&config, Metrics::new(), Arc::new(Discard)).unwrap());
    let store = Arc::new(MemoryStore::new(
        StoreSettings::from_config(&config.analytics),
        None,
    ));
    let analyzer = Analyzer::new(gw.clone(), store.clone(), config, None);
    (gw, store, analyzer)
}

/// `n` requests to `route` via `backend` during the second starting at `t`.
fn traffic(
    store: &MemoryStore,
    route: &str,
    backend: &str,
    t: i64,
    n: u64,
    errors: u64,
    latency_ms: u64,
) {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            route: route.into(),
            backend: Some(backend.into()),
            pair: true,
            at: t + (i as i64 * 1000 / n.max(1) as i64),
            sample: Sample {
                error: i < errors,
                latency_us: latency_ms * 1000,
                bytes_in: 0,
                bytes_out: 10,
            },
        })
        .collect();
    store.record(&records);
}

const B1: &str = "http://127.0.0.1:1";
const B2: &str = "http://127.0.0.1:2";
const B3: &str = "http://127.0.0.1:3";

#[test]
fn the_static_limit_applies_until_the_learning_period_has_passed() {
    let (gw, store, analyzer) = setup(true);
    let a = &gw.routes[0];
    for s in 0..8 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10, 0, 5);
    }
    analyzer.tick(T0 + 9 * SEC);
    assert_eq!(
        a.adaptive.get(),
        None,
        "8 s of history < 10 s learning period"
    );
    assert_eq!(a.current_limit(), Some(100.0), "static");
    assert_eq!(a.limit_gauge.get(), 100.0);

    for s in 8..15 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10, 0, 5);
    }
    let analysis = analyzer.tick(T0 + 15 * SEC);
    let report = analysis.route("/a").unwrap();
    // 10 requests per 1 s bucket = 600/min; × 3 = 1800/min.
    assert_eq!(report.baseline.request_rate.mean, 600.0);
    assert_eq!(a.adaptive.get(), Some(1800.0));
    assert_eq!(a.current_limit(), Some(1800.0));
    assert_eq!(a.limit_gauge.get(), 1800.0);
    // /b has no traffic: no learned limit, no static one.
    assert_eq!(gw.routes[1].current_limit(), None);
}

#[test]
fn a_spike_starts_one_anomaly_which_ends_when_traffic_settles() {
    let (_gw, store, analyzer) = setup(true);
    for s in 0..12 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10 + (s as u64 % 3), 0, 5);
    }
    analyzer.tick(T0 + 12 * SEC);
    assert!(analyzer.anomalies().list(&Default::default()).is_empty());
    for s in 12..15 {
        traffic(&store, "/a", B1, T0 + s * SEC, 110, 0, 5);
        analyzer.tick(T0 + (s + 1) * SEC);
    }
    let list = analyzer.anomalies().list(&Default::default());
    let rate: Vec<_> = list
        .iter()
        .filter(|a| a.metric == Metric::RequestRate && a.route.as_deref() == Some("/a"))
        .collect();
    assert_eq!(rate.len(), 1, "one event for a 3-tick spike: {list:?}");
    assert!(
        rate[0].ended_ms.is_none(),
        "the spike's buckets stay out of the baseline"
    );
    assert_eq!(
        rate[0].started_ms,
        T0 + 12 * SEC,
        "dated by the first anomalous bucket"
    );
    assert_eq!(rate[0].ticks, 3);
    assert!(rate[0].z_score > 3.0);
    assert_eq!(rate[0].current, 6600.0);
    // The backend saw the same spike.
    assert!(
        list.iter()
            .any(|a| a.backend.as_deref() == Some(B1) && a.metric == Metric::RequestRate)
    );

    for s in 15..17 {
        traffic(&store, "/a", B1, T0 + s * SEC, 11, 0, 5);
        analyzer.tick(T0 + (s + 1) * SEC);
    }
    let list = analyzer.anomalies().list(&Default::default());
    let ended = list
        .iter()
        .find(|a| a.route.as_deref() == Some("/a"))
        .unwrap();
    assert_eq!(ended.ended_ms, Some(T0 + 15 * SEC));
}

#[test]
fn a_lasting_change_becomes_the_new_normal() {
    let (_gw, store, analyzer) = setup(true);
    for s in 0..12 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10 + (s as u64 % 3), 0, 5);
    }
    analyzer.tick(T0 + 12 * SEC);
    // Ten times the traffic from now on. After `learn_after` (5 s) the new level enters
    // the baseline, and soon stops being anomalous.
    let mut ended = None;
    for s in 12..60 {
        traffic(&store, "/a", B1, T0 + s * SEC, 110 + (s as u64 % 3), 0, 5);
        analyzer.tick(T0 + (s + 1) * SEC);
        let list = analyzer.anomalies().list(&Default::default());
        if let Some(a) = list
            .iter()
            .find(|a| a.route.as_deref() == Some("/a") && a.ended_ms.is_some())
        {
            ended = a.ended_ms;
            break;
        }
    }
    assert!(
        ended.is_some(),
        "the anomaly ends once the new level is learned"
    );
}

#[test]
fn the_learned_limit_ignores_an_ongoing_spike() {
    let (gw, store, analyzer) = setup(true);
    for s in 0..12 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10 + (s as u64 % 3), 0, 5);
    }
    analyzer.tick(T0 + 12 * SEC);
    let before = gw.routes[0].adaptive.get().unwrap();
    for s in 12..16 {
        traffic(&store, "/a", B1, T0 + s * SEC, 110, 0, 5);
        analyzer.tick(T0 + (s + 1) * SEC);
    }
    let during = gw.routes[0].adaptive.get().unwrap();
    assert!(
        (during - before).abs() / before < 0.1,
        "limit {before} → {during}"
    );
}

#[test]
fn routes_with_different_error_baselines_get_different_breaker_thresholds() {
    let (gw, store, analyzer) = setup(true);
    for s in 0..12 {
        traffic(&store, "/a", B1, T0 + s * SEC, 20, 2, 5); // 10 % errors
        traffic(&store, "/b", B1, T0 + s * SEC, 20, 0, 5); // none
    }
    analyzer.tick(T0 + 12 * SEC);
    let b1 = &gw.backends[0];
    let (slot_a, slot_b) = (b1.slot_of(0).unwrap(), b1.slot_of(1).unwrap());
    assert!(
        (b1.breaker.route_threshold(slot_a).unwrap() - 0.5).abs() < 1e-9,
        "10 % × 5"
    );
    assert_eq!(
        b1.breaker.route_threshold(slot_b),
        Some(0.05),
        "the 5 % floor"
    );
    // The backend's own: 5 % errors overall × 5 = 25 %.
    assert!((b1.breaker.threshold() - 0.25).abs() < 1e-9);
    assert!(b1.breaker.threshold_learned());
    // B2 saw no traffic: nothing learned, the static error_rate stays.
    assert!(!gw.backends[1].breaker.threshold_learned());
    assert_eq!(gw.backends[1].breaker.threshold(), 0.5);
}

#[test]
fn a_route_with_one_backend_learns_its_threshold_from_what_reached_the_backend() {
    let (gw, store, analyzer) = setup(true);
    // Every second: 20 requests reach the route's only backend, 2 of them fail (10 %), and
    // 20 more are answered 503 without reaching it (its breaker open, say).
    let second = |t: i64, backend: Option<&str>, errors: u64| -> Vec<Record> {
        (0..20)
            .map(|i| Record {
                route: "/c".into(),
                backend: backend.map(Into::into),
                pair: false, // as the recorder files a route whose upstream has one backend
                at: t + i * 50,
                sample: Sample {
                    error: (i as u64) < errors,
                    latency_us: 5000,
                    bytes_in: 0,
                    bytes_out: 10,
                },
            })
            .collect()
    };
    for s in 0..12 {
        store.record(&second(T0 + s * SEC, Some(B3), 2));
        store.record(&second(T0 + s * SEC, None, 20));
    }
    analyzer.tick(T0 + 12 * SEC);
    assert!(store.series(SeriesKind::Pair).is_empty(), "no pair series");
    let b3 = &gw.backends[2];
    let slot = b3.slot_of(2).unwrap();
    let threshold = b3.breaker.route_threshold(slot).unwrap();
    // 10 % × 5; the 503s that never reached it (55 % of errors in all) are not its errors.
    assert!((threshold - 0.5).abs() < 1e-9, "{threshold}");
    let route = analyzer.latest();
    let route = route.route("/c").unwrap();
    assert!((route.baseline.overall_error_rate - 0.55).abs() < 1e-9);
}

#[test]
fn rebalancing_weights_backends_by_latency() {
    let (gw, store, analyzer) = setup(true);
    for s in 0..8 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10, 0, 10);
        traffic(&store, "/a", B2, T0 + s * SEC, 10, 0, 40);
    }
    analyzer.tick(T0 + 8 * SEC);
    analyzer.rebalance();
    let w = gw.upstreams["u"].balancer.weights().unwrap();
    // 1/0.010 : 1/0.040 = 100 : 25 → 0.8 / 0.2.
    assert!(
        (w[0] - 0.8).abs() < 1e-9 && (w[1] - 0.2).abs() < 1e-9,
        "{w:?}"
    );
    let gauge = gw
        .metrics
        .backend_weight
        .with_label_values(&["u", B2])
        .get();
    assert!((gauge - 0.2).abs() < 1e-9);
}

#[test]
fn before_the_learning_period_backends_weigh_the_same() {
    let (gw, store, analyzer) = setup(true);
    traffic(&store, "/a", B1, T0, 10, 0, 10);
    traffic(&store, "/a", B2, T0, 10, 0, 40);
    analyzer.tick(T0 + 2 * SEC);
    analyzer.rebalance();
    assert!(
        gw.upstreams["u"].balancer.weights().is_none(),
        "round-robin until something is learned"
    );
}

#[test]
fn disabled_adaptation_changes_nothing() {
    let (gw, store, analyzer) = setup(false);
    for s in 0..15 {
        traffic(&store, "/a", B1, T0 + s * SEC, 10, 0, 5);
    }
    analyzer.tick(T0 + 15 * SEC);
    analyzer.rebalance();
    assert_eq!(gw.routes[0].adaptive.get(), None);
    assert_eq!(
        gw.routes[0].current_limit(),
        Some(100.0),
        "the static limit stays"
    );
    assert!(
        gw.upstreams["u"].balancer.weights().is_none(),
        "round-robin stays"
    );
}

#[test]
fn every_series_is_found_by_name_whatever_order_it_was_configured_in() {
    let (_, store, analyzer) = setup(false);
    // Names the store learned beside the configured /a and /b, out of order.
    for route in ["/z", "/m", "/c", "/a", "/x/1", "/b"] {
        traffic(&store, route, B2, T0, 3, 0, 5);
    }
    // The bucket under test is the one that just ended: T0's.
    let analysis = analyzer.tick(T0 + SEC);
    let names: Vec<&str> = analysis.routes.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["/a", "/b", "/c", "/m", "/x/1", "/z"]);
    for name in names {
        assert_eq!(analysis.route(name).map(|r| &*r.name), Some(name));
    }
    assert!(analysis.route("/q").is_none());
    assert_eq!(analysis.backend(B2).map(|r| r.current.requests), Some(18));
    assert_eq!(analysis.backend(B1).map(|r| r.current.requests), Some(0));
}
