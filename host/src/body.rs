//! Body types. Requests stream to backends and responses stream back without buffering;
//! the gateway's own answers (errors, 429s) are small in-memory bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::client::UpstreamBody;
use crate::proxy::headers::Fields;

/// A response body: streamed from a backend, or made by the gateway.
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    /// The backend's header fields, taken out of a body streamed from a backend (none for
    /// the gateway's own answers): they go to the client after the response's own headers.
    pub fn take_fields(&mut self) -> Fields {
        match self {
            Body::Upstream(inner) => inner.take_fields(),
            _ => Fields::default(),
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Upstream(inner) => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(data) => data.is_none(),
            Body::Upstream(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Upstream(inner) => inner.size_hint(),
        }
    }
}

/// A client's request body on its way to a backend. Its size is known up front when the
/// request says so (`Content-Length`, or no body); otherwise the bytes are counted as they
/// pass. (`Bytes` bodies are made by the gateway itself, e.g. in tests.)
pub enum RequestBody {
    Incoming {
        inner: Incoming,
        counter: Option<Arc<AtomicU64>>,
    },
    Bytes(Option<Bytes>),
}

/// How many bytes a request body carried, readable once the request is done.
#[derive(Clone)]
pub enum BytesIn {
    Known(u64),
    Counted(Arc<AtomicU64>),
}

impl BytesIn {
    pub fn get(&self) -> u64 {
        match self {
            BytesIn::Known(n) => *n,
            BytesIn::Counted(c) => c.load(Ordering::Relaxed),
        }
    }
}

impl RequestBody {
    pub fn new(inner: Incoming) -> Self {
        let counter = (!inner.is_end_stream() && inner.size_hint().exact().is_none())
            .then(|| Arc::new(AtomicU64::new(0)));
        RequestBody::Incoming { inner, counter }
    }

    /// A body made of these bytes (empty: no body).
    pub fn bytes(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        RequestBody::Bytes((!data.is_empty()).then_some(data))
    }

    /// A handle to this body's size.
    pub fn bytes_in(&self) -> BytesIn {
        match self {
            RequestBody::Incoming {
                counter: Some(c), ..
            } => BytesIn::Counted(c.clone()),
            other => BytesIn::Known(other.size_hint().exact().unwrap_or(0)),
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Incoming { inner, counter } => {
                let polled = Pin::new(inner).poll_frame(cx);
                if let (Some(counter), Poll::Ready(Some(Ok(frame)))) = (&counter, &polled)
                    && let Some(data) = frame.data_ref()
                {
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                polled
            }
            RequestBody::Bytes(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming { inner, .. } => inner.is_end_stream(),
            RequestBody::Bytes(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming { inner, .. } => inner.size_hint(),
            RequestBody::Bytes(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
