//! Upstreams: named groups of backends, each backend guarded by its own circuit breaker,
//! and the balancer that picks one backend per request.

pub mod balancer;
pub mod breaker;

use std::sync::Arc;
use std::time::Instant;

use prometheus::IntGauge;

use crate::clock::CoarseClock;
use crate::config::{BackendUrl, BreakerConfig, ProxyConfig};
use crate::metrics::CounterCache;
use crate::proxy::client::Pool;
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
    /// Idle keep-alive connections to this backend.
    pub pool: Arc<Pool>,
    /// This backend's `gateway_upstream_requests_total` series, by status.
    pub requests: CounterCache,
    /// Ids of the routes that can send traffic here; a route's index in this list is its
    /// slot in the breaker.
    pub routes: Vec<usize>,
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
    slot: Option<usize>,
    finished: bool,
}

// === impl Backend ===

impl Backend {
    pub fn new(
        id: usize,
        url: BackendUrl,
        breaker: BreakerConfig,
        proxy: &ProxyConfig,
        mut routes: Vec<usize>,
        state_gauge: IntGauge,
        clock: Arc<CoarseClock>,
    ) -> Self {
        state_gauge.set(BreakerState::Closed as i64);
        let now = clock.instant();
        routes.sort_unstable();
        routes.dedup();
        let pool = Pool::new(
            url.authority.host(),
            url.authority.port_u16().unwrap_or(80),
            proxy.pool_max_idle_per_backend,
            proxy.pool_idle_timeout,
            clock,
        );
        Self {
            id,
            label: url.label.as_str().into(),
            url,
            breaker: Breaker::new(breaker, now, routes.len()),
            pool,
            requests: CounterCache::default(),
            routes,
            state_gauge,
        }
    }

    /// The breaker slot of a route, if the route uses this backend. A binary search: this
    /// runs for every request, and a backend may serve a thousand routes.
    pub fn slot_of(&self, route: usize) -> Option<usize> {
        self.routes.binary_search(&route).ok()
    }

    fn on_transition(&self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.state_gauge.set(t.to as i64);
            tracing::warn!(
                backend = %self.url,
                from = t.from.as_str(),
                to = t.to.as_str(),
                threshold = self.breaker.threshold(),
                "circuit breaker state change"
            );
        }
    }
}

// === impl Upstream ===

impl Upstream {
    /// Picks a backend for a request of `route` whose breaker admits it, or `None` when all
    /// are open. `now` is the gateway's coarse clock, which the outcomes are reported on too.
    pub fn pick(&self, route: usize, now: Instant) -> Option<Attempt> {
        self.balancer.pick(&self.backends, |backend| {
            let (permit, transition) = match backend.breaker.state() {
                BreakerState::Closed => (Some(Permit::Normal), None),
                _ => backend.breaker.try_acquire(now),
            };
            backend.on_transition(transition);
            permit.map(|permit| Attempt {
                backend: backend.clone(),
                permit,
                slot: backend.slot_of(route),
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
        let transition = self
            .backend
            .breaker
            .record(self.permit, success, now, self.slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_breaker_slot_is_its_place_among_the_backends_routes() {
        let backend = Backend::new(
            0,
            "http://127.0.0.1:1".parse().unwrap(),
            BreakerConfig::default(),
            &ProxyConfig::default(),
            vec![700, 3, 41, 3],
            IntGauge::new("g", "g").unwrap(),
            Arc::new(CoarseClock::new()),
        );
        assert_eq!(backend.routes, [3, 41, 700]);
        assert_eq!(backend.slot_of(3), Some(0));
        assert_eq!(backend.slot_of(41), Some(1));
        assert_eq!(backend.slot_of(700), Some(2));
        assert_eq!(backend.slot_of(42), None);
    }
}
