//! `cargo xtask demo`: three backends with different latency and error profiles, the
//! gateway with `examples/demo/demo.yml` (1 s buckets and ticks), and a traffic generator
//! that plays phases — learning, steady, a 10× spike on one route, one backend slowing down,
//! recovery — and says what the gateway does in each. It stops by itself.
//!
//! Options: `--linger SECONDS` keeps the gateway up afterwards to look at the dashboard.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use microgate::config::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const GATEWAY: &str = "http://127.0.0.1:18080";
const ADMIN: &str = "http://127.0.0.1:18090";

/// A demo backend: answers after `latency_ms` (± 20 %), failing one request in `fail_every`.
struct Profile {
    name: &'static str,
    port: u16,
    latency_ms: AtomicU64,
    fail_every: u64,
    served: AtomicU64,
}

async fn backend(p: Arc<Profile>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", p.port)).await?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let p = p.clone();
            let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let p = p.clone();
                async move {
                    let n = p.served.fetch_add(1, Ordering::Relaxed);
                    let base = p.latency_ms.load(Ordering::Relaxed) as f64;
                    let jitter = 0.8 + 0.4 * ((n * 7919 % 1000) as f64 / 1000.0);
                    tokio::time::sleep(Duration::from_secs_f64(base * jitter / 1000.0)).await;
                    let status = if p.fail_every > 0 && n.is_multiple_of(p.fail_every) {
                        500
                    } else {
                        200
                    };
                    let body = format!("{{\"backend\":\"{}\"}}\n", p.name);
                    let mut res = Response::new(Full::new(Bytes::from(body)));
                    *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(res)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// Sends about `per_second` requests a second to each route for `seconds` (each second a
/// random 70–130 % of it, as real traffic wanders); returns (total, 429s, 5xx).
async fn traffic(http: &reqwest::Client, routes: &[(&str, u32)], seconds: u32) -> (u64, u64, u64) {
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for s in 0..seconds {
        for (route, per_second) in routes {
            let n =
                ((f64::from(*per_second) * (0.7 + 0.6 * fastrand::f64())).round() as u32).max(1);
            for i in 0..n {
                let at = start + Duration::from_secs(u64::from(s)) + Duration::from_secs(1) * i / n;
                let (http, url) = (http.clone(), format!("{GATEWAY}{route}/{}", i % 50));
                tasks.spawn(async move {
                    tokio::time::sleep_until(at).await;
                    http.get(url)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                });
            }
        }
    }
    let (mut total, mut limited, mut failed) = (0, 0, 0);
    while let Some(Ok(status)) = tasks.join_next().await {
        total += 1;
        limited += u64::from(status == 429);
        failed += u64::from(status >= 500 || status == 0);
    }
    (total, limited, failed)
}

async fn get(path: &str) -> Value {
    match reqwest::get(format!("{ADMIN}{path}")).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn report(phase: &str, since_ms: i64) {
    println!("\n  what the gateway did ({phase}):");
    let routes = get("/analytics/routes").await;
    for r in routes.as_array().into_iter().flatten() {
        println!(
            "    {:<12} baseline {:>6.0} ± {:<5.0}/min  now {:>6.0}/min  limit {:>6} ({})",
            r["route"].as_str().unwrap_or("?"),
            r["avg_rate"].as_f64().unwrap_or(0.0),
            r["rate_stddev"].as_f64().unwrap_or(0.0),
            r["current"]["request_rate"].as_f64().unwrap_or(0.0),
            r["current_rate_limit"]
                .as_f64()
                .map_or("none".into(), |l| format!("{l:.0}")),
            r["rate_limit_source"].as_str().unwrap_or("?"),
        );
    }
    let anomalies = get(&format!("/analytics/anomalies?from={}", since_ms / 1000)).await;
    for a in anomalies.as_array().into_iter().flatten() {
        let who = a["route"].as_str().or(a["backend"].as_str()).unwrap_or("?");
        let metric = a["metric"].as_str().unwrap_or("?");
        let show = |v: &Value| {
            let v = v.as_f64().unwrap_or(0.0);
            match metric {
                "error_rate" => format!("{:.1} %", 100.0 * v),
                "request_rate" => format!("{v:.0}/min"),
                _ => format!("{v:.1} ms"),
            }
        };
        println!(
            "    anomaly: {metric} on {who} — {} against a mean of {} (z = {:.1}){}",
            show(&a["current"]),
            show(&a["mean"]),
            a["peak_z_score"].as_f64().unwrap_or(0.0),
            if a["ended_ms"].is_null() {
                ", ongoing"
            } else {
                ", ended"
            },
        );
    }
    let backends = get("/analytics/backends").await;
    for b in backends.as_array().into_iter().flatten() {
        println!(
            "    backend {}  weight {:>5.1} %  mean {:>6.1} ms  errors {:>4.1} %  breaker {} (threshold {:.0} %)",
            b["backend"].as_str().unwrap_or("?"),
            100.0 * b["weight"].as_f64().unwrap_or(0.0),
            b["avg_latency_ms"].as_f64().unwrap_or(0.0),
            100.0 * b["error_rate"].as_f64().unwrap_or(0.0),
            b["breaker_state"].as_str().unwrap_or("?"),
            100.0 * b["breaker_threshold"].as_f64().unwrap_or(0.0),
        );
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let linger: u64 = std::env::args()
        .skip_while(|a| a != "--linger")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The gateway's own log lines would drown the narrative; the reports say what happened.
    tracing_subscriber::fmt().with_env_filter("error").init();
    let profiles: Vec<Arc<Profile>> = [
        ("fast", 18101, 5, 0),
        ("jittery", 18102, 15, 200),
        ("flaky", 18103, 8, 40),
    ]
    .into_iter()
    .map(|(name, port, latency, fail_every)| {
        Arc::new(Profile {
            name,
            port,
            latency_ms: AtomicU64::new(latency),
            fail_every,
            served: AtomicU64::new(0),
        })
    })
    .collect();
    for p in &profiles {
        backend(p.clone()).await?;
    }
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/demo.yml");
    let config = Config::load(std::path::Path::new(config_path))?;
    let gateway = microgate::start(&config).await?;
    println!("MicroGate demo");
    println!("  gateway   {GATEWAY}   (routes /api/users, /api/orders, /api/search)");
    println!("  dashboard {ADMIN}/dashboard");
    println!(
        "  backends  fast :18101 (5 ms), jittery :18102 (15 ms, 0.5 % errors), flaky :18103 (8 ms, 2.5 % errors)"
    );
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(10))
        .build()?;
    let normal = [("/api/users", 20), ("/api/orders", 10), ("/api/search", 5)];
    let started = Instant::now();

    let phase = |n: u32, title: &str, what: &str| {
        println!(
            "\n[{:>3}s] phase {n}: {title}\n  {what}",
            started.elapsed().as_secs()
        );
    };

    phase(
        1,
        "learning",
        "normal traffic while the gateway learns baselines (20 s)",
    );
    let t = now_ms();
    let (total, _, _) = traffic(&http, &normal, 20).await;
    println!("  sent {total} requests");
    report("learning", t).await;

    phase(
        2,
        "steady",
        "the same traffic; limits are now learned (10 s)",
    );
    let t = now_ms();
    let (total, limited, _) = traffic(&http, &normal, 10).await;
    println!("  sent {total}, {limited} answered 429 (normal traffic passes)");
    report("steady", t).await;

    phase(3, "spike", "10× traffic on /api/search (8 s)");
    let t = now_ms();
    let spike = [("/api/users", 20), ("/api/orders", 10), ("/api/search", 50)];
    let (total, limited, _) = traffic(&http, &spike, 8).await;
    println!("  sent {total}, {limited} answered 429 (the spike meets the learned limit)");
    report("spike", t).await;

    phase(
        4,
        "slow backend",
        "the jittery backend slows to 150 ms (15 s)",
    );
    profiles[1].latency_ms.store(150, Ordering::Relaxed);
    let before: Vec<u64> = profiles
        .iter()
        .map(|p| p.served.load(Ordering::Relaxed))
        .collect();
    let t = now_ms();
    traffic(&http, &normal, 15).await;
    let share: Vec<u64> = profiles
        .iter()
        .zip(&before)
        .map(|(p, b)| p.served.load(Ordering::Relaxed) - b)
        .collect();
    println!(
        "  requests per backend: fast {}, jittery {}, flaky {} (traffic shifts away)",
        share[0], share[1], share[2]
    );
    report("slow backend", t).await;

    phase(5, "recovery", "the jittery backend is fast again (25 s)");
    profiles[1].latency_ms.store(15, Ordering::Relaxed);
    let t = now_ms();
    traffic(&http, &normal, 25).await;
    let after: Vec<u64> = profiles
        .iter()
        .map(|p| p.served.load(Ordering::Relaxed))
        .collect();
    traffic(&http, &normal, 5).await;
    let share: Vec<u64> = profiles
        .iter()
        .zip(&after)
        .map(|(p, b)| p.served.load(Ordering::Relaxed) - b)
        .collect();
    println!(
        "  requests per backend in the last 5 s: fast {}, jittery {}, flaky {} (its share returns)",
        share[0], share[1], share[2]
    );
    report("recovery", t).await;

    if linger > 0 {
        println!("\nThe gateway stays up for {linger} s: {ADMIN}/dashboard");
        tokio::time::sleep(Duration::from_secs(linger)).await;
    }
    println!("\nDone in {} s.", started.elapsed().as_secs());
    gateway.shutdown().await;
    Ok(())
}
