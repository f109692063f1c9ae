//! The traffic hook: every finished request reaches the gateway's `TrafficSink` with its
//! route, backend, status, sizes and client. Runs the library in-process with a
//! collecting sink.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use microgate::config::Config;
use microgate::traffic::{TrafficEvent, TrafficSink};

use crate::support::*;

#[derive(Default)]
struct Collect(Mutex<Vec<TrafficEvent>>);

impl TrafficSink for Collect {
    fn record(&self, event: TrafficEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[tokio::test]
async fn every_finished_request_reaches_the_sink() {
    let a = Backend::echo("a").await;
    let (b1, b2) = (Backend::echo("b1").await, Backend::echo("b2").await);
    let config = Config::parse(
        &yaml(&format!(
            "log: {{ access_log: false }}\nanalytics: {{ enabled: false }}\nupstreams:\n  a: {{ backends: [{}] }}\n  b: {{ backends: [{}, {}] }}\nroutes:\n  - {{ path: \"/api/items/{{id}}\", upstream: a }}\n  - {{ path: /api/pair, upstream: b }}\n",
            a.url(),
            b1.url(),
            b2.url()
        )),
        "inline",
    )
    .unwrap();
    let sink = Arc::new(Collect::default());
    let running = microgate::start_with_sink(&config, Some(sink.clone()))
        .await
        .unwrap();
    let base = format!("http://{}", running.proxy_addr);
    let http = client();

    let res = http
        .post(format!("{base}/api/items/42"))
        .body("12345")
        .send()
        .await
        .unwrap();
    let body_len = res.bytes().await.unwrap().len() as u64;
    let res = http.get(format!("{base}/elsewhere")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    res.bytes().await.unwrap();
    let res = http.get(format!("{base}/api/pair")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();

    eventually(Duration::from_secs(5), "three events", || async {
        sink.0.lock().unwrap().len() == 3
    })
    .await;
    let events = sink.0.lock().unwrap().clone();
    let hit = events
        .iter()
        .find(|e| e.status == 200 && e.route.starts_with("/api/items"))
        .unwrap();
    assert_eq!(
        &*hit.route, "/api/items/{id}",
        "the route pattern, not the raw path"
    );
    assert_eq!(hit.backend.as_deref(), Some(a.url().as_str()));
    assert_eq!(hit.method, http::Method::POST);
    assert_eq!(hit.bytes_in, 5);
    assert_eq!(hit.bytes_out, body_len);
    assert_eq!(hit.client_ip.to_string(), "127.0.0.1");
    assert!(hit.completed);
    assert!(!hit.several_backends, "its upstream has one backend");
    let pair = events.iter().find(|e| &*e.route == "/api/pair").unwrap();
    assert!(pair.several_backends, "its upstream has two");
    let miss = events.iter().find(|e| e.status == 404).unwrap();
    assert_eq!(&*miss.route, "/elsewhere", "unmatched: the normalised path");
    assert_eq!(miss.backend, None);

    running.shutdown().await;
}
