//! A circuit breaker per backend: closed → open → half-open → closed.
//!
//! Closed: requests flow; the breaker trips when `consecutive_failures` happen in a row, or
//! when the failure ratio over a rolling `window` reaches `error_rate` with at least
//! `min_requests` in the window. Open: the backend gets no traffic for `open_duration`.
//! Half-open: up to `half_open_probes` requests go through as probes; when that many succeed
//! the breaker closes, and one failure opens it again.
//!
//! The error-rate threshold can be learned: the analyzer sets one for the backend (from its
//! baseline) and one per route that uses it (from the route's baseline); each is checked
//! against its own rolling window. Until a threshold is learned, `error_rate` applies to
//! the backend and routes have no rule of their own.
//!
//! Every method takes `now`, so tests drive the clock by hand.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// What a breaker is doing, as exported by `gateway_circuit_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// Permission to send one request, handed out by [`Breaker::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// An ordinary request through a closed breaker.
    Normal,
    /// A half-open probe; its outcome decides whether the breaker closes.
    Probe,
}

/// A state change, reported so the caller can log it and update the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

pub struct Breaker {
    settings: BreakerConfig,
    /// Mirror of the phase, readable without the lock.
    state: AtomicU8,
    /// Learned error-rate threshold for the backend (f64 bits; 0 = not learned).
    threshold: AtomicU64,
    /// Learned thresholds of the routes using this backend, by route slot.
    route_thresholds: Box<[AtomicU64]>,
    inner: Mutex<Inner>,
}

struct Inner {
    phase: Phase,
    consecutive_failures: u32,
    window: Window,
    route_windows: Vec<Window>,
}

enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker; `route_slots` is the number of routes that use the backend.
    pub fn new(settings: BreakerConfig, now: Instant, route_slots: usize) -> Self {
        let window = Window::new(settings.window, now);
        Self {
            state: AtomicU8::new(BreakerState::Closed as u8),
            threshold: AtomicU64::new(0),
            route_thresholds: (0..route_slots).map(|_| AtomicU64::new(0)).collect(),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive_failures: 0,
                route_windows: (0..route_slots)
                    .map(|_| Window::new(settings.window, now))
                    .collect(),
                window,
            }),
            settings,
        }
    }

    /// Sets (or, with `None`, forgets) the learned backend threshold.
    pub fn set_threshold(&self, threshold: Option<f64>) {
        self.threshold.store(encode(threshold), Ordering::Relaxed);
    }

    /// Sets (or forgets) the learned threshold of the route in `slot`.
    pub fn set_route_threshold(&self, slot: usize, threshold: Option<f64>) {
        if let Some(t) = self.route_thresholds.get(slot) {
            t.store(encode(threshold), Ordering::Relaxed);
        }
    }

    /// The error-rate threshold in force for the backend (0 = the rule is off).
    pub fn threshold(&self) -> f64 {
        decode(self.threshold.load(Ordering::Relaxed)).unwrap_or(self.settings.error_rate)
    }

    /// Whether the backend threshold in force was learned.
    pub fn threshold_learned(&self) -> bool {
        decode(self.threshold.load(Ordering::Relaxed)).is_some()
    }

    /// The learned threshold of the route in `slot`, if any.
    pub fn route_threshold(&self, slot: usize) -> Option<f64> {
        self.route_thresholds
            .get(slot)
            .and_then(|t| decode(t.load(Ordering::Relaxed)))
    }

    /// The current state, without taking the lock.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Asks to send a request. `None` means the backend must be skipped.
    pub fn try_acquire(&self, now: Instant) -> (Option<Permit>, Option<Transition>) {
        if self.state() == BreakerState::Closed {
            return (Some(Permit::Normal), None);
        }
        let mut inner = self.lock();
        match &mut inner.phase {
            Phase::Closed => (Some(Permit::Normal), None),
            Phase::Open { until } if now < *until => (None, None),
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen {
                    in_flight: 1,
                    successes: 0,
                };
                let t = self.set_state(BreakerState::HalfOpen);
                (Some(Permit::Probe), t)
            }
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                if *in_flight + *successes < self.settings.half_open_probes {
                    *in_flight += 1;
                    (Some(Permit::Probe), None)
                } else {
                    (None, None)
                }
            }
        }
    }

    /// Reports how a request sent under `permit` went; `slot` is its route's slot.
    pub fn record(
        &self,
        permit: Permit,
        success: bool,
        now: Instant,
        slot: Option<usize>,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        let s = &self.settings;
        match (&mut inner.phase, permit) {
            (
                Phase::HalfOpen {
                    in_flight,
                    successes,
                },
                Permit::Probe,
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                if !success {
                    return self.trip(&mut inner, now);
                }
                *successes += 1;
                if *successes >= s.half_open_probes {
                    inner.phase = Phase::Closed;
                    inner.consecutive_failures = 0;
                    inner.window.reset(now);
                    for w in &mut inner.route_windows {
                        w.reset(now);
                    }
                    return self.set_state(BreakerState::Closed);
                }
                None
            }
            (Phase::Closed, _) => {
                inner.window.add(success, now);
                let slot = slot.filter(|&i| i < inner.route_windows.len());
                if let Some(i) = slot {
                    inner.route_windows[i].add(success, now);
                }
                if success {
                    inner.consecutive_failures = 0;
                    return None;
                }
                // Totals only when something failed: a success cannot trip the breaker.
                let route = slot.map(|i| (i, inner.route_windows[i].totals()));
                inner.consecutive_failures += 1;
                let min = u64::from(s.min_requests.max(1));
                let over = |(total, failures): (u64, u64), threshold: f64| {
                    threshold > 0.0 && total >= min && failures as f64 / total as f64 >= threshold
                };
                let by_count = s.consecutive_failures > 0
                    && inner.consecutive_failures >= s.consecutive_failures;
                let by_rate = over(inner.window.totals(), self.threshold());
                let by_route_rate = route
                    .and_then(|(i, totals)| Some(over(totals, self.route_threshold(i)?)))
                    .unwrap_or(false);
                if by_count || by_rate || by_route_rate {
                    return self.trip(&mut inner, now);
                }
                None
            }
            // Outcomes of requests admitted before the last state change carry no news.
            _ => None,
        }
    }

    /// A probe that ended without an outcome (the client went away) frees its slot.
    pub fn release(&self, permit: Permit) {
        if permit == Permit::Probe
            && let Phase::HalfOpen { in_flight, .. } = &mut self.lock().phase
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn trip(&self, inner: &mut Inner, now: Instant) -> Option<Transition> {
        inner.phase = Phase::Open {
            until: now + self.settings.open_duration,
        };
        inner.consecutive_failures = 0;
        inner.window.reset(now);
        for w in &mut inner.route_windows {
            w.reset(now);
        }
        self.set_state(BreakerState::Open)
    }

    fn set_state(&self, to: BreakerState) -> Option<Transition> {
        let from = BreakerState::from_u8(self.state.swap(to as u8, Ordering::Relaxed));
        (from != to).then_some(Transition { from, to })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the counters
        // are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn encode(threshold: Option<f64>) -> u64 {
    threshold
        .filter(|t| t.is_finite() && *t > 0.0)
        .map_or(0, |t| t.min(1.0).to_bits())
}

fn decode(bits: u64) -> Option<f64> {
    let t = f64::from_bits(bits);
    (t > 0.0).then_some(t)
}

// === impl Window ===

const SLOTS: usize = 10;

/// Request and failure counts over the last `span`, in `SLOTS` slots.
struct Window {
    slot_len: Duration,
    origin: Instant,
    /// Slot number of the latest request.
    current: u64,
    /// (slot number since `origin`, requests, failures)
    slots: [(u64, u64, u64); SLOTS],
}

impl Window {
    fn new(span: Duration, now: Instant) -> Self {
        let slot_len = (span / SLOTS as u32).max(Duration::from_millis(1));
        Self {
            slot_len,
            origin: now,
            current: 0,
            slots: [(u64::MAX, 0, 0); SLOTS],
        }
    }

    fn slot_number(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.slot_len.as_nanos()) as u64
    }

    fn add(&mut self, success: bool, now: Instant) {
        let n = self.slot_number(now);
        let slot = &mut self.slots[(n % SLOTS as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        slot.1 += 1;
        if !success {
            slot.2 += 1;
        }
        self.current = n;
    }

    /// Requests and failures in the slots that are still inside the window.
    fn totals(&self) -> (u64, u64) {
        let newest = self.current;
        self.slots
            .iter()
            .filter(|(n, _, _)| *n != u64::MAX && newest.saturating_sub(*n) < SLOTS as u64)
            .fold((0, 0), |(t, f), (_, r, e)| (t + r, f + e))
    }

    fn reset(&mut self, now: Instant) {
        self.slots = [(u64::MAX, 0, 0); SLOTS];
        self.current = self.slot_number(now);
    }
}

#[cfg(test)]
mod tests;
