//! The HTTP/1.1 client that talks to backends, with a keep-alive pool per backend.
//!
//! Unlike hyper's pooled client, which drives each connection in a task of its own and
//! talks to it through channels, this client does the whole exchange inside the request's
//! own task, and the response body reads straight from the backend's socket when the
//! server polls it. That saves several task hand-offs per request — about a quarter of the
//! gateway's CPU time per proxied request (measured in docs/benchmarks.md).
//!
//! It speaks HTTP/1.1 with keep-alive: request bodies are streamed (with their
//! `Content-Length`, or chunked), responses are framed per RFC 9112 §6 (no body for HEAD,
//! 1xx, 204 and 304; chunked; `Content-Length`; or until the backend closes), interim 1xx
//! responses are skipped, and a connection goes back to the pool only once its response
//! has been read to the end. A request without a body that fails on a reused connection
//! before any response byte arrived (the backend closed it while idle) is retried once on
//! a new connection.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::clock::CoarseClock;
use crate::proxy::headers::{
    Fields, Forwarding, connection_names, contains_token, is_hop_by_hop, parse_length, push_field,
};

/// Largest response head accepted from a backend.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted from a backend.
const MAX_HEADERS: usize = 128;
/// Read buffer reserved per read.
const READ_CHUNK: usize = 16 * 1024;
/// Read buffer reserved per read while a large body streams.
const BODY_CHUNK: usize = 64 * 1024;

/// Why a backend exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("no response within the request timeout")]
    Timeout,
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("the backend closed the connection before answering")]
    Closed,
    #[error("invalid response from the backend: {0}")]
    Protocol(String),
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
}

impl ClientError {
    /// True when the backend took too long to accept the connection or to answer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::ConnectTimeout | ClientError::Timeout)
    }
}

/// Idle keep-alive connections to one backend.
pub struct Pool {
    host: String,
    port: u16,
    /// Each with the coarse clock's milliseconds when it went idle.
    idle: Mutex<Vec<(Box<Conn>, u64)>>,
    max_idle: usize,
    idle_timeout_ms: u64,
    clock: Arc<CoarseClock>,
}

/// A connection, the bytes read from it but not used yet, and what it keeps between
/// requests so that a request allocates nothing for them: the buffer its request heads are
/// written into, and its deadline timer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    head: Vec<u8>,
    timer: Option<Timer>,
}

/// A request deadline. Kept with its connection and moved to each new deadline, which
/// tokio does with one atomic operation while the deadline only moves later, instead of
/// registering and removing a timer for every request.
type Timer = Pin<Box<tokio::time::Sleep>>;

// === impl Pool ===

impl Pool {
    pub fn new(
        host: &str,
        port: u16,
        max_idle: usize,
        idle_timeout: Duration,
        clock: Arc<CoarseClock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout_ms: idle_timeout.as_millis() as u64,
            clock,
        })
    }

    /// Idle connections right now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Box<Conn>, u64)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live idle connection, if there is one.
    fn checkout(&self) -> Option<Box<Conn>> {
        let now = self.clock.now_ms();
        let mut idle = self.lock();
        while let Some((mut conn, since)) = idle.pop() {
            if now.saturating_sub(since) < self.idle_timeout_ms && conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Box<Conn>) {
        if !conn.buf.is_empty() {
            return; // bytes after the response: the connection is out of step, drop it
        }
        let now = self.clock.now_ms();
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push((conn, now));
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<Box<Conn>, ClientError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::ConnectTimeout)?
            .map_err(ClientError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            head: Vec::with_capacity(512),
            timer: None,
        }))
    }

    /// Sends `req` (its URI's path and query; its header fields as `forwarding` edits
    /// them) and returns the response once its head has arrived, or
    /// [`ClientError::Timeout`] if that takes until `deadline`. The body streams from the
    /// socket; the response's header fields travel with it ([`UpstreamBody::fields`]).
    pub async fn send(
        self: &Arc<Self>,
        req: &mut Request<RequestBody>,
        forwarding: &Forwarding<'_>,
        connect_timeout: Duration,
        deadline: Instant,
    ) -> Result<Response<UpstreamBody>, ClientError> {
        let mut idle = self.checkout();
        let deadline = tokio::time::Instant::from_std(deadline);
        // The connection's timer is moved only when it would fire too late. Firing early
        // (at an earlier request's deadline) it is moved then: resetting it for every
        // request took three atomic operations.
        let mut timer = match idle.as_mut().and_then(|c| c.timer.take()) {
            Some(mut timer) => {
                if timer.deadline() > deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let send = self.send_on(idle, req, forwarding, connect_timeout);
        tokio::pin!(send);
        let sent = loop {
            tokio::select! {
                biased;
                sent = &mut send => break sent,
                () = timer.as_mut() => {
                    if tokio::time::Instant::now() >= deadline {
                        break Err(ClientError::Timeout);
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        };
        sent.map(|mut res| {
            let body = res.body_mut();
            if let Some(conn) = &mut body.conn {
                conn.timer = Some(timer);
            }
            body.finish_if_done();
            res
        })
    }

    /// [`send`](Self::send) on `idle` if there is one, else on a new connection.
    async fn send_on(
        self: &Arc<Self>,
        idle: Option<Box<Conn>>,
        req: &mut Request<RequestBody>,
        forwarding: &Forwarding<'_>,
        connect_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ClientError> {
        if req.body().is_end_stream() {
            if let Some(conn) = idle {
                match self.exchange(conn, req, forwarding).await {
                    Ok(res) => return Ok(res),
                    // The backend closed the idle connection: once more on a new one.
                    Err(Attempt::Retryable(_)) => {}
                    Err(Attempt::Failed(e)) => return Err(e),
                }
            }
            let conn = self.connect(connect_timeout).await?;
            return self
                .exchange(conn, req, forwarding)
                .await
                .map_err(Attempt::into_error);
        }
        // A body cannot be replayed: no retry, but only live-looking pooled connections.
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect(connect_timeout).await?,
        };
        self.exchange(conn, req, forwarding)
            .await
            .map_err(Attempt::into_error)
    }

    async fn exchange(
        self: &Arc<Self>,
        mut conn: Box<Conn>,
        req: &mut Request<RequestBody>,
        forwarding: &Forwarding<'_>,
    ) -> Result<Response<UpstreamBody>, Attempt> {
        let head_only = req.method() == Method::HEAD;
        let has_body = !req.body().is_end_stream();
        let length = req.body().size_hint().exact();
        let chunked = encode_head(&mut conn.head, req, forwarding, length, has_body);
        let written = async {
            conn.stream.write_all(&conn.head).await?;
            if has_body {
                write_body(&mut conn.stream, req.body_mut(), chunked).await?;
            }
            Ok::<(), ClientError>(())
        }
        .await;
        if let Err(e) = written {
            return Err(match e {
                ClientError::Io(_) => Attempt::Retryable(e),
                other => Attempt::Failed(other),
            });
        }
        let head = match read_head(&mut conn, head_only).await {
            Ok(head) => head,
            Err((e, nothing_read)) => {
                return Err(if nothing_read {
                    Attempt::Retryable(e)
                } else {
                    Attempt::Failed(e)
                });
            }
        };
        let (state, size) = match head.framing {
            Framing::Empty | Framing::Length(0) => (State::Done, Some(0)),
            Framing::Length(n) => (State::Length(n), Some(n)),
            Framing::Chunked => (State::ChunkSize, None),
            Framing::UntilClose => (State::UntilClose, None),
        };
        // Not checked in yet when already complete: `send` first gives it back its timer.
        let body = UpstreamBody {
            reusable: head.keep_alive && !matches!(state, State::UntilClose),
            conn: Some(conn),
            state,
            pool: self.clone(),
            size,
            fields: head.fields,
        };
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        Ok(response)
    }
}

enum Attempt {
    /// Failed before any byte of a response arrived, on a connection that may have been
    /// closed while idle.
    Retryable(ClientError),
    Failed(ClientError),
}

impl Attempt {
    fn into_error(self) -> ClientError {
        match self {
            Attempt::Retryable(e) | Attempt::Failed(e) => e,
        }
    }
}

// === requests ===

/// Writes the request line and header fields into `out` (the fields as `forwarding`
/// has them); returns whether the body goes chunked (a body of unknown length).
fn encode_head<B>(
    out: &mut Vec<u8>,
    req: &Request<B>,
    forwarding: &Forwarding<'_>,
    length: Option<u64>,
    has_body: bool,
) -> bool {
    let (method, uri) = (req.method(), req.uri());
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let chunked = has_body && length.is_none();
    forwarding.write_fields(req.headers(), uri, chunked, out);
    if has_body {
        match length {
            Some(n) if !req.headers().contains_key(CONTENT_LENGTH) => {
                push_field(
                    out,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
            }
            Some(_) => {}
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

async fn write_body(
    stream: &mut TcpStream,
    body: &mut RequestBody,
    chunked: bool,
) -> Result<(), ClientError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::RequestBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        }; // trailers are dropped
        if data.is_empty() {
            continue;
        }
        if chunked {
            stream
                .write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .await?;
            stream.write_all(&data).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(&data).await?;
        }
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

// === responses ===

enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A backend's response head.
struct Head {
    status: StatusCode,
    fields: Fields,
    framing: Framing,
    keep_alive: bool,
}

/// Reads the response head (skipping interim 1xx responses). The error carries whether
/// nothing at all had been read (the connection was dead before the backend answered).
async fn read_head(conn: &mut Conn, head_only: bool) -> Result<Head, (ClientError, bool)> {
    let mut got_any = false;
    loop {
        let parsed = {
            let mut slots =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut res, &conn.buf, &mut slots)
            {
                Ok(httparse::Status::Complete(len)) => Some(scan_head(&res, len)),
                Ok(httparse::Status::Partial) => None,
                Err(e) => return Err((ClientError::Protocol(e.to_string()), false)),
            }
        };
        match parsed {
            Some(Ok(parsed)) => {
                conn.buf.advance(parsed.len);
                let status = StatusCode::from_u16(parsed.status)
                    .map_err(|_| (ClientError::Protocol("invalid status code".into()), false))?;
                if status.is_informational() {
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err((
                            ClientError::Protocol("protocol upgrades are not supported".into()),
                            false,
                        ));
                    }
                    continue;
                }
                let framing = framing(status, head_only, parsed.body).map_err(|e| (e, false))?;
                return Ok(Head {
                    status,
                    fields: parsed.fields,
                    framing,
                    keep_alive: parsed.keep_alive,
                });
            }
            Some(Err(e)) => return Err((e, false)),
            None => {}
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err((
                ClientError::Protocol("response head too large".into()),
                false,
            ));
        }
        conn.buf.reserve(READ_CHUNK);
        let n = std::future::poll_fn(|cx| {
            tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)
        })
        .await
        .map_err(|e| (ClientError::Io(e), !got_any))?;
        if n == 0 {
            let nothing = !got_any && conn.buf.is_empty();
            return Err((ClientError::Closed, nothing));
        }
        got_any = true;
    }
}

/// A parsed response head.
struct Parsed {
    /// Its length in bytes.
    len: usize,
    status: u16,
    /// Whether the connection may be kept alive.
    keep_alive: bool,
    /// What its headers say of the body's length.
    body: BodyHeaders,
    /// The fields that go on to the client.
    fields: Fields,
}

/// The headers that delimit a body (RFC 9112 §6.3), noted as the head is parsed.
#[derive(Default)]
struct BodyHeaders {
    /// `Transfer-Encoding` was sent: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// `Content-Length`, if sent (every copy the same).
    length: Option<u64>,
    /// A `Content-Length` that is not a number, or copies that disagree.
    bad_length: Option<&'static str>,
}

impl BodyHeaders {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last line's last coding decides.
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match parse_length(value) {
                None => {
                    self.bad_length.get_or_insert("invalid content-length");
                }
                Some(n) if self.length.is_some_and(|l| l != n) => {
                    self.bad_length.get_or_insert("conflicting content-length");
                }
                Some(n) => self.length = Some(n),
            }
        }
    }
}

/// Reads what the head says of the connection and the body, and copies the fields that
/// go on to the client: all but the hop-by-hop ones, and those `Connection` names.
fn scan_head(res: &httparse::Response<'_, '_>, len: usize) -> Result<Parsed, ClientError> {
    let status = res
        .code
        .ok_or_else(|| ClientError::Protocol("no status".into()))?;
    let mut keep_alive = res.version == Some(1);
    let mut body = BodyHeaders::default();
    // The lines are no longer than in the head, give or take a space, plus the lengths.
    let mut fields = Fields::with_capacity(len + 9 * res.headers.len());
    // `Connection` names a field other than its own options.
    let mut names_fields = false;
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            if contains_token(h.value, b"close") {
                keep_alive = false;
            } else if contains_token(h.value, b"keep-alive") {
                keep_alive = true;
            }
            names_fields |= connection_names(h.value).next().is_some();
            continue;
        }
        body.note(name, h.value);
        if !is_hop_by_hop(name) {
            fields.push(name, h.value);
        }
    }
    if names_fields {
        let named: Vec<&[u8]> = res
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| connection_names(h.value))
            .collect();
        fields.retain(|name| !named.iter().any(|n| n.eq_ignore_ascii_case(name)));
    }
    Ok(Parsed {
        len,
        status,
        keep_alive,
        body,
        fields,
    })
}

/// RFC 9112 §6.3: how the body of this response is delimited.
fn framing(status: StatusCode, head_only: bool, body: BodyHeaders) -> Result<Framing, ClientError> {
    if head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding overrides Content-Length.
    match body.chunked {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Ok(Framing::UntilClose),
        None => {}
    }
    if let Some(problem) = body.bad_length {
        return Err(ClientError::Protocol(problem.into()));
    }
    Ok(body.length.map_or(Framing::UntilClose, Framing::Length))
}

// === impl Conn ===

impl Conn {
    /// False when the backend closed the connection (or sent something) while it was idle.
    fn still_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

// === UpstreamBody ===

/// A response body read from the backend's socket as the client takes it. Read to the
/// end, it puts the connection back in the pool; dropped early, it closes it.
///
/// The response's header fields travel with it ([`UpstreamBody::fields`]), not in the
/// response's `HeaderMap`, which holds only what the gateway adds (see [`Fields`]).
pub struct UpstreamBody {
    /// Boxed: the response moves through every step on the way back, and a boxed
    /// connection keeps it small to move.
    conn: Option<Box<Conn>>,
    state: State,
    reusable: bool,
    pool: Arc<Pool>,
    size: Option<u64>,
    fields: Fields,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

impl UpstreamBody {
    /// The backend's header fields, less the hop-by-hop ones.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// Takes the fields out (to write or merge them).
    pub fn take_fields(&mut self) -> Fields {
        std::mem::take(&mut self.fields)
    }

    fn finish_if_done(&mut self) {
        if matches!(self.state, State::Done)
            && let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.pool.checkin(conn);
        }
    }

    /// Reads more from the socket; `Ok(0)` at end of stream. `want` is how much of the
    /// body is known to be left: large bodies are read in larger pieces (fewer system
    /// calls here and fewer, larger writes to the client).
    fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>, want: u64) -> Poll<io::Result<usize>> {
        let chunk = want.clamp(READ_CHUNK as u64, BODY_CHUNK as u64) as usize;
        conn.buf.reserve(chunk);
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Parses a chunk-size line from the front of `buf`, consuming it. `None`: need more bytes.
fn take_chunk_size(buf: &mut BytesMut) -> io::Result<Option<u64>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 4096 {
            return Err(invalid("chunk size line too long"));
        }
        return Ok(None);
    };
    let line = &buf[..end];
    let hex = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let size = std::str::from_utf8(hex)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| invalid("invalid chunk size"))?;
    buf.advance(end + 2);
    Ok(Some(size))
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                State::Length(remaining) | State::ChunkData(remaining) => {
                    if conn.buf.is_empty() {
                        let n = ready!(Self::poll_fill(conn, cx, *remaining))?;
                        if n == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(invalid(
                                "the backend closed the connection mid-body",
                            ))));
                        }
                    }
                    let take = (*remaining).min(conn.buf.len() as u64) as usize;
                    let data = conn.buf.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        this.state = match this.state {
                            State::ChunkData(_) => State::ChunkDataEnd,
                            _ => State::Done,
                        };
                        if matches!(this.state, State::Done) {
                            this.finish_if_done();
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize => match take_chunk_size(&mut conn.buf)? {
                    Some(0) => this.state = State::Trailers,
                    Some(n) => this.state = State::ChunkData(n),
                    None => {
                        if ready!(Self::poll_fill(conn, cx, 0))? == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(invalid(
                                "the backend closed the connection mid-chunk",
                            ))));
                        }
                    }
                },
                State::ChunkDataEnd => {
                    if conn.buf.len() >= 2 {
                        if &conn.buf[..2] != b"\r\n" {
                            return Poll::Ready(Some(Err(invalid("missing CRLF after a chunk"))));
                        }
                        conn.buf.advance(2);
                        this.state = State::ChunkSize;
                    } else if ready!(Self::poll_fill(conn, cx, 0))? == 0 {
                        this.conn = None;
                        return Poll::Ready(Some(Err(invalid(
                            "the backend closed the connection mid-chunk",
                        ))));
                    }
                }
                State::Trailers => {
                    // Trailer fields are dropped; the body ends at the empty line.
                    match conn.buf.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            conn.buf.advance(2);
                            this.state = State::Done;
                        }
                        Some(end) => conn.buf.advance(end + 2),
                        None => {
                            if conn.buf.len() > MAX_HEAD {
                                return Poll::Ready(Some(Err(invalid("trailers too large"))));
                            }
                            if ready!(Self::poll_fill(conn, cx, 0))? == 0 {
                                this.conn = None;
                                return Poll::Ready(Some(Err(invalid(
                                    "the backend closed the connection in the trailers",
                                ))));
                            }
                        }
                    }
                }
                State::UntilClose => {
                    if conn.buf.is_empty() && ready!(Self::poll_fill(conn, cx, 0))? == 0 {
                        this.conn = None;
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match (self.size, &self.state) {
            (_, State::Done) => SizeHint::with_exact(0),
            (Some(_), State::Length(n)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
