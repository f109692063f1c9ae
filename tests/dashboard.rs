//! The dashboard page in a real headless Chromium: after a spike, its tables and charts
//! hold the routes, backends and anomalies the API reports. A screenshot is saved as a
//! test artefact (`target/test-artifacts/dashboard.png`).

use std::path::Path;
use std::time::Duration;

use crate::support::external::{dump_dom, screenshot};
use crate::support::*;

#[tokio::test]
async fn the_dashboard_shows_what_the_api_reports() {
    let (a, b) = (Backend::echo("a").await, Backend::echo("b").await);
    let gw = GatewayProc::start(&yaml(&format!(
        "log: {{ access_log: false }}\nupstreams:\n  u: {{ backends: [{}, {}] }}\nroutes:\n  - {{ path: /api/a, upstream: u }}\n  - {{ path: /api/b, upstream: u }}\n{FAST_ANALYTICS}",
        a.url(),
        b.url()
    )));
    let http = client();
    let (url_a, url_b) = (gw.url("/api/a"), gw.url("/api/b"));
    let _ = tokio::join!(
        load(&http, &url_a, 15..=25, 8),
        load(&http, &url_b, 5..=10, 8),
    );
    load(&http, &gw.url("/api/a"), 190..=210, 3).await;
    let anomalies = wait_for(Duration::from_secs(15), "an anomaly to show", || async {
        let v = admin_json(&gw, "/analytics/anomalies").await;
        v.as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await;
    let routes = admin_json(&gw, "/analytics/routes").await;
    let backends = admin_json(&gw, "/analytics/backends").await;

    let url = gw.admin_url("/dashboard?refresh=1");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url, Duration::from_secs(8)))
        .await
        .unwrap();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page loaded its data: {dom}"
    );
    for r in routes.as_array().unwrap() {
        let route = r["route"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-route=\"{route}\"")),
            "route {route} in the routes table"
        );
    }
    for b in backends.as_array().unwrap() {
        let backend = b["backend"].as_str().unwrap();
        assert!(
            dom.contains(&format!("data-backend=\"{backend}\"")),
            "backend {backend} in the table"
        );
        let breaker = b["breaker_state"].as_str().unwrap();
        assert!(dom.contains(&format!("data-breaker=\"{breaker}\"")));
    }
    for anomaly in &anomalies {
        let id = &anomaly["id"];
        assert!(
            dom.contains(&format!("data-anomaly=\"{id}\"")),
            "anomaly {id} listed"
        );
    }
    for chart in ["rate", "errors", "latency"] {
        let at = dom
            .find(&format!("data-chart=\"{chart}\""))
            .unwrap_or_else(|| panic!("chart {chart}"));
        let tail = &dom[at..];
        let points: usize = tail
            .split("data-points=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(
            points > 5,
            "chart {chart} plots the route's history: {points} points"
        );
        let end = tail.find("</section>").unwrap_or(tail.len());
        assert!(tail[..end].contains("<canvas"), "chart {chart} is drawn");
    }

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/dashboard.png");
    let url = gw.admin_url("/dashboard?refresh=1");
    let path = shot.clone();
    tokio::task::spawn_blocking(move || screenshot(&url, Duration::from_secs(6), &path))
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
}

#[tokio::test]
async fn the_dashboard_files_are_served_without_the_admin_token_but_data_is_not() {
    let gw = GatewayProc::start(&yaml("").replace(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  token: s3cret\n",
    ));
    let http = client();
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/dashboard/uplot.min.js",
        "/dashboard/LICENSE.uplot.txt",
    ] {
        assert_eq!(
            http.get(gw.admin_url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        http.get(gw.admin_url("/analytics/routes"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}
