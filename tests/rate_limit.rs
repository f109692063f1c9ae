//! Static token-bucket limits through the real gateway.

use crate::support::*;

#[tokio::test]
async fn an_empty_bucket_answers_429_with_headers() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  a: {{ backends: [{}] }}
routes:
  - {{ path: /limited, upstream: a, rate_limit: {{ requests_per_minute: 6, burst: 3 }} }}
  - {{ path: /free, upstream: a }}
"#,
        a.url()
    )));
    let http = client();
    for remaining in [2, 1, 0] {
        let res = http.get(gw.url("/limited")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit"], "6");
        assert_eq!(
            res.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let res = http.get(gw.url("/limited")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-ratelimit-limit"], "6");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    // 6 per minute: the next token comes within 10 s.
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(echoed(res).await["error"], "rate_limited");
    assert_eq!(a.hits(), 3, "the refused request never reached the backend");

    // Other routes are not limited.
    for _ in 0..5 {
        assert_eq!(
            http.get(gw.url("/free")).send().await.unwrap().status(),
            200
        );
    }
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(&metrics, "gateway_rate_limited_total{route=\"/limited\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "gateway_requests_total{method=\"GET\",route=\"/limited\",status=\"429\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn api_key_buckets_are_separate() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  a: {{ backends: [{}] }}
routes:
  - {{ path: /, upstream: a, auth: api_key, rate_limit: {{ requests_per_minute: 1, burst: 1, key: api_key }} }}
auth:
  api_keys: [k1, k2]
"#,
        a.url()
    )));
    let http = client();
    let get = |key: &'static str| {
        let req = http.get(gw.url("/x")).header("x-api-key", key);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(get("k1").await, 200);
    assert_eq!(get("k1").await, 429);
    assert_eq!(get("k2").await, 200, "k2 has its own bucket");
}
