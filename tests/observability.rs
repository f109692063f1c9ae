//! The shipped Grafana dashboard against a real Prometheus scraping a gateway under
//! traffic: every panel's query returns data. And `promtool check metrics` accepts the
//! gateway's `/metrics`.

use std::time::Duration;

use crate::support::external::{Prometheus, promtool_check};
use crate::support::plugins;
use crate::support::*;

fn gateway(a: &Backend, b: &Backend) -> GatewayProc {
    GatewayProc::start(&yaml(&format!(
        r#"
log: {{ access_log: false }}
upstreams:
  u: {{ backends: [{}, {}] }}
routes:
  - {{ path: /api/a, upstream: u, rate_limit: {{ requests_per_minute: 100000 }} }}
  - {{ path: /api/b, upstream: u }}
{FAST_ANALYTICS}
plugins:
  dir: {}
  rate_limit: adaptive_rate_limit.wasm
  anomaly: zscore_anomaly.wasm
  weighting: latency_weighting.wasm
"#,
        a.url(),
        b.url(),
        plugins::dir().display()
    )))
}

#[tokio::test]
async fn every_grafana_panel_query_returns_data_from_a_real_prometheus() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let gw = gateway(&a, &b);
    let prometheus = Prometheus::start(gw.admin);
    let http = client();
    let (url_a, url_b) = (gw.url("/api/a"), gw.url("/api/b"));
    let _ = tokio::join!(
        load(&http, &url_a, 10..=20, 6),
        load(&http, &url_b, 5..=10, 6),
    );

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grafana/dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(
        panels.len() >= 7,
        "traffic, anomalies, weights, limits, breakers, plugins, drops"
    );
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let title = panel["title"].as_str().unwrap();
            let result = wait_for(Duration::from_secs(30), title, || async {
                let r = prometheus.query(expr).await;
                (!r.is_empty()).then_some(r)
            })
            .await;
            assert!(!result.is_empty(), "{title}: {expr}");
        }
    }
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let gw = gateway(&a, &b);
    load(&client(), &gw.url("/api/a"), 10..=20, 2).await;
    let metrics = gw.metrics().await;
    assert!(metrics.contains("gateway_anomalies_total"));
    let (ok, said) = promtool_check(&metrics);
    assert!(ok, "promtool check metrics: {said}");
}
