//! The HTTP/1.1 loop that serves the common request straight off the socket: HTTP/1.1, a
//! well-formed head, no body. It parses with httparse, calls the request path, and writes
//! the response head and (small) body in one write, skipping hyper's generic connection
//! machinery, which was the largest share of the gateway's own CPU time per request
//! (docs/benchmarks.md).
//!
//! Everything else — a request body, HTTP/1.0, `Expect`, upgrades, CONNECT, h2c prior
//! knowledge, a malformed or oversized head — ends the loop with [`End::HandOff`]: the
//! caller gives the connection, with the bytes read so far, to hyper for the rest of its
//! life, so those cases keep hyper's behaviour exactly.
//!
//! Like hyper's server it closes idle connections after the keep-alive timeout, answers
//! `Connection: close` by closing after the response, drops the request (logged as 499)
//! when the client closes its side while the response is pending, and on shutdown closes
//! idle connections at once and the others after their current response.

use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::RequestBody;
use crate::clock::CoarseClock;
use crate::gateway::Gateway;
use crate::middleware::request_id::RequestId;
use crate::middleware::{self, ClientInfo};
use crate::proxy::headers::{
    Fields, X_REQUEST_ID, client_ip, contains_token, parse_length, push_field,
};

/// Longest request head served here; longer ones go to hyper, which has its own limit.
const MAX_HEAD: usize = 64 * 1024;
/// Most request headers served here; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Read buffer reserved per read.
const READ_CHUNK: usize = 8 * 1024;
/// Body frames up to this size are copied next to the head (or the previous frame); larger
/// ones are written from where they are.
const COALESCE: usize = 4 * 1024;
/// A streamed body goes out at least every this many bytes...
const MAX_BATCH: usize = 256 * 1024;
/// ...and in at most this many pieces per write (Linux allows 1024).
const MAX_IOVECS: usize = 64;

/// What every connection shares.
pub struct Shared {
    pub gw: Arc<Gateway>,
    /// How long a connection may wait for the next request head.
    pub keepalive: Duration,
    /// Cancelled when the gateway shuts down.
    pub stop: CancellationToken,
    /// The same, as one atomic load per request (the token's check takes a lock).
    pub stopping: AtomicBool,
}

/// How the loop ended.
pub enum End {
    /// The connection is done (closed by either side, timed out, or broken).
    Closed,
    /// The next request is not one this loop serves: hyper takes over, reading `prefix`
    /// (the bytes already read from the socket) first.
    HandOff { stream: TcpStream, prefix: Bytes },
}

/// Serves requests on `stream` until the connection ends or needs hyper.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) -> End {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(1024);
    let mut fields = Vec::with_capacity(16);
    // One timer per connection, re-armed only when it fires: each request just notes
    // (on the coarse clock) when the wait for the next one began.
    let keepalive_ms = shared.keepalive.as_millis() as u64;
    let mut waiting_since = shared.gw.clock.now_ms();
    let idle = tokio::time::sleep(shared.keepalive);
    tokio::pin!(idle);
    // The client as the request path sees it, made once: only the IP can change per
    // request (a trusted proxy's `X-Forwarded-For`).
    let mut client = ClientInfo {
        peer,
        ip: peer.ip(),
        peer_text: crate::proxy::headers::peer_text(peer),
    };
    // Shutdown closes idle connections at once. The token's future is polled once, to
    // register this task's waker (a task's waker is the same for its whole life); after
    // that a wake-up is read from `stopping`, which is set before the token is cancelled.
    // Polled on every wait for a request, it took four atomic read-modify-writes per
    // request (a lock to check the token, another to re-register).
    let stopped = shared.stop.cancelled();
    tokio::pin!(stopped);
    let mut registered = false;

    loop {
        let head = match parse(&mut buf, &mut fields) {
            Parsed::Request(head) => head,
            Parsed::HandOff => {
                return End::HandOff {
                    stream,
                    prefix: buf.freeze(),
                };
            }
            Parsed::Partial if buf.len() >= MAX_HEAD => {
                return End::HandOff {
                    stream,
                    prefix: buf.freeze(),
                };
            }
            Parsed::Partial => {
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    buf.reserve(READ_CHUNK);
                }
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return End::Closed,
                        Ok(_) => continue,
                    },
                    () = &mut idle => {
                        let waited = shared.gw.clock.now_ms().saturating_sub(waiting_since);
                        if waited >= keepalive_ms {
                            return End::Closed;
                        }
                        let left = Duration::from_millis(keepalive_ms - waited);
                        idle.as_mut().reset(tokio::time::Instant::now() + left);
                        continue;
                    }
                    () = std::future::poll_fn(|cx| {
                        if shared.stopping.load(Ordering::Acquire) {
                            return Poll::Ready(());
                        }
                        if registered {
                            return Poll::Pending;
                        }
                        registered = true;
                        stopped.as_mut().poll(cx)
                    }), if buf.is_empty() => return End::Closed,
                }
            }
        };

        let Head {
            req,
            head_only,
            close,
        } = head;
        client.ip = client_ip(peer, req.headers(), &shared.gw.trusted_proxies);
        // Pinned where it is made: a move of the request's future (~1.6 KB) is a copy.
        let mut pending = std::pin::pin!(middleware::handle(&shared.gw, &client, req));
        // While the response is pending, watch the client: end of stream means it went
        // away (the request is dropped, as hyper does); other bytes are a pipelined
        // request, kept for later.
        let mut watch = true;
        let mut res = loop {
            tokio::select! {
                biased;
                res = &mut pending => break res,
                ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx)), if watch => {
                    if ready.is_err() {
                        return End::Closed;
                    }
                    buf.reserve(READ_CHUNK);
                    match stream.try_read_buf(&mut buf) {
                        Ok(0) => return End::Closed,
                        Ok(_) => watch = buf.len() < MAX_HEAD,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return End::Closed,
                    }
                }
            }
        };
        let close = close || shared.stopping.load(Ordering::Relaxed);
        let fields = res.body_mut().take_fields();
        let id = res.body_mut().take_request_id();
        match write_response(
            &mut stream,
            &mut out,
            res,
            Extra {
                fields: &fields,
                request_id: id.as_ref().map(RequestId::as_bytes),
            },
            head_only,
            close,
            &shared.gw.clock,
        )
        .await
        {
            Ok(true) => waiting_since = shared.gw.clock.now_ms(),
            Ok(false) | Err(_) => return End::Closed,
        }
    }
}

/// A request this loop serves.
struct Head {
    req: Request<RequestBody>,
    head_only: bool,
    /// The client asked to close the connection after this response.
    close: bool,
}

// Returned once per request and unpacked at once: boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Head),
    Partial,
    HandOff,
}

/// Parses one request head off the front of `buf`. `fields` is scratch space kept per
/// connection. On [`Parsed::HandOff`], `buf` still holds every byte read.
fn parse(buf: &mut BytesMut, fields: &mut Vec<(HeaderName, Range<usize>)>) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    fields.clear();
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = (s.as_ptr() as usize).wrapping_sub(base);
        start..start.saturating_add(s.len())
    };
    let mut close = false;
    let (len, method, path) = {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::HandOff,
        };
        let (Some(1), Some(method), Some(path)) = (req.version, req.method, req.path) else {
            return Parsed::HandOff;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::HandOff;
        };
        if method == Method::CONNECT {
            return Parsed::HandOff;
        }
        for h in req.headers.iter() {
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                return Parsed::HandOff;
            };
            let value = h.value;
            if name == header::CONTENT_LENGTH {
                if value.trim_ascii() != b"0" {
                    return Parsed::HandOff;
                }
            } else if name == header::TRANSFER_ENCODING
                || name == header::UPGRADE
                || name == header::EXPECT
            {
                return Parsed::HandOff;
            } else if name == header::CONNECTION {
                if contains_token(value, b"upgrade") {
                    return Parsed::HandOff;
                }
                close |= contains_token(value, b"close");
            }
            // httparse admits in a value exactly the bytes a HeaderValue does (checked
            // again below).
            fields.push((name, at(value)));
        }
        (len, method, at(path.as_bytes()))
    };
    // httparse hands out slices of the head; checked anyway, so a surprise is a hand-off,
    // never a panic on client input.
    if path.end > len || fields.iter().any(|(_, r)| r.end > len) {
        return Parsed::HandOff;
    }

    let head = buf.split_to(len).freeze();
    // Puts the head back in front of what follows, for hyper to answer.
    let hand_back = |buf: &mut BytesMut| {
        let mut whole = BytesMut::with_capacity(head.len() + buf.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(buf);
        *buf = whole;
        Parsed::HandOff
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path)) else {
        return hand_back(buf);
    };
    let head_only = method == Method::HEAD;
    let mut req = Request::new(RequestBody::bytes(Bytes::new()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    headers.reserve(fields.len());
    for (name, range) in fields.drain(..) {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(range)) else {
            return hand_back(buf);
        };
        headers.append(name, value);
    }
    Parsed::Request(Head {
        req,
        head_only,
        close,
    })
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What the response head carries besides its header map (see
/// [`middleware::fill_header_map`]).
struct Extra<'a> {
    /// The backend's fields, less those the map replaces.
    fields: &'a Fields,
    /// `X-Request-ID`, replacing any other.
    request_id: Option<&'a [u8]>,
}

/// Writes the response, its header map followed by the `extra` fields; returns whether
/// the connection may serve another request.
async fn write_response<B>(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    res: Response<B>,
    extra: Extra<'_>,
    head_only: bool,
    close: bool,
    clock: &CoarseClock,
) -> io::Result<bool>
where
    B: http_body::Body<Data = Bytes, Error = io::Error> + Unpin,
{
    let (parts, mut body) = res.into_parts();
    let status = parts.status;
    let bodyless = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut close = close;
    let mut declared = None;
    let mut has_date = false;

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            close |= contains_token(value.as_bytes(), b"close");
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH && !bodyless {
            declared = parse_length(value.as_bytes());
            continue;
        }
        if name == X_REQUEST_ID && extra.request_id.is_some() {
            continue;
        }
        has_date |= name == header::DATE;
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(id) = extra.request_id {
        push_field(out, X_REQUEST_ID.as_str().as_bytes(), id);
    }
    // The backend's fields, spelled as it sent them: hop-by-hop ones are already left out.
    for field in extra.fields.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case(b"content-length") && !bodyless {
            declared = parse_length(field.value);
            continue;
        }
        let replaced = (extra.request_id.is_some() && name.eq_ignore_ascii_case(b"x-request-id"))
            || parts
                .headers
                .keys()
                .any(|set| set.as_str().as_bytes().eq_ignore_ascii_case(name));
        if replaced {
            continue;
        }
        has_date |= name.eq_ignore_ascii_case(b"date");
        out.extend_from_slice(field.line);
    }
    let framing = if bodyless {
        Framing::None
    } else {
        match body.size_hint().exact().or(declared) {
            Some(n) => {
                let mut digits = itoa::Buffer::new();
                push_field(out, b"content-length", digits.format(n).as_bytes());
                Framing::Length(n)
            }
            None => {
                push_field(out, b"transfer-encoding", b"chunked");
                Framing::Chunked
            }
        }
    };
    if !has_date {
        clock.push_date(out);
    }
    if close {
        push_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");

    if framing == Framing::None {
        // Dropping the body reports the request (complete when it had nothing to send).
        drop(body);
        stream.write_all(out).await?;
        return Ok(!close);
    }

    // Frames go out in batches: whatever the body has ready is gathered (small frames
    // copied after the head, larger ones queued where they are) and sent with one
    // vectored write when the body has nothing more for the moment, so a streamed body
    // costs a write per batch, not per frame.
    let chunked = framing == Framing::Chunked;
    let mut queued: Vec<(usize, Bytes)> = Vec::new();
    let mut queued_bytes = 0;
    let mut sent: u64 = 0;
    loop {
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(None) => break,
            Poll::Ready(Some(frame)) => frame?,
            Poll::Pending => {
                flush(stream, out, &mut queued).await?;
                queued_bytes = 0;
                match body.frame().await {
                    None => break,
                    Some(frame) => frame?,
                }
            }
        };
        let Ok(data) = frame.into_data() else {
            // Trailers are dropped.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Framing::Length(n) = framing
            && sent > n
        {
            return Err(io::Error::other("response body longer than its length"));
        }
        if chunked {
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            queued_bytes += data.len();
            queued.push((out.len(), data));
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if body.is_end_stream() {
            break;
        }
        if queued_bytes + out.len() >= MAX_BATCH || queued.len() >= MAX_IOVECS / 2 {
            flush(stream, out, &mut queued).await?;
            queued_bytes = 0;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    flush(stream, out, &mut queued).await?;
    match framing {
        // A body that ended short leaves the client waiting for the rest: close.
        Framing::Length(n) => Ok(!close && sent == n),
        _ => Ok(!close),
    }
}

/// Writes `out` with the `queued` frames in their places (each frame goes before the byte
/// of `out` at its offset), then empties both.
async fn flush(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    queued: &mut Vec<(usize, Bytes)>,
) -> io::Result<()> {
    if queued.is_empty() {
        // The common case (a small response): one buffer, no piece list to build.
        if !out.is_empty() {
            stream.write_all(out).await?;
            out.clear();
        }
        return Ok(());
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * queued.len() + 1);
    let mut at = 0;
    for (offset, data) in queued.iter() {
        parts.push(&out[at..*offset]);
        parts.push(data);
        at = *offset;
    }
    parts.push(&out[at..]);
    write_all_parts(stream, &mut parts).await?;
    out.clear();
    queued.clear();
    Ok(())
}

/// Writes all of `parts`, in as few system calls as the socket allows.
async fn write_all_parts(stream: &mut TcpStream, parts: &mut [&[u8]]) -> io::Result<()> {
    let mut first = 0;
    loop {
        while parts.get(first).is_some_and(|p| p.is_empty()) {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        let slices: Vec<IoSlice<'_>> = parts[first..]
            .iter()
            .filter(|p| !p.is_empty())
            .take(MAX_IOVECS)
            .map(|p| IoSlice::new(p))
            .collect();
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for part in parts[first..].iter_mut() {
            let take = n.min(part.len());
            *part = &part[take..];
            n -= take;
            if n == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
