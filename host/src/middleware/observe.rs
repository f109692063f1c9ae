//! Watches every request to its end: when the last response byte is sent (or the client
//! goes away), it writes the access-log line, updates the request metrics and hands a
//! [`TrafficEvent`] to the gateway's traffic sink. It never waits on any of them.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::request_id::RequestId;
use super::route::MatchedRoute;
use super::{ClientInfo, Req};
use crate::body::{Body, BytesIn};
use crate::gateway::Gateway;
use crate::traffic::TrafficEvent;

/// Status logged when the client disconnects before a response is ready (as nginx does).
const CLIENT_CLOSED: u16 = 499;

/// What is known about a request until it finishes. Dropped unfinished, it still reports
/// (status 499 when no response was produced, `completed: false` either way).
pub struct Pending {
    gw: Arc<Gateway>,
    matched: MatchedRoute,
    method: Method,
    client_ip: IpAddr,
    request_id: Option<RequestId>,
    bytes_in: BytesIn,
    started: Instant,
    status: u16,
    backend: Option<Arc<str>>,
    done: bool,
}

impl Pending {
    /// Starts watching a request (its ID already assigned).
    pub fn start(
        gw: &Arc<Gateway>,
        matched: MatchedRoute,
        client: &ClientInfo,
        req: &Req,
        request_id: Option<RequestId>,
    ) -> Self {
        Pending {
            gw: gw.clone(),
            matched,
            method: req.method().clone(),
            client_ip: client.ip,
            request_id,
            bytes_in: req.body().bytes_in(),
            started: Instant::now(),
            status: CLIENT_CLOSED,
            backend: None,
            done: false,
        }
    }

    /// The request's route (kept here rather than cloned: an `Arc` clone and its drop are
    /// two atomic operations).
    pub fn matched(&self) -> &MatchedRoute {
        &self.matched
    }

    /// The response is ready: its status, and the backend that gave it.
    pub fn responded(&mut self, status: StatusCode, backend: Option<Arc<str>>) {
        self.status = status.as_u16();
        self.backend = backend;
    }

    /// Hands the watch over to the response body, which reports once its last byte is out.
    /// The body also carries the request ID for the response head.
    pub fn watch(self, inner: Body, request_id: Option<RequestId>) -> ObservedBody {
        ObservedBody {
            inner,
            bytes_out: 0,
            pending: Some(self),
            request_id,
        }
    }

    fn finish(&mut self, bytes_out: u64, completed: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let latency = self.started.elapsed();
        let gw = &self.gw;
        let (route, label) = (&self.matched.route, &self.matched.label);
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let bytes_in = self.bytes_in.get();
        let (method_key, method) = crate::metrics::method_label(&self.method);
        let series = || {
            gw.metrics
                .requests
                .with_label_values(&[&**label, method, status.as_str()])
        };
        if Arc::ptr_eq(label, &route.label) {
            let key = (method_key << 16) | u32::from(status.as_u16());
            route.requests.inc(key, series);
            route.duration.observe(latency);
        } else {
            series().inc();
            gw.metrics
                .request_duration
                .with_label_values(&[&**label])
                .observe(latency.as_secs_f64());
        }
        if gw.access_log {
            tracing::info!(
                target: "access",
                id = self
                    .request_id
                    .as_ref()
                    .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                    .unwrap_or("-"),
                method = self.method.as_str(),
                route = &**label,
                status = self.status,
                latency_ms = latency.as_micros() as f64 / 1000.0,
                backend = self.backend.as_deref().unwrap_or("-"),
                bytes_in,
                bytes_out,
                client = %self.client_ip,
                completed,
                "request"
            );
        }
        gw.sink.record(TrafficEvent {
            route: label.clone(),
            backend: self.backend.take(),
            several_backends: route.several_backends(),
            method: self.method.clone(),
            status: self.status,
            latency,
            bytes_in,
            bytes_out,
            client_ip: self.client_ip,
            // Filed under the coarse clock's time: analytics buckets are seconds wide.
            at: gw.clock.wall(),
            completed,
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(0, false);
    }
}

/// A response body that reports its request once the last byte has gone out.
pub struct ObservedBody {
    inner: Body,
    bytes_out: u64,
    pending: Option<Pending>,
    request_id: Option<RequestId>,
}

impl ObservedBody {
    /// See [`Body::take_fields`].
    pub fn take_fields(&mut self) -> crate::proxy::headers::Fields {
        self.inner.take_fields()
    }

    /// The request ID, which the response head carries (see [`super::fill_header_map`]).
    pub fn take_request_id(&mut self) -> Option<RequestId> {
        self.request_id.take()
    }

    fn finish(&mut self, completed: bool) {
        if let Some(mut p) = self.pending.take() {
            p.finish(self.bytes_out, completed);
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Bodies hyper never polls (HEAD, 204, empty) end here, complete; a body dropped
        // half-sent means the client went away.
        let completed = self.inner.is_end_stream();
        self.finish(completed);
    }
}
