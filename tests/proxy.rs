//! Routing, streaming, headers, request IDs, protocols, balancing, timeouts, dead backends.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::{mpsc, watch};

use crate::support::backend::{checksum, full};
use crate::support::*;

#[tokio::test]
async fn routes_by_longest_prefix_on_whole_segments() {
    let (a, b, c) = (
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    );
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  a: {{ backends: [{}] }}
  b: {{ backends: [{}] }}
  c: {{ backends: [{}] }}
routes:
  - {{ path: /api, upstream: a }}
  - {{ path: /api/users, upstream: b }}
  - {{ path: "/api/users/{{id}}/orders", upstream: c }}
"#,
        a.url(),
        b.url(),
        c.url()
    )));
    let http = client();
    for (path, want) in [
        ("/api", "a"),
        ("/api/usersX", "a"),
        ("/api/users", "b"),
        ("/api/users/7", "b"),
        ("/api/users/7/orders", "c"),
        ("/api/users/7/orders/3?x=1", "c"),
    ] {
        let res = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body = echoed(res).await;
        assert_eq!(body["backend"], want, "{path}");
        assert_eq!(
            body["path"],
            path.split('?').next().unwrap(),
            "the path is forwarded unchanged"
        );
    }
    let res = http.get(gw.url("/nothing/here")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(echoed(res).await["error"], "not_found");
}

#[tokio::test]
async fn strip_prefix_removes_the_matched_prefix() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /svc, upstream: a, strip_prefix: true }}\n",
        a.url()
    )));
    let body = echoed(
        client()
            .get(gw.url("/svc/items/4?q=1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["path"], "/items/4");
    assert_eq!(body["query"], "q=1");
    let body = echoed(client().get(gw.url("/svc")).send().await.unwrap()).await;
    assert_eq!(body["path"], "/");
}

/// The backend sends a first chunk, then waits until the test has seen it arrive before
/// sending the rest: a gateway that buffered the body would never deliver the first chunk.
#[tokio::test]
async fn streams_a_large_response_without_buffering() {
    const REST: usize = 32 << 20;
    let (release_tx, release_rx) = watch::channel(false);
    let backend = Backend::with("big", move |_req| {
        let mut release = release_rx.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from(vec![1u8; 65536]))))
                    .await
                    .unwrap();
                let _ = release.wait_for(|r| *r).await;
                for i in 0..REST / 65536 {
                    let chunk = Bytes::from(vec![(i % 251) as u8; 65536]);
                    if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
            });
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            hyper::Response::new(BodyExt::boxed(body))
        }
    })
    .await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  big: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: big }}\n",
        backend.url()
    )));

    let res = client().get(gw.url("/download")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the first chunk arrives before the backend sends the rest")
        .unwrap()
        .unwrap();
    let mut received = first.to_vec();
    release_tx.send(true).unwrap();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received.len(), 65536 + REST);
    let mut expected = vec![1u8; 65536];
    for i in 0..REST / 65536 {
        expected.extend(std::iter::repeat_n((i % 251) as u8, 65536));
    }
    assert_eq!(checksum(&received), checksum(&expected));
}

/// The client sends a first chunk and holds the rest until the backend has seen it.
#[tokio::test]
async fn streams_a_large_request_without_buffering() {
    const REST: usize = 32 << 20;
    let (seen_tx, seen_rx) = mpsc::channel::<()>(1);
    let backend = Backend::with("sink", move |req| {
        let seen = seen_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut sum = 0xcbf29ce484222325u64;
            let mut len = 0usize;
            let mut told = false;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    len += data.len();
                    sum = data
                        .iter()
                        .fold(sum, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
                    if !told {
                        told = true;
                        let _ = seen.send(()).await;
                    }
                }
            }
            hyper::Response::new(full(format!("{len} {sum}")))
        }
    })
    .await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  sink: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: sink }}\n",
        backend.url()
    )));

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let request = tokio::spawn(
        client()
            .post(gw.url("/upload"))
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .send(),
    );
    let mut all = vec![7u8; 1000];
    tx.send(Ok(Bytes::from(all.clone()))).await.unwrap();
    let mut seen_rx = seen_rx;
    tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
        .await
        .expect("the backend sees the first chunk while the client still holds the rest");
    for i in 0..REST / 65536 {
        let chunk = vec![(i % 13) as u8; 65536];
        all.extend_from_slice(&chunk);
        tx.send(Ok(Bytes::from(chunk))).await.unwrap();
    }
    drop(tx);
    let res = request.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        format!("{} {}", all.len(), checksum(&all))
    );
}

#[tokio::test]
async fn sets_forwarding_headers_and_drops_hop_by_hop_ones() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: a }}\n",
        a.url()
    )));
    let res = client()
        .get(gw.url("/h"))
        .header("host", "api.example.test")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("x-backend-hop").is_none(),
        "hop-by-hop response header dropped"
    );
    assert_eq!(
        res.headers()["x-backend"],
        "a",
        "end-to-end response header kept"
    );
    let seen = echoed(res).await;
    let h = &seen["headers"];
    assert_eq!(h["host"], "api.example.test", "Host is preserved");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "an untrusted client cannot claim https"
    );
    assert_eq!(h["x-forwarded-host"], "api.example.test");
    assert_eq!(h["x-end-to-end"], "kept");
    for hop in ["x-hop", "te", "proxy-authorization"] {
        assert!(
            h.get(hop).is_none(),
            "{hop} must not reach the backend: {h}"
        );
    }
}

#[tokio::test]
async fn request_ids_are_generated_or_propagated_and_logged() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: a }}\n",
        a.url()
    )));
    let http = client();

    let res = http.get(gw.url("/one")).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "generated id is a UUID: {id}"
    );
    assert_eq!(echoed(res).await["headers"]["x-request-id"], id.as_str());

    let res = http
        .get(gw.url("/two"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(
        echoed(res).await["headers"]["x-request-id"],
        "trace-abc-123"
    );

    // A 404 answered by the gateway itself carries one too.
    let res = http
        .get(gw.url("/"))
        .header("x-request-id", "trace-404")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-404");

    eventually(Duration::from_secs(5), "access log lines", || async {
        gw.access_logs().len() >= 3
    })
    .await;
    let line = gw
        .access_logs()
        .into_iter()
        .find(|l| l["id"] == "trace-abc-123")
        .unwrap();
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/");
    assert_eq!(line["status"], 200);
    assert_eq!(line["backend"], a.url());
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
}

/// `proxy.request_id: false` and `proxy.forwarded_headers: false`: the gateway adds no
/// field of its own, a client's `X-Request-ID` reaches the backend as any other field,
/// and a client's `X-Forwarded-*` (which could be forged) do not.
#[tokio::test]
async fn request_ids_and_forwarded_fields_can_be_turned_off() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "proxy: {{ request_id: false, forwarded_headers: false }}\n\
         upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /api, upstream: a }}\n",
        a.url()
    )));
    let http = client();
    let res = http
        .get(gw.url("/api/plain"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "forged.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-request-id").is_none());
    let seen = echoed(res).await;
    let h = seen["headers"].as_object().unwrap();
    for name in [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ] {
        assert!(!h.contains_key(name), "{name} in {h:?}");
    }
    let res = http
        .get(gw.url("/api/traced"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        echoed(res).await["headers"]["x-request-id"],
        "trace-abc-123"
    );
    let res = http.get(gw.url("/elsewhere")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("x-request-id").is_none());
    eventually(Duration::from_secs(5), "access log lines", || async {
        gw.access_logs().len() >= 3
    })
    .await;
    assert!(gw.access_logs().iter().all(|l| l["id"] == "-"));
}

#[tokio::test]
async fn serves_h2c_clients() {
    let a = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: a }}\n",
        a.url()
    )));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = h2.get(gw.url("/over-h2")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    // The backend's fields reach an HTTP/2 client too, less the hop-by-hop ones, and
    // under the gateway's own.
    assert_eq!(res.headers()["x-backend"], "a");
    assert!(res.headers().get("x-backend-hop").is_none());
    assert_eq!(res.headers().get_all("x-request-id").iter().count(), 1);
    let seen = echoed(res).await;
    assert_eq!(
        seen["version"], "HTTP/1.1",
        "backends are spoken to in HTTP/1.1"
    );
    assert_eq!(seen["path"], "/over-h2");
    assert!(
        seen["headers"]["host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let backends = [
        Backend::echo("a").await,
        Backend::echo("b").await,
        Backend::echo("c").await,
    ];
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  all: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: all }}\n",
        urls.join(", ")
    )));
    let http = client();
    let mut order = Vec::new();
    for _ in 0..30 {
        let res = http.get(gw.url("/rr")).send().await.unwrap();
        order.push(res.headers()["x-backend"].to_str().unwrap().to_owned());
    }
    for b in &backends {
        assert_eq!(b.hits(), 10, "backend {} got {} of 30", b.name, b.hits());
    }
    // Strict rotation: no backend twice in a row.
    assert!(order.windows(2).all(|w| w[0] != w[1]), "{order:?}");
}

#[tokio::test]
async fn a_slow_backend_gets_504() {
    let slow = Backend::echo("slow").await;
    slow.set_delay(Duration::from_secs(5));
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  s: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: s, request_timeout: 200ms }}\n",
        slow.url()
    )));
    let res = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(echoed(res).await["error"], "gateway_timeout");
    assert_eq!(slow.hits(), 1);
    let metrics = gw.metrics().await;
    let series = format!(
        "gateway_upstream_requests_total{{backend=\"{}\",status=\"timeout\"}}",
        slow.url()
    );
    assert_eq!(metric(&metrics, &series), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn a_dead_backend_gets_502_then_503_once_its_breaker_opens() {
    // A port bound but not listening: connecting is refused, and no other test's server
    // can take the port while this socket holds it (a listener bound and dropped could
    // be replaced by another test's server, which then answered 404).
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = holder.local_addr().unwrap();
    let gw = GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  d: {{ backends: [http://{dead}] }}
routes:
  - {{ path: /, upstream: d }}
circuit_breaker: {{ consecutive_failures: 2, open_duration: 1h }}
"#
    )));
    let http = client();
    for _ in 0..2 {
        let res = http.get(gw.url("/")).send().await.unwrap();
        assert_eq!(res.status(), 502);
        assert_eq!(echoed(res).await["error"], "bad_gateway");
    }
    let res = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(echoed(res).await["error"], "no_healthy_backend");
    drop(holder);
}

#[tokio::test]
async fn a_backend_that_never_accepts_gets_504_after_the_connect_timeout() {
    // A listener with a backlog of 0 whose queue the test fills: the kernel then drops
    // further SYNs, so the gateway's connect attempt hangs until its timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let gw = GatewayProc::start(&yaml(&format!(
        "upstreams:\n  x: {{ backends: [\"http://{addr}\"] }}\nroutes:\n  - {{ path: /, upstream: x, connect_timeout: 300ms, request_timeout: 10s }}\n"
    )));
    let res = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert_eq!(echoed(res).await["error"], "gateway_timeout");
    drop(listener);
}
