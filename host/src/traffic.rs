//! The record of one finished request, and the hook that receives it. The request path
//! hands every finished request to a [`TrafficSink`] without waiting; the analytics recorder
//! is one such sink.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;

/// One finished request.
#[derive(Debug, Clone)]
pub struct TrafficEvent {
    /// The route's configured pattern (e.g. `/api/users/{id}`), or `{unmatched}`.
    pub route: Arc<str>,
    /// The backend that served it, if one was reached.
    pub backend: Option<Arc<str>>,
    /// The route's upstream has more than one backend (which of them served it tells
    /// something the route's own traffic does not).
    pub several_backends: bool,
    pub method: Method,
    pub status: u16,
    /// From the first byte of the request to the last byte of the response.
    pub latency: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub client_ip: IpAddr,
    /// When the request finished.
    pub at: SystemTime,
    /// False when the client went away before the response was complete.
    pub completed: bool,
}

/// Receives finished requests. Called on the request path: it must never block or wait.
pub trait TrafficSink: Send + Sync + 'static {
    fn record(&self, event: TrafficEvent);
}

/// A sink that discards events (analytics off).
pub struct Discard;

impl TrafficSink for Discard {
    fn record(&self, _: TrafficEvent) {}
}

/// Hands every event to several sinks.
pub struct Tee(pub Vec<Arc<dyn TrafficSink>>);

impl TrafficSink for Tee {
    fn record(&self, event: TrafficEvent) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.record(event.clone());
            }
            last.record(event);
        }
    }
}
