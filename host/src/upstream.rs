//! Upstreams: named groups of backends, each backend guarded by its own circuit breaker,
//! and the balancer that picks one backend per request.

pub mod balancer;
pub mod breaker;

use std::sync::Arc;
use std::time::Instant;

use prometheus::IntGauge;

use crate::config::{BackendUrl, BreakerConfig};
use balancer::Balancer;
use breaker::{Breaker, BreakerState, Permit, Transition};

/// One backend server.
pub struct Backend {
    /// Index in the gateway's backend table (stable for the process's life).
    pub id: usize,
    pub url: BackendUrl,
    /// The URL as text, shared with logs, metrics and traffic events.
    pub label: Arc<str>,
    pub breaker: Breaker,
    state_gauge: IntGauge,
}

/// A named group of backends that share traffic.
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Balancer,
}

/// One attempt at a backend. Dropped without [`Attempt::finish`] (the client went away),
/// it gives a half-open probe slot back.
pub struct Attempt {
    pub backend: Arc<Backend>,
    permit: Permit,
    finished: bool,
}

// === impl Backend ===

impl Backend {
    pub fn new(id: usize, url: BackendUrl, breaker: BreakerConfig, state_gauge: IntGauge) -> Self {
        state_gauge.set(BreakerState::Closed as i64);
        Self {
            id,
            label: url.label.as_str().into(),
            url,
            breaker: Breaker::new(breaker, Instant::now()),
            state_gauge,
        }
    }

    fn on_transition(&self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.state_gauge.set(t.to as i64);
            tracing::warn!(
                backend = %self.url,
                from = t.from.as_str(),
                to = t.to.as_str(),
                "circuit breaker state change"
            );
        }
    }
}

// === impl Upstream ===

impl Upstream {
    /// Picks a backend whose breaker admits a request, or `None` when all are open.
    pub fn pick(&self, now: Instant) -> Option<Attempt> {
        self.balancer.pick(&self.backends, |backend| {
            let (permit, transition) = backend.breaker.try_acquire(now);
            backend.on_transition(transition);
            permit.map(|permit| Attempt {
                backend: backend.clone(),
                permit,
                finished: false,
            })
        })
    }
}

// === impl Attempt ===

impl Attempt {
    /// Reports the outcome to the backend's breaker.
    pub fn finish(mut self, success: bool, now: Instant) {
        self.finished = true;
        let transition = self.backend.breaker.record(self.permit, success, now);
        self.backend.on_transition(transition);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.backend.breaker.release(self.permit);
        }
    }
}
