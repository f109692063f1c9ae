//! HTTP/1.1 on the wire, as raw bytes: the gateway's own request loop serves the common
//! request; everything it hands to hyper (bodies, HTTP/1.0, malformed heads) must keep
//! working on the same connection.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::checksum;
use crate::support::*;

/// A raw client connection that reads responses off the wire.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl Wire {
    async fn connect(gw: &GatewayProc) -> Wire {
        let url = gw.url("");
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        Wire {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut chunk))
            .await
            .expect("the gateway answers within 20 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response; `head_only` for answers to HEAD.
    async fn response(&mut self, head_only: bool) -> Answer {
        let head_len = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        let head = String::from_utf8(self.buf[..head_len].to_vec()).unwrap();
        self.buf.drain(..head_len);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1."), "{status_line}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return answer;
        }
        if let Some(len) = answer.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "connection closed mid-body");
            }
            answer.body = self.buf.drain(..len).collect();
        } else if answer.header("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.fill().await, "connection closed mid-chunk");
                };
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    assert!(self.fill().await, "connection closed mid-chunk");
                }
                answer.body.extend(self.buf.drain(..size));
                assert_eq!(self.buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
                if size == 0 {
                    break;
                }
            }
        } else {
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buf);
        }
        answer
    }

    /// True once the gateway has closed the connection (within `limit`).
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut byte))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => panic!("unexpected byte from an idle connection"),
                Err(_) => {}
            }
        }
        false
    }
}

async fn echo_gateway(extra: &str) -> (Backend, GatewayProc) {
    let backend = Backend::echo("a").await;
    let gw = GatewayProc::start(&yaml(&format!(
        "{extra}upstreams:\n  a: {{ backends: [{}] }}\nroutes:\n  - {{ path: /, upstream: a }}\n",
        backend.url()
    )));
    (backend, gw)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (_backend, gw) = echo_gateway("").await;
    let mut wire = Wire::connect(&gw).await;
    wire.send(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    for (path, query) in [("/one", None), ("/two", None), ("/three", Some("q=1"))] {
        let answer = wire.response(false).await;
        assert_eq!(answer.status, 200);
        let echo = answer.json();
        assert_eq!(echo["path"], path);
        assert_eq!(echo["query"].as_str(), query);
        assert!(answer.header("date").is_some(), "responses carry Date");
        assert!(answer.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn bodies_http10_and_plain_requests_share_a_connection() {
    let (_backend, gw) = echo_gateway("").await;
    let mut wire = Wire::connect(&gw).await;
    wire.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(wire.response(false).await.json()["path"], "/first");

    // A request with a body: served by hyper from here on, same connection.
    wire.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let answer = wire.response(false).await;
    assert_eq!(answer.status, 200);
    let echo = answer.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["body_sum"], checksum(b"hello"));

    // Chunked upload, then a plain GET again.
    wire.send(b"PUT /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        .await;
    let echo = wire.response(false).await.json();
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["body_sum"], checksum(b"abcde"));
    wire.send(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(wire.response(false).await.json()["path"], "/last");

    // HTTP/1.0 on a fresh connection.
    let mut old = Wire::connect(&gw).await;
    old.send(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let answer = old.response(false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["path"], "/old");
}

#[tokio::test]
async fn connection_close_and_malformed_heads_end_the_connection() {
    let (backend, gw) = echo_gateway("").await;
    let mut wire = Wire::connect(&gw).await;
    wire.send(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let answer = wire.response(false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(wire.closed_within(Duration::from_secs(10)).await);

    let hits = backend.hits();
    let mut bad = Wire::connect(&gw).await;
    bad.send(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n").await;
    let answer = bad.response(false).await;
    assert_eq!(answer.status, 400);
    assert!(bad.closed_within(Duration::from_secs(10)).await);
    assert_eq!(
        backend.hits(),
        hits,
        "a malformed request never reaches the backend"
    );
}

#[tokio::test]
async fn head_answers_carry_the_length_but_no_body() {
    let (_backend, gw) = echo_gateway("").await;
    let mut wire = Wire::connect(&gw).await;
    wire.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let head = wire.response(true).await;
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some());
    // Had the HEAD answer carried a body, this would read it as the next response.
    let after = wire.response(false).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["path"], "/after");
}

#[tokio::test]
async fn idle_connections_close_after_the_keepalive_timeout() {
    let (_backend, gw) = echo_gateway("proxy:\n  keepalive_timeout: 1s\n").await;
    let mut wire = Wire::connect(&gw).await;
    wire.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(wire.response(false).await.status, 200);
    // Still open right after a response...
    wire.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(wire.response(false).await.status, 200);
    // ...and closed once idle past the timeout.
    assert!(wire.closed_within(Duration::from_secs(15)).await);

    // A head that never completes is cut off too.
    let mut slow = Wire::connect(&gw).await;
    slow.send(b"GET /slow HTTP/1.1\r\nHost:").await;
    assert!(slow.closed_within(Duration::from_secs(15)).await);
}

/// SIGTERM closes a keep-alive connection waiting for its next request at once, also after
/// it has served several: the gateway exits long before its shutdown timeout.
#[tokio::test]
async fn shutdown_closes_idle_connections_at_once() {
    let (_backend, mut gw) =
        echo_gateway("proxy:\n  keepalive_timeout: 120s\n  shutdown_timeout: 120s\n").await;
    let mut wire = Wire::connect(&gw).await;
    for path in ["/a", "/b", "/c"] {
        wire.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        assert_eq!(wire.response(false).await.status, 200);
    }
    gw.sigterm();
    assert!(wire.closed_within(Duration::from_secs(15)).await);
    let status = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_is_logged_as_499() {
    let (backend, gw) = echo_gateway("").await;
    backend.set_delay(Duration::from_millis(1500));
    let mut wire = Wire::connect(&gw).await;
    wire.send(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n").await;
    eventually(
        Duration::from_secs(10),
        "the request reaches the backend",
        || {
            let hits = backend.hits();
            async move { hits == 1 }
        },
    )
    .await;
    drop(wire);
    let line = wait_for(Duration::from_secs(10), "an access log line", || {
        let found = gw
            .access_logs()
            .into_iter()
            .find(|l| l["route"] == "/" && l["status"] == 499);
        async move { found }
    })
    .await;
    assert_eq!(line["completed"], false);
}
