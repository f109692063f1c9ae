//! Benchmarks of the analytics hot spots: the record path (what every request pays), the
//! batch the event loop files right after a bucket boundary, one maintenance pass over
//! 2,001 series (on a blocking thread, once per bucket interval), one
//! analyzer tick over 10,000 routes (what the background pays per tick), and one tick as
//! the bench's routes scenario runs it (1,000 configured routes on one backend, 1 s ticks;
//! the built-in policies instead of the wasm ones).
//!
//! `cargo bench -p microgate --bench analytics`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use microgate::analytics::analyzer::Analyzer;
use microgate::analytics::bucket::{Bucket, Sample};
use microgate::analytics::recorder::recorder;
use microgate::analytics::store::{MemoryStore, Record, SeriesKey, StoreSettings, TrafficStore};
use microgate::config::Config;
use microgate::gateway::Gateway;
use microgate::metrics::Metrics;
use microgate::traffic::{Discard, TrafficEvent, TrafficSink};

fn event() -> TrafficEvent {
    TrafficEvent {
        route: "/api/users/{id}".into(),
        backend: Some("http://127.0.0.1:9001".into()),
        several_backends: true,
        method: http::Method::GET,
        status: 200,
        latency: Duration::from_micros(1234),
        bytes_in: 0,
        bytes_out: 512,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        at: SystemTime::now(),
        completed: true,
    }
}

fn record_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    // The queue is drained by another thread, as in the gateway.
    let (rec, queue) = recorder(1 << 16, prometheus::IntCounter::new("d", "d").unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                queue.take_all(&mut batch);
                batch.clear();
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    let ev = event();
    g.bench_function("event into the queue (drained)", |b| {
        b.iter(|| rec.record(black_box(ev.clone())))
    });
    drop(rec);
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();

    // A full queue: the event is dropped and counted, still without waiting.
    let (full, _rx) = recorder(1, prometheus::IntCounter::new("d", "d").unwrap());
    full.record(event());
    g.bench_function("event dropped (queue full)", |b| {
        b.iter(|| full.record(black_box(ev.clone())))
    });

    let store = MemoryStore::new(settings(), None);
    let now = microgate::analytics::recorder::now_ms();
    let batch: Vec<Record> = (0..1024)
        .map(|i| Record {
            route: format!("/r/{}", i % 100).into(),
            backend: Some("http://b:1".into()),
            pair: true,
            at: now,
            sample: Sample {
                error: i % 50 == 0,
                latency_us: 1000 + i,
                bytes_in: 0,
                bytes_out: 100,
            },
        })
        .collect();
    g.throughput(criterion::Throughput::Elements(1024));
    g.bench_function("store: batch of 1024 records", |b| {
        b.iter(|| store.record(black_box(&batch)))
    });

    // As the gateway's routes scenario files them: 1,000 routes on one backend (no pair
    // series), each record holding clones of the route table's names.
    let store = MemoryStore::new(settings(), None);
    let routes: Vec<Arc<str>> = (0..1000).map(|i| format!("/r/{i}").into()).collect();
    let backend: Arc<str> = "http://127.0.0.1:9001".into();
    let batch: Vec<Record> = (0..1024u64)
        .map(|i| Record {
            // A stride, so consecutive records land on different routes.
            route: routes[(i as usize * 617) % routes.len()].clone(),
            backend: Some(backend.clone()),
            pair: false,
            at: now,
            sample: Sample {
                error: false,
                latency_us: 900 + (i * 37) % 1500,
                bytes_in: 0,
                bytes_out: 100,
            },
        })
        .collect();
    g.bench_function("store: batch of 1024 records, 1,000 routes", |b| {
        b.iter(|| store.record(black_box(&batch)))
    });
    // The same after the caches have been churned, as 10 ms of proxying between two drain
    // ticks churns them: in the gateway filing costs ~8 times what it costs warm.
    const CHURN_BYTES: usize = 4 << 20;
    let mut churn = vec![0u64; CHURN_BYTES / size_of::<u64>()];
    g.bench_function(
        "store: batch of 1024 records, 1,000 routes, cold caches",
        |b| {
            b.iter_batched(
                || {
                    // One write per 64-byte line.
                    for (i, x) in churn.iter_mut().enumerate().step_by(8) {
                        *x = x.wrapping_add(i as u64);
                    }
                    black_box(&churn);
                },
                |()| store.record(black_box(&batch)),
                criterion::BatchSize::PerIteration,
            )
        },
    );
    g.finish();
}

/// One maintenance pass (on a blocking thread, once per bucket interval): 1,000 routes
/// on one backend (2,001 series) on 1 s buckets with 60 s of history, as in the benchmark's
/// routes scenario before roll-ups begin. Each pass closes every series' bucket and expires
/// its oldest, so the history stays 60 buckets long.
fn maintain_pass(c: &mut Criterion) {
    const ROUTES: usize = 1_000;
    let store = MemoryStore::new(
        StoreSettings {
            interval_ms: 1_000,
            retention_ms: 60_000,
            rollup_after_ms: 120_000,
            rollup_interval_ms: 10_000,
        },
        None,
    );
    let batch = |second: i64| -> Vec<Record> {
        (0..ROUTES)
            .map(|r| Record {
                route: format!("/api/route/{r}").into(),
                backend: Some("http://10.0.0.1:80".into()),
                pair: true,
                at: second * 1000,
                sample: Sample {
                    error: false,
                    latency_us: 800 + (r as u64 * 37) % 4000,
                    bytes_in: 0,
                    bytes_out: 200,
                },
            })
            .collect()
    };
    let start = 1_800_000_000;
    for second in start..start + 60 {
        store.record(&batch(second));
        store.maintain((second + 1) * 1000);
    }
    let mut second = start + 60;
    let mut g = c.benchmark_group("store");
    g.bench_function("maintain: 2,001 series x 60 buckets", |b| {
        b.iter_batched(
            || {
                store.record(&batch(second));
                second += 1;
                second * 1000
            },
            |now| store.maintain(now),
            criterion::BatchSize::PerIteration,
        )
    });

    // What the event loop pays right after a boundary: the drain files the first request
    // of the new interval for every series (the last interval's pass has run), which
    // closes each series' bucket there and then (docs/benchmarks.md: moving the closing
    // to the maintenance pass was tried and dropped).
    g.bench_function("record: first requests of an interval, 2,001 series", |b| {
        b.iter_batched(
            || {
                store.maintain(second * 1000 + 500);
                second += 1;
                batch(second)
            },
            |records| store.record(&records),
            criterion::BatchSize::PerIteration,
        )
    });

    // The pass that rolls up (every `rollup_interval`), an hour into the benchmark's routes
    // scenario: 1 s buckets rolled into 10 s ones after a minute, 48 h retention, so each
    // series holds ~360 rolled-up buckets and 60 fine ones. It merges ten buckets a series.
    let settings = StoreSettings {
        interval_ms: 1_000,
        retention_ms: 48 * 3_600_000,
        rollup_after_ms: 60_000,
        rollup_interval_ms: 10_000,
    };
    let store = MemoryStore::new(settings, None);
    let hour = start + 3600;
    let mut history = Vec::new();
    for r in batch(0) {
        let keys = [
            SeriesKey::Route(r.route.clone()),
            SeriesKey::Pair(r.route.clone(), r.backend.clone().unwrap()),
        ];
        for key in keys {
            let coarse = (start..hour - 60).step_by(10).map(|s| (s, 10_000));
            let fine = (hour - 60..hour).map(|s| (s, 1_000));
            for (s, width) in coarse.chain(fine) {
                let bucket = Bucket {
                    start: s * 1000,
                    interval_ms: width,
                    requests: 1,
                    ..Default::default()
                };
                history.push((key.clone(), bucket));
            }
        }
    }
    store.load(history, hour * 1000);
    store.maintain(hour * 1000); // the first pass looks at everything
    let mut second = hour;
    g.bench_function("maintain, rolling up: 2,000 series x 420 buckets", |b| {
        b.iter_batched(
            || {
                for _ in 0..10 {
                    store.record(&batch(second));
                    second += 1;
                }
                second * 1000
            },
            |now| store.maintain(now),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn settings() -> StoreSettings {
    StoreSettings {
        interval_ms: 60_000,
        retention_ms: 48 * 3_600_000,
        rollup_after_ms: 2 * 3_600_000,
        rollup_interval_ms: 600_000,
    }
}

fn analyzer_tick(c: &mut Criterion) {
    const ROUTES: usize = 10_000;
    const BUCKETS: i64 = 61; // one hour of one-minute buckets, plus the one under test
    let config = Arc::new(Config::parse("analytics: { store: memory }\n", "bench").unwrap());
    let gw = Arc::new(Gateway::new(&config, Metrics::new(), Arc::new(Discard)).unwrap());
    let store = Arc::new(MemoryStore::new(settings(), None));
    let end: i64 = 1_800_000_000_000; // a whole minute
    let start = end - BUCKETS * 60_000;
    // One minute of traffic: 12 requests per route, with latencies spread over ~20
    // histogram bins (as real traffic spreads them: merging histograms is much of a tick's
    // work).
    let minute = |m: i64| -> Vec<Record> {
        (0..ROUTES)
            .flat_map(|r| {
                (0..12).map(move |i| Record {
                    route: format!("/api/route/{r}").into(),
                    backend: Some(format!("http://10.0.{}.{}:80", r % 50, r % 7).into()),
                    pair: true,
                    at: start + m * 60_000 + i * 1000,
                    sample: Sample {
                        error: (r + i as usize).is_multiple_of(40),
                        latency_us: 800
                            + (r as u64 % 900)
                            + (i as u64 * 997 + m as u64 * 131) % 6000,
                        bytes_in: 0,
                        bytes_out: 200,
                    },
                })
            })
            .collect()
    };
    for m in 0..BUCKETS {
        store.record(&minute(m));
    }
    store.maintain(end + 1);
    let analyzer = Analyzer::new(gw, store.clone() as Arc<dyn TrafficStore>, config, None);
    analyzer.tick(end + 1);
    // Steady state: each tick comes a minute after the last, with that minute's traffic
    // recorded (outside the measurement), so the window slides by one bucket a tick.
    let mut m = BUCKETS;
    let mut g = c.benchmark_group("analyzer");
    g.sample_size(10);
    g.bench_function("tick over 10,000 routes x 60 buckets", |b| {
        b.iter_batched(
            || {
                store.record(&minute(m));
                m += 1;
                let now = start + m * 60_000 + 1;
                store.maintain(now);
                now
            },
            |now| black_box(analyzer.tick(now)),
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn routes_scenario_tick(c: &mut Criterion) {
    const ROUTES: usize = 1_000;
    const BACKEND: &str = "http://127.0.0.1:9";
    let mut yaml = format!(
        "upstreams:\n  b: {{ backends: [{BACKEND}] }}\nanalytics:\n  store: memory\n  \
         bucket_interval: 1s\n  window: 30s\n  rollup_after: 1m\n  rollup_interval: 10s\n  \
         analyzer_interval: 1s\nadaptive_rate_limit: {{ learning_period: 10s }}\n\
         circuit_breaker: {{ adaptive: {{ learning_period: 10s }} }}\nroutes:\n"
    );
    for r in 0..ROUTES {
        yaml += &format!("  - {{ path: /api/route/{r}, upstream: b }}\n");
    }
    let config = Arc::new(Config::parse(&yaml, "bench").unwrap());
    let gw = Arc::new(Gateway::new(&config, Metrics::new(), Arc::new(Discard)).unwrap());
    let store = Arc::new(MemoryStore::new(
        StoreSettings::from_config(&config.analytics),
        None,
    ));
    let names: Vec<Arc<str>> = (0..ROUTES)
        .map(|r| format!("/api/route/{r}").into())
        .collect();
    let backend: Arc<str> = BACKEND.into();
    // One second of the scenario's traffic: ~25 requests a route, latencies spread, a few
    // errors, as the recorder files them (one backend: no pair series).
    let second = |s: i64| -> Vec<Record> {
        let mut out = Vec::with_capacity(ROUTES * 25);
        for (r, route) in names.iter().enumerate() {
            for i in 0..25u64 {
                out.push(Record {
                    route: route.clone(),
                    backend: Some(backend.clone()),
                    pair: false,
                    at: s * 1000 + i as i64 * 40,
                    sample: Sample {
                        error: (r as u64 + i + s as u64).is_multiple_of(97),
                        latency_us: 900 + (r as u64 * 37 + i * 997 + s as u64 * 131) % 3000,
                        bytes_in: 0,
                        bytes_out: 200,
                    },
                });
            }
        }
        out
    };
    let start: i64 = 1_800_000_000;
    for s in start..start + 31 {
        store.record(&second(s));
        store.maintain((s + 1) * 1000);
    }
    let analyzer = Analyzer::new(gw, store.clone() as Arc<dyn TrafficStore>, config, None);
    analyzer.tick((start + 31) * 1000 + 1);
    let mut s = start + 31;
    let mut g = c.benchmark_group("analyzer");
    g.sample_size(20);
    g.bench_function(
        "tick as in the routes scenario: 1,000 routes on one backend x 30 buckets",
        |b| {
            b.iter_batched(
                || {
                    store.record(&second(s));
                    s += 1;
                    store.maintain(s * 1000);
                    s * 1000 + 1
                },
                |now| black_box(analyzer.tick(now)),
                criterion::BatchSize::PerIteration,
            )
        },
    );
    g.finish();
}

criterion_group!(
    benches,
    record_path,
    maintain_pass,
    analyzer_tick,
    routes_scenario_tick
);
criterion_main!(benches);
