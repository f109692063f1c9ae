//! The client against scripted backends on 127.0.0.1: raw TCP servers that answer each
//! request head with a fixed byte string, so every framing case is exact.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use http::HeaderValue;

/// A backend that answers every request on a connection with `answers` in turn (then
/// closes), writing each answer in pieces of `piece` bytes. Returns its port and a count
/// of accepted connections, and hands out what it received.
async fn scripted(
    answers: Vec<&'static [u8]>,
    piece: usize,
) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (a, r) = (accepted.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let answers = answers.clone();
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for answer in answers {
                    // Read until the end of a request head (and whatever body follows it
                    // in the same reads).
                    loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let rest = buf.split_off(end + 4);
                            r.lock().unwrap().extend_from_slice(&buf);
                            buf = rest;
                            break;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    for part in answer.chunks(piece) {
                        if s.write_all(part).await.is_err() {
                            return;
                        }
                        s.flush().await.unwrap();
                        if piece < answer.len() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            });
        }
    });
    (port, accepted, received)
}

fn pool(port: u16) -> Arc<Pool> {
    Pool::new(
        "127.0.0.1",
        port,
        8,
        Duration::from_secs(60),
        Arc::new(CoarseClock::new()),
    )
}

fn get(path: &str) -> Request<RequestBody> {
    let mut req = Request::get(path)
        .body(RequestBody::bytes(Bytes::new()))
        .unwrap();
    req.headers_mut()
        .insert(http::header::HOST, HeaderValue::from_static("backend"));
    req
}

async fn body(res: Response<UpstreamBody>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

const T: Duration = Duration::from_secs(5);

static PEER: HeaderValue = HeaderValue::from_static("127.0.0.1");
/// What the proxy adds: here only checked not to get in the way.
static FWD: Forwarding<'static> = Forwarding {
    request_id: Some(b"test-id"),
    peer_text: &PEER,
    peer_trusted: false,
    forwarded_headers: true,
    backend_authority: "backend",
};

/// A request deadline far enough away not to matter.
fn soon() -> Instant {
    Instant::now() + T
}

#[tokio::test]
async fn content_length_responses_reuse_the_connection() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello";
    let (port, accepted, received) = scripted(vec![ok, ok, ok], 1000).await;
    let p = pool(port);
    for _ in 0..3 {
        let res = p.send(&mut get("/a?b=1"), &FWD, T, soon()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.body().fields().get("x-test"), Some(&b"yes"[..]));
        assert_eq!(res.body().size_hint().exact(), Some(5));
        assert_eq!(body(res).await, "hello");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for three requests"
    );
    assert_eq!(p.idle_count(), 1);
    let sent = String::from_utf8(received.lock().unwrap().clone()).unwrap();
    assert!(
        sent.starts_with(
            "GET /a?b=1 HTTP/1.1\r\nhost: backend\r\nx-request-id: test-id\r\n\
             x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: backend\r\n\r\n"
        ),
        "{sent:?}"
    );
}

#[tokio::test]
async fn idle_connections_expire_after_the_idle_timeout_on_the_coarse_clock() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (port, accepted, _) = scripted(vec![ok, ok, ok], 1000).await;
    let clock = Arc::new(CoarseClock::new());
    let p = Pool::new("127.0.0.1", port, 8, Duration::from_secs(10), clock.clone());
    let get_ok = async || {
        assert_eq!(
            body(p.send(&mut get("/"), &FWD, T, soon()).await.unwrap()).await,
            "ok"
        )
    };
    get_ok().await;
    clock.advance(Duration::from_secs(9));
    get_ok().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "9 s idle: reused");
    clock.advance(Duration::from_secs(11));
    get_ok().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "11 s idle: replaced");
}

#[tokio::test]
async fn a_backend_that_does_not_answer_times_out_at_the_deadline_never_before() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and reads, never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let p = pool(port);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(100);
    let err = p.send(&mut get("/"), &FWD, T, deadline).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err}");
    assert!(err.is_timeout());
    assert!(Instant::now() >= deadline, "not before the deadline");
}

#[tokio::test]
async fn a_kept_timer_whose_deadline_passed_while_idle_serves_the_next_request() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (port, accepted, _) = scripted(vec![ok, ok], 1000).await;
    let p = pool(port);
    let short = Instant::now() + Duration::from_millis(50);
    assert_eq!(
        body(p.send(&mut get("/"), &FWD, T, short).await.unwrap()).await,
        "ok"
    );
    // The connection idles in the pool, its timer firing at the old deadline.
    tokio::time::sleep_until((short + Duration::from_millis(50)).into()).await;
    let res = p.send(&mut get("/"), &FWD, T, soon()).await;
    assert_eq!(body(res.unwrap()).await, "ok");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "same connection, new deadline"
    );
}

/// A backend that answers the first request on its one connection at once and the second
/// after `delay` (never, if `None`).
async fn slow_second_answer(delay: Option<Duration>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut buf = Vec::new();
        for answer in 0..2 {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.clear();
            if answer == 1 {
                match delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            }
            s.write_all(ok).await.unwrap();
        }
        std::future::pending::<()>().await;
    });
    port
}

#[tokio::test]
async fn a_kept_timer_set_for_an_earlier_deadline_does_not_cut_the_next_request_short() {
    let p = pool(slow_second_answer(Some(Duration::from_millis(300))).await);
    let first = Instant::now() + Duration::from_millis(100);
    assert_eq!(
        body(p.send(&mut get("/"), &FWD, T, first).await.unwrap()).await,
        "ok"
    );
    // The kept timer still points at `first`, which passes while the backend thinks.
    let res = p.send(&mut get("/"), &FWD, T, soon()).await;
    assert_eq!(body(res.unwrap()).await, "ok");
}

#[tokio::test]
async fn a_kept_timer_set_for_a_later_deadline_is_moved_to_an_earlier_one() {
    let p = pool(slow_second_answer(None).await);
    assert_eq!(
        body(p.send(&mut get("/"), &FWD, T, soon()).await.unwrap()).await,
        "ok"
    );
    let start = Instant::now();
    let deadline = start + Duration::from_millis(100);
    let err = p.send(&mut get("/"), &FWD, T, deadline).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err}");
    assert!(Instant::now() >= deadline, "not before the deadline");
    assert!(
        start.elapsed() < T,
        "at this request's deadline, not the earlier request's"
    );
}

#[tokio::test]
async fn chunked_responses_arrive_in_pieces_and_trailers_are_dropped() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let (port, accepted, _) = scripted(vec![answer, answer], 3).await;
    let p = pool(port);
    for _ in 0..2 {
        let res = p.send(&mut get("/"), &FWD, T, soon()).await.unwrap();
        assert_eq!(body(res).await, "hello world");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_until_close_is_read_to_the_end_and_the_connection_dropped() {
    let answer: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close";
    let (port, accepted, _) = scripted(vec![answer], 1000).await;
    let p = pool(port);
    assert_eq!(
        body(p.send(&mut get("/"), &FWD, T, soon()).await.unwrap()).await,
        "until close"
    );
    assert_eq!(p.idle_count(), 0);
    assert_eq!(
        body(p.send(&mut get("/"), &FWD, T, soon()).await.unwrap()).await,
        "until close"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_204_and_304_have_no_body() {
    let head: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    let no_content: &[u8] = b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n";
    let not_modified: &[u8] = b"HTTP/1.1 304 Not Modified\r\n\r\n";
    let (port, accepted, _) = scripted(vec![head, no_content, not_modified], 1000).await;
    let p = pool(port);
    let mut req = get("/");
    *req.method_mut() = Method::HEAD;
    let res = p.send(&mut req, &FWD, T, soon()).await.unwrap();
    assert_eq!(res.body().fields().get("content-length"), Some(&b"100"[..]));
    assert!(res.body().is_end_stream());
    assert_eq!(body(res).await, "");
    assert_eq!(
        p.send(&mut get("/"), &FWD, T, soon())
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        p.send(&mut get("/"), &FWD, T, soon())
            .await
            .unwrap()
            .status(),
        304
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hop_by_hop_fields_stay_with_the_connection() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nTrailer: x\r\nUpgrade: h2c\r\nContent-Type:text/plain\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok";
    let (port, _, _) = scripted(vec![answer], 1000).await;
    let res = pool(port)
        .send(&mut get("/"), &FWD, T, soon())
        .await
        .unwrap();
    let fields: Vec<(String, String)> = res
        .body()
        .fields()
        .iter()
        .map(|f| {
            (
                String::from_utf8_lossy(f.name).into_owned(),
                String::from_utf8_lossy(f.value).into_owned(),
            )
        })
        .collect();
    let expected = [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("Content-Length", "2"),
    ];
    assert_eq!(
        fields,
        expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
    );
    assert_eq!(body(res).await, "ok");
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let answer: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let (port, _, _) = scripted(vec![answer], 7).await;
    let res = pool(port)
        .send(&mut get("/"), &FWD, T, soon())
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert!(
        res.body().fields().get("link").is_none(),
        "interim headers do not leak"
    );
    assert_eq!(body(res).await, "ok");
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_is_replaced() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Each connection answers once, then the backend closes it.
    let (port, accepted, _) = scripted(vec![ok], 1000).await;
    let p = pool(port);
    for _ in 0..3 {
        assert_eq!(
            body(p.send(&mut get("/"), &FWD, T, soon()).await.unwrap()).await,
            "ok"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn request_bodies_are_sent_with_their_length_or_chunked() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let (port, _, received) = scripted(vec![ok, ok], 1000).await;
    let p = pool(port);
    let mut req = Request::post("/up")
        .body(RequestBody::bytes("12345"))
        .unwrap();
    req.headers_mut().insert(
        http::header::EXPECT,
        HeaderValue::from_static("100-continue"),
    );
    p.send(&mut req, &FWD, T, soon()).await.unwrap();
    let sent = String::from_utf8(received.lock().unwrap().clone()).unwrap();
    assert!(sent.contains("content-length: 5\r\n"), "{sent:?}");
    assert!(
        !sent.contains("expect"),
        "the gateway answered Expect itself: {sent:?}"
    );
}

#[tokio::test]
async fn bad_responses_are_errors() {
    let cases: [&[u8]; 4] = [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ];
    for answer in cases {
        let (port, _, _) = scripted(vec![answer], 1000).await;
        let err = pool(port)
            .send(&mut get("/"), &FWD, T, soon())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{answer:?}: {err}");
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_the_connection_is_not_reused() {
    let short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf";
    let (port, _, _) = scripted(vec![short], 1000).await;
    let p = pool(port);
    let res = p.send(&mut get("/"), &FWD, T, soon()).await.unwrap();
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(p.idle_count(), 0);
}

#[tokio::test]
async fn a_body_dropped_half_read_closes_the_connection() {
    let slow: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n";
    let (port, _, _) = scripted(vec![slow], 1000).await;
    let p = pool(port);
    let res = p.send(&mut get("/"), &FWD, T, soon()).await.unwrap();
    drop(res);
    assert_eq!(p.idle_count(), 0);
}

#[tokio::test]
async fn connecting_to_nothing_fails_cleanly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = pool(port)
        .send(&mut get("/"), &FWD, T, soon())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect(_)), "{err}");
}

#[test]
fn chunk_sizes() {
    let mut b = BytesMut::from(&b"1a;name=value\r\nrest"[..]);
    assert_eq!(take_chunk_size(&mut b).unwrap(), Some(26));
    assert_eq!(&b[..], b"rest");
    let mut partial = BytesMut::from(&b"1a"[..]);
    assert_eq!(take_chunk_size(&mut partial).unwrap(), None);
    assert!(take_chunk_size(&mut BytesMut::from(&b"zz\r\n"[..])).is_err());
}
