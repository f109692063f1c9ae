//! Test support: backends, the gateway process, and a client.

pub mod backend;
pub mod external;
pub mod gateway;
pub mod load;
pub mod plugins;

pub use backend::Backend;
pub use gateway::GatewayProc;
pub use load::{Answer, count, load};

use std::time::{Duration, Instant};

/// An HTTP client that does not follow redirects or reuse state between tests. Idle
/// pooled connections are dropped well before the gateway closes them (as a client
/// should), so a request never races the server's keep-alive timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `cond` until it holds, failing the test after `limit`. For waiting on state that
/// changes in the background (a breaker's open period ending), never for timing claims.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(limit, what, || {
        let holds = cond();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// Polls `f` until it gives a value, failing the test after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_or_explain(limit, what, f, || async { String::new() }).await
}

/// As [`wait_for`]; a timeout's failure also prints what `explain` gives then (the state
/// the wait was for, so that a rare failure can be read from its log).
pub async fn wait_for_or_explain<T, F, Fut, E, EFut>(
    limit: Duration,
    what: &str,
    mut f: F,
    explain: E,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    E: FnOnce() -> EFut,
    EFut: Future<Output = String>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out waiting for: {what}\n{}", explain().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one sample in Prometheus text, e.g. `gateway_circuit_state{backend="…"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A config with both listeners on free ports, followed by `rest`.
pub fn yaml(rest: &str) -> String {
    format!("listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n{rest}")
}

/// The echo backend's JSON answer.
pub async fn echoed(res: reqwest::Response) -> serde_json::Value {
    res.json().await.unwrap()
}

/// Analytics on fast-forward: 1 s buckets and ticks, seconds of learning.
pub const FAST_ANALYTICS: &str = r#"
analytics:
  store: memory
  bucket_interval: 1s
  window: 12s
  rollup_after: 1m
  rollup_interval: 10s
  analyzer_interval: 1s
  anomaly: { z_threshold: 3.0, min_samples: 5, learn_after: 1m, quiet_period: 3s }
adaptive_rate_limit: { multiplier: 3.0, min_limit: 10, max_limit: 100000, learning_period: 5s, burst_window: 1s }
weighted_lb: { rebalance_interval: 1s, learning_period: 3s, min_share: 0.05 }
"#;

/// GETs an admin JSON endpoint.
pub async fn admin_json(gw: &GatewayProc, path: &str) -> serde_json::Value {
    reqwest::get(gw.admin_url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
