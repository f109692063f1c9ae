//! Policies as wasm components, on the library: the default plugins decide exactly as the
//! built-in policies (parity), broken files are refused at load and the previous version
//! stays, and a plugin that fails during a tick falls back to the built-in policy for that
//! decision, is counted, and is quarantined after repeated failures.

use std::path::Path;
use std::sync::Arc;

use microgate::analytics::analyzer::Analyzer;
use microgate::analytics::bucket::Sample;
use microgate::analytics::store::{MemoryStore, Record, StoreSettings, TrafficStore};
use microgate::config::{AnomalyConfig, Config};
use microgate::gateway::Gateway;
use microgate::metrics::Metrics;
use microgate::plugin::runtime::TickContext;
use microgate::plugin::{Plugins, Reload, convert, wit};
use microgate::policy::builtin;
use microgate::policy::types::{BackendStats, Baseline, LimitDecision, Stat, Window};
use microgate::traffic::Discard;
use microgate::upstream::breaker::BreakerState;

use crate::support::plugins::{install, wasm};

const SEC: i64 = 1000;
const T0: i64 = 1_800_000_000_000;
const B1: &str = "http://127.0.0.1:1";

struct Rig {
    config: Arc<Config>,
    gw: Arc<Gateway>,
    store: Arc<MemoryStore>,
    plugins: Arc<Plugins>,
    analyzer: Analyzer,
    dir: tempfile::TempDir,
}

/// A gateway with routes `/a` (static limit 100/min) and `/b`, compressed-time analytics,
/// and `plugins` (YAML lines under `plugins:`) loading from a temp folder holding `files`
/// (name in the folder, built library).
fn rig(plugins: &str, files: &[(&str, &str)]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    for (name, lib) in files {
        install(&std::fs::read(wasm(lib)).unwrap(), dir.path(), name);
    }
    let yaml = format!(
        r#"
upstreams:
  u: {{ backends: ["{B1}", "http://127.0.0.1:2"] }}
routes:
  - {{ path: /a, upstream: u, rate_limit: {{ requests_per_minute: 100 }} }}
  - {{ path: /b, upstream: u }}
analytics:
  store: memory
  bucket_interval: 1s
  window: 20s
  rollup_after: 1m
  rollup_interval: 10s
  anomaly: {{ min_samples: 5 }}
adaptive_rate_limit: {{ learning_period: 10s, multiplier: 3, min_limit: 10, max_limit: 100000 }}
weighted_lb: {{ learning_period: 5s }}
plugins:
  dir: {}
{plugins}
"#,
        dir.path().display()
    );
    let config = Arc::new(Config::parse(&yaml, "test").unwrap());
    let gw = Arc::new(Gateway::new(&config, Metrics::new(), Arc::new(Discard)).unwrap());
    let store = Arc::new(MemoryStore::new(
        StoreSettings::from_config(&config.analytics),
        None,
    ));
    let plugins = Arc::new(Plugins::new(&config, gw.metrics.clone()).unwrap().unwrap());
    plugins.rescan();
    let analyzer = Analyzer::new(
        gw.clone(),
        store.clone(),
        config.clone(),
        Some(plugins.clone()),
    );
    Rig {
        config,
        gw,
        store,
        plugins,
        analyzer,
        dir,
    }
}

impl Rig {
    /// 15 s of steady traffic on both routes, enough to learn limits.
    fn learn(&self) {
        for s in 0..15 {
            for route in ["/a", "/b"] {
                let records: Vec<Record> = (0..10)
                    .map(|i| Record {
                        route: route.into(),
                        backend: Some(B1.into()),
                        pair: true,
                        at: T0 + s * SEC + i * 90,
                        sample: Sample {
                            error: false,
                            latency_us: 2000,
                            bytes_in: 0,
                            bytes_out: 10,
                        },
                    })
                    .collect();
                self.store.record(&records);
            }
        }
    }

    fn tick(&self, at: i64) {
        self.analyzer.tick(T0 + at * SEC);
    }

    fn errors(&self, plugin: &str, reason: &str) -> u64 {
        self.gw
            .metrics
            .plugin_errors
            .with_label_values(&[plugin, reason])
            .get()
    }

    fn reloads(&self, plugin: &str, result: &str) -> u64 {
        self.gw
            .metrics
            .plugin_reloads
            .with_label_values(&[plugin, result])
            .get()
    }

    fn state(&self, plugin: &str) -> (String, Option<String>, Option<String>) {
        let v = self
            .plugins
            .views()
            .into_iter()
            .find(|v| v.name == plugin)
            .unwrap();
        (v.state.to_owned(), v.sha256, v.last_load_error)
    }

    fn builtin_limit(&self, route: &str) -> Option<f64> {
        let analysis = self.analyzer.latest();
        match builtin::rate_limit(
            &analysis.route(route).unwrap().baseline,
            &self.config.adaptive_rate_limit,
        ) {
            LimitDecision::Limit(v) => Some(v),
            _ => None,
        }
    }

    fn ctx(&self) -> TickContext {
        TickContext {
            now_ms: T0,
            analysis: self.analyzer.latest(),
            store: None,
            interval_ms: 1000,
        }
    }
}

// === Parity ===

fn random_stat(scale: f64) -> Stat {
    let mean = fastrand::f64() * scale;
    Stat {
        mean,
        stddev: if fastrand::u8(0..5) == 0 {
            0.0
        } else {
            fastrand::f64() * scale / 4.0
        },
    }
}

fn random_baseline() -> Baseline {
    Baseline {
        samples: fastrand::u32(0..80),
        history_seconds: fastrand::f64() * 7200.0,
        request_rate: random_stat(5000.0),
        error_rate: random_stat(0.2),
        latency_mean_ms: random_stat(200.0),
        latency_p99_ms: random_stat(1000.0),
        requests: fastrand::u64(0..100_000),
        errors: fastrand::u64(0..1000),
        overall_error_rate: fastrand::f64() * 0.3,
        overall_latency_mean_ms: fastrand::f64() * 300.0 + 0.01,
        overall_latency_p50_ms: fastrand::f64() * 300.0,
        overall_latency_p99_ms: fastrand::f64() * 3000.0,
    }
}

fn random_window() -> Window {
    let busy = fastrand::bool();
    Window {
        start_ms: T0,
        interval_ms: 60_000,
        // Thin buckets half the time: below and above the anomaly policy's p99_min_requests.
        requests: if fastrand::bool() {
            fastrand::u64(0..200)
        } else {
            fastrand::u64(0..10_000)
        },
        errors: fastrand::u64(0..100),
        request_rate: fastrand::f64() * 20_000.0,
        error_rate: busy.then(fastrand::f64),
        latency_mean_ms: busy.then(|| fastrand::f64() * 500.0),
        latency_p99_ms: busy.then(|| fastrand::f64() * 5000.0),
    }
}

fn report(name: &str) -> microgate::analytics::analyzer::SeriesReport {
    let baseline = random_baseline();
    microgate::analytics::analyzer::SeriesReport {
        name: name.into(),
        first_seen_ms: Some(T0),
        observed: baseline.clone(),
        baseline,
        current: random_window(),
        reached: Default::default(),
    }
}

#[test]
fn the_default_rate_limit_plugin_decides_as_the_builtin() {
    fastrand::seed(1);
    let r = rig(
        "  rate_limit: adaptive_rate_limit.wasm",
        &[("adaptive_rate_limit.wasm", "adaptive_rate_limit")],
    );
    let mut session = r.plugins.session(r.ctx());
    for _ in 0..500 {
        let rep = report("/a");
        let plugin = session.decide(
            "adaptive_rate_limit.wasm",
            &convert::series(wit::SeriesKind::Route, &rep),
            Some(100.0),
        );
        assert_eq!(
            plugin,
            Some(builtin::rate_limit(
                &rep.baseline,
                &r.config.adaptive_rate_limit
            )),
            "{:?}",
            rep.baseline
        );
    }
}

#[test]
fn the_default_anomaly_plugin_finds_what_the_builtin_finds() {
    fastrand::seed(2);
    let r = rig(
        "  anomaly: zscore_anomaly.wasm",
        &[("zscore_anomaly.wasm", "zscore_anomaly")],
    );
    let cfg = &r.config.analytics.anomaly;
    let mut session = r.plugins.session(r.ctx());
    let every_p99 = AnomalyConfig {
        p99_min_requests: 0,
        ..cfg.clone()
    };
    let (mut found, mut thin_p99s) = (0, 0);
    for _ in 0..500 {
        let rep = report("/a");
        let plugin = session
            .detect(
                "zscore_anomaly.wasm",
                &convert::series(wit::SeriesKind::Route, &rep),
            )
            .unwrap();
        let native = builtin::anomalies(&rep.current, &rep.baseline, cfg);
        assert_eq!(plugin, native);
        found += native.len();
        thin_p99s +=
            builtin::anomalies(&rep.current, &rep.baseline, &every_p99).len() - native.len();
    }
    assert!(found > 50, "the sample exercises detection: {found}");
    assert!(thin_p99s > 5, "and the thin buckets' p99 rule: {thin_p99s}");
}

#[test]
fn the_default_weighting_plugin_weighs_as_the_builtin() {
    fastrand::seed(3);
    let r = rig(
        "  weighting: latency_weighting.wasm",
        &[("latency_weighting.wasm", "latency_weighting")],
    );
    let mut session = r.plugins.session(r.ctx());
    for _ in 0..300 {
        let n = fastrand::usize(1..6);
        let stats: Vec<BackendStats> = (0..n)
            .map(|i| BackendStats {
                backend: format!("http://b{i}"),
                baseline: random_baseline(),
                breaker_open: fastrand::u8(0..4) == 0,
            })
            .collect();
        let learning: Vec<bool> = (0..n).map(|_| fastrand::u8(0..4) == 0).collect();
        let native = builtin::weights(&stats, &learning, r.config.weighted_lb.min_share);
        if native.iter().all(|w| *w == 0.0) {
            continue; // every breaker open: the gateway does not ask
        }
        let wit_stats: Vec<wit::BackendStats> = stats
            .iter()
            .zip(&learning)
            .map(|(s, l)| {
                let state = if s.breaker_open {
                    BreakerState::Open
                } else {
                    BreakerState::Closed
                };
                convert::backend(s, &random_window(), *l, state)
            })
            .collect();
        let plugin = session
            .weigh("latency_weighting.wasm", "u", &wit_stats)
            .unwrap();
        assert_eq!(plugin.len(), native.len());
        for (p, w) in plugin.iter().zip(&native) {
            assert!((p - w).abs() < 1e-9, "{plugin:?} vs {native:?}");
        }
    }
}

// === Bad files at load time ===

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    install(bytes, dir, name);
}

#[test]
fn a_bad_file_leaves_the_previous_version_running() {
    let r = rig(
        "  rate_limit: limit.wasm\n  params:\n    limit.wasm: { mode: fixed, limit: 42 }",
        &[("limit.wasm", "misbehave")],
    );
    let (state, good_sha, _) = r.state("limit.wasm");
    assert_eq!(state, "active");
    let good = std::fs::read(wasm("misbehave")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage bytes",
            b"this is not a wasm component at all".to_vec(),
            "compile_error",
        ),
        (
            "a truncated file",
            good[..good.len() / 2].to_vec(),
            "compile_error",
        ),
        (
            "the wrong world",
            std::fs::read(wasm("zscore_anomaly")).unwrap(),
            "wrong_world",
        ),
        (
            "a core module, not a component",
            b"\0asm\x01\0\0\0".to_vec(),
            "compile_error",
        ),
    ];
    for (what, bytes, stage) in cases {
        write(r.dir.path(), "limit.wasm", &bytes);
        assert_eq!(
            r.plugins.reload("limit.wasm"),
            Reload::Failed(stage),
            "{what}"
        );
        let (state, sha, load_error) = r.state("limit.wasm");
        assert_eq!(
            state, "active",
            "{what}: the previous version keeps running"
        );
        assert_eq!(sha, good_sha, "{what}");
        assert!(load_error.unwrap().starts_with(stage), "{what}");
        assert!(r.reloads("limit.wasm", stage) > 0, "{what}: counted");
    }
    // And it still decides: 42 per minute for both routes.
    r.learn();
    r.tick(15);
    assert_eq!(r.gw.routes[1].adaptive.get(), Some(42.0));
}

#[test]
fn a_plugin_that_fails_its_smoke_test_or_rejects_its_params_is_refused() {
    for (mode, stage) in [
        ("trap", "smoke_failed"),
        ("spin", "smoke_failed"),
        ("bomb", "smoke_failed"),
        ("nan", "smoke_failed"),
        ("negative", "smoke_failed"),
        ("reject", "configure_error"),
    ] {
        let r = rig(
            &format!("  rate_limit: bad.wasm\n  params:\n    bad.wasm: {{ mode: {mode} }}"),
            &[("bad.wasm", "misbehave")],
        );
        let (state, _, load_error) = r.state("bad.wasm");
        assert_eq!(state, "missing", "{mode}: never became active");
        assert!(
            load_error.as_deref().unwrap_or("").starts_with(stage),
            "{mode}: {load_error:?}"
        );
        assert_eq!(r.reloads("bad.wasm", stage), 1, "{mode}");
        // The built-in policy decides.
        r.learn();
        r.tick(15);
        assert_eq!(
            r.gw.routes[0].adaptive.get(),
            r.builtin_limit("/a"),
            "{mode}"
        );
    }
}

#[test]
fn removing_the_file_brings_the_builtin_back() {
    let r = rig(
        "  rate_limit: limit.wasm\n  params:\n    limit.wasm: { limit: 42 }",
        &[("limit.wasm", "misbehave")],
    );
    r.learn();
    r.tick(15);
    assert_eq!(r.gw.routes[0].adaptive.get(), Some(42.0));
    std::fs::remove_file(r.dir.path().join("limit.wasm")).unwrap();
    assert_eq!(r.plugins.reload("limit.wasm"), Reload::Removed);
    r.tick(15);
    assert_eq!(r.gw.routes[0].adaptive.get(), r.builtin_limit("/a"));
    assert_eq!(r.reloads("limit.wasm", "removed"), 1);
}

/// The periodic rescan reads a file again only when its size or modification time moved.
#[test]
fn a_rescan_reads_only_files_that_changed() {
    let r = rig(
        "  rate_limit: limit.wasm\n  params:\n    limit.wasm: { mode: fixed, limit: 42 }",
        &[("limit.wasm", "misbehave")],
    );
    let path = r.dir.path().join("limit.wasm");
    let (_, good_sha, _) = r.state("limit.wasm");
    let stamp = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Same size, same time, different bytes: the rescan does not look.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(stamp).unwrap();
    drop(file);
    r.plugins.rescan();
    assert_eq!(r.state("limit.wasm").1, good_sha);
    assert_eq!(r.reloads("limit.wasm", "compile_error"), 0);
    // A new modification time: it reads the changed file (and loads it, or refuses it
    // and keeps the old one, depending on which byte the flip hit).
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(stamp + std::time::Duration::from_secs(5))
        .unwrap();
    drop(file);
    r.plugins.rescan();
    let (state, sha, load_error) = r.state("limit.wasm");
    assert_eq!(state, "active");
    assert!(
        sha != good_sha || load_error.is_some(),
        "the changed file was read"
    );
}

// === Failures during a tick ===

#[test]
fn failures_during_a_tick_fall_back_to_the_builtin_and_are_counted() {
    for (mode, reason) in [
        ("trap", "trap"),
        ("spin", "timeout"),
        ("bomb", "memory"),
        ("nan", "invalid_output"),
        ("negative", "invalid_output"),
    ] {
        // Misbehaves only on /a, so it passes the smoke test (which asks about /sample).
        let r = rig(
            &format!(
                "  rate_limit: odd.wasm\n  quarantine_after: 3\n  params:\n    odd.wasm: {{ mode: {mode}, only_route: /a, limit: 42 }}"
            ),
            &[("odd.wasm", "misbehave")],
        );
        assert_eq!(r.state("odd.wasm").0, "active", "{mode}");
        r.learn();
        r.tick(15);
        assert_eq!(
            r.gw.routes[0].adaptive.get(),
            r.builtin_limit("/a"),
            "{mode}: /a falls back"
        );
        assert_eq!(
            r.gw.routes[1].adaptive.get(),
            Some(42.0),
            "{mode}: /b still gets the plugin's answer"
        );
        assert_eq!(r.errors("odd.wasm", reason), 1, "{mode}");
        // /b's successes reset the count in a row: alone, /a's failures never reach 3.
        r.tick(15);
        r.tick(15);
        assert_eq!(r.state("odd.wasm").0, "active", "{mode}");
    }
}

#[test]
fn repeated_failures_quarantine_the_plugin_until_its_file_changes() {
    // Traps on every route but the smoke test's, so it loads and then fails every call.
    let r = rig(
        "  rate_limit: odd.wasm\n  quarantine_after: 3\n  params:\n    odd.wasm: { mode: trap, spare_route: /sample }",
        &[("odd.wasm", "misbehave")],
    );
    r.learn();
    r.tick(15); // /a and /b trap: 2 in a row
    r.tick(15); // /a traps: 3 in a row → quarantined; /b is decided by the built-in
    assert_eq!(r.state("odd.wasm").0, "quarantined");
    assert_eq!(r.errors("odd.wasm", "trap"), 3);
    r.tick(15);
    assert_eq!(
        r.errors("odd.wasm", "trap"),
        3,
        "a quarantined plugin is not called"
    );
    assert_eq!(r.gw.routes[1].adaptive.get(), r.builtin_limit("/b"));

    // The same bytes again change nothing; a new file lifts the quarantine.
    install(
        &std::fs::read(wasm("misbehave")).unwrap(),
        r.dir.path(),
        "odd.wasm",
    );
    assert_eq!(r.plugins.reload("odd.wasm"), Reload::Unchanged);
    assert_eq!(r.state("odd.wasm").0, "quarantined");
    install(
        &std::fs::read(wasm("adaptive_rate_limit")).unwrap(),
        r.dir.path(),
        "odd.wasm",
    );
    assert_eq!(r.plugins.reload("odd.wasm"), Reload::Loaded);
    assert_eq!(r.state("odd.wasm").0, "active");
}

#[test]
fn a_weighting_plugin_with_the_wrong_number_of_weights_falls_back() {
    let r = rig(
        "  weighting: w.wasm\n  params:\n    w.wasm: { bad_upstream: u }",
        &[("w.wasm", "misweigh")],
    );
    assert_eq!(
        r.state("w.wasm").0,
        "active",
        "the smoke test's upstream is not `u`"
    );
    r.learn();
    r.tick(15);
    r.analyzer.rebalance();
    assert_eq!(r.errors("w.wasm", "invalid_output"), 1);
    let weights = r.gw.upstreams["u"]
        .balancer
        .weights()
        .expect("built-in weights");
    assert_eq!(weights.len(), 2);
    assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
}

// === Hot swap in a running gateway ===

/// The real binary under a bounded stream of requests: a custom rate-limit plugin (5 per
/// minute) dropped into the folder brings 429s; garbage written over it leaves it active;
/// deleting it brings the built-in back. No request fails with a 5xx along the way.
#[tokio::test]
async fn hot_swapping_a_plugin_under_traffic_drops_no_request() {
    use crate::support::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let backend = Backend::echo("a").await;
    let folder = tempfile::tempdir().unwrap();
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
log: {{ access_log: false }}
upstreams:
  u: {{ backends: [{}] }}
routes:
  - {{ path: /api, upstream: u }}
analytics: {{ store: memory, bucket_interval: 1s, window: 12s, rollup_after: 1m, rollup_interval: 10s, analyzer_interval: 1s }}
adaptive_rate_limit: {{ learning_period: 1h, burst_window: 1s }}
plugins:
  dir: {}
  rate_limit: custom.wasm
  params:
    custom.wasm: {{ mode: fixed, limit: 5 }}
"#,
        backend.url(),
        folder.path().display()
    )));
    let http = client();
    let url = gw.url("/api/x");
    let status = || async { http.get(&url).send().await.unwrap().status().as_u16() };
    let plugin = |gw: &GatewayProc| {
        let gw_admin = gw.admin_url("/analytics/plugins");
        async move {
            let v: serde_json::Value = reqwest::get(gw_admin).await.unwrap().json().await.unwrap();
            v[0].clone()
        }
    };

    // A bounded background stream of requests, recording every status.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let stream = {
        let (stop, seen, http, url) = (stop.clone(), seen.clone(), http.clone(), url.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                if let Ok(res) = http.get(&url).send().await {
                    seen.lock().unwrap().push(res.status().as_u16());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    // No plugin file yet: the built-in policy is still learning, nothing is limited.
    assert_eq!(plugin(&gw).await["state"], "missing");
    assert_eq!(status().await, 200);

    // Drop the custom plugin in: 429s start.
    crate::support::plugins::install(
        &std::fs::read(wasm("misbehave")).unwrap(),
        folder.path(),
        "custom.wasm",
    );
    eventually(
        Duration::from_secs(20),
        "the custom limit answers 429",
        || async { status().await == 429 },
    )
    .await;
    let active = plugin(&gw).await;
    assert_eq!(active["state"], "active");
    assert_eq!(active["kind"], "rate_limit");
    let sha = active["sha256"].as_str().unwrap().to_owned();

    // Garbage over it: rejected, the custom plugin stays active.
    crate::support::plugins::install(b"garbage, not a component", folder.path(), "custom.wasm");
    eventually(
        Duration::from_secs(20),
        "the garbage is rejected",
        || async {
            plugin(&gw).await["last_load_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("compile_error"))
        },
    )
    .await;
    let after = plugin(&gw).await;
    assert_eq!(after["state"], "active");
    assert_eq!(after["sha256"], sha.as_str());
    assert_eq!(status().await, 429, "still the custom limit");

    // Delete it: the built-in policy is back, nothing is limited.
    std::fs::remove_file(folder.path().join("custom.wasm")).unwrap();
    eventually(
        Duration::from_secs(20),
        "the built-in policy is back",
        || async { status().await == 200 },
    )
    .await;
    assert_eq!(plugin(&gw).await["state"], "missing");

    stop.store(true, Ordering::SeqCst);
    stream.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 50, "the stream ran: {} requests", seen.len());
    assert!(seen.contains(&429) && seen.contains(&200));
    let failed: Vec<u16> = seen.iter().copied().filter(|s| *s >= 500).collect();
    assert!(
        failed.is_empty(),
        "no request failed across the swaps: {failed:?}"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "gateway_plugin_reloads_total{plugin=\"custom.wasm\",result=\"compile_error\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "gateway_plugin_reloads_total{plugin=\"custom.wasm\",result=\"removed\"}"
        ),
        Some(1.0)
    );
}

/// The custom policy of `examples/custom-policy` works as a component: it loads, and its
/// limit shrinks as the route's p99 climbs above the target.
#[test]
fn the_example_policy_loads_and_decides() {
    let r = rig(
        "  rate_limit: latency_guard.wasm\n  params:\n    latency_guard.wasm: { target_p99_ms: 100 }",
        &[("latency_guard.wasm", "latency_guard")],
    );
    assert_eq!(r.state("latency_guard.wasm").0, "active");
    let mut session = r.plugins.session(r.ctx());
    let mut rep = report("/a");
    rep.baseline.samples = 60;
    rep.baseline.request_rate = Stat {
        mean: 100.0,
        stddev: 5.0,
    };
    let decide = |session: &mut microgate::plugin::Session<'_>,
                  p99: f64,
                  rep: &mut microgate::analytics::analyzer::SeriesReport| {
        rep.current.latency_p99_ms = Some(p99);
        session.decide(
            "latency_guard.wasm",
            &convert::series(wit::SeriesKind::Route, rep),
            None,
        )
    };
    assert_eq!(
        decide(&mut session, 50.0, &mut rep),
        Some(LimitDecision::Limit(300.0))
    );
    assert_eq!(
        decide(&mut session, 200.0, &mut rep),
        Some(LimitDecision::Limit(150.0))
    );
}
