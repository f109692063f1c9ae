//! The admin listener and graceful shutdown.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::support::backend::full;
use crate::support::*;

#[tokio::test]
async fn health_and_metrics_are_served_on_the_admin_port_only() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /api, upstream: a }}\n",
        a.url()
    )));
    let http = client();
    let health = http.get(gw.admin_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["backends"]["total"], 1);

    // The proxy port does not serve admin paths, and admin calls are not traffic.
    assert_eq!(
        http.get(gw.url("/metrics")).send().await.unwrap().status(),
        404
    );
    http.post(gw.url("/api/x"))
        .body("hello")
        .send()
        .await
        .unwrap();

    let text = gw.metrics().await;
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_requests_total",
        "gateway_circuit_state",
        "gateway_rate_limited_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(
        metric(
            &text,
            "gateway_requests_total{method=\"POST\",route=\"/api\",status=\"200\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "gateway_requests_total{method=\"GET\",route=\"/metrics\",status=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "gateway_request_duration_seconds_count{route=\"/api\"}"
        ),
        Some(1.0)
    );
    let upstream = format!(
        "gateway_upstream_requests_total{{backend=\"{}\",status=\"200\"}}",
        a.url()
    );
    assert_eq!(metric(&text, &upstream), Some(1.0));
    assert!(
        !text.contains("route=\"/health\""),
        "admin requests are not recorded"
    );
    let once = "gateway_requests_total{method=\"GET\",route=\"/metrics\",status=\"404\"}";
    let again = gw.metrics().await;
    assert_eq!(
        metric(&again, once),
        Some(1.0),
        "reading /metrics is not traffic"
    );
}

#[tokio::test]
async fn an_admin_token_is_enforced_when_set() {
    let gw = GatewayProc::start(&yaml("").replace(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  token: t0ken\n",
    ));
    let http = client();
    assert_eq!(
        http.get(gw.admin_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let res = http
        .get(gw.admin_url("/metrics"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// SIGTERM while a request is in flight: the request completes, new connections are
/// refused, and the process exits 0.
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let (arrived_tx, mut arrived_rx) = mpsc::channel::<()>(1);
    let (release_tx, release_rx) = watch::channel(false);
    let slow = Backend::with("slow", move |_req| {
        let arrived = arrived_tx.clone();
        let mut release = release_rx.clone();
        async move {
            let _ = arrived.send(()).await;
            let _ = release.wait_for(|r| *r).await;
            hyper::Response::new(full("finished"))
        }
    })
    .await;
    let mut gw = GatewayProc::start(&yaml(&format!(
        "proxy:\n  shutdown_timeout: 30s\nupstreams:\n  s: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: s }}\n",
        slow.url()
    )));
    let url = gw.url("/work");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
        .await
        .expect("the request reached the backend");

    gw.sigterm();
    // Once the gateway logs that it stopped accepting, new connections are refused.
    eventually(Duration::from_secs(10), "the listener closes", || async {
        gw.logs()
            .iter()
            .any(|l| l["message"] == "stopped accepting; draining in-flight requests")
    })
    .await;
    let refused = client().get(gw.url("/new")).send().await;
    assert!(
        refused.is_err(),
        "a new connection after SIGTERM is refused: {refused:?}"
    );

    release_tx.send(true).unwrap();
    let res = in_flight.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "finished");
    let status = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
