//! What policy plugins cost: loading a file (compile, link, smoke call), starting a fresh
//! instance for a tick, and one decision on a live instance, next to the native policy.
//!
//! `cargo bench -p microgate --bench plugins` (builds the default plugins first)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use microgate::analytics::analyzer::{Analysis, SeriesReport};
use microgate::config::Config;
use microgate::metrics::Metrics;
use microgate::plugin::runtime::TickContext;
use microgate::plugin::{Plugins, convert, wit};
use microgate::policy::builtin;
use microgate::policy::types::{Baseline, Stat, Window};

fn built_plugins() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target").join("test-plugins");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .args(["-p", "adaptive-rate-limit"])
        .status()
        .unwrap();
    assert!(status.success());
    target.join("wasm32-wasip2").join("plugin")
}

fn report() -> SeriesReport {
    let stat = |mean, stddev| Stat { mean, stddev };
    let baseline = Baseline {
        samples: 60,
        history_seconds: 7200.0,
        request_rate: stat(120.0, 15.0),
        error_rate: stat(0.01, 0.005),
        latency_mean_ms: stat(20.0, 4.0),
        latency_p99_ms: stat(80.0, 10.0),
        requests: 7200,
        errors: 72,
        overall_error_rate: 0.01,
        overall_latency_mean_ms: 20.0,
        overall_latency_p50_ms: 15.0,
        overall_latency_p99_ms: 80.0,
    };
    SeriesReport {
        name: "/api/users/{id}".into(),
        first_seen_ms: Some(0),
        observed: baseline.clone(),
        baseline,
        current: Window {
            request_rate: 130.0,
            ..Default::default()
        },
        reached: Default::default(),
    }
}

fn plugins(c: &mut Criterion) {
    let dir = built_plugins();
    let config = Config::parse(
        &format!(
            "analytics: {{ store: memory }}\nplugins: {{ dir: {}, rate_limit: adaptive_rate_limit.wasm }}\n",
            dir.display()
        ),
        "bench",
    )
    .unwrap();
    let plugins = Plugins::new(&config, Metrics::new()).unwrap().unwrap();
    let ctx = || TickContext {
        now_ms: 0,
        analysis: Arc::new(Analysis::default()),
        store: None,
        interval_ms: 60_000,
    };
    let r = report();
    let series = convert::series(wit::SeriesKind::Route, &r);
    let mut g = c.benchmark_group("plugin");
    g.sample_size(20);
    g.bench_function("load a changed file (compile, link, smoke call)", |b| {
        b.iter(|| {
            // Empty the slot first, so every iteration is a full load.
            plugins.forget("adaptive_rate_limit.wasm");
            black_box(plugins.reload("adaptive_rate_limit.wasm"))
        })
    });
    g.sample_size(100);
    g.bench_function(
        "fresh instance + configure + first decision (once per tick)",
        |b| {
            b.iter(|| {
                let mut s = plugins.session(ctx());
                black_box(s.decide("adaptive_rate_limit.wasm", &series, Some(600.0)))
            })
        },
    );
    let mut session = plugins.session(ctx());
    session.decide("adaptive_rate_limit.wasm", &series, Some(600.0));
    g.bench_function("one decision on a live instance (per route)", |b| {
        b.iter(|| {
            black_box(session.decide("adaptive_rate_limit.wasm", black_box(&series), Some(600.0)))
        })
    });
    g.bench_function("the built-in policy (native)", |b| {
        b.iter(|| {
            black_box(builtin::rate_limit(
                black_box(&r.baseline),
                &config.adaptive_rate_limit,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, plugins);
criterion_main!(benches);
