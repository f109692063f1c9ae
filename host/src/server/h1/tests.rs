use super::*;
use crate::body::Body;
use http_body::Body as _;
use tokio::net::TcpListener;

fn parsed(bytes: &[u8]) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let mut fields = Vec::new();
    (parse(&mut buf, &mut fields), buf)
}

#[test]
fn parses_a_plain_request_and_leaves_the_next_one() {
    let (p, rest) = parsed(
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: example\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 0\r\n\r\nGET /next",
    );
    let Parsed::Request(head) = p else {
        panic!("not parsed")
    };
    assert_eq!(head.req.method(), Method::GET);
    assert_eq!(head.req.uri().path(), "/a/b");
    assert_eq!(head.req.uri().query(), Some("x=1"));
    assert_eq!(head.req.version(), Version::HTTP_11);
    assert_eq!(head.req.headers()["host"], "example");
    let twos: Vec<_> = head.req.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["1", "2"]);
    assert!(head.req.body().is_end_stream());
    assert!(!head.head_only && !head.close);
    assert_eq!(&rest[..], b"GET /next");
}

#[test]
fn head_and_close_are_noted() {
    let (p, _) = parsed(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
    let Parsed::Request(head) = p else {
        panic!("not parsed")
    };
    assert!(head.head_only);
    assert!(head.close);
}

#[test]
fn an_incomplete_head_waits_for_more() {
    let (p, rest) = parsed(b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(matches!(p, Parsed::Partial));
    assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost: x\r\n");
}

#[test]
fn everything_else_goes_to_hyper_with_every_byte() {
    let cases: [&[u8]; 11] = [
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        b"CONNECT example:443 HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /<bad> HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        // Control bytes in a header value.
        b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
    ];
    for case in cases {
        let (p, rest) = parsed(case);
        assert!(
            matches!(p, Parsed::HandOff),
            "{:?} is handed off",
            String::from_utf8_lossy(case)
        );
        assert_eq!(&rest[..], case, "hyper gets every byte");
    }
}

#[test]
fn too_many_headers_go_to_hyper() {
    let mut req = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        req.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    assert!(matches!(parsed(&req).0, Parsed::HandOff));
}

const NO_EXTRA: Extra<'static> = Extra {
    fields: &Fields::new(),
    request_id: None,
};

/// Writes `res` through a real socket and returns what the client read, and whether the
/// connection may be kept.
async fn written_bytes<B>(
    res: Response<B>,
    extra: Extra<'_>,
    head_only: bool,
    close: bool,
) -> (Vec<u8>, bool)
where
    B: http_body::Body<Data = Bytes, Error = io::Error> + Unpin,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        got
    });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut out = Vec::new();
    let clock = CoarseClock::new();
    let keep = write_response(&mut stream, &mut out, res, extra, head_only, close, &clock)
        .await
        .unwrap();
    drop(stream);
    (client.await.unwrap(), keep)
}

async fn written(res: Response<Body>, head_only: bool, close: bool) -> (String, bool) {
    let (wire, keep) = written_bytes(res, NO_EXTRA, head_only, close).await;
    (String::from_utf8(wire).unwrap(), keep)
}

#[tokio::test]
async fn a_small_body_goes_out_with_its_length() {
    let mut res = Response::new(Body::full("hello"));
    res.headers_mut()
        .insert("x-thing", HeaderValue::from_static("1"));
    let (wire, keep) = written(res, false, false).await;
    assert!(wire.starts_with("HTTP/1.1 200 OK\r\n"), "{wire}");
    assert!(wire.contains("\r\nx-thing: 1\r\n"));
    assert!(wire.contains("\r\ncontent-length: 5\r\n"));
    assert!(wire.contains("\r\ndate: "));
    assert!(!wire.contains("connection:"));
    assert!(wire.ends_with("\r\n\r\nhello"));
    assert!(keep);
}

#[tokio::test]
async fn a_backends_fields_follow_the_map_and_the_request_id_which_replace_them() {
    let mut fields = Fields::default();
    fields.push(b"Content-Type", b"text/plain");
    fields.push(b"X-Request-ID", b"from-the-backend");
    fields.push(b"Set-Cookie", b"a=1");
    fields.push(b"Set-Cookie", b"b=2");
    fields.push(b"Date", b"then");
    fields.push(b"Content-Length", b"5");
    // An unknown length: the backend's Content-Length frames the body.
    let frames = vec![Ok::<_, io::Error>(http_body::Frame::data(
        Bytes::from_static(b"hello"),
    ))];
    let mut res = Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/html"));
    let extra = Extra {
        fields: &fields,
        request_id: Some(b"gateway"),
    };
    let (wire, keep) = written_bytes(res, extra, false, false).await;
    let wire = String::from_utf8(wire).unwrap();
    assert!(wire.contains("\r\ncontent-type: text/html\r\n"), "{wire}");
    assert!(
        !wire.contains("text/plain"),
        "the map's field replaces the backend's: {wire}"
    );
    assert!(
        wire.contains("\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"),
        "{wire}"
    );
    assert!(wire.contains("\r\nx-request-id: gateway\r\n"), "{wire}");
    assert!(!wire.contains("from-the-backend"), "{wire}");
    assert_eq!(
        wire.to_ascii_lowercase().matches("date:").count(),
        1,
        "{wire}"
    );
    assert!(wire.contains("\r\ncontent-length: 5\r\n"), "{wire}");
    assert!(!wire.contains("Content-Length"), "{wire}");
    assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
    assert!(keep);
}

#[tokio::test]
async fn head_keeps_the_length_header_and_sends_no_body() {
    let mut res = Response::new(Body::Empty);
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1234"));
    res.headers_mut()
        .insert(header::DATE, HeaderValue::from_static("then"));
    let (wire, keep) = written(res, true, false).await;
    assert!(wire.contains("\r\ncontent-length: 1234\r\n"));
    assert_eq!(wire.matches("date:").count(), 1, "{wire}");
    assert!(wire.ends_with("\r\n\r\n"));
    assert!(keep);
}

#[tokio::test]
async fn no_content_has_no_body_and_close_is_announced() {
    let mut res = Response::new(Body::Empty);
    *res.status_mut() = StatusCode::NO_CONTENT;
    let (wire, keep) = written(res, false, true).await;
    assert!(wire.starts_with("HTTP/1.1 204 No Content\r\n"));
    assert!(!wire.contains("content-length"));
    assert!(wire.contains("\r\nconnection: close\r\n"));
    assert!(!keep);
}

#[tokio::test]
async fn a_response_asking_to_close_closes() {
    let mut res = Response::new(Body::full("x"));
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let (wire, keep) = written(res, false, false).await;
    assert_eq!(wire.matches("connection: close").count(), 1);
    assert!(!keep);
}

#[tokio::test]
async fn an_unknown_length_is_chunked_and_large_frames_pass_whole() {
    // A body of unknown length: two frames, one larger than the coalescing size.
    let big = vec![b'z'; COALESCE + 10];
    let frames = vec![
        Ok::<_, io::Error>(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(http_body::Frame::data(Bytes::from(big.clone()))),
    ];
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let (wire, keep) = written_bytes(Response::new(stream), NO_EXTRA, false, false).await;
    let text = String::from_utf8_lossy(&wire);
    assert!(text.contains("\r\ntransfer-encoding: chunked\r\n"));
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    let mut expected = b"3\r\nabc\r\n".to_vec();
    expected.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    expected.extend_from_slice(&big);
    expected.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(&wire[body_at..], &expected[..]);
    assert!(keep);
}
