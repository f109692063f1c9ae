//! Circuit breakers through the real gateway: a failing backend is taken out, probed after
//! the open period, and put back when it recovers.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn opens_on_failures_skips_the_backend_and_closes_after_recovery() {
    let flaky = Backend::echo("flaky").await;
    let steady = Backend::echo("steady").await;
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  u: {{ backends: [{}, {}] }}
routes:
  - {{ path: /, upstream: u }}
circuit_breaker:
  consecutive_failures: 3
  error_rate: 0
  open_duration: 1s
  half_open_probes: 2
"#,
        flaky.url(),
        steady.url()
    )));
    let http = client();
    let state = format!("gateway_circuit_state{{backend=\"{}\"}}", flaky.url());
    assert_eq!(metric(&gw.metrics().await, &state), Some(0.0));

    flaky.set_status(500);
    // Round-robin alternates: 6 requests give the flaky backend its 3 failures.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            http.get(gw.url("/"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(metric(&gw.metrics().await, &state), Some(1.0), "open");

    // While open, every request goes to the steady backend.
    let before = flaky.hits();
    for _ in 0..10 {
        let res = http.get(gw.url("/")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-backend"], "steady");
    }
    assert_eq!(
        flaky.hits(),
        before,
        "an open breaker's backend gets no traffic"
    );

    // The backend recovers; after the open period, probes succeed and the breaker closes.
    flaky.set_status(200);
    eventually(
        Duration::from_secs(15),
        "the flaky backend serves again",
        || async {
            let res = http.get(gw.url("/")).send().await.unwrap();
            res.headers()["x-backend"] == "flaky"
        },
    )
    .await;
    eventually(Duration::from_secs(15), "the breaker closes", || async {
        let _ = http.get(gw.url("/")).send().await.unwrap();
        metric(&gw.metrics().await, &state) == Some(0.0)
    })
    .await;
    let transitions = || -> Vec<(String, String)> {
        gw.logs()
            .into_iter()
            .filter(|l| l["message"] == "circuit breaker state change")
            .map(|l| {
                (
                    l["from"].as_str().unwrap().to_owned(),
                    l["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    eventually(
        Duration::from_secs(5),
        "three logged transitions",
        || async { transitions().len() >= 3 },
    )
    .await;
    assert_eq!(
        transitions(),
        [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let bad = Backend::echo("bad").await;
    bad.set_status(503);
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  u: {{ backends: [{}] }}
routes:
  - {{ path: /, upstream: u }}
circuit_breaker: {{ consecutive_failures: 2, error_rate: 0, open_duration: 1s, half_open_probes: 1 }}
"#,
        bad.url()
    )));
    let http = client();
    for _ in 0..2 {
        assert_eq!(http.get(gw.url("/")).send().await.unwrap().status(), 503);
    }
    assert_eq!(bad.hits(), 2);
    // Open: the gateway answers 503 itself until a probe is let through, which fails again.
    eventually(
        Duration::from_secs(10),
        "a probe reaches the backend",
        || async {
            let _ = http.get(gw.url("/")).send().await.unwrap();
            bad.hits() == 3
        },
    )
    .await;
    let res = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(
        echoed(res).await["error"],
        "no_healthy_backend",
        "reopened after the failed probe"
    );
    let state = format!("gateway_circuit_state{{backend=\"{}\"}}", bad.url());
    assert_eq!(metric(&gw.metrics().await, &state), Some(1.0));
}

/// Every backend of a weighted upstream fails at once: both breakers open, and the next
/// rebalance, seeing no backend it can send to, gives every backend weight 0. Once the
/// open period is over the balancer must still offer them, so the probes go out and the
/// upstream recovers when its backends do (it once stayed at 503 until a config change).
#[tokio::test]
async fn an_upstream_whose_breakers_all_opened_recovers_after_a_rebalance() {
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "log: {{ access_log: false }}\n\
         upstreams:\n  u: {{ backends: [{}, {}] }}\n\
         routes:\n  - {{ path: /, upstream: u }}\n\
         circuit_breaker: {{ consecutive_failures: 3, error_rate: 0, open_duration: 1s, \
         half_open_probes: 1, adaptive: {{ enabled: false }} }}\n\
         {FAST_ANALYTICS}",
        a.url(),
        b.url()
    )));
    let http = client();
    let weights = || async {
        let v = admin_json(&gw, "/analytics/backends").await;
        [&a, &b].map(|x| {
            v.as_array()
                .unwrap()
                .iter()
                .find(|e| e["backend"] == x.url())
                .map(|e| e["weight"].as_f64().unwrap())
        })
    };
    // Weights learned from healthy traffic first.
    load(&http, &gw.url("/"), 15..=25, 2).await;
    eventually(Duration::from_secs(20), "learned weights", || async {
        load(&http, &gw.url("/"), 15..=25, 1).await;
        weights().await.iter().all(|w| w.is_some_and(|w| w > 0.2))
    })
    .await;

    a.set_status(500);
    b.set_status(500);
    let open = |x: &Backend| format!("gateway_circuit_state{{backend=\"{}\"}}", x.url());
    eventually(Duration::from_secs(10), "both breakers open", || async {
        let _ = http.get(gw.url("/")).send().await.unwrap();
        let m = gw.metrics().await;
        metric(&m, &open(&a)) == Some(1.0) && metric(&m, &open(&b)) == Some(1.0)
    })
    .await;
    // No request meanwhile, so the breakers stay open for the rebalance to see.
    eventually(
        Duration::from_secs(10),
        "a rebalance with every breaker open",
        || async { weights().await == [Some(0.0), Some(0.0)] },
    )
    .await;

    a.set_status(200);
    b.set_status(200);
    eventually(
        Duration::from_secs(10),
        "the upstream answers again",
        || async { http.get(gw.url("/")).send().await.unwrap().status() == 200 },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "both breakers closed and weighted again",
        || async {
            load(&http, &gw.url("/"), 15..=25, 1).await;
            let m = gw.metrics().await;
            metric(&m, &open(&a)) == Some(0.0)
                && metric(&m, &open(&b)) == Some(0.0)
                && weights().await.iter().all(|w| w.is_some_and(|w| w > 0.0))
        },
    )
    .await;
}
